//! `kdr rejoin` end to end: the real binary, real sshd containers as workers (with recording
//! stand-ins for kubeadm, systemctl and crictl), and a kubectl stand-in on this host playing the
//! new API server. Needs Docker and the local `kdr-test/node:bookworm` image.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kdr_core::testing::containers::SshNodeContainer;

/// Records its call; reports a Node NotReady on its first check and Ready after that (the
/// restored Node object is stale until the worker rejoins).
const KUBECTL: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "kubectl $*" >> "$dir/calls.log"
node=$(echo "$*" | sed 's#.*node/##')
if [ -e "$dir/seen-$node" ]; then exit 0; fi
touch "$dir/seen-$node"
echo "error: timed out waiting for the condition on nodes/$node" >&2
exit 1
"#;

const JOIN_FAILS: &str = r#"#!/bin/sh
printf '%s\n' "kubeadm $*" >> /var/log/kdr-calls.log
[ "$1" = join ] && { echo "error execution phase kubelet-start: boom" >&2; exit 1; }
exit 0
"#;

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn kdr(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kdr")).args(args).env("RUST_LOG", "warn").output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), s(&out.stdout), s(&out.stderr))
}

#[tokio::test]
async fn kdr_rejoin_recovers_the_named_workers_and_exits_1_naming_a_failed_one() {
    let nodes = [SshNodeContainer::start().await.unwrap(), SshNodeContainer::start().await.unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let mut known_hosts = String::new();
    for n in &nodes {
        n.install_recorders(&["kubeadm", "systemctl", "crictl"]).await.unwrap();
        n.install_file(
            "/etc/kubernetes/kubelet.conf",
            b"clusters:\n- cluster:\n    server: https://old:6443\n",
            0o600,
        )
        .await
        .unwrap();
        known_hosts.push_str(&std::fs::read_to_string(n.known_hosts_path()).unwrap());
    }
    std::fs::write(dir.path().join("known_hosts"), known_hosts).unwrap();
    write_exec(&dir.path().join("kubectl"), KUBECTL);
    let mut config = format!(
        "[cluster]\nname = \"lab\"\n\n[ssh]\nuser = \"kube\"\nknown_hosts = \"{}\"\n\n[worker_recovery]\n\
         poll_interval = \"100ms\"\nstale_node_timeout = \"10s\"\nnode_ready_timeout = \"10s\"\nkubectl = \"{}\"\n",
        dir.path().join("known_hosts").display(),
        dir.path().join("kubectl").display()
    );
    for (i, n) in nodes.iter().enumerate() {
        config.push_str(&format!(
            "\n[[workers]]\nname = \"worker-{}\"\nhost = \"{}\"\nport = {}\nkey_file = \"{}\"\n",
            i + 1,
            n.host(),
            n.port(),
            n.private_key_path().display()
        ));
    }
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(&cfg, config).unwrap();
    let cfg = cfg.to_str().unwrap();

    // Rewire only worker-2.
    let (code, out, err) = kdr(&[
        "rejoin",
        "--config",
        cfg,
        "--mode",
        "rewire",
        "--endpoint",
        "https://10.0.0.7:6443",
        "--worker",
        "worker-2",
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("worker-2  rewire  ok"), "{out}");
    assert!(!out.contains("worker-1"), "{out}");
    assert!(nodes[0].recorded_calls().await.unwrap().is_empty(), "worker-1 was not selected");
    let (_, conf, _) = nodes[1].exec("cat /etc/kubernetes/kubelet.conf").await.unwrap();
    assert!(conf.contains("server: https://10.0.0.7:6443"), "{conf}");

    // Rejoin both; worker-1's join fails.
    nodes[0].install_file("/usr/local/bin/kubeadm", JOIN_FAILS.as_bytes(), 0o755).await.unwrap();
    std::fs::remove_file(dir.path().join("seen-worker-2")).unwrap();
    let join = dir.path().join("join");
    std::fs::write(
        &join,
        "kubeadm join 10.0.0.7:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash \
         sha256:4444444444444444444444444444444444444444444444444444444444444444\n",
    )
    .unwrap();
    let (code, out, err) =
        kdr(&["rejoin", "--config", cfg, "--mode", "rejoin", "--join-command-file", join.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("worker-1  rejoin  FAILED") && out.contains("worker-2  rejoin  ok"), "{out}");
    assert!(
        err.contains("failed on 1 of 2 workers (worker-1)") && err.contains("--worker worker-1"),
        "{err}"
    );
    assert!(!out.contains("0123456789abcdef") && !err.contains("0123456789abcdef"));
    assert!(
        nodes[1]
            .recorded_calls()
            .await
            .unwrap()
            .contains(&"kubeadm join --config /run/kdr/join-worker-2.yaml".to_owned())
    );

    // A worker that isn't configured is a usage error.
    let (code, _, err) =
        kdr(&["rejoin", "--config", cfg, "--worker", "worker-9", "--endpoint", "https://h:6443"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no worker named \"worker-9\""), "{err}");
}
