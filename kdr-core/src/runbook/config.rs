//! The one entry point that builds `kdr failover`'s [`Runbook`] from the configuration file
//! ([`build_runbook`]). The file is read by [`crate::config::Config`], like every command's.
use std::sync::Arc;

use super::{FlowRestore, KubectlPostChecks, ParallelWorkerRecovery, PromotionMode, Runbook, RunbookParts};
use crate::clock::Clock;
use crate::config::Config;
use crate::control_plane::{KubeadmInit, KubeadmSettings};
use crate::error::{Error, Result};
use crate::etcd::{DEFAULT_PEER_PORT, RestoreSpec};
use crate::fence::{ExecFencer, FenceKind, Fencer, NoFence, SshFencer};
use crate::remote::{LocalNodeRemote, NodeRemote, SshNodeRemote};
use crate::runbook::claim::ClaimStore;
use crate::snapshot::{ObjectStoreSnapshotStore, SnapshotStore};
use crate::workers::{KubectlReadiness, WorkerTarget};

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

/// Where the epoch claims live for `cfg`: `promotion.claims_prefix`, else the store URL's prefix
/// ([`claims_prefix_for`]). This is the one derivation: the runbook writes its claims there,
/// and the monitor (the self-fence guard, the standby's detector) reads them there.
///
/// The older key `monitor.self_fence.claims_prefix` is still read, but only as a check: if it is
/// set and names another location, this is [`Error::Config`] naming both keys (a guard reading
/// elsewhere than the runbook writes would never see a claim, and never fence).
pub fn claims_prefix(cfg: &Config) -> Result<String> {
    let url = cfg.store_url()?;
    let ours = if cfg.promotion.claims_prefix.trim_matches('/').is_empty() {
        claims_prefix_for(url)?
    } else {
        cfg.promotion.claims_prefix.trim_matches('/').to_owned()
    };
    if let Some(legacy) = &cfg.monitor.self_fence.claims_prefix
        && legacy.trim_matches('/') != ours
    {
        return Err(Error::config(
            "monitor.self_fence.claims_prefix",
            format!(
                "{legacy:?} differs from where `kdr failover` writes its claims ({ours:?}, from {}): the self-fence \
                 guard would watch a place no claim is ever written. Remove monitor.self_fence.claims_prefix (the \
                 guard then reads where the runbook writes), or set promotion.claims_prefix to move both",
                if cfg.promotion.claims_prefix.trim_matches('/').is_empty() {
                    "the store URL's prefix; promotion.claims_prefix is unset"
                } else {
                    "promotion.claims_prefix"
                }
            ),
        ));
    }
    Ok(ours)
}

/// The claims of `cfg` ([`claims_prefix`]) in `store`, the store `[store]` opened (so an
/// in-memory store is shared with the backup sets).
pub fn claim_store(cfg: &Config, store: &ObjectStoreSnapshotStore) -> Result<ClaimStore> {
    Ok(ClaimStore::new(store.inner().clone(), &claims_prefix(cfg)?, store.describe()))
}

/// Opens `[store]` and returns its claims ([`claim_store`]): what the monitor's standby reads
/// the newest claim from (feed it to the detector as
/// [`Input::ClaimSeen`](crate::failover::Input::ClaimSeen)).
pub fn open_claim_store(cfg: &Config) -> Result<ClaimStore> {
    let store = ObjectStoreSnapshotStore::from_url(cfg.store_url()?, &cfg.store_options()?)?;
    claim_store(cfg, &store)
}

