//! The `[monitor]` section: what the long-running `kdr-monitor` does, where it listens and whom
//! it tells. Every key has a default (see `examples/kdr.toml`).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::failover::Fencing;

/// What a monitor does. One config may enable both roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scheduled backups, retention, drills, and the self-fence guard.
    Primary,
    /// Probes, the failover detector, and the promotion runbook.
    Standby,
}

/// The log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for journald/Loki/Elastic).
    Json,
}

/// `[monitor]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Where `/metrics`, `/healthz` and `/status` are served (default `127.0.0.1:9464`).
    pub listen: String,
    /// `["primary"]`, `["standby"]` or both (default `["primary"]`).
    pub roles: Vec<Role>,
    /// The detector's state file and operators' control requests live here
    /// (default `/var/lib/kdr/monitor`).
    pub state_dir: PathBuf,
    /// On SIGTERM, how long an in-flight backup or promotion may take to finish before it is
    /// aborted (default 30 s).
    pub shutdown_grace_s: f64,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Record the standby's observations here as JSONL, for `kdr-monitor replay` (default: off).
    pub record_trace: Option<PathBuf>,
    /// How many recent decisions `/status` shows (default 50).
    pub recent_decisions: usize,
    /// `[monitor.backup]`: the primary's backup schedule.
    pub backup: BackupSchedule,
    /// `[monitor.drill]`: the primary's drill schedule.
    pub drill: DrillSchedule,
    /// `[monitor.self_fence]`: the primary's guard against serving a second cluster.
    pub self_fence: SelfFenceConfig,
    /// `[monitor.standby]`: the standby's probes and promotion.
    pub standby: StandbyConfig,
    /// `[monitor.alerts]`: who is told about state changes.
    pub alerts: AlertsConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            roles: vec![Role::Primary],
            state_dir: PathBuf::from("/var/lib/kdr/monitor"),
            shutdown_grace_s: 30.0,
            log_format: LogFormat::Text,
            record_trace: None,
            recent_decisions: 50,
            backup: BackupSchedule::default(),
            drill: DrillSchedule::default(),
            self_fence: SelfFenceConfig::default(),
            standby: StandbyConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

/// When something runs: every `interval_s`, or on a cron expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Seconds between two runs (measured from the end of a run to the start of the next).
    pub interval_s: f64,
    /// A cron expression with seconds (`sec min hour day month weekday`, UTC); overrides
    /// `interval_s` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

impl BackupSchedule {
    /// The schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule { interval_s: self.interval_s, cron: self.cron.clone() }
    }
}

impl DrillSchedule {
    /// The schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule { interval_s: self.interval_s, cron: self.cron.clone() }
    }
}

impl Schedule {
    /// Checks the interval and the cron expression; `key` names the section in errors.
    pub fn validate(&self, key: &str) -> Result<()> {
        if let Some(c) = &self.cron {
            cron::Schedule::from_str(c).map_err(|e| {
                Error::config(
                    format!("{key}.cron"),
                    format!("{c:?} is not a cron expression ({e}); use e.g. \"0 0 * * * *\" (hourly)"),
                )
            })?;
        } else if !(self.interval_s.is_finite() && self.interval_s >= 1.0) {
            return Err(Error::config(format!("{key}.interval_s"), "must be at least 1 second"));
        }
        Ok(())
    }

    /// How long to wait, from `now`, for the next run.
    pub fn wait_from(&self, now: DateTime<Utc>) -> Duration {
        match self.cron.as_deref().and_then(|c| cron::Schedule::from_str(c).ok()) {
            Some(s) => s
                .after(&now)
                .next()
                .and_then(|next| (next - now).to_std().ok())
                .unwrap_or(Duration::from_secs(3600)),
            None => Duration::from_secs_f64(self.interval_s.max(1.0)),
        }
    }
}

/// `[monitor.backup]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSchedule {
    /// Take scheduled backups (default true; primary role only).
    pub enabled: bool,
    /// Seconds between two backups (default 3600), from the end of one to the start of the next.
    pub interval_s: f64,
    /// A cron expression with seconds (`sec min hour day month weekday`, UTC), instead of
    /// `interval_s`, e.g. `"0 */15 * * * *"`.
    pub cron: Option<String>,
    /// Prune with `[retention]` after each successful backup (default true).
    pub prune: bool,
}

impl Default for BackupSchedule {
    fn default() -> Self {
        Self { enabled: true, interval_s: 3600.0, cron: None, prune: true }
    }
}

