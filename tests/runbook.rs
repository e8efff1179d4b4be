//! The promotion runbook against real components: epoch claims on a real S3 server (s3s-fs), the
//! SSH fence and kubeadm's command sequence over a real sshd (SshNodeRemote), with recording
//! stand-ins for kubeadm, systemctl and crictl on the node (no kube-apiserver can run here).
//! Needs Docker and the local test images (`make test` builds them).
use std::sync::Arc;
use std::time::Duration;

use kdr_core::Error;
use kdr_core::clock::{Clock, SystemClock};
use kdr_core::control_plane::{ControlPlaneInit, InitState, KubeadmInit, KubeadmSettings, NodeIdentity};
use kdr_core::fence::{FenceTarget, Fencer, SshFencer};
use kdr_core::remote::{NodeRemote, SshConfig, SshNodeRemote};
use kdr_core::runbook::{Claim, ClaimOutcome, ClaimStore};
use kdr_core::testing::containers::{S3Container, SshNodeContainer};

fn remote(node: &SshNodeContainer, name: &str) -> Arc<dyn NodeRemote> {
    let ssh = SshConfig {
        user: node.user().to_owned(),
        port: node.port(),
        key_file: node.private_key_path(),
        known_hosts: node.known_hosts_path().to_owned(),
        connect_timeout: Duration::from_secs(5),
        ..SshConfig::default()
    };
    Arc::new(SshNodeRemote::new(ssh.target(name, node.host())).unwrap())
}

fn claim(epoch: u64, holder: &str) -> Claim {
    Claim {
        epoch,
        holder: holder.into(),
        host: format!("{holder}.lan"),
        run_id: format!("run-of-{holder}"),
        claimed_at: SystemClock.utc(),
        snapshot: None,
    }
}

fn unique_prefix(tag: &str) -> String {
    format!("runbook-{tag}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    // Distinct prefixes per test on the shared server; not security relevant.
    let t = SystemClock.utc().timestamp_nanos_opt().unwrap_or_default();
    (t as u32) ^ std::process::id()
}

#[tokio::test]
async fn s3_claim_taken_is_refused_and_resume_recognises_its_own() {
    let s3 = S3Container::shared().await.unwrap();
    let store = s3.object_store(s3.bucket()).unwrap();
    let claims = ClaimStore::new(store.clone(), &unique_prefix("taken"), "s3://kdr");
    assert_eq!(claims.newest().await.unwrap(), None);
    assert_eq!(claims.claim(&claim(7, "master-2")).await.unwrap(), ClaimOutcome::Won);
    assert_eq!(claims.claim(&claim(7, "master-2")).await.unwrap(), ClaimOutcome::AlreadyOurs);
    let err = claims.claim(&claim(7, "master-3")).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("epoch 7 already claimed by master-2 on master-2.lan"), "{err}");
    // The stored claim is what the winner wrote, and is the newest.
    let newest = claims.newest().await.unwrap().unwrap();
    assert_eq!((newest.epoch, newest.holder.as_str()), (7, "master-2"));
    claims.claim(&claim(8, "master-3")).await.unwrap();
    assert_eq!(claims.newest().await.unwrap().unwrap().epoch, 8);
}

