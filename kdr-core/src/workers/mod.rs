//! Worker recovery after a promotion: every worker, in parallel with bounded concurrency, in one
//! of two [`RecoveryMode`]s.
//!
//! - **rewire** (the cluster CA was preserved): back up `/etc/kubernetes/kubelet.conf`, rewrite
//!   its `server:` field to the new API server endpoint, restart kubelet. No reset: the pods keep
//!   running and the kubelet's client certificate stays valid.
//! - **rejoin** (seed 000's way, for a new CA): `kubeadm reset -f`, stop kubelet, *move aside*
//!   (never delete) `/etc/kubernetes`, `/var/lib/kubelet` and the CNI directories, restart
//!   containerd and kubelet, then `kubeadm join`. The join's bootstrap token reaches the worker as
//!   a `JoinConfiguration` on standard input, in a 0600 file under `/run` that is removed after
//!   the join; it is never on a command line or in a log.
//!
//! Instead of the seed's `sleep 240`, each step waits on a condition with a timeout and a poll
//! interval: the container runtime answering (`crictl info`), the restored (stale) Node object
//! no longer Ready before a join (kubeadm refuses to join a name whose Node is Ready), kubelet
//! active (`systemctl is-active kubelet`), and the Node Ready through the new control plane (a
//! pluggable [`NodeReadiness`]; [`KubectlReadiness`] by default).
//!
//! One worker failing does not stop the others. [`recover_workers`] returns a [`RecoveryReport`]
//! (a per-worker table of name, mode, result, duration and error); [`RecoveryReport::check`] turns
//! failures into one error naming the failed workers.
//!
//! Every command is explicit, quoted with [`shell_quote`] and logged (by the [`NodeRemote`]).
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::control_plane::JoinCommand;
use crate::error::{Error, Result};
use crate::remote::{CommandOutput, NodeRemote, RemoteCommand, SshConfig, SshTarget, shell_quote};
use crate::serde_duration;

mod kubectl;
mod rejoin;

pub use kubectl::KubectlReadiness;
pub use rejoin::{JoinSource, RecoveryRequest, recover_from_config};

/// How workers are brought under the new control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMode {
    /// Point the kubelet at the new endpoint and restart it (the CA was preserved).
    #[default]
    Rewire,
    /// Reset and join again (a new CA; destructive for the worker's pods).
    Rejoin,
}

impl fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecoveryMode::Rewire => "rewire",
            RecoveryMode::Rejoin => "rejoin",
        })
    }
}

/// One `[[workers]]` entry of the configuration.
///
/// ```toml
/// [[workers]]
/// name = "worker-1"          # the worker's Kubernetes Node name
/// host = "192.168.30.201"    # address kdr reaches it at over ssh
/// # port, user, key_file: override the [ssh] section for this worker
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The worker's Kubernetes Node name: checked for readiness, and the name a rejoin registers.
    pub name: String,
    /// Host name or address for ssh.
    pub host: String,
    /// SSH port, if not `[ssh] port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// SSH user, if not `[ssh] user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Private key file, if not `[ssh] key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl WorkerConfig {
    /// The ssh target for this worker: the `[ssh]` section with this entry's overrides.
    pub fn ssh_target(&self, ssh: &SshConfig) -> SshTarget {
        let mut t = ssh.target(&self.name, &self.host);
        if let Some(p) = self.port {
            t.port = p;
        }
        if let Some(u) = &self.user {
            t.user.clone_from(u);
        }
        if let Some(k) = &self.key_file {
            t.key_file.clone_from(k);
        }
        t
    }
}

