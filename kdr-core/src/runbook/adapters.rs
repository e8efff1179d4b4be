//! The runbook's adapters over the restore flow ([`crate::restore`]) and worker recovery
//! ([`crate::workers`]): [`FlowRestore`] implements [`RestoreStep`], [`ParallelWorkerRecovery`]
//! implements [`WorkerRecovery`].
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use super::{PromotionMode, RestoreStep, WorkerOutcome, WorkerRecovery};
use crate::clock::Clock;
use crate::control_plane::JoinCommand;
use crate::error::{Error, Result};
use crate::etcd::{EtcdRestorer, RestoreSpec};
use crate::restore::{BundleMode, BundleTarget, Restore, RestoreOptions, SetSelector, bundle, download};
use crate::snapshot::keys::EncryptionKey;
use crate::snapshot::{Manifest, SnapshotStore};
use crate::workers::{
    NodeReadiness, RecoveryMode, RecoveryPlan, WorkerRecoveryConfig, WorkerTarget, recover_workers,
};

/// [`RestoreStep`] over [`Restore`]: restores the etcd data dir (the old one moved aside) and the
/// bundle's files for the promotion mode (new-host: the cluster identity only; same-host:
/// everything), after staging the whole bundle in a dir where [`KubeadmInit`] reads the old
/// ClusterConfiguration and kube-apiserver manifest.
///
/// A successful restore leaves a marker `restored-<set>.json` in the state dir: that is how
/// [`already_restored`](RestoreStep::already_restored) answers after a crash. (A crash between the
/// swap and the marker makes a resumed run restore again; the restore moves the first result
/// aside rather than deleting it, so nothing is lost.)
///
/// [`KubeadmInit`]: crate::control_plane::KubeadmInit
#[derive(Debug)]
pub struct FlowRestore {
    store: Arc<dyn SnapshotStore>,
    etcd: Arc<dyn EtcdRestorer>,
    clock: Arc<dyn Clock>,
    member: RestoreSpec,
    peer_url_source: String,
    mode: PromotionMode,
    root: PathBuf,
    staging: PathBuf,
    state_dir: PathBuf,
    key: Option<EncryptionKey>,
}

impl FlowRestore {
    /// A restore of the member `member` (its data dir the target), from `store` with `etcd`.
    /// The bundle goes under `root` (`/` in production), staged whole in `staging`.
    #[allow(clippy::too_many_arguments)] // each is a distinct, required input of the restore
    pub fn new(
        store: Arc<dyn SnapshotStore>,
        etcd: Arc<dyn EtcdRestorer>,
        clock: Arc<dyn Clock>,
        member: RestoreSpec,
        peer_url_source: impl Into<String>,
        mode: PromotionMode,
        root: impl Into<PathBuf>,
        staging: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        key: Option<EncryptionKey>,
    ) -> Self {
        Self {
            store,
            etcd,
            clock,
            member,
            peer_url_source: peer_url_source.into(),
            mode,
            root: root.into(),
            staging: staging.into(),
            state_dir: state_dir.into(),
            key,
        }
    }

    fn options(&self, manifest: &Manifest) -> RestoreOptions {
        let mode = match self.mode {
            PromotionMode::NewHost => BundleMode::NewHost,
            PromotionMode::SameHost => BundleMode::SameHost,
        };
        RestoreOptions {
            set: SetSelector::Id(manifest.id.clone()),
            member: self.member.clone(),
            peer_url_source: self.peer_url_source.clone(),
            bundle: BundleTarget::Install { mode, root: self.root.clone(), aside: None },
            encryption_key: self.key.clone(),
        }
    }

    fn marker(&self, manifest: &Manifest) -> PathBuf {
        self.state_dir.join(format!("restored-{}.json", manifest.id))
    }

    /// Writes the whole bundle under the staging dir; an earlier staging is moved aside.
    async fn stage(&self, manifest: &Manifest) -> Result<usize> {
        let Some(tar) = download::bundle_bytes(self.store.as_ref(), manifest, self.key.as_ref()).await?
        else {
            return Ok(0);
        };
        let entries = bundle::read_bundle(&tar, manifest)?;
        if std::fs::symlink_metadata(&self.staging).is_ok() {
            let aside = aside_path(&self.staging, &self.clock.utc().format("%Y%m%dT%H%M%SZ").to_string());
            std::fs::rename(&self.staging, &aside).map_err(|e| {
                Error::io(
                    format!(
                        "move the earlier bundle staging {} aside to {}",
                        self.staging.display(),
                        aside.display()
                    ),
                    e,
                )
            })?;
        }
        bundle::extract_to(&entries, &self.staging)?;
        Ok(entries.len())
    }
}

fn aside_path(p: &Path, stamp: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!(".kdr-replaced-{stamp}"));
    PathBuf::from(s)
}

