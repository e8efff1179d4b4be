//! The primary role: scheduled backups followed by retention, scheduled drills of the newest
//! set, and the self-fence guard.
//!
//! **Self-fence guard.** The store's claims ([`ClaimStore`]) say which epoch the cluster is in.
//! If a claim of an epoch newer than this primary's, by another holder, exists, a standby has
//! taken over: this node moves its static pod manifests aside (never deleting them), which makes
//! kubelet stop the API server, controller-manager, scheduler and etcd, raises an alert, and stops
//! taking backups (a fenced primary's data must not become the store's "latest" set). It checks
//! again on every interval, so manifests put back by hand are moved aside again until the
//! operator raises `monitor.self_fence.epoch`. A newest claim that is this node's own (a
//! promoted standby that turned the primary role on) never fences it: see
//! `monitor.self_fence.holder` for how a claim is recognised as its own. The claims are read
//! exactly where the runbook writes them ([`crate::runbook::claims_prefix`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::config::{BackupSchedule, DrillSchedule, SelfFenceConfig};
use super::{BackupStatus, DrillStatus, Shared, stopped};
use crate::backup::{BackupOptions, NoProgress, backup};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::etcd::EtcdutlRestorer;
use crate::restore::{DrillOptions, SetSelector, drill};
use crate::runbook::ClaimStore;
use crate::snapshot::retention::{RetentionPolicy, prune};
use crate::snapshot::{ObjectStoreSnapshotStore, SnapshotId, SnapshotStore};

/// The primary's loops. See the [module docs](self).
#[derive(Debug)]
pub struct Primary {
    shared: Arc<Shared>,
    store: Arc<dyn SnapshotStore>,
    backup_opts: Option<BackupOptions>,
    backup_schedule: BackupSchedule,
    retention: RetentionPolicy,
    drill_schedule: DrillSchedule,
    drill_opts: DrillOptions,
    restorer: EtcdutlRestorer,
    claims: ClaimStore,
    self_fence: SelfFenceConfig,
    own: Own,
    grace: Duration,
    fenced: AtomicBool,
}

/// Whose claims are this node's own: the guard never fences over them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Own {
    /// `monitor.self_fence.holder`, as configured: any claim by this holder.
    Configured(String),
    /// This node's promotion identity (`promotion.holder`, else `promotion.node_name`): a claim by
    /// this holder made from this host. The configuration file is shared with the standby, where
    /// it names the standby; the host check keeps the old primary from taking the standby's claim
    /// for its own.
    Promotion(String),
    /// Nobody named: every newer claim fences.
    Nobody,
}

impl Own {
    fn of(config: &Config) -> Self {
        match &config.monitor.self_fence.holder {
            Some(h) => Own::Configured(h.clone()),
            None => {
                let h = config.promotion.holder();
                if h.trim().is_empty() { Own::Nobody } else { Own::Promotion(h) }
            }
        }
    }

    /// Whether `claim` is this node's own.
    async fn owns(&self, claim: &crate::runbook::Claim) -> bool {
        match self {
            Own::Configured(h) => *h == claim.holder,
            Own::Promotion(h) => *h == claim.holder && crate::fence::is_this_host_address(&claim.host).await,
            Own::Nobody => false,
        }
    }
}

