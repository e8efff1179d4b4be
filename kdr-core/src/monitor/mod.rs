//! `kdr-monitor`'s service: the primary's scheduled backups, retention, drills and self-fence
//! guard, the standby's probes, failover detector and promotion, an HTTP endpoint (`/metrics`,
//! `/healthz`, `/status`), alerts, and graceful shutdown. The binary parses arguments, loads the
//! [`Config`] and calls [`run`].
//!
//! | file | what |
//! | --- | --- |
//! | `config.rs` | the `[monitor]` section, validation, the redacted effective config |
//! | `primary.rs` | backup schedule + prune, drill schedule, self-fence guard |
//! | `standby.rs` | jittered probe rounds driving the [`FailoverDetector`](crate::failover::FailoverDetector), fence and promotion |
//! | `http.rs` | the axum endpoint |
//! | `metrics.rs` | Prometheus metrics (prometheus-client) |
//! | `alert.rs` | webhook and exec alerts |
//! | `control.rs` | `kdr pause|resume|rearm` requests to a running monitor |
//!
//! # Shutdown (as linkerd2-proxy does it)
//! [`run`] takes a shutdown future (the binary's SIGTERM/SIGINT). When it fires, the loops stop
//! starting new work; an in-flight backup gets `shutdown_grace_s` to finish, then it is dropped
//! and its partial objects are deleted. A backup's manifest is written last and only by a
//! finished upload, so an aborted set is never listed.
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::failover::{Latch, State};

pub mod alert;
pub mod config;
pub mod control;
pub mod http;
pub mod metrics;
pub mod primary;
pub mod standby;

use self::alert::{Alert, AlertQueue, Alerter};
use self::config::Role;
use self::metrics::Metrics;

/// One decision or event, for `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// When.
    pub at: DateTime<Utc>,
    /// What kind (`state`, `alert`, `backup`, `prune`, `drill`, `fence`, `promote`, `self_fence`, `control`).
    pub kind: String,
    /// What happened.
    pub detail: String,
}

/// The detector's part of `/status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectorStatus {
    /// The current state.
    pub state: Option<State>,
    /// The epoch.
    pub epoch: u64,
    /// The latch.
    pub latch: Latch,
    /// Paused by an operator.
    pub paused: bool,
    /// Seconds in the current suspicion.
    pub suspicion_s: f64,
}

/// The last committed backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupStatus {
    /// The set's id.
    pub id: String,
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// How long it took.
    pub duration_ms: u64,
}

/// The last drill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrillStatus {
    /// The set drilled: the newest complete one when the drill started (none when there was
    /// no set, or the store could not be listed).
    pub set: Option<String>,
    /// When the drill ended.
    pub at: DateTime<Utc>,
    /// Whether the restored etcd held exactly the keys the manifest recorded.
    pub passed: bool,
    /// What happened, for a human (on failure, the error or the key counts).
    pub detail: String,
}

/// `/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    /// The enabled roles.
    pub roles: Vec<Role>,
    /// When the monitor started.
    pub started_at: Option<DateTime<Utc>>,
    /// The detector (standby role).
    pub detector: Option<DetectorStatus>,
    /// The last committed backup (primary role).
    pub last_backup: Option<BackupStatus>,
    /// The last backup error since the last success.
    pub last_backup_error: Option<String>,
    /// The last drill (primary role).
    pub last_drill: Option<DrillStatus>,
    /// The self-fence guard moved the manifests aside (to this dir) because of this claim epoch.
    pub self_fenced: Option<(u64, String)>,
    /// The last promotion: epoch and outcome.
    pub promotion: Option<(u64, String)>,
    /// Recent decisions, oldest first.
    pub recent_decisions: VecDeque<Decision>,
    /// Each running loop's last completed turn (what `/healthz` checks).
    pub loops: BTreeMap<String, LoopStatus>,
}

/// A monitor loop's heartbeat, for `/healthz` and `/status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoopStatus {
    /// When the loop last completed a turn.
    pub last_turn: DateTime<Utc>,
    /// How long it may go without another turn before `/healthz` reports it stalled, in seconds.
    pub allowed_s: f64,
    /// What it is doing until then ("sleeping until the next backup", "promoting epoch 2").
    pub doing: String,
    #[serde(skip)]
    beat_at: Option<Instant>,
}

