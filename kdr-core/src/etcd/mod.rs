//! Restoring etcd from a snapshot: [`EtcdRestorer`] and its default, [`EtcdutlRestorer`].
//!
//! A restorer turns a verified snapshot file into a fresh etcd data dir. It never touches an
//! existing data dir: [`RestoreSpec::data_dir`] must not exist, and the caller (the
//! [`restore`](crate::restore) flow) swaps the result into place. [`local::LocalEtcd`] runs a
//! throwaway etcd on a data dir, for drills and demos.
//!
//! Revision bump: after a restore the store's revision goes backwards, and Kubernetes watch
//! caches can silently miss changes (kubernetes#118501, etcd#16028). `etcdutl snapshot restore
//! --bump-revision N --mark-compacted` (etcd 3.5.10+) moves the revision forward by `N` and makes
//! every watcher re-list. [`DEFAULT_BUMP_REVISION`] is what kdr uses unless told otherwise.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod client;
pub mod etcdutl;
pub mod local;

pub use etcdutl::EtcdutlRestorer;

/// How far a restore moves the revision forward by default (etcd's own docs suggest a value well
/// above the writes the cluster can make between the backup and the restore).
pub const DEFAULT_BUMP_REVISION: u64 = 1_000_000_000;

/// The etcd peer port kubeadm uses.
pub const DEFAULT_PEER_PORT: u16 = 2380;

/// etcd's default initial cluster token, which kubeadm keeps.
pub const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";

/// What a restore makes: the member that the new data dir will belong to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSpec {
    /// The member's name (`--name`); kubeadm names the etcd member after the node.
    pub name: String,
    /// The member's peer URL (`--initial-advertise-peer-urls`). It must be an address the
    /// restored member really listens on: a wrong one breaks the member (kubeadm#2071).
    pub initial_advertise_peer_urls: String,
    /// The cluster (`--initial-cluster`), `name=peer-url[,...]`. A restore makes a one-member
    /// cluster: `<name>=<initial_advertise_peer_urls>`.
    pub initial_cluster: String,
    /// The cluster token (`--initial-cluster-token`).
    pub initial_cluster_token: String,
    /// Where to create the data dir. Must not exist.
    pub data_dir: PathBuf,
    /// How far to move the revision forward (`--bump-revision`, with `--mark-compacted`); 0 for
    /// none (a drill's throwaway restore).
    pub bump_revision: u64,
    /// The caller checks the snapshot's etcd sha256 trailer itself and uses the restored dir only
    /// if it matches (kdr's restore and drill do, while the tool runs:
    /// [`restore_verified`](crate::restore::download::restore_verified)), so the tool need not
    /// hash the file (`--skip-hash-check`, which still strips the trailer). `false` by default:
    /// the tool checks it.
    pub trailer_verified: bool,
}

impl RestoreSpec {
    /// A one-member spec: `initial_cluster` is `<name>=<peer_url>`, the token is etcd's default
    /// and the revision is bumped by [`DEFAULT_BUMP_REVISION`].
    pub fn new(name: impl Into<String>, peer_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        let name = name.into();
        let peer_url = peer_url.into();
        Self {
            initial_cluster: format!("{name}={peer_url}"),
            name,
            initial_advertise_peer_urls: peer_url,
            initial_cluster_token: DEFAULT_CLUSTER_TOKEN.to_owned(),
            data_dir: data_dir.into(),
            bump_revision: DEFAULT_BUMP_REVISION,
            trailer_verified: false,
        }
    }

    /// The same spec restoring into another dir (the flow restores into `<dir>.kdr-partial`).
    pub fn with_data_dir(&self, data_dir: impl Into<PathBuf>) -> Self {
        Self { data_dir: data_dir.into(), ..self.clone() }
    }
}

/// The tool a restorer runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "lowercase")]
pub enum RestoreTool {
    /// `etcdutl snapshot restore` (etcd 3.5+).
    Etcdutl {
        /// The binary run.
        path: PathBuf,
        /// Its version, e.g. `3.5.16`.
        version: String,
    },
    /// `etcdctl snapshot restore` (etcd 3.4, which has no etcdutl and cannot bump the revision).
    Etcdctl {
        /// The binary run.
        path: PathBuf,
        /// Its version, e.g. `3.4.23`.
        version: String,
    },
}

impl fmt::Display for RestoreTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreTool::Etcdutl { path, version } => write!(f, "etcdutl {version} ({})", path.display()),
            RestoreTool::Etcdctl { path, version } => write!(f, "etcdctl {version} ({})", path.display()),
        }
    }
}

/// What a restore will do, shown to the operator before it does it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// The tool that will run.
    pub tool: RestoreTool,
    /// The command line (no secrets are ever in it).
    pub command: String,
    /// The revision bump that will be applied, if any.
    pub bump_revision: Option<u64>,
    /// Warnings the operator must see (e.g. "no revision bump with etcd 3.4").
    pub notes: Vec<String>,
}