/// `[monitor.drill]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrillSchedule {
    /// Drill the newest set on a schedule (default true; needs `etcd` and `etcdutl`/`etcdctl`,
    /// see `[restore]`).
    pub enabled: bool,
    /// Seconds between two drills (default 86400: daily).
    pub interval_s: f64,
    /// A cron expression with seconds, instead of `interval_s`, e.g. `"0 30 4 * * *"`.
    pub cron: Option<String>,
    /// How long the throwaway etcd may take to start, in seconds (default 120).
    pub start_timeout_s: u64,
}

impl Default for DrillSchedule {
    fn default() -> Self {
        Self { enabled: true, interval_s: 86400.0, cron: None, start_timeout_s: 120 }
    }
}

/// `[monitor.self_fence]`: a primary that comes back after a standby was promoted must not serve
/// a second cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfFenceConfig {
    /// Watch the store's claims (default true; primary role only).
    pub enabled: bool,
    /// Seconds between two checks (default 30).
    pub interval_s: u64,
    /// The epoch this primary serves (0: the original primary; a promoted standby that became
    /// the primary sets the epoch it was promoted in). A claim of a higher epoch by anyone else
    /// fences this node.
    pub epoch: u64,
    /// This node's claim holder name: a claim by it never fences this node. Default: the holder
    /// `kdr failover` on this node writes in its claims (`promotion.holder`, else
    /// `promotion.node_name`), counted as this node's own only when the claim was also made from
    /// this host (its `host` is one of this host's addresses), because the file is shared with the
    /// standby and names the standby there. So a promoted standby that turns the primary role on
    /// never fences itself over its own claim, and the old primary still does.
    pub holder: Option<String>,
    /// The static pod manifests moved aside (never deleted) when fenced
    /// (default `/etc/kubernetes/manifests`).
    pub manifests_dir: PathBuf,
    /// Deprecated: the claims are read where the runbook writes them
    /// ([`claims_prefix`](crate::runbook::claims_prefix): `promotion.claims_prefix`, else the
    /// store URL's prefix). Still accepted when it names that same place; refused otherwise.
    pub claims_prefix: Option<String>,
}

impl SelfFenceConfig {
    /// The holder whose claims are this node's own: `holder` if set, else the holder `kdr
    /// failover` on this node writes in its claims ([`PromotionSettings::holder`]); `None` when
    /// neither names anyone (a primary without a `[promotion]` section).
    ///
    /// [`PromotionSettings::holder`]: crate::runbook::PromotionSettings::holder
    pub fn holder_for(&self, config: &Config) -> Option<String> {
        self.holder.clone().or_else(|| {
            let h = config.promotion.holder();
            (!h.trim().is_empty()).then_some(h)
        })
    }
}

impl Default for SelfFenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_s: 30,
            epoch: 0,
            holder: None,
            manifests_dir: PathBuf::from("/etc/kubernetes/manifests"),
            claims_prefix: None,
        }
    }
}

