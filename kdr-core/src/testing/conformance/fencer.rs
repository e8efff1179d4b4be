//! The [`Fencer`] conformance suite.
//!
//! [`run_all`] checks the trait's guarantees against a target the caller can look at through a
//! [`FenceWorld`] (its files and the commands recorded on it, and whether it is fenced):
//! - `plan` names the target, gives the same lines twice, and changes nothing;
//! - `fence` returns a report saying which method ran and what it did; a fencer that
//!   [acts on its target](Fencer::acts_on_target) leaves it fenced as far as the world can tell,
//!   one that does not ([`NoFence`](crate::fence::NoFence)) leaves it exactly as it was;
//! - fencing again succeeds and the target stays fenced (idempotent: a resumed runbook
//!   re-fences);
//! - nothing is deleted: every file's content is still somewhere on the node (moved aside);
//! - a fencer that acts is refused by [`refuse_fencing_this_host`] when the target is this host
//!   (same node name, same address, loopback), the guard the runbook and the monitor run first.
//!
//! The failures are separate checks, each on a world the caller made fail:
//! [`a_failing_fence_is_an_error`] (an error of a documented variant, never `Ok`),
//! [`a_hanging_fence_times_out_and_stops`] ([`Error::Timeout`] in bounded time, and nothing more
//! happens on the target afterwards), [`an_unreachable_target_is_unavailable`].
//!
//! Not checkable from outside: "no secret in argv or logs" (a fencer holds no secret of its own;
//! an exec hook reads its credentials itself).
//!
//! `ExecFencer` runs it with real hook scripts, `SshFencer` against a real sshd node with
//! recording `systemctl`/`crictl`, and `NoFence` (`tests/conformance_runbook.rs`); the runbook's
//! and the monitor's fakes run it in their unit tests.
use std::time::Duration;

use async_trait::async_trait;

use super::NodeView;
use crate::clock::{Clock, SystemClock};
use crate::control_plane::NodeIdentity;
use crate::error::Error;
use crate::fence::{FenceTarget, Fencer, refuse_fencing_this_host};

/// The target of a fencer under test, as the test sees it.
///
/// Its futures need not be `Send` (a container fixture's exec is not).
#[async_trait(?Send)]
pub trait FenceWorld {
    /// The target the fencer is aimed at.
    fn target(&self) -> FenceTarget;

    /// Its files and recorded commands now.
    async fn view(&self) -> NodeView;

    /// Whether it can no longer serve, as far as the world can tell (manifests gone and kubelet
    /// stopped, the hook ran for this target and epoch, ...).
    async fn fenced(&self) -> bool;
}

/// Runs every check on a world whose target is not fenced yet: `this_node` is the identity of the
/// host running the test, as the runbook's configuration would name it. Panics naming the broken
/// guarantee.
pub async fn run_all(fencer: &dyn Fencer, world: &dyn FenceWorld, this_node: &NodeIdentity) {
    assert!(!world.fenced().await, "run_all needs a target that is not fenced yet");
    plan_names_the_target_and_changes_nothing(fencer, world).await;
    let before = world.view().await;
    fence_reports_and_fences(fencer, world).await;
    fencing_again_succeeds(fencer, world).await;
    nothing_is_deleted(&before, &world.view().await);
    this_host_is_refused_before_it_acts(fencer, world, this_node).await;
}

/// `plan` names the target, is stable, and changes nothing on it.
pub async fn plan_names_the_target_and_changes_nothing(fencer: &dyn Fencer, world: &dyn FenceWorld) {
    let who = super::short(fencer);
    let target = world.target();
    let before = world.view().await;
    let plan = fencer.plan(&target);
    assert!(!plan.is_empty(), "{who}: plan must say what fence would do");
    assert!(plan.iter().all(|l| !l.trim().is_empty()), "{who}: an empty plan line: {plan:?}");
    assert!(
        plan.iter().any(|l| l.contains(&target.name) || l.contains(&target.host)),
        "{who}: the plan must name the target {} ({}): {plan:?}",
        target.name,
        target.host
    );
    assert_eq!(fencer.plan(&target), plan, "{who}: plan must be the same each time");
    assert_eq!(world.view().await, before, "{who}: plan must change nothing on the target");
    assert!(!world.fenced().await, "{who}: plan must not fence");
}

/// `fence` returns `Ok` with a report; the target is fenced if the fencer acts on it, untouched
/// if it does not.
pub async fn fence_reports_and_fences(fencer: &dyn Fencer, world: &dyn FenceWorld) {
    let who = super::short(fencer);
    let target = world.target();
    let before = world.view().await;
    let report = match fencer.fence(&target).await {
        Ok(r) => r,
        Err(e) => panic!("{who}: fencing a reachable target failed: {e}"),
    };
    assert!(!report.method.trim().is_empty(), "{who}: the report must name the method: {report:?}");
    assert!(
        !report.actions.is_empty() && report.actions.iter().all(|a| !a.trim().is_empty()),
        "{who}: the report must say what the fence did, one line each: {report:?}"
    );
    if fencer.acts_on_target() {
        assert!(world.fenced().await, "{who}: Ok, but the target is not fenced: {report:?}");
    } else {
        assert_eq!(world.view().await, before, "{who} says it does not act, yet the target changed");
        assert!(!world.fenced().await, "{who} says it does not act, yet the target is fenced");
    }
}