/// The `[worker_recovery]` section: how workers are recovered. Every key has a default.
///
/// ```toml
/// [worker_recovery]
/// mode = "rewire"                 # or "rejoin"; the runbook picks rewire when the CA was restored
/// # endpoint = "https://10.0.0.5:6443"   # rewire target for `kdr rejoin` (no default)
/// concurrency = 10                # workers recovered at once
/// poll_interval = "2s"            # between two checks of a condition
/// command_timeout = "5m"          # each command (kubeadm reset/join can be slow)
/// runtime_ready_timeout = "2m"    # crictl info answers after restarting containerd
/// stale_node_timeout = "3m"       # the restored Node object goes NotReady before a rejoin
/// kubelet_active_timeout = "2m"   # systemctl is-active kubelet
/// node_ready_timeout = "5m"       # the Node Ready through the new control plane
/// kubelet_kubeconfig = "/etc/kubernetes/kubelet.conf"
/// move_aside = ["/etc/kubernetes", "/var/lib/kubelet", "/var/lib/cni", "/etc/cni"]
/// join_config_api_version = "kubeadm.k8s.io/v1beta3"   # v1beta4 for kubeadm >= 1.31
/// join_config_dir = "/run/kdr"    # tmpfs on the worker; the token file lives here during a join
/// kubectl = "kubectl"             # the kubectl that KubectlReadiness runs (on the control plane)
/// admin_kubeconfig = "/etc/kubernetes/admin.conf"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerRecoveryConfig {
    /// The recovery mode.
    pub mode: RecoveryMode,
    /// The API server URL workers are rewired to by `kdr rejoin` (the runbook derives it from the
    /// new control plane). No default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// How many workers are recovered at the same time (at least 1).
    pub concurrency: usize,
    /// The interval between two checks of a condition.
    #[serde(with = "serde_duration")]
    pub poll_interval: Duration,
    /// The timeout of each command run on a worker.
    #[serde(with = "serde_duration")]
    pub command_timeout: Duration,
    /// How long the container runtime may take to answer after containerd is restarted.
    #[serde(with = "serde_duration")]
    pub runtime_ready_timeout: Duration,
    /// How long to wait, before a rejoin, for the restored Node object to stop being Ready.
    #[serde(with = "serde_duration")]
    pub stale_node_timeout: Duration,
    /// How long kubelet may take to be active after a restart or join.
    #[serde(with = "serde_duration")]
    pub kubelet_active_timeout: Duration,
    /// How long the Node may take to be Ready through the new control plane.
    #[serde(with = "serde_duration")]
    pub node_ready_timeout: Duration,
    /// The kubelet's kubeconfig on workers (rewritten by rewire).
    pub kubelet_kubeconfig: PathBuf,
    /// Directories a rejoin moves aside (to `DIR.kdr-moved-STAMP`) before joining.
    pub move_aside: Vec<PathBuf>,
    /// The kubeadm API version of the JoinConfiguration sent to workers.
    pub join_config_api_version: String,
    /// Where on the worker the JoinConfiguration is written (root-only, removed after the join).
    pub join_config_dir: PathBuf,
    /// The kubectl binary [`KubectlReadiness`] runs.
    pub kubectl: String,
    /// The kubeconfig [`KubectlReadiness`] uses (the new control plane's admin.conf).
    pub admin_kubeconfig: PathBuf,
}

impl Default for WorkerRecoveryConfig {
    fn default() -> Self {
        Self {
            mode: RecoveryMode::Rewire,
            endpoint: None,
            concurrency: 10,
            poll_interval: Duration::from_secs(2),
            command_timeout: Duration::from_secs(300),
            runtime_ready_timeout: Duration::from_secs(120),
            stale_node_timeout: Duration::from_secs(180),
            kubelet_active_timeout: Duration::from_secs(120),
            node_ready_timeout: Duration::from_secs(300),
            kubelet_kubeconfig: PathBuf::from("/etc/kubernetes/kubelet.conf"),
            move_aside: ["/etc/kubernetes", "/var/lib/kubelet", "/var/lib/cni", "/etc/cni"]
                .map(PathBuf::from)
                .to_vec(),
            join_config_api_version: "kubeadm.k8s.io/v1beta3".into(),
            join_config_dir: PathBuf::from("/run/kdr"),
            kubectl: "kubectl".into(),
            admin_kubeconfig: PathBuf::from("/etc/kubernetes/admin.conf"),
        }
    }
}

