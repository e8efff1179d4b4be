//! [`SshFencer`]: a best-effort fence over SSH, for an old primary whose machine is still up.
//!
//! In order, on the old primary:
//! 1. move every static pod manifest from the manifest dir to `<dir>.kdr-fenced-epoch-<N>`
//!    (never deleted; a name already there gets a suffix), so that nothing restarts the control
//!    plane, not even a reboot;
//! 2. stop kubelet (and disable it, best effort);
//! 3. stop the control-plane pods still running (`crictl stopp`, label `tier=control-plane`, which
//!    kubeadm's static pods carry) — stopping kubelet alone leaves their containers running;
//! 4. poll until no control-plane pod is ready, within the stop timeout.
//!
//! A node that cannot be reached is an error: this fencer cannot tell a dead machine from a
//! partitioned one. For machines that may be down, use [`ExecFencer`](super::ExecFencer) with a
//! power or cloud API.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{FenceReport, FenceTarget, Fencer};
use crate::error::{Error, Result};
use crate::remote::{NodeRemote, RemoteCommand, shell_quote};

/// Fences over SSH (or any [`NodeRemote`]). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SshFencer {
    remote: Arc<dyn NodeRemote>,
    manifests_dir: PathBuf,
    stop_timeout: Duration,
    poll_interval: Duration,
}

const READY_PODS: &str = "crictl pods -q --label tier=control-plane --state ready";

impl SshFencer {
    /// A fencer acting through `remote` (the old primary) on `manifests_dir`.
    pub fn new(
        remote: Arc<dyn NodeRemote>,
        manifests_dir: impl Into<PathBuf>,
        stop_timeout: Duration,
    ) -> Self {
        Self {
            remote,
            manifests_dir: manifests_dir.into(),
            stop_timeout,
            poll_interval: Duration::from_secs(2),
        }
    }

    /// How often step 4 polls (default 2 s).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Where the manifests go for `epoch`.
    pub fn aside_dir(&self, epoch: u64) -> String {
        format!("{}.kdr-fenced-epoch-{epoch}", self.manifests_dir.to_string_lossy().trim_end_matches('/'))
    }

    fn move_command(&self, epoch: u64) -> String {
        let m = shell_quote(&self.manifests_dir.to_string_lossy());
        let a = shell_quote(&self.aside_dir(epoch));
        format!(
            "[ -d {m} ] || exit 0; mkdir -p {a} && for f in {m}/* {m}/.[!.]*; do [ -e \"$f\" ] || continue; \
             b=$(basename \"$f\"); if [ -e {a}/\"$b\" ]; then mv \"$f\" {a}/\"$b\".again-$$ || exit 1; \
             else mv \"$f\" {a}/ || exit 1; fi; echo \"moved $f\"; done"
        )
    }

    fn stop_pods_command(&self) -> String {
        format!("ids=$({READY_PODS}) || exit $?; [ -z \"$ids\" ] || crictl stopp $ids")
    }

    fn commands(&self, epoch: u64) -> Vec<String> {
        vec![
            self.move_command(epoch),
            "systemctl stop kubelet".into(),
            "systemctl disable kubelet".into(),
            self.stop_pods_command(),
        ]
    }

    async fn run(&self, command: &str, timeout: Duration) -> Result<String> {
        let c = RemoteCommand::new(command, timeout).with_sudo();
        let out = self.remote.run(&c).await?;
        Ok(out.check(self.remote.node(), &c)?.stdout)
    }
}

#[async_trait]
impl Fencer for SshFencer {
    fn plan(&self, target: &FenceTarget) -> Vec<String> {
        let mut lines: Vec<String> = self
            .commands(target.epoch)
            .into_iter()
            .map(|c| format!("on {} ({}): {c}", target.name, target.host))
            .collect();
        lines.push(format!(
            "on {}: poll `{READY_PODS}` until empty (timeout {})",
            target.name,
            humantime::format_duration(self.stop_timeout)
        ));
        lines
    }

