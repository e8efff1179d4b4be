//! [`KubectlReadiness`]: [`NodeReadiness`] through `kubectl wait` on the new control plane.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{NodeReadiness, NodeState};
use crate::error::{Error, Result};
use crate::process::{GroupChild, TimedOut};
use crate::remote::{NodeRemote, RemoteCommand, shell_quote};

/// Asks the new control plane whether a Node is Ready by running
/// `kubectl --kubeconfig ADMIN wait --for=condition=Ready --timeout=0s node/NAME` (one check, no
/// waiting: exit 0 if Ready; non-zero if not Ready, absent, or the API server did not answer).
///
/// It runs either on the control-plane host through a [`NodeRemote`] (as root), or locally when
/// kdr runs on the control plane itself.
#[derive(Debug, Clone)]
pub struct KubectlReadiness {
    kubectl: String,
    kubeconfig: PathBuf,
    runner: Runner,
    timeout: Duration,
}

#[derive(Debug, Clone)]
enum Runner {
    Local,
    Remote(Arc<dyn NodeRemote>),
}

impl KubectlReadiness {
    /// Runs `kubectl` locally (kdr on the new control plane) with `kubeconfig`.
    pub fn local(kubectl: impl Into<String>, kubeconfig: impl Into<PathBuf>) -> Self {
        Self {
            kubectl: kubectl.into(),
            kubeconfig: kubeconfig.into(),
            runner: Runner::Local,
            timeout: Duration::from_secs(30),
        }
    }

    /// Runs `kubectl` on the control-plane host behind `remote`, through sudo.
    pub fn remote(
        remote: Arc<dyn NodeRemote>,
        kubectl: impl Into<String>,
        kubeconfig: impl Into<PathBuf>,
    ) -> Self {
        Self {
            kubectl: kubectl.into(),
            kubeconfig: kubeconfig.into(),
            runner: Runner::Remote(remote),
            timeout: Duration::from_secs(30),
        }
    }

    /// The timeout of one kubectl call (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn args(&self, node: &str) -> Vec<String> {
        vec![
            "--kubeconfig".into(),
            self.kubeconfig.to_string_lossy().into_owned(),
            "wait".into(),
            "--for=condition=Ready".into(),
            "--timeout=0s".into(),
            format!("node/{node}"),
        ]
    }
}

#[async_trait]
impl NodeReadiness for KubectlReadiness {
    async fn node_state(&self, node: &str) -> Result<NodeState> {
        let args = self.args(node);
        let (code, stderr) = match &self.runner {
            Runner::Remote(remote) => {
                let line = std::iter::once(self.kubectl.as_str())
                    .chain(args.iter().map(String::as_str))
                    .map(shell_quote)
                    .collect::<Vec<_>>()
                    .join(" ");
                let out = remote.run(&RemoteCommand::new(line, self.timeout).with_sudo()).await?;
                (out.exit_code, out.stderr)
            }
            Runner::Local => {
                let mut cmd = tokio::process::Command::new(&self.kubectl);
                cmd.args(&args)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                let what = format!("running {} on the control plane", self.kubectl);
                let child = GroupChild::spawn(&mut cmd).map_err(|e| Error::io(what.clone(), e))?;
                let out = match child.output(None, self.timeout).await {
                    Err(TimedOut) => return Err(Error::Timeout { what, after: self.timeout }),
                    Ok(Err(e)) => return Err(Error::io(what, e)),
                    Ok(Ok(out)) => out,
                };
                (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
            }
        };
        Ok(if code == Some(0) {
            NodeState::Ready
        } else {
            let why = stderr.trim().lines().last().unwrap_or("").to_owned();
            NodeState::NotReady(format!("kubectl wait node/{node}: exit {code:?} {why}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::remote::{RecordingNodeRemote, Reply};

    #[tokio::test]
    async fn exit_code_decides_and_the_command_is_exact() {
        let cp = Arc::new(RecordingNodeRemote::new("master-2"));
        let r = KubectlReadiness::remote(cp.clone(), "kubectl", "/etc/kubernetes/admin.conf");
        assert_eq!(r.node_state("worker-1").await.unwrap(), NodeState::Ready);
        cp.respond(
            "kubectl",
            Reply::exit(1, "", "error: timed out waiting for the condition on nodes/worker-1\n"),
        );
        match r.node_state("worker-1").await.unwrap() {
            NodeState::NotReady(why) => assert!(why.contains("timed out waiting"), "{why}"),
            s => panic!("{s:?}"),
        }
        assert_eq!(
            cp.commands()[0],
            "kubectl --kubeconfig /etc/kubernetes/admin.conf wait --for=condition=Ready --timeout=0s node/worker-1"
        );
    }

    #[tokio::test]
    async fn local_kubectl_missing_is_an_io_error_naming_it() {
        let r = KubectlReadiness::local("/nonexistent/kubectl", "/etc/kubernetes/admin.conf");
        let e = r.node_state("w").await.unwrap_err();
        assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/nonexistent/kubectl"), "{e}");
    }
}
