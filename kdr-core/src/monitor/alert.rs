//! Alerts on state changes: each is POSTed as JSON to every webhook and passed to every exec
//! hook (in environment variables, no shell). Delivery failures are logged and counted, never
//! fatal: an alert must not stop a backup or a failover.
//!
//! The monitor's loops never wait for a delivery: they put the alert on an [`AlertQueue`]
//! (bounded, [`QUEUE_CAPACITY`]) and go on; one task delivers them in order. A webhook that hangs
//! for its whole timeout delays the alerts behind it, never a probe round, a fence or a backup.
//! A full queue drops the new alert, logs it and counts it (`kdr_alerts_dropped_total`).
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::config::{AlertsConfig, redact_url};
use super::metrics::Metrics;
use crate::command::run_argv;
use crate::error::{Error, Result};

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

    /// Counts and logs `alert`: what happens when it is raised, before any delivery.
    fn raise(&self, alert: &Alert) {
        self.metrics.alerts.inc();
        tracing::warn!(kind = %alert.kind, message = %alert.message, "ALERT");
    }

    /// Delivers `alert` to every target, concurrently, each bounded by `timeout_s`; returns the
    /// failures (also logged and counted).
    async fn deliver(&self, alert: &Alert) -> Vec<String> {
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

/// How many alerts may wait for delivery before new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 64;

enum Envelope {
    Alert(Alert),
    Flush(oneshot::Sender<()>),
}

/// Delivers alerts from a task of its own, in order, so that the caller never waits for a
/// webhook or hook (see the [module docs](self)). The task starts with the first alert (on the
/// caller's tokio runtime) and ends when the queue is dropped.
#[derive(Debug)]
pub struct AlertQueue {
    alerter: Alerter,
    tx: OnceLock<mpsc::Sender<Envelope>>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Envelope::Alert(a) => f.debug_tuple("Alert").field(a).finish(),
            Envelope::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AlertQueue {
    /// A queue delivering through `alerter`.
    pub fn new(alerter: Alerter) -> Self {
        Self { alerter, tx: OnceLock::new() }
    }

    fn sender(&self) -> &mpsc::Sender<Envelope> {
        self.tx.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<Envelope>(QUEUE_CAPACITY);
            let alerter = self.alerter.clone();
            tokio::spawn(async move {
                while let Some(envelope) = rx.recv().await {
                    match envelope {
                        Envelope::Alert(alert) => {
                            alerter.deliver(&alert).await;
                        }
                        Envelope::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
            tx
        })
    }

    /// Raises `alert` (logged and counted now) and queues its delivery; returns at once. Returns
    /// false when the queue was full and the alert was dropped (logged and counted).
    /// Must be called on a tokio runtime.
    pub fn push(&self, alert: Alert) -> bool {
        self.alerter.raise(&alert);
        match self.sender().try_send(Envelope::Alert(alert)) {
            Ok(()) => true,
            Err(e) => {
                self.alerter.metrics.alerts_dropped.inc();
                let (kind, message) = match e.into_inner() {
                    Envelope::Alert(a) => (a.kind, a.message),
                    Envelope::Flush(_) => (String::new(), String::new()),
                };
                tracing::error!(
                    kind = %kind,
                    message = %message,
                    capacity = QUEUE_CAPACITY,
                    "alert dropped: the delivery queue is full (webhooks or hooks are slower than the alerts); \
                     check monitor.alerts targets and timeout_s"
                );
                false
            }
        }
    }

    /// Waits until every alert queued before this call was delivered (or failed), for at most
    /// `within`. Returns false if that took longer (the rest are still being delivered).
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.sender().send(Envelope::Flush(done)).await.is_err() {
            return true;
        }
        tokio::time::timeout(within, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};

    fn alert(n: usize) -> Alert {
        Alert { kind: "test".into(), message: format!("alert {n}"), at: SystemClock.utc(), host: "h".into() }
    }

    /// A webhook that accepts the connection and never answers: pushing returns at once, the
    /// delivery times out on the queue's own task, and a flush waits for it.
    #[tokio::test]
    async fn a_hanging_webhook_never_holds_up_the_caller() {
        let silent = crate::testing::net::SilentListener::start().await.unwrap();
        let addr = format!("127.0.0.1:{}", silent.port());
        let config = AlertsConfig {
            webhooks: vec![format!("http://{addr}/hook")],
            timeout_s: 2,
            ..AlertsConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let queue = AlertQueue::new(Alerter::new(config, metrics.clone()).unwrap());
        let t0 = SystemClock.instant();
        for n in 0..3 {
            assert!(queue.push(alert(n)));
        }
        let pushed_in = SystemClock.instant().duration_since(t0);
        assert!(pushed_in < Duration::from_millis(500), "push waited for the webhook: {pushed_in:?}");
        assert_eq!(metrics.alerts.get(), 3, "raised (counted) at once");
        assert!(!queue.flush(Duration::from_millis(500)).await, "the deliveries are still hanging");
        assert!(queue.flush(Duration::from_secs(10)).await, "each delivery is bounded by timeout_s");
        assert_eq!(metrics.alert_failures.get(), 3, "each timed-out delivery counts as a failure");
        assert_eq!(silent.accepted(), 3);
    }

    /// More alerts than the queue holds while deliveries hang: the overflow is dropped and
    /// counted, and pushing still never blocks.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let silent = crate::testing::net::SilentListener::start().await.unwrap();
        let addr = format!("127.0.0.1:{}", silent.port());
        let config = AlertsConfig {
            webhooks: vec![format!("http://{addr}/hook")],
            timeout_s: 30,
            ..AlertsConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let queue = AlertQueue::new(Alerter::new(config, metrics.clone()).unwrap());
        let t0 = SystemClock.instant();
        let queued = (0..QUEUE_CAPACITY + 10).filter(|&n| queue.push(alert(n))).count();
        assert!(SystemClock.instant().duration_since(t0) < Duration::from_secs(1));
        // One is being delivered (off the queue), QUEUE_CAPACITY wait; the rest are dropped.
        assert!((QUEUE_CAPACITY..=QUEUE_CAPACITY + 1).contains(&queued), "{queued} queued");
        assert_eq!(metrics.alerts_dropped.get() as usize, QUEUE_CAPACITY + 10 - queued);
        assert_eq!(metrics.alerts.get() as usize, QUEUE_CAPACITY + 10, "every alert is raised (logged)");
    }
}
