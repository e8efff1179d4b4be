//! The witness probe from real worker nodes: Debian containers (the `SshNodeContainer` fixture)
//! with their own network namespace run the probe command with their own curl against an HTTPS
//! "primary" served from this host. Needs Docker (fails, never skips, without it).
//!
//! The transport here is `docker exec` (the fixture's `exec`), so that this suite tests the
//! witness's command and verdicts, not SSH; the SSH `NodeRemote` has its own suite.
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{HEALTHY, https_server, new_pki_for};
use kdr_core::failover::{Observation, WitnessVerdict};
use kdr_core::health::{HealthProbe, ProbeRole, ProbeSet, ProbeStatus, WitnessProbe};
use kdr_core::remote::{CommandOutput, NodeRemote, RemoteCommand};
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