/// `[monitor.standby]`: what the standby probes and how it promotes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandbyConfig {
    /// The primary API server's health URL, e.g. `https://10.0.0.1:6443/healthz`.
    pub api_url: Option<String>,
    /// The cluster CA for `api_url` (default: none, which needs `api_insecure_skip_tls_verify`
    /// for an https URL signed by the cluster CA).
    pub api_ca_file: Option<PathBuf>,
    /// A client certificate for `api_url` (with `api_client_key`).
    pub api_client_cert: Option<PathBuf>,
    /// The client key for `api_client_cert`.
    pub api_client_key: Option<PathBuf>,
    /// Skip TLS verification of `api_url` (default false; the name is the warning).
    pub api_insecure_skip_tls_verify: bool,
    /// Ping this address of the primary machine (ICMP; needs CAP_NET_RAW or ping_group_range).
    pub host_icmp: Option<String>,
    /// Or connect to this `host:port` of the primary machine (e.g. its sshd, `10.0.0.1:22`).
    pub host_tcp: Option<String>,
    /// The standby's own network: ping this gateway, ...
    pub self_gateway: Option<String>,
    /// ... or connect to this `host:port`, ...
    pub self_tcp: Option<String>,
    /// ... or resolve this DNS name.
    pub self_dns: Option<String>,
    /// Each round starts `interval_s ± jitter * interval_s` after the previous one started
    /// (default 0.1); a late round starts at once, never two at a time.
    pub jitter: f64,
    /// Deprecated: a program (argv, no shell) to promote with, run once per epoch with
    /// `KDR_EPOCH` set and `{epoch}` in any argument replaced by the epoch. Empty (the default):
    /// the monitor promotes in-process through the same runbook `kdr failover` runs (one journal,
    /// one claim, one fence); `kdr failover` then stays the operator's resume command. Set, it
    /// is run instead (with a deprecation warning at start).
    pub promote_command: Vec<String>,
    /// How long the promotion may take, in seconds (default 3600).
    pub promote_timeout_s: u64,
    /// With `[detector] fencing = "required"`: the fence hook (argv), run with `KDR_FENCE_NODE`,
    /// `KDR_FENCE_HOST` and `KDR_EPOCH` before the promotion.
    pub fence_command: Vec<String>,
    /// How long the fence may take, in seconds (default 300).
    pub fence_timeout_s: u64,
    /// The old primary's node name, passed to the fence hook (default: `[primary] name`).
    pub primary_name: String,
    /// The old primary's address (default: `[primary] address`).
    pub primary_address: String,
    /// The URL each witness (`[detector] witnesses`, each the name of a `[[workers]]` entry,
    /// reached over `[ssh]`) fetches with its own curl to tell whether *it* reaches the primary
    /// (default: `api_url`). Set it when the workers reach the primary by another address.
    pub witness_url: Option<String>,
    /// The CA file *on the witness* that verifies `witness_url` (default
    /// `/etc/kubernetes/pki/ca.crt`, where kubeadm puts the cluster CA on every node).
    pub witness_ca_file: String,
}

impl Default for StandbyConfig {
    fn default() -> Self {
        Self {
            api_url: None,
            api_ca_file: None,
            api_client_cert: None,
            api_client_key: None,
            api_insecure_skip_tls_verify: false,
            host_icmp: None,
            host_tcp: None,
            self_gateway: None,
            self_tcp: None,
            self_dns: None,
            jitter: 0.1,
            promote_command: Vec::new(),
            promote_timeout_s: 3600,
            fence_command: Vec::new(),
            fence_timeout_s: 300,
            primary_name: String::new(),
            primary_address: String::new(),
            witness_url: None,
            witness_ca_file: "/etc/kubernetes/pki/ca.crt".into(),
        }
    }
}

/// `[monitor.alerts]`: every state change, failure and promotion is sent to each of these.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// URLs POSTed a JSON alert (`{"kind", "message", "at", "host"}`). Treated as secrets (chat
    /// webhook URLs carry tokens): never logged or printed in full.
    pub webhooks: Vec<String>,
    /// Programs (argv, no shell) run with `KDR_ALERT_KIND`, `KDR_ALERT_MESSAGE`, `KDR_ALERT_AT`
    /// (RFC 3339, UTC, as in the webhook's JSON) and `KDR_ALERT_HOST`.
    pub exec: Vec<Vec<String>>,
    /// How long one alert delivery may take, in seconds (default 10).
    pub timeout_s: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self { webhooks: Vec::new(), exec: Vec::new(), timeout_s: 10 }
    }
}

impl std::fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("webhooks", &self.webhooks.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("exec", &self.exec)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

/// `scheme://host[:port]/<redacted>`: enough to tell which service, nothing that authenticates.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/<redacted>",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<redacted>".into(),
    }
}

impl MonitorConfig {
    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen.parse().map_err(|e| {
            Error::config(
                "monitor.listen",
                format!("{:?} is not an address like 127.0.0.1:9464 ({e})", self.listen),
            )
        })
    }

    /// The grace period on shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_s.max(0.0))
    }

    /// Whether `role` is enabled.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The detector's state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("detector-state.json")
    }
}

