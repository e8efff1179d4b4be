use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::TimeZone;

use super::*;
use crate::clock::ManualClock;
use crate::testing::remote::{RecordingNodeRemote, Reply};

const TOKEN: &str = "abcdef.0123456789abcdef";
const HASH: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn clock() -> ManualClock {
    #[allow(clippy::disallowed_methods)] // the monotonic origin of a manual clock
    let origin = std::time::Instant::now();
    ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 11, 21, 5, 11, 15).unwrap(), origin)
}

fn config() -> WorkerRecoveryConfig {
    WorkerRecoveryConfig {
        poll_interval: Duration::from_millis(100),
        command_timeout: Duration::from_secs(5),
        runtime_ready_timeout: Duration::from_secs(3),
        stale_node_timeout: Duration::from_secs(3),
        kubelet_active_timeout: Duration::from_secs(3),
        node_ready_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

fn rejoin_plan() -> RecoveryPlan {
    let join = JoinCommand::parse(&format!(
        "kubeadm join 10.0.0.9:6443 --token {TOKEN} --discovery-token-ca-cert-hash {HASH}"
    ))
    .unwrap();
    RecoveryPlan::Rejoin { join }
}

fn rewire_plan() -> RecoveryPlan {
    RecoveryPlan::Rewire { endpoint: "https://10.0.0.9:6443".into() }
}

/// Node states per node, consumed one per check; the last one repeats.
#[derive(Debug, Default)]
struct ScriptedReadiness {
    states: Mutex<HashMap<String, VecDeque<NodeState>>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    checks: AtomicUsize,
}

impl ScriptedReadiness {
    fn script(self, node: &str, states: &[NodeState]) -> Self {
        self.states.lock().unwrap().insert(node.into(), states.iter().cloned().collect());
        self
    }
}

fn not_ready() -> NodeState {
    NodeState::NotReady("NotReady".into())
}

#[async_trait]
impl NodeReadiness for ScriptedReadiness {
    async fn node_state(&self, node: &str) -> Result<NodeState> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut states = self.states.lock().unwrap();
        let q = states.entry(node.to_owned()).or_insert_with(|| VecDeque::from([NodeState::Ready]));
        Ok(if q.len() > 1 { q.pop_front().unwrap() } else { q[0].clone() })
    }
}

fn workers(names: &[&str]) -> (Vec<Arc<RecordingNodeRemote>>, Vec<WorkerTarget>) {
    let fakes: Vec<_> = names.iter().map(|n| Arc::new(RecordingNodeRemote::new(*n))).collect();
    let targets = fakes
        .iter()
        .map(|f| WorkerTarget { name: f.node().to_owned(), remote: f.clone() as Arc<dyn NodeRemote> })
        .collect();
    (fakes, targets)
}

const REWIRE_SCRIPT: &str = "set -e
echo 'kdr-step: read kubelet kubeconfig'; grep -E '^[[:space:]]*server:' /etc/kubernetes/kubelet.conf
echo 'kdr-step: back up kubelet kubeconfig'; cp -p /etc/kubernetes/kubelet.conf /etc/kubernetes/kubelet.conf.kdr-20261121T051115Z
echo 'kdr-step: rewrite kubelet kubeconfig'; sed -i -E 's#^([[:space:]]*server:[[:space:]]*).*$#\\1https://10.0.0.9:6443#' /etc/kubernetes/kubelet.conf
echo 'kdr-step: restart kubelet'; systemctl restart kubelet
";

#[tokio::test(start_paused = true)]
async fn rewire_runs_exactly_these_commands() {
    let (fakes, targets) = workers(&["worker-1"]);
    let ready = ScriptedReadiness::default();
    let report = recover_workers(&targets, &rewire_plan(), &config(), &ready, &clock()).await;
    report.check().unwrap();
    assert_eq!(fakes[0].commands(), [REWIRE_SCRIPT, "systemctl is-active kubelet"]);
    assert!(fakes[0].recorded().iter().all(|c| c.command.sudo), "every recovery command runs as root");
    assert_eq!(ready.checks.load(Ordering::SeqCst), 1);
    assert_eq!(report.results[0].mode, RecoveryMode::Rewire);
}

fn rejoin_scripts(node: &str) -> [String; 2] {
    let m = |d: &str| {
        format!(
            "echo 'kdr-step: move aside {d}'; if [ -e {d} ]; then if [ -e {d}.kdr-moved-20261121T051115Z ]; then \
             echo {d}.kdr-moved-20261121T051115Z already exists >&2; exit 1; fi; mv {d} {d}.kdr-moved-20261121T051115Z; fi\n"
        )
    };
    let prepare = format!(
        "set -e\necho 'kdr-step: kubeadm reset'; kubeadm reset -f\necho 'kdr-step: stop kubelet'; systemctl stop kubelet\n\
         {}{}{}{}echo 'kdr-step: restart containerd'; systemctl restart containerd\n",
        m("/etc/kubernetes"),
        m("/var/lib/kubelet"),
        m("/var/lib/cni"),
        m("/etc/cni")
    );
    let f = format!("/run/kdr/join-{node}.yaml");
    let join = format!(
        "set -e\ntrap 'rm -f {f}' EXIT\necho 'kdr-step: start kubelet'; systemctl start kubelet\n\
         echo 'kdr-step: write join configuration'; umask 077; mkdir -p /run/kdr; cat > {f}\n\
         echo 'kdr-step: kubeadm join'; kubeadm join --config {f}\n"
    );
    [prepare, join]
}

#[tokio::test(start_paused = true)]
async fn rejoin_runs_exactly_these_commands_and_keeps_the_token_off_command_lines() {
    let (fakes, targets) = workers(&["worker-1"]);
    // The restored Node object is Ready at first (stale), then NotReady; after the join it
    // becomes Ready.
    let ready = ScriptedReadiness::default()
        .script("worker-1", &[NodeState::Ready, not_ready(), not_ready(), not_ready(), NodeState::Ready]);
    let report = recover_workers(&targets, &rejoin_plan(), &config(), &ready, &clock()).await;
    report.check().unwrap();
    let [prepare, join] = rejoin_scripts("worker-1");
    assert_eq!(
        fakes[0].commands(),
        [prepare, "crictl info".into(), join, "systemctl is-active kubelet".into()]
    );
    let recorded = fakes[0].recorded();
    assert!(recorded.iter().all(|c| c.command.sudo), "every recovery command runs as root");
    assert!(recorded.iter().all(|c| !c.command.command_line().contains("0123456789abcdef")));
    // The token went on the stdin of the join script only.
    let with_stdin: Vec<_> = recorded.iter().filter(|c| c.stdin.is_some()).collect();
    assert_eq!(with_stdin.len(), 1);
    let doc: serde_json::Value = serde_json::from_slice(with_stdin[0].stdin.as_ref().unwrap()).unwrap();
    assert_eq!(doc["discovery"]["bootstrapToken"]["token"], TOKEN);
    assert_eq!(doc["nodeRegistration"]["name"], "worker-1");
    // Ready (stale), NotReady -> join; then NotReady twice, Ready.
    assert_eq!(ready.checks.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn one_unreachable_worker_does_not_stop_the_others() {
    let (fakes, targets) = workers(&["worker-1", "worker-2", "worker-3"]);
    fakes[1].set_unreachable(true);
    let ready = ScriptedReadiness::default();
    let report = recover_workers(&targets, &rewire_plan(), &config(), &ready, &clock()).await;
    assert_eq!(report.failed(), ["worker-2"]);
    assert!(report.results[0].ok() && report.results[2].ok());
    assert_eq!(fakes[0].calls().len(), 2);
    assert_eq!(fakes[2].calls().len(), 2);
    let (step, e) = report.results[1].error.as_ref().unwrap();
    assert_eq!(step, "read kubelet kubeconfig");
    assert!(e.to_string().contains("worker-2"), "{e}");
    let err = report.check().unwrap_err().to_string();
    assert!(err.contains("failed on 1 of 3 workers (worker-2)"), "{err}");
    assert!(err.contains("kdr rejoin --config FILE --worker worker-2"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_join_fails_that_worker_only_and_still_removes_the_token_file() {
    let (fakes, targets) = workers(&["worker-1", "worker-2", "worker-3"]);
    // As the real script would print it: the steps it reached, then the failure.
    let reached = "kdr-step: start kubelet\nkdr-step: write join configuration\nkdr-step: kubeadm join\n";
    fakes[2].respond("kubeadm join", Reply::exit(1, reached, "error execution phase preflight: boom\n"));
    let ready = ScriptedReadiness::default()
        .script("worker-1", &[not_ready(), NodeState::Ready])
        .script("worker-2", &[not_ready(), NodeState::Ready])
        .script("worker-3", &[not_ready()]);
    let report = recover_workers(&targets, &rejoin_plan(), &config(), &ready, &clock()).await;
    assert_eq!(report.failed(), ["worker-3"]);
    let (step, e) = report.results[2].error.as_ref().unwrap();
    assert_eq!(step, "kubeadm join");
    assert!(matches!(e, Error::CommandFailed { exit_code: Some(1), .. }), "{e}");
    // Nothing ran after the failed join script (its exit trap removed the token file).
    assert_eq!(fakes[2].commands().last().unwrap(), &rejoin_scripts("worker-3")[1]);
    let table = report.to_string();
    assert!(table.lines().nth(3).unwrap().starts_with("worker-3  rejoin  FAILED"), "{table}");
    assert!(table.contains("kubeadm join: command `kubeadm join --config /run/kdr/join-worker-3.yaml`"));
    assert!(!table.contains("0123456789abcdef"));
}

#[tokio::test(start_paused = true)]
async fn waits_poll_until_the_condition_then_time_out_naming_the_last_observation() {
    let (fakes, targets) = workers(&["worker-1"]);
    fakes[0].respond("systemctl is-active", Reply::exit(3, "activating\n", ""));
    let ready = ScriptedReadiness::default();
    let cfg = config();
    let report = recover_workers(&targets, &rewire_plan(), &cfg, &ready, &clock()).await;
    let (step, e) = report.results[0].error.as_ref().unwrap();
    assert_eq!(step, "kubelet active");
    match e {
        Error::Timeout { what, after } => {
            assert_eq!(*after, cfg.kubelet_active_timeout);
            assert!(what.contains("exit 3 activating"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    // Polled every poll_interval for the whole timeout: 3 s / 100 ms.
    let polls = fakes[0].commands().iter().filter(|c| *c == "systemctl is-active kubelet").count();
    assert!((29..=31).contains(&polls), "{polls} polls");
}

#[tokio::test(start_paused = true)]
async fn a_node_that_never_becomes_ready_times_out() {
    let (_fakes, targets) = workers(&["worker-1"]);
    let ready =
        ScriptedReadiness::default().script("worker-1", &[NodeState::NotReady("KubeletNotReady".into())]);
    let report = recover_workers(&targets, &rewire_plan(), &config(), &ready, &clock()).await;
    let (step, e) = report.results[0].error.as_ref().unwrap();
    assert_eq!(step, "Node Ready");
    assert!(matches!(e, Error::Timeout { what, .. } if what.contains("KubeletNotReady")), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_stale_ready_node_blocks_the_join() {
    let (fakes, targets) = workers(&["worker-1"]);
    let ready = ScriptedReadiness::default().script("worker-1", &[NodeState::Ready]);
    let report = recover_workers(&targets, &rejoin_plan(), &config(), &ready, &clock()).await;
    assert_eq!(report.results[0].error.as_ref().unwrap().0, "stale Node object NotReady");
    assert!(!fakes[0].commands().iter().any(|c| c.contains("kubeadm join")));
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let names: Vec<String> = (1..=7).map(|i| format!("worker-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_fakes, targets) = workers(&names);
    let ready = ScriptedReadiness::default();
    let cfg = WorkerRecoveryConfig { concurrency: 3, ..config() };
    let report = recover_workers(&targets, &rewire_plan(), &cfg, &ready, &clock()).await;
    report.check().unwrap();
    assert_eq!(ready.max_in_flight.load(Ordering::SeqCst), 3);
    let order: Vec<&str> = report.results.iter().map(|r| r.worker.as_str()).collect();
    assert_eq!(order, names, "results come back in input order");
}

#[tokio::test]
async fn a_bad_rewire_endpoint_fails_every_worker_before_any_command() {
    let (fakes, targets) = workers(&["worker-1"]);
    for bad in ["http://10.0.0.9:6443", "https://10.0.0.9", "https://h:6443#x", "https://h:6443/'"] {
        let plan = RecoveryPlan::Rewire { endpoint: bad.into() };
        let report =
            recover_workers(&targets, &plan, &config(), &ScriptedReadiness::default(), &clock()).await;
        let (step, e) = report.results[0].error.as_ref().unwrap();
        assert_eq!(step, "input");
        assert!(matches!(e, Error::Config { .. }), "{bad}: {e}");
    }
    assert!(fakes[0].calls().is_empty());
}

#[test]
fn config_defaults_and_worker_overrides() {
    let c: WorkerRecoveryConfig = toml::from_str("mode = \"rejoin\"\nconcurrency = 4").unwrap();
    assert_eq!((c.mode, c.concurrency), (RecoveryMode::Rejoin, 4));
    assert_eq!(c.node_ready_timeout, Duration::from_secs(300));
    assert_eq!(toml::from_str::<WorkerRecoveryConfig>("").unwrap(), WorkerRecoveryConfig::default());
    let w: WorkerConfig = toml::from_str("name = \"w1\"\nhost = \"10.0.0.1\"\nport = 2222").unwrap();
    let t = w.ssh_target(&SshConfig { user: "kube".into(), ..Default::default() });
    assert_eq!((t.name.as_str(), t.port, t.user.as_str()), ("w1", 2222, "kube"));
    assert!(toml::from_str::<WorkerConfig>("name = \"w\"\nhost = \"h\"\npassword = \"x\"").is_err());
}
