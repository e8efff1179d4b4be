//! `kdr rejoin`: one-off worker recovery from the config file, run on the new control plane.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{
    JoinCommand, KubectlReadiness, RecoveryMode, RecoveryPlan, RecoveryReport, WorkerConfig,
    WorkerRecoveryConfig, WorkerTarget, recover_workers,
};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::remote::{NodeRemote, SshConfig, SshNodeRemote};

/// The sections of kdr's config file that worker recovery reads (`[ssh]`, `[[workers]]`,
/// `[worker_recovery]`). Other sections of the shared file are ignored here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RecoveryFileConfig {
    /// `[ssh]`.
    #[serde(default)]
    pub ssh: SshConfig,
    /// `[[workers]]`.
    #[serde(default)]
    pub workers: Vec<WorkerConfig>,
    /// `[worker_recovery]`.
    #[serde(default)]
    pub worker_recovery: WorkerRecoveryConfig,
}

impl RecoveryFileConfig {
    /// Reads and parses `path`. A syntax error or a wrong value is [`Error::Config`] naming the
    /// file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config("--config", format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config { key, reason } => Error::config(format!("{key} in {}", path.display()), reason),
            e => e,
        })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::config("config", e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for w in &cfg.workers {
            if !seen.insert(w.name.as_str()) {
                return Err(Error::config("workers", format!("worker {:?} is listed twice", w.name)));
            }
        }
        Ok(cfg)
    }
}

/// Where the join command (with its token) comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinSource {
    /// Create a fresh token on this control plane:
    /// `kubeadm token create --print-join-command --ttl TTL --kubeconfig KUBECONFIG`.
    CreateToken {
        /// The kubeadm binary.
        kubeadm: String,
        /// The admin kubeconfig.
        kubeconfig: PathBuf,
        /// How long the token stays valid.
        ttl: Duration,
    },
    /// Read it from a file (root-only, holding `kubeadm join ...`): never from argv.
    File(PathBuf),
}

/// What `kdr rejoin` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// Worker names to recover; empty means every `[[workers]]` entry.
    pub workers: Vec<String>,
    /// Overrides `worker_recovery.mode`.
    pub mode: Option<RecoveryMode>,
    /// Overrides `worker_recovery.endpoint` (rewire).
    pub endpoint: Option<String>,
    /// Where a rejoin gets its join command.
    pub join: JoinSource,
}

/// Recovers the requested workers as configured, with [`KubectlReadiness`] run locally (kdr runs
/// on the new control plane). Returns the report; the caller prints it and calls
/// [`RecoveryReport::check`]. Input errors (unknown worker, missing endpoint, bad key file) are
/// returned before any worker is touched.
pub async fn recover_from_config(
    cfg: &RecoveryFileConfig,
    req: &RecoveryRequest,
    clock: &dyn Clock,
) -> Result<RecoveryReport> {
    let selected = select_workers(&cfg.workers, &req.workers)?;
    let mode = req.mode.unwrap_or(cfg.worker_recovery.mode);
    let plan = match mode {
        RecoveryMode::Rewire => {
            let endpoint = req.endpoint.clone().or_else(|| cfg.worker_recovery.endpoint.clone()).ok_or_else(|| {
                Error::config(
                    "worker_recovery.endpoint",
                    "rewire needs the new API server URL (e.g. https://10.0.0.5:6443): set it or pass --endpoint",
                )
            })?;
            RecoveryPlan::Rewire { endpoint }
        }
        RecoveryMode::Rejoin => RecoveryPlan::Rejoin { join: join_command(&req.join).await? },
    };
    plan.validate()?;
    let mut targets = Vec::with_capacity(selected.len());
    for w in selected {
        let remote: Arc<dyn NodeRemote> = Arc::new(SshNodeRemote::new(w.ssh_target(&cfg.ssh))?);
        targets.push(WorkerTarget { name: w.name.clone(), remote });
    }
    let rc = &cfg.worker_recovery;
    let readiness = KubectlReadiness::local(&rc.kubectl, &rc.admin_kubeconfig);
    Ok(recover_workers(&targets, &plan, rc, &readiness, clock).await)
}

fn select_workers<'a>(all: &'a [WorkerConfig], names: &[String]) -> Result<Vec<&'a WorkerConfig>> {
    if all.is_empty() {
        return Err(Error::config("workers", "no [[workers]] in the config: add one entry per worker node"));
    }
    if names.is_empty() {
        return Ok(all.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|w| &w.name == n).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
                Error::config(
                    "--worker",
                    format!("no worker named {n:?} in [[workers]] (known: {})", known.join(", ")),
                )
            })
        })
        .collect()
}

