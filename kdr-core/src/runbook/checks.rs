//! Post-promotion checks (seed 000's validation) and the clean-up of the old primary.
//!
//! [`KubectlPostChecks`] runs `kubectl` through a [`NodeRemote`] (the new primary, locally or
//! over SSH), each check polling until it passes or its timeout expires, never sleeping a fixed
//! time:
//! 1. `nodes-ready`: every node but the old primary (and workers already reported failed) Ready;
//! 2. `snapshot-pods`: every pod the backup set names (`namespace/name`, [`PodNames`]) present,
//!    except the old primary's static pods in `kube-system` (`<name>-<old primary>`, e.g.
//!    `etcd-master-1`), which cannot come back on another host; sets written before kdr recorded
//!    names fall back to comparing counts, and say so. Checked before the old primary's Node is
//!    deleted, which garbage-collects its pods;
//! 3. `test-pod`: a pod created and Running (scheduling, kubelet and the CNI work without
//!    re-applying anything), then deleted;
//! 4. `endpoint-references`: the copies of the API server endpoint that kubeadm keeps in the
//!    cluster (`kube-public/cluster-info`, the `kube-system/kube-proxy` kubeconfig) name the new
//!    endpoint (kubeadm init rewrites them; a stale one breaks new joins or kube-proxy);
//! 5. `old-primary-node`: the old primary's Node object deleted;
//! 6. `old-primary-etcd-member`: no etcd member named after the old primary or at its address
//!    (a restore with a new `--initial-cluster` already leaves none; seed 004 shows what happens
//!    otherwise).
//!
//! When the old primary is this node (a same-host rebuild, [`CheckContext::old_primary_here`]),
//! 5 and 6 are skipped with a note (they would delete this node's own Node and etcd member), and
//! `nodes-ready` waits for this node like any other.
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::control_plane::NodeIdentity;
use crate::error::{Error, Result};
use crate::remote::{NodeRemote, RemoteCommand, shell_quote};
use crate::snapshot::PodNames;

/// How many missing pods a failing `snapshot-pods` names.
const MISSING_NAMED: usize = 5;

/// What the checks need to know about the promotion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckContext {
    /// The promotion epoch (names the test pod).
    pub epoch: u64,
    /// The new primary.
    pub this_node: NodeIdentity,
    /// The old primary, whose Node and etcd member are removed.
    pub old_primary: NodeIdentity,
    /// The number of pods the backup set recorded, if its inventory has them.
    pub expected_pods: Option<u64>,
    /// The pods the backup set names, if its manifest records them (compared instead of
    /// `expected_pods`).
    #[serde(default)]
    pub recorded_pods: Option<PodNames>,
    /// The new API server endpoint (`host:port`), once known.
    pub endpoint: Option<String>,
    /// Workers whose recovery failed (not expected Ready; already reported).
    pub failed_workers: Vec<String>,
    /// Why the old primary is this node, if it is (a same-host rebuild, seeds 001/004: same
    /// name, or its address is this host's). Then its Node and etcd member are this node's own:
    /// the clean-up skips them, and `nodes-ready` waits for this node as usual.
    #[serde(default)]
    pub old_primary_is_this_node: Option<String>,
}

impl CheckContext {
    /// Whether the old primary is this node ([`old_primary_is_this_node`](Self::old_primary_is_this_node),
    /// or the same node name).
    pub fn old_primary_here(&self) -> bool {
        self.old_primary_is_this_node.is_some() || self.old_primary.name == self.this_node.name
    }

    /// The journal's note for a skipped clean-up step.
    fn skipped_clean_up(&self, what: &str) -> String {
        format!(
            "skipped: the old primary {} is this node ({}); {what} is this node's own and is kept",
            self.old_primary.name,
            self.old_primary_is_this_node.as_deref().unwrap_or("same node name")
        )
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name (`nodes-ready`, ...).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// Runs the post-promotion checks.
///
/// Guarantees: every check has a timeout; [`run`](Self::run) runs all checks even when one
/// fails and returns every result (`Err` only if the checks could not run at all); the
/// clean-up is idempotent.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait PostChecker: Send + Sync + fmt::Debug {
    /// What it would run, for the dry-run plan.
    fn plan(&self, ctx: &CheckContext) -> Vec<String>;

    /// Runs the checks and the clean-up.
    async fn run(&self, ctx: &CheckContext) -> Result<Vec<CheckResult>>;
}

/// Settings of the post-checks (part of `[promotion]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostCheckSettings {
    /// The kubectl binary on the new primary.
    pub kubectl: String,
    /// The kubeconfig kubectl uses there.
    pub kubeconfig: String,
    /// How long each check may take.
    #[serde(with = "crate::remote::ssh::serde_duration")]
    pub timeout: Duration,
    /// How often a check polls.
    #[serde(with = "crate::remote::ssh::serde_duration")]
    pub poll_interval: Duration,
    /// The image of the test pod (it must be pullable by the nodes, or already on them).
    pub test_pod_image: String,
    /// The namespace of the test pod.
    pub test_pod_namespace: String,
}

