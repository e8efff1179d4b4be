//! The witness probe from real worker nodes: Debian containers (the `SshNodeContainer` fixture)
//! with their own network namespace run the probe command with their own curl against an HTTPS
//! "primary" served from this host. Needs Docker (fails, never skips, without it).
//!
//! The first test's transport is `docker exec` (the fixture's `exec`), so that it tests the
//! witness's command and verdicts, not SSH. The others ask the witnesses over SSH
//! (`SshNodeRemote`, with its default 10 s connect timeout) and make the node unreachable under
//! a cached connection: a paused container, or an sshd session that stops answering. A witness
//! that cannot be asked is unknown within its probe's timeout, never "down" (issue 15).
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{HEALTHY, https_server, new_pki_for};
use kdr_core::clock::{Clock, SystemClock};
use kdr_core::failover::{Observation, WitnessVerdict};
use kdr_core::health::{
    HealthProbe, ProbeResult, ProbeRole, ProbeSet, ProbeStatus, WitnessProbe, probe_bounded,
};
use kdr_core::remote::{CommandOutput, NodeRemote, RemoteCommand, SshConfig, SshNodeRemote};
use kdr_core::testing::containers::SshNodeContainer;

mod common;

#[derive(Debug)]
struct ExecRemote {
    name: String,
    node: Arc<SshNodeContainer>,
}

#[async_trait]
impl NodeRemote for ExecRemote {
    fn node(&self) -> &str {
        &self.name
    }
    async fn run(&self, command: &RemoteCommand) -> kdr_core::Result<CommandOutput> {
        // The fixture's exec future is not Send (testcontainers' output stream): drive it on a
        // blocking thread so that this remote can be used as an `Arc<dyn NodeRemote>`.
        let (node, line) = (self.node.clone(), command.command_line());
        let handle = tokio::runtime::Handle::current();
        let exec = tokio::task::spawn_blocking(move || handle.block_on(node.exec(&line)));
        let (code, stdout, stderr) = tokio::time::timeout(command.timeout, exec)
            .await
            .map_err(|_| kdr_core::Error::Timeout {
                what: format!("{} on {}", command.command, self.name),
                after: command.timeout,
            })?
            .map_err(|e| kdr_core::Error::unavailable(format!("exec on {}", self.name), e))??;
        Ok(CommandOutput { exit_code: i32::try_from(code).ok().filter(|c| *c >= 0), stdout, stderr })
    }
}

