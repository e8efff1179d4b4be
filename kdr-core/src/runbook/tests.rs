//! Unit tests of the runbook with in-memory fakes sharing one "world": crash after each step then
//! resume, refusals, failures that stop it, the dry run.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use object_store::memory::InMemory;
use tokio::sync::Notify;

use super::*;
use crate::clock::ManualClock;
use crate::control_plane::{InitPlan, InitReport};
use crate::fence::FenceReport;
use crate::snapshot::{
    ByteStream, Compression, Encryption, IncompleteSet, PodNames, SnapshotSource, StoredObject,
};
use crate::testing::conformance::NodeView;
use crate::testing::conformance::control_plane::{self, InitWorld};
use crate::testing::conformance::fencer::{self, FenceWorld};

/// What the fakes did, and where the next crash happens.
#[derive(Debug, Default)]
struct WorldState {
    events: Vec<String>,
    restored: Option<String>,
    initialized: bool,
    recovered: BTreeSet<String>,
    /// The fake that reaches this event hangs right after it (a crash point).
    crash_after: Option<String>,
    fence_fails: bool,
    failing_worker: Option<String>,
    checks_fail: bool,
    /// What the post-checks were told, each time they ran.
    check_contexts: Vec<CheckContext>,
}

#[derive(Debug, Clone, Default)]
struct World {
    st: Arc<Mutex<WorldState>>,
    crashed: Arc<Notify>,
}

impl World {
    fn st(&self) -> std::sync::MutexGuard<'_, WorldState> {
        self.st.lock().unwrap()
    }

    /// Records `event`; if it is the crash point, signals the crash and never returns.
    async fn event(&self, event: String) {
        let crash = {
            let mut st = self.st();
            st.events.push(event.clone());
            st.crash_after.as_deref() == Some(event.as_str())
        };
        if crash {
            // Let the runbook record whatever it was told before the "process dies".
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
    }

    fn count(&self, prefix: &str) -> usize {
        self.st().events.iter().filter(|e| e.starts_with(prefix)).count()
    }
}

#[derive(Debug)]
struct FakeRestore(World);

#[async_trait]
impl RestoreStep for FakeRestore {
    async fn plan(&self, snapshot: &Manifest) -> Result<Vec<String>> {
        Ok(vec![format!("restore {} into /var/lib/etcd (old dir moved aside)", snapshot.id)])
    }
    async fn already_restored(&self, snapshot: &Manifest) -> Result<bool> {
        Ok(self.0.st().restored.as_deref() == Some(snapshot.id.as_str()))
    }
    async fn restore(&self, snapshot: &Manifest) -> Result<serde_json::Value> {
        self.0.st().restored = Some(snapshot.id.to_string());
        self.0.event("restore".into()).await;
        Ok(serde_json::json!({"data_dir": "/var/lib/etcd"}))
    }
}

#[derive(Debug)]
struct FakeInit(World);

#[async_trait]
impl ControlPlaneInit for FakeInit {
    async fn plan(&self) -> Result<InitPlan> {
        Ok(InitPlan {
            config_source: "derived".into(),
            endpoint: "10.0.0.2:6443".into(),
            commands: vec!["kubeadm init --config /etc/kubernetes/kdr-kubeadm-init.yaml".into()],
            notes: vec![],
        })
    }
    async fn state(&self) -> Result<InitState> {
        Ok(if self.0.st().initialized { InitState::Initialized } else { InitState::NotInitialized })
    }
    async fn init(&self) -> Result<InitReport> {
        if self.0.st().initialized {
            return Err(Error::refused("already initialised"));
        }
        self.0.st().initialized = true;
        self.0.event("init".into()).await;
        Ok(InitReport { endpoint: "10.0.0.2:6443".into(), ..Default::default() })
    }
    async fn join_command(&self) -> Result<JoinCommand> {
        self.0.event("join-command".into()).await;
        crate::control_plane::join_command_from_redacted(
            &format!(
                "kubeadm join 10.0.0.2:6443 --token X --discovery-token-ca-cert-hash sha256:{}",
                "ab".repeat(32)
            ),
            &crate::control_plane::generate_bootstrap_token(),
        )
    }
}

#[derive(Debug)]
struct FakeFencer(World);

#[async_trait]
impl Fencer for FakeFencer {
    fn plan(&self, t: &FenceTarget) -> Vec<String> {
        vec![format!("power off {}", t.host)]
    }
    async fn fence(&self, t: &FenceTarget) -> Result<FenceReport> {
        if self.0.st().fence_fails {
            self.0.event("fence-failed".into()).await;
            return Err(Error::CommandFailed {
                host: "localhost".into(),
                command: "ipmitool power off".into(),
                exit_code: Some(1),
                stderr: "no route to BMC".into(),
            });
        }
        self.0.event(format!("fence:{}", t.epoch)).await;
        Ok(FenceReport { method: "fake".into(), actions: vec![format!("powered off {}", t.host)] })
    }
}

/// The fakes above as the conformance suites see them: the world's events are the calls.
#[derive(Debug)]
struct FakeNode(World, FenceTarget);