impl Default for PostCheckSettings {
    fn default() -> Self {
        Self {
            kubectl: "kubectl".into(),
            kubeconfig: "/etc/kubernetes/admin.conf".into(),
            timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            test_pod_image: "registry.k8s.io/pause:3.10".into(),
            test_pod_namespace: "default".into(),
        }
    }
}

/// The post-checks with kubectl. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct KubectlPostChecks {
    remote: Arc<dyn NodeRemote>,
    settings: PostCheckSettings,
}

#[derive(Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Deserialize)]
struct NodeObj {
    metadata: Meta,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
}

#[derive(Deserialize)]
struct PodObj {
    metadata: PodMeta,
}

#[derive(Deserialize)]
struct PodMeta {
    #[serde(default)]
    namespace: String,
    name: String,
}

/// Whether `pod` (`namespace/name`) is a static pod of the old primary: its mirror pod is named
/// `<manifest name>-<node name>` in `kube-system`. It cannot come back on another host, so it is
/// not waited for; when the old primary is this node (same-host mode) it does come back.
fn old_primary_static_pod(ctx: &CheckContext, pod: &str) -> bool {
    ctx.old_primary.name != ctx.this_node.name
        && pod
            .strip_prefix("kube-system/")
            .and_then(|name| name.strip_suffix(ctx.old_primary.name.as_str()))
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('-'))
}

/// The recorded pods `snapshot-pods` waits for, and how many it leaves out as old-primary static
/// pods.
fn pods_to_expect<'a>(ctx: &CheckContext, recorded: &'a PodNames) -> (Vec<&'a str>, usize) {
    let (excluded, expected): (Vec<&str>, Vec<&str>) =
        recorded.names.iter().map(String::as_str).partition(|p| old_primary_static_pod(ctx, p));
    (expected, excluded.len())
}

/// What `snapshot-pods` says about the names it was given, after the counts.
fn recorded_note(ctx: &CheckContext, recorded: &PodNames, excluded: usize) -> String {
    let mut note = String::new();
    if excluded > 0 {
        note.push_str(&format!(
            "; {excluded} static pod(s) of the old primary {} not expected",
            ctx.old_primary.name
        ));
    }
    if recorded.truncated {
        note.push_str(&format!(
            "; the backup set names only the first {} of {} pods",
            recorded.names.len(),
            ctx.expected_pods.map_or_else(|| "more".to_owned(), |n| n.to_string())
        ));
    }
    note
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
}

/// The outcome of one poll.
enum Poll {
    Done(String),
    NotYet(String),
}

impl KubectlPostChecks {
    /// Checks run through `remote` (the new primary).
    pub fn new(remote: Arc<dyn NodeRemote>, settings: PostCheckSettings) -> Self {
        Self { remote, settings }
    }

    fn kubectl(&self, args: &str) -> String {
        format!("{} --kubeconfig {} {args}", self.settings.kubectl, shell_quote(&self.settings.kubeconfig))
    }

    fn test_pod(&self, epoch: u64) -> String {
        format!("kdr-postcheck-epoch-{epoch}")
    }

    fn etcdctl(&self, ctx: &CheckContext, args: &str) -> String {
        self.kubectl(&format!(
            "-n kube-system exec etcd-{} -- etcdctl --endpoints=https://127.0.0.1:2379 \
             --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/server.crt \
             --key=/etc/kubernetes/pki/etcd/server.key {args}",
            ctx.this_node.name
        ))
    }

    async fn run_ok(&self, command: &str, stdin: Option<&[u8]>) -> Result<String> {
        let c = RemoteCommand::new(command, self.settings.timeout.min(Duration::from_secs(120))).with_sudo();
        let out = match stdin {
            Some(bytes) => self.remote.run_with_stdin(&c, bytes).await?,
            None => self.remote.run(&c).await?,
        };
        Ok(out.check(self.remote.node(), &c)?.stdout)
    }

