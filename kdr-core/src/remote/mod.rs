//! Running commands on nodes: the [`NodeRemote`] trait and its value types.
//!
//! The promotion runbook uses it to fence the old primary and to rewire or rejoin workers; the
//! witness probe uses it to ask a worker whether it still reaches the primary.
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};

pub mod local;
pub mod ssh;

pub use local::LocalNodeRemote;
pub use ssh::{HostKeyPolicy, SshConfig, SshNodeRemote, SshTarget};

/// A command to run on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCommand {
    /// A shell command line (run by the node's `sh -c`). Never put a secret in it: command lines
    /// are logged and recorded in journals.
    pub command: String,
    /// Run it through `sudo -n` (non-interactive: a password prompt is an error, not a hang).
    pub sudo: bool,
    /// How long the command may run before it is abandoned and [`Error::Timeout`] returned.
    pub timeout: Duration,
    /// Log the command line and its exit at debug instead of info: for probes that run every
    /// few seconds (witnesses), whose results the monitor reports itself.
    pub quiet: bool,
}

impl RemoteCommand {
    /// A command with a timeout, without sudo.
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self { command: command.into(), sudo: false, timeout, quiet: false }
    }

    /// The same command, logged at debug (see [`quiet`](Self::quiet)).
    pub fn quietly(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// The same command, run through `sudo -n`.
    pub fn with_sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    /// The command line as the node's shell receives it.
    pub fn command_line(&self) -> String {
        if self.sudo { format!("sudo -n sh -c {}", shell_quote(&self.command)) } else { self.command.clone() }
    }
}

/// What a command that ran produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` if the command was killed by a signal.
    pub exit_code: Option<i32>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// `Ok(self)` if it exited 0, else [`Error::CommandFailed`] naming the host and command.
    pub fn check(self, host: &str, command: &RemoteCommand) -> Result<Self> {
        if self.success() {
            return Ok(self);
        }
        let tail: String = {
            let s = self.stderr.trim_end();
            let start = s.char_indices().rev().nth(2000).map(|(i, _)| i).unwrap_or(0);
            s[start..].to_owned()
        };
        Err(Error::CommandFailed {
            host: host.to_owned(),
            command: command.command.clone(),
            exit_code: self.exit_code,
            stderr: tail,
        })
    }
}

/// Runs commands on one node.
///
/// Guarantees every implementation gives:
/// - a command that ran returns `Ok` with its exit code, whatever the code; use
///   [`CommandOutput::check`] to turn a non-zero exit into [`Error::CommandFailed`];
/// - a node that cannot be reached or authenticated is [`Error::Unavailable`] naming the node;
/// - a command that outlives [`RemoteCommand::timeout`] (or a connection that takes longer than
///   the implementation's connect timeout) is [`Error::Timeout`]; nothing waits forever.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait NodeRemote: Send + Sync + fmt::Debug {
    /// The node's name, for messages and result tables.
    fn node(&self) -> &str;

    /// Runs `command` on the node.
    async fn run(&self, command: &RemoteCommand) -> Result<CommandOutput>;

    /// Runs `command` with `stdin` written to its standard input, followed by end-of-file.
    ///
    /// This is how secrets reach a node (a bootstrap token inside a kubeadm `JoinConfiguration`):
    /// never on the command line, which is logged, recorded in journals and visible in `ps`.
    /// Implementations never log or record the bytes of `stdin`. Same guarantees as [`run`]
    /// otherwise.
    ///
    /// The default implementation returns [`Error::Refused`]: an implementation that cannot feed
    /// standard input must not fall back to putting the data on a command line.
    ///
    /// [`run`]: NodeRemote::run
    async fn run_with_stdin(&self, command: &RemoteCommand, stdin: &[u8]) -> Result<CommandOutput> {
        let _ = (command, stdin.len());
        Err(Error::refused(format!(
            "the NodeRemote for {} cannot feed standard input to a command, and secrets are never put \
             on command lines; use an implementation that supports it (SshNodeRemote does)",
            self.node()
        )))
    }
}

/// Quotes `s` for a POSIX shell (single quotes, with embedded quotes escaped).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn sudo_wraps_the_whole_line() {
        let c = RemoteCommand::new("systemctl stop kubelet && echo ok", Duration::from_secs(5)).with_sudo();
        assert_eq!(c.command_line(), "sudo -n sh -c 'systemctl stop kubelet && echo ok'");
    }

    #[test]
    fn check_names_host_command_and_code() {
        let cmd = RemoteCommand::new("false", Duration::from_secs(1));
        let out = CommandOutput { exit_code: Some(3), stdout: String::new(), stderr: "boom\n".into() };
        let err = out.check("worker-1", &cmd).unwrap_err().to_string();
        assert_eq!(err, "command `false` on worker-1 failed with exit code 3: boom");
    }
}
