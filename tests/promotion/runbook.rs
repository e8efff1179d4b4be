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
use kdr_core::remote::{NodeRemote, SshNodeRemote};
use kdr_core::runbook::{Claim, ClaimOutcome, ClaimStore};
use kdr_core::testing::containers::{S3Container, SshNodeContainer};

use self::common::kubeadm::{CLUSTER_CONFIGURATION, KUBEADM_STAND_IN};

fn remote(node: &SshNodeContainer, name: &str) -> Arc<dyn NodeRemote> {
    Arc::new(SshNodeRemote::new(super::target(node, name)).unwrap())
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
/// `KDR_TEST_S3_IMAGE=<minio image> cargo test --all-features --test promotion -- --ignored`.
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

#[tokio::test]
async fn kubeadm_init_command_sequence_over_ssh_with_stand_ins() {
    let node = SshNodeContainer::start().await.unwrap();
    self::common::kubeadm::prepare_standby(&node).await;

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

// ---- the whole runbook against real etcd, S3 and sshd nodes ---------------------------------

#[path = "../common/mod.rs"]
mod common;

use kdr_core::etcd::{EtcdutlRestorer, RestoreSpec};
use kdr_core::fence::NoFence;
use kdr_core::runbook::{
    EpochRequest, FlowRestore, HookSpec, HooksSettings, Journal, KubectlCleanUp, KubectlPostChecks,
    ParallelWorkerRecovery, PostCheckSettings, PromotionMode, PromotionSettings, Runbook, RunbookParts,
    StepKind, StepStatus,
};
use kdr_core::snapshot::{Manifest, ObjectStoreSnapshotStore};
use kdr_core::testing::containers::{EtcdContainer, EtcdVersion};
use kdr_core::workers::{KubectlReadiness, WorkerRecoveryConfig, WorkerTarget};

/// kubectl on the new control plane: records like the fixture's recorders and answers the
/// post-checks and readiness questions from files the test writes (no API server can run here).
const KUBECTL_STAND_IN: &str = r#"#!/bin/sh
printf '%s\n' "kubectl $*" >> /var/log/kdr-calls.log
case "$*" in
  *"get nodes -o json"*) cat /etc/kdr-fake/nodes.json ;;
  *"get pods -A -o json"*) cat /etc/kdr-fake/pods.json ;;
  *"apply -f -"*) cat > /etc/kdr-fake/applied.json ;;
  *"jsonpath={.status.phase}"*) printf Running ;;
  *"member list -w json"*) cat /etc/kdr-fake/members.json ;;
  *"configmap cluster-info"*|*"configmap kube-proxy"*) printf '    server: https://192.168.30.202:6443\n' ;;
esac
exit 0
"#;

/// A backed-up cluster and the four nodes of a promotion: the standby `cp`, the old primary, two
/// workers. `runbook()` builds a fresh runbook over them, as a restarted `kdr failover` would.
struct E2e {
    tmp: tempfile::TempDir,
    _etcd: EtcdContainer,
    store: Arc<ObjectStoreSnapshotStore>,
    objects: Arc<dyn object_store::ObjectStore>,
    prefix: String,
    manifest: Manifest,
    cp: SshNodeContainer,
    old: SshNodeContainer,
    w1: SshNodeContainer,
    w2: SshNodeContainer,
    etcd_bin: std::path::PathBuf,
}