/// A loop found stalled by [`Shared::health`].
#[derive(Clone, Debug, PartialEq)]
pub struct Stalled {
    /// The loop.
    pub name: String,
    /// How long since its last turn.
    pub silent_for: Duration,
    /// How long it was allowed.
    pub allowed: Duration,
    /// What it said it was doing.
    pub doing: String,
}

/// What the loops share: status, metrics, alerts, time.
#[derive(Debug)]
pub struct Shared {
    status: Mutex<Status>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    registry: prometheus_client::registry::Registry,
    alerts: AlertQueue,
    /// Time.
    pub clock: Arc<dyn Clock>,
    max_decisions: usize,
    host: String,
}

impl Shared {
    /// Shared state for `config`.
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let registry = metrics.register();
        let alerter = Alerter::new(config.monitor.alerts.clone(), metrics.clone())?;
        let status = Status {
            roles: config.monitor.roles.clone(),
            started_at: Some(clock.utc()),
            ..Status::default()
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Self {
            status: Mutex::new(status),
            metrics,
            registry,
            alerts: AlertQueue::new(alerter),
            clock,
            max_decisions: config.monitor.recent_decisions.max(1),
            host,
        })
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode_metrics(&self) -> String {
        metrics::encode(&self.registry)
    }

    /// Records a decision for `/status` and logs it.
    pub fn decide(&self, kind: &str, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(kind, %detail, "decision");
        let d = Decision { at: self.clock.utc(), kind: kind.to_owned(), detail };
        let max = self.max_decisions;
        self.update(|s| {
            s.recent_decisions.push_back(d);
            while s.recent_decisions.len() > max {
                s.recent_decisions.pop_front();
            }
        });
    }

    /// Records a decision and raises an alert on it. Returns at once: the delivery runs on the
    /// alert queue's own task ([`AlertQueue`]), so a hanging webhook never holds up a loop.
    pub async fn alert(&self, kind: &str, message: impl Into<String>) {
        let message = message.into();
        self.decide(kind, format!("ALERT: {message}"));
        let alert = Alert { kind: kind.to_owned(), message, at: self.clock.utc(), host: self.host.clone() };
        self.alerts.push(alert);
    }

    /// Waits (at most `within`) until the alerts raised so far were delivered or failed.
    pub async fn flush_alerts(&self, within: Duration) -> bool {
        self.alerts.flush(within).await
    }

    /// Records that loop `name` completed a turn, and that it will complete its next one within
    /// `allowed` (doing `doing` meanwhile). `/healthz` fails once a loop overruns that.
    pub fn beat(&self, name: &str, allowed: Duration, doing: impl Into<String>) {
        let (at, now) = (self.clock.instant(), self.clock.utc());
        self.metrics
            .loop_last_turn
            .get_or_create(&metrics::LoopLabel { r#loop: name.to_owned() })
            .set(now.timestamp_millis() as f64 / 1000.0);
        let st = LoopStatus {
            last_turn: now,
            allowed_s: allowed.as_secs_f64(),
            doing: doing.into(),
            beat_at: Some(at),
        };
        self.update(|s| {
            s.loops.insert(name.to_owned(), st);
        });
    }

    /// The loops that have gone longer than they were allowed without a turn (empty: healthy).
    pub fn health(&self) -> (Vec<Stalled>, BTreeMap<String, LoopStatus>) {
        let now = self.clock.instant();
        let loops = self.status().loops;
        let stalled = loops
            .iter()
            .filter_map(|(name, l)| {
                let silent_for = now.saturating_duration_since(l.beat_at?);
                let allowed = Duration::from_secs_f64(l.allowed_s);
                (silent_for > allowed).then(|| Stalled {
                    name: name.clone(),
                    silent_for,
                    allowed,
                    doing: l.doing.clone(),
                })
            })
            .collect();
        (stalled, loops)
    }
}

/// The lock file in a monitor's state dir.
pub const STATE_LOCK_FILE: &str = "monitor.lock";

/// Takes the exclusive lock (`flock`) on `<dir>/monitor.lock` for as long as the returned file is
/// held, and writes this process's pid into it. A second monitor on the same state dir is refused
/// ([`Error::Refused`], naming the holder's pid): two would act on the same detector state, latch
/// and control requests. The lock goes with the process, so a crashed monitor leaves none behind.
pub fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let path = dir.join(STATE_LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open the monitor's lock file {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let holder = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            return Err(Error::refused(format!(
                "another kdr-monitor{holder} is running with monitor.state_dir {}: it holds {}. Two \
                 monitors on one state dir would act on the same detector state; stop the other one, \
                 or give this one its own monitor.state_dir",
                dir.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::io(format!("cannot lock {}", path.display()), e));
        }
    }
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{pid}\n").as_bytes()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(file)
}