#[async_trait]
impl RestoreStep for FlowRestore {
    async fn plan(&self, manifest: &Manifest) -> Result<Vec<String>> {
        let restore = Restore::new(self.store.as_ref(), self.etcd.as_ref(), self.clock.as_ref());
        let p = restore.plan(&self.options(manifest)).await?;
        let mut lines = vec![
            format!(
                "download and verify set {} ({} keys) to {}",
                p.set,
                p.total_keys,
                p.download_to.display()
            ),
            format!(
                "restore member {} (peer URL {}, from {}; initial cluster {}) into {}",
                p.name,
                p.peer_url,
                p.peer_url_source,
                p.initial_cluster,
                p.partial.display()
            ),
            format!("run: {}", p.etcd.command),
            if p.data_dir_exists {
                format!(
                    "swap it into {} (the existing dir is moved aside, never deleted)",
                    p.data_dir.display()
                )
            } else {
                format!("move it into {}", p.data_dir.display())
            },
            format!("bundle: {}", p.bundle),
            format!(
                "stage the whole bundle under {} (read by kubeadm config derivation)",
                self.staging.display()
            ),
        ];
        lines.extend(p.etcd.notes.iter().chain(&p.notes).map(|n| format!("note: {n}")));
        Ok(lines)
    }

    async fn already_restored(&self, manifest: &Manifest) -> Result<bool> {
        Ok(self.marker(manifest).is_file() && self.member.data_dir.is_dir())
    }

    async fn restore(&self, manifest: &Manifest) -> Result<serde_json::Value> {
        let staged = self.stage(manifest).await?;
        let restore = Restore::new(self.store.as_ref(), self.etcd.as_ref(), self.clock.as_ref());
        let report = restore.run(&self.options(manifest)).await?;
        let summary = serde_json::json!({
            "set": manifest.id.to_string(),
            "data_dir": report.plan.data_dir,
            "replaced": report.replaced,
            "bundle_files_installed": report.bundle.as_ref().map(|b| serde_json::to_value(b).unwrap_or_default()),
            "bundle_files_staged": staged,
            "staging": self.staging,
            "etcd_hash": report.etcd_hash,
        });
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| Error::io(format!("create state dir {}", self.state_dir.display()), e))?;
        std::fs::write(self.marker(manifest), serde_json::to_vec_pretty(&summary).unwrap_or_default())
            .map_err(|e| Error::io(format!("write restore marker {}", self.marker(manifest).display()), e))?;
        Ok(summary)
    }
}

/// [`WorkerRecovery`] over [`recover_workers`]: every worker in the configured mode, at most
/// `worker_recovery.concurrency` at a time, each reported to the journal as it finishes.
#[derive(Debug)]
pub struct ParallelWorkerRecovery {
    workers: Vec<WorkerTarget>,
    config: WorkerRecoveryConfig,
    readiness: Arc<dyn NodeReadiness>,
    clock: Arc<dyn Clock>,
}

impl ParallelWorkerRecovery {
    /// Recovery of `workers` per `config`, waiting for readiness through `readiness`.
    pub fn new(
        workers: Vec<WorkerTarget>,
        config: WorkerRecoveryConfig,
        readiness: Arc<dyn NodeReadiness>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { workers, config, readiness, clock }
    }
}

impl ParallelWorkerRecovery {
    /// One worker (boxed: the stream's closure then holds no borrowed argument, which keeps the
    /// future provably `Send`).
    fn recover_one<'a>(
        &'a self,
        w: WorkerTarget,
        plan: &'a RecoveryPlan,
        progress: &'a (dyn Fn(WorkerOutcome) + Send + Sync),
    ) -> Pin<Box<dyn Future<Output = WorkerOutcome> + Send + 'a>> {
        Box::pin(async move {
            let report = recover_workers(
                std::slice::from_ref(&w),
                plan,
                &self.config,
                self.readiness.as_ref(),
                self.clock.as_ref(),
            )
            .await;
            let r = &report.results[0];
            let o = WorkerOutcome {
                worker: r.worker.clone(),
                ok: r.ok(),
                detail: match &r.error {
                    None => format!("{} ok", r.mode),
                    Some((step, e)) => format!("{} failed at {step}: {e}", r.mode),
                },
                duration_ms: r.duration.as_millis() as u64,
            };
            progress(o.clone());
            o
        })
    }
}

#[async_trait]
impl WorkerRecovery for ParallelWorkerRecovery {
    fn needs_join_command(&self) -> bool {
        self.config.mode == RecoveryMode::Rejoin
    }