impl FakeNode {
    fn view(&self) -> NodeView {
        NodeView { files: Default::default(), calls: self.0.st().events.clone() }
    }
}

#[async_trait(?Send)]
impl FenceWorld for FakeNode {
    fn target(&self) -> FenceTarget {
        self.1.clone()
    }
    async fn view(&self) -> NodeView {
        FakeNode::view(self)
    }
    async fn fenced(&self) -> bool {
        let done = format!("fence:{}", self.1.epoch);
        self.0.st().events.contains(&done)
    }
}

#[async_trait(?Send)]
impl InitWorld for FakeNode {
    fn node(&self) -> String {
        "master-2".into()
    }
    async fn view(&self) -> NodeView {
        FakeNode::view(self)
    }
    async fn command_lines(&self) -> Vec<String> {
        self.0.st().events.clone()
    }
}

fn fake_node() -> FakeNode {
    FakeNode(World::default(), FenceTarget { name: "master-1".into(), host: "10.0.0.1".into(), epoch: 3 })
}

#[tokio::test]
async fn the_fake_fencer_passes_the_fencer_conformance_suite() {
    let node = fake_node();
    let this = NodeIdentity { name: "master-2".into(), address: "10.0.0.2".into() };
    let fencer = FakeFencer(node.0.clone());
    fencer::run_all(&fencer, &node, &this).await;
    node.0.st().fence_fails = true;
    fencer::a_failing_fence_is_an_error(&fencer, &node).await;
}

#[tokio::test]
async fn the_fake_init_passes_the_control_plane_conformance_suite() {
    let node = fake_node();
    control_plane::run_all(&FakeInit(node.0.clone()), &node).await;
}

#[derive(Debug)]
struct FakeWorkers(World, Vec<String>);