impl E2e {
    async fn start() -> Self {
        let etcd_bin = std::path::PathBuf::from(
            std::env::var_os("KDR_ETCD_3_5_DIR")
                .expect("KDR_ETCD_3_5_DIR: run `make test` or `. .tools/env`"),
        );
        let tmp = tempfile::tempdir().unwrap();
        // A real backup of a real etcd, with a kubeadm-like bundle, in the real S3 store.
        let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
        let mut client = etcd.client().await.unwrap();
        for k in ["/registry/pods/default/web-1", "/registry/pods/default/web-2", "/registry/nodes/worker-1"]
        {
            client.put(k, "v", None).await.unwrap();
        }
        let src = tmp.path().join("src");
        common::backup::kubeadm_like_files(&src);
        let s3 = S3Container::shared().await.unwrap();
        let prefix = unique_prefix("e2e");
        let objects = s3.object_store(s3.bucket()).unwrap();
        let store =
            Arc::new(ObjectStoreSnapshotStore::new(objects.clone(), &prefix, format!("s3://kdr/{prefix}")));
        let manifest = common::backup::back_up(
            &etcd,
            store.as_ref(),
            common::backup::BackupRequest { bundle_root: Some(src), ..Default::default() },
        )
        .await;

        let (cp, old, w1, w2) = tokio::try_join!(
            SshNodeContainer::start(),
            SshNodeContainer::start(),
            SshNodeContainer::start(),
            SshNodeContainer::start()
        )
        .unwrap();
        Self::prepare_cp(&cp, "master-2", "192.168.30.202").await;
        old.install_recorders(&["systemctl", "crictl"]).await.unwrap();
        old.install_file("/etc/kubernetes/manifests/kube-apiserver.yaml", b"old\n", 0o600).await.unwrap();
        for w in [&w1, &w2] {
            w.install_recorders(&["systemctl", "crictl"]).await.unwrap();
            w.set_recorder_output("systemctl", "active\n").await.unwrap();
            let conf = "apiVersion: v1\nclusters:\n- cluster:\n    server: https://192.168.30.200:6443\n  name: kubernetes\n";
            w.install_file("/etc/kubernetes/kubelet.conf", conf.as_bytes(), 0o600).await.unwrap();
        }
        Self { tmp, _etcd: etcd, store, objects, prefix, manifest, cp, old, w1, w2, etcd_bin }
    }

