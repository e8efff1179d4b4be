//! `kdr failover`'s view of the shared configuration file, and the one entry point that builds a
//! [`Runbook`] from it ([`build_runbook`]).
//!
//! The file is kdr's one TOML file. Its sections are read by their owners: `[cluster]`, `[etcd]`,
//! `[store]`, `[backup]`, `[retention]`, `[restore]` by [`crate::config::Config`]; `[ssh]`,
//! `[[workers]]`, `[worker_recovery]` by [`crate::workers::RecoveryFileConfig`]; `[promotion]`,
//! `[kubeadm]`, `[fence]`, `[hooks]` here; `[detector]`, `[monitor]`, `[primary]` by kdr-monitor.
//! A top-level key no one reads is an error naming it.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{
    FlowRestore, HooksSettings, KubectlPostChecks, ParallelWorkerRecovery, PromotionMode, PromotionSettings,
    Runbook, RunbookParts,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::control_plane::{KubeadmInit, KubeadmSettings};
use crate::error::{Error, Result};
use crate::etcd::{DEFAULT_PEER_PORT, RestoreSpec};
use crate::fence::{ExecFencer, FenceKind, FenceSettings, Fencer, NoFence, SshFencer};
use crate::remote::{LocalNodeRemote, NodeRemote, SshNodeRemote};
use crate::runbook::claim::ClaimStore;
use crate::snapshot::ObjectStoreSnapshotStore;
use crate::workers::{KubectlReadiness, RecoveryFileConfig, WorkerTarget};