#[async_trait]
impl WorkerRecovery for FakeWorkers {
    fn needs_join_command(&self) -> bool {
        true
    }
    fn plan(&self, endpoint: &str) -> Vec<String> {
        self.1.iter().map(|w| format!("{w}: rejoin {endpoint}")).collect()
    }
    async fn recover(
        &self,
        _endpoint: &str,
        join: Option<&JoinCommand>,
        skip: &BTreeSet<String>,
        progress: &(dyn Fn(WorkerOutcome) + Send + Sync),
    ) -> Result<Vec<WorkerOutcome>> {
        assert!(join.is_some(), "rejoin needs a join command");
        let mut out = Vec::new();
        for w in &self.1 {
            if skip.contains(w) {
                continue;
            }
            let fails = self.0.st().failing_worker.as_deref() == Some(w.as_str());
            if !fails {
                assert!(self.0.st().recovered.insert(w.clone()), "worker {w} recovered twice");
            }
            let o = WorkerOutcome {
                worker: w.clone(),
                ok: !fails,
                detail: if fails { "kubeadm join exited 1".into() } else { "Ready".into() },
                duration_ms: 10,
            };
            progress(o.clone());
            out.push(o);
            self.0.event(format!("worker:{w}")).await;
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct FakeChecks(World);

#[async_trait]
impl PostChecker for FakeChecks {
    fn plan(&self, ctx: &CheckContext) -> Vec<String> {
        vec![format!("delete node {}", ctx.old_primary.name)]
    }
    async fn run(&self, ctx: &CheckContext) -> Result<Vec<CheckResult>> {
        self.0.st().check_contexts.push(ctx.clone());
        self.0.event("checks".into()).await;
        let ok = !self.0.st().checks_fail;
        Ok(vec![
            CheckResult {
                name: "nodes-ready".into(),
                ok,
                detail: format!("failed: {:?}", ctx.failed_workers),
            },
            CheckResult {
                name: "snapshot-pods".into(),
                ok: true,
                detail: format!(
                    "{:?} {:?}",
                    ctx.expected_pods,
                    ctx.recorded_pods.as_ref().map(|p| p.names.clone())
                ),
            },
        ])
    }
}

fn manifest() -> Manifest {
    let created: DateTime<Utc> = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    Manifest {
        schema_version: 1,
        id: SnapshotId::parse("20260911T060000Z-0badcafe").unwrap(),
        created_at: created,
        duration_ms: 1200,
        cluster_name: "prod".into(),
        source: SnapshotSource {
            endpoint: "https://192.168.30.200:2379".into(),
            member_name: "master-1".into(),
            member_id: "8e9e05c52164694d".into(),
            etcd_version: "3.5.16".into(),
            revision: 4242,
            db_size: 1 << 20,
        },
        compression: Compression::Zstd,
        encryption: Encryption::None,
        etcd_hash_verified: true,
        objects: vec![],
        bundle_files: vec![],
        key_inventory: BTreeMap::from([("pods".to_owned(), 12)]),
        total_keys: 300,
        pods: Some(PodNames {
            names: vec!["default/web-0".into(), "default/web-1".into()],
            truncated: false,
        }),
    }
}

/// One complete set, read-only.
#[derive(Debug)]
struct OneSet(Manifest);

#[async_trait]
impl SnapshotStore for OneSet {
    fn describe(&self) -> String {
        "memory://sets".into()
    }
    async fn put_object(&self, _: &SnapshotId, _: &str, _: ByteStream) -> Result<StoredObject> {
        Err(Error::refused("read-only test store"))
    }
    async fn commit(&self, _: &Manifest) -> Result<()> {
        Err(Error::refused("read-only test store"))
    }
    async fn list(&self) -> Result<Vec<Manifest>> {
        Ok(vec![self.0.clone()])
    }
    async fn manifest(&self, id: &SnapshotId) -> Result<Manifest> {
        if *id == self.0.id { Ok(self.0.clone()) } else { Err(Error::not_found(format!("backup set {id}"))) }
    }
    async fn get_object(&self, _: &SnapshotId, _: &str) -> Result<ByteStream> {
        Err(Error::refused("read-only test store"))
    }
    async fn delete(&self, _: &str) -> Result<()> {
        Err(Error::refused("read-only test store"))
    }
    async fn list_incomplete(&self) -> Result<Vec<IncompleteSet>> {
        Ok(vec![])
    }
}

struct Harness {
    world: World,
    dir: tempfile::TempDir,
    objects: Arc<InMemory>,
    /// What the claims are written through (the same objects, maybe slowed down).
    claims_store: Arc<dyn object_store::ObjectStore>,
    hooks: HooksSettings,
}

impl Harness {
    fn new() -> Self {
        Self::sharing(Arc::new(InMemory::new()))
    }

    /// Another standby (its own state dir and nodes) on the same object store.
    fn sharing(objects: Arc<InMemory>) -> Self {
        Self {
            world: World::default(),
            dir: tempfile::tempdir().unwrap(),
            claims_store: objects.clone(),
            objects,
            hooks: HooksSettings::default(),
        }
    }

    fn claims(&self) -> ClaimStore {
        ClaimStore::new(self.objects.clone(), "prod", "memory://")
    }

    fn settings(&self) -> PromotionSettings {
        PromotionSettings {
            node_name: "master-2".into(),
            advertise_address: "10.0.0.2".into(),
            old_primary_name: "master-1".into(),
            old_primary_address: "10.0.0.1".into(),
            state_dir: self.dir.path().join("state"),
            ..Default::default()
        }
    }

    /// A runbook over fresh fakes (as a restarted process would build) sharing the world.
    fn runbook_as(&self, holder: &str) -> Runbook {
        self.runbook_with(|p| p.settings.holder = Some(holder.into()))
    }

    /// [`runbook`](Self::runbook) with its parts changed by `change` first.
    fn runbook_with(&self, change: impl FnOnce(&mut RunbookParts)) -> Runbook {
        let mut settings = self.settings();
        settings.holder = Some("master-2".into());
        let w = &self.world;
        let mut parts = RunbookParts {
            settings,
            hooks: self.hooks.clone(),
            claims: ClaimStore::new(self.claims_store.clone(), "prod", "memory://"),
            snapshots: Arc::new(OneSet(manifest())),
            fencer: Arc::new(FakeFencer(w.clone())),
            restore: Arc::new(FakeRestore(w.clone())),
            control_plane: Arc::new(FakeInit(w.clone())),
            workers: Arc::new(FakeWorkers(
                w.clone(),
                vec!["worker-1".into(), "worker-2".into(), "worker-3".into()],
            )),
            checks: Arc::new(FakeChecks(w.clone())),
            clock: Arc::new(ManualClock::new(
                DateTime::from_timestamp(1_790_000_100, 0).unwrap(),
                crate::clock::Clock::instant(&crate::clock::SystemClock),
            )),
        };
        change(&mut parts);
        Runbook::new(parts).unwrap()
    }

    fn runbook(&self) -> Runbook {
        self.runbook_as("master-2")
    }

    /// Runs until the world's crash point, then drops the run (the process "dies").
    async fn run_until_crash(&self, crash_after: &str) {
        self.world.st().crash_after = Some(crash_after.into());
        let rb = self.runbook();
        let run = rb.run(None);
        tokio::select! {
            r = run => panic!("the run should have crashed after {crash_after}, it ended: {r:?}"),
            _ = self.world.crashed.notified() => {}
        }
        self.world.st().crash_after = None;
    }

    fn journal(&self, epoch: u64) -> Journal {
        Journal::load(&Journal::path_for(&self.dir.path().join("state"), epoch)).unwrap()
    }
}

#[tokio::test]
async fn full_run_journals_every_step_then_refuses_the_same_epoch() {
    let h = Harness::new();
    let report = h.runbook().run(None).await.unwrap();
    assert!(report.succeeded(), "{report}");
    assert_eq!(report.epoch, 1);
    assert_eq!(
        h.world.st().events,
        [
            "fence:1",
            "restore",
            "init",
            "join-command",
            "worker:worker-1",
            "worker:worker-2",
            "worker:worker-3",
            "checks"
        ]
    );
    let j = h.journal(1);
    assert!(j.is_complete());
    for s in StepKind::ALL {
        let r = j.record(s).unwrap();
        assert_eq!((r.status, r.attempts), (StepStatus::Succeeded, 1), "{s:?}");
        assert!(r.finished_at.is_some());
    }
    // The join token never reaches the journal.
    let text = std::fs::read_to_string(j.path()).unwrap();
    assert!(!text.contains("token"), "{text}");
    assert_eq!(
        report.checks[1].detail, r#"Some(12) Some(["default/web-0", "default/web-1"])"#,
        "expected pods come from the manifest: its inventory's count and its pod names"
    );
    let rendered = report.to_string();
    assert!(rendered.contains("worker-2") && rendered.contains("ok"), "{rendered}");

    let err = h.runbook().run(Some(1)).await.unwrap_err();
    assert!(err.to_string().contains("epoch 1 was already promoted"), "{err}");
    assert_eq!(h.world.count("restore"), 1);
    // Without an epoch the next run would claim epoch 2: a new promotion, not a repeat.
    assert_eq!(h.runbook().plan(None).await.unwrap().epoch, 2);
}

/// Crash right after each side effect, resume with fresh fakes: every destructive step happened
/// exactly once, and the journal ends complete.
#[tokio::test]
async fn crash_after_each_step_then_resume_never_repeats_a_finished_destructive_step() {
    for crash in [
        "fence:1",
        "restore",
        "init",
        "join-command",
        "worker:worker-1",
        "worker:worker-2",
        "worker:worker-3",
        "checks",
    ] {
        let h = Harness::new();
        h.run_until_crash(crash).await;
        let j = h.journal(1);
        assert!(!j.is_complete(), "{crash}");
        let report = h.runbook().run(None).await.unwrap_or_else(|e| panic!("resume after {crash}: {e}"));
        assert!(report.succeeded(), "{crash}: {report}");
        assert!(h.journal(1).is_complete(), "{crash}");
        assert_eq!(h.world.count("restore"), 1, "restore repeated after a crash at {crash}");
        assert_eq!(h.world.count("init"), 1, "init repeated after a crash at {crash}");
        for w in ["worker-1", "worker-2", "worker-3"] {
            assert_eq!(
                h.world.count(&format!("worker:{w}")),
                1,
                "{w} recovered twice after a crash at {crash}"
            );
        }
        assert!(h.world.count("checks") >= 1);
        let claim = ClaimStore::new(h.objects.clone(), "prod", "m").get(1).await.unwrap().unwrap();
        assert_eq!(claim.run_id, h.journal(1).data().run_id, "{crash}: the resumed run reused its claim");
        let j = h.journal(1);
        let interrupted = match crash {
            "fence:1" => Some(StepKind::Fence),
            "restore" => Some(StepKind::Restore),
            "init" => Some(StepKind::ControlPlaneInit),
            "checks" => Some(StepKind::PostChecks),
            _ => Some(StepKind::Workers),
        };
        if let Some(s) = interrupted {
            assert_eq!(j.record(s).unwrap().attempts, 2, "{crash}: {s:?} resumed");
        }
    }
}

#[tokio::test]
async fn crash_during_claim_and_pre_hooks_resumes_with_the_same_claim() {
    let mut h = Harness::new();
    let log = h.dir.path().join("hook.log");
    let flag = h.dir.path().join("hang");
    std::fs::write(&flag, "").unwrap();
    // The hook logs, then hangs while the flag file exists: the runbook is "killed" in the hook.
    h.hooks.pre = vec![HookSpec::exec(vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"$KDR_EPOCH\" >> {}; while [ -e {} ]; do sleep 0.05; done",
            log.display(),
            flag.display()
        ),
    ])];
    let rb = h.runbook();
    let watch = async {
        while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = rb.run(None) => panic!("should hang in the hook: {r:?}"),
        _ = watch => {}
    }
    assert_eq!(h.journal(1).status(StepKind::PreHooks), Some(StepStatus::Started));
    assert_eq!(h.journal(1).status(StepKind::Claim), Some(StepStatus::Succeeded));
    std::fs::remove_file(&flag).unwrap();
    let report = h.runbook().run(None).await.unwrap();
    assert!(report.succeeded());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n1\n", "the idempotent pre-hook re-ran");
    assert_eq!(h.world.count("restore"), 1);
}

#[tokio::test]
async fn interrupted_restore_without_swap_is_redone_and_partial_init_is_refused() {
    let h = Harness::new();
    h.run_until_crash("restore").await;
    // The crash hit before the swap: the restore flow cleaned up, nothing is in place.
    h.world.st().restored = None;
    h.world.st().crash_after = Some("init".into());
    let rb = h.runbook();
    tokio::select! {
        r = rb.run(None) => panic!("{r:?}"),
        _ = h.world.crashed.notified() => {}
    }
    h.world.st().crash_after = None;
    assert_eq!(h.world.count("restore"), 2, "a restore that never swapped is done again");

    // An init that left only some files: refused, never reset.
    #[derive(Debug)]
    struct PartialInit;
    #[async_trait]
    impl ControlPlaneInit for PartialInit {
        async fn plan(&self) -> Result<InitPlan> {
            Ok(InitPlan::default())
        }
        async fn state(&self) -> Result<InitState> {
            Ok(InitState::Partial {
                found: vec!["/etc/kubernetes/admin.conf".into()],
                missing: vec!["etcd.yaml".into()],
            })
        }
        async fn init(&self) -> Result<InitReport> {
            panic!("init must not run over a partial control plane")
        }
        async fn join_command(&self) -> Result<JoinCommand> {
            unreachable!()
        }
    }
    let mut parts = h.runbook().parts.clone();
    parts.control_plane = Arc::new(PartialInit);
    let err = Runbook::new(parts).unwrap().run(None).await.unwrap_err().to_string();
    assert!(err.contains("stopped at step control-plane-init") && err.contains("kubeadm reset"), "{err}");
}

#[tokio::test]
async fn a_failed_fence_stops_the_runbook_before_anything_is_restored() {
    let h = Harness::new();
    h.world.st().fence_fails = true;
    let err = h.runbook().run(None).await.unwrap_err().to_string();
    assert!(err.contains("stopped at step fence") && err.contains("no route to BMC"), "{err}");
    assert_eq!(h.world.st().events, ["fence-failed"]);
    let j = h.journal(1);
    assert_eq!(j.status(StepKind::Fence), Some(StepStatus::Failed));
    assert!(j.record(StepKind::Fence).unwrap().error.as_deref().unwrap().contains("no route to BMC"));
    assert_eq!(j.status(StepKind::Restore), None);
    // Fixed, the next run resumes at the fence.
    h.world.st().fence_fails = false;
    assert!(h.runbook().run(None).await.unwrap().succeeded());
    assert_eq!(h.world.count("restore"), 1);
}

#[tokio::test]
async fn a_failing_pre_hook_aborts_before_the_fence() {
    let mut h = Harness::new();
    h.hooks.pre =
        vec![HookSpec::exec(vec!["sh".into(), "-c".into(), "echo 'dns api down' >&2; exit 2".into()])];
    let err = h.runbook().run(None).await.unwrap_err().to_string();
    assert!(err.contains("stopped at step pre-hooks") && err.contains("dns api down"), "{err}");
    assert!(h.world.st().events.is_empty(), "nothing after the hook ran: {:?}", h.world.st().events);
    assert_eq!(h.journal(1).status(StepKind::PreHooks), Some(StepStatus::Failed));
}

#[tokio::test]
async fn a_claim_taken_by_another_standby_is_refused_and_nothing_runs() {
    let h = Harness::new();
    let other = Claim {
        epoch: 1,
        holder: "master-3".into(),
        host: "10.0.0.3".into(),
        run_id: "someone-else".into(),
        claimed_at: DateTime::from_timestamp(1_790_000_050, 0).unwrap(),
        snapshot: None,
    };
    ClaimStore::new(h.objects.clone(), "prod", "m").claim(&other).await.unwrap();
    // Without --epoch the runbook takes the newest claim + 1: no conflict.
    assert_eq!(h.runbook().plan(None).await.unwrap().epoch, 2);
    let err = h.runbook().run(Some(1)).await.unwrap_err().to_string();
    assert!(err.contains("epoch 1 already claimed by master-3"), "{err}");
    assert!(h.world.st().events.is_empty());
    // The lost epoch is never resumed: the next run promotes the next epoch, if told to.
    assert!(h.journal(1).is_abandoned());
    let err = h.runbook().run(Some(1)).await.unwrap_err().to_string();
    assert!(err.contains("epoch 1 was given up by this standby"), "{err}");
    let plan = h.runbook().plan(None).await.unwrap();
    assert_eq!(plan.epoch, 2, "{}", plan.epoch_source);
    assert!(h.runbook().run(None).await.unwrap().succeeded());
    assert_eq!(h.world.count("restore"), 1);
}

#[tokio::test]
async fn a_failed_worker_does_not_stop_the_others_and_a_rerun_retries_only_it() {
    let h = Harness::new();
    h.world.st().failing_worker = Some("worker-2".into());
    let report = h.runbook().run(None).await.unwrap();
    assert!(!report.succeeded());
    assert_eq!(report.failed_workers(), ["worker-2"]);
    assert_eq!(h.world.count("worker:"), 3, "the others still ran");
    assert_eq!(h.world.count("checks"), 1, "post-checks still ran");
    assert!(report.checks[0].detail.contains("worker-2"), "the failed worker is not waited for");
    assert!(report.to_string().contains("FAILED workers: worker-2"));
    let j = h.journal(1);
    assert!(!j.is_complete());
    assert_eq!(j.status(StepKind::Workers), Some(StepStatus::Failed));
    assert_eq!(j.status(StepKind::PostHooks), Some(StepStatus::Succeeded));

    h.world.st().failing_worker = None;
    let report = h.runbook().run(None).await.unwrap();
    assert!(report.succeeded(), "{report}");
    assert_eq!(h.world.count("worker:worker-2"), 2);
    assert_eq!(h.world.count("worker:worker-1"), 1);
    assert_eq!(report.workers.len(), 3);
    assert!(h.journal(1).is_complete());
}

#[tokio::test]
async fn failing_post_checks_stop_before_the_post_hooks() {
    let mut h = Harness::new();
    let marker = h.dir.path().join("dns-switched");
    h.hooks.post = vec![HookSpec::exec(vec!["touch".into(), marker.display().to_string()])];
    h.world.st().checks_fail = true;
    let err = h.runbook().run(None).await.unwrap_err().to_string();
    assert!(err.contains("post-checks failed: nodes-ready"), "{err}");
    assert!(!marker.exists());
    h.world.st().checks_fail = false;
    h.runbook().run(None).await.unwrap();
    assert!(marker.exists());
}

#[tokio::test]
async fn dry_run_touches_nothing_and_shows_the_whole_plan() {
    let h = Harness::new();
    let plan = h.runbook().plan(None).await.unwrap();
    assert!(h.world.st().events.is_empty());
    assert!(!h.dir.path().join("state").exists(), "no journal, no lock, no state dir");
    let listed: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(object_store::ObjectStore::list(&*h.objects, None))
            .await
            .unwrap();
    assert!(listed.is_empty(), "no claim written");
    assert_eq!(plan.epoch, 1);
    assert_eq!(plan.steps.len(), 8);
    assert!(plan.steps.iter().all(|s| s.action == StepAction::Run));
    let text = plan.to_string();
    for expected in [
        "20260911T060000Z-0badcafe",
        "prod/claims/epoch-1.json",
        "power off 10.0.0.1",
        "restore 20260911T060000Z-0badcafe into /var/lib/etcd",
        "kubeadm init --config",
        "worker-3: rejoin 10.0.0.2:6443",
        "delete node master-1",
        "(destructive)",
    ] {
        assert!(text.contains(expected), "plan lacks {expected:?}:\n{text}");
    }
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["steps"][3]["step"], "restore");