/// Checks everything `kdr-monitor run` will need from `config`, so that a mistake is reported
/// at start (exit 2) and not at 3 a.m. when the first backup or promotion runs.
pub fn validate(config: &Config) -> Result<()> {
    let m = &config.monitor;
    m.listen_addr()?;
    if m.roles.is_empty() {
        return Err(Error::config("monitor.roles", "no role: use [\"primary\"], [\"standby\"] or both"));
    }
    if !(m.shutdown_grace_s.is_finite() && m.shutdown_grace_s >= 0.0) {
        return Err(Error::config("monitor.shutdown_grace_s", "must be a number of seconds >= 0"));
    }
    for (i, hook) in m.alerts.exec.iter().enumerate() {
        if hook.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::config(format!("monitor.alerts.exec[{i}]"), "empty command: program first"));
        }
    }
    for w in &m.alerts.webhooks {
        let u = url::Url::parse(w).map_err(|e| {
            Error::config("monitor.alerts.webhooks", format!("{} is not a URL ({e})", redact_url(w)))
        })?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(Error::config(
                "monitor.alerts.webhooks",
                format!("{} is not http(s)", redact_url(w)),
            ));
        }
    }
    if m.has(Role::Primary) {
        config.store_url()?;
        config.store_options()?;
        // The self-fence guard reads the claims where the runbook writes them.
        crate::runbook::claims_prefix(config)?;
        if m.backup.enabled {
            m.backup.schedule().validate("monitor.backup")?;
            config.etcd_options()?;
            config.bundle_options()?;
            config.encode_options()?;
        }
        if m.drill.enabled {
            m.drill.schedule().validate("monitor.drill")?;
        }
        if m.self_fence.enabled && m.self_fence.interval_s == 0 {
            return Err(Error::config("monitor.self_fence.interval_s", "must be at least 1"));
        }
    }
    if m.has(Role::Standby) {
        let s = &m.standby;
        config.detector.validate()?;
        if config.store.url.is_some() {
            // The standby reads the newest claim (for its detector's epoch) where the runbook writes.
            crate::runbook::claims_prefix(config)?;
        }
        if s.api_url.is_none() && s.host_icmp.is_none() && s.host_tcp.is_none() {
            return Err(Error::config(
                "monitor.standby",
                "nothing to probe: set api_url and host_icmp or host_tcp (the primary's API server and machine)",
            ));
        }
        if s.promote_command.is_empty() {
            // The default: the monitor promotes in-process through the runbook `kdr failover`
            // runs. Build it now (nothing is contacted) so that a missing [promotion] key fails
            // here, not at 3 a.m.
            crate::runbook::build_runbook(config, std::sync::Arc::new(crate::clock::SystemClock)).map_err(|e| {
                Error::config(
                    "promotion",
                    format!(
                        "the standby role promotes through the runbook of [promotion], [fence], [restore], \
                         [kubeadm] and [[workers]]: {e}"
                    ),
                )
            })?;
        } else if s.promote_command.first().is_some_and(|p| p.is_empty()) {
            return Err(Error::config(
                "monitor.standby.promote_command",
                "its program (first element) is empty; remove the key to promote in-process through the runbook",
            ));
        }
        if config.detector.fencing == Fencing::Required && s.fence_command.is_empty() {
            return Err(Error::config(
                "monitor.standby.fence_command",
                "[detector] fencing = \"required\" needs a fence hook (argv)",
            ));
        }
        if config.detector.require_self_probe
            && s.self_gateway.is_none()
            && s.self_tcp.is_none()
            && s.self_dns.is_none()
        {
            return Err(Error::config(
                "monitor.standby.self_gateway",
                "[detector] require_self_probe = true needs a self probe (self_gateway, self_tcp or self_dns), \
                 or set require_self_probe = false",
            ));
        }
        if !(0.0..0.5).contains(&s.jitter) {
            return Err(Error::config("monitor.standby.jitter", "must be in [0, 0.5)"));
        }
        for w in &config.detector.witnesses {
            let Some(worker) = config.workers.iter().find(|k| &k.name == w) else {
                return Err(Error::config(
                    "detector.witnesses",
                    format!(
                        "witness {w:?} is not a [[workers]] entry: each witness is a worker's name, \
                         reached over [ssh] (known: {})",
                        config.workers.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            crate::remote::SshNodeRemote::new(worker.ssh_target(&config.ssh))?;
        }
        if !config.detector.witnesses.is_empty() {
            let url = s.witness_url.as_ref().or(s.api_url.as_ref());
            match url.map(|u| url::Url::parse(u)) {
                Some(Ok(u)) if u.scheme() == "https" || u.scheme() == "http" => {}
                Some(_) => {
                    return Err(Error::config("monitor.standby.witness_url", "must be an http(s) URL"));
                }
                None => {
                    return Err(Error::config(
                        "monitor.standby.witness_url",
                        "witnesses need a URL to fetch: set witness_url or api_url",
                    ));
                }
            }
        }
        config.check_automatic_failover_fence()?;
    }
    Ok(())
}

/// The effective configuration as TOML, with secrets left out (store secrets are never
/// serialized) or redacted (webhook URLs).
pub fn effective_toml(config: &Config) -> Result<String> {
    let mut shown = config.clone();
    shown.monitor.alerts.webhooks = shown.monitor.alerts.webhooks.iter().map(|u| redact_url(u)).collect();
    toml::to_string(&shown).map_err(|e| Error::config("config", format!("cannot render it as TOML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witnesses_must_be_workers_reachable_over_ssh() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["id", "known_hosts"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let text = format!(
            "[monitor]\nroles = [\"standby\"]\n[monitor.standby]\napi_url = \"https://10.0.0.1:6443/healthz\"\n\
             host_tcp = \"10.0.0.1:22\"\nself_tcp = \"10.0.0.254:53\"\npromote_command = [\"kdr\", \"failover\"]\n\
             [detector]\nwitnesses = [\"worker-1\", \"worker-9\"]\n\
             [ssh]\nkey_file = \"{d}/id\"\nknown_hosts = \"{d}/known_hosts\"\n\
             [fence]\nkind = \"exec\"\ncommand = [\"/usr/local/bin/fence-ipmi\"]\n\
             [[workers]]\nname = \"worker-1\"\nhost = \"10.0.0.11\"\n",
            d = dir.path().display()
        );
        let c = Config::from_toml(&text, "kdr.toml").unwrap();
        let e = validate(&c).unwrap_err();
        assert!(e.is_usage(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("detector.witnesses") && msg.contains("worker-9") && msg.contains("worker-1"),
            "{msg}"
        );

        let ok = text.replace(", \"worker-9\"", "");
        let c = Config::from_toml(&ok, "kdr.toml").unwrap();
        validate(&c).unwrap();
        // Without an ssh key the witness cannot be asked: named at validation, not at 3 a.m.
        let c = Config::from_toml(
            &ok.replace(&format!("{}/id", dir.path().display()), "/nonexistent/id"),
            "kdr.toml",
        )
        .unwrap();
        let msg = validate(&c).unwrap_err().to_string();
        assert!(msg.contains("ssh.key_file") || msg.contains("/nonexistent/id"), "{msg}");
        // A witness URL that is not http(s) is refused.
        let c = Config::from_toml(
            &ok.replace("[detector]", "witness_url = \"ftp://10.0.0.1/healthz\"\n[detector]"),
            "kdr.toml",
        )
        .unwrap();
        assert!(validate(&c).unwrap_err().to_string().contains("monitor.standby.witness_url"));
    }

    #[test]
    fn defaults_and_validation_name_the_key() {
        let c = Config::from_toml(
            "[monitor]\nroles = [\"standby\"]\n[monitor.standby]\napi_url = \"https://10.0.0.1:6443/healthz\"\n",
            "kdr.toml",
        )
        .unwrap();
        assert_eq!(c.monitor.listen, "127.0.0.1:9464");
        let e = validate(&c).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("promotes through the runbook of [promotion]"), "{e}");

        let c = Config::from_toml("[monitor.backup]\ncron = \"every hour\"\n[store]\nurl = \"memory://\"\n[etcd]\nendpoint = \"http://127.0.0.1:2379\"\n", "kdr.toml").unwrap();
        let e = validate(&c).unwrap_err();
        assert!(e.to_string().contains("monitor.backup.cron"), "{e}");

        let e = Config::from_toml("[monitor]\nrole = [\"primary\"]\n", "kdr.toml").unwrap_err();
        assert!(e.is_usage(), "{e}");
    }

    #[test]
    fn schedules_and_redaction() {
        let s = Schedule { interval_s: 5.0, cron: None };
        let now = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        assert_eq!(s.wait_from(now), Duration::from_secs(5));
        let hourly = Schedule { interval_s: 5.0, cron: Some("0 0 * * * *".into()) };
        hourly.validate("x").unwrap();
        let wait = hourly.wait_from(now);
        assert!(wait <= Duration::from_secs(3600) && wait > Duration::ZERO, "{wait:?}");
        assert_eq!(
            redact_url("https://hooks.example.com/services/T0/B0/SECRET"),
            "https://hooks.example.com/<redacted>"
        );
        let mut c = Config::default();
        c.monitor.alerts.webhooks.push("https://hooks.example.com/services/SECRET".into());
        let shown = effective_toml(&c).unwrap();
        assert!(!shown.contains("SECRET") && shown.contains("[monitor]"), "{shown}");
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
