//! The promotion's persisted step journal.
//!
//! One JSON file per epoch, `<dir>/promotion-epoch-<N>.json`, rewritten whole on every change
//! (write a temp file, fsync it, rename it over the old one, fsync the dir), so a crash leaves
//! the previous version or the new one, never a torn file. Each step's start is recorded before
//! the step acts and its end after, so after a crash a step is either finished (and is never run
//! again), or "started but not finished", which the runbook resolves per step (see
//! [`StepKind::destructive`]).
//!
//! A [`JournalLock`] (an OS file lock on `<dir>/promotion.lock`) keeps two `kdr failover`
//! processes on one host from running at once; the claim in the object store keeps two hosts
//! apart.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The journal schema this build writes and reads.
pub const JOURNAL_SCHEMA_VERSION: u32 = 1;

/// The runbook's steps, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Claim the epoch in the object store (conditional create).
    Claim,
    /// Run the pre-promotion hooks; a failure aborts.
    PreHooks,
    /// Fence the old primary; a failure stops the runbook.
    Fence,
    /// Restore etcd and the bundle.
    Restore,
    /// Bring up the control plane (`kubeadm init`).
    ControlPlaneInit,
    /// Rewire or rejoin the workers.
    Workers,
    /// Check the result (nodes Ready, pods present, a test pod Running) and clean up the old
    /// primary's Node object and etcd member.
    PostChecks,
    /// Run the post-promotion hooks (DNS or VIP switch).
    PostHooks,
}

impl StepKind {
    /// Every step, in order.
    pub const ALL: [StepKind; 8] = [
        StepKind::Claim,
        StepKind::PreHooks,
        StepKind::Fence,
        StepKind::Restore,
        StepKind::ControlPlaneInit,
        StepKind::Workers,
        StepKind::PostChecks,
        StepKind::PostHooks,
    ];

    /// Whether the step changes or replaces data in a way that must never be repeated once it
    /// finished. A destructive step found "started but not finished" after a crash is re-run only
    /// after its own safety check (the restore checks whether the swap already happened; init
    /// checks what is on disk; workers skip the ones recorded as done). Non-destructive steps
    /// (claim, hooks, fence, checks) are idempotent and simply re-run.
    pub fn destructive(self) -> bool {
        matches!(self, StepKind::Restore | StepKind::ControlPlaneInit | StepKind::Workers)
    }

    /// A short human title.
    pub fn title(self) -> &'static str {
        match self {
            StepKind::Claim => "claim the promotion epoch",
            StepKind::PreHooks => "run pre-promotion hooks",
            StepKind::Fence => "fence the old primary",
            StepKind::Restore => "restore etcd and the bundle",
            StepKind::ControlPlaneInit => "initialise the control plane",
            StepKind::Workers => "recover the workers",
            StepKind::PostChecks => "post-checks and clean-up",
            StepKind::PostHooks => "run post-promotion hooks",
        }
    }

    /// The name used in the journal and on the command line (`pre-hooks`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Claim => "claim",
            StepKind::PreHooks => "pre-hooks",
            StepKind::Fence => "fence",
            StepKind::Restore => "restore",
            StepKind::ControlPlaneInit => "control-plane-init",
            StepKind::Workers => "workers",
            StepKind::PostChecks => "post-checks",
            StepKind::PostHooks => "post-hooks",
        }
    }
}

/// Where a step got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Started and not (yet) finished: running, or interrupted by a crash.
    Started,
    /// Finished successfully; never run again.
    Succeeded,
    /// Finished with an error (recorded); resolved like `Started` on the next run.
    Failed,
}

/// One step's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub step: StepKind,
    /// Where it got to.
    pub status: StepStatus,
    /// How many times it was started.
    pub attempts: u32,
    /// When the latest attempt started.
    pub started_at: DateTime<Utc>,
    /// When the latest attempt finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it produced (step-specific; never a secret).
    pub result: Option<serde_json::Value>,
    /// Why the latest attempt failed.
    pub error: Option<String>,
}

/// The journal's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalData {
    /// [`JOURNAL_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The promotion epoch.
    pub epoch: u64,
    /// This promotion's run id (also in the claim: a resumed run recognises its own claim).
    pub run_id: String,
    /// Who promotes (the claim's holder).
    pub holder: String,
    /// The backup set being restored, fixed once chosen so a resumed run restores the same one.
    pub snapshot: Option<String>,
    /// When the journal was created.
    pub created_at: DateTime<Utc>,
    /// When every step had succeeded; a completed journal refuses any further run of its epoch.
    pub completed_at: Option<DateTime<Utc>>,
    /// Why this promotion was given up for good (its epoch, or a later one, was claimed by another
    /// run), if it was. An abandoned journal is kept and never resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
    /// The steps started so far, in order.
    pub steps: Vec<StepRecord>,
}

/// A journal file, written through on every change. See the [module docs](self).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    data: JournalData,
}

fn io(ctx: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let ctx = ctx.into();
    move |e| Error::io(ctx, e)
}