    // After a crash, the plan says what a resume would do.
    h.run_until_crash("init").await;
    let plan = h.runbook().plan(None).await.unwrap();
    let action = |k: StepKind| plan.steps.iter().find(|s| s.step == k).unwrap().action;
    assert_eq!(action(StepKind::Restore), StepAction::SkipDone);
    assert_eq!(action(StepKind::ControlPlaneInit), StepAction::Resume);
    assert_eq!(action(StepKind::Workers), StepAction::Run);
    assert!(plan.epoch_source.contains("resuming"));
}

#[test]
fn settings_need_identities_and_a_new_host_differs_from_the_old() {
    let mut s = PromotionSettings::default();
    assert!(matches!(s.validate(), Err(Error::Config { key, .. }) if key == "promotion.node_name"));
    s.node_name = "master-1".into();
    s.advertise_address = "10.0.0.1".into();
    s.old_primary_name = "master-1".into();
    s.old_primary_address = "10.0.0.1".into();
    assert!(matches!(s.validate(), Err(Error::Config { key, .. }) if key == "promotion.mode"));
    s.mode = PromotionMode::SameHost;
    s.validate().unwrap();
    s.snapshot = "yesterday".into();
    assert!(matches!(s.validate(), Err(Error::Config { key, .. }) if key == "promotion.snapshot"));
    let parsed: PromotionSettings = toml::from_str(
        "node_name = \"m2\"\nadvertise_address = \"10.0.0.2\"\nold_primary_name = \"m1\"\nold_primary_address = \"10.0.0.1\"\n\
         [checks]\ntimeout = \"3m\"\n",
    )
    .unwrap();
    parsed.validate().unwrap();
    assert_eq!(parsed.checks.timeout, Duration::from_secs(180));
}

