//! The [`ControlPlaneInit`] conformance suite.
//!
//! [`run_all`] checks the trait's guarantees on a node that does not run a control plane yet,
//! seen through an [`InitWorld`] (its files, the commands recorded on it, every command line it
//! was asked to run):
//! - `plan` changes nothing on the node, and gives the same plan twice;
//! - `state` is [`InitState::NotInitialized`] there; `init` succeeds, after which it is
//!   [`InitState::Initialized`]; the report's endpoint is the plan's, and every command it ran
//!   was in the plan;
//! - `init` never deletes anything (every file's content is still on the node, no `kubeadm
//!   reset` was run);
//! - `init` is not idempotent: a second one is [`Error::Refused`] and changes nothing;
//! - `join_command` creates a well-formed token, a different one each call, and the token's
//!   secret half is on no command line the node was asked to run, in no log line emitted while
//!   it ran, and not in [`JoinCommand`]'s `Debug` or [`redacted`](JoinCommand::redacted).
//!
//! The failures are separate checks, each on a world the caller prepared:
//! [`init_refuses_over_existing_files`] (a partly initialised node: refused, nothing run),
//! [`a_failing_command_is_command_failed`] (naming the node and the command),
//! [`a_failed_join_shows_no_token`] (no token-shaped string in the error or the logs).
//!
//! `KubeadmInit` runs it over SSH on a real sshd node carrying the kubeadm stand-in of
//! `tests/promotion` (`tests/conformance_runbook.rs`); the runbook's fake runs it in its unit
//! tests.
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata};

use super::NodeView;
use crate::control_plane::{ControlPlaneInit, InitState, JoinCommand, is_bootstrap_token};
use crate::error::Error;

/// The node a [`ControlPlaneInit`] under test acts on, as the test sees it.
///
/// Its futures need not be `Send` (a container fixture's exec is not).
#[async_trait(?Send)]
pub trait InitWorld {
    /// The node's name, as errors must name it.
    fn node(&self) -> String;

    /// Its files and recorded side-effecting commands now.
    async fn view(&self) -> NodeView;

    /// Every command line the node was asked to run so far, reads included.
    async fn command_lines(&self) -> Vec<String>;
}

/// Runs every check on a node that does not run a control plane yet; panics naming the broken
/// guarantee.
pub async fn run_all(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    plan_changes_nothing(init, world).await;
    init_once_then_initialized(init, world).await;
    init_is_not_idempotent(init, world).await;
    join_command_keeps_the_token_secret(init, world).await;
}

/// `plan` changes nothing on the node and is the same each time.
pub async fn plan_changes_nothing(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    let who = super::short(init);
    let before = world.view().await;
    let plan = init.plan().await.unwrap_or_else(|e| panic!("{who}: plan failed: {e}"));
    assert!(!plan.endpoint.is_empty(), "{who}: the plan names the endpoint: {plan:?}");
    assert_eq!(world.view().await, before, "{who}: plan must change nothing on the node");
    assert_eq!(init.plan().await.ok(), Some(plan), "{who}: plan must be the same each time");
    assert_eq!(world.view().await, before, "{who}: plan must change nothing on the node");
}

/// On a fresh node: `NotInitialized`; `init` succeeds as planned, deletes nothing; then
/// `Initialized`.
pub async fn init_once_then_initialized(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    let who = super::short(init);
    let state = init.state().await.unwrap_or_else(|e| panic!("{who}: state failed: {e}"));
    assert_eq!(state, InitState::NotInitialized, "run_all needs a node without a control plane");
    let plan = init.plan().await.unwrap_or_else(|e| panic!("{who}: plan failed: {e}"));
    let before = world.view().await;
    let report = init.init().await.unwrap_or_else(|e| panic!("{who}: init on a fresh node failed: {e}"));
    assert_eq!(report.endpoint, plan.endpoint, "{who}: init's endpoint must be the one planned");
    for c in &report.commands {
        assert!(
            plan.commands.iter().any(|p| p.starts_with(c.as_str())),
            "{who}: init ran `{c}`, which the plan did not show: {:?}",
            plan.commands
        );
    }
    let after = world.view().await;
    let lost = before.lost_in(&after);
    assert!(lost.is_empty(), "{who}: init must never delete anything; gone: {lost:?}");
    assert!(
        !after.calls.iter().any(|c| c.contains("reset")),
        "{who}: init must never reset the node (it deletes the restored etcd data): {:?}",
        after.calls
    );
    let state = init.state().await.unwrap_or_else(|e| panic!("{who}: state failed: {e}"));
    assert_eq!(state, InitState::Initialized, "{who}: after init the node runs a control plane");
}

