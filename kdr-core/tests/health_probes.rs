//! Health probes against real endpoints: an HTTPS server with a test CA (rcgen + rustls, in this
//! test), a closed port, a blackholed address inside a Docker network this test creates, and a
//! server that answers after the probe's timeout.
//!
//! Tests whose name ends in `_needs_docker` need a Docker engine; without one they fail with a
//! message saying so, they never skip.
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Behaviour, HEALTHY, LOOPBACK, https_server, new_pki};
use kdr_core::health::{
    ApiServerProbe, HealthProbe, IcmpProbe, ProbeRole, ProbeStatus, SelfProbe, TcpProbe, WitnessProbe,
    probe_bounded,
};
use kdr_core::remote::{CommandOutput, NodeRemote, RemoteCommand};
use tokio::net::TcpListener;

mod common;

fn api(addr: SocketAddr) -> kdr_core::health::ApiServerProbeBuilder {
    ApiServerProbe::builder(format!("https://127.0.0.1:{}/healthz", addr.port()))
        .timeout(Duration::from_millis(1500))
}

#[tokio::test]
async fn api_server_probe_verifies_the_cluster_ca() {
    let pki = new_pki();
    let addr = https_server(&pki, LOOPBACK, HEALTHY).await;
    let r = api(addr).ca_pem(pki.ca_pem.clone()).build().unwrap().probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");

    // Another CA: the server is not trusted, the probe fails and says why.
    let other = new_pki();
    let r = api(addr).ca_pem(other.ca_pem.clone()).build().unwrap().probe().await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");
    assert!(r.detail.to_lowercase().contains("certificate"), "{r:?}");

    // Only the explicit, loudly named option skips verification.
    let r = api(addr).insecure_skip_tls_verify().build().unwrap().probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
    let err = api(addr).build().unwrap_err().to_string();
    assert!(err.contains("no CA") && err.contains("insecure_skip_tls_verify"), "{err}");
    let err = ApiServerProbe::builder("http://127.0.0.1:6443/healthz")
        .ca_pem(pki.ca_pem.clone())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("not https"), "{err}");
    let err = api(addr).ca_pem("not a pem").build().unwrap_err();
    assert!(err.to_string().contains("detector.api_ca_file"), "{err}");
}

#[tokio::test]
async fn api_server_probe_defaults_to_healthz_and_reads_the_body() {
    let pki = new_pki();
    let addr = https_server(
        &pki,
        LOOPBACK,
        Behaviour { status: 500, body: "[-]etcd failed: reason withheld", ..HEALTHY },
    )
    .await;
    let probe = ApiServerProbe::builder(format!("https://localhost:{}", addr.port()))
        .ca_pem(pki.ca_pem.clone())
        .build()
        .unwrap();
    assert_eq!(probe.url().path(), "/healthz");
    let r = probe.probe().await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");
    assert!(r.detail.contains("HTTP 500") && r.detail.contains("etcd failed"), "{r:?}");
    let addr = https_server(&pki, LOOPBACK, Behaviour { body: "not ok", ..HEALTHY }).await;
    let r = api(addr).ca_pem(pki.ca_pem.clone()).build().unwrap().probe().await;
    assert_eq!(r.status, ProbeStatus::Down, "200 without \"ok\" is not healthy: {r:?}");
}

#[tokio::test]
async fn api_server_probe_presents_a_client_certificate() {
    let pki = new_pki();
    let addr = https_server(&pki, LOOPBACK, Behaviour { require_client_cert: true, ..HEALTHY }).await;
    let r = api(addr)
        .ca_pem(pki.ca_pem.clone())
        .client_identity_pem(pki.client_cert_pem.as_bytes(), pki.client_key_pem.as_bytes())
        .build()
        .unwrap()
        .probe()
        .await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
    let r = api(addr).ca_pem(pki.ca_pem.clone()).build().unwrap().probe().await;
    assert_eq!(r.status, ProbeStatus::Down, "no client certificate: {r:?}");
}