fn other_claim(epoch: u64, holder: &str) -> Claim {
    Claim {
        epoch,
        holder: holder.into(),
        host: "10.0.0.3".into(),
        run_id: format!("run-of-{holder}"),
        claimed_at: DateTime::from_timestamp(1_790_000_050, 0).unwrap(),
        snapshot: None,
    }
}

/// The second failover in a cluster's life: a rebuilt standby (empty state dir) after a first
/// promotion took epoch 1.
#[tokio::test]
async fn a_rebuilt_standby_promotes_the_newest_claim_plus_one_and_a_claimed_epoch_says_what_to_do() {
    let first = Harness::new();
    assert_eq!(first.runbook().run(None).await.unwrap().epoch, 1);

    let rebuilt = Harness::sharing(first.objects.clone());
    let plan = rebuilt.runbook_as("master-3").plan(None).await.unwrap();
    assert_eq!(plan.epoch, 2, "{}", plan.epoch_source);
    // Its detector, starting from 0, would have asked for epoch 1: refused, naming the claim and
    // the commands, and nothing runs.
    let err = rebuilt.runbook_as("master-3").run(Some(1)).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    let msg = err.to_string();
    for expected in [
        "epoch 1 already claimed by master-2 on 10.0.0.2 at 2026-09-21T14:15:00+00:00",
        "`kdr failover` without --epoch: it takes epoch 2",
        "`kdr rearm`",
    ] {
        assert!(msg.contains(expected), "lacks {expected:?}: {msg}");
    }
    assert!(rebuilt.world.st().events.is_empty(), "{:?}", rebuilt.world.st().events);
    assert!(rebuilt.journal(1).is_abandoned(), "the refusal is recorded, the journal kept");
    // The same again: given up, never resumed.
    let msg = rebuilt.runbook_as("master-3").run(Some(1)).await.unwrap_err().to_string();
    assert!(msg.contains("epoch 1 was given up by this standby") && msg.contains("takes epoch 2"), "{msg}");

    // `kdr failover` without --epoch, with the detector's (halted) epoch 1: not used, epoch 2 is.
    let report = rebuilt.runbook_as("master-3").run_for(EpochRequest::Detector(1)).await.unwrap();
    assert!(report.succeeded(), "{report}");
    assert_eq!(report.epoch, 2);
    assert!(report.notes.iter().any(|n| n.contains("detector epoch 1 is not used")), "{:?}", report.notes);
    assert_eq!(rebuilt.claims().get(2).await.unwrap().unwrap().holder, "master-3");
    assert_eq!(rebuilt.world.count("restore"), 1);
    // A later epoch than the newest claim is this standby's to claim.
    assert_eq!(rebuilt.runbook_as("master-3").plan(Some(3)).await.unwrap().epoch, 3);
}

