//! The clean-up of the old primary, its own runbook step after the post-checks: its Node object
//! deleted, and any etcd member named after it or at its address removed (a restore with a new
//! `--initial-cluster` already leaves none; seed 004 shows what happens otherwise).
//!
//! It runs after the post-checks because deleting the Node garbage-collects its pods, which
//! `snapshot-pods` counts. [`KubectlCleanUp`] runs `kubectl` (and `etcdctl` in this node's etcd
//! pod) through a [`NodeRemote`] on the new primary, each action
//! polled until it is seen done or its timeout expires:
//! 1. `old-primary-node`: the old primary's Node object deleted;
//! 2. `old-primary-etcd-member`: no etcd member named after the old primary or at its address.
//!
//! When the old primary is this node (a same-host rebuild, [`CheckContext::old_primary_here`]),
//! both are skipped with a note in the journal: they would delete this node's own Node and etcd
//! member.
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::checks::{CheckContext, CheckResult, KubectlPostChecks, Poll, PostCheckSettings};
use crate::error::{Error, Result};
use crate::remote::{NodeRemote, shell_quote};

/// Removes what is left of the old primary in the cluster.
///
/// Guarantees: idempotent (a resumed runbook runs it again); every action has a timeout;
/// [`run`](Self::run) returns one result per action (`Err` only if it could not run at all);
/// nothing is removed when the old primary is this node.
#[async_trait]
pub trait OldPrimaryCleanUp: Send + Sync + fmt::Debug {
    /// What it would run, for the dry-run plan.
    fn plan(&self, ctx: &CheckContext) -> Vec<String>;

    /// Removes the old primary's Node and etcd member (or says why it keeps them).
    async fn run(&self, ctx: &CheckContext) -> Result<Vec<CheckResult>>;
}

impl CheckContext {
    /// The journal's note for a skipped clean-up action.
    fn skipped_clean_up(&self, what: &str) -> String {
        format!(
            "skipped: the old primary {} is this node ({}); {what} is this node's own and is kept",
            self.old_primary.name,
            self.old_primary_is_this_node.as_deref().unwrap_or("same node name")
        )
    }
}

/// The clean-up with kubectl and etcdctl. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct KubectlCleanUp {
    /// Runs and polls kubectl the way the post-checks do (same node, kubeconfig and timeouts).
    kubectl: KubectlPostChecks,
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

impl KubectlCleanUp {
    /// A clean-up run through `remote` (the new primary), with the post-checks' settings.
    pub fn new(remote: Arc<dyn NodeRemote>, settings: PostCheckSettings) -> Self {
        Self { kubectl: KubectlPostChecks::new(remote, settings) }
    }

    async fn remove_old_node(&self, ctx: &CheckContext) -> Result<Poll> {
        let k = &self.kubectl;
        let old = shell_quote(&ctx.old_primary.name);
        k.run_ok(&k.kubectl(&format!("delete node {old} --ignore-not-found")), None).await?;
        let left = k.run_ok(&k.kubectl(&format!("get node {old} --ignore-not-found -o name")), None).await?;
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
        let k = &self.kubectl;
        let list = k.run_ok(&k.etcdctl(ctx, "member list -w json"), None).await?;
        let list: MemberList = serde_json::from_str(&list)
            .map_err(|e| Error::integrity("etcdctl member list output", e.to_string()))?;
        let stale: Vec<&Member> = list.members.iter().filter(|m| self.stale(ctx, m)).collect();
        if stale.is_empty() {
            return Ok(Poll::Done(format!("{} etcd member(s), none of the old primary", list.members.len())));
        }
        for m in &stale {
            k.run_ok(&k.etcdctl(ctx, &format!("member remove {:x}", m.id)), None).await?;
        }
        Ok(Poll::NotYet(format!(
            "removed stale member(s) {}",
            stale.iter().map(|m| format!("{:x} ({})", m.id, m.name)).collect::<Vec<_>>().join(", ")
        )))
    }
}

#[async_trait]
impl OldPrimaryCleanUp for KubectlCleanUp {
    fn plan(&self, ctx: &CheckContext) -> Vec<String> {
        let k = &self.kubectl;
        let (old_node, old_member) = if ctx.old_primary_here() {
            (ctx.skipped_clean_up("its Node"), ctx.skipped_clean_up("its etcd member"))
        } else {
            (
                format!(
                    "`{}`",
                    k.kubectl(&format!("delete node {} --ignore-not-found", ctx.old_primary.name))
                ),
                format!(
                    "`{}`, removing members named {} or at {}",
                    k.etcdctl(ctx, "member list -w json"),
                    ctx.old_primary.name,
                    ctx.old_primary.address
                ),
            )
        };
        vec![format!("old-primary-node: {old_node}"), format!("old-primary-etcd-member: {old_member}")]
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Vec<CheckResult>> {
        if ctx.old_primary_here() {
            // Same host: deleting "the old primary's" Node or etcd member would remove this node's.
            return Ok([("old-primary-node", "its Node"), ("old-primary-etcd-member", "its etcd member")]
                .into_iter()
                .map(|(name, what)| CheckResult {
                    name: name.into(),
                    ok: true,
                    detail: ctx.skipped_clean_up(what),
                })
                .collect());
        }
        Ok(vec![
            self.kubectl.poll("old-primary-node", || self.remove_old_node(ctx)).await,
            self.kubectl.poll("old-primary-etcd-member", || self.remove_old_member(ctx)).await,
        ])
    }
}
