//! The [`NodeRemote`] conformance suite.
//!
//! [`run_all`] checks the trait's guarantees against a node that behaves like a POSIX host with
//! passwordless `sudo`: exit codes and both streams come back separately, large outputs on both
//! streams don't deadlock, standard input arrives, a command past its timeout is
//! [`Error::Timeout`] (and the node stays usable), a command killed by a signal has no exit code,
//! and `sudo` runs as root. [`unreachable_is_unavailable`] checks the failure a node that can't be
//! reached gives.
//!
//! `SshNodeRemote` runs it against a real sshd container. The recording fake runs it after
//! [`script`] programs it with what such a host answers to the suite's commands.
use std::time::Duration;

use crate::error::Error;
use crate::remote::{NodeRemote, RemoteCommand};
use crate::testing::remote::{RecordingNodeRemote, Reply};

const STREAMS: &str = "printf 'out\\n'; printf 'err\\n' >&2; exit 3";
const CAT: &str = "cat";
const BIG: usize = 1 << 20;
const LARGE: &str = "head -c 1048576 /dev/zero | tr '\\000' e >&2; head -c 1048576 /dev/zero | tr '\\000' o";
const SLEEP: &str = "sleep 30";
const KILLED: &str = "kill -KILL $$";
const WHOAMI: &str = "id -u";
const STDIN: &[u8] = b"line one\nline 'two' with $HOME and \\\n";

fn cmd(c: &str) -> RemoteCommand {
    RemoteCommand::new(c, Duration::from_secs(20))
}

/// Scripts `fake` with what a POSIX host with passwordless sudo answers to the suite's commands.
pub fn script(fake: &RecordingNodeRemote) {
    fake.respond(STREAMS, Reply::exit(3, "out\n", "err\n"))
        .respond(CAT, Reply::EchoStdin)
        .respond(LARGE, Reply::exit(0, &"o".repeat(BIG), &"e".repeat(BIG)))
        .respond(SLEEP, Reply::Hang)
        .respond(KILLED, Reply::killed())
        .respond(WHOAMI, Reply::exit(0, "0\n", ""));
}

/// Runs every check of the suite; panics with a message naming the broken guarantee.
pub async fn run_all(remote: &dyn NodeRemote) {
    assert!(!remote.node().is_empty(), "node() must name the node");
    exit_code_and_streams(remote).await;
    standard_input(remote).await;
    large_output_on_both_streams(remote).await;
    timeout_then_still_usable(remote).await;
    killed_by_signal(remote).await;
    sudo_runs_as_root(remote).await;
}

/// Exit code, stdout and stderr come back separately; `check` names the node and the code.
pub async fn exit_code_and_streams(remote: &dyn NodeRemote) {
    let c = cmd(STREAMS);
    let out = remote.run(&c).await.expect("a command that ran and exited 3 is Ok");
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    match out.check(remote.node(), &c) {
        Err(Error::CommandFailed { host, exit_code, stderr, .. }) => {
            assert_eq!(host, remote.node());
            assert_eq!(exit_code, Some(3));
            assert_eq!(stderr, "err");
        }
        other => panic!("check of exit 3 must be CommandFailed, got {other:?}"),
    }
}

/// Bytes given to `run_with_stdin` arrive on the command's standard input, followed by EOF.
pub async fn standard_input(remote: &dyn NodeRemote) {
    let out = remote.run_with_stdin(&cmd(CAT), STDIN).await.expect("cat with stdin");
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout.as_bytes(), STDIN);
    // Without stdin, a command reading it sees EOF at once instead of hanging.
    let out = remote.run(&RemoteCommand::new(CAT, Duration::from_secs(10))).await.expect("cat without stdin");
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), ""));
}

/// A MiB on each stream at once comes back whole (streams are drained concurrently).
pub async fn large_output_on_both_streams(remote: &dyn NodeRemote) {
    let out = remote.run(&cmd(LARGE)).await.expect("large output");
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout.len(), BIG);
    assert_eq!(out.stderr.len(), BIG);
    assert!(out.stdout.bytes().all(|b| b == b'o') && out.stderr.bytes().all(|b| b == b'e'));
}

/// A command past its timeout is `Error::Timeout` naming the command; the node stays usable.
pub async fn timeout_then_still_usable(remote: &dyn NodeRemote) {
    let c = RemoteCommand::new(SLEEP, Duration::from_millis(500));
    match remote.run(&c).await {
        Err(Error::Timeout { what, after }) => {
            assert!(what.contains(SLEEP) && what.contains(remote.node()), "{what}");
            assert_eq!(after, Duration::from_millis(500));
        }
        other => panic!("a command past its timeout must be Error::Timeout, got {other:?}"),
    }
    let out = remote.run(&cmd(WHOAMI)).await.expect("the node is usable after a timeout");
    assert_eq!(out.exit_code, Some(0));
}

/// A command killed by a signal returns `Ok` with no exit code.
pub async fn killed_by_signal(remote: &dyn NodeRemote) {
    let out = remote.run(&cmd(KILLED)).await.expect("a killed command is Ok");
    assert_eq!(out.exit_code, None, "killed by a signal: no exit code");
    assert!(!out.success());
}

/// `with_sudo` runs the command as root (through `sudo -n`).
pub async fn sudo_runs_as_root(remote: &dyn NodeRemote) {
    let out = remote.run(&cmd(WHOAMI).with_sudo()).await.expect("sudo id -u");
    assert_eq!((out.exit_code, out.stdout.trim()), (Some(0), "0"));
}

/// A node that can't be reached is `Error::Unavailable` (or `Error::Timeout` for a connect that
/// hangs) naming the node, and fails within `within` plus a little.
#[allow(clippy::disallowed_methods)] // measuring how long a failure takes needs the real clock
pub async fn unreachable_is_unavailable(remote: &dyn NodeRemote, within: Duration) {
    let started = std::time::Instant::now();
    let err = remote.run(&cmd("true")).await.expect_err("an unreachable node must fail");
    let took = started.elapsed();
    match &err {
        Error::Unavailable { what, .. } | Error::Timeout { what, .. } => {
            assert!(what.contains(remote.node()), "the error must name the node: {what}")
        }
        other => panic!("an unreachable node must be Unavailable or Timeout, got {other:?}"),
    }
    assert!(took < within + Duration::from_secs(2), "took {took:?}, connect timeout {within:?}");
}