#[tokio::test]
async fn a_server_that_answers_after_the_timeout_is_down() {
    let pki = new_pki();
    let addr = https_server(&pki, LOOPBACK, Behaviour { delay: Duration::from_secs(5), ..HEALTHY }).await;
    let probe = api(addr).ca_pem(pki.ca_pem.clone()).timeout(Duration::from_millis(400)).build().unwrap();
    let clock = kdr_core::clock::SystemClock;
    let started = kdr_core::clock::Clock::instant(&clock);
    let r = probe_bounded(&ProbeRole::Api, &probe).await;
    let took = kdr_core::clock::Clock::instant(&clock) - started;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");
    assert!(r.detail.contains("no answer within 400ms"), "{r:?}");
    // Not a timing assertion on performance: it proves the probe did not wait for the answer.
    assert!(took < Duration::from_secs(5), "the probe waited for the slow answer ({took:?})");

    // The same through TCP-level slowness: a listener that accepts but never speaks TLS.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let r = ApiServerProbe::builder(format!("https://127.0.0.1:{port}/livez"))
        .ca_pem(pki.ca_pem.clone())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .probe()
        .await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");
    drop(silent);
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn closed_ports_are_down() {
    let port = closed_port().await;
    let r = TcpProbe::new(format!("127.0.0.1:{port}"), Duration::from_secs(1)).probe().await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");
    assert!(r.detail.contains("refused"), "{r:?}");
    let pki = new_pki();
    let r = ApiServerProbe::builder(format!("https://127.0.0.1:{port}/healthz"))
        .ca_pem(pki.ca_pem)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .probe()
        .await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");
    assert!(r.detail.to_lowercase().contains("refused"), "{r:?}");

    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = TcpProbe::new(open.local_addr().unwrap().to_string(), Duration::from_secs(1)).probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
}

#[tokio::test]
async fn icmp_and_self_probes_on_loopback() {
    let r = IcmpProbe::new("127.0.0.1".parse().unwrap(), Duration::from_secs(1)).probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
    let r = SelfProbe::gateway("127.0.0.1".parse().unwrap(), Duration::from_secs(1)).probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
    let r = SelfProbe::dns("localhost", Duration::from_secs(1)).probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = SelfProbe::tcp(open.local_addr().unwrap().to_string(), Duration::from_secs(1)).probe().await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");
    let r =
        SelfProbe::tcp(format!("127.0.0.1:{}", closed_port().await), Duration::from_secs(1)).probe().await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");
    assert!(r.detail.starts_with("self tcp 127.0.0.1:"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// A blackholed address: an unused IP inside an internal Docker network created for the test.

struct BlackholeNet {
    name: String,
    ip: IpAddr,
}

impl BlackholeNet {
    fn create() -> Self {
        let name = format!("kdr-test-blackhole-{}-{:x}", std::process::id(), rand::random::<u32>());
        let out =
            Command::new("docker").args(["network", "create", "--internal", &name]).output().unwrap_or_else(
                |e| panic!("this test needs Docker (docker network create): cannot run the docker CLI: {e}"),
            );
        assert!(
            out.status.success(),
            "this test needs Docker: docker network create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // From here on, Drop removes the network whatever fails.
        let mut net = BlackholeNet { name, ip: IpAddr::from([0, 0, 0, 0]) };
        let out = Command::new("docker")
            .args(["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", &net.name])
            .output()
            .unwrap();
        let subnet = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let base: std::net::Ipv4Addr =
            subnet.split('/').next().unwrap().parse().unwrap_or_else(|e| panic!("{subnet}: {e}"));
        // .200 in the network: inside the subnet, never assigned (no container joins it).
        net.ip = IpAddr::from(std::net::Ipv4Addr::from(u32::from(base) + 200));
        net
    }
}

impl Drop for BlackholeNet {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["network", "rm", &self.name]).output();
    }
}

#[tokio::test]
async fn blackholed_addresses_are_down_within_the_timeout_needs_docker() {
    let net = BlackholeNet::create();
    let timeout = Duration::from_millis(800);
    let clock = kdr_core::clock::SystemClock;
    let started = kdr_core::clock::Clock::instant(&clock);
    let results = futures::future::join_all(
        [
            (
                ProbeRole::Host,
                Box::new(TcpProbe::new(format!("{}:6443", net.ip), timeout)) as Box<dyn HealthProbe>,
            ),
            (ProbeRole::Host, Box::new(IcmpProbe::new(net.ip, timeout))),
            (ProbeRole::SelfCheck, Box::new(SelfProbe::gateway(net.ip, timeout))),
            (
                ProbeRole::Api,
                Box::new(
                    ApiServerProbe::builder(format!("https://{}:6443/healthz", net.ip))
                        .ca_pem(new_pki().ca_pem)
                        .timeout(timeout)
                        .build()
                        .unwrap(),
                ),
            ),
        ]
        .iter()
        .map(|(role, p)| async move { (p.name().to_owned(), probe_bounded(role, p.as_ref()).await) }),
    )
    .await;
    let took = kdr_core::clock::Clock::instant(&clock) - started;
    for (name, r) in &results {
        assert_eq!(r.status, ProbeStatus::Down, "{name} on {}: {r:?}", net.ip);
        assert!(r.detail.contains("within 800ms"), "{name}: a blackhole is a timeout, not a refusal: {r:?}");
    }
    // The probes ran concurrently and each stopped at its timeout (a blackhole never answers).
    assert!(took < Duration::from_secs(3), "{took:?}");
}

// ---------------------------------------------------------------------------------------------
// The witness probe's real command (the worker's curl), run by a NodeRemote that executes on
// this machine: the transport is not under test here (the SSH remote has its own suite), the
// command and its exit-code mapping are.

#[derive(Debug)]
struct LocalShell;

#[async_trait]
impl NodeRemote for LocalShell {
    fn node(&self) -> &str {
        "local"
    }
    async fn run(&self, command: &RemoteCommand) -> kdr_core::Result<CommandOutput> {
        let child = tokio::process::Command::new("sh").arg("-c").arg(&command.command).output();
        let out = tokio::time::timeout(command.timeout, child)
            .await
            .map_err(|_| kdr_core::Error::Timeout { what: command.command.clone(), after: command.timeout })?
            .map_err(|e| kdr_core::Error::io("sh", e))?;
        Ok(CommandOutput {
            exit_code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        })
    }
}

#[tokio::test]
async fn witness_probe_runs_curl_on_the_worker() {
    let pki = new_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let ca = ca.to_str().unwrap();
    let remote: Arc<dyn NodeRemote> = Arc::new(LocalShell);
    let t = Duration::from_secs(2);

    let up = https_server(&pki, LOOPBACK, HEALTHY).await;
    let r = WitnessProbe::api_healthz(
        "w1",
        remote.clone(),
        &format!("https://127.0.0.1:{}/healthz", up.port()),
        ca,
        t,
    )
    .probe()
    .await;
    assert_eq!(r.status, ProbeStatus::Up, "{r:?}");

    let closed = closed_port().await;
    let r = WitnessProbe::api_healthz(
        "w1",
        remote.clone(),
        &format!("https://127.0.0.1:{closed}/healthz"),
        ca,
        t,
    )
    .probe()
    .await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");

    let slow = https_server(&pki, LOOPBACK, Behaviour { delay: Duration::from_secs(10), ..HEALTHY }).await;
    let r = WitnessProbe::api_healthz(
        "w1",
        remote.clone(),
        &format!("https://127.0.0.1:{}/healthz", slow.port()),
        ca,
        t,
    )
    .probe()
    .await;
    assert_eq!(r.status, ProbeStatus::Down, "a primary that does not answer in time is down: {r:?}");

    let sick = https_server(&pki, LOOPBACK, Behaviour { status: 500, body: "etcd failed", ..HEALTHY }).await;
    let r = WitnessProbe::api_healthz(
        "w1",
        remote.clone(),
        &format!("https://127.0.0.1:{}/healthz", sick.port()),
        ca,
        t,
    )
    .probe()
    .await;
    assert_eq!(r.status, ProbeStatus::Down, "{r:?}");

    // A witness whose CA file is missing cannot tell: unknown, not down.
    let r = WitnessProbe::api_healthz(
        "w1",
        remote,
        &format!("https://127.0.0.1:{}/healthz", up.port()),
        "/nonexistent/ca.crt",
        t,
    )
    .probe()
    .await;
    assert_eq!(r.status, ProbeStatus::Unknown, "{r:?}");
    assert!(r.detail.contains("curl exit 77"), "{r:?}");
}