/// A second `init` is [`Error::Refused`] and changes nothing.
pub async fn init_is_not_idempotent(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    assert_ne!(
        init.state().await.ok(),
        Some(InitState::NotInitialized),
        "init_is_not_idempotent runs after an init"
    );
    refused_and_untouched(init, world).await;
}

/// On a node that already has some control-plane files (prepared by the caller): `state` is not
/// `NotInitialized`, and `init` is [`Error::Refused`] and changes nothing.
pub async fn init_refuses_over_existing_files(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    let who = super::short(init);
    let state = init.state().await.unwrap_or_else(|e| panic!("{who}: state failed: {e}"));
    assert!(
        matches!(state, InitState::Partial { .. } | InitState::Initialized),
        "{who}: a node with control-plane files is not NotInitialized: {state:?}"
    );
    refused_and_untouched(init, world).await;
}

async fn refused_and_untouched(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    let who = super::short(init);
    let before = world.view().await;
    match init.init().await {
        Err(Error::Refused { .. }) => {}
        other => {
            panic!("{who}: init over an existing control plane must be Error::Refused, got {other:?}")
        }
    }
    assert_eq!(world.view().await, before, "{who}: a refused init must change nothing");
}

/// A command on the node that fails (the caller made one fail) is [`Error::CommandFailed`]
/// naming the node and the command.
pub async fn a_failing_command_is_command_failed(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    let who = super::short(init);
    let node = world.node();
    let e = match init.init().await {
        Ok(r) => panic!("{who}: init was made to fail, got {r:?}"),
        Err(e) => e,
    };
    let Error::CommandFailed { host, command, exit_code, .. } = &e else {
        panic!("{who}: a failing command must be Error::CommandFailed, got {e:?}")
    };
    assert_eq!(host, &node, "{who}: CommandFailed must name the node: {e}");
    assert!(!command.trim().is_empty(), "{who}: CommandFailed must name the command: {e}");
    assert_ne!(*exit_code, Some(0), "{e}");
    let shown = e.to_string();
    assert!(shown.contains(&node) && shown.contains(command.as_str()), "{shown}");
}

/// Two join commands, each with a fresh well-formed token whose secret half is nowhere it may
/// not be.
pub async fn join_command_keeps_the_token_secret(init: &dyn ControlPlaneInit, world: &dyn InitWorld) {
    let who = super::short(init);
    let (first, logs) = capture_logs(init.join_command()).await;
    let first = first.unwrap_or_else(|e| panic!("{who}: join_command failed: {e}"));
    let (second, more) = capture_logs(init.join_command()).await;
    let second = second.unwrap_or_else(|e| panic!("{who}: join_command failed: {e}"));
    let (a, b) = (token_of(&first), token_of(&second));
    assert!(is_bootstrap_token(&a) && is_bootstrap_token(&b), "{who}: malformed bootstrap tokens");
    assert_ne!(a, b, "{who}: each join_command must create a new token");
    let lines = world.command_lines().await;
    for (join, token) in [(&first, &a), (&second, &b)] {
        let secret = token.split_once('.').map(|(_, s)| s).unwrap_or(token);
        assert!(!format!("{join:?}").contains(secret), "{who}: JoinCommand's Debug shows the token");
        assert!(!join.redacted().contains(secret), "{who}: JoinCommand::redacted shows the token");
        assert!(!logs.contains(secret) && !more.contains(secret), "{who}: a log line shows the token");
        if let Some(l) = lines.iter().find(|l| l.contains(secret)) {
            panic!("{who}: the token was on a command line: {l}");
        }
    }
}

