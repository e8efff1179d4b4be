//! The detector's persisted state and where it is kept: [`StateStore`], [`FileStateStore`]
//! (write, fsync, rename, fsync the directory) and [`InMemoryStateStore`] (replay and tests).
//!
//! Only what must survive a restart is persisted: the latch (including a promotion in progress),
//! the epoch, pause, and whether a re-arm's block period is still pending. Suspicion timers are
//! deliberately not: after a restart the detector warms up and collects evidence from zero.
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Which step of a promotion is in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The fence command was issued (or is about to be); its result is not known yet.
    Fence,
    /// The promote command was issued (or is about to be); its result is not known yet.
    Promote,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Fence => "fence",
            Phase::Promote => "promote",
        })
    }
}

/// The one-shot latch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Latch {
    /// No automatic failover has happened since the last re-arm: the detector may act.
    #[default]
    Armed,
    /// A failover of `epoch` was decided and persisted; `phase` is the step whose result is
    /// awaited. Found at start-up, it means the monitor died mid-promotion: the detector halts
    /// instead of promoting again.
    InProgress {
        /// The failover's epoch (its fencing token).
        epoch: u64,
        /// The step in progress.
        phase: Phase,
    },
    /// The standby was promoted in `epoch`. Only an operator's re-arm clears this.
    Promoted {
        /// The failover's epoch.
        epoch: u64,
    },
    /// A failover of `epoch` started but did not complete (fence or promote failed, state could
    /// not be persisted, restart mid-promotion). Needs an operator; only a re-arm clears this.
    Halted {
        /// The failover's epoch.
        epoch: u64,
        /// What happened, for the operator.
        reason: String,
    },
}

/// Everything the detector persists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// Incremented by each failover decision; fence and promote carry it as a fencing token.
    pub epoch: u64,
    /// The latch, including a promotion in progress.
    pub latch: Latch,
    /// Paused by an operator: observe and alert, never act.
    pub paused: bool,
    /// Re-armed, and the block period has not yet run out. After a restart the block period runs
    /// again in full (the detector has no wall clock to measure what was left of it).
    pub block_pending: bool,
}

/// Where the detector's [`PersistedState`] is kept.
///
/// Guarantees every implementation gives:
/// - `save` is atomic and durable: when it returns `Ok`, a later `load` (also after a crash or a
///   power loss) returns this state, and never a mix of this and the previous one;
/// - `load` returns `Ok(None)` only when no state was ever saved; unreadable or corrupt state is
///   [`Error::Integrity`] (a detector must never take "corrupt" for "not latched").
pub trait StateStore: Send + fmt::Debug {
    /// The last saved state, or `None` if there is none yet.
    fn load(&self) -> Result<Option<PersistedState>>;
    /// Saves `state` atomically and durably.
    fn save(&mut self, state: &PersistedState) -> Result<()>;
}

/// A [`StateStore`] in memory, for replay (where a "restart" keeps it) and tests.
#[derive(Clone, Debug, Default)]
pub struct InMemoryStateStore {
    state: Option<PersistedState>,
    saves: usize,
}

impl InMemoryStateStore {
    /// How many times `save` was called.
    pub fn saves(&self) -> usize {
        self.saves
    }
}

impl StateStore for InMemoryStateStore {
    fn load(&self) -> Result<Option<PersistedState>> {
        Ok(self.state.clone())
    }
    fn save(&mut self, state: &PersistedState) -> Result<()> {
        self.state = Some(state.clone());
        self.saves += 1;
        Ok(())
    }
}

const FORMAT: &str = "kdr-detector-state/1";

/// The file's envelope: the state and a SHA-256 of its canonical JSON, so that a flipped byte
/// that still parses (`"paused": true` → `"paused": fals`... or a digit) is caught.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    state: PersistedState,
    sha256: String,
}

fn digest(state: &PersistedState) -> Result<String> {
    let bytes = serde_json::to_vec(state)
        .map_err(|e| Error::integrity("detector state", format!("cannot serialize: {e}")))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// A [`StateStore`] in one JSON file: written to `<file>.tmp`, fsynced, renamed over the file,
/// and the directory fsynced, so that a crash leaves either the old state or the new one.
#[derive(Clone, Debug)]
pub struct FileStateStore {
    path: PathBuf,
}

impl FileStateStore {
    /// A store at `path` (for example `/var/lib/kdr/detector-state.json`). The directory must
    /// exist; the file is created by the first save.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, detail: impl fmt::Display) -> Error {
        Error::integrity(
            format!("detector state file {}", self.path.display()),
            format!(
                "{detail}. The detector will not start: it cannot tell whether it already promoted. \
                 Check the cluster (was the standby promoted?), then move the file aside (keep it) \
                 and start again; a detector without a state file starts armed"
            ),
        )
    }
}