impl Primary {
    /// The primary for `config` (opens the store; checks the options).
    pub fn new(config: &Config, shared: Arc<Shared>) -> Result<Self> {
        let store = ObjectStoreSnapshotStore::from_url(config.store_url()?, &config.store_options()?)?;
        // Exactly where the runbook writes them (one derivation for both).
        let claims = crate::runbook::claim_store(config, &store)?;
        let m = &config.monitor;
        let backup_opts = if m.backup.enabled {
            Some(BackupOptions {
                cluster_name: config.cluster.name.clone(),
                etcd: config.etcd_options()?,
                bundle: config.bundle_options()?,
                encode: config.encode_options()?,
            })
        } else {
            None
        };
        let drill_opts = DrillOptions {
            set: SetSelector::Latest,
            work_dir: config.restore.work_dir.clone().unwrap_or_else(std::env::temp_dir),
            etcd_binary: config.restore.etcd.clone(),
            encryption_key: if m.drill.enabled { config.encryption_key()? } else { None },
            start_timeout: Duration::from_secs(m.drill.start_timeout_s),
        };
        Ok(Self {
            shared,
            store: Arc::new(store),
            backup_opts,
            backup_schedule: m.backup.clone(),
            retention: config.retention,
            drill_schedule: m.drill.clone(),
            drill_opts,
            restorer: config.restore.restorer(),
            claims,
            self_fence: m.self_fence.clone(),
            own: Own::of(config),
            grace: m.shutdown_grace(),
            fenced: AtomicBool::new(false),
        })
    }