    async fn fence(&self, target: &FenceTarget) -> Result<FenceReport> {
        let step = Duration::from_secs(60).min(self.stop_timeout);
        let [mv, stop, disable, stop_pods] =
            <[String; 4]>::try_from(self.commands(target.epoch)).expect("four");
        let mut actions = Vec::new();
        tracing::info!(node = %target.name, "fencing the old primary over SSH");
        let moved = self.run(&mv, step).await?;
        actions.extend(moved.lines().map(|l| format!("{l} -> {}", self.aside_dir(target.epoch))));
        self.run(&stop, step).await?;
        actions.push("kubelet stopped".into());
        match self.run(&disable, step).await {
            Ok(_) => actions.push("kubelet disabled".into()),
            Err(e) => actions
                .push(format!("kubelet not disabled ({e}); its manifests are gone, so it starts nothing")),
        }
        self.run(&stop_pods, step).await?;
        let poll = async {
            loop {
                let left = self.run(READY_PODS, step).await?;
                if left.trim().is_empty() {
                    return Ok::<_, Error>(());
                }
                tokio::time::sleep(self.poll_interval).await;
            }
        };
        tokio::time::timeout(self.stop_timeout, poll).await.map_err(|_| Error::Timeout {
            what: format!("control-plane pods on {} stopping", target.name),
            after: self.stop_timeout,
        })??;
        actions.push("no control-plane pod ready".into());
        Ok(FenceReport { method: "ssh".into(), actions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::remote::{RecordingNodeRemote, Reply};

    fn target() -> FenceTarget {
        FenceTarget { name: "master-1".into(), host: "192.168.30.200".into(), epoch: 3 }
    }

    #[tokio::test]
    async fn sequence_moves_then_stops_and_waits() {
        let fake = Arc::new(RecordingNodeRemote::new("master-1"));
        fake.respond("for f in", Reply::exit(0, "moved /etc/kubernetes/manifests/etcd.yaml\n", ""));
        let f = SshFencer::new(fake.clone(), "/etc/kubernetes/manifests", Duration::from_secs(5));
        let r = f.fence(&target()).await.unwrap();
        let cmds = fake.commands();
        assert!(cmds[0].contains("mkdir -p /etc/kubernetes/manifests.kdr-fenced-epoch-3"), "{cmds:?}");
        assert!(!cmds.iter().any(|c| c.contains("rm ")), "nothing is deleted: {cmds:?}");
        assert_eq!(&cmds[1..3], ["systemctl stop kubelet", "systemctl disable kubelet"]);
        assert!(cmds[3].contains("crictl stopp"));
        assert_eq!(cmds[4], READY_PODS);
        assert!(fake.recorded().iter().all(|c| c.command.sudo));
        assert_eq!(
            r.actions[0],
            "moved /etc/kubernetes/manifests/etcd.yaml -> /etc/kubernetes/manifests.kdr-fenced-epoch-3"
        );
    }

    #[tokio::test]
    async fn unreachable_or_pods_that_never_stop_fail_the_fence() {
        let fake = Arc::new(RecordingNodeRemote::new("master-1"));
        fake.set_unreachable(true);
        let f = SshFencer::new(fake.clone(), "/etc/kubernetes/manifests", Duration::from_secs(5));
        assert!(matches!(f.fence(&target()).await, Err(Error::Unavailable { .. })));

        let fake = Arc::new(RecordingNodeRemote::new("master-1"));
        fake.respond(READY_PODS, Reply::exit(0, "abc123\n", ""));
        let f = SshFencer::new(fake.clone(), "/etc/kubernetes/manifests", Duration::from_millis(300))
            .with_poll_interval(Duration::from_millis(50));
        assert!(matches!(f.fence(&target()).await, Err(Error::Timeout { .. })));

        let fake = Arc::new(RecordingNodeRemote::new("master-1"));
        fake.respond("systemctl stop kubelet", Reply::exit(1, "", "Failed to stop kubelet.service"));
        let f = SshFencer::new(fake.clone(), "/etc/kubernetes/manifests", Duration::from_secs(5));
        assert!(matches!(f.fence(&target()).await, Err(Error::CommandFailed { .. })));
    }
}