/// Resolves when `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Runs the monitor until `shutdown` resolves (or a loop fails): see the [module docs](self).
///
/// Errors: [`Error::Config`] for a configuration that cannot work (also checked by
/// [`config::validate`]); [`Error::Integrity`] for a corrupt detector state file (the detector
/// never takes "corrupt" for "not latched"); [`Error::Unavailable`] if the listen address is
/// taken.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config::validate(&config)?;
    let m = &config.monitor;
    std::fs::create_dir_all(&m.state_dir)
        .map_err(|e| Error::io(format!("failed to create monitor.state_dir {}", m.state_dir.display()), e))?;
    // Held until this function returns.
    let _state_lock = lock_state_dir(&m.state_dir)?;
    let shared = Arc::new(Shared::new(&config, clock.clone())?);
    let addr = m.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {addr} (monitor.listen)"), e))?;
    let local = listener.local_addr().map_err(|e| Error::io("listen address", e))?;
    tracing::info!(listen = %local, roles = ?m.roles, "kdr-monitor started");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: tokio::task::JoinSet<(&'static str, Result<()>)> = tokio::task::JoinSet::new();
    {
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        tasks.spawn(async move { ("http", http::serve(listener, shared, stop).await) });
    }
    if m.has(Role::Primary) {
        let p = Arc::new(primary::Primary::new(&config, shared.clone())?);
        if m.backup.enabled {
            let (p, stop) = (p.clone(), stop_rx.clone());
            tasks.spawn(async move { ("backup", p.backup_loop(stop).await) });
        }
        if m.drill.enabled {
            let (p, stop) = (p.clone(), stop_rx.clone());
            tasks.spawn(async move { ("drill", p.drill_loop(stop).await) });
        }
        if m.self_fence.enabled {
            let (p, stop) = (p.clone(), stop_rx.clone());
            tasks.spawn(async move { ("self-fence", p.self_fence_loop(stop).await) });
        }
    }
    if m.has(Role::Standby) {
        let s = standby::Standby::from_config(&config, shared.clone())?;
        let stop = stop_rx.clone();
        tasks.spawn(async move { ("standby", s.run(stop).await) });
    }

    // Run until shutdown, or until a loop fails (e.g. a corrupt state file).
    let mut failure = None;
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => tracing::info!("shutdown requested"),
        Some(joined) = tasks.join_next() => {
            failure = Some(match joined {
                Ok((name, Ok(()))) => Error::Cancelled { what: format!("the {name} loop ended on its own") },
                Ok((name, Err(e))) => { tracing::error!(task = name, error = %e, "monitor loop failed"); e }
                Err(e) => Error::Cancelled { what: format!("a monitor loop panicked: {e}") },
            });
        }
    }
    let _ = stop_tx.send(true);
    // Each loop bounds its own in-flight work by the grace period; this bounds the whole.
    let bound = m.shutdown_grace() + std::time::Duration::from_secs(10);
    let drained = tokio::time::timeout(bound, async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok((name, Err(e))) = joined {
                tracing::warn!(task = name, error = %e, "loop ended with an error during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(after = ?bound, "some loops did not stop in time; aborting them");
        tasks.abort_all();
    }
    let alert_bound = Duration::from_secs(m.alerts.timeout_s.max(1) + 1);
    if !shared.flush_alerts(alert_bound).await {
        tracing::warn!(after = ?alert_bound, "some alerts were still being delivered at shutdown");
    }
    tracing::info!("kdr-monitor stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_monitor_on_the_same_state_dir_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_state_dir(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(dir.path().join(STATE_LOCK_FILE)).unwrap().trim(), pid);

        let e = lock_state_dir(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("(pid {pid})")) && msg.contains(&dir.path().display().to_string()),
            "{msg}"
        );

        drop(first);
        let again = lock_state_dir(dir.path()).expect("the lock goes with its holder");
        drop(again);
    }
}
