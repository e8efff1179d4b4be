//! The promotion runbook's tests (issue 6), against real sshd containers as nodes. Needs Docker
//! and the local `kdr-test/node:bookworm` image (`make test` builds it).
//!
//! No kube-apiserver, kubelet or kubeadm can run here, so the nodes carry recording stand-ins for
//! `kubeadm`, `systemctl`, `crictl` and `kubectl` (each logs its argv and exits as told). Everything
//! else is real: the ssh connection, host-key checks, sudo, the shell, `sed` rewriting
//! kubelet.conf, `mv` moving directories aside, the JoinConfiguration file written through stdin.
//!
//! This file holds the node side (SshNodeRemote and worker recovery); the runbook steps join it.

/// The runbook steps (claims, fence, kubeadm, resume after a crash) on real S3, etcd and sshd.
mod runbook;
use std::sync::Arc;
use std::time::Duration;

use kdr_core::Error;
use kdr_core::clock::SystemClock;
use kdr_core::control_plane::JoinCommand;
use kdr_core::remote::{HostKeyPolicy, NodeRemote, RemoteCommand, SshNodeRemote, SshTarget};
use kdr_core::testing::conformance::node_remote;
use kdr_core::testing::containers::SshNodeContainer;
use kdr_core::workers::{
    KubectlReadiness, NodeReadiness, NodeState, RecoveryMode, RecoveryPlan, WorkerRecoveryConfig,
    WorkerTarget, recover_workers,
};

const TOKEN: &str = "abcdef.0123456789abcdef";
const HASH: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
const ADMIN: &str = "/etc/kubernetes/admin.conf";

fn target(node: &SshNodeContainer, name: &str) -> SshTarget {
    let ssh = node.ssh_config();
    ssh.target(name, node.host())
}

fn remote(node: &SshNodeContainer, name: &str) -> Arc<SshNodeRemote> {
    Arc::new(SshNodeRemote::new(target(node, name)).unwrap())
}

fn cmd(c: &str) -> RemoteCommand {
    RemoteCommand::new(c, Duration::from_secs(20))
}

// ---- SshNodeRemote ----------------------------------------------------------------------------

#[tokio::test]
async fn ssh_node_remote_passes_the_conformance_suite() {
    let node = SshNodeContainer::start().await.unwrap();
    let r = remote(&node, "node-1");
    node_remote::run_all(r.as_ref()).await;
}

#[tokio::test]
async fn ssh_command_exit_code_and_stderr_and_sudo() {
    let node = SshNodeContainer::start().await.unwrap();
    let r = remote(&node, "node-1");
    let c = cmd("echo to-out; echo to-err >&2; exit 42");
    let out = r.run(&c).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str(), out.stderr.as_str()), (Some(42), "to-out\n", "to-err\n"));
    let e = out.check(r.node(), &c).unwrap_err().to_string();
    assert_eq!(
        e,
        "command `echo to-out; echo to-err >&2; exit 42` on node-1 failed with exit code 42: to-err"
    );
    // Without sudo we are kube; with it, root, and the command line is quoted as one argument.
    assert_eq!(r.run(&cmd("id -un")).await.unwrap().stdout, "kube\n");
    let out = r.run(&cmd("id -un && echo \"it's $((6*7))\"").with_sudo()).await.unwrap();
    assert_eq!(out.stdout, "root\nit's 42\n");
}

