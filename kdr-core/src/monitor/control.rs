//! Operators' requests to a running monitor: `kdr pause|resume|rearm`.
//!
//! A request is a small file in `<state_dir>/control/`, written atomically (temp file, fsync,
//! rename). The monitor picks requests up before each probe round, feeds them to the detector
//! (which persists the result in its state file before anything else) and removes them. A
//! request made while no monitor runs waits for the next start. Filesystem permissions on the
//! state dir decide who may pause a failover: no network endpoint can.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::failover::Input;

/// What an operator asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlRequest {
    /// Observe and alert only; no automatic failover.
    Pause,
    /// Automatic failover again (evidence starts from zero).
    Resume,
    /// Clear a latched detector (after a promotion or a halted one); the block period starts.
    Rearm,
}

impl ControlRequest {
    /// The detector input.
    pub fn input(self) -> Input {
        match self {
            ControlRequest::Pause => Input::Pause,
            ControlRequest::Resume => Input::Resume,
            ControlRequest::Rearm => Input::Rearm,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RequestFile {
    request: ControlRequest,
    by: String,
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("control")
}

/// Queues `request` for the monitor whose state dir is `state_dir`; `by` names who asked (for
/// the log). `seq` orders requests (e.g. nanoseconds since the epoch). Returns the file written.
pub fn submit(state_dir: &Path, request: ControlRequest, by: &str, seq: u128) -> Result<PathBuf> {
    let d = dir(state_dir);
    fs::create_dir_all(&d)
        .map_err(|e| Error::io(format!("failed to create the control dir {}", d.display()), e))?;
    let name = format!("{seq:040}-{:08x}.json", rand::random::<u32>());
    let path = d.join(&name);
    let tmp = d.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec(&RequestFile { request, by: by.to_owned() })
        .map_err(|e| Error::integrity("control request", e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(&d)?.sync_all()
    };
    write().map_err(|e| Error::io(format!("failed to write control request {}", path.display()), e))?;
    Ok(path)
}

/// Requests with who made them, and messages about unreadable ones.
pub type Taken = (Vec<(ControlRequest, String)>, Vec<String>);

/// The pending requests, oldest first, removing each file as it is read. An unreadable request
/// is moved aside to `*.bad` (kept for the operator) and reported in the second list.
pub fn take(state_dir: &Path) -> Result<Taken> {
    let d = dir(state_dir);
    let mut names: Vec<PathBuf> = match fs::read_dir(&d) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io(format!("failed to read the control dir {}", d.display()), e)),
    };
    names.sort();
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for p in names {
        match fs::read(&p).ok().and_then(|b| serde_json::from_slice::<RequestFile>(&b).ok()) {
            Some(r) => {
                fs::remove_file(&p)
                    .map_err(|e| Error::io(format!("failed to remove control request {}", p.display()), e))?;
                out.push((r.request, r.by));
            }
            None => {
                let aside = p.with_extension("bad");
                let _ = fs::rename(&p, &aside);
                bad.push(format!("unreadable control request moved to {}", aside.display()));
            }
        }
    }
    Ok((out, bad))
}

/// What became of a request made with [`request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOutcome {
    /// A running monitor picked the request up within the wait.
    pub applied: bool,
    /// The detector's persisted state after it (or as it is, if not applied).
    pub state: Option<crate::failover::PersistedState>,
}

/// Queues `req` for the monitor of `state_dir` and waits up to `wait` for a running monitor to
/// pick it up (the file disappears once the detector has persisted the change). Not picked up,
/// the request stays queued and applies at the monitor's next start.
pub async fn request(
    state_dir: &Path,
    req: ControlRequest,
    by: &str,
    clock: &dyn crate::clock::Clock,
    wait: std::time::Duration,
) -> Result<RequestOutcome> {
    use crate::failover::StateStore;
    let seq = clock.utc().timestamp_nanos_opt().unwrap_or_default().max(0) as u128;
    let path = submit(state_dir, req, by, seq)?;
    let deadline = clock.instant() + wait;
    let mut applied = false;
    loop {
        if !path.exists() {
            applied = true;
            break;
        }
        if clock.instant() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The monitor removes the request after the detector handled it, and the detector persists
    // before anything else: the state file is current.
    let state = super::standby::state_store(state_dir).load()?;
    Ok(RequestOutcome { applied, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_come_back_in_order_once() {
        let d = tempfile::tempdir().unwrap();
        assert!(take(d.path()).unwrap().0.is_empty());
        submit(d.path(), ControlRequest::Pause, "alice", 2).unwrap();
        submit(d.path(), ControlRequest::Rearm, "bob", 1).unwrap();
        fs::write(d.path().join("control/zzz.json"), b"{not json").unwrap();
        let (got, bad) = take(d.path()).unwrap();
        assert_eq!(got, vec![(ControlRequest::Rearm, "bob".into()), (ControlRequest::Pause, "alice".into())]);
        assert_eq!(bad.len(), 1);
        assert!(d.path().join("control/zzz.bad").exists(), "a bad request is kept");
        assert!(take(d.path()).unwrap().0.is_empty());
    }
}