/// The host's address on Docker's default bridge, which the node containers reach: the
/// network's gateway (Docker's default is the subnet's first address when none is listed).
fn bridge_gateway() -> IpAddr {
    let out = Command::new("docker")
        .args(["network", "inspect", "bridge", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}"])
        .output()
        .unwrap_or_else(|e| panic!("this test needs Docker: cannot run the docker CLI: {e}"));
    assert!(out.status.success(), "this test needs Docker: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut parts = text.split_whitespace();
    let subnet = parts.next().unwrap_or_else(|| panic!("no subnet on the bridge network: {text:?}"));
    if let Some(gw) = parts.next() {
        return gw.parse().unwrap_or_else(|e| panic!("{gw}: {e}"));
    }
    let base: std::net::Ipv4Addr =
        subnet.split('/').next().unwrap().parse().unwrap_or_else(|e| panic!("{subnet}: {e}"));
    IpAddr::from(std::net::Ipv4Addr::from(u32::from(base) + 1))
}

#[tokio::test]
async fn witnesses_on_real_nodes_report_up_down_and_unknown_needs_docker() {
    let gateway = bridge_gateway();
    let pki = new_pki_for(&[&gateway.to_string()]);
    let primary = https_server(&pki, gateway, HEALTHY).await;

    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = SshNodeContainer::start()
            .await
            .expect("a worker container (needs Docker and kdr-test/node:bookworm)");
        node.install_file("/etc/kubernetes/pki/ca.crt", pki.ca_pem.as_bytes(), 0o644).await.unwrap();
        nodes.push(Arc::new(node));
    }
    let remote = |i: usize| -> Arc<dyn NodeRemote> {
        Arc::new(ExecRemote { name: format!("worker-{i}"), node: nodes[i].clone() })
    };
    let ca = "/etc/kubernetes/pki/ca.crt";
    let t = Duration::from_secs(3);
    let healthz = format!("https://{gateway}:{}/healthz", primary.port());

    // Every worker reaches the primary.
    let r = WitnessProbe::api_healthz("w0", remote(0), &healthz, ca, t).probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");

    // A primary address nobody answers on (unassigned on the bridge): down, not unknown.
    let dead = format!("https://{}:6443/healthz", {
        let IpAddr::V4(g) = gateway else { panic!("IPv4 bridge expected") };
        std::net::Ipv4Addr::from(u32::from(g) + 200)
    });
    let r = WitnessProbe::api_healthz("w1", remote(1), &dead, ca, t).probe().await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");

    // One round over three witnesses, as the monitor runs it: w2's node is gone -> unknown.
    nodes[2].stop().await.unwrap();
    let set = ProbeSet::new(
        vec![
            (
                ProbeRole::Witness("w0".into()),
                Arc::new(WitnessProbe::api_healthz("w0", remote(0), &healthz, ca, t)) as Arc<dyn HealthProbe>,
            ),
            (
                ProbeRole::Witness("w1".into()),
                Arc::new(WitnessProbe::api_healthz("w1", remote(1), &dead, ca, t)),
            ),
            (
                ProbeRole::Witness("w2".into()),
                Arc::new(WitnessProbe::api_healthz("w2", remote(2), &healthz, ca, t)),
            ),
        ],
        Duration::from_secs(10),
    )
    .unwrap();
    let obs = set.round().await;
    let verdict = |id: &str| {
        obs.iter()
            .find_map(|o| match o {
                Observation::Witness { id: i, verdict } if i == id => Some(*verdict),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        (verdict("w0"), verdict("w1"), verdict("w2")),
        (WitnessVerdict::Up, WitnessVerdict::Down, WitnessVerdict::Unknown),
        "{obs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Witnesses asked over SSH, on nodes that become unreachable under a cached connection.

/// The witness probe's timeout, as the monitor sets it: min(3 s, interval / 2).
const T: Duration = Duration::from_secs(3);
/// Scheduling slack on top of the probe's timeout.
const SLACK: Duration = Duration::from_secs(1);

/// An SSH remote for `node` with the default `[ssh]` settings (a 10 s connect timeout, longer
/// than the witness's whole budget).
fn ssh_remote(node: &SshNodeContainer, name: &str) -> Arc<dyn NodeRemote> {
    let ssh = SshConfig {
        user: node.user().to_owned(),
        port: node.port(),
        key_file: node.private_key_path(),
        known_hosts: node.known_hosts_path().to_owned(),
        ..SshConfig::default()
    };
    assert_eq!(ssh.connect_timeout, Duration::from_secs(10));
    Arc::new(SshNodeRemote::new(ssh.target(name, node.host())).unwrap())
}

/// A primary on this host, a worker node that trusts its CA, and a witness on that worker asked
/// over SSH. The primary stays healthy throughout: no witness may ever report it down.
struct Witnessed {
    node: SshNodeContainer,
    probe: WitnessProbe,
    role: ProbeRole,
}

impl Witnessed {
    async fn start() -> Self {
        let gateway = bridge_gateway();
        let pki = new_pki_for(&[&gateway.to_string()]);
        let primary = https_server(&pki, gateway, HEALTHY).await;
        let node = SshNodeContainer::start()
            .await
            .expect("a worker container (needs Docker and kdr-test/node:bookworm)");
        let ca = "/etc/kubernetes/pki/ca.crt";
        node.install_file(ca, pki.ca_pem.as_bytes(), 0o644).await.unwrap();
        let healthz = format!("https://{gateway}:{}/healthz", primary.port());
        let probe = WitnessProbe::api_healthz("w1", ssh_remote(&node, "worker-1"), &healthz, ca, T);
        Self { node, probe, role: ProbeRole::Witness("w1".into()) }
    }

    /// One bounded probe, as the monitor's round runs it, and how long it took.
    async fn ask(&self) -> (ProbeResult, Duration) {
        let clock = SystemClock;
        let started = clock.instant();
        let r = probe_bounded(&self.role, &self.probe).await;
        (r, clock.instant() - started)
    }

    /// How many SSH logins the node's sshd accepted so far (sshd -e logs to the container's
    /// stderr).
    fn logins(&self) -> usize {
        let out = docker(&["logs", self.node.id()]);
        String::from_utf8_lossy(&out.stderr).matches("Accepted publickey for kube").count()
    }
}

fn docker(args: &[&str]) -> std::process::Output {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs Docker: cannot run docker {args:?}: {e}"));
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Pauses a container (every process frozen; its kernel still accepts TCP, so a connection
/// looks alive and carries nothing) until dropped.
struct Paused<'a>(&'a str);

impl<'a> Paused<'a> {
    fn new(id: &'a str) -> Self {
        docker(&["pause", id]);
        Self(id)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["unpause", self.0]).output();
    }
}

fn assert_unknown_in_time((r, took): &(ProbeResult, Duration), what: &str) {
    assert_eq!(r.status, ProbeStatus::Unknown, "{what}: an unreachable witness is unknown, not down: {r:?}");
    assert!(r.detail.starts_with("witness w1 (worker-1)"), "{what}: {r:?}");
    assert!(*took < T + SLACK, "{what}: took {took:?}, the probe's timeout is {T:?}");
}

#[tokio::test]
async fn a_paused_witness_node_is_unknown_within_the_timeout_and_up_when_back_needs_docker() {
    let w = Witnessed::start().await;
    let (r, _) = w.ask().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
    assert_eq!(w.logins(), 1);

    let paused = Paused::new(w.node.id());
    // First over the cached connection (now a session over a dead link), then over a new
    // connection whose TCP connect succeeds and whose SSH handshake never comes.
    assert_unknown_in_time(&w.ask().await, "cached connection to a paused node");
    assert_unknown_in_time(&w.ask().await, "new connection to a paused node");
    drop(paused);

    let (r, took) = w.ask().await;
    assert_eq!(r.status, ProbeStatus::Up, "the node is back: {r:?}");
    assert!(took < T + SLACK, "{took:?}");
    assert_eq!(w.logins(), 2, "the dead cached connection was dropped and a new one opened");
}

#[tokio::test]
async fn a_hung_ssh_session_is_unknown_once_then_replaced_needs_docker() {
    let w = Witnessed::start().await;
    let (r, _) = w.ask().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");

    // Stop the sshd processes serving the cached connection (not the listener): the session
    // hangs with its TCP connection up, as over a dead link, while new logins still work.
    let (code, _, err) = w.node.exec("pkill -STOP -f '^sshd: kube'").await.unwrap();
    assert_eq!(code, 0, "no sshd session process to stop: {err}");
    assert_unknown_in_time(&w.ask().await, "a hung cached session");
    // The hung connection was dropped: the next probe logs in afresh, while the old session
    // is still stopped, and the witness answers again.
    let (r, took) = w.ask().await;
    assert_eq!(r.status, ProbeStatus::Up, "the witness answers over a new connection: {r:?}");
    assert!(took < T + SLACK, "{took:?}");
    assert_eq!(w.logins(), 2);
    let _ = w.node.exec("pkill -CONT -f '^sshd: kube'").await;
}

#[tokio::test]
async fn an_sshd_that_accepts_tcp_and_never_answers_is_unknown_within_the_timeout() {
    // Not a container: a loopback listener that accepts and never speaks SSH.
    let silent = kdr_core::testing::net::SilentListener::start().await.unwrap();
    let port = silent.port();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let st =
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().unwrap();
    assert!(st.success());
    let ssh = SshConfig {
        port,
        key_file: key,
        host_key_policy: kdr_core::remote::HostKeyPolicy::AcceptAnyInsecure,
        ..SshConfig::default()
    };
    let remote: Arc<dyn NodeRemote> =
        Arc::new(SshNodeRemote::new(ssh.target("worker-1", "127.0.0.1")).unwrap());
    let probe = WitnessProbe::new("w1", remote, RemoteCommand::new("true", T).quietly());
    let role = ProbeRole::Witness("w1".into());
    for attempt in ["first", "second"] {
        let clock = SystemClock;
        let started = clock.instant();
        let r = probe_bounded(&role, &probe).await;
        assert_unknown_in_time(&(r, clock.instant() - started), attempt);
    }
    drop(silent);
}