#[tokio::test]
async fn a_wrong_or_unknown_host_key_is_refused_by_default() {
    let node = SshNodeContainer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Another host's key recorded for this address: a man in the middle, as far as we can tell.
    let other = dir.path().join("other");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let wrong = dir.path().join("known_hosts_wrong");
    std::fs::write(&wrong, format!("[127.0.0.1]:{} {}\n", node.port(), key.join(" "))).unwrap();
    let empty = dir.path().join("known_hosts_empty");
    std::fs::write(&empty, "").unwrap();

    for kh in [&wrong, &empty] {
        let mut t = target(&node, "node-1");
        t.known_hosts = kh.clone();
        let err = SshNodeRemote::new(t).unwrap().run(&cmd("true")).await.unwrap_err();
        match &err {
            Error::Unavailable { what, .. } => {
                assert!(what.contains("host key of node node-1"), "{what}");
                assert!(what.contains(&kh.display().to_string()), "{what}");
            }
            other => panic!("expected Unavailable for an unverified host key, got {other:?}"),
        }
    }
    // Only the loudly named opt-in accepts it.
    let mut t = target(&node, "node-1");
    t.known_hosts = wrong.clone();
    t.host_key_policy = HostKeyPolicy::AcceptAnyInsecure;
    let out = SshNodeRemote::new(t).unwrap().run(&cmd("echo in")).await.unwrap();
    assert_eq!(out.stdout, "in\n");
}