const BASE_SECTIONS: &[&str] = &["cluster", "etcd", "store", "backup", "retention", "restore"];
const RECOVERY_SECTIONS: &[&str] = &["ssh", "workers", "worker_recovery"];
const RUNBOOK_SECTIONS: &[&str] = &["promotion", "kubeadm", "fence", "hooks"];
const MONITOR_SECTIONS: &[&str] = &["detector", "monitor", "primary"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RunbookSections {
    promotion: PromotionSettings,
    kubeadm: KubeadmSettings,
    fence: FenceSettings,
    hooks: HooksSettings,
}

/// Everything `kdr failover` reads from the configuration file.
#[derive(Debug, Clone, Default)]
pub struct FailoverConfig {
    /// `[cluster]`, `[etcd]`, `[store]`, `[backup]`, `[retention]`, `[restore]`.
    pub base: Config,
    /// `[ssh]`, `[[workers]]`, `[worker_recovery]`.
    pub recovery: RecoveryFileConfig,
    /// `[promotion]`.
    pub promotion: PromotionSettings,
    /// `[kubeadm]`.
    pub kubeadm: KubeadmSettings,
    /// `[fence]`.
    pub fence: FenceSettings,
    /// `[hooks]`.
    pub hooks: HooksSettings,
}

impl FailoverConfig {
    /// Parses the configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        for key in table.keys() {
            let known = [BASE_SECTIONS, RECOVERY_SECTIONS, RUNBOOK_SECTIONS, MONITOR_SECTIONS]
                .iter()
                .any(|s| s.contains(&key.as_str()));
            if !known {
                return Err(Error::config(
                    format!("{key} in {origin}"),
                    "unknown section: kdr reads cluster, etcd, store, backup, retention, restore, ssh, workers, \
                     worker_recovery, promotion, kubeadm, fence, hooks, detector, monitor and primary",
                ));
            }
        }
        let pick = |names: &[&str]| -> Result<String> {
            let sub: toml::Table = table
                .iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            toml::to_string(&sub).map_err(|e| Error::config(origin, e.to_string()))
        };
        let base = Config::from_toml(&pick(BASE_SECTIONS)?, origin)?;
        let recovery = RecoveryFileConfig::parse(&pick(RECOVERY_SECTIONS)?).map_err(|e| match e {
            Error::Config { key, reason } => Error::config(format!("{key} in {origin}"), reason),
            e => e,
        })?;
        let mine: RunbookSections =
            toml::from_str(&pick(RUNBOOK_SECTIONS)?).map_err(|e| Error::config(origin, e.to_string()))?;
        let cfg = Self {
            base,
            recovery,
            promotion: mine.promotion,
            kubeadm: mine.kubeadm,
            fence: mine.fence,
            hooks: mine.hooks,
        };
        cfg.promotion.validate()?;
        cfg.fence.validate()?;
        cfg.hooks.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self> {
        let origin = format!("config file {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(&origin, format!("cannot read it: {e}")))?;
        Self::parse(&text, &origin)
    }

    /// Applies the `KDR_*` and store-credential environment variables (passed in, never read here).
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<()> {
        self.base.apply_env(env)
    }
}

/// The prefix claims live under for a store URL: the same prefix the backup sets use (a
/// `file://` store's path is its root, so its prefix is empty).
pub fn claims_prefix_for(url: &str) -> Result<String> {
    let u =
        url::Url::parse(url).map_err(|e| Error::config("store.url", format!("{url:?} is not a URL: {e}")))?;
    let path = u.path().trim_matches('/');
    Ok(match u.scheme() {
        "file" => String::new(),
        "memory" => [u.host_str().unwrap_or(""), path]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/"),
        _ => path.to_owned(),
    })
}

/// Builds the runbook the configuration describes, on this host: the store from `[store]`, the
/// fencer from `[fence]` (over `[ssh]` for `ssh`), the restore flow from `[restore]`, kubeadm from
/// `[kubeadm]` run locally, the workers from `[[workers]]`/`[worker_recovery]` over SSH, and the
/// kubectl post-checks run locally. Nothing is contacted yet.
pub fn build_runbook(cfg: &FailoverConfig, clock: Arc<dyn Clock>) -> Result<Runbook> {
    let p = &cfg.promotion;
    let url = cfg.base.store_url()?;
    let store = ObjectStoreSnapshotStore::from_url(url, &cfg.base.store_options()?)?;
    let prefix = if p.claims_prefix.is_empty() { claims_prefix_for(url)? } else { p.claims_prefix.clone() };
    let claims = ClaimStore::new(store.inner().clone(), &prefix, url);
    let snapshots = Arc::new(store);

    let fencer: Arc<dyn Fencer> = match cfg.fence.kind {
        FenceKind::Exec => Arc::new(ExecFencer::new(cfg.fence.command.clone(), cfg.fence.timeout)?),
        FenceKind::Ssh => {
            let target = cfg.recovery.ssh.target(&p.old_primary_name, &p.old_primary_address);
            let remote: Arc<dyn NodeRemote> = Arc::new(SshNodeRemote::new(target)?);
            Arc::new(SshFencer::new(remote, &cfg.fence.manifests_dir, cfg.fence.stop_timeout))
        }
        FenceKind::None => Arc::new(NoFence::i_accept_split_brain_risk()),
    };

    let local: Arc<dyn NodeRemote> = Arc::new(LocalNodeRemote::new(&p.node_name));
    let r = &cfg.base.restore;
    let (peer_url, peer_source) = match &r.initial_advertise_peer_urls {
        Some(u) => (u.clone(), "restore.initial_advertise_peer_urls".to_owned()),
        None => (
            format!("https://{}:{DEFAULT_PEER_PORT}", p.advertise_address),
            "promotion.advertise_address".to_owned(),
        ),
    };
    let mut member = RestoreSpec::new(&p.node_name, peer_url, &cfg.kubeadm.etcd_data_dir);
    if let Some(c) = &r.initial_cluster {
        member.initial_cluster = c.clone();
    }
    member.initial_cluster_token = r.initial_cluster_token.clone();
    member.bump_revision = r.bump_revision;
    let restore = Arc::new(FlowRestore::new(
        snapshots.clone(),
        Arc::new(r.restorer()),
        clock.clone(),
        member,
        peer_source,
        p.mode,
        "/",
        &p.bundle_dir,
        &p.state_dir,
        cfg.base.encryption_key()?,
    ));

    let mut kubeadm = cfg.kubeadm.clone();
    let defaults = KubeadmSettings::default();
    // Follow a moved bundle staging dir unless the paths were set explicitly.
    if kubeadm.cluster_configuration == defaults.cluster_configuration {
        kubeadm.cluster_configuration = p.bundle_dir.join("etc/kubernetes/kubeadm-config.yaml");
    }
    if kubeadm.old_apiserver_manifest == defaults.old_apiserver_manifest {
        kubeadm.old_apiserver_manifest =
            Some(p.bundle_dir.join("etc/kubernetes/manifests/kube-apiserver.yaml"));
    }
    let control_plane = Arc::new(
        KubeadmInit::new(kubeadm, p.this_node(), p.old_primary(), local.clone())
            .same_host(p.mode == PromotionMode::SameHost),
    );

    let rc = &cfg.recovery;
    let mut targets = Vec::with_capacity(rc.workers.len());
    for w in &rc.workers {
        let remote: Arc<dyn NodeRemote> = Arc::new(SshNodeRemote::new(w.ssh_target(&rc.ssh))?);
        targets.push(WorkerTarget { name: w.name.clone(), remote });
    }
    let readiness =
        Arc::new(KubectlReadiness::local(&rc.worker_recovery.kubectl, &rc.worker_recovery.admin_kubeconfig));
    let workers =
        Arc::new(ParallelWorkerRecovery::new(targets, rc.worker_recovery.clone(), readiness, clock.clone()));
    let checks = Arc::new(KubectlPostChecks::new(local, p.checks.clone()));

    Runbook::new(RunbookParts {
        settings: p.clone(),
        hooks: cfg.hooks.clone(),
        claims,
        snapshots,
        fencer,
        restore,
        control_plane,
        workers,
        checks,
        clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[cluster]
name = "prod"
[store]
url = "memory://kdr/prod"
[ssh]
user = "kube"
[[workers]]
name = "worker-1"
host = "192.168.30.201"
[worker_recovery]
mode = "rejoin"
[promotion]
node_name = "master-2"
advertise_address = "192.168.30.202"
old_primary_name = "master-1"
old_primary_address = "192.168.30.200"
[kubeadm]
control_plane_endpoint = "keep"
[fence]
kind = "exec"
command = ["/usr/local/bin/fence", "--hard"]
[[hooks.post]]
webhook = "https://dns.example/switch"
[detector]
interval_s = 10
"#;

    #[test]
    fn the_shared_file_splits_into_its_owners_sections() {
        let c = FailoverConfig::parse(FILE, "test").unwrap();
        assert_eq!(c.base.cluster.name, "prod");
        assert_eq!(c.recovery.workers[0].name, "worker-1");
        assert_eq!(c.recovery.ssh.user, "kube");
        assert_eq!(c.promotion.node_name, "master-2");
        assert_eq!(c.fence.command[1], "--hard");
        assert_eq!(c.hooks.post.len(), 1);
        assert_eq!(c.kubeadm.control_plane_endpoint, crate::control_plane::EndpointPolicy::Keep);
    }

    #[test]
    fn unknown_sections_and_keys_are_named() {
        let err = FailoverConfig::parse(&format!("{FILE}\n[fencing]\nx = 1\n"), "kdr.toml").unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "fencing in kdr.toml"), "{err}");
        let err = FailoverConfig::parse(
            &FILE.replace("kind = \"exec\"", "kind = \"exec\"\nretries = 3"),
            "kdr.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("retries"), "{err}");
        let err = FailoverConfig::parse(&FILE.replace("kind = \"exec\"", "kind = \"none\""), "kdr.toml")
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "fence.i_accept_split_brain_risk"),
            "{err}"
        );
    }

    #[test]
    fn builds_a_runbook_and_claims_share_the_store_prefix() {
        let mut c = FailoverConfig::parse(FILE, "test").unwrap();
        let err = build_runbook(&c, Arc::new(crate::clock::SystemClock)).unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "ssh.key_file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        for f in ["id", "known_hosts"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        c.recovery.ssh.key_file = dir.path().join("id");
        c.recovery.ssh.known_hosts = dir.path().join("known_hosts");
        build_runbook(&c, Arc::new(crate::clock::SystemClock)).unwrap();
        assert_eq!(claims_prefix_for("s3://bucket/prod/eu1").unwrap(), "prod/eu1");
        assert_eq!(claims_prefix_for("file:///var/backups/kdr").unwrap(), "");
        assert_eq!(claims_prefix_for("memory://kdr/prod").unwrap(), "kdr/prod");
    }

    #[test]
    fn the_example_file_parses_and_shows_the_real_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kdr.toml");
        let c = FailoverConfig::load(&path).unwrap();
        let d = PromotionSettings::default();
        let p = &c.promotion;
        assert_eq!(
            (&p.state_dir, &p.bundle_dir, &p.claims_prefix, &p.snapshot, p.mode, &p.checks, &p.holder),
            (&d.state_dir, &d.bundle_dir, &d.claims_prefix, &d.snapshot, d.mode, &d.checks, &d.holder)
        );
        assert_eq!(c.kubeadm, KubeadmSettings::default());
        assert_eq!(c.fence, FenceSettings::default());
        assert_eq!(c.hooks, HooksSettings::default());
    }
}
