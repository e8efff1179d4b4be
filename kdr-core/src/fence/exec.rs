//! [`ExecFencer`]: fences by running an operator's hook (IPMI power-off, a cloud CLI stopping the
//! VM).
//!
//! The hook is run directly (argv, no shell) with the target in environment variables
//! (`KDR_FENCE_NODE`, `KDR_FENCE_HOST`, `KDR_EPOCH`); it reads any credentials it needs from its
//! own files, so no secret passes through kdr's argv, logs or journal. It must exit 0 only once
//! the node is off, and it must be idempotent (a resumed runbook may run it again).
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::{FenceReport, FenceTarget, Fencer};
use crate::error::{Error, Result};
use crate::process::{GroupChild, TimedOut};
use crate::remote::CommandOutput;

/// Fences with an operator's hook. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct ExecFencer {
    argv: Vec<String>,
    timeout: Duration,
}

impl ExecFencer {
    /// A fencer running `argv` (program first), allowed `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Result<Self> {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::config("fence.command", "empty command: give the hook's argv, program first"));
        }
        Ok(Self { argv, timeout })
    }

    fn env(target: &FenceTarget) -> Vec<(String, String)> {
        vec![
            ("KDR_FENCE_NODE".into(), target.name.clone()),
            ("KDR_FENCE_HOST".into(), target.host.clone()),
            ("KDR_EPOCH".into(), target.epoch.to_string()),
        ]
    }
}

/// Runs `argv` locally (no shell) with extra `env`, within `timeout`. A non-zero exit is
/// [`Error::CommandFailed`] (host `localhost`), a missing program [`Error::Config`] naming
/// `config_key`, an overrun [`Error::Timeout`] naming `config_key`.
///
/// The program leads its own process group: on a timeout, or when the caller's future is dropped
/// (shutdown, an outer bound), the whole group is killed, whatever the program started itself
/// (see `crate::process`).
pub(crate) async fn run_argv(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
    config_key: &str,
) -> Result<CommandOutput> {
    let shown = argv.join(" ");
    let (program, args) = argv.split_first().ok_or_else(|| Error::config(config_key, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = GroupChild::spawn(&mut cmd).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Error::config(
            config_key,
            format!("cannot run {program:?} ({e}); give an existing, executable program"),
        ),
        _ => Error::io(format!("start `{shown}`"), e),
    })?;
    let out = match child.output(None, timeout).await {
        Ok(r) => r.map_err(|e| Error::io(format!("run `{shown}`"), e))?,
        Err(TimedOut) => {
            return Err(Error::Timeout {
                what: format!("`{shown}` ({config_key}; it and every process it started were killed)"),
                after: timeout,
            });
        }
    };
    let output = CommandOutput {
        exit_code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !output.success() {
        let s = output.stderr.trim_end();
        let start = s.char_indices().rev().nth(2000).map(|(i, _)| i).unwrap_or(0);
        return Err(Error::CommandFailed {
            host: "localhost".into(),
            command: shown,
            exit_code: output.exit_code,
            stderr: s[start..].to_owned(),
        });
    }
    Ok(output)
}

#[async_trait]
impl Fencer for ExecFencer {
    fn plan(&self, target: &FenceTarget) -> Vec<String> {
        vec![format!(
            "run `{}` with KDR_FENCE_NODE={} KDR_FENCE_HOST={} KDR_EPOCH={} (timeout {})",
            self.argv.join(" "),
            target.name,
            target.host,
            target.epoch,
            humantime::format_duration(self.timeout)
        )]
    }

    async fn fence(&self, target: &FenceTarget) -> Result<FenceReport> {
        tracing::info!(node = %target.name, hook = %self.argv.join(" "), "fencing the old primary with the exec hook");
        let out = run_argv(&self.argv, &Self::env(target), self.timeout, "fence.command").await?;
        let mut actions = vec![format!("ran `{}`: exit 0", self.argv.join(" "))];
        actions.extend(
            out.stdout.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().map(str::to_owned),
        );
        Ok(FenceReport { method: "exec".into(), actions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> FenceTarget {
        FenceTarget { name: "master-1".into(), host: "192.168.30.200".into(), epoch: 7 }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn hook_gets_the_target_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("fenced");
        let script = format!(
            "echo \"$KDR_FENCE_NODE $KDR_FENCE_HOST $KDR_EPOCH\" > {}; echo powered off",
            log.display()
        );
        let f = ExecFencer::new(sh(&script), Duration::from_secs(10)).unwrap();
        let r = f.fence(&target()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "master-1 192.168.30.200 7\n");
        assert_eq!(r.method, "exec");
        assert!(r.actions.iter().any(|a| a == "powered off"), "{:?}", r.actions);
    }

    #[tokio::test]
    async fn failing_missing_or_hanging_hooks_are_errors() {
        let f = ExecFencer::new(sh("echo 'ipmi: no route' >&2; exit 4"), Duration::from_secs(10)).unwrap();
        match f.fence(&target()).await.unwrap_err() {
            Error::CommandFailed { exit_code, stderr, .. } => {
                assert_eq!(exit_code, Some(4));
                assert_eq!(stderr, "ipmi: no route");
            }
            other => panic!("{other:?}"),
        }
        let f = ExecFencer::new(vec!["/nonexistent/fence".into()], Duration::from_secs(10)).unwrap();
        assert!(matches!(f.fence(&target()).await, Err(Error::Config { key, .. }) if key == "fence.command"));
        let f = ExecFencer::new(sh("sleep 30"), Duration::from_millis(300)).unwrap();
        assert!(matches!(f.fence(&target()).await, Err(Error::Timeout { .. })));
        assert!(ExecFencer::new(vec![], Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn a_hook_that_times_out_leaves_no_process_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        // The shape of `sh -c 'sleep 300 & sleep 300'`, with the grandchild's pid written down.
        let script = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
        let f = ExecFencer::new(sh(&script), Duration::from_secs(1)).unwrap();
        let e = f.fence(&target()).await.unwrap_err();
        assert!(matches!(&e, Error::Timeout { what, .. } if what.contains("fence.command")), "{e}");
        let grandchild = crate::process::tests::pid_in(&pidfile).await;
        assert!(
            crate::process::tests::wait_gone(grandchild).await,
            "the hook's background sleep ({grandchild}) outlived the timeout"
        );
    }
}
