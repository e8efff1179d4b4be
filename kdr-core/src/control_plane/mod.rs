//! Bringing up a control plane on the restored data: the [`ControlPlaneInit`] trait, the
//! [`JoinCommand`] it hands to worker recovery, and the default [`KubeadmInit`].
//!
//! The promotion runbook calls it after the restore step has put the restored etcd data dir and
//! the cluster's identity (CA, service-account keys, encryption config) in place. On a new host
//! it runs `kubeadm init` with a configuration derived from the backed-up ClusterConfiguration
//! (see [`kubeadm_config::derive_kubeadm_config`]); on the same host it restarts kubelet on the restored
//! manifests.
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod join;
pub mod kubeadm;
pub mod kubeadm_config;

pub use join::JoinCommand;

pub use kubeadm::{KubeadmInit, KubeadmSettings};
pub use kubeadm_config::{DeriveInput, DerivedConfig, EndpointPolicy, derive_kubeadm_config};

/// A node as the runbook names it: its Kubernetes node name and the address others reach it at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The Kubernetes node name (`nodeRegistration.name`), also the etcd member name kubeadm uses.
    pub name: String,
    /// The IP address or DNS name the node is reached at.
    pub address: String,
}

/// Whether a node already runs a control plane, as far as the files on it tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum InitState {
    /// None of the files `kubeadm init` writes is there.
    NotInitialized,
    /// All of them are there.
    Initialized,
    /// Some are there: an interrupted `kubeadm init`, or leftovers of an earlier control plane.
    Partial {
        /// The files found.
        found: Vec<String>,
        /// The files missing.
        missing: Vec<String>,
    },
}

/// What [`ControlPlaneInit::plan`] says it would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitPlan {
    /// Where the kubeadm configuration comes from (derived from the bundle, or the operator's file).
    pub config_source: String,
    /// The endpoint workers will reach the new API server at (`host:port`).
    pub endpoint: String,
    /// The commands it would run on the node, in order (no secret is ever in them).
    pub commands: Vec<String>,
    /// Adjustments and warnings the operator should read (e.g. "controlPlaneEndpoint rewritten").
    pub notes: Vec<String>,
}

/// What [`ControlPlaneInit::init`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitReport {
    /// The configuration file `kubeadm init` ran with, if it ran.
    pub config_path: Option<String>,
    /// The endpoint workers reach the new API server at (`host:port`).
    pub endpoint: String,
    /// The admin kubeconfig set up for kubectl.
    pub admin_kubeconfig: String,
    /// The commands run, in order.
    pub commands: Vec<String>,
    /// Adjustments made to the configuration and other notes.
    pub notes: Vec<String>,
}

/// Brings up a control plane on a node whose etcd data and identity were restored.
///
/// Guarantees every implementation gives:
/// - [`init`](Self::init) is **not idempotent**: it refuses ([`Error::Refused`]) when
///   [`state`](Self::state) is not [`InitState::NotInitialized`] (new-host mode), so a resumed
///   runbook asks `state` first and never initialises twice. It never deletes anything (no
///   `kubeadm reset`, which would delete the restored etcd data).
/// - [`plan`](Self::plan) reads what it needs but changes nothing on the node.
/// - A command that fails is [`Error::CommandFailed`] naming the node and the command.
/// - [`join_command`](Self::join_command) creates a fresh, short-lived bootstrap token. The token
///   never appears on a command line, in a log line or in an error; [`JoinCommand`]'s `Debug`
///   redacts it.
#[async_trait]
pub trait ControlPlaneInit: Send + Sync + fmt::Debug {
    /// What [`init`](Self::init) would do, without doing it.
    async fn plan(&self) -> Result<InitPlan>;

    /// Whether the node already runs (or partly runs) a control plane.
    async fn state(&self) -> Result<InitState>;

    /// Initialises the control plane and sets up the admin kubeconfig.
    async fn init(&self) -> Result<InitReport>;

