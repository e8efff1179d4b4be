//! [`LocalNodeRemote`]: [`NodeRemote`] for the host kdr itself runs on.
//!
//! The promotion runbook runs `kubeadm`, `kubectl` and file operations on the standby it is
//! promoting. Going through [`NodeRemote`] instead of calling `std::process` directly means the
//! same code can drive the standby locally (this type) or over SSH (`SshNodeRemote`), and tests
//! can record the exact command sequence.
//!
//! Commands run under `sh -c`. A `sudo` command runs directly when kdr is already root (the usual
//! case for a systemd service) and through `sudo -n` otherwise. Output is returned, not logged:
//! some outputs carry secrets a caller has to strip first.
use std::process::Stdio;

use async_trait::async_trait;
use tokio::process::Command;

use super::{CommandOutput, NodeRemote, RemoteCommand, shell_quote};
use crate::error::{Error, Result};
use crate::process::{GroupChild, TimedOut};

/// Runs commands on the local host. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct LocalNodeRemote {
    name: String,
}

impl LocalNodeRemote {
    /// A runner for this host, called `name` in messages and journals.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    fn script(command: &RemoteCommand) -> String {
        if command.sudo {
            // Root needs no sudo (and a minimal host may not have it); anyone else must not be
            // prompted for a password.
            let q = shell_quote(&command.command);
            format!("if [ \"$(id -u)\" = 0 ]; then exec sh -c {q}; else exec sudo -n sh -c {q}; fi")
        } else {
            command.command.clone()
        }
    }

    async fn exec(&self, command: &RemoteCommand, stdin: Option<&[u8]>) -> Result<CommandOutput> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(Self::script(command))
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = GroupChild::spawn(&mut cmd)
            .map_err(|e| Error::io(format!("start `sh -c {}` on {}", command.command, self.name), e))?;
        match child.output(stdin, command.timeout).await {
            Ok(Ok(out)) => Ok(CommandOutput {
                exit_code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
            Ok(Err(e)) => Err(Error::io(format!("run `{}` on {}", command.command, self.name), e)),
            // The shell's whole process group was killed: the command's children too.
            Err(TimedOut) => Err(Error::Timeout {
                what: format!("command `{}` on {}", command.command, self.name),
                after: command.timeout,
            }),
        }
    }
}

#[async_trait]
impl NodeRemote for LocalNodeRemote {
    fn node(&self) -> &str {
        &self.name
    }

    async fn run(&self, command: &RemoteCommand) -> Result<CommandOutput> {
        self.exec(command, None).await
    }

    async fn run_with_stdin(&self, command: &RemoteCommand, stdin: &[u8]) -> Result<CommandOutput> {
        self.exec(command, Some(stdin)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::conformance::node_remote;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        node_remote::run_all(&LocalNodeRemote::new("localhost")).await;
    }
}