    /// Polls `f` until it says done, an error that is not retryable, or the timeout.
    async fn poll<F, Fut>(&self, name: &str, mut f: F) -> CheckResult
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Poll>>,
    {
        let mut last = String::from("no answer yet");
        let run = async {
            loop {
                match f().await {
                    Ok(Poll::Done(detail)) => return Ok(detail),
                    Ok(Poll::NotYet(detail)) => last = detail,
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(self.settings.poll_interval).await;
            }
        };
        let r: std::result::Result<Result<String>, _> =
            tokio::time::timeout(self.settings.timeout, run).await;
        match r {
            Ok(Ok(detail)) => CheckResult { name: name.into(), ok: true, detail },
            Ok(Err(e)) => CheckResult { name: name.into(), ok: false, detail: e.to_string() },
            Err(_) => CheckResult {
                name: name.into(),
                ok: false,
                detail: format!("not within {}: {last}", humantime::format_duration(self.settings.timeout)),
            },
        }
    }

    async fn nodes_ready(&self, ctx: &CheckContext) -> Result<Poll> {
        let out = self.run_ok(&self.kubectl("get nodes -o json"), None).await?;
        let list: List<NodeObj> = serde_json::from_str(&out)
            .map_err(|e| Error::integrity("kubectl get nodes output", e.to_string()))?;
        let mut not_ready = Vec::new();
        let mut ready = 0;
        let mut seen_self = false;
        // The old primary's Node is not waited for, unless it is this node's (the same name, a
        // same-host rebuild): then it is the node that must be Ready.
        let skip_old = ctx.old_primary.name != ctx.this_node.name;
        for n in &list.items {
            let name = &n.metadata.name;
            if (skip_old && *name == ctx.old_primary.name) || ctx.failed_workers.contains(name) {
                continue;
            }
            seen_self |= *name == ctx.this_node.name;
            if n.status.conditions.iter().any(|c| c.kind == "Ready" && c.status == "True") {
                ready += 1;
            } else {
                not_ready.push(name.clone());
            }
        }
        if !seen_self {
            return Ok(Poll::NotYet(format!("node {} not registered yet", ctx.this_node.name)));
        }
        Ok(if not_ready.is_empty() {
            Poll::Done(format!("{ready} nodes Ready"))
        } else {
            Poll::NotYet(format!("not Ready: {}", not_ready.join(", ")))
        })
    }

    async fn pods(&self) -> Result<Vec<PodObj>> {
        let out = self.run_ok(&self.kubectl("get pods -A -o json"), None).await?;
        let list: List<PodObj> = serde_json::from_str(&out)
            .map_err(|e| Error::integrity("kubectl get pods output", e.to_string()))?;
        Ok(list.items)
    }

    /// Every recorded pod present, by `namespace/name`.
    async fn named_pods_present(&self, ctx: &CheckContext, recorded: &PodNames) -> Result<Poll> {
        let present: std::collections::HashSet<String> = self
            .pods()
            .await?
            .into_iter()
            .map(|p| format!("{}/{}", p.metadata.namespace, p.metadata.name))
            .collect();
        let (expected, excluded) = pods_to_expect(ctx, recorded);
        let missing: Vec<&str> = expected.iter().copied().filter(|p| !present.contains(*p)).collect();
        let note = recorded_note(ctx, recorded, excluded);
        Ok(if missing.is_empty() {
            Poll::Done(format!("all {} pods named in the backup set present{note}", expected.len()))
        } else {
            let more = missing.len().saturating_sub(MISSING_NAMED);
            Poll::NotYet(format!(
                "{} of {} pods named in the backup set missing: {}{}{note}",
                missing.len(),
                expected.len(),
                missing[..missing.len().min(MISSING_NAMED)].join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ))
        })
    }

    /// At least as many pods as recorded: for backup sets without pod names.
    async fn pod_count_present(&self, expected: u64) -> Result<Poll> {
        let n = self.pods().await?.len() as u64;
        let detail = format!(
            "{n} pods present, {expected} recorded in the backup set (counts only: the set predates \
             recorded pod names)"
        );
        Ok(if n >= expected { Poll::Done(detail) } else { Poll::NotYet(detail) })
    }

    async fn test_pod_running(&self, ctx: &CheckContext) -> Result<Poll> {
        let name = self.test_pod(ctx.epoch);
        let ns = shell_quote(&self.settings.test_pod_namespace);
        let phase = self
            .run_ok(&self.kubectl(&format!("get pod {name} -n {ns} -o jsonpath={{.status.phase}}")), None)
            .await?;
        Ok(match phase.trim() {
            "Running" => Poll::Done(format!("test pod {name} Running")),
            "Failed" | "Succeeded" => {
                return Err(Error::integrity(format!("test pod {name}"), format!("phase {}", phase.trim())));
            }
            other => Poll::NotYet(format!("test pod {name} phase {other:?}")),
        })
    }

    fn pod_manifest(&self, ctx: &CheckContext) -> String {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.test_pod(ctx.epoch),
                "namespace": self.settings.test_pod_namespace,
                "labels": {"app.kubernetes.io/managed-by": "kdr"}
            },
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "check", "image": self.settings.test_pod_image}]
            }
        })
        .to_string()
    }

    fn endpoint_queries(&self) -> [(&'static str, String); 2] {
        [
            (
                "kube-public/cluster-info",
                self.kubectl("-n kube-public get configmap cluster-info -o jsonpath={.data.kubeconfig}"),
            ),
            (
                "kube-system/kube-proxy",
                self.kubectl("-n kube-system get configmap kube-proxy -o jsonpath={.data.kubeconfig\\.conf}"),
            ),
        ]
    }

    async fn endpoint_references(&self, endpoint: &str) -> Result<Poll> {
        let want = format!("https://{endpoint}");
        let mut stale = Vec::new();
        for (what, q) in self.endpoint_queries() {
            let text = self.run_ok(&q, None).await?;
            let servers: Vec<&str> =
                text.lines().filter_map(|l| l.trim().strip_prefix("server:")).map(str::trim).collect();
            if servers.is_empty() || servers.iter().any(|s| *s != want) {
                stale.push(format!(
                    "{what} has server {}",
                    if servers.is_empty() { "(none)".into() } else { servers.join(", ") }
                ));
            }
        }
        Ok(if stale.is_empty() {
            Poll::Done(format!("cluster-info and kube-proxy name {want}"))
        } else {
            Poll::NotYet(format!(
                "{} instead of {want}; fix with `kubeadm init phase bootstrap-token` and `kubeadm init phase addon \
                 kube-proxy` on the new primary",
                stale.join("; ")
            ))
        })
    }

    async fn remove_old_node(&self, ctx: &CheckContext) -> Result<Poll> {
        let old = shell_quote(&ctx.old_primary.name);
        self.run_ok(&self.kubectl(&format!("delete node {old} --ignore-not-found")), None).await?;
        let left =
            self.run_ok(&self.kubectl(&format!("get node {old} --ignore-not-found -o name")), None).await?;
        Ok(if left.trim().is_empty() {
            Poll::Done(format!("Node {} absent", ctx.old_primary.name))
        } else {
            Poll::NotYet(format!("Node {} still present", ctx.old_primary.name))
        })
    }

    fn stale(&self, ctx: &CheckContext, m: &Member) -> bool {
        m.name == ctx.old_primary.name
            || m.peer_urls.iter().any(|u| {
                url::Url::parse(u).ok().and_then(|u| u.host_str().map(str::to_owned)).as_deref()
                    == Some(ctx.old_primary.address.as_str())
            })
    }

    async fn remove_old_member(&self, ctx: &CheckContext) -> Result<Poll> {
        let list = self.run_ok(&self.etcdctl(ctx, "member list -w json"), None).await?;
        let list: MemberList = serde_json::from_str(&list)
            .map_err(|e| Error::integrity("etcdctl member list output", e.to_string()))?;
        let stale: Vec<&Member> = list.members.iter().filter(|m| self.stale(ctx, m)).collect();
        if stale.is_empty() {
            return Ok(Poll::Done(format!("{} etcd member(s), none of the old primary", list.members.len())));
        }
        for m in &stale {
            self.run_ok(&self.etcdctl(ctx, &format!("member remove {:x}", m.id)), None).await?;
        }
        Ok(Poll::NotYet(format!(
            "removed stale member(s) {}",
            stale.iter().map(|m| format!("{:x} ({})", m.id, m.name)).collect::<Vec<_>>().join(", ")
        )))
    }
}

