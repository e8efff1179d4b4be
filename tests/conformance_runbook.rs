//! The runbook's traits run their conformance suites against real components
//! (`kdr_core::testing::conformance::{fencer, control_plane}`):
//! - `ExecFencer` with real hook scripts: one recording the target from its environment
//!   (`KDR_FENCE_NODE`, `KDR_FENCE_HOST`, `KDR_EPOCH`), one failing, one hanging past its timeout;
//! - `SshFencer` over SSH on a real sshd node with static pod manifests, sudo and recording
//!   `systemctl`/`crictl` (a kubelet that cannot be stopped, pods that never stop, a node gone);
//! - `NoFence`;
//! - `KubeadmInit` over SSH on a real sshd node carrying `tests/promotion`'s kubeadm stand-in
//!   (it writes what `kubeadm init` writes and prints a join command with the token it got on
//!   stdin), its same-host mode (plan and join), then a partly initialised node, a failing
//!   `kubeadm`, and a `kubeadm token create` that fails or prints no join command.
//!
//! The sshd tests need Docker and the local `kdr-test/node:bookworm` image (`make test` builds
//! it).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kdr_core::Error;
use kdr_core::control_plane::{ControlPlaneInit, InitState, KubeadmInit, KubeadmSettings, NodeIdentity};
use kdr_core::fence::{ExecFencer, FenceTarget, NoFence, SshFencer};
use kdr_core::remote::{CommandOutput, NodeRemote, RemoteCommand, SshNodeRemote};
use kdr_core::testing::conformance::control_plane::{self, InitWorld};
use kdr_core::testing::conformance::fencer::{self, FenceWorld};
use kdr_core::testing::conformance::{NodeView, control_plane::token_shaped};
use kdr_core::testing::containers::SshNodeContainer;

mod common;

/// This host as the runbook's configuration names it (an address that is not this machine's).
fn this_node() -> NodeIdentity {
    NodeIdentity { name: "master-2".into(), address: "192.168.30.202".into() }
}

fn old_primary(epoch: u64) -> FenceTarget {
    FenceTarget { name: "master-1".into(), host: "192.168.30.200".into(), epoch }
}

// ---- ExecFencer --------------------------------------------------------------------------------

/// A hook that records the target it was given, from its environment, beside itself.
const RECORDING_HOOK: &str = r#"#!/bin/sh
printf '%s %s %s\n' "$KDR_FENCE_NODE" "$KDR_FENCE_HOST" "$KDR_EPOCH" >> "$(dirname "$0")/fenced"
echo "powered off $KDR_FENCE_NODE"
"#;

const FAILING_HOOK: &str = "#!/bin/sh\necho 'ipmi: BMC unreachable' >&2\nexit 3\n";

/// A hook that would record the target only after its timeout.
const HANGING_HOOK: &str = r#"#!/bin/sh
sleep 3
printf '%s late\n' "$KDR_FENCE_NODE" >> "$(dirname "$0")/fenced"
"#;

/// A directory holding a hook script and what it records.
struct HookWorld {
    dir: tempfile::TempDir,
    target: FenceTarget,
}

impl HookWorld {
    fn new(script: &str, timeout: Duration) -> (Self, ExecFencer) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("fence-hook");
        std::fs::write(&hook, script).unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fencer = ExecFencer::new(vec![hook.display().to_string()], timeout).unwrap();
        (Self { dir, target: old_primary(5) }, fencer)
    }

    fn record(&self) -> PathBuf {
        self.dir.path().join("fenced")
    }
}