    /// Whether the self-fence guard has fenced this node.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Backs up on the schedule, prunes after each success, until `stop`. A backup running when
    /// `stop` turns true gets the grace period, then is aborted and its partial objects deleted.
    pub async fn backup_loop(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let Some(opts) = &self.backup_opts else { return Ok(()) };
        let schedule = self.backup_schedule.schedule();
        loop {
            let wait = schedule.wait_from(self.shared.clock.utc());
            self.shared.beat("backup", turn_allowance(wait), "waiting for the next scheduled backup");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut stop) => return Ok(()),
            }
            // The guard runs on its own interval; checking here too closes the window after a
            // restart (a returning old primary) in which a backup could land before its first check.
            if self.self_fence.enabled
                && let Err(e) = self.self_fence_check().await
            {
                self.shared.decide(
                    "backup",
                    format!(
                        "skipped: cannot read the store's claims to confirm this node still serves the newest epoch: {e}"
                    ),
                );
                continue;
            }
            if self.is_fenced() {
                self.shared.decide("backup", "skipped: this node is self-fenced (a newer epoch was claimed)");
                continue;
            }
            let started = self.shared.clock.utc();
            // Boxed so that dropping it at the end of the grace period really cancels the upload
            // (and its part uploads) before the clean-up below.
            let mut run =
                Box::pin(backup(self.store.as_ref(), opts, self.shared.clock.as_ref(), Arc::new(NoProgress)));
            let result = tokio::select! {
                r = &mut run => r,
                () = stopped(&mut stop) => {
                    tracing::info!(grace = ?self.grace, "shutdown during a backup: letting it finish within the grace period");
                    match tokio::time::timeout(self.grace, &mut run).await {
                        Ok(r) => {
                            self.record_backup(r).await;
                            return Ok(());
                        }
                        Err(_) => {
                            drop(run);
                            self.abort_cleanup(started).await;
                            return Ok(());
                        }
                    }
                }
            };
            if self.record_backup(result).await && self.backup_schedule.prune {
                self.prune_now().await;
            }
        }
    }

    /// Records a backup's result; true when it committed.
    async fn record_backup(&self, result: Result<crate::snapshot::Manifest>) -> bool {
        let m = &self.shared.metrics;
        match result {
            Ok(manifest) => {
                m.backups.inc();
                m.backup_last_success.set(manifest.created_at.timestamp_millis() as f64 / 1000.0);
                m.backup_last_size.set(i64::try_from(manifest.stored_bytes()).unwrap_or(i64::MAX));
                m.backup_last_duration.set(manifest.duration_ms as f64 / 1000.0);
                let st = BackupStatus {
                    id: manifest.id.to_string(),
                    at: manifest.created_at,
                    stored_bytes: manifest.stored_bytes(),
                    duration_ms: manifest.duration_ms,
                };
                self.shared.decide(
                    "backup",
                    format!("committed {} ({} bytes in {} ms)", st.id, st.stored_bytes, st.duration_ms),
                );
                self.shared.update(|s| {
                    s.last_backup = Some(st);
                    s.last_backup_error = None;
                });
                true
            }
            Err(e) => {
                m.backup_failures.inc();
                let msg = format!("scheduled backup to {} failed: {e}", self.store.describe());
                self.shared.update(|s| s.last_backup_error = Some(msg.clone()));
                self.shared.alert("backup_failed", msg).await;
                false
            }
        }
    }

    /// After a backup was dropped at shutdown: delete what it wrote (sets without a manifest
    /// created since `started`). Never touches a complete set.
    async fn abort_cleanup(&self, started: DateTime<Utc>) {
        self.shared.metrics.backup_failures.inc();
        let since = started - chrono::Duration::seconds(1);
        let mut removed = Vec::new();
        match self.store.list_incomplete().await {
            Ok(sets) => {
                for set in sets {
                    let recent = SnapshotId::parse(&set.id).is_ok_and(|id| id.created() >= since);
                    if recent && self.store.delete(&set.id).await.is_ok() {
                        removed.push(set.id);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list partial sets; `kdr snapshot prune` sweeps them")
            }
        }
        self.shared.decide(
            "backup",
            format!(
                "aborted at shutdown after the {:?} grace period; no manifest written; partial objects removed: {}",
                self.grace,
                if removed.is_empty() { "none found".to_owned() } else { removed.join(", ") }
            ),
        );
    }

    async fn prune_now(&self) {
        match prune(self.store.as_ref(), &self.retention, self.shared.clock.utc(), false).await {
            Ok(report) => {
                let n = report.plan.delete.len();
                self.shared.metrics.pruned.inc_by(n as u64);
                self.shared.decide(
                    "prune",
                    format!(
                        "kept {}, deleted {n}, swept {} incomplete",
                        report.plan.keep.len(),
                        report.incomplete.len()
                    ),
                );
            }
            Err(e) => self.shared.alert("prune_failed", format!("retention prune failed: {e}")).await,
        }
    }

    /// Drills the newest set on the schedule until `stop` (a drill running at `stop` is dropped:
    /// it only touches a temporary dir).
    pub async fn drill_loop(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let schedule = self.drill_schedule.schedule();
        loop {
            let wait = schedule.wait_from(self.shared.clock.utc());
            self.shared.beat("drill", turn_allowance(wait), "waiting for the next scheduled drill");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut stop) => return Ok(()),
            }
            let result = tokio::select! {
                r = self.drill_newest() => r,
                () = stopped(&mut stop) => return Ok(()),
            };
            self.record_drill(result).await;
        }
    }

    /// Picks the newest set first, so that a failure names the set even when it happens before
    /// the drill has a report (a corrupt object, an etcd that does not start).
    async fn drill_newest(&self) -> (Option<SnapshotId>, Result<crate::restore::DrillReport>) {
        let newest = match self.store.latest().await {
            Ok(Some(m)) => m.id,
            Ok(None) => {
                let e = Error::NotFound {
                    what: format!("a complete backup set in {}", self.store.describe()),
                    hint: Some(
                        "no backup has committed yet: check the backup schedule and its alerts".into(),
                    ),
                };
                return (None, Err(e));
            }
            Err(e) => return (None, Err(e)),
        };
        let opts = DrillOptions { set: SetSelector::Id(newest.clone()), ..self.drill_opts.clone() };
        let result = drill(self.store.as_ref(), &self.restorer, self.shared.clock.as_ref(), &opts).await;
        (Some(newest), result)
    }

    async fn record_drill(&self, (set, result): (Option<SnapshotId>, Result<crate::restore::DrillReport>)) {
        let m = &self.shared.metrics;
        let at = self.shared.clock.utc();
        let (passed, detail) = match &result {
            Ok(r) if r.passed() => {
                (true, format!("set {} restored and matched {} keys", r.set, r.found_keys))
            }
            Ok(r) => (
                false,
                format!(
                    "drill of set {}: {} keys expected, {} found ({} resources differ)",
                    r.set,
                    r.expected_keys,
                    r.found_keys,
                    r.diffs.len()
                ),
            ),
            Err(e) => (
                false,
                match &set {
                    Some(id) => format!("scheduled drill of set {id} failed: {e}"),
                    None => format!("scheduled drill failed: {e}"),
                },
            ),
        };
        let set = set.map(|s| s.to_string());
        self.shared.update(|s| s.last_drill = Some(DrillStatus { set, at, passed, detail: detail.clone() }));
        if passed {
            m.drills.inc();
            m.drill_last_success.set(at.timestamp_millis() as f64 / 1000.0);
            self.shared.decide("drill", detail);
        } else {
            m.drill_failures.inc();
            self.shared.alert("drill_failed", detail).await;
        }
    }

    /// Checks the claims every interval until `stop`. Store errors are logged and retried: a
    /// primary does not fence itself because the store is unreachable.
    pub async fn self_fence_loop(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let every = Duration::from_secs(self.self_fence.interval_s.max(1));
        loop {
            match self.self_fence_check().await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "self-fence guard: cannot read the claims; will retry"),
            }
            self.shared.beat("self-fence", every * 3 + SELF_FENCE_CHECK_ALLOWANCE, "checking the claims");
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stopped(&mut stop) => return Ok(()),
            }
        }
    }

    /// One check of the guard. Returns the dir the manifests were moved to, if it moved any.
    pub async fn self_fence_check(&self) -> Result<Option<PathBuf>> {
        let Some(claim) = self.claims.newest().await? else { return Ok(None) };
        // The newest claim is this node's own (it was promoted in it): it serves that epoch.
        if claim.epoch <= self.self_fence.epoch || self.own.owns(&claim).await {
            return Ok(None);
        }
        let first = !self.fenced.swap(true, Ordering::SeqCst);
        let stamp = self.shared.clock.utc().format("%Y%m%dT%H%M%SZ").to_string();
        let (aside, moved) = move_manifests_aside(&self.self_fence.manifests_dir, claim.epoch, &stamp)?;
        if moved.is_empty() && !first {
            return Ok(None);
        }
        self.shared.metrics.self_fenced.inc();
        let msg = format!(
            "epoch {} was claimed by {} on {} at {} (this primary serves epoch {}): a standby has taken over. \
             Moved {} static pod manifest(s) from {} to {} (nothing deleted) so this control plane stops, and \
             stopped taking backups. To bring this node back, rebuild it as a standby or raise \
             monitor.self_fence.epoch",
            claim.epoch,
            claim.holder,
            claim.host,
            claim.claimed_at.to_rfc3339(),
            self.self_fence.epoch,
            moved.len(),
            self.self_fence.manifests_dir.display(),
            aside.display()
        );
        self.shared.update(|s| s.self_fenced = Some((claim.epoch, aside.display().to_string())));
        self.shared.alert("self_fence", msg).await;
        Ok(Some(aside))
    }
}