/// A `join_command` that fails (the caller made it fail) shows no token-shaped string in its
/// error or in the logs emitted while it ran.
pub async fn a_failed_join_shows_no_token(init: &dyn ControlPlaneInit) -> Error {
    let who = super::short(init);
    let (r, logs) = capture_logs(init.join_command()).await;
    let err = match r {
        Ok(j) => panic!("{who}: join_command was made to fail, got {j:?}"),
        Err(e) => e,
    };
    for shown in [err.to_string(), format!("{err:?}"), logs] {
        let found = token_shaped(&shown);
        assert!(found.is_empty(), "{who}: a bootstrap token in an error or a log line: {found:?} in {shown}");
    }
    err
}

/// The token inside `join` (only its JoinConfiguration carries it).
fn token_of(join: &JoinCommand) -> String {
    let cfg: serde_json::Value =
        serde_json::from_str(&join.join_configuration("kubeadm.k8s.io/v1beta3", "n"))
            .expect("JoinConfiguration is JSON");
    cfg["discovery"]["bootstrapToken"]["token"].as_str().unwrap_or_default().to_owned()
}

/// The substrings of `s` shaped like a bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`, standing
/// alone).
pub fn token_shaped(s: &str) -> Vec<String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    for i in 0..chars.len() {
        if i + 23 > chars.len() || (i > 0 && alnum(chars[i - 1])) {
            continue;
        }
        let w = &chars[i..i + 23];
        let standing_alone = chars.get(i + 23).is_none_or(|c| !alnum(*c));
        if w[6] == '.'
            && w[..6].iter().all(|c| alnum(*c))
            && w[7..].iter().all(|c| alnum(*c))
            && standing_alone
        {
            out.push(w.iter().collect());
        }
    }
    out
}

/// Runs `fut` with a subscriber that keeps every event and span field emitted while it is polled
/// (at every level), and returns its output with that text.
async fn capture_logs<T>(fut: impl std::future::Future<Output = T>) -> (T, String) {
    let capture = LogCapture::default();
    let out = fut.with_subscriber(capture.clone()).await;
    let text = capture.text.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (out, text)
}

#[derive(Clone, Debug, Default)]
struct LogCapture {
    text: Arc<Mutex<String>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl LogCapture {
    fn write(&self, f: impl FnOnce(&mut String)) {
        f(&mut self.text.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for LogCapture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.write(|t| {
            t.push_str(span.metadata().name());
            span.record(&mut Fields(t));
            t.push('\n');
        });
        Id::from_u64(self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        self.write(|t| {
            values.record(&mut Fields(t));
            t.push('\n');
        });
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        self.write(|t| {
            event.record(&mut Fields(t));
            t.push('\n');
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shaped_finds_tokens_standing_alone_only() {
        let t = "abcdef.0123456789abcdef";
        assert_eq!(token_shaped(&format!("--token {t} x")), [t]);
        assert_eq!(token_shaped(t), [t]);
        assert!(token_shaped(&format!("x{t}")).is_empty());
        assert!(token_shaped(&format!("{t}0")).is_empty());
        assert!(token_shaped("abcdef.<redacted> sha256:0123456789abcdef0123").is_empty());
    }

    #[tokio::test]
    async fn captured_logs_hold_event_and_span_fields() {
        let ((), text) = capture_logs(async {
            let span = tracing::debug_span!("join", node = "master-2");
            let _g = span.enter();
            tracing::trace!(secret = %"s3cr3t", "a message");
        })
        .await;
        assert!(text.contains("node=master-2") && text.contains("secret=s3cr3t"), "{text}");
        assert!(text.contains("a message"), "{text}");
    }
}