#[tokio::test]
async fn a_requested_epoch_older_than_the_newest_claim_is_refused_before_claiming() {
    let h = Harness::new();
    h.claims().claim(&other_claim(4, "master-3")).await.unwrap();
    let err = h.runbook().run(Some(2)).await.unwrap_err().to_string();
    assert!(
        err.contains("epoch 2 cannot be promoted by this standby: epoch 4 already claimed by master-3")
            && err.contains("the newest claim")
            && err.contains("takes epoch 5"),
        "{err}"
    );
    assert_eq!(h.claims().get(2).await.unwrap(), None, "epoch 2 was not claimed");
    assert!(h.world.st().events.is_empty());
}

#[tokio::test]
async fn an_unfinished_journal_whose_epoch_another_run_claimed_is_given_up_and_not_re_picked() {
    let h = Harness::new();
    // This standby started epoch 1 and died before claiming it; another standby claimed it.
    let state = h.dir.path().join("state");
    Journal::create(&state, 1, "run-here", "master-2", DateTime::from_timestamp(1_790_000_000, 0).unwrap())
        .unwrap();
    h.claims().claim(&other_claim(1, "master-3")).await.unwrap();

    // The dry run says so and changes nothing.
    let plan = h.runbook().plan(None).await.unwrap();
    assert_eq!(plan.epoch, 2, "{}", plan.epoch_source);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("would be given up")
                && n.contains("epoch 1 was claimed by another run: master-3")),
        "{:?}",
        plan.notes
    );
    assert!(!h.journal(1).is_abandoned());

    let report = h.runbook().run(None).await.unwrap();
    assert_eq!(report.epoch, 2);
    assert!(report.succeeded(), "{report}");
    let given_up = h.journal(1);
    assert!(given_up.is_abandoned(), "kept, marked given up");
    assert_eq!(given_up.data().run_id, "run-here");
    assert!(report.notes.iter().any(|n| n.contains("was given up")), "{:?}", report.notes);
    // Never re-picked: the next run without --epoch would take epoch 3, not resume epoch 1.
    assert_eq!(h.runbook().plan(None).await.unwrap().epoch, 3);
}