#[async_trait]
impl PostChecker for KubectlPostChecks {
    fn plan(&self, ctx: &CheckContext) -> Vec<String> {
        let t = humantime::format_duration(self.settings.timeout);
        let (old_node, old_member) = if ctx.old_primary_here() {
            (ctx.skipped_clean_up("its Node"), ctx.skipped_clean_up("its etcd member"))
        } else {
            (
                format!(
                    "`{}`",
                    self.kubectl(&format!("delete node {} --ignore-not-found", ctx.old_primary.name))
                ),
                format!(
                    "`{}`, removing members named {} or at {}",
                    self.etcdctl(ctx, "member list -w json"),
                    ctx.old_primary.name,
                    ctx.old_primary.address
                ),
            )
        };
        vec![
            if ctx.old_primary.name == ctx.this_node.name {
                format!(
                    "nodes-ready: poll `{}` until all are Ready, this node included (timeout {t})",
                    self.kubectl("get nodes -o json")
                )
            } else {
                format!(
                    "nodes-ready: poll `{}` until all but {} are Ready (timeout {t})",
                    self.kubectl("get nodes -o json"),
                    ctx.old_primary.name
                )
            },
            match (&ctx.recorded_pods, ctx.expected_pods) {
                (Some(recorded), _) => {
                    let (expected, excluded) = pods_to_expect(ctx, recorded);
                    format!(
                        "snapshot-pods: poll `{}` until the {} pods named in the backup set are present{} (timeout {t})",
                        self.kubectl("get pods -A -o json"),
                        expected.len(),
                        recorded_note(ctx, recorded, excluded)
                    )
                }
                (None, Some(n)) => format!(
                    "snapshot-pods: poll `{}` until it lists at least {n} pods (counts only: the backup set \
                     predates recorded pod names) (timeout {t})",
                    self.kubectl("get pods -A -o json")
                ),
                (None, None) => "snapshot-pods: skipped (the backup set has no pod inventory)".into(),
            },
            format!(
                "test-pod: `{}` (pod {} image {}), poll until Running, then delete it",
                self.kubectl("apply -f -"),
                self.test_pod(ctx.epoch),
                self.settings.test_pod_image
            ),
            format!("old-primary-node: {old_node}"),
            format!("old-primary-etcd-member: {old_member}"),
        ]
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Vec<CheckResult>> {
        let mut results = vec![self.poll("nodes-ready", || self.nodes_ready(ctx)).await];
        results.push(match (&ctx.recorded_pods, ctx.expected_pods) {
            (Some(recorded), _) => {
                self.poll("snapshot-pods", || self.named_pods_present(ctx, recorded)).await
            }
            (None, Some(n)) => self.poll("snapshot-pods", || self.pod_count_present(n)).await,
            (None, None) => CheckResult {
                name: "snapshot-pods".into(),
                ok: true,
                detail: "skipped: the backup set's inventory records no pods".into(),
            },
        });
        let manifest = self.pod_manifest(ctx);
        let created = self.run_ok(&self.kubectl("apply -f -"), Some(manifest.as_bytes())).await;
        results.push(match created {
            Ok(_) => {
                let r = self.poll("test-pod", || self.test_pod_running(ctx)).await;
                let ns = shell_quote(&self.settings.test_pod_namespace);
                let del = self.kubectl(&format!(
                    "delete pod {} -n {ns} --ignore-not-found --wait=false",
                    self.test_pod(ctx.epoch)
                ));
                if let Err(e) = self.run_ok(&del, None).await {
                    tracing::warn!(error = %e, "could not delete the test pod");
                }
                r
            }
            Err(e) => CheckResult {
                name: "test-pod".into(),
                ok: false,
                detail: format!("could not create it: {e}"),
            },
        });
        if let Some(endpoint) = &ctx.endpoint {
            results.push(self.poll("endpoint-references", || self.endpoint_references(endpoint)).await);
        }
        if ctx.old_primary_here() {
            // Same host: deleting "the old primary's" Node or etcd member would remove this node's.
            for (name, what) in
                [("old-primary-node", "its Node"), ("old-primary-etcd-member", "its etcd member")]
            {
                results.push(CheckResult { name: name.into(), ok: true, detail: ctx.skipped_clean_up(what) });
            }
            return Ok(results);
        }
        results.push(self.poll("old-primary-node", || self.remove_old_node(ctx)).await);
        results.push(self.poll("old-primary-etcd-member", || self.remove_old_member(ctx)).await);
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::remote::{RecordingNodeRemote, Reply};

    const NODES: &str = r#"{"items":[
      {"metadata":{"name":"master-1"},"status":{"conditions":[{"type":"Ready","status":"Unknown"}]}},
      {"metadata":{"name":"master-2"},"status":{"conditions":[{"type":"Ready","status":"True"}]}},
      {"metadata":{"name":"worker-1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}]}"#;

    fn ctx() -> CheckContext {
        CheckContext {
            epoch: 2,
            this_node: NodeIdentity { name: "master-2".into(), address: "192.168.30.202".into() },
            old_primary: NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() },
            expected_pods: Some(2),
            recorded_pods: None,
            endpoint: Some("192.168.30.202:6443".into()),
            failed_workers: vec![],
            old_primary_is_this_node: None,
        }
    }

    /// `kubectl get pods -A -o json` output listing `pods` (`namespace/name`).
    fn pods_json(pods: &[&str]) -> String {
        let items: Vec<serde_json::Value> = pods
            .iter()
            .map(|p| {
                let (ns, name) = p.split_once('/').unwrap();
                serde_json::json!({"kind": "Pod", "metadata": {"namespace": ns, "name": name}, "status": {"phase": "Running"}})
            })
            .collect();
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
    }

    /// A context whose backup set names `pods`.
    fn ctx_naming(pods: &[&str]) -> CheckContext {
        CheckContext {
            expected_pods: Some(pods.len() as u64),
            recorded_pods: Some(PodNames {
                names: pods.iter().map(|p| (*p).to_owned()).collect(),
                truncated: false,
            }),
            ..ctx()
        }
    }

    const RECORDED: &[&str] = &[
        "default/web-0",
        "default/web-1",
        "kube-system/coredns-7db6d8ff4d-x2x9k",
        "kube-system/etcd-master-1",
        "kube-system/kube-apiserver-master-1",
        "kube-system/kube-proxy-master-1-extra",
    ];

    async fn snapshot_pods(ctx: &CheckContext, listed: &[&str]) -> CheckResult {
        let fake = healthy();
        fake.respond("get pods -A -o json", Reply::exit(0, &pods_json(listed), ""));
        let results = KubectlPostChecks::new(fake, settings()).run(ctx).await.unwrap();
        results.into_iter().find(|r| r.name == "snapshot-pods").unwrap()
    }

    fn settings() -> PostCheckSettings {
        PostCheckSettings {
            timeout: Duration::from_millis(500),
            poll_interval: Duration::from_millis(20),
            ..Default::default()
        }
    }

    fn healthy() -> Arc<RecordingNodeRemote> {
        let fake = Arc::new(RecordingNodeRemote::new("master-2"));
        fake.respond("get nodes -o json", Reply::exit(0, NODES, ""))
            .respond("get pods -A -o json", Reply::exit(0, &pods_json(&["default/a", "default/b", "default/c"]), ""))
            .respond("jsonpath={.status.phase}", Reply::exit(0, "Running", ""))
            .respond("cluster-info", Reply::exit(0, "clusters:\n- cluster:\n    server: https://192.168.30.202:6443\n", ""))
            .respond("configmap kube-proxy", Reply::exit(0, "    server: https://192.168.30.202:6443\n", ""))
            .respond(
                "member list -w json",
                Reply::exit(
                    0,
                    r#"{"members":[{"ID":12345678901234567890,"name":"master-2","peerURLs":["https://192.168.30.202:2380"]}]}"#,
                    "",
                ),
            );
        fake
    }

    #[tokio::test]
    async fn all_pass_on_a_healthy_cluster_and_the_old_node_is_deleted() {
        let fake = healthy();
        let checks = KubectlPostChecks::new(fake.clone(), settings());
        let results = checks.run(&ctx()).await.unwrap();
        assert!(results.iter().all(|r| r.ok), "{results:#?}");
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "nodes-ready",
                "snapshot-pods",
                "test-pod",
                "endpoint-references",
                "old-primary-node",
                "old-primary-etcd-member"
            ]
        );
        let cmds = fake.commands();
        assert!(cmds.iter().any(|c| c.ends_with("delete node master-1 --ignore-not-found")), "{cmds:?}");
        let apply = fake.recorded().into_iter().find(|c| c.command.command.ends_with("apply -f -")).unwrap();
        let pod: serde_json::Value = serde_json::from_slice(&apply.stdin.unwrap()).unwrap();
        assert_eq!(pod["metadata"]["name"], "kdr-postcheck-epoch-2");
        assert!(cmds.iter().any(|c| c.contains("delete pod kdr-postcheck-epoch-2")));
        assert!(!cmds.iter().any(|c| c.contains("member remove")));
    }

    #[tokio::test]
    async fn stale_member_is_removed_and_failures_are_reported_not_hidden() {
        let fake = healthy();
        fake.respond("configmap kube-proxy", Reply::exit(0, "    server: https://192.168.30.200:6443\n", ""));
        fake.respond("get pods -A -o json", Reply::exit(0, &pods_json(&["default/a"]), ""))
            .respond("jsonpath={.status.phase}", Reply::exit(0, "Pending", ""))
            .respond(
                "member list -w json",
                Reply::exit(
                    0,
                    r#"{"members":[{"ID":1,"name":"master-2","peerURLs":["https://192.168.30.202:2380"]},
                                   {"ID":255,"name":"etcd-old","peerURLs":["https://192.168.30.200:2380"]}]}"#,
                    "",
                ),
            );
        let checks = KubectlPostChecks::new(fake.clone(), settings());
        let results = checks.run(&ctx()).await.unwrap();
        let by = |n: &str| results.iter().find(|r| r.name == n).unwrap().clone();
        assert!(!by("snapshot-pods").ok && by("snapshot-pods").detail.contains("1 pods present, 2 recorded"));
        assert!(!by("test-pod").ok && by("test-pod").detail.contains("Pending"), "{:?}", by("test-pod"));
        assert!(by("nodes-ready").ok);
        let refs = by("endpoint-references");
        assert!(
            !refs.ok && refs.detail.contains("kube-system/kube-proxy has server https://192.168.30.200:6443"),
            "{refs:?}"
        );
        // The member keeps being listed by the fake, so the check removes it and, still seeing it, fails.
        assert!(fake.commands().iter().any(|c| c.contains("member remove ff")), "{:?}", fake.commands());
        assert!(!by("old-primary-etcd-member").ok);
    }

    #[tokio::test]
    async fn recorded_pods_present_by_name_pass_without_the_old_primarys_static_pods() {
        // The new primary runs its own static pods; the old primary's cannot come back.
        let listed = [
            "default/web-0",
            "default/web-1",
            "kube-system/coredns-7db6d8ff4d-x2x9k",
            "kube-system/kube-proxy-master-1-extra",
            "kube-system/etcd-master-2",
            "kube-system/kube-apiserver-master-2",
            "default/new-since-the-backup",
        ];
        let r = snapshot_pods(&ctx_naming(RECORDED), &listed).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.detail,
            "all 4 pods named in the backup set present; 2 static pod(s) of the old primary master-1 not expected"
        );
    }

    #[tokio::test]
    async fn a_different_set_of_pods_fails_naming_the_missing_ones_even_with_enough_pods() {
        // As many pods as recorded (the old count check passed this), but not the same ones.
        let listed = [
            "default/web-0",
            "default/web-1-replacement",
            "kube-system/coredns-7db6d8ff4d-x2x9k",
            "kube-system/etcd-master-2",
            "kube-system/kube-apiserver-master-2",
            "default/other",
            "default/another",
        ];
        let r = snapshot_pods(&ctx_naming(RECORDED), &listed).await;
        assert!(!r.ok, "{r:?}");
        assert!(
            r.detail.starts_with("not within 500ms: 2 of 4 pods named in the backup set missing: "),
            "{r:?}"
        );
        assert!(
            r.detail.contains("missing: default/web-1, kube-system/kube-proxy-master-1-extra; 2 static"),
            "{r:?}"
        );

        // Many missing: the first few are named, the rest counted.
        let many: Vec<String> = (0..8).map(|i| format!("default/job-{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let r = snapshot_pods(&ctx_naming(&many), &["default/job-0"]).await;
        assert!(
            !r.ok && r.detail.ends_with(
                "7 of 8 pods named in the backup set missing: default/job-1, default/job-2, default/job-3, \
                 default/job-4, default/job-5 and 2 more"
            ),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn same_host_promotion_waits_for_its_own_static_pods() {
        // The old primary rebuilt as itself: its static pods do come back, so they are expected.
        let mut c = ctx_naming(&["kube-system/etcd-master-1", "default/web-0"]);
        c.this_node = c.old_primary.clone();
        let r = snapshot_pods(&c, &["default/web-0"]).await;
        assert!(
            !r.ok
                && r.detail
                    .contains("1 of 2 pods named in the backup set missing: kube-system/etcd-master-1"),
            "{r:?}"
        );
        let r = snapshot_pods(&c, &["default/web-0", "kube-system/etcd-master-1"]).await;
        assert!(r.ok && r.detail == "all 2 pods named in the backup set present", "{r:?}");
    }

    #[tokio::test]
    async fn a_truncated_list_says_so_and_an_old_manifest_falls_back_to_counts() {
        let mut c = ctx_naming(&["default/web-0"]);
        c.expected_pods = Some(10_001);
        c.recorded_pods.as_mut().unwrap().truncated = true;
        let r = snapshot_pods(&c, &["default/web-0"]).await;
        assert!(r.ok, "{r:?}");
        assert!(r.detail.ends_with("the backup set names only the first 1 of 10001 pods"), "{r:?}");

        // No names (a set written before kdr recorded them): counts, and the detail says so.
        let r = snapshot_pods(&ctx(), &["default/x", "default/y"]).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.detail,
            "2 pods present, 2 recorded in the backup set (counts only: the set predates recorded pod names)"
        );
        let r = snapshot_pods(&ctx(), &["default/x"]).await;
        assert!(
            !r.ok && r.detail.contains("1 pods present, 2 recorded in the backup set (counts only"),
            "{r:?}"
        );
    }

    #[test]
    fn the_plan_says_what_snapshot_pods_compares() {
        let checks = KubectlPostChecks::new(healthy(), settings());
        let line =
            |c: &CheckContext| checks.plan(c).into_iter().find(|l| l.starts_with("snapshot-pods")).unwrap();
        let named = line(&ctx_naming(RECORDED));
        assert!(
            named.contains("until the 4 pods named in the backup set are present; 2 static pod(s) of the old primary master-1 not expected"),
            "{named}"
        );
        assert!(line(&ctx()).contains("at least 2 pods (counts only"), "{}", line(&ctx()));
    }

    /// Seeds 001/004: the primary rebuilt with its old name and IP, promoting itself.
    fn same_host() -> CheckContext {
        let mut c = ctx();
        c.this_node = NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() };
        c.old_primary = c.this_node.clone();
        c.endpoint = Some("192.168.30.200:6443".into());
        c.old_primary_is_this_node = Some("its node name \"master-1\" is this node's".into());
        c
    }

    #[tokio::test]
    async fn same_host_keeps_its_own_node_and_member_and_waits_for_itself() {
        let nodes = r#"{"items":[
          {"metadata":{"name":"master-1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}},
          {"metadata":{"name":"worker-1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}]}"#;
        let fake = healthy();
        fake.respond("get nodes -o json", Reply::exit(0, nodes, ""))
            .respond("cluster-info", Reply::exit(0, "    server: https://192.168.30.200:6443\n", ""))
            .respond("configmap kube-proxy", Reply::exit(0, "    server: https://192.168.30.200:6443\n", ""))
            .respond(
                "member list -w json",
                Reply::exit(0, r#"{"members":[{"ID":255,"name":"master-1","peerURLs":["https://192.168.30.200:2380"]}]}"#, ""),
            );
        let c = same_host();
        let results = KubectlPostChecks::new(fake.clone(), settings()).run(&c).await.unwrap();
        assert!(results.iter().all(|r| r.ok), "{results:#?}");
        let by = |n: &str| results.iter().find(|r| r.name == n).unwrap().detail.clone();
        assert_eq!(by("nodes-ready"), "2 nodes Ready", "this node counted, not skipped as the old one");
        for (name, what) in [("old-primary-node", "its Node"), ("old-primary-etcd-member", "its etcd member")]
        {
            assert_eq!(
                by(name),
                format!(
                    "skipped: the old primary master-1 is this node (its node name \"master-1\" is this node's); \
                     {what} is this node's own and is kept"
                )
            );
        }
        let cmds = fake.commands();
        assert!(!cmds.iter().any(|c| c.contains("delete node")), "{cmds:?}");
        assert!(!cmds.iter().any(|c| c.contains("member list") || c.contains("member remove")), "{cmds:?}");
        let plan = KubectlPostChecks::new(fake, settings()).plan(&c).join("\n");
        assert!(plan.contains("until all are Ready, this node included"), "{plan}");
        assert!(plan.contains("old-primary-node: skipped") && !plan.contains("delete node"), "{plan}");

        // This node not Ready yet: waited for (and named), not skipped as "the old primary".
        let fake = healthy();
        fake.respond("get nodes -o json", Reply::exit(0, &nodes.replacen("True", "False", 1), ""));
        let results = KubectlPostChecks::new(fake, settings()).run(&c).await.unwrap();
        assert!(!results[0].ok && results[0].detail.contains("not Ready: master-1"), "{:?}", results[0]);

        // Same host by address only (the name was changed): its clean-up is skipped all the same,
        // and the stale Node of the old name is not waited for.
        let mut c = ctx();
        c.old_primary_is_this_node =
            Some("its address 192.168.30.200 is one of this host's own addresses".into());
        let fake = healthy();
        let results = KubectlPostChecks::new(fake.clone(), settings()).run(&c).await.unwrap();
        assert!(results.iter().find(|r| r.name == "old-primary-node").unwrap().detail.starts_with("skipped"));
        assert!(results[0].ok, "{:?}", results[0]);
        assert!(!fake.commands().iter().any(|c| c.contains("delete node")));
    }

    #[tokio::test]
    async fn a_not_ready_node_fails_after_the_timeout_naming_it() {
        let w1_down = NODES.replace(
            r#""name":"worker-1"},"status":{"conditions":[{"type":"Ready","status":"True"}"#,
            r#""name":"worker-1"},"status":{"conditions":[{"type":"Ready","status":"False"}"#,
        );
        assert_ne!(w1_down, NODES);
        let fake = healthy();
        fake.respond("get nodes -o json", Reply::exit(0, &w1_down, ""));
        let results = KubectlPostChecks::new(fake, settings()).run(&ctx()).await.unwrap();
        assert!(!results[0].ok);
        assert!(results[0].detail.contains("not Ready: worker-1"), "{}", results[0].detail);
        // A worker already reported failed is not waited for.
        let fake = healthy();
        fake.respond("get nodes -o json", Reply::exit(0, &w1_down, ""));
        let mut c = ctx();
        c.failed_workers = vec!["worker-1".into()];
        let results = KubectlPostChecks::new(fake, settings()).run(&c).await.unwrap();
        assert!(results[0].ok, "{:?}", results[0]);
    }
}