    /// Creates a join command for workers (a new bootstrap token each call).
    async fn join_command(&self) -> Result<JoinCommand>;
}

/// Builds the [`JoinCommand`] for `token` from the output of `kubeadm token create
/// --print-join-command` whose token was replaced on the node (see
/// [`KubeadmInit`]): the endpoint and CA hashes come from the output, the
/// token from the caller, who generated it. Errors never contain the token.
pub fn join_command_from_redacted(printed: &str, token: &str) -> Result<JoinCommand> {
    let line =
        printed.lines().map(str::trim).find(|l| l.starts_with("kubeadm join ")).ok_or_else(|| {
            Error::integrity("kubeadm join command", "no `kubeadm join` line in the output")
        })?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let endpoint = words.get(2).filter(|w| !w.starts_with("--")).ok_or_else(|| {
        Error::integrity("kubeadm join command", "no API server endpoint after `kubeadm join`")
    })?;
    let hashes: Vec<&str> =
        words.windows(2).filter(|w| w[0] == "--discovery-token-ca-cert-hash").map(|w| w[1]).collect();
    if hashes.is_empty() {
        return Err(Error::integrity(
            "kubeadm join command",
            "no --discovery-token-ca-cert-hash: workers could not verify the new API server",
        ));
    }
    if !is_bootstrap_token(token) {
        return Err(Error::integrity(
            "bootstrap token",
            "not of the form [a-z0-9]{6}.[a-z0-9]{16} (not shown)",
        ));
    }
    let mut full = format!("kubeadm join {endpoint} --token {token}");
    for h in hashes {
        full.push_str(" --discovery-token-ca-cert-hash ");
        full.push_str(h);
    }
    JoinCommand::parse(&full)
}

/// Whether `t` has the shape of a kubeadm bootstrap token.
pub fn is_bootstrap_token(t: &str) -> bool {
    let ok =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(t.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// A fresh bootstrap token from the OS's CSPRNG-seeded generator.
pub fn generate_bootstrap_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut pick =
        |n: usize| (0..n).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect::<String>();
    let id = pick(6);
    let secret = pick(16);
    format!("{id}.{secret}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn joins_the_redacted_output_with_our_token_and_never_shows_the_secret() {
        let token = "abcdef.0123456789abcdef";
        let printed =
            format!("kubeadm join 10.0.0.2:6443 --token REDACTED --discovery-token-ca-cert-hash {HASH} \n");
        let j = join_command_from_redacted(&printed, token).unwrap();
        assert_eq!(j.api_server(), "10.0.0.2:6443");
        for shown in [format!("{j:?}"), j.redacted()] {
            assert!(!shown.contains(".0123456789abcdef"), "secret half leaked: {shown}");
            assert!(shown.contains("abcdef.<redacted>"), "{shown}");
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&j.join_configuration("kubeadm.k8s.io/v1beta3", "worker-1")).unwrap();
        assert_eq!(cfg["discovery"]["bootstrapToken"]["token"], token);
        assert_eq!(cfg["discovery"]["bootstrapToken"]["caCertHashes"][0], HASH);
    }

    #[test]
    fn rejects_output_without_join_line_or_hash_and_bad_tokens() {
        let t = "abcdef.0123456789abcdef";
        assert!(join_command_from_redacted("error: boom", t).is_err());
        assert!(join_command_from_redacted("kubeadm join 1.2.3.4:6443 --token REDACTED", t).is_err());
        let printed =
            format!("kubeadm join 10.0.0.2:6443 --token REDACTED --discovery-token-ca-cert-hash {HASH}");
        let err = join_command_from_redacted(&printed, "not-a-token").unwrap_err().to_string();
        assert!(!err.contains("not-a-token"), "a bad token must not be echoed: {err}");
    }

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate_bootstrap_token();
        let b = generate_bootstrap_token();
        assert!(is_bootstrap_token(&a) && is_bootstrap_token(&b));
        assert_ne!(a, b);
    }
}
