//! The promotion runbook: explicit steps, a persisted journal, resumable after a crash.
//!
//! Seed 000's `dr_restore.sh` downloads a snapshot, wipes `/var/lib/etcd`, restores, runs
//! `kubeadm init`, then resets and rejoins each worker with a fixed four-minute sleep; run twice,
//! it wipes everything again. [`Runbook`] runs the same promotion as nine journaled steps
//! ([`StepKind`]):
//!
//! 1. **claim** the epoch in the object store ([`claim`]): of several standbys, exactly one wins;
//! 2. **pre-hooks** ([`hooks`]): a failure aborts;
//! 3. **fence** the old primary ([`crate::fence`]): a failure stops the runbook, and so does a
//!    fence aimed at this host (the old primary is this node after a same-host rebuild);
//! 4. **restore** etcd and the bundle ([`RestoreStep`]);
//! 5. **control-plane init** ([`ControlPlaneInit`], `kubeadm init`);
//! 6. **workers** ([`WorkerRecovery`]): rewired or rejoined in parallel; one failing does not
//!    stop the others, and the run ends non-zero naming it;
//! 7. **post-checks** ([`checks`]): they only look;
//! 8. **clean-up** of the old primary's Node and etcd member ([`clean_up`]; skipped, with a note
//!    in the journal, when the old primary is this node);
//! 9. **post-hooks** (the DNS or VIP switch).
//!
//! Each step's start and end are journaled ([`journal`]). A resumed run skips finished steps,
//! re-runs idempotent ones, and resolves an interrupted destructive step through its own safety
//! check (the restore asks whether the swap already happened; init looks at the files on disk;
//! workers skip those already recovered). A completed journal refuses any further run of its
//! epoch. [`Runbook::plan`] renders the whole plan and changes nothing (`--dry-run`).
//!
//! The steps are reached through traits so each can be swapped or faked: the restore flow and
//! worker recovery plug in through [`RestoreStep`] and [`WorkerRecovery`], small adapters over
//! their own modules.
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::control_plane::{ControlPlaneInit, InitState, JoinCommand, NodeIdentity};
use crate::error::{Error, Result};
use crate::fence::{FenceTarget, Fencer};
use crate::snapshot::{Manifest, SnapshotId, SnapshotStore};

pub mod adapters;
pub mod checks;
pub mod claim;
pub mod clean_up;
pub mod config;
pub mod hooks;
pub mod journal;
pub mod plan;

pub use adapters::{FlowRestore, ParallelWorkerRecovery};
pub use checks::{CheckContext, CheckResult, KubectlPostChecks, PostCheckSettings, PostChecker};
pub use claim::{Claim, ClaimOutcome, ClaimStore};
pub use clean_up::{KubectlCleanUp, OldPrimaryCleanUp};
pub use config::{build_runbook, claim_store, claims_prefix, open_claim_store};
pub use hooks::{HookContext, HookPhase, HookSpec, HooksSettings};
pub use journal::{Journal, JournalLock, StepKind, StepStatus};
pub use plan::{Plan, PlannedStep, SnapshotSummary, StepAction};

/// Restores etcd and the control-plane bundle for a promotion: the runbook's view of the
/// restore flow.
///
/// Guarantees: [`restore`](Self::restore) never destroys what it replaces (the old data dir is
/// moved aside) and is all-or-nothing; [`already_restored`](Self::already_restored) tells, after
/// a crash, whether the swap of `snapshot` into place already happened, so a resumed runbook
/// never restores twice; [`plan`](Self::plan) changes nothing.
#[async_trait]
pub trait RestoreStep: Send + Sync + fmt::Debug {
    /// What it would do (paths, tool, member name, peer URL), one line each.
    async fn plan(&self, snapshot: &Manifest) -> Result<Vec<String>>;

    /// Whether `snapshot` is already restored into place.
    async fn already_restored(&self, snapshot: &Manifest) -> Result<bool>;

    /// Restores `snapshot`; returns a summary for the journal (no secret in it).
    async fn restore(&self, snapshot: &Manifest) -> Result<serde_json::Value>;
}

/// One worker's recovery result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOutcome {
    /// The worker's name.
    pub worker: String,
    /// Whether it was recovered (kubelet active and the node Ready through the new control plane).
    pub ok: bool,
    /// What happened, or why it failed.
    pub detail: String,
    /// How long it took.
    pub duration_ms: u64,
}

/// Rewires or rejoins the workers: the runbook's view of worker recovery.
///
/// Guarantees: workers are independent (one failing does not stop the others); a worker in
/// `skip` is not touched (it was recovered by an earlier, interrupted run); `progress` is called
/// once per worker as it finishes, so the journal records it at once; the returned list has one
/// outcome per worker not skipped. `Err` only when recovery could not start at all.
#[async_trait]
pub trait WorkerRecovery: Send + Sync + fmt::Debug {
    /// Whether it needs a join command (rejoin mode) or not (rewire mode).
    fn needs_join_command(&self) -> bool;

    /// What it would do to each worker (hosts, commands), one line each.
    fn plan(&self, endpoint: &str) -> Vec<String>;

    /// Recovers every worker not in `skip` against the API server at `endpoint`.
    async fn recover(
        &self,
        endpoint: &str,
        join: Option<&JoinCommand>,
        skip: &BTreeSet<String>,
        progress: &(dyn Fn(WorkerOutcome) + Send + Sync),
    ) -> Result<Vec<WorkerOutcome>>;
}