    /// The stand-ins and fake API answers on a control-plane node `name` at `address` (the
    /// standby, or the rebuilt primary in same-host mode).
    async fn prepare_cp(cp: &SshNodeContainer, name: &str, address: &str) {
        cp.install_recorders(&["systemctl", "crictl"]).await.unwrap();
        cp.install_file("/usr/local/bin/kubeadm", KUBEADM_STAND_IN.as_bytes(), 0o755).await.unwrap();
        let kubectl = KUBECTL_STAND_IN.replace("192.168.30.202", address);
        cp.install_file("/usr/local/bin/kubectl", kubectl.as_bytes(), 0o755).await.unwrap();
        let operator_config =
            CLUSTER_CONFIGURATION.replace("192.168.30.200:6443", &format!("{address}:6443"));
        cp.install_file("/etc/kdr/kubeadm-init.yaml", operator_config.as_bytes(), 0o600).await.unwrap();
        let ready = |n: &str| {
            format!(
                r#"{{"metadata":{{"name":"{n}"}},"status":{{"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
            )
        };
        let nodes = format!(r#"{{"items":[{},{},{}]}}"#, ready(name), ready("worker-1"), ready("worker-2"));
        cp.install_file("/etc/kdr-fake/nodes.json", nodes.as_bytes(), 0o644).await.unwrap();
        // The pods the backup recorded, by name, plus the new primary's own static pod.
        let pods = format!(
            r#"{{"items":[{{"metadata":{{"namespace":"default","name":"web-1"}}}},
            {{"metadata":{{"namespace":"default","name":"web-2"}}}},
            {{"metadata":{{"namespace":"kube-system","name":"etcd-{name}"}}}}]}}"#
        );
        cp.install_file("/etc/kdr-fake/pods.json", pods.as_bytes(), 0o644).await.unwrap();
        let members = format!(
            r#"{{"members":[{{"ID":10501334649042878790,"name":"{name}","peerURLs":["https://{address}:2380"]}}]}}"#
        );
        cp.install_file("/etc/kdr-fake/members.json", members.as_bytes(), 0o644).await.unwrap();
    }

    fn settings(&self) -> PromotionSettings {
        self.settings_in(self.tmp.path())
    }

    /// The settings of a standby whose state (journals, restored files) lives under `base`.
    fn settings_in(&self, base: &std::path::Path) -> PromotionSettings {
        PromotionSettings {
            node_name: "master-2".into(),
            advertise_address: "192.168.30.202".into(),
            old_primary_name: "master-1".into(),
            old_primary_address: "192.168.30.200".into(),
            state_dir: base.join("state"),
            bundle_dir: base.join("staged-bundle"),
            checks: PostCheckSettings {
                timeout: Duration::from_secs(20),
                poll_interval: Duration::from_millis(200),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn root(&self) -> std::path::PathBuf {
        self.tmp.path().join("root")
    }

    /// Restored files go under `<state_dir>/../root`.
    fn root_of(settings: &PromotionSettings) -> std::path::PathBuf {
        settings.state_dir.parent().unwrap().join("root")
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.root().join("var/lib/etcd")
    }

    fn hook_out(&self) -> std::path::PathBuf {
        self.tmp.path().join("post-hook.env")
    }

    fn claims(&self) -> ClaimStore {
        ClaimStore::new(self.objects.clone(), &self.prefix, format!("s3://kdr/{}", self.prefix))
    }

    fn journal(&self) -> Journal {
        Journal::load(&Journal::path_for(&self.settings().state_dir, 1)).unwrap()
    }

    fn ssh_fencer(&self) -> Arc<dyn Fencer> {
        Arc::new(SshFencer::new(
            remote(&self.old, "master-1"),
            "/etc/kubernetes/manifests",
            Duration::from_secs(20),
        ))
    }

    fn runbook(&self) -> Runbook {
        self.runbook_with(self.settings(), &self.cp, self.ssh_fencer())
    }

    /// A runbook with `settings` on the control-plane node `cp`, fencing with `fencer`.
    fn runbook_with(
        &self,
        settings: PromotionSettings,
        cp: &SshNodeContainer,
        fencer: Arc<dyn Fencer>,
    ) -> Runbook {
        let hooks = HooksSettings {
            pre: vec![],
            post: vec![HookSpec::exec(vec![
                "sh".into(),
                "-c".into(),
                format!("echo \"$KDR_EPOCH $KDR_ENDPOINT $KDR_SNAPSHOT\" >> {}", self.hook_out().display()),
            ])],
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let member = RestoreSpec::new(
            &settings.node_name,
            format!("https://{}:2380", settings.advertise_address),
            Self::root_of(&settings).join("var/lib/etcd"),
        );
        let restorer = EtcdutlRestorer::new()
            .with_etcdutl(self.etcd_bin.join("etcdutl"))
            .with_etcdctl(self.etcd_bin.join("etcdctl"));
        let restore = FlowRestore::new(
            self.store.clone(),
            Arc::new(restorer),
            clock.clone(),
            member,
            "test",
            settings.mode,
            Self::root_of(&settings),
            &settings.bundle_dir,
            &settings.state_dir,
            None,
        );
        let kubeadm =
            KubeadmSettings { config_file: Some("/etc/kdr/kubeadm-init.yaml".into()), ..Default::default() };
        let cp_remote = remote(cp, &settings.node_name);
        let workers = ParallelWorkerRecovery::new(
            vec![
                WorkerTarget { name: "worker-1".into(), remote: remote(&self.w1, "worker-1") },
                WorkerTarget { name: "worker-2".into(), remote: remote(&self.w2, "worker-2") },
            ],
            WorkerRecoveryConfig { poll_interval: Duration::from_millis(200), ..Default::default() },
            Arc::new(KubectlReadiness::remote(cp_remote.clone(), "kubectl", "/etc/kubernetes/admin.conf")),
            clock.clone(),
        );
        Runbook::new(RunbookParts {
            settings: settings.clone(),
            hooks,
            claims: self.claims(),
            snapshots: self.store.clone(),
            fencer,
            restore: Arc::new(restore),
            control_plane: Arc::new(
                KubeadmInit::new(kubeadm, settings.this_node(), settings.old_primary(), cp_remote.clone())
                    .same_host(settings.mode == PromotionMode::SameHost),
            ),
            workers: Arc::new(workers),
            checks: Arc::new(KubectlPostChecks::new(cp_remote.clone(), settings.checks.clone())),
            clean_up: Arc::new(KubectlCleanUp::new(cp_remote, settings.checks.clone())),
            clock,
        })
        .unwrap()
    }

    async fn count(node: &SshNodeContainer, call: &str) -> usize {
        node.recorded_calls().await.unwrap().iter().filter(|c| c.as_str() == call).count()
    }
}

const KUBEADM_INIT: &str =
    "kubeadm init --config /etc/kdr/kubeadm-init.yaml --ignore-preflight-errors=DirAvailable--var-lib-etcd";

#[tokio::test]
async fn full_promotion_on_real_etcd_s3_and_sshd_nodes_then_refuses_the_same_epoch() {
    let e = E2e::start().await;
    let runbook = e.runbook();
    let settings = e.settings();

    // Dry run: the whole plan, nothing touched anywhere.
    let plan = runbook.plan(None).await.unwrap();
    let text = plan.to_string();
    for expected in [
        e.manifest.id.as_str(),
        "on master-1 (192.168.30.200): systemctl stop kubelet",
        "kubeadm init --config /etc/kdr/kubeadm-init.yaml",
        "worker-2",
    ] {
        assert!(text.contains(expected), "plan lacks {expected:?}:\n{text}");
    }
    for n in [&e.cp, &e.old, &e.w1, &e.w2] {
        assert!(n.recorded_calls().await.unwrap().is_empty(), "the dry run ran something on a node");
    }
    assert!(!settings.state_dir.exists() && !e.data_dir().exists() && !settings.bundle_dir.exists());
    assert_eq!(e.claims().newest().await.unwrap(), None, "no claim");

    // The promotion.
    let report = runbook.run(None).await.unwrap();
    assert!(report.succeeded(), "{report}");
    assert_eq!(report.epoch, 1);
    assert_eq!(report.snapshot, e.manifest.id.as_str());
    assert!(report.checks.iter().all(|c| c.ok), "{report}");
    let pods = report.checks.iter().find(|c| c.name == "snapshot-pods").unwrap();
    assert_eq!(pods.detail, "all 2 pods named in the backup set present", "compared by name");
    assert_eq!(report.workers.len(), 2);

    // Claimed in S3; the old primary fenced; etcd and the cluster identity restored, the
    // host-specific files not; the whole bundle staged; kubeadm init run; workers rewired.
    assert_eq!(e.claims().get(1).await.unwrap().unwrap().holder, "master-2");
    let (_, moved, _) = e.old.exec("ls /etc/kubernetes/manifests.kdr-fenced-epoch-1").await.unwrap();
    assert_eq!(moved, "kube-apiserver.yaml\n");
    assert!(e.data_dir().join("member/snap/db").is_file(), "etcd data restored");
    assert!(e.root().join("etc/kubernetes/pki/ca.key").is_file(), "the CA is restored");
    assert!(
        !e.root().join("etc/kubernetes/pki/apiserver.crt").exists(),
        "leaf certs are kubeadm's to regenerate"
    );
    assert!(settings.bundle_dir.join("etc/kubernetes/kubeadm-config.yaml").is_file(), "bundle staged");
    let cp_calls = e.cp.recorded_calls().await.unwrap();
    assert_eq!(cp_calls[0], KUBEADM_INIT);
    assert!(
        cp_calls.iter().any(|c| c
            == "kubectl --kubeconfig /etc/kubernetes/admin.conf delete node master-1 --ignore-not-found")
    );
    for w in [&e.w1, &e.w2] {
        let (_, conf, _) = w.exec("grep server: /etc/kubernetes/kubelet.conf").await.unwrap();
        assert_eq!(conf.trim(), "server: https://192.168.30.202:6443");
        assert_eq!(E2e::count(w, "systemctl restart kubelet").await, 1);
    }
    assert_eq!(
        std::fs::read_to_string(e.hook_out()).unwrap(),
        format!("1 192.168.30.202:6443 {}\n", e.manifest.id)
    );
    let journal = e.journal();
    assert!(journal.is_complete());
    assert!(StepKind::ALL.iter().all(|s| journal.record(*s).unwrap().attempts == 1));

    // The same epoch again: refused, nothing run.
    let before = e.cp.recorded_calls().await.unwrap().len();
    let err = e.runbook().run(Some(1)).await.unwrap_err();
    assert!(err.to_string().contains("epoch 1 was already promoted"), "{err}");
    assert_eq!(e.cp.recorded_calls().await.unwrap().len(), before);
}

/// A crash in the middle of `kubeadm init`, then a worker that fails: each resume carries on
/// from the journal, never restoring or initialising twice, and retries only the failed worker.
#[tokio::test]
async fn crash_during_init_and_a_failed_worker_resume_without_repeating_anything_finished() {
    let e = E2e::start().await;
    // kubeadm init writes its files, then hangs while this flag exists: the runbook is "killed"
    // during the step.
    e.cp.install_file("/etc/kdr-fake/hang-init", b"", 0o644).await.unwrap();
    e.w2.set_recorder_exit("systemctl", 1).await.unwrap();

    let run = e.runbook();
    let crashed = async {
        loop {
            let (code, _, _) = e.cp.exec("test -e /etc/kdr-fake/in-init").await.unwrap();
            if code == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = run.run(None) => panic!("the run should hang in kubeadm init: {r:?}"),
        _ = crashed => {}
    }
    drop(run);
    e.cp.exec("rm -f /etc/kdr-fake/hang-init").await.unwrap();
    let j = e.journal();
    assert_eq!(j.status(StepKind::Restore), Some(StepStatus::Succeeded));
    assert_eq!(j.status(StepKind::ControlPlaneInit), Some(StepStatus::Started));

    // Resume: init is found done (not re-run); worker-2 fails, worker-1 recovers, the checks and
    // hooks still run, and the run names the failed worker.
    let report = e.runbook().run(None).await.unwrap();
    assert!(!report.succeeded());
    assert_eq!(report.failed_workers(), ["worker-2"]);
    assert!(report.to_string().contains("FAILED workers: worker-2"), "{report}");
    assert_eq!(E2e::count(&e.cp, KUBEADM_INIT).await, 1, "kubeadm init ran once");
    assert!(e.hook_out().exists(), "post-hooks ran");
    assert!(!e.journal().is_complete());

    // Fixed, the next run retries worker-2 only and completes.
    e.w2.set_recorder_exit("systemctl", 0).await.unwrap();
    let report = e.runbook().run(None).await.unwrap();
    assert!(report.succeeded(), "{report}");
    assert_eq!(E2e::count(&e.cp, KUBEADM_INIT).await, 1, "kubeadm init still ran once");
    assert_eq!(E2e::count(&e.w1, "systemctl restart kubelet").await, 1, "worker-1 not touched again");
    assert_eq!(E2e::count(&e.w2, "systemctl restart kubelet").await, 2, "worker-2 retried");
    let j = e.journal();
    assert!(j.is_complete());
    assert_eq!(j.record(StepKind::Restore).unwrap().attempts, 1, "restored once");
    assert_eq!(j.record(StepKind::Fence).unwrap().attempts, 1);
    // Restored once: nothing was moved aside beside the data dir.
    let siblings: Vec<String> = std::fs::read_dir(e.data_dir().parent().unwrap())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(siblings, ["etcd"], "{siblings:?}");
}

/// The second failover in a cluster's life (issue 15): after a first promotion took epoch 1, the
/// standby is rebuilt (a fresh node, an empty state dir, a detector starting from epoch 0). The
/// epoch it asks for is refused with what to do; `kdr failover` without --epoch promotes epoch 2.
#[tokio::test]
async fn a_rebuilt_standby_promotes_epoch_2_after_a_first_failover_took_epoch_1() {
    let e = E2e::start().await;
    let first = e.runbook().run(None).await.unwrap();
    assert!(first.succeeded(), "{first}");
    assert_eq!(first.epoch, 1);

    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = SshNodeContainer::start().await.unwrap();
    E2e::prepare_cp(&rebuilt, "master-2", "192.168.30.202").await;
    let settings = e.settings_in(rebuilt_dir.path());
    let runbook = || e.runbook_with(settings.clone(), &rebuilt, e.ssh_fencer());

    // What its fresh detector would have asked for: epoch 1, refused before any node is touched.
    let err = runbook().run(Some(1)).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    let msg = err.to_string();
    for expected in [
        "epoch 1 already claimed by master-2 on 192.168.30.202",
        "`kdr failover` without --epoch: it takes epoch 2",
        "`kdr rearm`",
    ] {
        assert!(msg.contains(expected), "lacks {expected:?}: {msg}");
    }
    assert!(rebuilt.recorded_calls().await.unwrap().is_empty(), "nothing ran on the rebuilt node");
    assert_eq!(E2e::count(&e.old, "systemctl stop kubelet").await, 1, "fenced once, by the first failover");

    // The dry run and `kdr failover` without --epoch (the detector's halted epoch 1 is not used).
    assert_eq!(runbook().plan(None).await.unwrap().epoch, 2);
    let report = runbook().run_for(EpochRequest::Detector(1)).await.unwrap();
    assert!(report.succeeded(), "{report}");
    assert_eq!(report.epoch, 2);
    assert!(report.notes.iter().any(|n| n.contains("detector epoch 1 is not used")), "{:?}", report.notes);
    let journal = Journal::load(&Journal::path_for(&settings.state_dir, 2)).unwrap();
    assert!(journal.is_complete());
    let claim = e.claims().get(2).await.unwrap().unwrap();
    assert_eq!(claim.run_id, journal.data().run_id, "epoch 2 is the rebuilt standby's");
    assert_eq!(e.claims().newest().await.unwrap().unwrap().epoch, 2);
    assert!(
        Journal::load(&Journal::path_for(&settings.state_dir, 1)).unwrap().is_abandoned(),
        "kept, given up"
    );
    assert_eq!(E2e::count(&rebuilt, KUBEADM_INIT).await, 1);
    assert_eq!(E2e::count(&e.old, "systemctl stop kubelet").await, 2, "fenced again for epoch 2");
}

/// Seeds 001/004: the primary rebuilt with its old name and IP promotes itself. The SSH fence
/// would stop this very node: refused before it runs. Without a fence (the old machine is this
/// one), the promotion completes and keeps this node's own Node and etcd member.
#[tokio::test]
async fn same_host_promotion_refuses_fencing_itself_and_keeps_its_own_node_and_member() {
    let e = E2e::start().await;
    let node = SshNodeContainer::start().await.unwrap();
    E2e::prepare_cp(&node, "master-1", "192.168.30.200").await;
    let dir = tempfile::tempdir().unwrap();
    let settings = PromotionSettings {
        node_name: "master-1".into(),
        advertise_address: "192.168.30.200".into(),
        mode: PromotionMode::SameHost,
        ..e.settings_in(dir.path())
    };

    let err =
        e.runbook_with(settings.clone(), &node, e.ssh_fencer()).run(None).await.unwrap_err().to_string();
    assert!(err.contains("stopped at step fence"), "{err}");
    assert!(
        err.contains("refusing to fence master-1 (192.168.30.200) for epoch 1: its node name \"master-1\" is this node's"),
        "{err}"
    );
    assert!(e.old.recorded_calls().await.unwrap().is_empty(), "the ssh fence never ran");
    assert!(node.recorded_calls().await.unwrap().is_empty());

    // What the same-host restore puts back on the real node (here it restores under a temp root).
    node.install_file("/etc/kubernetes/admin.conf", b"restored\n", 0o600).await.unwrap();
    let no_fence: Arc<dyn Fencer> = Arc::new(NoFence::i_accept_split_brain_risk());
    let plan = e.runbook_with(settings.clone(), &node, no_fence.clone()).plan(None).await.unwrap();
    let text = plan.to_string();
    assert!(text.contains("old-primary-node: skipped") && !text.contains("delete node"), "{text}");
    let report = e.runbook_with(settings.clone(), &node, no_fence).run(None).await.unwrap();
    assert!(report.succeeded(), "{report}");
    let by = |n: &str| report.checks.iter().find(|c| c.name == n).unwrap().clone();
    assert!(by("nodes-ready").ok, "this node waited for, not skipped: {:?}", by("nodes-ready"));
    for name in ["old-primary-node", "old-primary-etcd-member"] {
        let c = by(name);
        assert!(c.ok && c.detail.starts_with("skipped: the old primary master-1 is this node"), "{c:?}");
    }
    let calls = node.recorded_calls().await.unwrap();
    assert!(!calls.iter().any(|c| c.contains("delete node")), "{calls:?}");
    assert!(!calls.iter().any(|c| c.contains("member list") || c.contains("member remove")), "{calls:?}");
    assert!(calls.iter().any(|c| c == "systemctl restart kubelet"), "same-host init: {calls:?}");
    // The journal records the skipped clean-up, in the clean-up step.
    let journal = Journal::load(&Journal::path_for(&settings.state_dir, 1)).unwrap();
    let recorded = journal.record(StepKind::CleanUp).unwrap().result.as_ref().unwrap().to_string();
    assert!(recorded.contains("skipped: the old primary master-1 is this node"), "{recorded}");
}