#[tokio::test]
async fn a_key_that_is_not_authorized_is_an_auth_error_naming_authorized_keys() {
    let node = SshNodeContainer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("stranger");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(st.success());
    let mut t = target(&node, "node-1");
    t.key_file = stranger;
    let err = SshNodeRemote::new(t).unwrap().run(&cmd("true")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable { what, .. } if what.contains("authorized_keys") && what.contains("node-1")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_node_fails_clearly_within_the_connect_timeout() {
    // A stopped node: the port refuses connections.
    let node = SshNodeContainer::start().await.unwrap();
    let r = remote(&node, "gone-1");
    r.run(&cmd("true")).await.unwrap();
    node.stop().await.unwrap();
    node_remote::unreachable_is_unavailable(r.as_ref(), Duration::from_secs(5)).await;

    // A port that accepts TCP but never speaks SSH: the connect timeout fires.
    let silent = kdr_core::testing::net::SilentListener::start().await.unwrap();
    let port = silent.port();
    let mut t = target(&node, "silent-1");
    t.port = port;
    t.connect_timeout = Duration::from_secs(1);
    t.host_key_policy = HostKeyPolicy::AcceptAnyInsecure;
    let r = SshNodeRemote::new(t).unwrap();
    let err = r.run(&cmd("true")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { what, after } if what.contains("silent-1") && *after == Duration::from_secs(1)),
        "{err:?}"
    );
    node_remote::unreachable_is_unavailable(&r, Duration::from_secs(1)).await;
    drop(silent);
}

#[tokio::test]
async fn a_command_past_its_timeout_is_stopped_on_the_node() {
    let node = SshNodeContainer::start().await.unwrap();
    let r = remote(&node, "node-1");
    let running = {
        let r = r.clone();
        tokio::spawn(async move { r.run(&RemoteCommand::new("sleep 47", Duration::from_secs(3))).await })
    };
    // It does run on the node while we wait...
    let mut seen = false;
    for _ in 0..25 {
        let (_, ps, _) = node.exec("ps -eo args").await.unwrap();
        if ps.lines().any(|l| l.trim() == "sleep 47") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "sleep 47 never showed up on the node");
    assert!(matches!(running.await.unwrap(), Err(Error::Timeout { .. })));
    // ...and after the timeout it was signalled, not left running.
    let mut gone = false;
    for _ in 0..50 {
        let (_, ps, _) = node.exec("ps -eo args").await.unwrap();
        if !ps.lines().any(|l| l.trim() == "sleep 47") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "sleep 47 still runs on the node after the timeout");
}

// ---- worker recovery --------------------------------------------------------------------------

/// A kubectl stand-in that plays the new API server for the Node it runs on: it records its call
/// like the other stand-ins, and reports the Node Ready once its kubelet has been joined or
/// rewired (a `kubeadm join` or `systemctl restart kubelet` in the call log), NotReady before.
const KUBECTL_SIM: &str = r#"#!/bin/sh
printf '%s\n' "kubectl $*" >> /var/log/kdr-calls.log
if grep -qE '^(kubeadm join|systemctl restart kubelet)' /var/log/kdr-calls.log; then exit 0; fi
echo "error: timed out waiting for the condition on nodes/$(hostname)" >&2
exit 1
"#;

/// A kubeadm stand-in whose `join` fails (the rest is recorded and succeeds).
const KUBEADM_JOIN_FAILS: &str = r#"#!/bin/sh
printf '%s\n' "kubeadm $*" >> /var/log/kdr-calls.log
if [ "$1" = join ]; then echo "error execution phase preflight: couldn't validate the identity of the API Server" >&2; exit 1; fi
exit 0
"#;

/// Asks each worker's own kubectl stand-in (through KubectlReadiness over ssh) about its Node.
#[derive(Debug)]
struct PerNodeKubectl(Vec<(String, KubectlReadiness)>);

#[async_trait::async_trait]
impl NodeReadiness for PerNodeKubectl {
    async fn node_state(&self, node: &str) -> kdr_core::Result<NodeState> {
        let (_, k) = self.0.iter().find(|(n, _)| n == node).expect("known node");
        k.node_state(node).await
    }
}

struct Cluster {
    nodes: Vec<SshNodeContainer>,
    targets: Vec<WorkerTarget>,
    readiness: PerNodeKubectl,
}

async fn workers(n: usize) -> Cluster {
    let mut nodes = Vec::new();
    let mut targets = Vec::new();
    let mut readiness = Vec::new();
    for i in 1..=n {
        let node = SshNodeContainer::start().await.unwrap();
        node.install_recorders(&["kubeadm", "systemctl", "crictl"]).await.unwrap();
        node.install_file("/usr/local/bin/kubectl", KUBECTL_SIM.as_bytes(), 0o755).await.unwrap();
        let kubelet_conf = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0EK\n    \
                            server: https://192.168.30.200:6443\n  name: default-cluster\nkind: Config\n";
        node.install_file("/etc/kubernetes/kubelet.conf", kubelet_conf.as_bytes(), 0o600).await.unwrap();
        node.exec(
            "mkdir -p /var/lib/kubelet/pki /etc/cni/net.d && echo x > /var/lib/kubelet/pki/kubelet.crt",
        )
        .await
        .unwrap();
        let name = format!("worker-{i}");
        let r = remote(&node, &name);
        readiness.push((name.clone(), KubectlReadiness::remote(r.clone(), "kubectl", ADMIN)));
        targets.push(WorkerTarget { name, remote: r });
        nodes.push(node);
    }
    Cluster { nodes, targets, readiness: PerNodeKubectl(readiness) }
}

fn fast_config(mode: RecoveryMode) -> WorkerRecoveryConfig {
    WorkerRecoveryConfig {
        mode,
        poll_interval: Duration::from_millis(200),
        command_timeout: Duration::from_secs(30),
        runtime_ready_timeout: Duration::from_secs(5),
        stale_node_timeout: Duration::from_secs(5),
        kubelet_active_timeout: Duration::from_secs(5),
        node_ready_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn join() -> JoinCommand {
    JoinCommand::parse(&format!(
        "kubeadm join 192.168.30.202:6443 --token {TOKEN} --discovery-token-ca-cert-hash {HASH}"
    ))
    .unwrap()
}

fn kubectl_wait(node: &str) -> String {
    format!("kubectl --kubeconfig {ADMIN} wait --for=condition=Ready --timeout=0s node/{node}")
}

#[tokio::test]
async fn rewire_points_kubelet_at_the_new_endpoint_without_a_reset() {
    let c = workers(2).await;
    let plan = RecoveryPlan::Rewire { endpoint: "https://192.168.30.202:6443".into() };
    let report =
        recover_workers(&c.targets, &plan, &fast_config(RecoveryMode::Rewire), &c.readiness, &SystemClock)
            .await;
    println!("{report}");
    report.check().unwrap();
    for (i, node) in c.nodes.iter().enumerate() {
        let name = format!("worker-{}", i + 1);
        assert_eq!(
            node.recorded_calls().await.unwrap(),
            [
                "systemctl restart kubelet".to_owned(),
                "systemctl is-active kubelet".into(),
                kubectl_wait(&name)
            ]
        );
        let (_, conf, _) = node.exec("cat /etc/kubernetes/kubelet.conf").await.unwrap();
        assert!(conf.contains("    server: https://192.168.30.202:6443\n"), "{conf}");
        assert!(!conf.contains("192.168.30.200"), "{conf}");
        assert!(conf.contains("certificate-authority-data: Q0EK"), "the rest is untouched: {conf}");
        // The original is kept beside it, and nothing was reset or moved.
        let (_, backups, _) =
            node.exec("grep -l 192.168.30.200 /etc/kubernetes/kubelet.conf.kdr-*").await.unwrap();
        assert_eq!(backups.lines().count(), 1, "one backup of the original kubelet.conf");
        let (code, _, _) = node.exec("test -f /var/lib/kubelet/pki/kubelet.crt").await.unwrap();
        assert_eq!(code, 0);
    }
}

#[tokio::test]
async fn rejoin_runs_the_exact_sequence_moves_data_aside_and_keeps_the_token_off_argv() {
    let c = workers(1).await;
    let plan = RecoveryPlan::Rejoin { join: join() };
    let report =
        recover_workers(&c.targets, &plan, &fast_config(RecoveryMode::Rejoin), &c.readiness, &SystemClock)
            .await;
    println!("{report}");
    report.check().unwrap();
    let node = &c.nodes[0];
    assert_eq!(
        node.recorded_calls().await.unwrap(),
        [
            "kubeadm reset -f".to_owned(),
            "systemctl stop kubelet".into(),
            "systemctl restart containerd".into(),
            "crictl info".into(),
            kubectl_wait("worker-1"), // the restored Node object must be NotReady before a join
            "systemctl start kubelet".into(),
            "kubeadm join --config /run/kdr/join-worker-1.yaml".into(),
            "systemctl is-active kubelet".into(),
            kubectl_wait("worker-1"),
        ]
    );
    // Moved aside, never deleted: the old kubelet cert is still there under the new name.
    let (code, out, _) = node
        .exec("ls -d /etc/kubernetes* /var/lib/kubelet* /etc/cni* && cat /var/lib/kubelet.kdr-moved-*/pki/kubelet.crt")
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/etc/kubernetes.kdr-moved-") && out.contains("/etc/cni.kdr-moved-"), "{out}");
    assert!(out.ends_with("x\n"), "{out}");
    // The token file is gone; the token never was on a command line.
    let (code, _, _) = node.exec("test -e /run/kdr/join-worker-1.yaml").await.unwrap();
    assert_ne!(code, 0, "the JoinConfiguration (with the token) must be removed after the join");
    assert!(!node.recorded_calls().await.unwrap().iter().any(|l| l.contains("0123456789abcdef")));
}

#[tokio::test]
async fn one_worker_unreachable_and_one_join_failing_do_not_stop_the_others() {
    let c = workers(4).await;
    c.nodes[1].stop().await.unwrap(); // worker-2 is down
    c.nodes[2].install_file("/usr/local/bin/kubeadm", KUBEADM_JOIN_FAILS.as_bytes(), 0o755).await.unwrap();
    let plan = RecoveryPlan::Rejoin { join: join() };
    let report =
        recover_workers(&c.targets, &plan, &fast_config(RecoveryMode::Rejoin), &c.readiness, &SystemClock)
            .await;
    println!("{report}");
    assert_eq!(report.failed(), ["worker-2", "worker-3"]);
    assert!(report.results[0].ok() && report.results[3].ok());
    let (step, e) = report.results[1].error.as_ref().unwrap();
    assert_eq!(step, "kubeadm reset");
    assert!(matches!(e, Error::Unavailable { .. }) && e.to_string().contains("worker-2"), "{e}");
    let (step, e) = report.results[2].error.as_ref().unwrap();
    assert_eq!(step, "kubeadm join");
    assert!(e.to_string().contains("couldn't validate the identity"), "{e}");
    // The failed join still removed its token file and went no further.
    let (code, _, _) = c.nodes[2].exec("test -e /run/kdr/join-worker-3.yaml").await.unwrap();
    assert_ne!(code, 0);
    let calls = c.nodes[2].recorded_calls().await.unwrap();
    assert_eq!(calls.last().unwrap(), "kubeadm join --config /run/kdr/join-worker-3.yaml");
    // The healthy ones went all the way.
    for i in [0, 3] {
        let calls = c.nodes[i].recorded_calls().await.unwrap();
        assert_eq!(calls.last().unwrap(), &kubectl_wait(&format!("worker-{}", i + 1)));
    }
    let err = report.check().unwrap_err().to_string();
    assert!(err.contains("failed on 2 of 4 workers (worker-2, worker-3)"), "{err}");
    let table = report.to_string();
    assert!(table.contains("worker-1  rejoin  ok"), "{table}");
    assert!(table.contains("worker-3  rejoin  FAILED"), "{table}");
}

#[tokio::test]
async fn a_worker_whose_node_never_becomes_ready_times_out_on_that_condition() {
    let c = workers(1).await;
    // The API server never reports the Node Ready.
    c.nodes[0].install_recorders(&["kubectl"]).await.unwrap();
    c.nodes[0].set_recorder_exit("kubectl", 1).await.unwrap();
    let plan = RecoveryPlan::Rewire { endpoint: "https://192.168.30.202:6443".into() };
    let cfg = WorkerRecoveryConfig {
        node_ready_timeout: Duration::from_secs(2),
        ..fast_config(RecoveryMode::Rewire)
    };
    let report = recover_workers(&c.targets, &plan, &cfg, &c.readiness, &SystemClock).await;
    let (step, e) = report.results[0].error.as_ref().unwrap();
    assert_eq!(step, "Node Ready");
    assert!(matches!(e, Error::Timeout { after, .. } if *after == Duration::from_secs(2)), "{e}");
    let polls =
        c.nodes[0].recorded_calls().await.unwrap().iter().filter(|l| l.starts_with("kubectl")).count();
    assert!(polls >= 3, "polled every 200 ms for 2 s, saw {polls}");
}

#[tokio::test]
async fn a_failure_inside_a_step_script_names_the_step_that_failed() {
    let c = workers(2).await;
    // worker-1 was never joined (no kubelet.conf): rewire says so and suggests rejoin.
    c.nodes[0].exec("rm /etc/kubernetes/kubelet.conf").await.unwrap();
    // worker-2's backup cannot be written (a `cp` that fails, shadowing the real one): the step
    // after the read fails, and nothing after it runs.
    let stamp_dir = "/etc/kubernetes/kubelet.conf.kdr-";
    let plan = RecoveryPlan::Rewire { endpoint: "https://192.168.30.202:6443".into() };
    c.nodes[1]
        .install_file(
            "/usr/local/bin/cp",
            b"#!/bin/sh\necho 'cp: cannot create regular file: Read-only file system' >&2\nexit 1\n",
            0o755,
        )
        .await
        .unwrap();
    let report =
        recover_workers(&c.targets, &plan, &fast_config(RecoveryMode::Rewire), &c.readiness, &SystemClock)
            .await;
    println!("{report}");
    let (step, e) = report.results[0].error.as_ref().unwrap();
    assert_eq!(step, "read kubelet kubeconfig");
    assert!(matches!(e, Error::NotFound { .. }) && e.to_string().contains("use mode rejoin"), "{e}");
    let (step, e) = report.results[1].error.as_ref().unwrap();
    assert_eq!(step, "back up kubelet kubeconfig");
    assert!(e.to_string().contains(&format!("cp -p /etc/kubernetes/kubelet.conf {stamp_dir}")), "{e}");
    assert!(e.to_string().contains("Read-only file system"), "{e}");
    // Neither got as far as restarting kubelet.
    for n in &c.nodes {
        assert!(n.recorded_calls().await.unwrap().is_empty());
    }
}
