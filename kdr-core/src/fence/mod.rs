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
//!
//! **Never this host.** A fence aimed at the machine it runs on stops its own control plane
//! (seeds 001/004 rebuild the primary with the old name and IP, so "the old primary" is the node
//! being promoted). [`refuse_fencing_this_host`] is the one check, run by the runbook before any
//! fencer that acts; [`target_is_this_host`] tells why a target is this host.
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::control_plane::NodeIdentity;
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

    /// Whether [`fence`](Self::fence) acts on the target at all (every fencer but [`NoFence`]):
    /// a fencer that acts must never be aimed at this host ([`refuse_fencing_this_host`]).
    fn acts_on_target(&self) -> bool {
        true
    }
}

/// How long resolving a node's DNS name may take when telling whether it is this host.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// This host's interface addresses, from `/proc/net/fib_trie` (IPv4, the `host LOCAL` entries)
/// and `/proc/net/if_inet6` (IPv6). `None` when neither can be read (not Linux, no /proc).
fn interface_addresses() -> Option<Vec<IpAddr>> {
    let v4 = std::fs::read_to_string("/proc/net/fib_trie").ok();
    let v6 = std::fs::read_to_string("/proc/net/if_inet6").ok();
    if v4.is_none() && v6.is_none() {
        return None;
    }
    let mut out = Vec::new();
    if let Some(text) = v4 {
        let mut last: Option<IpAddr> = None;
        for line in text.lines() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix("|-- ") {
                last = rest.trim().parse().ok();
            } else if t.contains("/32 host LOCAL")
                && let Some(ip) = last
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    for line in v6.iter().flat_map(|t| t.lines()) {
        let Some(hex) = line.split_whitespace().next().filter(|h| h.len() == 32) else { continue };
        let bytes: Option<Vec<u8>> =
            (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
        if let Some(b) = bytes.and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            out.push(IpAddr::from(b));
        }
    }
    Some(out)
}

/// Whether `ip` is one of this host's addresses: loopback or unspecified, or on one of its
/// interfaces. Without `/proc`, an address this host can bind a socket to counts as its own.
fn is_local_ip(ip: IpAddr, interfaces: Option<&[IpAddr]>) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    match interfaces {
        Some(list) => list.contains(&ip),
        None => std::net::UdpSocket::bind((ip, 0)).is_ok(),
    }
}

/// Whether `address` (an IP, `[IPv6]`, or a DNS name, resolved first) names this host: loopback,
/// or an address of one of its interfaces. A name that does not resolve in time is not this host
/// (nothing to compare).
pub async fn is_this_host_address(address: &str) -> bool {
    let a = address.trim().trim_start_matches('[').trim_end_matches(']');
    if a.is_empty() {
        return false;
    }
    let ips: Vec<IpAddr> = match a.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((a, 0))).await {
            Ok(Ok(addrs)) => addrs.map(|s| s.ip()).collect(),
            _ => Vec::new(),
        },
    };
    let interfaces = interface_addresses();
    ips.into_iter().any(|ip| is_local_ip(ip, interfaces.as_deref()))
}

/// Why the node `target` names is this host (`this_node` being this host's identity in the
/// configuration), or `None` if it is another machine: the same node name, the same address as
/// `this_node`'s, or an address of this host ([`is_this_host_address`]).
pub async fn target_is_this_host(target: &NodeIdentity, this_node: &NodeIdentity) -> Option<String> {
    if !target.name.is_empty() && target.name == this_node.name {
        return Some(format!("its node name {:?} is this node's (promotion.node_name)", target.name));
    }
    if !target.address.is_empty() && target.address == this_node.address {
        return Some(format!("its address {} is this node's (promotion.advertise_address)", target.address));
    }
    if is_this_host_address(&target.address).await {
        return Some(format!("its address {} is one of this host's own addresses", target.address));
    }
    None
}