    fn plan(&self, endpoint: &str) -> Vec<String> {
        let what = match self.config.mode {
            RecoveryMode::Rewire => format!(
                "rewire: back up {kc}, point its server: at https://{endpoint}, restart kubelet",
                kc = self.config.kubelet_kubeconfig.display()
            ),
            RecoveryMode::Rejoin => format!(
                "rejoin: kubeadm reset -f, move aside {}, restart containerd and kubelet, kubeadm join {endpoint} \
                 (JoinConfiguration on stdin)",
                self.config.move_aside.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
            ),
        };
        let mut lines = vec![format!(
            "{} worker(s), {} at a time; each waits for kubelet active and its Node Ready (timeouts {}/{})",
            self.workers.len(),
            self.config.concurrency.max(1),
            humantime::format_duration(self.config.kubelet_active_timeout),
            humantime::format_duration(self.config.node_ready_timeout)
        )];
        lines.extend(self.workers.iter().map(|w| format!("{} ({}): {what}", w.name, w.remote.node())));
        lines
    }

    async fn recover(
        &self,
        endpoint: &str,
        join: Option<&JoinCommand>,
        skip: &BTreeSet<String>,
        progress: &(dyn Fn(WorkerOutcome) + Send + Sync),
    ) -> Result<Vec<WorkerOutcome>> {
        let plan = match self.config.mode {
            RecoveryMode::Rewire => RecoveryPlan::Rewire { endpoint: format!("https://{endpoint}") },
            RecoveryMode::Rejoin => RecoveryPlan::Rejoin {
                join: join.cloned().ok_or_else(|| Error::refused("rejoin mode needs a join command"))?,
            },
        };
        plan.validate()?;
        let todo: Vec<WorkerTarget> =
            self.workers.iter().filter(|w| !skip.contains(&w.name)).cloned().collect();
        let outcomes = futures::stream::iter(todo)
            .map(|w| self.recover_one(w, &plan, progress))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::NodeRemote;
    use crate::testing::remote::{RecordingNodeRemote, Reply};
    use crate::workers::NodeState;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Debug)]
    struct AlwaysReady;

    #[async_trait]
    impl NodeReadiness for AlwaysReady {
        async fn node_state(&self, _node: &str) -> Result<NodeState> {
            Ok(NodeState::Ready)
        }
    }

    #[tokio::test]
    async fn rewires_all_but_the_skipped_reporting_each_and_failures_separately() {
        let nodes: Vec<Arc<RecordingNodeRemote>> =
            (1..=3).map(|i| Arc::new(RecordingNodeRemote::new(format!("worker-{i}")))).collect();
        for n in &nodes {
            n.respond("grep -E", Reply::exit(0, "    server: https://10.0.0.1:6443\n", ""))
                .respond("systemctl is-active", Reply::exit(0, "active\n", ""));
        }
        // Each rewire phase reaches a node as one step script; a real node prints a `kdr-step:`
        // marker before each step, so the failure is attributed to the step that was running.
        nodes[2].respond(
            "systemctl restart kubelet",
            Reply::exit(
                1,
                "kdr-step: read kubelet kubeconfig\n    server: https://10.0.0.1:6443\n\
                 kdr-step: back up kubelet kubeconfig\nkdr-step: rewrite kubelet kubeconfig\n\
                 kdr-step: restart kubelet\n",
                "Job for kubelet.service failed",
            ),
        );
        let targets = nodes
            .iter()
            .map(|n| WorkerTarget {
                name: n.node().to_owned(),
                remote: n.clone() as Arc<dyn crate::remote::NodeRemote>,
            })
            .collect();
        let config = WorkerRecoveryConfig { poll_interval: Duration::from_millis(10), ..Default::default() };
        let rec = ParallelWorkerRecovery::new(
            targets,
            config,
            Arc::new(AlwaysReady),
            Arc::new(crate::clock::SystemClock),
        );
        assert!(!rec.needs_join_command());
        assert!(rec.plan("10.0.0.2:6443")[1].contains("https://10.0.0.2:6443"));
        let seen = Mutex::new(Vec::new());
        let progress = |o: WorkerOutcome| seen.lock().unwrap().push(o.worker);
        let skip = BTreeSet::from(["worker-1".to_owned()]);
        let out = rec.recover("10.0.0.2:6443", None, &skip, &progress).await.unwrap();
        assert_eq!(out.len(), 2);
        assert!(nodes[0].commands().is_empty(), "a skipped worker is not touched");
        let w2 = out.iter().find(|o| o.worker == "worker-2").unwrap();
        let w3 = out.iter().find(|o| o.worker == "worker-3").unwrap();
        assert!(w2.ok, "{w2:?}");
        assert!(!w3.ok && w3.detail.contains("restart kubelet"), "{w3:?}");
        assert!(nodes[1].commands().iter().any(|c| c.contains("https://10.0.0.2:6443")));
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, ["worker-2", "worker-3"]);
    }
}