/// Moves every entry of `dir` into `<dir>.kdr-fenced-epoch-<epoch>` (the same place the
/// runbook's SSH fence uses); a name already there gets `.again-<stamp>`. Returns the aside dir
/// and the names moved. A missing `dir` moves nothing.
pub fn move_manifests_aside(dir: &Path, epoch: u64, stamp: &str) -> Result<(PathBuf, Vec<String>)> {
    let base = dir.to_string_lossy().trim_end_matches('/').to_owned();
    let aside = PathBuf::from(format!("{base}.kdr-fenced-epoch-{epoch}"));
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((aside, Vec::new())),
        Err(e) => return Err(Error::io(format!("failed to read the manifests dir {}", dir.display()), e)),
    };
    if entries.is_empty() {
        return Ok((aside, Vec::new()));
    }
    std::fs::create_dir_all(&aside)
        .map_err(|e| Error::io(format!("failed to create {}", aside.display()), e))?;
    let mut moved = Vec::new();
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut to = aside.join(&name);
        if to.exists() {
            to = aside.join(format!("{name}.again-{stamp}"));
        }
        std::fs::rename(e.path(), &to).map_err(|err| {
            Error::io(format!("failed to move {} to {}", e.path().display(), to.display()), err)
        })?;
        moved.push(name);
    }
    Ok((aside, moved))
}