/// Turns a snapshot file into a new etcd data dir.
///
/// Guarantees every implementation gives:
/// - **Never touches an existing dir.** If `spec.data_dir` exists, `restore` fails with
///   [`Error::AlreadyExists`](crate::Error::AlreadyExists) and changes nothing.
/// - **No partial output.** On failure, whatever the restore created at `spec.data_dir` is
///   removed (it was created by this call, so nothing of the operator's is lost), and the error
///   is returned: [`Error::CommandFailed`](crate::Error::CommandFailed) with the tool's stderr,
///   or [`Error::NotFound`](crate::Error::NotFound) if no restore tool is installed.
/// - **The snapshot's own hash is checked.** A snapshot whose etcd sha256 trailer does not match
///   is refused (the tools check it; kdr checks it too before calling them).
/// - **Honest about the bump.** The returned plan says whether the revision was bumped; a tool that
///   cannot bump says so in [`RestorePlan::notes`] instead of failing silently.
#[async_trait]
pub trait EtcdRestorer: Send + Sync + fmt::Debug {
    /// What [`restore`](Self::restore) would run for `snapshot` and `spec`, without running it.
    async fn plan(&self, snapshot: &Path, spec: &RestoreSpec) -> Result<RestorePlan>;

    /// Restores `snapshot` into `spec.data_dir`, returning the plan it carried out.
    async fn restore(&self, snapshot: &Path, spec: &RestoreSpec) -> Result<RestorePlan>;
}

/// Where a default peer URL came from, shown in the plan next to the URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUrl {
    /// The URL, e.g. `https://10.0.0.5:2380`.
    pub url: String,
    /// Where it came from, e.g. `--initial-advertise-peer-urls in /etc/kubernetes/manifests/etcd.yaml`.
    pub source: String,
}

/// The peer URL a restored member should advertise on this host, when none was given.
///
/// In order: the `--initial-advertise-peer-urls` of the local etcd static pod manifest
/// (`<root>/etc/kubernetes/manifests/etcd.yaml`, what kubeadm wrote for this host), then
/// `https://<this host's primary address>:2380`, as kubeadm would write it. The primary address
/// is the source address the kernel picks for an outbound route; finding it sends no packet.
pub fn default_peer_url(root: &Path) -> Result<PeerUrl> {
    let manifest = root.join("etc/kubernetes/manifests/etcd.yaml");
    if let Ok(text) = std::fs::read_to_string(&manifest)
        && let Some(url) = flag_value(&text, "--initial-advertise-peer-urls")
    {
        return Ok(PeerUrl {
            url,
            source: format!("--initial-advertise-peer-urls in {}", manifest.display()),
        });
    }
    let ip = primary_address().ok_or_else(|| crate::Error::NotFound {
        what: "this host's primary IP address (for the default etcd peer URL)".into(),
        hint: Some("pass --initial-advertise-peer-urls https://<this host's IP>:2380".into()),
    })?;
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    Ok(PeerUrl {
        url: format!("https://{host}:{DEFAULT_PEER_PORT}"),
        source: "this host's primary address (the source address of its default route)".into(),
    })
}

/// The value of `--flag=value` or `- --flag=value` in a static pod manifest or command line.
pub(crate) fn flag_value(text: &str, flag: &str) -> Option<String> {
    let needle = format!("{flag}=");
    text.lines().find_map(|line| {
        let at = line.find(&needle)?;
        let value = line[at + needle.len()..].trim().trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The source address for a route to a documentation-only address (TEST-NET-1): connecting a UDP
/// socket only asks the kernel for a route, nothing is sent.
fn primary_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_new_makes_a_one_member_cluster() {
        let spec = RestoreSpec::new("m1", "https://10.0.0.5:2380", "/var/lib/etcd");
        assert_eq!(spec.initial_cluster, "m1=https://10.0.0.5:2380");
        assert_eq!(spec.initial_cluster_token, "etcd-cluster");
        assert_eq!(spec.bump_revision, DEFAULT_BUMP_REVISION);
        let moved = spec.with_data_dir("/var/lib/etcd.kdr-partial");
        assert_eq!(moved.data_dir, Path::new("/var/lib/etcd.kdr-partial"));
        assert_eq!(moved.name, "m1");
    }

    #[test]
    fn peer_url_comes_from_the_local_etcd_manifest_first() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/kubernetes/manifests");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("etcd.yaml"),
            "spec:\n  containers:\n  - command:\n    - etcd\n    - --advertise-client-urls=https://10.1.2.3:2379\n    - --initial-advertise-peer-urls=https://10.1.2.3:2380\n",
        )
        .unwrap();
        let url = default_peer_url(root.path()).unwrap();
        assert_eq!(url.url, "https://10.1.2.3:2380");
        assert!(url.source.contains("etcd.yaml"), "{}", url.source);
    }

    #[test]
    fn peer_url_falls_back_to_the_host_address() {
        let root = tempfile::tempdir().unwrap();
        match default_peer_url(root.path()) {
            Ok(url) => {
                assert!(url.url.starts_with("https://") && url.url.ends_with(":2380"), "{}", url.url);
                assert!(!url.url.contains("127.0.0.1"), "{}", url.url);
            }
            // A host with no route at all has no primary address: the error says what to pass.
            Err(e) => assert!(e.to_string().contains("--initial-advertise-peer-urls"), "{e}"),
        }
    }

    #[test]
    fn flag_value_reads_quoted_and_plain_values() {
        assert_eq!(
            flag_value("  - --data-dir=/var/lib/etcd\n", "--data-dir").as_deref(),
            Some("/var/lib/etcd")
        );
        assert_eq!(flag_value("- \"--name='m1'\"", "--name").as_deref(), Some("m1"));
        assert_eq!(flag_value("--name=", "--name"), None);
        assert_eq!(flag_value("nothing here", "--name"), None);
    }
}
