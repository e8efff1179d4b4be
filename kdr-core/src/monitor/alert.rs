//! Alerts on state changes: each is POSTed as JSON to every webhook and passed to every exec
//! hook (in environment variables, no shell). Delivery failures are logged and counted, never
//! fatal: an alert must not stop a backup or a failover.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::config::{AlertsConfig, redact_url};
use super::metrics::Metrics;
use crate::error::{Error, Result};
use crate::fence::exec::run_argv;

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// What kind (`detector`, `backup_failed`, `drill_failed`, `promotion`, `self_fence`, ...).
    pub kind: String,
    /// What happened, for a human.
    pub message: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The monitor's host name.
    pub host: String,
}

/// Sends alerts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Alerter {
    config: Arc<AlertsConfig>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
}

impl Alerter {
    /// An alerter for `[monitor.alerts]`, counting in `metrics`.
    pub fn new(config: AlertsConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_s.max(1)))
            .build()
            .map_err(|e| Error::unavailable("alert webhooks: cannot build an HTTP client", e))?;
        Ok(Self { config: Arc::new(config), metrics, client })
    }

    /// Delivers `alert` to every target, concurrently; returns the failures (also logged).
    pub async fn send(&self, alert: &Alert) -> Vec<String> {
        self.metrics.alerts.inc();
        tracing::warn!(kind = %alert.kind, message = %alert.message, "ALERT");
        let timeout = Duration::from_secs(self.config.timeout_s.max(1));
        let env = vec![
            ("KDR_ALERT_KIND".to_owned(), alert.kind.clone()),
            ("KDR_ALERT_MESSAGE".to_owned(), alert.message.clone()),
            // The same text as the webhook's JSON `at` (chrono's serde form: `...Z`, not `+00:00`).
            ("KDR_ALERT_AT".to_owned(), alert.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            ("KDR_ALERT_HOST".to_owned(), alert.host.clone()),
        ];
        let execs = self.config.exec.iter().map(|argv| {
            let env = env.clone();
            async move {
                run_argv(argv, &env, timeout, "monitor.alerts.exec")
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("alert hook {}: {e}", argv.join(" ")))
            }
        });
        let hooks = self.config.webhooks.iter().map(|url| async move {
            let shown = redact_url(url);
            let body = serde_json::to_vec(alert).unwrap_or_default();
            let req = self.client.post(url).header("content-type", "application/json").body(body);
            match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("alert webhook {shown}: HTTP {}", r.status())),
                Err(e) => Err(format!("alert webhook {shown}: {}", e.without_url())),
            }
        });
        let (a, b) =
            futures::future::join(futures::future::join_all(execs), futures::future::join_all(hooks)).await;
        let failures: Vec<String> = a.into_iter().chain(b).filter_map(|r| r.err()).collect();
        for f in &failures {
            self.metrics.alert_failures.inc();
            tracing::error!(error = %f, "alert delivery failed");
        }
        failures
    }
}