impl StateStore for FileStateStore {
    fn load(&self) -> Result<Option<PersistedState>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("failed to read detector state file {}", self.path.display()),
                    e,
                ));
            }
        };
        let env: Envelope = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("not valid state JSON ({e})")))?;
        if env.format != FORMAT {
            return Err(self.corrupt(format!("unknown format {:?} (expected {FORMAT:?})", env.format)));
        }
        let actual = digest(&env.state)?;
        if actual != env.sha256 {
            return Err(self.corrupt(format!(
                "checksum mismatch (file says {}, content hashes to {actual})",
                env.sha256
            )));
        }
        Ok(Some(env.state))
    }

    fn save(&mut self, state: &PersistedState) -> Result<()> {
        let env = Envelope { format: FORMAT.to_owned(), state: state.clone(), sha256: digest(state)? };
        let mut bytes = serde_json::to_vec_pretty(&env)
            .map_err(|e| Error::integrity("detector state", format!("cannot serialize: {e}")))?;
        bytes.push(b'\n');
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let ctx = |what: &str, p: &Path| format!("failed to {what} detector state file {}", p.display());
        {
            let mut f = fs::File::create(&tmp).map_err(|e| Error::io(ctx("create", &tmp), e))?;
            f.write_all(&bytes).map_err(|e| Error::io(ctx("write", &tmp), e))?;
            f.sync_all().map_err(|e| Error::io(ctx("fsync", &tmp), e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| Error::io(ctx("rename into place", &self.path), e))?;
        // The rename is durable only once the directory entry is.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("failed to fsync directory {}", dir.display()), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PersistedState> {
        vec![
            PersistedState::default(),
            PersistedState {
                epoch: 1,
                latch: Latch::InProgress { epoch: 1, phase: Phase::Fence },
                ..Default::default()
            },
            PersistedState {
                epoch: 1,
                latch: Latch::InProgress { epoch: 1, phase: Phase::Promote },
                paused: true,
                ..Default::default()
            },
            PersistedState { epoch: 2, latch: Latch::Promoted { epoch: 2 }, ..Default::default() },
            PersistedState {
                epoch: 3,
                latch: Latch::Halted { epoch: 3, reason: "fence failed".into() },
                ..Default::default()
            },
            PersistedState { epoch: 3, latch: Latch::Armed, paused: false, block_pending: true },
        ]
    }

    /// The same checks for every store.
    fn conformance(store: &mut dyn StateStore) {
        assert_eq!(store.load().unwrap(), None, "a fresh store holds nothing");
        for s in samples() {
            store.save(&s).unwrap();
            assert_eq!(store.load().unwrap(), Some(s));
        }
    }

    #[test]
    fn in_memory_store_conforms() {
        conformance(&mut InMemoryStateStore::default());
    }

    #[test]
    fn file_store_conforms_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        conformance(&mut FileStateStore::new(&path));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        // A new store on the same file (a restarted monitor) sees the last state.
        assert_eq!(FileStateStore::new(&path).load().unwrap(), samples().last().cloned());
    }

    #[test]
    fn corrupt_files_are_errors_never_not_latched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut store = FileStateStore::new(&path);
        store
            .save(&PersistedState { epoch: 1, latch: Latch::Promoted { epoch: 1 }, ..Default::default() })
            .unwrap();
        let good = fs::read_to_string(&path).unwrap();

        let cases = [
            ("truncated", good[..good.len() / 2].to_owned()),
            ("empty", String::new()),
            ("tampered latch", good.replace("\"promoted\"", "\"armed\"")),
            ("tampered epoch", good.replace("\"epoch\": 1", "\"epoch\": 0")),
            ("garbage", "\u{0}\u{1}binary".to_owned()),
        ];
        for (name, content) in cases {
            assert_ne!(content, good, "{name}: the case must change the file");
            fs::write(&path, content).unwrap();
            let err = FileStateStore::new(&path).load().unwrap_err();
            assert!(matches!(err, Error::Integrity { .. }), "{name}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains("move the file aside"),
                "{name}: {msg}"
            );
        }
    }

    #[test]
    fn unwritable_directory_is_an_io_error_naming_the_file() {
        let mut store = FileStateStore::new("/nonexistent-kdr-dir/state.json");
        let err = store.save(&PersistedState::default()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("/nonexistent-kdr-dir/state.json.tmp"), "{err}");
    }
}
