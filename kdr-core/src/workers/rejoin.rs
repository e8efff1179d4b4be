//! `kdr rejoin`: one-off worker recovery from the config file, run on the new control plane.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    JoinCommand, KubectlReadiness, RecoveryMode, RecoveryPlan, RecoveryReport, WorkerConfig, WorkerTarget,
    recover_workers,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::process::{GroupChild, TimedOut};
use crate::remote::{NodeRemote, SshNodeRemote};

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

/// Recovers the requested workers as configured (`[ssh]`, `[[workers]]`, `[worker_recovery]`), with [`KubectlReadiness`] run locally (kdr runs
/// on the new control plane). Returns the report; the caller prints it and calls
/// [`RecoveryReport::check`]. Input errors (unknown worker, missing endpoint, bad key file) are
/// returned before any worker is touched.
pub async fn recover_from_config(
    cfg: &Config,
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
            cmd.args(args)
                .arg(kubeconfig)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let child = GroupChild::spawn(&mut cmd).map_err(|e| Error::io(format!("running {shown}"), e))?;
            let out = match child.output(None, Duration::from_secs(60)).await {
                Err(TimedOut) => return Err(Error::Timeout { what: shown, after: Duration::from_secs(60) }),
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
        [cluster]
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
    fn parses_the_recovery_sections() {
        let c = Config::from_toml(CONFIG, "kdr.toml").unwrap();
        assert_eq!(c.ssh.user, "kube");
        assert_eq!(c.workers.len(), 2);
        assert_eq!(c.workers[1].ssh_target(&c.ssh).port, 2222);
        assert_eq!(c.worker_recovery.mode, RecoveryMode::Rejoin);
        let e =
            Config::from_toml("[worker_recovery]\nmode = \"reboot\"", "kdr.toml").unwrap_err().to_string();
        assert!(e.contains("reboot"), "{e}");
        let twice = "[[workers]]\nname = \"w\"\nhost = \"a\"\n[[workers]]\nname = \"w\"\nhost = \"b\"";
        let e = Config::from_toml(twice, "kdr.toml").unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "workers in kdr.toml"), "{e}");
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    #[test]
    fn selects_named_workers_or_all() {
        let c = Config::from_toml(CONFIG, "kdr.toml").unwrap();
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
        let c = Config::from_toml(CONFIG, "kdr.toml").unwrap();
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