#[tokio::test]
async fn a_claimed_unfinished_journal_superseded_by_a_later_claim_is_given_up() {
    let h = Harness::new();
    h.run_until_crash("fence:1").await; // epoch 1 claimed by this standby, then it died
    assert_eq!(h.runbook().plan(None).await.unwrap().epoch, 1, "its own unfinished epoch: resumed");
    h.claims().claim(&other_claim(2, "master-3")).await.unwrap();
    let plan = h.runbook().plan(None).await.unwrap();
    assert_eq!(plan.epoch, 3, "{}", plan.epoch_source);
    assert!(
        plan.notes.iter().any(|n| n.contains("a later epoch 2 was claimed by master-3")),
        "{:?}",
        plan.notes
    );
    // Asked for explicitly, epoch 1 is refused (and given up), not resumed.
    let err = h.runbook().run(Some(1)).await.unwrap_err().to_string();
    assert!(err.contains("epoch 1 was given up by this standby") && err.contains("takes epoch 3"), "{err}");
    assert!(h.journal(1).is_abandoned());
    assert_eq!(h.world.count("restore"), 0, "nothing after the fence ran");
}

/// Two standbys race for the same new epoch (each resolves newest + 1 = 1 before either has
/// claimed): exactly one wins; the other stops, and does not take epoch 2 on its own.
#[tokio::test]
async fn two_standbys_racing_for_the_same_new_epoch_produce_one_winner_and_no_second_epoch() {
    let objects = Arc::new(InMemory::new());
    let slow = |objects: &Arc<InMemory>| -> Arc<dyn object_store::ObjectStore> {
        let cfg = object_store::throttle::ThrottleConfig {
            wait_put_per_call: Duration::from_millis(300),
            ..Default::default()
        };
        Arc::new(object_store::throttle::ThrottledStore::new(objects.clone(), cfg))
    };
    let mut a = Harness::sharing(objects.clone());
    a.claims_store = slow(&objects);
    let mut b = Harness::sharing(objects.clone());
    b.claims_store = slow(&objects);
    let (ra, rb) = (a.runbook_as("master-2"), b.runbook_as("master-3"));
    let (ra, rb) = tokio::join!(ra.run(None), rb.run(None));
    let (won, lost, loser) = match (ra, rb) {
        (Ok(w), Err(l)) => (w, l, &b),
        (Err(l), Ok(w)) => (w, l, &a),
        other => panic!("exactly one winner expected: {other:?}"),
    };
    assert_eq!(won.epoch, 1);
    let msg = lost.to_string();
    assert!(matches!(lost, Error::Refused { .. }), "{lost:?}");
    assert!(
        msg.contains("epoch 1 already claimed by") && msg.contains("`kdr failover` without --epoch"),
        "{msg}"
    );
    assert_eq!(Harness::sharing(objects.clone()).claims().get(2).await.unwrap(), None, "no second epoch");
    assert!(loser.world.st().events.is_empty(), "the loser touched nothing: {:?}", loser.world.st().events);
    assert!(loser.journal(1).is_abandoned(), "the lost epoch is never resumed");
}