impl Journal {
    /// The journal file of `epoch` in `dir`.
    pub fn path_for(dir: &Path, epoch: u64) -> PathBuf {
        dir.join(format!("promotion-epoch-{epoch}.json"))
    }

    /// Creates the journal of a new promotion. [`Error::AlreadyExists`] if one exists for the
    /// epoch.
    pub fn create(dir: &Path, epoch: u64, run_id: &str, holder: &str, now: DateTime<Utc>) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io(format!("create state dir {}", dir.display())))?;
        let path = Self::path_for(dir, epoch);
        if path.exists() {
            return Err(Error::AlreadyExists { what: format!("promotion journal {}", path.display()) });
        }
        let j = Self {
            path,
            data: JournalData {
                schema_version: JOURNAL_SCHEMA_VERSION,
                epoch,
                run_id: run_id.to_owned(),
                holder: holder.to_owned(),
                snapshot: None,
                created_at: now,
                completed_at: None,
                abandoned: None,
                steps: Vec::new(),
            },
        };
        j.persist()?;
        Ok(j)
    }

    /// Loads a journal. A file that does not parse, or has a newer schema, is
    /// [`Error::Integrity`] naming it: it is never overwritten.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(io(format!("read promotion journal {}", path.display())))?;
        let data: JournalData = serde_json::from_slice(&bytes).map_err(|e| {
            Error::integrity(
                format!("promotion journal {}", path.display()),
                format!("{e}; it is left as it is: inspect it, move it aside to start over"),
            )
        })?;
        if data.schema_version > JOURNAL_SCHEMA_VERSION {
            return Err(Error::integrity(
                format!("promotion journal {}", path.display()),
                format!(
                    "schema {} is newer than this kdr ({JOURNAL_SCHEMA_VERSION}); upgrade kdr",
                    data.schema_version
                ),
            ));
        }
        Ok(Self { path: path.to_owned(), data })
    }

    /// The journals in `dir`, by epoch (oldest first).
    pub fn list(dir: &Path) -> Result<Vec<Journal>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list state dir {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io(format!("list state dir {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_journal = name
                .strip_prefix("promotion-epoch-")
                .and_then(|r| r.strip_suffix(".json"))
                .is_some_and(|n| n.parse::<u64>().is_ok());
            if is_journal {
                out.push(Self::load(&entry.path())?);
            }
        }
        out.sort_by_key(|j| j.data.epoch);
        Ok(out)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content.
    pub fn data(&self) -> &JournalData {
        &self.data
    }

    /// Whether every step succeeded.
    pub fn is_complete(&self) -> bool {
        self.data.completed_at.is_some()
    }

    /// The record of `step`, if it was ever started.
    pub fn record(&self, step: StepKind) -> Option<&StepRecord> {
        self.data.steps.iter().find(|r| r.step == step)
    }

    /// The status of `step`, if it was ever started.
    pub fn status(&self, step: StepKind) -> Option<StepStatus> {
        self.record(step).map(|r| r.status)
    }

    /// Whether it was given up for good ([`abandon`](Self::abandon)).
    pub fn is_abandoned(&self) -> bool {
        self.data.abandoned.is_some()
    }

    /// Gives the promotion up for good (its epoch belongs to another standby): it will not be
    /// resumed. The journal is kept as the record of what this standby did.
    pub fn abandon(&mut self, reason: &str) -> Result<()> {
        self.data.abandoned = Some(reason.to_owned());
        self.persist()
    }

    /// Marks it given up in memory only (what [`abandon`](Self::abandon) would record), for a
    /// dry run that must not write.
    pub(crate) fn mark_abandoned_in_memory(&mut self, reason: &str) {
        self.data.abandoned = Some(reason.to_owned());
    }

    /// Fixes the backup set this promotion restores.
    pub fn set_snapshot(&mut self, id: &str) -> Result<()> {
        self.data.snapshot = Some(id.to_owned());
        self.persist()
    }

    /// Records that `step` starts (before it acts).
    pub fn begin(&mut self, step: StepKind, now: DateTime<Utc>) -> Result<()> {
        match self.data.steps.iter_mut().find(|r| r.step == step) {
            Some(r) => {
                r.status = StepStatus::Started;
                r.attempts += 1;
                r.started_at = now;
                r.finished_at = None;
                r.error = None;
            }
            None => self.data.steps.push(StepRecord {
                step,
                status: StepStatus::Started,
                attempts: 1,
                started_at: now,
                finished_at: None,
                result: None,
                error: None,
            }),
        }
        self.persist()
    }

    /// Records progress of a running step (e.g. each worker as it finishes).
    pub fn progress(&mut self, step: StepKind, result: serde_json::Value) -> Result<()> {
        let r = self.running(step)?;
        r.result = Some(result);
        self.persist()
    }

    /// Records that `step` succeeded with `result`.
    pub fn succeed(&mut self, step: StepKind, now: DateTime<Utc>, result: serde_json::Value) -> Result<()> {
        let r = self.running(step)?;
        r.status = StepStatus::Succeeded;
        r.finished_at = Some(now);
        r.result = Some(result);
        r.error = None;
        self.persist()
    }

    /// Records that `step` failed with `error` (and what it got done, if anything).
    pub fn fail(
        &mut self,
        step: StepKind,
        now: DateTime<Utc>,
        error: &str,
        result: Option<serde_json::Value>,
    ) -> Result<()> {
        let r = self.running(step)?;
        r.status = StepStatus::Failed;
        r.finished_at = Some(now);
        r.error = Some(error.to_owned());
        if result.is_some() {
            r.result = result;
        }
        self.persist()
    }

    /// Marks the promotion complete. Refused unless every step succeeded.
    pub fn complete(&mut self, now: DateTime<Utc>) -> Result<()> {
        if let Some(s) = StepKind::ALL.iter().find(|s| self.status(**s) != Some(StepStatus::Succeeded)) {
            return Err(Error::refused(format!(
                "cannot complete the journal: step {} has not succeeded",
                s.name()
            )));
        }
        self.data.completed_at = Some(now);
        self.persist()
    }

    fn running(&mut self, step: StepKind) -> Result<&mut StepRecord> {
        self.data
            .steps
            .iter_mut()
            .find(|r| r.step == step && r.status == StepStatus::Started)
            .ok_or_else(|| Error::refused(format!("journal: step {} is not running", step.name())))
    }

    fn persist(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.data)
            .map_err(|e| Error::integrity("promotion journal", e.to_string()))?;
        let ctx = || format!("write promotion journal {}", self.path.display());
        let mut f = File::create(&tmp).map_err(io(ctx()))?;
        f.write_all(&bytes).map_err(io(ctx()))?;
        f.sync_all().map_err(io(ctx()))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io(ctx()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("sync state dir {}", dir.display())))?;
        Ok(())
    }
}