/// What the new control plane says about a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// The Node's Ready condition is True.
    Ready,
    /// Not Ready, absent, or unknown; the text says what was seen.
    NotReady(String),
}

/// Asks the (new) control plane whether a Node is Ready. The runbook supplies it;
/// [`KubectlReadiness`] is the default.
#[async_trait]
pub trait NodeReadiness: Send + Sync + fmt::Debug {
    /// The state of Node `node`. `Err` only when the question could not be asked at all (a
    /// transient [`Error::Unavailable`] is retried by the caller until its timeout).
    async fn node_state(&self, node: &str) -> Result<NodeState>;
}

/// What to do to the workers.
#[derive(Clone, Debug)]
pub enum RecoveryPlan {
    /// Rewire each worker's kubelet to `endpoint` (`https://HOST:PORT`).
    Rewire {
        /// The new API server URL.
        endpoint: String,
    },
    /// Reset and join each worker with `join`.
    Rejoin {
        /// The join command (its token never leaves it except on a worker's stdin).
        join: JoinCommand,
    },
}

impl RecoveryPlan {
    /// The plan's mode.
    pub fn mode(&self) -> RecoveryMode {
        match self {
            RecoveryPlan::Rewire { .. } => RecoveryMode::Rewire,
            RecoveryPlan::Rejoin { .. } => RecoveryMode::Rejoin,
        }
    }

    /// Checks the plan's input: a rewire endpoint must be `https://HOST:PORT` with nothing a shell
    /// or `sed` could misread.
    pub fn validate(&self) -> Result<()> {
        if let RecoveryPlan::Rewire { endpoint } = self {
            let ok = endpoint.strip_prefix("https://").is_some_and(|rest| {
                !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
                    && rest.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            });
            if !ok {
                return Err(Error::config(
                    "rewire endpoint",
                    format!("{endpoint:?} is not an API server URL like https://10.0.0.5:6443"),
                ));
            }
        }
        Ok(())
    }
}

/// A worker to recover: its Node name and how to run commands on it.
#[derive(Clone, Debug)]
pub struct WorkerTarget {
    /// The Kubernetes Node name (also used in the result table).
    pub name: String,
    /// Runs commands on the worker.
    pub remote: Arc<dyn NodeRemote>,
}

/// One worker's outcome.
#[derive(Debug)]
pub struct WorkerResult {
    /// The worker's name.
    pub worker: String,
    /// The mode it was recovered in.
    pub mode: RecoveryMode,
    /// How long its recovery took.
    pub duration: Duration,
    /// `None` if it recovered; else the step that failed and why.
    pub error: Option<(String, Error)>,
}

impl WorkerResult {
    /// Whether the worker recovered.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The per-worker results of a recovery, in the order the workers were given.
#[derive(Debug)]
pub struct RecoveryReport {
    /// One entry per worker.
    pub results: Vec<WorkerResult>,
}

impl RecoveryReport {
    /// The names of the workers that failed.
    pub fn failed(&self) -> Vec<&str> {
        self.results.iter().filter(|r| !r.ok()).map(|r| r.worker.as_str()).collect()
    }

