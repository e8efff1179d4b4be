//! Worker recovery for 1 vs 20 workers: real sshd containers as workers (recording stand-ins for
//! kubeadm, systemctl and crictl), rejoin mode. The new API server is simulated in process: a
//! Node is Ready once the `kubeadm join` on its worker succeeded. (In a real recovery kubectl runs
//! on the control plane, not through the workers' sshd, so the simulation costs the workers
//! nothing, as the real check does.)
//!
//! Two scenarios, each printing kdr's time for 1 worker and for 20 in parallel side by side with
//! the ratio, the same workers one at a time (the seed's loop shape, without its sleep), and what
//! seed 000's `dr_restore.sh` takes with its `sleep 240` per worker:
//! - A: stand-ins that return at once, so only kdr's overhead is timed (ssh handshakes, sudo,
//!   shells). All 20 "nodes" share this host's cores, so this one is bounded by the host's CPU;
//!   the CPU the node containers used is printed too.
//! - B: stand-ins that take node time as the real commands do (sleeping, not computing), as
//!   separate machines would.
//!
//! Goal: 20 workers take at most 2x the time of 1 (the seed takes 20x).
//!
//! Run: `cargo bench --bench workers` (needs Docker and `kdr-test/node:bookworm`).
//! `KDR_BENCH_WORKERS` changes the 20; `KDR_BENCH_ROUNDS` the rounds per figure (median, default 3).
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdr_core::clock::{Clock, SystemClock};
use kdr_core::control_plane::JoinCommand;
use kdr_core::remote::{CommandOutput, NodeRemote, RemoteCommand, SshConfig, SshNodeRemote};
use kdr_core::testing::containers::SshNodeContainer;
use kdr_core::workers::{
    NodeReadiness, NodeState, RecoveryMode, RecoveryPlan, WorkerRecoveryConfig, WorkerTarget, recover_workers,
};

/// Puts a worker back in its pre-recovery state (outside the timed part).
const RESET: &str = "rm -rf /etc/kubernetes* /var/lib/kubelet* /etc/cni* /run/kdr; \
    mkdir -p /etc/kubernetes/pki /var/lib/kubelet/pki /etc/cni/net.d && echo x > /var/lib/kubelet/pki/kubelet.crt \
    && : > /var/log/kdr-calls.log";

/// Plays the new API server: a Node is NotReady until a `kubeadm join` on its worker succeeded
/// (seen by [`Observed`], which wraps the worker's real ssh remote), Ready after.
#[derive(Debug, Default)]
struct SimulatedApiServer {
    joined: Mutex<HashSet<String>>,
}

#[async_trait::async_trait]
impl NodeReadiness for SimulatedApiServer {
    async fn node_state(&self, node: &str) -> kdr_core::Result<NodeState> {
        Ok(if self.joined.lock().unwrap().contains(node) {
            NodeState::Ready
        } else {
            NodeState::NotReady("not joined yet".into())
        })
    }
}

#[derive(Debug)]
struct Observed {
    inner: SshNodeRemote,
    api: Arc<SimulatedApiServer>,
}

#[async_trait::async_trait]
impl NodeRemote for Observed {
    fn node(&self) -> &str {
        self.inner.node()
    }
    async fn run(&self, c: &RemoteCommand) -> kdr_core::Result<CommandOutput> {
        self.inner.run(c).await
    }
    async fn run_with_stdin(&self, c: &RemoteCommand, stdin: &[u8]) -> kdr_core::Result<CommandOutput> {
        let out = self.inner.run_with_stdin(c, stdin).await?;
        if out.success() && c.command.contains("kubeadm join") {
            self.api.joined.lock().unwrap().insert(self.node().to_owned());
        }
        Ok(out)
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One timed recovery of `nodes` (fresh ssh connections, as a real run has).
async fn recover(nodes: &[SshNodeContainer], concurrency: usize) -> Duration {
    for n in nodes {
        let (code, _, err) = n.exec(RESET).await.unwrap();
        assert_eq!(code, 0, "{err}");
    }
    let api = Arc::new(SimulatedApiServer::default());
    let mut targets = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("worker-{}", i + 1);
        let ssh = SshConfig {
            user: n.user().into(),
            port: n.port(),
            key_file: n.private_key_path(),
            known_hosts: n.known_hosts_path().into(),
            ..Default::default()
        };
        let inner = SshNodeRemote::new(ssh.target(&name, n.host())).unwrap();
        targets.push(WorkerTarget { name, remote: Arc::new(Observed { inner, api: api.clone() }) });
    }
    let join = JoinCommand::parse(
        "kubeadm join 10.0.0.7:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash \
         sha256:5555555555555555555555555555555555555555555555555555555555555555",
    )
    .unwrap();
    let cfg = WorkerRecoveryConfig {
        mode: RecoveryMode::Rejoin,
        concurrency,
        poll_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let clock = SystemClock;
    let started = clock.instant();
    let report = recover_workers(&targets, &RecoveryPlan::Rejoin { join }, &cfg, api.as_ref(), &clock).await;
    let took = clock.instant().duration_since(started);
    if let Err(e) = report.check() {
        panic!("recovery failed in the benchmark:\n{report}\n{e}");
    }
    took
}

async fn median(nodes: &[SshNodeContainer], concurrency: usize, rounds: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..rounds {
        times.push(recover(nodes, concurrency).await);
    }
    times.sort();
    times[times.len() / 2]
}

/// Stand-ins that take as long as the real commands roughly do on a node (`kubeadm reset` tears
/// down containers, `kubeadm join` waits for the TLS bootstrap and the kubelet, containerd takes a
/// moment to restart). They sleep: time on the node, no CPU, as on a real separate machine.
const TIMED_STANDIN: &str = r#"#!/bin/sh
n=$(basename "$0")
printf '%s\n' "$n $*" >> /var/log/kdr-calls.log
case "$n $1 $2" in
  "kubeadm reset"*) sleep 2 ;;
  "kubeadm join"*) sleep 5 ;;
  "systemctl restart containerd") sleep 1 ;;