/// How long one check of the claims may take before `/healthz` calls the guard stalled.
const SELF_FENCE_CHECK_ALLOWANCE: Duration = Duration::from_secs(120);

/// How long a scheduled loop may go without a turn: the wait until its next run, then that run
/// (a backup or a drill of a large database takes minutes; neither has a total timeout of its
/// own yet), so twice the wait plus 30 minutes.
fn turn_allowance(wait: Duration) -> Duration {
    wait * 2 + Duration::from_secs(30 * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(holder: &str, host: &str) -> crate::runbook::Claim {
        crate::runbook::Claim {
            epoch: 2,
            holder: holder.into(),
            host: host.into(),
            run_id: "r".into(),
            claimed_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            snapshot: None,
        }
    }

    #[tokio::test]
    async fn by_default_a_claim_is_its_own_when_its_promotion_identity_made_it_from_this_host() {
        let promoted = "[store]\nurl = \"memory://kdr\"\n[promotion]\nnode_name = \"master-2\"\n";
        let own = Own::of(&Config::from_toml(promoted, "kdr.toml").unwrap());
        assert_eq!(own, Own::Promotion("master-2".into()), "no holder configured: the promotion's");
        assert!(own.owns(&claim("master-2", "127.0.0.1")).await, "its own claim, from this host");
        // The same file on the old primary names the standby: the standby's claim, made from the
        // standby's host, is not the old primary's own (it must still fence).
        assert!(!own.owns(&claim("master-2", "203.0.113.200")).await);
        assert!(!own.owns(&claim("master-3", "127.0.0.1")).await);

        let held = format!("{promoted}holder = \"m2-claims\"\n");
        assert_eq!(
            Own::of(&Config::from_toml(&held, "kdr.toml").unwrap()),
            Own::Promotion("m2-claims".into())
        );
        // Configured explicitly: the holder alone decides, as before.
        let explicit = format!("{promoted}[monitor.self_fence]\nholder = \"master-1\"\n");
        let own = Own::of(&Config::from_toml(&explicit, "kdr.toml").unwrap());
        assert!(own.owns(&claim("master-1", "203.0.113.200")).await);
        assert!(!own.owns(&claim("master-2", "127.0.0.1")).await);
        // No [promotion] and no holder: every newer claim fences.
        let own = Own::of(&Config::from_toml("[store]\nurl = \"memory://kdr\"\n", "kdr.toml").unwrap());
        assert_eq!(own, Own::Nobody);
        assert!(!own.owns(&claim("", "127.0.0.1")).await);
    }

    #[test]
    fn manifests_are_moved_never_deleted() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("manifests");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("etcd.yaml"), "etcd").unwrap();
        std::fs::write(m.join("kube-apiserver.yaml"), "api").unwrap();
        let (aside, mut moved) = move_manifests_aside(&m, 3, "s1").unwrap();
        moved.sort();
        assert_eq!(moved, ["etcd.yaml", "kube-apiserver.yaml"]);
        assert_eq!(aside, d.path().join("manifests.kdr-fenced-epoch-3"));
        assert_eq!(std::fs::read_to_string(aside.join("etcd.yaml")).unwrap(), "etcd");
        assert_eq!(std::fs::read_dir(&m).unwrap().count(), 0);
        // Put back by hand: moved again, the first copy kept.
        std::fs::write(m.join("etcd.yaml"), "etcd2").unwrap();
        let (_, moved) = move_manifests_aside(&m, 3, "s2").unwrap();
        assert_eq!(moved, ["etcd.yaml"]);
        assert_eq!(std::fs::read_to_string(aside.join("etcd.yaml.again-s2")).unwrap(), "etcd2");
        assert_eq!(std::fs::read_to_string(aside.join("etcd.yaml")).unwrap(), "etcd");
        assert!(move_manifests_aside(&d.path().join("missing"), 3, "s").unwrap().1.is_empty());
    }
}
