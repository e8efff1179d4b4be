//! [`WitnessProbe`]: asks a worker, through [`NodeRemote`], whether *it* reaches the primary.
//!
//! Orchestrator and MHA only call a primary dead when its replicas agree; here the workers are
//! the witnesses. A witness that still reaches the primary vetoes the failover; a witness that
//! cannot be asked is "unknown" (and a majority of unknown witnesses means the standby itself is
//! cut off).
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{HealthProbe, ProbeResult};
use crate::remote::{NodeRemote, RemoteCommand, shell_quote};

/// Runs a probe command on a witness node. The command's exit code is the verdict:
///
/// | exit | verdict |
/// | --- | --- |
/// | 0 | up: the witness reaches the primary |
/// | 1 | down: it does not |
/// | anything else, killed, or the node unreachable/timed out | unknown |
#[derive(Debug, Clone)]
pub struct WitnessProbe {
    id: String,
    name: String,
    remote: Arc<dyn NodeRemote>,
    command: RemoteCommand,
}

impl WitnessProbe {
    /// A witness `id` (as in `detector.witnesses`) running `command` on `remote`. The command's
    /// own timeout is the probe's timeout.
    pub fn new(id: impl Into<String>, remote: Arc<dyn NodeRemote>, command: RemoteCommand) -> Self {
        let id = id.into();
        Self { name: format!("witness {id} ({})", remote.node()), id, remote, command }
    }

    /// A witness that fetches the primary's API server health with the worker's `curl`,
    /// verifying it against `ca_path` on the worker (kubeadm workers have the cluster CA at
    /// `/etc/kubernetes/pki/ca.crt`). curl's "could not connect", "timed out", TLS-handshake and
    /// HTTP-error exits mean down; a missing curl or anything else means unknown.
    pub fn api_healthz(
        id: impl Into<String>,
        remote: Arc<dyn NodeRemote>,
        url: &str,
        ca_path: &str,
        timeout: Duration,
    ) -> Self {
        // curl gives up at half the probe's budget, so that a slow primary reads as "down" (curl
        // exit 28), not as an unreachable witness: the other half is the SSH side, a round trip
        // on the cached connection or, after one was dropped, a new handshake and login. With
        // 80 % for curl, a reconnect overran the budget, the witness read unknown, and the
        // drill's detection took three times dead_after.
        let max_time = (timeout.as_secs_f64() * 0.5).max(0.2);
        let command = format!(
            "curl -sf -o /dev/null --max-time {max_time:.1} --cacert {} {}; rc=$?; \
             case $rc in 0) exit 0;; 7|22|28|35|52|56) exit 1;; *) echo \"curl exit $rc\" >&2; exit 3;; esac",
            shell_quote(ca_path),
            shell_quote(url)
        );
        Self::new(id, remote, RemoteCommand::new(command, timeout).quietly())
    }

    /// The witness id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

#[async_trait]
impl HealthProbe for WitnessProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.command.timeout
    }

    async fn probe(&self) -> ProbeResult {
        match self.remote.run(&self.command).await {
            Ok(out) => match out.exit_code {
                Some(0) => ProbeResult::up(format!("{}: reaches the primary", self.name)),
                Some(1) => ProbeResult::down(format!("{}: does not reach the primary", self.name)),
                code => ProbeResult::unknown(format!(
                    "{}: probe command exited {code:?}: {}",
                    self.name,
                    out.stderr.trim().chars().take(300).collect::<String>()
                )),
            },
            Err(e) => ProbeResult::unknown(format!("{}: cannot ask the witness: {e}", self.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::health::ProbeStatus;
    use crate::remote::{CommandOutput, MockNodeRemote};

    type Outcome = fn() -> crate::Result<CommandOutput>;

    fn remote(result: Outcome) -> Arc<dyn NodeRemote> {
        let mut m = MockNodeRemote::new();
        m.expect_node().return_const("worker-1".to_owned());
        m.expect_run().returning(move |_| result());
        Arc::new(m)
    }

    fn exit(code: Option<i32>) -> crate::Result<CommandOutput> {
        Ok(CommandOutput { exit_code: code, stdout: String::new(), stderr: "curl exit 6".into() })
    }

    #[tokio::test]
    async fn exit_codes_and_remote_failures_map_to_verdicts() {
        let t = Duration::from_secs(3);
        let cmd = || RemoteCommand::new("true", t);
        let cases: [(Outcome, ProbeStatus); 5] = [
            (|| exit(Some(0)), ProbeStatus::Up),
            (|| exit(Some(1)), ProbeStatus::Down),
            (|| exit(Some(3)), ProbeStatus::Unknown),
            (|| exit(None), ProbeStatus::Unknown),
            (
                || Err(Error::unavailable("ssh worker-1", std::io::Error::other("connection refused"))),
                ProbeStatus::Unknown,
            ),
        ];
        for (result, want) in cases {
            let p = WitnessProbe::new("w1", remote(result), cmd());
            let r = p.probe().await;
            assert_eq!(r.status, want, "{r:?}");
            assert!(r.detail.starts_with("witness w1 (worker-1)"), "{r:?}");
        }
    }

    #[test]
    fn the_healthz_command_quotes_its_inputs_and_bounds_curl() {
        let p = WitnessProbe::api_healthz(
            "w1",
            remote(|| exit(Some(0))),
            "https://10.0.0.10:6443/healthz",
            "/etc/kubernetes/pki/ca.crt",
            Duration::from_secs(3),
        );
        assert!(p.command.command.starts_with("curl -sf -o /dev/null --max-time 1.5 --cacert /etc/kubernetes/pki/ca.crt https://10.0.0.10:6443/healthz;"), "{}", p.command.command);
        assert_eq!(p.timeout(), Duration::from_secs(3));
        assert!(!p.command.sudo);
    }
}