/// Eight standbys race for each of five epochs: exactly one claim succeeds, and the stored claim
/// is the winner's.
async fn race(store: Arc<dyn object_store::ObjectStore>, prefix: &str) {
    for round in 0..5u64 {
        let standbys: Vec<String> = (0..8).map(|i| format!("standby-{i}")).collect();
        let tasks: Vec<_> = standbys
            .iter()
            .map(|h| {
                let claims = ClaimStore::new(store.clone(), prefix, "race");
                let c = claim(round, h);
                tokio::spawn(async move { claims.claim(&c).await })
            })
            .collect();
        let mut won = Vec::new();
        for (h, t) in standbys.iter().zip(tasks) {
            match t.await.unwrap() {
                Ok(ClaimOutcome::Won) => won.push(h.clone()),
                Ok(other) => panic!("{h}: unexpected {other:?}"),
                Err(Error::Refused { reason }) => assert!(reason.contains("already claimed by"), "{reason}"),
                Err(e) => panic!("{h}: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one standby wins, got {won:?}");
        let stored = ClaimStore::new(store.clone(), prefix, "race").get(round).await.unwrap().unwrap();
        assert_eq!(stored.holder, won[0], "the stored claim is the winner's");
    }
}

#[tokio::test]
async fn file_store_concurrent_claimers_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    race(store, "prod").await;
}

/// The same race on the S3 server. s3s-fs 0.14.1 (the default test image) checks `If-None-Match:
/// *` and then writes (s3.rs, put_object), so concurrent creates can all succeed there; AWS S3,
/// MinIO, GCS and Azure create atomically. Run it against such a server:
/// `KDR_TEST_S3_IMAGE=<minio image> cargo test --test runbook -- --ignored`.
#[tokio::test]
#[ignore = "needs an S3 server with atomic conditional writes (s3s-fs 0.14.1 is check-then-write)"]
async fn s3_concurrent_claimers_exactly_one_wins() {
    let s3 = S3Container::shared().await.unwrap();
    race(s3.object_store(s3.bucket()).unwrap(), &unique_prefix("race")).await;
}

#[tokio::test]
async fn s3_unreachable_store_is_unavailable_and_claims_nothing() {
    let s3 = S3Container::start().await.unwrap();
    let store = s3.object_store(s3.bucket()).unwrap();
    let claims = ClaimStore::new(store, "p", "s3://kdr");
    s3.stop().await.unwrap();
    let err = claims.claim(&claim(1, "master-2")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("failed to claim epoch 1"), "{err}");
}

#[tokio::test]
async fn ssh_fence_moves_manifests_aside_and_stops_kubelet_on_a_real_node() {
    let node = SshNodeContainer::start().await.unwrap();
    node.install_recorders(&["systemctl", "crictl"]).await.unwrap();
    for m in ["kube-apiserver.yaml", "etcd.yaml", "kube-scheduler.yaml"] {
        node.install_file(&format!("/etc/kubernetes/manifests/{m}"), b"apiVersion: v1\nkind: Pod\n", 0o600)
            .await
            .unwrap();
    }
    let fencer =
        SshFencer::new(remote(&node, "master-1"), "/etc/kubernetes/manifests", Duration::from_secs(20));
    let target = FenceTarget { name: "master-1".into(), host: node.host().into(), epoch: 4 };
    let report = fencer.fence(&target).await.unwrap();
    assert_eq!(report.method, "ssh");

    let (_, listing, _) = node
        .exec("ls /etc/kubernetes/manifests; echo --; ls /etc/kubernetes/manifests.kdr-fenced-epoch-4")
        .await
        .unwrap();
    assert_eq!(listing, "--\netcd.yaml\nkube-apiserver.yaml\nkube-scheduler.yaml\n", "moved, not deleted");
    let (_, content, _) =
        node.exec("cat /etc/kubernetes/manifests.kdr-fenced-epoch-4/etcd.yaml").await.unwrap();
    assert_eq!(content, "apiVersion: v1\nkind: Pod\n");
    let ready = "crictl pods -q --label tier=control-plane --state ready";
    assert_eq!(
        node.recorded_calls().await.unwrap(),
        ["systemctl stop kubelet", "systemctl disable kubelet", ready, ready],
        "exact command sequence on the node"
    );

    // Idempotent: fencing again succeeds and moves nothing else.
    fencer.fence(&target).await.unwrap();
    // A kubelet that cannot be stopped fails the fence.
    node.set_recorder_exit("systemctl", 5).await.unwrap();
    let err = fencer.fence(&target).await.unwrap_err();
    assert!(matches!(&err, Error::CommandFailed { exit_code: Some(5), .. }), "{err:?}");
    // A node that is gone fails it too.
    node.stop().await.unwrap();
    assert!(fencer.fence(&target).await.is_err());
}

/// A kubeadm stand-in that records like the fixture's recorders and behaves enough like kubeadm
/// for the sequence: `init` writes the files kubeadm writes; `token create --config /dev/stdin
/// --print-join-command` reads the token from its stdin config (recording it root-only for the
/// test) and prints the join command with it, as kubeadm does.
const KUBEADM_STAND_IN: &str = r#"#!/bin/sh
printf '%s\n' "kubeadm $*" >> /var/log/kdr-calls.log
case "$1" in
init)
  mkdir -p /etc/kubernetes/manifests
  for f in admin.conf manifests/kube-apiserver.yaml manifests/kube-controller-manager.yaml manifests/kube-scheduler.yaml manifests/etcd.yaml; do
    echo "written by kubeadm init" > /etc/kubernetes/$f
  done ;;
token)
  tok=$(sed -n 's/^- token: *//p; s/^  token: *//p' /dev/stdin | tr -d "'\"" | head -n1)
  umask 077; echo "$tok" > /root/seen-token
  echo "kubeadm join 192.168.30.202:6443 --token $tok --discovery-token-ca-cert-hash sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" ;;
esac
"#;

const CLUSTER_CONFIGURATION: &str = "apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.29.15
controlPlaneEndpoint: 192.168.30.200:6443
etcd:
  local:
    dataDir: /var/lib/etcd
networking:
  podSubnet: 10.244.0.0/16
";

const OLD_APISERVER: &str = "apiVersion: v1
kind: Pod
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --advertise-address=192.168.30.200
    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml
    volumeMounts:
    - {name: enc, mountPath: /etc/kubernetes/enc, readOnly: true}
  volumes:
  - {name: enc, hostPath: {path: /etc/kubernetes/enc, type: DirectoryOrCreate}}
";