/// What is restored onto the standby.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromotionMode {
    /// A different host (seed 000): restore the cluster's identity (CA, service-account keys,
    /// encryption config), regenerate everything naming the old host, `kubeadm init`.
    #[default]
    NewHost,
    /// The same host, rebuilt with the old IP and name (seeds 001/004): restore everything and
    /// restart kubelet.
    SameHost,
}

/// The `[promotion]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionSettings {
    /// This node's (the standby's) Kubernetes node name.
    pub node_name: String,
    /// The address this node's API server advertises (and workers reach it at).
    pub advertise_address: String,
    /// The old primary's node name.
    pub old_primary_name: String,
    /// The old primary's address (what the fence targets; what is rewritten in configurations).
    pub old_primary_address: String,
    /// The claim's holder name; defaults to `node_name`.
    pub holder: Option<String>,
    /// Where journals, the lock and the restore marker live.
    pub state_dir: PathBuf,
    /// Where the restore step stages the whole bundle (the old ClusterConfiguration and
    /// manifests that `[kubeadm]` derives from).
    pub bundle_dir: PathBuf,
    /// The prefix under which `claims/` live in the object store (empty: the store URL's prefix,
    /// beside the backup sets).
    pub claims_prefix: String,
    /// `"latest"` or a backup set id.
    pub snapshot: String,
    /// `"new-host"` or `"same-host"`.
    pub mode: PromotionMode,
    /// The post-checks.
    pub checks: PostCheckSettings,
}

impl Default for PromotionSettings {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            advertise_address: String::new(),
            old_primary_name: String::new(),
            old_primary_address: String::new(),
            holder: None,
            state_dir: PathBuf::from("/var/lib/kdr/promotion"),
            bundle_dir: PathBuf::from("/var/lib/kdr/promotion/bundle"),
            claims_prefix: String::new(),
            snapshot: "latest".into(),
            mode: PromotionMode::NewHost,
            checks: PostCheckSettings::default(),
        }
    }
}

impl PromotionSettings {
    /// Checks that the node identities are set and distinct.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("promotion.node_name", &self.node_name),
            ("promotion.advertise_address", &self.advertise_address),
            ("promotion.old_primary_name", &self.old_primary_name),
            ("promotion.old_primary_address", &self.old_primary_address),
        ] {
            if v.trim().is_empty() {
                return Err(Error::config(key, "required: name the node (e.g. master-2 / 192.168.30.202)"));
            }
        }
        if self.mode == PromotionMode::NewHost
            && (self.node_name == self.old_primary_name || self.advertise_address == self.old_primary_address)
        {
            return Err(Error::config(
                "promotion.mode",
                "\"new-host\" promotes a different host, but this node's name or address equals the old primary's; \
                 use mode = \"same-host\" for a rebuilt primary",
            ));
        }
        if self.snapshot != "latest" {
            SnapshotId::parse(&self.snapshot).map_err(|_| {
                Error::config(
                    "promotion.snapshot",
                    format!("{:?} is neither \"latest\" nor a backup set id", self.snapshot),
                )
            })?;
        }
        Ok(())
    }

    /// The node being promoted.
    pub fn this_node(&self) -> NodeIdentity {
        NodeIdentity { name: self.node_name.clone(), address: self.advertise_address.clone() }
    }

    /// The node it replaces.
    pub fn old_primary(&self) -> NodeIdentity {
        NodeIdentity { name: self.old_primary_name.clone(), address: self.old_primary_address.clone() }
    }

    /// The claim's holder.
    pub fn holder(&self) -> String {
        self.holder.clone().unwrap_or_else(|| self.node_name.clone())
    }
}

/// Everything a [`Runbook`] drives.
#[derive(Debug, Clone)]
pub struct RunbookParts {
    /// `[promotion]`.
    pub settings: PromotionSettings,
    /// `[hooks]`.
    pub hooks: HooksSettings,
    /// Where the epoch is claimed.
    pub claims: ClaimStore,
    /// Where the backup sets are.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Fences the old primary.
    pub fencer: Arc<dyn Fencer>,
    /// Restores etcd and the bundle.
    pub restore: Arc<dyn RestoreStep>,
    /// Brings up the control plane.
    pub control_plane: Arc<dyn ControlPlaneInit>,
    /// Recovers the workers.
    pub workers: Arc<dyn WorkerRecovery>,
    /// Checks the result.
    pub checks: Arc<dyn PostChecker>,
    /// Removes the old primary's Node and etcd member.
    pub clean_up: Arc<dyn OldPrimaryCleanUp>,
    /// Time for the journal and the claim.
    pub clock: Arc<dyn Clock>,
}