/// Fencing an already fenced target succeeds again, and it stays fenced.
pub async fn fencing_again_succeeds(fencer: &dyn Fencer, world: &dyn FenceWorld) {
    let who = super::short(fencer);
    let target = world.target();
    let fenced = world.fenced().await;
    if let Err(e) = fencer.fence(&target).await {
        panic!("{who}: fencing an already fenced target must succeed again (idempotent): {e}");
    }
    assert_eq!(world.fenced().await, fenced, "{who}: a second fence changed whether the target is fenced");
}

/// Every file there `before` still has its content somewhere in `after`: moved aside, never
/// deleted.
pub fn nothing_is_deleted(before: &NodeView, after: &NodeView) {
    let lost = before.lost_in(after);
    assert!(lost.is_empty(), "a fence must move files aside, never delete them; gone: {lost:?}");
}

/// A fencer that acts on its target is never aimed at this host: [`refuse_fencing_this_host`]
/// refuses targets with this node's name, this node's address, or a loopback address, with
/// [`Error::Refused`] naming the target and the epoch. A fencer that does not act is not guarded
/// (the runbook skips the check for it).
pub async fn this_host_is_refused_before_it_acts(
    fencer: &dyn Fencer,
    world: &dyn FenceWorld,
    this_node: &NodeIdentity,
) {
    let who = super::short(fencer);
    if !fencer.acts_on_target() {
        return;
    }
    let base = world.target();
    let this_host = [
        FenceTarget { name: this_node.name.clone(), ..base.clone() },
        FenceTarget {
            host: this_node.address.clone(),
            name: format!("{}-renamed", base.name),
            ..base.clone()
        },
        FenceTarget { host: "127.0.0.1".into(), name: format!("{}-loopback", base.name), ..base.clone() },
        FenceTarget { host: "localhost".into(), name: format!("{}-localhost", base.name), ..base.clone() },
    ];
    for t in this_host {
        match refuse_fencing_this_host(&t, this_node).await {
            Err(Error::Refused { reason }) => assert!(
                reason.contains(&t.name) && reason.contains(&format!("epoch {}", t.epoch)),
                "the refusal must name the target and the epoch: {reason}"
            ),
            other => panic!(
                "{who} acts on its target, so fencing {} ({}) from {this_node:?} must be refused, got \
                 {other:?}",
                t.name, t.host
            ),
        }
    }
}

/// A fence the world made fail (a hook exiting non-zero, a kubelet that cannot be stopped) is an
/// error of a documented variant, never `Ok`: a failed fence means no promotion. Returns the
/// error for the caller's own checks.
pub async fn a_failing_fence_is_an_error(fencer: &dyn Fencer, world: &dyn FenceWorld) -> Error {
    let who = super::short(fencer);
    let target = world.target();
    let err = match fencer.fence(&target).await {
        Ok(r) => panic!("{who}: a fence that failed must not be Ok: {r:?}"),
        Err(e) => e,
    };
    match &err {
        Error::CommandFailed { host, command, exit_code, .. } => {
            assert!(!host.is_empty() && !command.is_empty(), "CommandFailed names where and what: {err:?}");
            assert_ne!(*exit_code, Some(0), "a command that exited 0 did not fail: {err:?}");
        }
        Error::Timeout { .. } | Error::Unavailable { .. } => {}
        other => {
            panic!("{who}: a failed fence must be CommandFailed, Timeout or Unavailable, got {other:?}")
        }
    }
    err
}

/// A fence the world made hang is [`Error::Timeout`] within `within`, and it has stopped: nothing
/// changes on the target after it returned (over `quiet`).
pub async fn a_hanging_fence_times_out_and_stops(
    fencer: &dyn Fencer,
    world: &dyn FenceWorld,
    within: Duration,
    quiet: Duration,
) {
    let who = super::short(fencer);
    let target = world.target();
    let started = SystemClock.instant();
    let r = fencer.fence(&target).await;
    let took = SystemClock.instant().duration_since(started);
    assert!(
        matches!(r, Err(Error::Timeout { .. })),
        "{who}: a hanging fence must be Error::Timeout, got {r:?}"
    );
    assert!(took <= within, "{who}: a hanging fence took {took:?}, more than {within:?}");
    // What was under way when the timeout fired may still land; then nothing more may.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = world.view().await;
    tokio::time::sleep(quiet).await;
    assert_eq!(world.view().await, after, "{who}: the fence kept acting after it timed out");
}

/// A target that cannot be reached is [`Error::Unavailable`] (or [`Error::Timeout`] for a
/// connection that hangs), never `Ok`.
pub async fn an_unreachable_target_is_unavailable(fencer: &dyn Fencer, target: &FenceTarget) {
    let who = super::short(fencer);
    match fencer.fence(target).await {
        Err(Error::Unavailable { .. } | Error::Timeout { .. }) => {}
        other => panic!("{who}: an unreachable target must be Unavailable or Timeout, got {other:?}"),
    }
}