/// Builds the runbook the configuration describes, on this host: the store from `[store]`, the
/// fencer from `[fence]` (over `[ssh]` for `ssh`), the restore flow from `[restore]`, kubeadm from
/// `[kubeadm]` run locally, the workers from `[[workers]]`/`[worker_recovery]` over SSH, and the
/// kubectl post-checks run locally. Nothing is contacted yet. A missing or inconsistent
/// `[promotion]` is [`Error::Config`] naming the key.
pub fn build_runbook(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Runbook> {
    let p = &cfg.promotion;
    p.validate()?;
    cfg.fence.validate()?;
    cfg.hooks.validate()?;
    let url = cfg.store_url()?;
    let store = ObjectStoreSnapshotStore::from_url(url, &cfg.store_options()?)?;
    let claims = claim_store(cfg, &store)?;
    let snapshots = Arc::new(store);

    let fencer: Arc<dyn Fencer> = match cfg.fence.kind {
        FenceKind::Exec => Arc::new(ExecFencer::new(cfg.fence.command.clone(), cfg.fence.timeout)?),
        FenceKind::Ssh => {
            let target = cfg.ssh.target(&p.old_primary_name, &p.old_primary_address);
            let remote: Arc<dyn NodeRemote> = Arc::new(SshNodeRemote::new(target)?);
            Arc::new(SshFencer::new(remote, &cfg.fence.manifests_dir, cfg.fence.stop_timeout))
        }
        FenceKind::None => Arc::new(NoFence::i_accept_split_brain_risk()),
    };

    let local: Arc<dyn NodeRemote> = Arc::new(LocalNodeRemote::new(&p.node_name));
    let r = &cfg.restore;
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
        cfg.encryption_key()?,
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

    let mut targets = Vec::with_capacity(cfg.workers.len());
    for w in &cfg.workers {
        let remote: Arc<dyn NodeRemote> = Arc::new(SshNodeRemote::new(w.ssh_target(&cfg.ssh))?);
        targets.push(WorkerTarget { name: w.name.clone(), remote });
    }
    let rc = &cfg.worker_recovery;
    let readiness = Arc::new(KubectlReadiness::local(&rc.kubectl, &rc.admin_kubeconfig));
    let workers = Arc::new(ParallelWorkerRecovery::new(targets, rc.clone(), readiness, clock.clone()));
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
    fn the_shared_file_fills_every_section() {
        let c = Config::from_toml(FILE, "test").unwrap();
        assert_eq!(c.cluster.name, "prod");
        assert_eq!(c.workers[0].name, "worker-1");
        assert_eq!(c.ssh.user, "kube");
        assert_eq!(c.promotion.node_name, "master-2");
        assert_eq!(c.fence.command[1], "--hard");
        assert_eq!(c.hooks.post.len(), 1);
        assert_eq!(c.kubeadm.control_plane_endpoint, crate::control_plane::EndpointPolicy::Keep);
    }

    #[test]
    fn unknown_sections_and_keys_are_named() {
        let err = Config::from_toml(&format!("{FILE}\n[fencing]\nx = 1\n"), "kdr.toml").unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "fencing in kdr.toml"), "{err}");
        let err =
            Config::from_toml(&FILE.replace("kind = \"exec\"", "kind = \"exec\"\nretries = 3"), "kdr.toml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("retries"), "{err}");
        let err =
            Config::from_toml(&FILE.replace("kind = \"exec\"", "kind = \"none\""), "kdr.toml").unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "fence.i_accept_split_brain_risk"),
            "{err}"
        );
    }

    #[test]
    fn builds_a_runbook_and_claims_share_the_store_prefix() {
        let c = Config::from_toml(&FILE.replace("old_primary_name = \"master-1\"", ""), "test").unwrap();
        let err = build_runbook(&c, Arc::new(crate::clock::SystemClock)).unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "promotion.old_primary_name"), "{err}");
        let mut c = Config::from_toml(FILE, "test").unwrap();
        let err = build_runbook(&c, Arc::new(crate::clock::SystemClock)).unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "ssh.key_file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        for f in ["id", "known_hosts"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        c.ssh.key_file = dir.path().join("id");
        c.ssh.known_hosts = dir.path().join("known_hosts");
        build_runbook(&c, Arc::new(crate::clock::SystemClock)).unwrap();
        assert_eq!(claims_prefix_for("s3://bucket/prod/eu1").unwrap(), "prod/eu1");
        assert_eq!(claims_prefix_for("file:///var/backups/kdr").unwrap(), "");
        assert_eq!(claims_prefix_for("memory://kdr/prod").unwrap(), "kdr/prod");
    }

    #[test]
    fn the_claims_location_is_derived_once_and_the_old_monitor_key_must_agree() {
        let c = Config::from_toml(FILE, "kdr.toml").unwrap();
        assert_eq!(claims_prefix(&c).unwrap(), "kdr/prod", "the store URL's prefix");
        let moved = FILE.replace("[promotion]\n", "[promotion]\nclaims_prefix = \"/dr/claims-here/\"\n");
        let c = Config::from_toml(&moved, "kdr.toml").unwrap();
        assert_eq!(claims_prefix(&c).unwrap(), "dr/claims-here");
        // The runbook and the guard see the same store: what one claims, the other reads.
        let store = ObjectStoreSnapshotStore::from_url("memory://kdr/prod", &Default::default()).unwrap();
        let a = claim_store(&c, &store).unwrap();
        assert_eq!(a.path(3).as_ref(), "dr/claims-here/claims/epoch-3.json");

        // The old key, naming the same place: accepted; another place: refused, naming both keys.
        let same = format!("{moved}\n[monitor.self_fence]\nclaims_prefix = \"dr/claims-here\"\n");
        let c = Config::from_toml(&same, "kdr.toml").unwrap();
        assert_eq!(claims_prefix(&c).unwrap(), "dr/claims-here");
        let other = format!("{FILE}\n[monitor.self_fence]\nclaims_prefix = \"elsewhere\"\n");
        let c = Config::from_toml(&other, "kdr.toml").unwrap();
        let err = claims_prefix(&c).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "monitor.self_fence.claims_prefix"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"elsewhere\"")
                && msg.contains("\"kdr/prod\"")
                && msg.contains("promotion.claims_prefix"),
            "{msg}"
        );
        // Validation of the monitor's configuration refuses it too, before anything runs.
        let err = crate::monitor::config::validate(&c).unwrap_err();
        assert!(err.to_string().contains("monitor.self_fence.claims_prefix"), "{err}");
    }
}