fn files_in(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

#[async_trait(?Send)]
impl FenceWorld for HookWorld {
    fn target(&self) -> FenceTarget {
        self.target.clone()
    }

    async fn view(&self) -> NodeView {
        let calls = std::fs::read_to_string(self.record()).unwrap_or_default();
        NodeView { files: files_in(self.dir.path()), calls: calls.lines().map(str::to_owned).collect() }
    }

    async fn fenced(&self) -> bool {
        let t = &self.target;
        let line = format!("{} {} {}", t.name, t.host, t.epoch);
        std::fs::read_to_string(self.record()).is_ok_and(|r| r.lines().any(|l| l == line))
    }
}

#[tokio::test]
async fn exec_fencer_passes_the_conformance_suite_with_real_hooks() {
    let (world, hook) = HookWorld::new(RECORDING_HOOK, Duration::from_secs(20));
    fencer::run_all(&hook, &world, &this_node()).await;
    assert_eq!(
        std::fs::read_to_string(world.record()).unwrap(),
        "master-1 192.168.30.200 5\n".repeat(2),
        "the hook got the target in its environment, once per fence"
    );

    let (world, hook) = HookWorld::new(FAILING_HOOK, Duration::from_secs(20));
    match fencer::a_failing_fence_is_an_error(&hook, &world).await {
        Error::CommandFailed { exit_code, stderr, .. } => {
            assert_eq!((exit_code, stderr.as_str()), (Some(3), "ipmi: BMC unreachable"));
        }
        other => panic!("a hook exiting 3 is CommandFailed, got {other:?}"),
    }

    let (world, hook) = HookWorld::new(HANGING_HOOK, Duration::from_secs(1));
    fencer::a_hanging_fence_times_out_and_stops(
        &hook,
        &world,
        Duration::from_secs(2),
        Duration::from_secs(4),
    )
    .await;
    assert!(!world.record().exists(), "the hook was killed at its timeout, before it wrote anything");
}

// ---- NoFence -----------------------------------------------------------------------------------

/// A target nothing can be seen of: nothing changes on it, and it is never fenced.
struct Untouched(FenceTarget);

#[async_trait(?Send)]
impl FenceWorld for Untouched {
    fn target(&self) -> FenceTarget {
        self.0.clone()
    }

    async fn view(&self) -> NodeView {
        NodeView::default()
    }

    async fn fenced(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn no_fence_passes_the_conformance_suite() {
    fencer::run_all(&NoFence::i_accept_split_brain_risk(), &Untouched(old_primary(1)), &this_node()).await;
}

// ---- sshd nodes --------------------------------------------------------------------------------

fn remote(node: &SshNodeContainer, name: &str) -> Arc<SshNodeRemote> {
    let ssh = node.ssh_config();
    Arc::new(SshNodeRemote::new(ssh.target(name, node.host())).unwrap())
}

/// The files under `dirs` on `node` (their sha256), and the recording stand-ins' calls.
async fn node_view(node: &SshNodeContainer, dirs: &str) -> NodeView {
    let (code, out, err) =
        node.exec(&format!("find {dirs} -type f 2>/dev/null | sort | xargs -r sha256sum")).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let files = out
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(digest, path)| (path.to_owned(), digest.to_owned()))
        .collect();
    NodeView { files, calls: node.recorded_calls().await.unwrap() }
}

// ---- SshFencer ---------------------------------------------------------------------------------

const MANIFESTS: &str = "/etc/kubernetes/manifests";

/// The old primary: static pod manifests, recording systemctl and crictl.
struct SshWorld<'a> {
    node: &'a SshNodeContainer,
    target: FenceTarget,
}

#[async_trait(?Send)]
impl FenceWorld for SshWorld<'_> {
    fn target(&self) -> FenceTarget {
        self.target.clone()
    }

    async fn view(&self) -> NodeView {
        node_view(self.node, "/etc/kubernetes /etc/kubernetes.*").await
    }

    /// No manifest left for kubelet, and kubelet stopped.
    async fn fenced(&self) -> bool {
        let (_, left, _) = self.node.exec(&format!("ls -A {MANIFESTS}")).await.unwrap();
        let calls = self.node.recorded_calls().await.unwrap();
        left.trim().is_empty() && calls.iter().any(|c| c == "systemctl stop kubelet")
    }
}

#[tokio::test]
async fn ssh_fencer_passes_the_conformance_suite_on_a_real_node() {
    let node = SshNodeContainer::start().await.unwrap();
    node.install_recorders(&["systemctl", "crictl"]).await.unwrap();
    for (m, body) in [
        ("kube-apiserver.yaml", "kind: Pod # apiserver\n"),
        ("etcd.yaml", "kind: Pod # etcd\n"),
        ("kube-scheduler.yaml", "kind: Pod # scheduler\n"),
        (".hidden-manifest.yaml", "kind: Pod # hidden\n"),
    ] {
        node.install_file(&format!("{MANIFESTS}/{m}"), body.as_bytes(), 0o600).await.unwrap();
    }
    node.install_file("/etc/kubernetes/admin.conf", b"kind: Config\n", 0o600).await.unwrap();
    let world = SshWorld { node: &node, target: old_primary(4) };
    let ssh = || {
        SshFencer::new(remote(&node, "master-1"), MANIFESTS, Duration::from_secs(20))
            .with_poll_interval(Duration::from_millis(200))
    };
    fencer::run_all(&ssh(), &world, &this_node()).await;
    let (_, aside, _) = node.exec(&format!("ls -A {MANIFESTS}.kdr-fenced-epoch-4")).await.unwrap();
    assert_eq!(aside, ".hidden-manifest.yaml\netcd.yaml\nkube-apiserver.yaml\nkube-scheduler.yaml\n");

    // A kubelet that cannot be stopped.
    node.set_recorder_exit("systemctl", 5).await.unwrap();
    match fencer::a_failing_fence_is_an_error(&ssh(), &world).await {
        Error::CommandFailed { host, command, exit_code, .. } => {
            assert_eq!(
                (host.as_str(), command.as_str(), exit_code),
                ("master-1", "systemctl stop kubelet", Some(5))
            );
        }
        other => panic!("a failing systemctl is CommandFailed, got {other:?}"),
    }
    node.set_recorder_exit("systemctl", 0).await.unwrap();

    // Control-plane pods that never stop: the poll gives up at the stop timeout, and stops polling.
    node.set_recorder_output("crictl", "abc123\n").await.unwrap();
    let stuck = SshFencer::new(remote(&node, "master-1"), MANIFESTS, Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(200));
    fencer::a_hanging_fence_times_out_and_stops(
        &stuck,
        &world,
        Duration::from_secs(12),
        Duration::from_secs(2),
    )
    .await;

    // The node gone.
    node.stop().await.unwrap();
    fencer::an_unreachable_target_is_unavailable(&ssh(), &old_primary(4)).await;
}