#[tokio::test]
async fn kubeadm_init_command_sequence_over_ssh_with_stand_ins() {
    let node = SshNodeContainer::start().await.unwrap();
    node.install_recorders(&["systemctl", "kubectl", "crictl"]).await.unwrap();
    node.install_file("/usr/local/bin/kubeadm", KUBEADM_STAND_IN.as_bytes(), 0o755).await.unwrap();
    let bundle = "/var/lib/kdr/promotion/bundle/etc/kubernetes";
    node.install_file(&format!("{bundle}/kubeadm-config.yaml"), CLUSTER_CONFIGURATION.as_bytes(), 0o600)
        .await
        .unwrap();
    node.install_file(&format!("{bundle}/manifests/kube-apiserver.yaml"), OLD_APISERVER.as_bytes(), 0o600)
        .await
        .unwrap();

    let this = NodeIdentity { name: "master-2".into(), address: "192.168.30.202".into() };
    let old = NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() };
    let init = KubeadmInit::new(KubeadmSettings::default(), this, old, remote(&node, "master-2"));

    let plan = init.plan().await.unwrap();
    assert_eq!(plan.endpoint, "192.168.30.202:6443");
    assert!(plan.notes.iter().any(|n| n.contains("encryption-provider-config")), "{:?}", plan.notes);
    assert!(node.recorded_calls().await.unwrap().is_empty(), "planning runs nothing recorded");
    let (code, _, _) = node.exec("test -e /etc/kubernetes/kdr-kubeadm-init.yaml").await.unwrap();
    assert_ne!(code, 0, "planning writes nothing");

    assert_eq!(init.state().await.unwrap(), InitState::NotInitialized);
    let report = init.init().await.unwrap();
    assert_eq!(report.endpoint, "192.168.30.202:6443");
    assert_eq!(init.state().await.unwrap(), InitState::Initialized);
    let join = init.join_command().await.unwrap();

    assert_eq!(
        node.recorded_calls().await.unwrap(),
        [
            "kubeadm init --config /etc/kubernetes/kdr-kubeadm-init.yaml --ignore-preflight-errors=DirAvailable--var-lib-etcd",
            "kubeadm token create --config /dev/stdin --print-join-command",
        ]
    );
    // The derived configuration on the node, root-only.
    let (_, mode, _) = node.exec("stat -c %a /etc/kubernetes/kdr-kubeadm-init.yaml").await.unwrap();
    assert_eq!(mode.trim(), "600");
    let (_, rendered, _) = node.exec("cat /etc/kubernetes/kdr-kubeadm-init.yaml").await.unwrap();
    for expected in [
        "advertiseAddress: 192.168.30.202",
        "name: master-2",
        "controlPlaneEndpoint: 192.168.30.202:6443",
        "encryption-provider-config: /etc/kubernetes/enc/enc.yaml",
        "kubernetesVersion: v1.29.15",
    ] {
        assert!(rendered.contains(expected), "rendered config lacks {expected:?}:\n{rendered}");
    }
    // The admin kubeconfig was installed 0600.
    let (_, mode, _) = node.exec("stat -c %a /root/.kube/config").await.unwrap();
    assert_eq!(mode.trim(), "600");
    // The token kubeadm received on stdin is the one in the join command, and it never was on a
    // command line (the recorded argv above has none).
    let (_, seen, _) = node.exec("cat /root/seen-token").await.unwrap();
    let seen = seen.trim();
    assert_eq!(seen.len(), 23, "{seen:?}");
    assert!(join.join_configuration("kubeadm.k8s.io/v1beta3", "worker-1").contains(seen));
    assert!(!format!("{join:?}").contains(&seen[7..]), "the secret half is redacted");
    assert_eq!(join.api_server(), "192.168.30.202:6443");

    // Run again on an initialised node: refused, nothing run.
    let before = node.recorded_calls().await.unwrap().len();
    assert!(matches!(init.init().await, Err(Error::Refused { .. })));
    assert_eq!(node.recorded_calls().await.unwrap().len(), before);
}

#[tokio::test]
async fn kubeadm_init_failure_is_a_command_error_naming_the_node() {
    let node = SshNodeContainer::start().await.unwrap();
    node.install_recorders(&["kubeadm"]).await.unwrap();
    node.set_recorder_exit("kubeadm", 1).await.unwrap();
    let bundle = "/var/lib/kdr/promotion/bundle/etc/kubernetes";
    node.install_file(&format!("{bundle}/kubeadm-config.yaml"), CLUSTER_CONFIGURATION.as_bytes(), 0o600)
        .await
        .unwrap();
    let this = NodeIdentity { name: "master-2".into(), address: "192.168.30.202".into() };
    let old = NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() };
    let init = KubeadmInit::new(KubeadmSettings::default(), this, old, remote(&node, "master-2"));
    match init.init().await.unwrap_err() {
        Error::CommandFailed { host, command, exit_code, .. } => {
            assert_eq!(host, "master-2");
            assert!(command.starts_with("kubeadm init --config"), "{command}");
            assert_eq!(exit_code, Some(1));
        }
        other => panic!("{other:?}"),
    }
}
