//! Local child processes that leave nothing behind: [`GroupChild`].
//!
//! Hooks, fences, alert programs and tools start children of their own (`sh -c` runs its
//! commands as children, a cloud CLI forks helpers, a script backgrounds a `sleep`). Killing only
//! the direct child on a timeout leaves those running: still powering a machine off, still writing
//! a data dir, still holding kdr's pipes open. So every child kdr starts leads its own process
//! group, and a timeout or a cancelled caller (its future dropped) stops the whole group: SIGTERM,
//! then SIGKILL after [`TERM_GRACE`]; the direct child is reaped.
//!
//! The grace is for children that are kdr themselves (`kdr failover`, the monitor's usual
//! promotion): their own children lead groups of their own, which a SIGKILL to kdr would leave
//! running; on SIGTERM kdr drops its work, which stops those groups the same way.
use std::io;
use std::process::{ExitStatus, Output};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, Command};

/// How long a group has between SIGTERM and SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(3);

/// How long a killed leader may take to be reaped before it is left to tokio's orphan reaper (a
/// process in uninterruptible I/O only dies once that I/O ends).
const REAP_WAIT: Duration = Duration::from_secs(5);

/// A child that leads its own process group. Dropping it (a cancelled caller) or a timeout in
/// [`output`](Self::output) stops the whole group (SIGTERM, then SIGKILL); see the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct GroupChild {
    child: Child,
    /// The group to kill on drop; `None` once the group has been killed or the leader has been
    /// seen to exit with nothing left to wait for.
    group: Option<Pid>,
}

/// The limit given to [`GroupChild::output`] passed; the group was killed and the leader reaped.
#[derive(Debug)]
pub(crate) struct TimedOut;

impl GroupChild {
    /// Starts `cmd` as the leader of a new process group (pgid = its pid).
    pub(crate) fn spawn(cmd: &mut Command) -> io::Result<Self> {
        // Not kill_on_drop: that would SIGKILL the leader at once, without its grace; `Drop`
        // below stops the group, and tokio reaps a dropped child once it exits.
        let child = cmd.process_group(0).kill_on_drop(false).spawn()?;
        let group = child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw);
        Ok(Self { child, group })
    }

    /// The leader's pid, until it has been reaped.
    pub(crate) fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The leader's stderr, if piped and not taken yet.
    pub(crate) fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Sends `signal` to every process of the group (e.g. SIGTERM for a graceful stop).
    pub(crate) fn signal_group(&self, signal: Signal) {
        if let Some(group) = self.group {
            // ESRCH: the group is gone already.
            let _ = rustix::process::kill_process_group(group, signal);
        }
    }

    /// Waits for the leader to exit. Once it has, nothing is killed on drop (the group it led
    /// may be empty, and its id free for another process).
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.group = None;
        Ok(status)
    }

    /// Stops the whole group: SIGTERM, SIGKILL once the leader has exited or after
    /// [`TERM_GRACE`], then reaps the leader (bounded by [`REAP_WAIT`]).
    pub(crate) async fn kill(&mut self) {
        if let Some(group) = self.group.take() {
            let _ = rustix::process::kill_process_group(group, Signal::TERM);
            let _ = tokio::time::timeout(TERM_GRACE, self.child.wait()).await;
            // Whatever is left in the group, the leader too if it ignored SIGTERM. Its id is still
            // the group's: a group is only freed once empty.
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        let _ = self.child.start_kill();
        if tokio::time::timeout(REAP_WAIT, self.child.wait()).await.is_err() {
            tracing::warn!(pid = ?self.child.id(), "a killed child has not exited yet; it will be reaped when it does");
        }
    }

    /// Writes `input` (if any) to its stdin, then closes it, and collects stdout and stderr until
    /// the leader has exited and both pipes are closed, within `timeout`. On timeout the group is
    /// killed (a grandchild holding a pipe open included) and the leader reaped.
    ///
    /// Pipes that were not set to `Stdio::piped()` read as empty.
    pub(crate) async fn output(
        mut self,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<io::Result<Output>, TimedOut> {
        let stdin = self.child.stdin.take();
        // The pipes are read by tasks of their own, which go on draining them through the grace
        // of a timeout or a cancellation: a group cleaning up on SIGTERM must not die of SIGPIPE
        // (a shell reporting its killed child, kdr logging that it stops).
        let stdout = tokio::spawn(read_all(self.child.stdout.take()));
        let stderr = tokio::spawn(read_all(self.child.stderr.take()));
        let readers = [stdout.abort_handle(), stderr.abort_handle()];
        let feed = async move {
            if let (Some(mut pipe), Some(bytes)) = (stdin, input) {
                // A command that exits without reading its input closes the pipe: not an error.
                let _ = pipe.write_all(bytes).await;
                let _ = pipe.shutdown().await;
            }
            // Without input, dropping the pipe here closes it.
        };
        let child = &mut self.child;
        let run = async move {
            let ((), status, out, err) = tokio::join!(feed, child.wait(), stdout, stderr);
            let joined = |r: std::result::Result<io::Result<Vec<u8>>, tokio::task::JoinError>| {
                r.map_err(io::Error::other).and_then(|r| r)
            };
            Ok(Output { status: status?, stdout: joined(out)?, stderr: joined(err)? })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => {
                if result.is_ok() {
                    // Exited, pipes closed: whatever it left running on purpose (a daemon with its
                    // output redirected) is not ours to kill.
                    self.group = None;
                }
                Ok(result)
            }
            Err(_) => {
                self.kill().await;
                // The group is dead; a pipe still open is held by a process outside it.
                readers.iter().for_each(tokio::task::AbortHandle::abort);
                Err(TimedOut)
            }
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        let Some(group) = self.group.take() else { return };
        let _ = rustix::process::kill_process_group(group, Signal::TERM);
        // SIGKILL after the grace, from a task: `drop` cannot wait. If the runtime shuts down
        // first, the task is dropped and the guard kills at once.
        let guard = KillOnDrop(group);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(TERM_GRACE).await;
                    drop(guard);
                });
            }
            Err(_) => drop(guard),
        }
    }
}