/// A fence whose target is this host is refused before any fencer runs (new-host mode with the
/// old primary's address resolving here: a configuration mistake).
#[tokio::test]
async fn a_fence_aimed_at_this_host_is_refused_before_the_fencer_runs() {
    let h = Harness::new();
    let rb = h.runbook_with(|p| p.settings.old_primary_address = "127.0.0.1".into());
    let plan = rb.plan(None).await.unwrap();
    let fence = plan.steps.iter().find(|st| st.step == StepKind::Fence).unwrap();
    assert!(fence.details[0].starts_with("REFUSED"), "{:?}", fence.details);
    let err = rb.run(None).await.unwrap_err().to_string();
    assert!(err.contains("stopped at step fence"), "{err}");
    assert!(
        err.contains("refusing to fence master-1 (127.0.0.1) for epoch 1: its address 127.0.0.1 is one of this host's own addresses"),
        "{err}"
    );
    assert!(h.world.st().events.is_empty(), "the fencer never ran: {:?}", h.world.st().events);
    let j = h.journal(1);
    assert_eq!(j.status(StepKind::Fence), Some(StepStatus::Failed));
    assert_eq!(j.status(StepKind::Restore), None, "nothing after the fence");
}

/// Seeds 001/004: the primary rebuilt with the same name and IP promotes itself.
#[tokio::test]
async fn same_host_promotion_refuses_its_own_fence_and_keeps_its_own_node() {
    let h = Harness::new();
    let same_host = |p: &mut RunbookParts| {
        p.settings.node_name = "master-1".into();
        p.settings.advertise_address = "10.0.0.1".into();
        p.settings.mode = PromotionMode::SameHost;
    };
    // A fencer that acts would stop this very node: refused, naming why.
    let err = h.runbook_with(same_host).run(None).await.unwrap_err().to_string();
    assert!(err.contains("refusing to fence master-1 (10.0.0.1)"), "{err}");
    assert!(err.contains("its node name \"master-1\" is this node's"), "{err}");
    assert!(h.world.st().events.is_empty(), "{:?}", h.world.st().events);

    // With no fence (the old machine is gone: it is this one), the run completes and the
    // post-checks are told the old primary is this node, so they keep its Node and member.
    let rb = h.runbook_with(|p| {
        same_host(p);
        p.fencer = Arc::new(crate::fence::NoFence::i_accept_split_brain_risk());
    });
    let plan = rb.plan(None).await.unwrap();
    assert!(
        plan.notes.iter().any(|n| n.contains("is this node") && n.contains("clean-up skipped")),
        "{:?}",
        plan.notes
    );
    let report = rb.run(None).await.unwrap();
    assert!(report.succeeded(), "{report}");
    assert!(report.to_string().contains("note: the old primary master-1 is this node"), "{report}");
    let ctxs = h.world.st().check_contexts.clone();
    assert_eq!(ctxs.len(), 1);
    assert!(ctxs[0].old_primary_here());
    assert!(
        ctxs[0].old_primary_is_this_node.as_deref().is_some_and(|w| w.contains("node name \"master-1\"")),
        "{:?}",
        ctxs[0]
    );
}

#[tokio::test]
async fn a_different_old_primary_is_fenced_and_cleaned_up_as_before() {
    let h = Harness::new();
    assert!(h.runbook().run(None).await.unwrap().succeeded());
    let ctxs = h.world.st().check_contexts.clone();
    assert_eq!(ctxs[0].old_primary_is_this_node, None);
    assert_eq!(h.world.count("fence:1"), 1);
}