    /// `Ok` if every worker recovered; else an [`Error::Unavailable`] naming the failed workers
    /// and their first errors, and saying how to retry just them.
    pub fn check(&self) -> Result<()> {
        let failed: Vec<&WorkerResult> = self.results.iter().filter(|r| !r.ok()).collect();
        if failed.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = failed.iter().map(|r| r.worker.as_str()).collect();
        let details: Vec<String> = failed
            .iter()
            .filter_map(|r| r.error.as_ref().map(|(step, e)| format!("{} at {step}: {e}", r.worker)))
            .collect();
        let retry: String = names.iter().map(|n| format!(" --worker {}", shell_quote(n))).collect();
        Err(Error::unavailable(
            format!(
                "worker recovery failed on {} of {} workers ({}); fix them, then re-run for just those \
                 with `kdr rejoin --config FILE{retry}`",
                failed.len(),
                self.results.len(),
                names.join(", ")
            ),
            details.join("; "),
        ))
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.results.iter().map(|r| r.worker.len()).chain([6]).max().unwrap_or(6);
        writeln!(f, "{:<w$}  {:<6}  {:<6}  {:>9}  ERROR", "WORKER", "MODE", "RESULT", "DURATION")?;
        for r in &self.results {
            let (result, err) = match &r.error {
                None => ("ok", String::new()),
                Some((step, e)) => ("FAILED", format!("{step}: {e}")),
            };
            let err = err.replace('\n', " ");
            let dur = format!("{:.1}s", r.duration.as_secs_f64());
            let line = format!("{:<w$}  {:<6}  {:<6}  {dur:>9}  {err}", r.worker, r.mode.to_string(), result);
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Recovers `workers` per `plan`, at most `config.concurrency` at a time. Never fails as a whole:
/// each worker's outcome is in the report (see [`RecoveryReport::check`]).
///
/// `clock` stamps the moved-aside directories and times each worker.
pub async fn recover_workers(
    workers: &[WorkerTarget],
    plan: &RecoveryPlan,
    config: &WorkerRecoveryConfig,
    readiness: &dyn NodeReadiness,
    clock: &dyn Clock,
) -> RecoveryReport {
    let stamp = clock.utc().format("%Y%m%dT%H%M%SZ").to_string();
    if let RecoveryPlan::Rejoin { join } = plan {
        tracing::info!(join = %join.redacted(), workers = workers.len(), "rejoining workers");
    }
    // Indices, not references, go through the closure: a closure over `&WorkerTarget` makes the
    // future's `Send` unprovable (rust-lang/rust#102211), and callers such as the runbook need it.
    let mut results: Vec<(usize, WorkerResult)> = futures::stream::iter(0..workers.len())
        .map(|i| {
            let w = &workers[i];
            let stamp = stamp.as_str();
            async move {
                let started = clock.instant();
                let run = Recovery { worker: w, config, readiness, stamp };
                let error = match plan.validate() {
                    Err(e) => Some(("input".to_owned(), e)),
                    Ok(()) => match plan {
                        RecoveryPlan::Rewire { endpoint } => run.rewire(endpoint).await.err(),
                        RecoveryPlan::Rejoin { join } => run.rejoin(join).await.err(),
                    },
                };
                let duration = clock.instant().saturating_duration_since(started);
                match &error {
                    None => tracing::info!(worker = %w.name, mode = %plan.mode(), ?duration, "worker recovered"),
                    Some((step, e)) => {
                        tracing::error!(worker = %w.name, mode = %plan.mode(), step, error = %e, "worker failed")
                    }
                }
                (i, WorkerResult { worker: w.name.clone(), mode: plan.mode(), duration, error })
            }
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    RecoveryReport { results: results.into_iter().map(|(_, r)| r).collect() }
}

/// A failure at a named step.
type StepResult<T = ()> = std::result::Result<T, (String, Error)>;

struct Recovery<'a> {
    worker: &'a WorkerTarget,
    config: &'a WorkerRecoveryConfig,
    readiness: &'a dyn NodeReadiness,
    stamp: &'a str,
}

impl Recovery<'_> {
    fn node(&self) -> &str {
        &self.worker.name
    }

    fn cmd(&self, line: String) -> RemoteCommand {
        RemoteCommand::new(line, self.config.command_timeout).with_sudo()
    }

    /// Runs `steps` as one root shell script (one ssh round trip instead of one per step), each
    /// step announced on stdout by a `kdr-step: NAME` line so that a failure is attributed to
    /// the step that failed. `set -e` stops at the first failing step. `prologue` runs first
    /// (e.g. a cleanup trap). The whole script is logged by the [`NodeRemote`].
    async fn script(
        &self,
        prologue: &str,
        steps: &[(&str, String)],
        stdin: Option<&[u8]>,
    ) -> StepResult<CommandOutput> {
        let mut line = String::from("set -e\n");
        line.push_str(prologue);
        for (name, command) in steps {
            line.push_str(&format!("echo {}; {command}\n", shell_quote(&format!("{STEP_MARK}{name}"))));
        }
        let first = steps.first().map(|(n, _)| *n).unwrap_or("script");
        tracing::info!(worker = self.node(), steps = ?steps.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "running steps");
        let c = self.cmd(line);
        let out = match stdin {
            Some(data) => self.worker.remote.run_with_stdin(&c, data).await,
            None => self.worker.remote.run(&c).await,
        }
        .map_err(|e| (first.to_owned(), e))?;
        if out.success() {
            return Ok(out);
        }
        let step =
            out.stdout.lines().rev().find_map(|l| l.strip_prefix(STEP_MARK)).unwrap_or(first).to_owned();
        let command = steps.iter().find(|(n, _)| *n == step).map(|(_, c)| c.clone()).unwrap_or_default();
        let failed = RemoteCommand { command, ..c };
        Err((step, out.check(self.node(), &failed).expect_err("a failed script")))
    }

    async fn rewire(&self, endpoint: &str) -> StepResult {
        let kubeconfig = self.config.kubelet_kubeconfig.to_string_lossy().into_owned();
        let q = shell_quote(&kubeconfig);
        let backup = shell_quote(&format!("{kubeconfig}.kdr-{}", self.stamp));
        let sed = format!("s#^([[:space:]]*server:[[:space:]]*).*$#\\1{endpoint}#");
        let steps = [
            (READ_KUBECONFIG, format!("grep -E '^[[:space:]]*server:' {q}")),
            ("back up kubelet kubeconfig", format!("cp -p {q} {backup}")),
            ("rewrite kubelet kubeconfig", format!("sed -i -E {} {q}", shell_quote(&sed))),
            ("restart kubelet", "systemctl restart kubelet".into()),
        ];
        tracing::info!(worker = self.node(), to = endpoint, "rewiring kubelet");
        self.script("", &steps, None).await.map_err(|(step, e)| {
            if step != READ_KUBECONFIG || !matches!(e, Error::CommandFailed { .. }) {
                return (step, e);
            }
            let hint = format!(
                "{kubeconfig} has no server: line or is missing (was this worker ever joined, or was it reset? \
                 then use mode rejoin); {e}"
            );
            (step, Error::NotFound { what: format!("kubelet kubeconfig on {}", self.node()), hint: Some(hint) })
        })?;
        self.wait_kubelet_active().await?;
        self.wait_node_ready().await
    }

    async fn rejoin(&self, join: &JoinCommand) -> StepResult {
        let mut steps = vec![
            ("kubeadm reset", "kubeadm reset -f".to_owned()),
            ("stop kubelet", "systemctl stop kubelet".into()),
        ];
        let moves: Vec<(String, String)> = self
            .config
            .move_aside
            .iter()
            .map(|dir| {
                let d = dir.to_string_lossy();
                let (from, to) = (shell_quote(&d), shell_quote(&format!("{d}.kdr-moved-{}", self.stamp)));
                let line = format!(
                    "if [ -e {from} ]; then if [ -e {to} ]; then echo {to} already exists >&2; exit 1; fi; \
                     mv {from} {to}; fi"
                );
                (format!("move aside {d}"), line)
            })
            .collect();
        steps.extend(moves.iter().map(|(n, l)| (n.as_str(), l.clone())));
        steps.push(("restart containerd", "systemctl restart containerd".into()));
        self.script("", &steps, None).await?;
        self.wait_until("container runtime ready", self.config.runtime_ready_timeout, || async {
            let out = self.worker.remote.run(&self.cmd("crictl info".into())).await?;
            Ok(if out.success() { None } else { Some(format!("crictl info: {}", last_line(&out))) })
        })
        .await?;
        // kubeadm refuses to join a name whose Node object is Ready; the restored one is stale
        // (its kubelet is stopped, and cannot reach the new control plane anyway).
        self.wait_until("stale Node object NotReady", self.config.stale_node_timeout, || async {
            Ok(match self.readiness.node_state(self.node()).await? {
                NodeState::Ready => Some("the restored Node object still reports Ready".into()),
                NodeState::NotReady(_) => None,
            })
        })
        .await?;
        self.join(join).await?;
        self.wait_kubelet_active().await?;
        self.wait_node_ready().await
    }

    /// Starts kubelet, writes the JoinConfiguration (with the token) from stdin into a root-only
    /// file, and joins with it; an exit trap removes the file whatever the outcome.
    async fn join(&self, join: &JoinCommand) -> StepResult {
        let dir = self.config.join_config_dir.to_string_lossy().into_owned();
        let file = format!("{dir}/join-{}.yaml", self.node());
        let (qdir, qfile) = (shell_quote(&dir), shell_quote(&file));
        let doc = join.join_configuration(&self.config.join_config_api_version, self.node());
        tracing::info!(worker = self.node(), join = %join.redacted(), "joining");
        let steps = [
            ("start kubelet", "systemctl start kubelet".to_owned()),
            ("write join configuration", format!("umask 077; mkdir -p {qdir}; cat > {qfile}")),
            ("kubeadm join", format!("kubeadm join --config {qfile}")),
        ];
        let prologue = format!("trap {} EXIT\n", shell_quote(&format!("rm -f {qfile}")));
        self.script(&prologue, &steps, Some(doc.as_bytes())).await.map(drop)
    }

    async fn wait_kubelet_active(&self) -> StepResult {
        self.wait_until("kubelet active", self.config.kubelet_active_timeout, || async {
            let out = self.worker.remote.run(&self.cmd("systemctl is-active kubelet".into())).await?;
            Ok(if out.success() {
                None
            } else {
                Some(format!("systemctl is-active kubelet: {}", last_line(&out)))
            })
        })
        .await
    }

    async fn wait_node_ready(&self) -> StepResult {
        self.wait_until("Node Ready", self.config.node_ready_timeout, || async {
            Ok(match self.readiness.node_state(self.node()).await? {
                NodeState::Ready => None,
                NodeState::NotReady(why) => Some(why),
            })
        })
        .await
    }

    /// Polls `probe` every `poll_interval` until it returns `Ok(None)` (the condition holds) or
    /// `timeout` passes. `Ok(Some(why))` and retryable errors keep polling; other errors stop.
    async fn wait_until<F, Fut>(&self, step: &str, timeout: Duration, mut probe: F) -> StepResult
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<String>>>,
    {
        tracing::info!(worker = self.node(), step, ?timeout, "waiting");
        let mut last = String::from("not checked yet");
        let polling = async {
            loop {
                match probe().await {
                    Ok(None) => return Ok(()),
                    Ok(Some(why)) => last = why,
                    Err(e) if e.is_retryable() => last = e.to_string(),
                    Err(e) => return Err(e),
                }
                tracing::debug!(worker = self.node(), step, last = %last, "condition not met yet");
                tokio::time::sleep(self.config.poll_interval).await;
            }
        };
        match tokio::time::timeout(timeout, polling).await {
            Ok(r) => r.map_err(|e| (step.to_owned(), e)),
            Err(_) => Err((
                step.to_owned(),
                Error::Timeout {
                    what: format!("waiting for {step} on {} (last: {last})", self.node()),
                    after: timeout,
                },
            )),
        }
    }
}

/// Announces a step on stdout inside a step script.
const STEP_MARK: &str = "kdr-step: ";
const READ_KUBECONFIG: &str = "read kubelet kubeconfig";

fn last_line(out: &CommandOutput) -> String {
    let text = if out.stderr.trim().is_empty() { &out.stdout } else { &out.stderr };
    let line = text.trim().lines().last().unwrap_or("").to_owned();
    match out.exit_code {
        Some(c) => format!("exit {c} {line}"),
        None => format!("killed {line}"),
    }
}

#[cfg(test)]
mod tests;
