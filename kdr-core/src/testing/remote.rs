//! [`RecordingNodeRemote`]: a [`NodeRemote`] fake that records every command and answers from a
//! script. For unit tests of code that drives nodes (worker recovery, fencing); it passes the same
//! conformance suite as `SshNodeRemote` once scripted with
//! [`conformance::node_remote::script`](crate::testing::conformance::node_remote::script).
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::remote::{CommandOutput, NodeRemote, RemoteCommand};

/// How the fake answers a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Return this output (after an optional delay, which counts against the command's timeout).
    Output {
        /// What the command "prints" and its exit code.
        output: CommandOutput,
        /// How long the command "runs".
        delay: Duration,
    },
    /// Echo the standard input back on stdout, exit 0 (like `cat`).
    EchoStdin,
    /// Never finish: the command's timeout expires.
    Hang,
    /// The node cannot be reached for this command.
    Unreachable,
}

impl Reply {
    /// Exits with `code`, printing `stdout` and `stderr`, at once.
    pub fn exit(code: i32, stdout: &str, stderr: &str) -> Self {
        Reply::Output {
            output: CommandOutput { exit_code: Some(code), stdout: stdout.into(), stderr: stderr.into() },
            delay: Duration::ZERO,
        }
    }

    /// Killed by a signal (no exit code).
    pub fn killed() -> Self {
        Reply::Output { output: CommandOutput::default(), delay: Duration::ZERO }
    }
}

/// One command the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCall {
    /// The command as passed.
    pub command: RemoteCommand,
    /// The standard input it was given, if any (kept for test inspection only; real
    /// implementations never record it).
    pub stdin: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<RecordedCall>,
    /// (substring of the command, reply); the last matching rule wins.
    rules: Vec<(String, Reply)>,
    unreachable: bool,
}

/// A [`NodeRemote`] that records commands and answers from a script. Unscripted commands exit 0
/// with no output.
#[derive(Debug)]
pub struct RecordingNodeRemote {
    name: String,
    state: Mutex<State>,
}

impl RecordingNodeRemote {
    /// A reachable node named `name` on which every command succeeds silently.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commands containing `pattern` get `reply` (later rules take precedence).
    pub fn respond(&self, pattern: impl Into<String>, reply: Reply) -> &Self {
        self.state().rules.push((pattern.into(), reply));
        self
    }

    /// Makes every later command fail with [`Error::Unavailable`] (or succeed again).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.state().unreachable = unreachable;
    }

    /// Every command received, with its standard input.
    pub fn recorded(&self) -> Vec<RecordedCall> {
        self.state().calls.clone()
    }

    /// The command lines received, as the node's shell would see them (`sudo -n sh -c ...`).
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.iter().map(|c| c.command.command_line()).collect()
    }

    /// The commands received, without the sudo wrapping.
    pub fn commands(&self) -> Vec<String> {
        self.state().calls.iter().map(|c| c.command.command.clone()).collect()
    }

    async fn answer(&self, command: &RemoteCommand, stdin: Option<&[u8]>) -> Result<CommandOutput> {
        let reply = {
            let mut st = self.state();
            st.calls.push(RecordedCall { command: command.clone(), stdin: stdin.map(<[u8]>::to_vec) });
            if st.unreachable {
                Reply::Unreachable
            } else {
                st.rules
                    .iter()
                    .rev()
                    .find(|(p, _)| command.command.contains(p.as_str()))
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| Reply::exit(0, "", ""))
            }
        };
        let run = async {
            match reply {
                Reply::Output { output, delay } => {
                    tokio::time::sleep(delay).await;
                    Ok(output)
                }
                Reply::EchoStdin => Ok(CommandOutput {
                    exit_code: Some(0),
                    stdout: String::from_utf8_lossy(stdin.unwrap_or_default()).into_owned(),
                    stderr: String::new(),
                }),
                Reply::Hang => std::future::pending().await,
                Reply::Unreachable => Err(Error::unavailable(
                    format!("cannot reach node {} (recording fake set unreachable)", self.name),
                    "unreachable",
                )),
            }
        };
        tokio::time::timeout(command.timeout, run).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: format!("command `{}` on node {}", command.command, self.name),
                after: command.timeout,
            })
        })
    }
}

#[async_trait]
impl NodeRemote for RecordingNodeRemote {
    fn node(&self) -> &str {
        &self.name
    }

    async fn run(&self, command: &RemoteCommand) -> Result<CommandOutput> {
        self.answer(command, None).await
    }

    async fn run_with_stdin(&self, command: &RemoteCommand, stdin: &[u8]) -> Result<CommandOutput> {
        self.answer(command, Some(stdin)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::conformance::node_remote;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let fake = RecordingNodeRemote::new("fake-1");
        node_remote::script(&fake);
        node_remote::run_all(&fake).await;
        let unreachable = RecordingNodeRemote::new("fake-2");
        unreachable.set_unreachable(true);
        node_remote::unreachable_is_unavailable(&unreachable, Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn records_in_order_and_last_rule_wins() {
        let fake = RecordingNodeRemote::new("w");
        fake.respond("kubeadm", Reply::exit(1, "", "first")).respond("kubeadm join", Reply::exit(2, "", ""));
        let t = Duration::from_secs(1);
        let a = fake.run(&RemoteCommand::new("kubeadm join x", t).with_sudo()).await.unwrap();
        let b = fake.run(&RemoteCommand::new("kubeadm reset -f", t)).await.unwrap();
        assert_eq!((a.exit_code, b.exit_code), (Some(2), Some(1)));
        assert_eq!(fake.calls(), ["sudo -n sh -c 'kubeadm join x'", "kubeadm reset -f"]);
        assert_eq!(fake.commands(), ["kubeadm join x", "kubeadm reset -f"]);
    }
}