/// Refuses a fence aimed at this host: [`Error::Refused`] naming the target and why it is this
/// host. Run before any fencer that [acts on its target](Fencer::acts_on_target): fencing this
/// host would stop the control plane being promoted (and disable its kubelet).
pub async fn refuse_fencing_this_host(target: &FenceTarget, this_node: &NodeIdentity) -> Result<()> {
    let node = NodeIdentity { name: target.name.clone(), address: target.host.clone() };
    match target_is_this_host(&node, this_node).await {
        None => Ok(()),
        Some(why) => Err(Error::refused(format!(
            "refusing to fence {} ({}) for epoch {}: {why}, so the fence would stop this host's own control \
             plane. The old primary is this machine (a same-host rebuild, seeds 001/004): there is no other \
             machine to fence. If the old machine is truly gone, set [fence] kind = \"none\" with \
             i_accept_split_brain_risk = true; otherwise correct promotion.old_primary_name/old_primary_address \
             to name the old machine",
            target.name, target.host, target.epoch
        ))),
    }
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

    fn acts_on_target(&self) -> bool {
        false
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

    fn node(name: &str, address: &str) -> NodeIdentity {
        NodeIdentity { name: name.into(), address: address.into() }
    }

    /// Two TEST-NET-3 addresses that are not this host's (test hosts sometimes use the ranges).
    fn foreign() -> (String, String) {
        let list = interface_addresses().unwrap_or_default();
        let mut free = (1..=254u8).map(|i| IpAddr::from([203, 0, 113, i])).filter(|ip| !list.contains(ip));
        (free.next().unwrap().to_string(), free.next().unwrap().to_string())
    }

    #[tokio::test]
    async fn a_target_that_is_this_host_is_named_and_its_fence_refused() {
        let (old, ours) = foreign();
        let this = node("master-2", &ours);
        // Another machine.
        assert_eq!(target_is_this_host(&node("master-1", &old), &this).await, None);
        let t = FenceTarget { name: "master-1".into(), host: old.clone(), epoch: 2 };
        refuse_fencing_this_host(&t, &this).await.unwrap();

        // Same name, same configured address, loopback (v4, v6, a name resolving to it).
        let why = target_is_this_host(&node("master-2", &old), &this).await.unwrap();
        assert!(why.contains("node name \"master-2\""), "{why}");
        let why = target_is_this_host(&node("master-1", &ours), &this).await.unwrap();
        assert!(why.contains("promotion.advertise_address"), "{why}");
        for local in ["127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0"] {
            let why = target_is_this_host(&node("master-1", local), &this).await;
            assert!(why.is_some_and(|w| w.contains("this host's own addresses")), "{local}");
        }
        let t = FenceTarget { name: "master-1".into(), host: "127.0.0.1".into(), epoch: 2 };
        let err = refuse_fencing_this_host(&t, &this).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("refusing to fence master-1 (127.0.0.1) for epoch 2"), "{msg}");
        assert!(msg.contains("kind = \"none\""), "{msg}");
    }

    #[test]
    fn interface_addresses_include_loopback_and_a_foreign_address_is_not_local() {
        let list = interface_addresses().expect("/proc/net is readable on Linux");
        assert!(list.contains(&IpAddr::from([127, 0, 0, 1])), "{list:?}");
        let other: IpAddr = foreign().0.parse().unwrap();
        assert!(!is_local_ip(other, Some(&list)));
        assert!(is_local_ip("::ffff:127.0.0.1".parse().unwrap(), Some(&list)));
        // Without /proc: an address this host cannot bind is not its own.
        assert!(!is_local_ip(other, None));
        for ip in list {
            assert!(is_local_ip(ip, None) || ip.is_ipv6(), "{ip} is bindable here");
        }
    }

    #[test]
    fn no_fence_does_not_act_the_others_do() {
        assert!(!NoFence::i_accept_split_brain_risk().acts_on_target());
        let exec = ExecFencer::new(vec!["true".into()], Duration::from_secs(1)).unwrap();
        assert!(exec.acts_on_target());
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