esac
exit 0
"#;

/// CPU time used so far by a container (cgroup v2, hybrid or v1), if readable.
fn container_cpu(id: &str) -> Option<Duration> {
    for path in [
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"),
        format!("/sys/fs/cgroup/unified/docker/{id}/cpu.stat"),
        format!("/sys/fs/cgroup/docker/{id}/cpu.stat"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let usec = text.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
            return Some(Duration::from_micros(usec));
        }
    }
    let ns = std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage")).ok()?;
    Some(Duration::from_nanos(ns.trim().parse().ok()?))
}

fn nodes_cpu(nodes: &[SshNodeContainer]) -> Option<Duration> {
    nodes.iter().map(|n| container_cpu(n.id())).sum()
}

struct Figures {
    one: Duration,
    many: Duration,
    serial: Option<Duration>,
    nodes_cpu_many: Option<Duration>,
}

async fn scenario(nodes: &[SshNodeContainer], rounds: usize, serial: bool) -> Figures {
    recover(&nodes[..1], 1).await; // warm-up (first connections, page cache), not counted
    let one = median(&nodes[..1], 1, rounds).await;
    let before = nodes_cpu(nodes);
    let many = median(nodes, nodes.len(), rounds).await;
    let nodes_cpu_many = before.zip(nodes_cpu(nodes)).map(|(b, a)| (a - b) / rounds as u32);
    let serial = if serial { Some(recover(nodes, 1).await) } else { None };
    Figures { one, many, serial, nodes_cpu_many }
}

fn print(title: &str, n: usize, f: &Figures) {
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let r = |d: Duration| format!("{:.2}x", d.as_secs_f64() / f.one.as_secs_f64());
    println!("\n{title}");
    println!("  {:<50} {:>11} {:>12}", "", "time", "vs 1 worker");
    println!("  {:<50} {:>11} {:>12}", "kdr, 1 worker", s(f.one), "1.00x");
    println!("  {:<50} {:>11} {:>12}", format!("kdr, {n} workers in parallel"), s(f.many), r(f.many));
    match f.serial {
        Some(d) => println!(
            "  {:<50} {:>11} {:>12}",
            format!("kdr, {n} workers one at a time (seed's loop)"),
            s(d),
            r(d)
        ),
        None => {
            let d = f.one * n as u32;
            println!(
                "  {:<50} {:>11} {:>12}",
                format!("{n} workers one at a time (projected: {n} x 1)"),
                s(d),
                r(d)
            )
        }
    }
    let seed_one = f.one + Duration::from_secs(240);
    let seed_many = seed_one * n as u32;
    println!(
        "  {:<50} {:>11} {:>12}",
        format!("seed 000 dr_restore.sh, {n} workers (+ sleep 240 each)"),
        s(seed_many),
        format!("{:.2}x", seed_many.as_secs_f64() / seed_one.as_secs_f64())
    );
    if let Some(cpu) = f.nodes_cpu_many {
        println!(
            "  CPU used by the {n} node containers per parallel run: {:.2} s ({:.0} ms per worker)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1000.0 / n as f64
        );
    }
    let ratio = f.many.as_secs_f64() / f.one.as_secs_f64();
    println!(
        "  goal: {n} workers <= 2x the time of 1: {} ({ratio:.2}x)",
        if ratio <= 2.0 { "met" } else { "NOT met" }
    );
}

fn main() {
    let n = env_usize("KDR_BENCH_WORKERS", 20);
    let rounds = env_usize("KDR_BENCH_ROUNDS", 3).max(1);
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        eprintln!("starting {n} sshd worker containers...");
        let mut nodes = Vec::new();
        for _ in 0..n {
            let node = SshNodeContainer::start().await.unwrap();
            node.install_recorders(&["kubeadm", "systemctl", "crictl"]).await.unwrap();
            nodes.push(node);
        }
        println!(
            "worker recovery, rejoin mode, {n} real sshd containers on this host ({cores} cores, load average {}), \
             median of {rounds}",
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        let instant = scenario(&nodes, rounds, true).await;
        print("A. instant stand-ins: kdr's own overhead (ssh, sudo, shell), every node sharing this host's CPUs", n, &instant);

        for node in &nodes {
            for name in ["kubeadm", "systemctl"] {
                node.install_file(&format!("/usr/local/bin/{name}"), TIMED_STANDIN.as_bytes(), 0o755).await.unwrap();
            }
        }
        let timed = scenario(&nodes, rounds, false).await;
        print(
            "B. stand-ins taking node time like the real commands (reset 2 s, containerd restart 1 s, join 5 s)",
            n,
            &timed,
        );
    });
}
