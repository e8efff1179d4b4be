//! Running an operator's program locally: [`run_argv`], for hooks, alert programs, the exec
//! fence and the monitor's promote command. The child leads its own process group
//! ([`crate::process`]).
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::error::{Error, Result};
use crate::process::{GroupChild, TimedOut};
use crate::remote::CommandOutput;

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