/// How a run ended (when it ran to the end; a step that stops the runbook is an `Err`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The epoch promoted.
    pub epoch: u64,
    /// The backup set restored.
    pub snapshot: String,
    /// The journal file.
    pub journal: String,
    /// Each step and what happened to it in this run.
    pub steps: Vec<(StepKind, String)>,
    /// Every worker's outcome (from this run and earlier interrupted ones).
    pub workers: Vec<WorkerOutcome>,
    /// The post-checks, then the clean-up's actions.
    pub checks: Vec<CheckResult>,
    /// What the operator should know (journals given up, an epoch not used, a skipped clean-up).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl RunReport {
    /// The workers that failed.
    pub fn failed_workers(&self) -> Vec<&str> {
        self.workers.iter().filter(|w| !w.ok).map(|w| w.worker.as_str()).collect()
    }

    /// Whether everything succeeded (no failed worker).
    pub fn succeeded(&self) -> bool {
        self.failed_workers().is_empty()
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Promotion of epoch {} from backup set {} (journal {})",
            self.epoch, self.snapshot, self.journal
        )?;
        for (step, what) in &self.steps {
            writeln!(f, "  {:<20} {what}", step.name())?;
        }
        if !self.workers.is_empty() {
            writeln!(f, "\n  {:<24} {:<6} {:>9}  detail", "worker", "result", "took")?;
            for w in &self.workers {
                writeln!(
                    f,
                    "  {:<24} {:<6} {:>8.1}s  {}",
                    w.worker,
                    if w.ok { "ok" } else { "FAILED" },
                    w.duration_ms as f64 / 1000.0,
                    w.detail
                )?;
            }
        }
        if !self.checks.is_empty() {
            writeln!(f)?;
            for c in &self.checks {
                writeln!(f, "  check {:<24} {:<6} {}", c.name, if c.ok { "ok" } else { "FAILED" }, c.detail)?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            for n in &self.notes {
                writeln!(f, "  note: {n}")?;
            }
        }
        let failed = self.failed_workers();
        if !failed.is_empty() {
            writeln!(
                f,
                "\n  FAILED workers: {} (run `kdr failover` again to retry only these)",
                failed.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The promotion runbook. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Runbook {
    parts: RunbookParts,
}

/// Which epoch a run promotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochRequest {
    /// Exactly this epoch (`--epoch N`, the monitor's promote command): refused if the store
    /// holds a claim of it or a later epoch from another run, never replaced by another epoch.
    Exact(u64),
    /// The epoch of a failover the local monitor's detector started and did not finish (`kdr
    /// failover` without `--epoch`): used like [`Exact`](Self::Exact) while it is still this
    /// standby's to promote; once another run claimed it (or a later epoch), or this standby gave
    /// it up, [`Next`](Self::Next) instead, with a note.
    Detector(u64),
    /// Resume this standby's unfinished journal, else the newest claimed epoch + 1.
    Next,
}

impl From<Option<u64>> for EpochRequest {
    fn from(epoch: Option<u64>) -> Self {
        epoch.map_or(EpochRequest::Next, EpochRequest::Exact)
    }
}

/// How the epoch was chosen.
struct Resolved {
    epoch: u64,
    source: String,
    journal: Option<Journal>,
    /// What the operator should know about the choice (journals given up, an epoch not used).
    notes: Vec<String>,
}

/// Why a requested epoch is not promoted.
enum EpochRefusal {
    /// It cannot be, whoever asks (already promoted here; another journal to resume first).
    Hard(Error),
    /// This standby gave it up earlier.
    GivenUp(Error),
    /// The store holds a claim of it or a later epoch from another run (what the claim step
    /// refuses, recording it in a journal given up).
    Claimed(String),
}

/// What an operator can do once an epoch is another standby's.
fn what_to_do(newest: Option<&Claim>) -> String {
    let next = newest.map_or(1, |c| c.epoch + 1);
    format!(
        "If an operator has decided that this standby must promote after all (the cluster has no working \
         primary), run `kdr failover` without --epoch: it takes epoch {next}, the newest claimed epoch + 1. To let \
         this standby's monitor fail over on its own again, run `kdr rearm` (its detector continues from the \
         newest claimed epoch)"
    )
}

/// The refusal of epoch `n` because the store holds `newest` (of epoch `n` or later).
fn claimed_elsewhere(n: u64, newest: &Claim) -> String {
    format!(
        "epoch {n} cannot be promoted by this standby: epoch {} already claimed by {} on {} at {} (run {}){}, \
         so another standby is promoting or has promoted; this one stops before touching any node. {}",
        newest.epoch,
        newest.holder,
        newest.host,
        newest.claimed_at.to_rfc3339(),
        newest.run_id,
        if newest.epoch == n { "" } else { ", the newest claim" },
        what_to_do(Some(newest))
    )
}

/// A step that failed, with what it got done.
struct StepFailure {
    error: Error,
    partial: Option<serde_json::Value>,
}

impl From<Error> for StepFailure {
    fn from(error: Error) -> Self {
        Self { error, partial: None }
    }
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The number of pods a manifest's key inventory records, if it records them.
pub fn expected_pods(manifest: &Manifest) -> Option<u64> {
    ["pods", "/registry/pods/", "/registry/pods"].iter().find_map(|k| manifest.key_inventory.get(*k).copied())
}

impl Runbook {
    /// Where this runbook claims its epochs (the monitor reads the newest claim from the same
    /// store, so that its detector never decides an epoch already claimed).
    pub fn claims(&self) -> &ClaimStore {
        &self.parts.claims
    }

    /// A runbook over `parts`; checks the settings and hooks.
    pub fn new(parts: RunbookParts) -> Result<Self> {
        parts.settings.validate()?;
        parts.hooks.validate()?;
        Ok(Self { parts })
    }

    fn settings(&self) -> &PromotionSettings {
        &self.parts.settings
    }

    /// Picks the epoch (and the journal to resume) for `request`.
    ///
    /// The store's claims are read first: an unfinished journal whose epoch another run claimed,
    /// or that a later claim superseded, can never complete; it is given up (kept, never deleted,
    /// never resumed) when `give_up` (a real run; the dry run only says it would be). An exact
    /// epoch that the store already holds a claim for (or for a later epoch), from another run,
    /// goes to the claim step, which refuses it with what happened and what to do, and records
    /// that in its journal, given up; a detector's epoch falls back to the next one.
    async fn resolve(&self, request: EpochRequest, give_up: bool) -> Result<Resolved> {
        let dir = &self.settings().state_dir;
        let mut journals = Journal::list(dir)?;
        let newest = self.parts.claims.newest().await?;
        let mut notes = Vec::new();
        for j in journals.iter_mut().filter(|j| !j.is_complete() && !j.is_abandoned()) {
            let Some(why) = self.taken_elsewhere(j, newest.as_ref()).await? else { continue };
            let reason =
                format!("{why}; this journal can never complete and is given up (kept, never resumed)");
            if give_up {
                tracing::warn!(epoch = j.data().epoch, journal = %j.path().display(), "{reason}");
                let mut loaded = Journal::load(j.path())?;
                loaded.abandon(&reason)?;
                *j = loaded;
            } else {
                j.mark_abandoned_in_memory(&reason);
            }
            notes.push(format!(
                "unfinished journal {} {}: {reason}",
                j.path().display(),
                if give_up { "was given up" } else { "would be given up" }
            ));
        }
        let unfinished: Vec<&Journal> =
            journals.iter().filter(|j| !j.is_complete() && !j.is_abandoned()).collect();
        let (n, fallback) = match request {
            EpochRequest::Exact(n) => (Some(n), false),
            EpochRequest::Detector(n) => (Some(n), true),
            EpochRequest::Next => (None, false),
        };
        if let Some(n) = n {
            let refusal = self.refusal_for(n, &journals, &unfinished, newest.as_ref());
            match refusal {
                Some(EpochRefusal::Hard(e)) => return Err(e),
                Some(EpochRefusal::GivenUp(e)) if !fallback => return Err(e),
                Some(EpochRefusal::Claimed(why)) if !fallback => {
                    // Refused by the claim step, which records it (a journal given up).
                    notes.push(format!("the claim step will refuse: {why}"));
                    return Ok(Resolved { epoch: n, source: "requested".into(), journal: None, notes });
                }
                Some(EpochRefusal::GivenUp(e)) => {
                    // The detector's epoch is a default, not the operator's choice: once it is
                    // given up, the operator's `kdr failover` takes the next one.
                    notes.push(format!("the monitor's detector epoch {n} is not used: {e}"));
                }
                Some(EpochRefusal::Claimed(why)) => {
                    notes.push(format!("the monitor's detector epoch {n} is not used: {why}"));
                }
                None => {
                    if let Some(j) = journals.iter().find(|j| j.data().epoch == n) {
                        return Ok(Resolved {
                            epoch: n,
                            source: "resuming its unfinished journal".into(),
                            journal: Some(Journal::load(j.path())?),
                            notes,
                        });
                    }
                    let source = if fallback { "the monitor's detector decided it" } else { "requested" };
                    return Ok(Resolved { epoch: n, source: source.into(), journal: None, notes });
                }
            }
        }
        match unfinished.as_slice() {
            [] => {}
            [one] => {
                let j = Journal::load(one.path())?;
                return Ok(Resolved {
                    epoch: j.data().epoch,
                    source: "resuming its unfinished journal".into(),
                    journal: Some(j),
                    notes,
                });
            }
            many => {
                return Err(Error::refused(format!(
                    "several unfinished promotion journals in {} (epochs {}); pass --epoch to pick one",
                    dir.display(),
                    many.iter().map(|j| j.data().epoch.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let newest_claim = newest.as_ref().map(|c| c.epoch).unwrap_or(0);
        let newest_journal = journals.last().map(|j| j.data().epoch).unwrap_or(0);
        let epoch = newest_claim.max(newest_journal) + 1;
        Ok(Resolved {
            epoch,
            source: format!("the newest claimed epoch ({newest_claim}) + 1"),
            journal: None,
            notes,
        })
    }

    /// Why `n` cannot be promoted here, if it cannot: its journal was given up or completed
    /// (hard: the operator asked for something that cannot be), another journal is unfinished,
    /// or the store holds a claim of `n` or later from another run (taken).
    fn refusal_for(
        &self,
        n: u64,
        journals: &[Journal],
        unfinished: &[&Journal],
        newest: Option<&Claim>,
    ) -> Option<EpochRefusal> {
        if let Some(j) = journals.iter().find(|j| j.data().epoch == n) {
            if let Some(why) = &j.data().abandoned {
                return Some(EpochRefusal::GivenUp(Error::refused(format!(
                    "epoch {n} was given up by this standby ({why}); journal {}. {}",
                    j.path().display(),
                    what_to_do(newest)
                ))));
            }
            if j.is_complete() {
                return Some(EpochRefusal::Hard(Error::refused(format!(
                    "epoch {n} was already promoted (journal {} completed at {}); a promotion runs once per epoch",
                    j.path().display(),
                    j.data().completed_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                ))));
            }
            // This standby's own unfinished journal (not taken elsewhere: see resolve): resume it.
            return None;
        }
        if let Some(c) = newest.filter(|c| c.epoch >= n) {
            return Some(EpochRefusal::Claimed(claimed_elsewhere(n, c)));
        }
        if let Some(other) = unfinished.first() {
            return Some(EpochRefusal::Hard(Error::refused(format!(
                "the promotion of epoch {} is unfinished (journal {}); resume it with `kdr failover` (no --epoch) \
                 before promoting epoch {n}",
                other.data().epoch,
                other.path().display()
            ))));
        }
        None
    }

    /// Why journal `j` can never complete, if so: the store holds a claim of its epoch from
    /// another run, or of a later epoch.
    async fn taken_elsewhere(&self, j: &Journal, newest: Option<&Claim>) -> Result<Option<String>> {
        let (epoch, run_id) = (j.data().epoch, &j.data().run_id);
        if let Some(c) = newest.filter(|c| c.epoch > epoch) {
            return Ok(Some(format!(
                "a later epoch {} was claimed by {} on {} at {} (run {})",
                c.epoch,
                c.holder,
                c.host,
                c.claimed_at.to_rfc3339(),
                c.run_id
            )));
        }
        Ok(match self.parts.claims.get(epoch).await? {
            Some(c) if c.run_id != *run_id => Some(format!(
                "epoch {epoch} was claimed by another run: {} on {} at {} (run {})",
                c.holder,
                c.host,
                c.claimed_at.to_rfc3339(),
                c.run_id
            )),
            _ => None,
        })
    }

    async fn choose_snapshot(&self, journal: Option<&Journal>) -> Result<Manifest> {
        let store = &self.parts.snapshots;
        if let Some(id) = journal.and_then(|j| j.data().snapshot.clone()) {
            return store.manifest(&SnapshotId::parse(&id)?).await;
        }
        if self.settings().snapshot == "latest" {
            return store.latest().await?.ok_or_else(|| Error::NotFound {
                what: format!("a complete backup set in {}", store.describe()),
                hint: Some("there is nothing to promote from; check [store] and the backups".into()),
            });
        }
        store.manifest(&SnapshotId::parse(&self.settings().snapshot)?).await
    }

    fn fence_target(&self, epoch: u64) -> FenceTarget {
        FenceTarget {
            name: self.settings().old_primary_name.clone(),
            host: self.settings().old_primary_address.clone(),
            epoch,
        }
    }

    fn hook_context(
        &self,
        phase: HookPhase,
        epoch: u64,
        snapshot: &str,
        endpoint: Option<String>,
    ) -> HookContext {
        HookContext {
            phase,
            epoch,
            new_primary: self.settings().this_node(),
            old_primary: self.settings().old_primary(),
            snapshot: Some(snapshot.to_owned()),
            endpoint,
        }
    }

    fn default_endpoint(&self) -> String {
        format!("{}:6443", self.settings().advertise_address)
    }

    /// The whole plan, for `--dry-run`. Changes nothing: no lock, no journal, no claim, no
    /// command that writes.
    pub async fn plan(&self, epoch: Option<u64>) -> Result<Plan> {
        self.plan_for(epoch.into()).await
    }

    /// [`plan`](Self::plan) for an [`EpochRequest`].
    pub async fn plan_for(&self, request: EpochRequest) -> Result<Plan> {
        let r = self.resolve(request, false).await?;
        let manifest = self.choose_snapshot(r.journal.as_ref()).await?;
        let s = self.settings();
        let mut notes = r.notes.clone();
        let status = |k: StepKind| r.journal.as_ref().and_then(|j| j.status(k));
        let action = |k: StepKind| match status(k) {
            None => StepAction::Run,
            Some(StepStatus::Succeeded) => StepAction::SkipDone,
            Some(_) => StepAction::Resume,
        };
        let cp = self.parts.control_plane.plan().await?;
        notes.extend(cp.notes.iter().cloned());
        let endpoint = if cp.endpoint.is_empty() { self.default_endpoint() } else { cp.endpoint.clone() };
        let ctx = self.check_context(r.epoch, &manifest, Some(endpoint.clone()), &[]).await;
        let fence_refused = self.fence_allowed(&self.fence_target(r.epoch)).await.err();
        if let Some(why) = &ctx.old_primary_is_this_node {
            notes.push(format!(
                "the old primary {} is this node ({why}): its Node and etcd member are kept (clean-up skipped)",
                s.old_primary_name
            ));
        }
        let hook_lines = |hooks: &[HookSpec]| -> Vec<String> {
            if hooks.is_empty() {
                vec!["(no hooks configured)".into()]
            } else {
                hooks
                    .iter()
                    .map(|h| {
                        format!("{} (timeout {})", h.display_name(), humantime::format_duration(h.timeout))
                    })
                    .collect()
            }
        };
        let mut workers = Vec::new();
        if self.parts.workers.needs_join_command() {
            workers.push(
                "create a join command on the new primary (short-lived bootstrap token, never shown)".into(),
            );
        }
        workers.extend(self.parts.workers.plan(&endpoint));
        let details = |k: StepKind| -> Vec<String> {
            match k {
                StepKind::Claim => vec![format!(
                    "create-only {} in {} (holder {})",
                    self.parts.claims.path(r.epoch),
                    self.parts.snapshots.describe(),
                    s.holder()
                )],
                StepKind::PreHooks => hook_lines(&self.parts.hooks.pre),
                StepKind::Fence => match &fence_refused {
                    Some(e) => vec![format!("REFUSED, the run stops here: {e}")],
                    None => self.parts.fencer.plan(&self.fence_target(r.epoch)),
                },
                StepKind::Restore => Vec::new(),
                StepKind::ControlPlaneInit => {
                    let mut d = vec![format!("on {}: configuration {}", s.node_name, cp.config_source)];
                    d.extend(cp.commands.iter().map(|c| format!("on {}: {c}", s.node_name)));
                    d.push(format!("new API server endpoint: {endpoint}"));
                    d
                }
                StepKind::Workers => workers.clone(),
                StepKind::PostChecks => self.parts.checks.plan(&ctx),
                StepKind::CleanUp => self.parts.clean_up.plan(&ctx),
                StepKind::PostHooks => hook_lines(&self.parts.hooks.post),
            }
        };
        let mut steps: Vec<PlannedStep> = StepKind::ALL
            .iter()
            .map(|&k| PlannedStep {
                step: k,
                destructive: k.destructive(),
                journal_status: status(k),
                action: action(k),
                details: details(k),
            })
            .collect();
        steps[3].details = self.parts.restore.plan(&manifest).await?;
        if s.mode == PromotionMode::SameHost {
            notes.push("same-host mode: everything in the bundle is restored, kubelet restarted on the old manifests".into());
        }
        if let Some(j) = &r.journal {
            notes.push(format!(
                "resuming run {} started {}",
                j.data().run_id,
                j.data().created_at.to_rfc3339()
            ));
        }
        Ok(Plan {
            epoch: r.epoch,
            epoch_source: r.source,
            holder: s.holder(),
            this_node: s.this_node(),
            old_primary: s.old_primary(),
            snapshot: SnapshotSummary {
                id: manifest.id.to_string(),
                created_at: manifest.created_at,
                cluster_name: manifest.cluster_name.clone(),
                source: format!(
                    "etcd {} member {}",
                    manifest.source.etcd_version, manifest.source.member_name
                ),
                total_keys: manifest.total_keys,
                stored_bytes: manifest.stored_bytes(),
            },
            journal: Journal::path_for(&s.state_dir, r.epoch).display().to_string(),
            steps,
            notes,
        })
    }

    /// Why the old primary is this node, if it is: the same name, the same address as this
    /// node's, or an address of this host (a same-host rebuild, seeds 001/004).
    async fn old_primary_is_this_node(&self) -> Option<String> {
        crate::fence::target_is_this_host(&self.settings().old_primary(), &self.settings().this_node()).await
    }

    async fn check_context(
        &self,
        epoch: u64,
        manifest: &Manifest,
        endpoint: Option<String>,
        failed_workers: &[String],
    ) -> CheckContext {
        CheckContext {
            epoch,
            this_node: self.settings().this_node(),
            old_primary: self.settings().old_primary(),
            expected_pods: expected_pods(manifest),
            recorded_pods: manifest.pods.clone(),
            endpoint,
            failed_workers: failed_workers.to_vec(),
            old_primary_is_this_node: self.old_primary_is_this_node().await,
        }
    }

    /// The one check before any fencer that acts runs: never aimed at this host.
    async fn fence_allowed(&self, target: &FenceTarget) -> Result<()> {
        if !self.parts.fencer.acts_on_target() {
            return Ok(());
        }
        crate::fence::refuse_fencing_this_host(target, &self.settings().this_node()).await
    }

    /// Runs (or resumes) the promotion. `epoch`: the epoch to promote (the detector's), or `None`
    /// to resume an unfinished journal or take the newest claimed epoch + 1.
    ///
    /// Returns the report when the run reached its end, possibly with failed workers (see
    /// [`RunReport::succeeded`]); `Err` when a step stopped it (the journal records which, and a
    /// later run resumes from there): a lost claim, a failing pre-hook or fence, a failed
    /// restore or init, failing post-checks or post-hooks.
    pub async fn run(&self, epoch: Option<u64>) -> Result<RunReport> {
        self.run_for(epoch.into()).await
    }

    /// [`run`](Self::run) for an [`EpochRequest`] (`kdr failover` passes the monitor's detector
    /// epoch as [`EpochRequest::Detector`]).
    pub async fn run_for(&self, request: EpochRequest) -> Result<RunReport> {
        let s = self.settings().clone();
        let _lock = JournalLock::acquire(&s.state_dir)?;
        let clock = self.parts.clock.clone();
        let r = self.resolve(request, true).await?;
        for n in &r.notes {
            tracing::warn!(note = %n, "epoch choice");
        }
        let mut journal = match r.journal {
            Some(j) => {
                tracing::info!(epoch = r.epoch, journal = %j.path().display(), "resuming the promotion");
                j
            }
            None => {
                let run_id = format!("{:016x}", rand::random::<u64>());
                Journal::create(&s.state_dir, r.epoch, &run_id, &s.holder(), clock.utc())?
            }
        };
        let manifest = self.choose_snapshot(Some(&journal)).await?;
        if journal.data().snapshot.is_none() {
            journal.set_snapshot(manifest.id.as_str())?;
        }
        let epoch = journal.data().epoch;
        let mut report = RunReport {
            epoch,
            snapshot: manifest.id.to_string(),
            journal: journal.path().display().to_string(),
            steps: Vec::new(),
            workers: Vec::new(),
            checks: Vec::new(),
            notes: r.notes.clone(),
        };
        if let Some(why) = self.old_primary_is_this_node().await {
            report.notes.push(format!(
                "the old primary {} is this node ({why}): it is not fenced by an acting fencer, and its Node and \
                 etcd member are kept",
                s.old_primary_name
            ));
        }
        let mut endpoint = journal
            .record(StepKind::ControlPlaneInit)
            .and_then(|r| r.result.as_ref())
            .and_then(|v| v.get("endpoint"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let mut workers_failed = false;

        for step in StepKind::ALL {
            let prior = journal.status(step);
            if prior == Some(StepStatus::Succeeded) {
                report.steps.push((step, "done earlier: skipped".into()));
                if step == StepKind::Workers {
                    report.workers = worker_outcomes(&journal);
                }
                continue;
            }
            tracing::info!(epoch, step = step.name(), resumed = prior.is_some(), "step starting");
            journal.begin(step, clock.utc())?;
            let result = match step {
                StepKind::Workers => {
                    let ep = endpoint.clone().unwrap_or_else(|| self.default_endpoint());
                    self.workers_step(&mut journal, &ep).await
                }
                _ => {
                    let run_id = journal.data().run_id.clone();
                    self.step(step, prior, epoch, &run_id, &manifest, endpoint.clone(), &report).await
                }
            };
            match result {
                Ok((value, summary)) => {
                    if step == StepKind::ControlPlaneInit {
                        endpoint =
                            value.get("endpoint").and_then(|v| v.as_str()).map(str::to_owned).or(endpoint);
                    }
                    if step == StepKind::Workers {
                        report.workers = worker_outcomes_from(&value);
                    }
                    if step == StepKind::PostChecks {
                        report.checks = serde_json::from_value(value.clone()).unwrap_or_default();
                    }
                    if step == StepKind::CleanUp {
                        let done: Vec<CheckResult> =
                            serde_json::from_value(value.clone()).unwrap_or_default();
                        report.checks.extend(done);
                    }
                    journal.succeed(step, clock.utc(), value)?;
                    tracing::info!(epoch, step = step.name(), "step succeeded");
                    report.steps.push((step, summary));
                }
                Err(StepFailure { error, partial }) => {
                    let msg = error.to_string();
                    journal.fail(step, clock.utc(), &msg, partial.clone())?;
                    if step == StepKind::Claim && matches!(error, Error::Refused { .. }) {
                        // Another standby owns this epoch (a lost race, or a later claim): never
                        // resume this journal, and never take "the next epoch" on our own.
                        journal.abandon(&msg)?;
                        return Err(error);
                    }
                    tracing::error!(epoch, step = step.name(), error = %msg, "step failed");
                    if step == StepKind::Workers && partial.is_some() {
                        // The control plane is up: carry on with the checks and hooks, and end
                        // non-zero naming the failed workers.
                        report.workers =
                            worker_outcomes_from(partial.as_ref().unwrap_or(&serde_json::Value::Null));
                        report.steps.push((step, format!("FAILED: {msg}")));
                        workers_failed = true;
                        continue;
                    }
                    if step == StepKind::PostChecks {
                        report.checks =
                            partial.and_then(|p| serde_json::from_value(p).ok()).unwrap_or_default();
                    } else if step == StepKind::CleanUp {
                        let done: Vec<CheckResult> =
                            partial.and_then(|p| serde_json::from_value(p).ok()).unwrap_or_default();
                        report.checks.extend(done);
                    }
                    return Err(Error::refused(format!(
                        "promotion of epoch {epoch} stopped at step {}: {msg}. The journal {} records it; run `kdr \
                         failover` again to resume from there",
                        step.name(),
                        journal.path().display()
                    )));
                }
            }
        }
        if !workers_failed {
            journal.complete(clock.utc())?;
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)] // the step's whole context, passed rather than stored
    async fn step(
        &self,
        step: StepKind,
        prior: Option<StepStatus>,
        epoch: u64,
        run_id: &str,
        manifest: &Manifest,
        endpoint: Option<String>,
        report: &RunReport,
    ) -> std::result::Result<(serde_json::Value, String), StepFailure> {
        let s = self.settings();
        let now = self.parts.clock.utc();
        match step {
            StepKind::Claim => {
                // Read right before claiming: a claim of this epoch by another run, or of a later
                // epoch, means another standby took over; this one stops (it never takes "the
                // next one" on its own). The create-only claim below settles a race for this epoch.
                if let Some(newest) = self.parts.claims.newest().await?
                    && (newest.epoch > epoch || (newest.epoch == epoch && newest.run_id != run_id))
                {
                    return Err(Error::refused(claimed_elsewhere(epoch, &newest)).into());
                }
                let claim = Claim {
                    epoch,
                    holder: s.holder(),
                    host: s.advertise_address.clone(),
                    run_id: run_id.to_owned(),
                    claimed_at: now,
                    snapshot: Some(manifest.id.to_string()),
                };
                let outcome = match self.parts.claims.claim(&claim).await {
                    Err(Error::Refused { reason }) => {
                        // A lost race: exactly one standby wins an epoch; the others stop here.
                        let newest = self.parts.claims.newest().await.ok().flatten();
                        return Err(Error::refused(format!(
                            "{reason}. This standby gives epoch {epoch} up (its journal is kept, never resumed). {}",
                            what_to_do(newest.as_ref())
                        ))
                        .into());
                    }
                    other => other?,
                };
                let what = match outcome {
                    ClaimOutcome::Won => format!("claimed epoch {epoch}"),
                    ClaimOutcome::AlreadyOurs => format!("epoch {epoch} already claimed by this run"),
                };
                Ok((json(&claim), what))
            }
            StepKind::PreHooks => {
                let ctx = self.hook_context(HookPhase::Pre, epoch, manifest.id.as_str(), None);
                let done = hooks::run_hooks(&self.parts.hooks.pre, &ctx).await?;
                Ok((json(&done), format!("{} hook(s) ok", done.len())))
            }
            StepKind::Fence => {
                let target = self.fence_target(epoch);
                self.fence_allowed(&target).await?;
                let r = self.parts.fencer.fence(&target).await?;
                let what = format!("fenced {} ({})", s.old_primary_name, r.method);
                Ok((json(&r), what))
            }
            StepKind::Restore => {
                if prior.is_some() && self.parts.restore.already_restored(manifest).await? {
                    tracing::warn!(epoch, "the restore was interrupted after its swap: not restoring again");
                    return Ok((
                        serde_json::json!({"resumed": "the backup set was already in place"}),
                        "already in place (interrupted run): not restored again".into(),
                    ));
                }
                let v = self.parts.restore.restore(manifest).await?;
                Ok((v, format!("restored backup set {}", manifest.id)))
            }
            StepKind::ControlPlaneInit => {
                let cp = &self.parts.control_plane;
                if prior.is_some() && s.mode == PromotionMode::NewHost {
                    match cp.state().await? {
                        InitState::Initialized => {
                            tracing::warn!(epoch, "kubeadm init had already finished: not running it again");
                            let endpoint = match endpoint {
                                Some(e) => e,
                                None => cp
                                    .plan()
                                    .await
                                    .map(|p| p.endpoint)
                                    .unwrap_or_else(|_| self.default_endpoint()),
                            };
                            return Ok((
                                serde_json::json!({"resumed": "control plane already initialised", "endpoint": endpoint}),
                                "already initialised (interrupted run): not run again".into(),
                            ));
                        }
                        InitState::Partial { found, missing } => {
                            return Err(Error::refused(format!(
                                "an interrupted kubeadm init left some files ({}) but not others ({}); kdr will not run \
                                 `kubeadm reset` (it deletes the restored etcd data). Move the files found aside and \
                                 run `kdr failover` again",
                                found.join(", "),
                                missing.join(", ")
                            ))
                            .into());
                        }
                        InitState::NotInitialized => {}
                    }
                }
                let r = cp.init().await?;
                let what = format!("control plane up, endpoint {}", r.endpoint);
                Ok((json(&r), what))
            }
            StepKind::Workers => unreachable!("handled by workers_step"),
            StepKind::PostChecks => {
                let failed: Vec<String> = report.failed_workers().into_iter().map(str::to_owned).collect();
                let ctx = self.check_context(epoch, manifest, endpoint, &failed).await;
                let results = self.parts.checks.run(&ctx).await?;
                let bad: Vec<&str> = results.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
                if !bad.is_empty() {
                    let detail = results
                        .iter()
                        .filter(|c| !c.ok)
                        .map(|c| format!("{}: {}", c.name, c.detail))
                        .collect::<Vec<_>>();
                    return Err(StepFailure {
                        error: Error::refused(format!("post-checks failed: {}", detail.join("; "))),
                        partial: Some(json(&results)),
                    });
                }
                Ok((json(&results), format!("{} checks passed", results.len())))
            }
            StepKind::CleanUp => {
                let failed: Vec<String> = report.failed_workers().into_iter().map(str::to_owned).collect();
                let ctx = self.check_context(epoch, manifest, endpoint, &failed).await;
                if let Some(why) = &ctx.old_primary_is_this_node {
                    tracing::warn!(epoch, old_primary = %s.old_primary_name, "the old primary is this node ({why}): its clean-up is skipped");
                }
                let results = self.parts.clean_up.run(&ctx).await?;
                let bad: Vec<String> =
                    results.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
                if !bad.is_empty() {
                    return Err(StepFailure {
                        error: Error::refused(format!(
                            "clean-up of the old primary failed: {}",
                            bad.join("; ")
                        )),
                        partial: Some(json(&results)),
                    });
                }
                let what = if ctx.old_primary_here() {
                    format!("skipped: the old primary {} is this node", s.old_primary_name)
                } else {
                    format!("the old primary {}'s Node and etcd member removed", s.old_primary_name)
                };
                Ok((json(&results), what))
            }
            StepKind::PostHooks => {
                let ctx = self.hook_context(HookPhase::Post, epoch, manifest.id.as_str(), endpoint);
                let done = hooks::run_hooks(&self.parts.hooks.post, &ctx).await?;
                Ok((json(&done), format!("{} hook(s) ok", done.len())))
            }
        }
    }

    async fn workers_step(
        &self,
        journal: &mut Journal,
        endpoint: &str,
    ) -> std::result::Result<(serde_json::Value, String), StepFailure> {
        let earlier = worker_outcomes(journal);
        let skip: BTreeSet<String> = earlier.iter().filter(|w| w.ok).map(|w| w.worker.clone()).collect();
        let join = if self.parts.workers.needs_join_command() {
            Some(self.parts.control_plane.join_command().await?)
        } else {
            None
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<WorkerOutcome>();
        let progress = move |o: WorkerOutcome| {
            let _ = tx.send(o);
        };
        let mut done: Vec<WorkerOutcome> = earlier.into_iter().filter(|w| w.ok).collect();
        let record = |done: &mut Vec<WorkerOutcome>, o: WorkerOutcome, journal: &mut Journal| -> Result<()> {
            done.retain(|w| w.worker != o.worker);
            done.push(o);
            journal.progress(StepKind::Workers, json(done))
        };
        let result = {
            let fut = self.parts.workers.recover(endpoint, join.as_ref(), &skip, &progress);
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => break r,
                    Some(o) = rx.recv() => record(&mut done, o, journal)?,
                }
            }
        };
        drop(progress);
        while let Ok(o) = rx.try_recv() {
            record(&mut done, o, journal)?;
        }
        let outcomes = result?;
        for o in outcomes {
            if !done.iter().any(|w| w.worker == o.worker && w.ok == o.ok) {
                record(&mut done, o, journal)?;
            }
        }
        let failed: Vec<&str> = done.iter().filter(|w| !w.ok).map(|w| w.worker.as_str()).collect();
        if failed.is_empty() {
            let what = format!("{} worker(s) recovered ({} earlier)", done.len() - skip.len(), skip.len());
            Ok((json(&done), what))
        } else {
            Err(StepFailure {
                error: Error::refused(format!(
                    "{} of {} workers failed: {}",
                    failed.len(),
                    done.len(),
                    failed.join(", ")
                )),
                partial: Some(json(&done)),
            })
        }
    }
}

fn worker_outcomes_from(v: &serde_json::Value) -> Vec<WorkerOutcome> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn worker_outcomes(journal: &Journal) -> Vec<WorkerOutcome> {
    journal
        .record(StepKind::Workers)
        .and_then(|r| r.result.as_ref())
        .map(worker_outcomes_from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