async fn join_command(source: &JoinSource) -> Result<JoinCommand> {
    match source {
        JoinSource::File(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| Error::io(format!("reading the join command file {}", path.display()), e))?;
            JoinCommand::parse(&text).map_err(|e| match e {
                Error::Config { reason, .. } => {
                    Error::config(format!("join command file {}", path.display()), reason)
                }
                e => e,
            })
        }
        JoinSource::CreateToken { kubeadm, kubeconfig, ttl } => {
            let ttl_arg = format!("{}s", ttl.as_secs().max(1));
            let args = ["token", "create", "--print-join-command", "--ttl", &ttl_arg, "--kubeconfig"];
            let shown = format!("{kubeadm} {} {}", args.join(" "), kubeconfig.display());
            tracing::info!(command = %shown, "creating a bootstrap token for the workers");
            let mut cmd = tokio::process::Command::new(kubeadm);
            cmd.args(args).arg(kubeconfig).stdin(std::process::Stdio::null()).kill_on_drop(true);
            let out = match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
                Err(_) => return Err(Error::Timeout { what: shown, after: Duration::from_secs(60) }),
                Ok(Err(e)) => return Err(Error::io(format!("running {shown}"), e)),
                Ok(Ok(out)) => out,
            };
            if !out.status.success() {
                return Err(Error::CommandFailed {
                    host: "localhost".into(),
                    command: shown,
                    exit_code: out.status.code(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            // stdout holds the token: parsed, never logged.
            JoinCommand::parse(&String::from_utf8_lossy(&out.stdout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        [cluster]              # another section of the shared file: ignored here
        name = "prod"

        [ssh]
        user = "kube"

        [[workers]]
        name = "worker-1"
        host = "192.168.30.201"

        [[workers]]
        name = "worker-2"
        host = "192.168.30.203"
        port = 2222

        [worker_recovery]
        mode = "rejoin"
    "#;

    #[test]
    fn parses_the_sections_and_ignores_the_others() {
        let c = RecoveryFileConfig::parse(CONFIG).unwrap();
        assert_eq!(c.ssh.user, "kube");
        assert_eq!(c.workers.len(), 2);
        assert_eq!(c.workers[1].ssh_target(&c.ssh).port, 2222);
        assert_eq!(c.worker_recovery.mode, RecoveryMode::Rejoin);
        let e = RecoveryFileConfig::parse("[worker_recovery]\nmode = \"reboot\"").unwrap_err().to_string();
        assert!(e.contains("reboot"), "{e}");
        let twice = "[[workers]]\nname = \"w\"\nhost = \"a\"\n[[workers]]\nname = \"w\"\nhost = \"b\"";
        assert!(RecoveryFileConfig::parse(twice).unwrap_err().to_string().contains("listed twice"));
    }

    #[test]
    fn selects_named_workers_or_all() {
        let c = RecoveryFileConfig::parse(CONFIG).unwrap();
        assert_eq!(select_workers(&c.workers, &[]).unwrap().len(), 2);
        let one = select_workers(&c.workers, &["worker-2".into()]).unwrap();
        assert_eq!(one[0].host, "192.168.30.203");
        let e = select_workers(&c.workers, &["worker-9".into()]).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid --worker: no worker named \"worker-9\" in [[workers]] (known: worker-1, worker-2)"
        );
        assert!(select_workers(&[], &[]).is_err());
    }

    #[tokio::test]
    async fn input_errors_come_before_touching_any_worker() {
        let c = RecoveryFileConfig::parse(CONFIG).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let req = RecoveryRequest {
            workers: vec![],
            mode: Some(RecoveryMode::Rewire),
            endpoint: None,
            join: JoinSource::File(dir.path().join("join")),
        };
        let e = recover_from_config(&c, &req, &crate::clock::SystemClock).await.unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "worker_recovery.endpoint"), "{e}");
        let req = RecoveryRequest { mode: None, ..req };
        let e = recover_from_config(&c, &req, &crate::clock::SystemClock).await.unwrap_err();
        assert!(matches!(&e, Error::Io { context, .. } if context.contains("join command file")), "{e}");
        std::fs::write(dir.path().join("join"), "kubeadm join h:6443 --token nope").unwrap();
        let e = recover_from_config(&c, &req, &crate::clock::SystemClock).await.unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key.starts_with("join command file")), "{e}");
        assert!(!e.to_string().contains("nope"), "the token is not echoed: {e}");
        // A valid join command but the default key file does not exist here: a config error.
        std::fs::write(
            dir.path().join("join"),
            "kubeadm join h:6443 --token abcdef.0123456789abcdef --discovery-token-unsafe-skip-ca-verification",
        )
        .unwrap();
        let mut c = c;
        c.ssh.key_file = dir.path().join("missing_key");
        let e = recover_from_config(&c, &req, &crate::clock::SystemClock).await.unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "ssh.key_file"), "{e}");
    }
}
