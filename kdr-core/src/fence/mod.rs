//! Fencing the old primary before the standby takes over: the [`Fencer`] trait, its
//! configuration, and [`NoFence`].
//!
//! Patroni and Pacemaker fence before they promote: a primary that was only unreachable, not
//! dead, must not come back and serve writes next to the new one (split brain). The runbook
//! calls a fencer after claiming the epoch and before touching anything, and a failed fence
//! stops the runbook.
//!
//! | implementation | how | when |
//! | --- | --- | --- |
//! | [`ExecFencer`] | runs an operator's hook (IPMI power-off, a cloud CLI stopping the VM) | the machine may be down: the only fence that works without it |
//! | [`SshFencer`] | over SSH: moves the static pod manifests aside, stops the control-plane pods and kubelet | the machine is up but the API server is not; fails when the machine is unreachable |
//! | [`NoFence`] | nothing, with a loud warning | only through [`NoFence::i_accept_split_brain_risk`] |
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod exec;
pub mod ssh;

pub use exec::ExecFencer;
pub use ssh::SshFencer;

/// The node to fence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceTarget {
    /// Its node name.
    pub name: String,
    /// Its address (IP or DNS name), as configured.
    pub host: String,
    /// The promotion epoch the fence is for (hooks can log it; fences are idempotent per epoch).
    pub epoch: u64,
}

/// What a successful fence did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReport {
    /// The fencer that ran (`exec`, `ssh`, `none`).
    pub method: String,
    /// What it did, one line each (commands run, files moved).
    pub actions: Vec<String>,
}

/// Makes sure the old primary can no longer serve.
///
/// Guarantees every implementation gives:
/// - `Ok` only when the target is fenced as far as the method can tell; anything else is an
///   error ([`Error::CommandFailed`], [`Error::Timeout`], [`Error::Unavailable`]) and the runbook
///   stops: **a failed fence means no promotion**.
/// - Idempotent: fencing an already fenced target succeeds again (a resumed runbook re-fences).
/// - Nothing is deleted: manifests are moved aside, never removed.
/// - No secret in argv or logs: an exec hook gets the target through environment variables and
///   reads its own credentials.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait Fencer: Send + Sync + fmt::Debug {
    /// What it would do to `target`, one line each, for the dry-run plan.
    fn plan(&self, target: &FenceTarget) -> Vec<String>;

    /// Fences `target`.
    async fn fence(&self, target: &FenceTarget) -> Result<FenceReport>;
}

/// Does not fence. Constructed only through [`NoFence::i_accept_split_brain_risk`], which logs a
/// warning, as does every [`fence`](Fencer::fence) call: if the old primary is alive, two API
/// servers on two etcd clusters will accept writes for the same cluster.
#[derive(Debug)]
pub struct NoFence {
    _private: (),
}

impl NoFence {
    /// A fencer that does nothing. The name is the warning.
    pub fn i_accept_split_brain_risk() -> Self {
        tracing::warn!(
            "FENCING DISABLED: the old primary will not be fenced before promotion; if it is alive it will \
             keep serving next to the new one (split brain). Configure [fence] kind = \"exec\" or \"ssh\""
        );
        Self { _private: () }
    }
}

#[async_trait]
impl Fencer for NoFence {
    fn plan(&self, target: &FenceTarget) -> Vec<String> {
        vec![format!(
            "NO FENCE: {} ({}) is not fenced (split-brain risk accepted in [fence])",
            target.name, target.host
        )]
    }

    async fn fence(&self, target: &FenceTarget) -> Result<FenceReport> {
        tracing::warn!(
            node = %target.name, host = %target.host, epoch = target.epoch,
            "NOT FENCING the old primary (fence kind \"none\"): split-brain risk accepted by configuration"
        );
        Ok(FenceReport { method: "none".into(), actions: vec!["nothing (fencing disabled)".into()] })
    }
}

/// Which fencer to use: `kind` in the `[fence]` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceKind {
    /// Run [`FenceSettings::command`].
    Exec,
    /// [`SshFencer`] through the `[ssh]` settings.
    #[default]
    Ssh,
    /// No fencing; requires [`FenceSettings::i_accept_split_brain_risk`].
    None,
}

