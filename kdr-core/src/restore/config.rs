//! `[restore]`: how restores and drills run (the `[restore]` section of kdr's config file).
//!
//! ```toml
//! [restore]
//! data_dir = "/var/lib/etcd"
//! name = "master-2"                                  # the etcd member name (kubeadm: the node name)
//! initial_advertise_peer_urls = "https://10.0.0.5:2380"   # default: from this host
//! initial_cluster_token = "etcd-cluster"
//! bump_revision = 1000000000                         # 0: no bump
//! bundle_mode = "new-host"                           # or "same-host"
//! etcdutl = "/usr/local/bin/etcdutl"                 # default: etcdutl on PATH
//! etcdctl = "/usr/local/bin/etcdctl"                 # etcd 3.4 fallback
//! etcdutl_timeout = "10m"                            # then the restore tool is killed
//! etcd = "/usr/local/bin/etcd"                       # drills start it
//! work_dir = "/var/tmp"                              # drills restore under it
//! ```
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BundleMode;
use crate::error::{Error, Result};
use crate::etcd::etcdutl::DEFAULT_RESTORE_TIMEOUT;
use crate::etcd::{DEFAULT_BUMP_REVISION, DEFAULT_CLUSTER_TOKEN, EtcdutlRestorer};

/// `[restore]`: defaults for `kdr restore` and `kdr drill`; flags override them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestoreConfig {
    /// The etcd data dir to restore into (no default: a restore names its target).
    pub data_dir: Option<PathBuf>,
    /// The restored member's name (no default).
    pub name: Option<String>,
    /// The restored member's peer URL (default: from this host, see
    /// [`default_peer_url`](crate::etcd::default_peer_url)).
    pub initial_advertise_peer_urls: Option<String>,
    /// The initial cluster (default `<name>=<peer url>`).
    pub initial_cluster: Option<String>,
    /// The cluster token (default `etcd-cluster`).
    pub initial_cluster_token: String,
    /// Revision bump (default 1,000,000,000; 0 for none).
    pub bump_revision: u64,
    /// Which bundle files go to their original paths (no default: a restore must choose).
    pub bundle_mode: Option<BundleMode>,
    /// The etcdutl binary (default `etcdutl` on `PATH`).
    pub etcdutl: PathBuf,
    /// The etcdctl binary, for etcd 3.4 (default `etcdctl` on `PATH`).
    pub etcdctl: PathBuf,
    /// How long `etcdutl snapshot restore` (or etcdctl's, for 3.4) may run before it is killed
    /// with every process it started (default 10m).
    #[serde(with = "crate::remote::ssh::serde_duration")]
    pub etcdutl_timeout: Duration,
    /// The etcd binary drills run (default `etcd` on `PATH`).
    pub etcd: PathBuf,
    /// Where drills make their temporary dir (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            name: None,
            initial_advertise_peer_urls: None,
            initial_cluster: None,
            initial_cluster_token: DEFAULT_CLUSTER_TOKEN.to_owned(),
            bump_revision: DEFAULT_BUMP_REVISION,
            bundle_mode: None,
            etcdutl: PathBuf::from("etcdutl"),
            etcdctl: PathBuf::from("etcdctl"),
            etcdutl_timeout: DEFAULT_RESTORE_TIMEOUT,
            etcd: PathBuf::from("etcd"),
            work_dir: None,
        }
    }
}

impl RestoreConfig {
    /// Applies `KDR_RESTORE_DATA_DIR`, `KDR_RESTORE_NAME`, `KDR_RESTORE_PEER_URL`,
    /// `KDR_RESTORE_BUMP_REVISION`, `KDR_RESTORE_BUNDLE_MODE`, `KDR_ETCDUTL`, `KDR_ETCDCTL` and
    /// `KDR_ETCD_BIN` from `env` (the process environment, passed in).
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<()> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        if let Some(v) = get("KDR_RESTORE_DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = get("KDR_RESTORE_NAME") {
            self.name = Some(v);
        }
        if let Some(v) = get("KDR_RESTORE_PEER_URL") {
            self.initial_advertise_peer_urls = Some(v);
        }
        if let Some(v) = get("KDR_RESTORE_BUMP_REVISION") {
            self.bump_revision = v.trim().parse().map_err(|_| {
                Error::config("KDR_RESTORE_BUMP_REVISION", format!("{v:?} is not a number (0 for no bump)"))
            })?;
        }
        if let Some(v) = get("KDR_RESTORE_BUNDLE_MODE") {
            self.bundle_mode = Some(v.parse().map_err(|_| {
                Error::config("KDR_RESTORE_BUNDLE_MODE", format!("{v:?} is not one of same-host, new-host"))
            })?);
        }
        for (k, slot) in [
            ("KDR_ETCDUTL", &mut self.etcdutl),
            ("KDR_ETCDCTL", &mut self.etcdctl),
            ("KDR_ETCD_BIN", &mut self.etcd),
        ] {
            if let Some(v) = get(k) {
                *slot = v.into();
            }
        }
        Ok(())
    }

    /// The restorer these settings describe.
    pub fn restorer(&self) -> EtcdutlRestorer {
        EtcdutlRestorer::new()
            .with_etcdutl(&self.etcdutl)
            .with_etcdctl(&self.etcdctl)
            .with_timeout(self.etcdutl_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_bad_values_are_named() {
        let mut c = RestoreConfig::default();
        let env = BTreeMap::from([
            ("KDR_RESTORE_DATA_DIR".to_owned(), "/var/lib/etcd".to_owned()),
            ("KDR_RESTORE_NAME".to_owned(), "m2".to_owned()),
            ("KDR_RESTORE_BUNDLE_MODE".to_owned(), "new-host".to_owned()),
            ("KDR_RESTORE_BUMP_REVISION".to_owned(), "0".to_owned()),
            ("KDR_ETCDUTL".to_owned(), "/opt/etcd/etcdutl".to_owned()),
        ]);
        c.apply_env(&env).unwrap();
        assert_eq!(c.data_dir.as_deref(), Some(std::path::Path::new("/var/lib/etcd")));
        assert_eq!(c.name.as_deref(), Some("m2"));
        assert_eq!(c.bundle_mode, Some(BundleMode::NewHost));
        assert_eq!(c.bump_revision, 0);
        assert_eq!(c.etcdutl, PathBuf::from("/opt/etcd/etcdutl"));

        let bad = BTreeMap::from([("KDR_RESTORE_BUMP_REVISION".to_owned(), "lots".to_owned())]);
        let e = RestoreConfig::default().apply_env(&bad).unwrap_err();
        assert!(e.to_string().contains("KDR_RESTORE_BUMP_REVISION"), "{e}");
    }

    #[test]
    fn toml_section_parses_with_defaults() {
        let c: RestoreConfig = toml::from_str("name = \"m1\"\nbundle_mode = \"same-host\"\n").unwrap();
        assert_eq!(c.name.as_deref(), Some("m1"));
        assert_eq!(c.bundle_mode, Some(BundleMode::SameHost));
        assert_eq!(c.bump_revision, DEFAULT_BUMP_REVISION);
        assert_eq!(c.etcdutl_timeout, Duration::from_secs(600));
        assert!(toml::from_str::<RestoreConfig>("nmae = \"typo\"").is_err());
        let c: RestoreConfig = toml::from_str("etcdutl_timeout = \"30m\"\n").unwrap();
        assert_eq!(c.etcdutl_timeout, Duration::from_secs(1800));
        assert!(toml::from_str::<RestoreConfig>("etcdutl_timeout = 600\n").is_err());
    }
}