// ---- KubeadmInit -------------------------------------------------------------------------------

/// A [`NodeRemote`] that keeps every command line it passes on (what the node was asked to run).
#[derive(Debug)]
struct Tapped {
    inner: Arc<dyn NodeRemote>,
    lines: Mutex<Vec<String>>,
}

impl Tapped {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

#[async_trait]
impl NodeRemote for Tapped {
    fn node(&self) -> &str {
        self.inner.node()
    }

    async fn run(&self, command: &RemoteCommand) -> kdr_core::Result<CommandOutput> {
        self.lines.lock().unwrap().push(command.command_line());
        self.inner.run(command).await
    }

    async fn run_with_stdin(&self, command: &RemoteCommand, stdin: &[u8]) -> kdr_core::Result<CommandOutput> {
        self.lines.lock().unwrap().push(command.command_line());
        self.inner.run_with_stdin(command, stdin).await
    }
}

/// The node being promoted: the staged bundle, restored etcd data, the kubeadm stand-in.
struct CpWorld<'a> {
    node: &'a SshNodeContainer,
    tap: Arc<Tapped>,
}

#[async_trait(?Send)]
impl InitWorld for CpWorld<'_> {
    fn node(&self) -> String {
        self.tap.node().to_owned()
    }

    async fn view(&self) -> NodeView {
        node_view(self.node, "/etc/kubernetes /var/lib/etcd /var/lib/kdr /root/.kube").await
    }

    async fn command_lines(&self) -> Vec<String> {
        let mut lines = self.tap.lines();
        lines.extend(self.node.recorded_calls().await.unwrap());
        lines
    }
}

#[tokio::test]
async fn kubeadm_init_passes_the_conformance_suite_over_ssh_with_the_stand_in() {
    let node = SshNodeContainer::start().await.unwrap();
    common::kubeadm::prepare_standby(&node).await;
    node.install_file("/var/lib/etcd/member/snap/db", b"the restored etcd data", 0o600).await.unwrap();

    let tap = Arc::new(Tapped { inner: remote(&node, "master-2"), lines: Mutex::default() });
    let world = CpWorld { node: &node, tap: tap.clone() };
    let old = NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() };
    let init = KubeadmInit::new(KubeadmSettings::default(), this_node(), old, tap.clone());
    control_plane::run_all(&init, &world).await;
    let calls = node.recorded_calls().await.unwrap();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("kubeadm init")).count(),
        1,
        "kubeadm init ran once: {calls:?}"
    );

    // Same-host mode (seeds 001/004: kubelet restarted on the restored manifests, no kubeadm
    // init, so no refusal to check): its plan changes nothing and its join keeps the token secret.
    let same = NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() };
    let same_host =
        KubeadmInit::new(KubeadmSettings::default(), same.clone(), same, tap.clone()).same_host(true);
    control_plane::plan_changes_nothing(&same_host, &world).await;
    control_plane::join_command_keeps_the_token_secret(&same_host, &world).await;

    // Partly initialised (an interrupted init, leftovers): refused, nothing run.
    node.exec("mkdir -p /root/aside && mv /etc/kubernetes/manifests/etcd.yaml /root/aside/").await.unwrap();
    control_plane::init_refuses_over_existing_files(&init, &world).await;

    // A fresh node again, with a kubeadm that fails: init and the join are CommandFailed naming
    // master-2, and no token shows.
    node.exec("mv /etc/kubernetes/admin.conf /etc/kubernetes/manifests/* /root/aside/").await.unwrap();
    assert_eq!(init.state().await.unwrap(), InitState::NotInitialized);
    node.install_recorders(&["kubeadm"]).await.unwrap();
    node.set_recorder_exit("kubeadm", 1).await.unwrap();
    control_plane::a_failing_command_is_command_failed(&init, &world).await;
    let err = control_plane::a_failed_join_shows_no_token(&init).await;
    assert!(matches!(&err, Error::CommandFailed { host, .. } if host == "master-2"), "{err:?}");

    // A `kubeadm token create` that prints no join command: an error without the token.
    node.set_recorder_exit("kubeadm", 0).await.unwrap();
    node.set_recorder_output("kubeadm", "bootstrap token created\n").await.unwrap();
    let err = control_plane::a_failed_join_shows_no_token(&init).await;
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
    // No command line kdr sent, and no call recorded on the node, holds a token.
    let lines = world.command_lines().await;
    assert!(lines.iter().all(|l| token_shaped(l).is_empty()), "{lines:?}");
}