/// The `[fence]` section of the configuration. Every key has a default (see `examples/kdr.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FenceSettings {
    /// `"exec"`, `"ssh"` or `"none"`.
    pub kind: FenceKind,
    /// For `exec`: the hook's argv (no shell). It gets `KDR_FENCE_NODE`, `KDR_FENCE_HOST` and
    /// `KDR_EPOCH` in its environment and must exit 0 only once the node is off.
    pub command: Vec<String>,
    /// For `exec`: how long the hook may run.
    #[serde(with = "crate::remote::ssh::serde_duration")]
    pub timeout: Duration,
    /// For `ssh`: the old primary's static pod manifest dir.
    pub manifests_dir: PathBuf,
    /// For `ssh`: how long the control-plane pods may take to stop.
    #[serde(with = "crate::remote::ssh::serde_duration")]
    pub stop_timeout: Duration,
    /// For `none`: must be `true`, acknowledging that an old primary that is alive will go on
    /// serving next to the new one.
    pub i_accept_split_brain_risk: bool,
    /// For `ssh` on a standby running `kdr-monitor`: must be `true` to keep the ssh fence, which
    /// cannot reach a primary whose machine is down, so that an automatic failover of a dead
    /// primary halts at the fence and an operator finishes it (see
    /// [`Config::check_automatic_failover_fence`](crate::config::Config::check_automatic_failover_fence)).
    pub accept_no_automatic_failover_when_primary_is_down: bool,
}

impl Default for FenceSettings {
    fn default() -> Self {
        Self {
            kind: FenceKind::Ssh,
            command: Vec::new(),
            timeout: Duration::from_secs(120),
            manifests_dir: PathBuf::from("/etc/kubernetes/manifests"),
            stop_timeout: Duration::from_secs(120),
            i_accept_split_brain_risk: false,
            accept_no_automatic_failover_when_primary_is_down: false,
        }
    }
}

impl FenceSettings {
    /// Checks the section: an exec fence needs a command; `none` needs the acknowledgement.
    pub fn validate(&self) -> Result<()> {
        match self.kind {
            FenceKind::Exec if self.command.is_empty() || self.command[0].is_empty() => Err(Error::config(
                "fence.command",
                "kind = \"exec\" needs the hook's argv, e.g. [\"/usr/local/bin/fence-primary\"] (it gets \
                 KDR_FENCE_NODE/KDR_FENCE_HOST/KDR_EPOCH; keep credentials in its own files)",
            )),
            FenceKind::None if !self.i_accept_split_brain_risk => Err(Error::config(
                "fence.i_accept_split_brain_risk",
                "kind = \"none\" promotes without fencing the old primary; if it is alive, both serve \
                 (split brain). Configure kind = \"exec\" or \"ssh\", or set i_accept_split_brain_risk = true",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn none_needs_the_explicit_acknowledgement() {
        let s: FenceSettings = toml::from_str("kind = \"none\"\n").unwrap();
        let err = s.validate().unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "fence.i_accept_split_brain_risk"),
            "{err}"
        );
        let s: FenceSettings = toml::from_str("kind = \"none\"\ni_accept_split_brain_risk = true\n").unwrap();
        s.validate().unwrap();
        let t = FenceTarget { name: "master-1".into(), host: "10.0.0.1".into(), epoch: 1 };
        let f = NoFence::i_accept_split_brain_risk();
        assert!(f.plan(&t)[0].starts_with("NO FENCE"));
        assert_eq!(f.fence(&t).await.unwrap().method, "none");
    }

    #[test]
    fn exec_needs_a_command_and_defaults_are_ssh() {
        let s: FenceSettings = toml::from_str("kind = \"exec\"\n").unwrap();
        assert!(matches!(s.validate(), Err(Error::Config { key, .. }) if key == "fence.command"));
        let d = FenceSettings::default();
        assert_eq!(d.kind, FenceKind::Ssh);
        d.validate().unwrap();
        assert!(toml::from_str::<FenceSettings>("kind = \"stonith\"\n").is_err());
    }
}