/// Sends SIGKILL to a process group when dropped.
struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // ESRCH: the group is gone already.
        let _ = rustix::process::kill_process_group(self.0, Signal::KILL);
    }
}

async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        p.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::process::Stdio;

    use super::*;

    /// Whether `pid` is gone (or a zombie, which runs nothing: in a container without an init
    /// that reaps, an orphan stays one).
    pub(crate) fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // `pid (comm) S ...`: the state follows the last ')'.
            Ok(stat) => {
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            }
        }
    }

    /// Polls until `pid` is gone, up to 5 s.
    pub(crate) async fn wait_gone(pid: u32) -> bool {
        for _ in 0..100 {
            if gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The pid a script wrote to `file`, waiting up to 5 s for it.
    pub(crate) async fn pid_in(file: &Path) -> u32 {
        for _ in 0..100 {
            if let Ok(s) = std::fs::read_to_string(file)
                && let Ok(pid) = s.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no pid in {}", file.display());
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    #[tokio::test]
    async fn a_timeout_kills_the_grandchildren_too() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        // The grandchild holds stdout open: without the group kill, output() would not even return
        // before the timeout, and the sleep would outlive it.
        let script = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
        let child = GroupChild::spawn(&mut sh(&script)).unwrap();
        let leader = child.id().unwrap();
        let r = child.output(None, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(TimedOut)), "{r:?}");
        let grandchild = pid_in(&pidfile).await;
        assert!(wait_gone(grandchild).await, "grandchild {grandchild} still runs");
        assert!(gone(leader), "leader {leader} still runs");
    }

    #[tokio::test]
    async fn a_dropped_caller_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let child = GroupChild::spawn(&mut sh(&script)).unwrap();
        let task = tokio::spawn(child.output(None, Duration::from_secs(300)));
        let grandchild = pid_in(&pidfile).await;
        task.abort();
        let _ = task.await;
        assert!(wait_gone(grandchild).await, "grandchild {grandchild} outlived its cancelled caller");
    }

    #[tokio::test]
    async fn a_timeout_gives_the_group_a_grace_to_clean_up_then_kills_what_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cleaned, stubborn) = (dir.path().join("cleaned"), dir.path().join("stubborn"));
        // The leader cleans up on SIGTERM (as kdr does: it stops its own children's groups); a
        // grandchild ignores SIGTERM and must still be gone after the grace.
        let script = format!(
            "trap 'echo yes > {c}; exit 1' TERM; sh -c 'trap \"\" TERM; sleep 300' & echo $! > {s}; \
             while :; do sleep 0.1; done",
            c = cleaned.display(),
            s = stubborn.display()
        );
        let child = GroupChild::spawn(&mut sh(&script)).unwrap();
        let r = child.output(None, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(TimedOut)), "{r:?}");
        assert_eq!(std::fs::read_to_string(&cleaned).unwrap(), "yes\n", "the leader got SIGTERM first");
        let pid = pid_in(&stubborn).await;
        assert!(wait_gone(pid).await, "{pid} ignored SIGTERM and survived the SIGKILL");
    }

    #[tokio::test]
    async fn output_feeds_stdin_and_collects_both_pipes() {
        let child = GroupChild::spawn(&mut sh("cat; echo oops >&2; exit 3")).unwrap();
        let out = child.output(Some(b"hello"), Duration::from_secs(10)).await.unwrap().unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"oops\n");
    }

    #[tokio::test]
    async fn a_finished_command_leaves_its_detached_children_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon");
        // Output redirected: the command is done when the shell exits.
        let script = format!("sleep 300 >/dev/null 2>&1 & echo $! > {}", pidfile.display());
        let child = GroupChild::spawn(&mut sh(&script)).unwrap();
        let out = child.output(None, Duration::from_secs(10)).await.unwrap().unwrap();
        assert!(out.status.success());
        let daemon = pid_in(&pidfile).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!gone(daemon), "a command that finished had its background process killed");
        let _ = rustix::process::kill_process(Pid::from_raw(daemon as i32).unwrap(), Signal::KILL);
    }
}