/// An exclusive lock on a state dir's promotions, held while a runbook runs (released on drop,
/// and by the OS if the process dies).
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

impl JournalLock {
    /// Takes the lock on `dir`, or [`Error::Refused`] if another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io(format!("create state dir {}", dir.display())))?;
        let path = dir.join("promotion.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("open lock file {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::refused(format!(
                "another kdr failover is running on this host (it holds {}); wait for it to finish",
                path.display()
            ))),
            Err(fs::TryLockError::Error(e)) => Err(Error::io(format!("lock {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    #[test]
    fn records_survive_reload_and_completion_needs_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), 4, "run-1", "master-2", t(0)).unwrap();
        j.set_snapshot("20261121T051115Z-1a2b3c4d").unwrap();
        j.begin(StepKind::Claim, t(1)).unwrap();
        j.succeed(StepKind::Claim, t(2), serde_json::json!({"epoch": 4})).unwrap();
        j.begin(StepKind::PreHooks, t(3)).unwrap();

        let again = Journal::load(&Journal::path_for(dir.path(), 4)).unwrap();
        assert_eq!(again.data(), j.data());
        assert_eq!(again.status(StepKind::Claim), Some(StepStatus::Succeeded));
        assert_eq!(again.status(StepKind::PreHooks), Some(StepStatus::Started));
        assert_eq!(again.data().snapshot.as_deref(), Some("20261121T051115Z-1a2b3c4d"));
        assert!(j.complete(t(4)).is_err());
        assert!(matches!(
            Journal::create(dir.path(), 4, "run-2", "x", t(5)),
            Err(Error::AlreadyExists { .. })
        ));

        j.fail(StepKind::PreHooks, t(5), "hook exited 1", None).unwrap();
        j.begin(StepKind::PreHooks, t(6)).unwrap();
        assert_eq!(j.record(StepKind::PreHooks).unwrap().attempts, 2);
        assert!(j.succeed(StepKind::Fence, t(7), serde_json::Value::Null).is_err(), "not running");
        for s in StepKind::ALL.into_iter().skip(1) {
            if s != StepKind::PreHooks {
                j.begin(s, t(8)).unwrap();
            }
            j.succeed(s, t(9), serde_json::Value::Null).unwrap();
        }
        j.complete(t(10)).unwrap();
        assert!(Journal::load(j.path()).unwrap().is_complete());
        assert_eq!(Journal::list(dir.path()).unwrap().len(), 1);
        assert!(!dir.path().join("promotion-epoch-4.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_journal_is_an_integrity_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = Journal::path_for(dir.path(), 2);
        fs::write(&p, b"{\"epoch\": 2, trunc").unwrap();
        assert!(matches!(Journal::load(&p), Err(Error::Integrity { .. })));
        assert_eq!(fs::read(&p).unwrap(), b"{\"epoch\": 2, trunc");
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = JournalLock::acquire(dir.path()).unwrap();
        assert!(matches!(JournalLock::acquire(dir.path()), Err(Error::Refused { .. })));
        drop(held);
        JournalLock::acquire(dir.path()).unwrap();
    }
}
