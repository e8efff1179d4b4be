//! Pre- and post-promotion hooks: a local program or a webhook.
//!
//! Seed 002 switches DNS to the standby after promoting it; others move a VIP, page someone, or
//! drain a load balancer. Hooks run in the order configured. A failing pre-hook aborts the
//! promotion before the old primary is fenced; a failing post-hook fails the run (the control
//! plane is up by then) and names the hook, and a resumed run runs the post-hooks again, so hooks
//! must be idempotent.
//!
//! Every hook gets the same facts: exec hooks as environment variables (`KDR_PHASE`,
//! `KDR_EPOCH`, `KDR_NEW_PRIMARY_NAME`, `KDR_NEW_PRIMARY_ADDRESS`, `KDR_OLD_PRIMARY_NAME`,
//! `KDR_OLD_PRIMARY_ADDRESS`, `KDR_SNAPSHOT`, `KDR_ENDPOINT`), webhooks as a JSON body POSTed to the
//! URL. A webhook's bearer token is read from a file at call time: never in the configuration,
//! argv or logs.
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control_plane::NodeIdentity;
use crate::error::{Error, Result};
use crate::fence::exec::run_argv;

/// One hook: exactly one of `exec` and `webhook`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// A name for messages (default: the program or the URL).
    #[serde(default)]
    pub name: Option<String>,
    /// A program to run, argv form (no shell).
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    /// A URL to POST the promotion's facts to, as JSON. 2xx is success.
    #[serde(default)]
    pub webhook: Option<String>,
    /// For a webhook: a file holding a bearer token, sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// How long the hook may take.
    #[serde(default = "default_hook_timeout", with = "crate::remote::ssh::serde_duration")]
    pub timeout: Duration,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}

impl HookSpec {
    /// An exec hook.
    pub fn exec(argv: Vec<String>) -> Self {
        Self {
            name: None,
            exec: Some(argv),
            webhook: None,
            bearer_token_file: None,
            timeout: default_hook_timeout(),
        }
    }

    /// A webhook.
    pub fn webhook(url: impl Into<String>) -> Self {
        Self {
            name: None,
            exec: None,
            webhook: Some(url.into()),
            bearer_token_file: None,
            timeout: default_hook_timeout(),
        }
    }

    /// The name used in messages.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match (&self.exec, &self.webhook) {
            (Some(argv), _) => argv.join(" "),
            (None, Some(url)) => format!("POST {url}"),
            (None, None) => "(empty hook)".into(),
        }
    }

    fn validate(&self, key: &str) -> Result<()> {
        match (&self.exec, &self.webhook) {
            (Some(argv), None) if argv.first().is_some_and(|p| !p.is_empty()) => Ok(()),
            (None, Some(url)) => {
                let u = url::Url::parse(url)
                    .map_err(|e| Error::config(key, format!("webhook {url:?} is not a URL: {e}")))?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(Error::config(key, format!("webhook {url:?} must be http:// or https://")));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(Error::config(
                        key,
                        "credentials in a webhook URL would be logged; use bearer_token_file".to_owned(),
                    ));
                }
                Ok(())
            }
            _ => Err(Error::config(
                key,
                "a hook needs exactly one of exec = [\"program\", \"arg\"] or webhook = \"https://...\"",
            )),
        }
    }
}

/// The `[hooks]` section of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksSettings {
    /// Run after the claim, before fencing. Any failure aborts the promotion.
    pub pre: Vec<HookSpec>,
    /// Run after the post-checks (e.g. the DNS or VIP switch). A failure fails the run.
    pub post: Vec<HookSpec>,
}

impl HooksSettings {
    /// Checks every hook (exactly one of exec/webhook; a URL without credentials).
    pub fn validate(&self) -> Result<()> {
        for (i, h) in self.pre.iter().enumerate() {
            h.validate(&format!("hooks.pre[{i}]"))?;
        }
        for (i, h) in self.post.iter().enumerate() {
            h.validate(&format!("hooks.post[{i}]"))?;
        }
        Ok(())
    }
}

/// Which hooks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookPhase {
    /// Before fencing.
    Pre,
    /// After the post-checks.
    Post,
}

/// The facts a hook gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookContext {
    /// `pre` or `post`.
    pub phase: HookPhase,
    /// The promotion epoch.
    pub epoch: u64,
    /// The node being promoted.
    pub new_primary: NodeIdentity,
    /// The node it replaces.
    pub old_primary: NodeIdentity,
    /// The backup set restored.
    pub snapshot: Option<String>,
    /// The new API server endpoint, once known (post hooks).
    pub endpoint: Option<String>,
}

impl HookContext {
    fn env(&self) -> Vec<(String, String)> {
        let phase = match self.phase {
            HookPhase::Pre => "pre",
            HookPhase::Post => "post",
        };
        vec![
            ("KDR_PHASE".into(), phase.into()),
            ("KDR_EPOCH".into(), self.epoch.to_string()),
            ("KDR_NEW_PRIMARY_NAME".into(), self.new_primary.name.clone()),
            ("KDR_NEW_PRIMARY_ADDRESS".into(), self.new_primary.address.clone()),
            ("KDR_OLD_PRIMARY_NAME".into(), self.old_primary.name.clone()),
            ("KDR_OLD_PRIMARY_ADDRESS".into(), self.old_primary.address.clone()),
            ("KDR_SNAPSHOT".into(), self.snapshot.clone().unwrap_or_default()),
            ("KDR_ENDPOINT".into(), self.endpoint.clone().unwrap_or_default()),
        ]
    }
}

/// Runs `hooks` in order, stopping at the first failure, whose error names the hook. Returns a
/// line per hook run.
pub async fn run_hooks(hooks: &[HookSpec], ctx: &HookContext) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for hook in hooks {
        let name = hook.display_name();
        tracing::info!(hook = %name, phase = ?ctx.phase, "running hook");
        let r = match (&hook.exec, &hook.webhook) {
            (Some(argv), _) => run_argv(argv, &ctx.env(), hook.timeout, "hooks").await.map(|_| ()),
            (None, Some(url)) => post_webhook(url, hook, ctx).await,
            (None, None) => Err(Error::config("hooks", "a hook with neither exec nor webhook")),
        };
        match r {
            Ok(()) => done.push(format!("{name}: ok")),
            Err(e) => {
                return Err(Error::refused(format!("{:?}-promotion hook `{name}` failed: {e}", ctx.phase)));
            }
        }
    }
    Ok(done)
}

async fn post_webhook(url: &str, hook: &HookSpec, ctx: &HookContext) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(hook.timeout)
        .build()
        .map_err(|e| Error::unavailable(format!("webhook {url}: cannot build an HTTP client"), e))?;
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(ctx).map_err(|e| Error::integrity("hook body", e.to_string()))?);
    if let Some(f) = &hook.bearer_token_file {
        let token = std::fs::read_to_string(f)
            .map_err(|e| Error::io(format!("read bearer_token_file {}", f.display()), e))?;
        req = req.bearer_auth(token.trim());
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            Error::Timeout { what: format!("webhook POST {url}"), after: hook.timeout }
        } else {
            Error::unavailable(format!("webhook POST {url}"), e)
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(Error::CommandFailed {
        host: url.to_owned(),
        command: format!("POST {url}"),
        exit_code: Some(i32::from(status.as_u16())),
        stderr: body.chars().take(2000).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ctx() -> HookContext {
        HookContext {
            phase: HookPhase::Post,
            epoch: 5,
            new_primary: NodeIdentity { name: "master-2".into(), address: "10.0.0.2".into() },
            old_primary: NodeIdentity { name: "master-1".into(), address: "10.0.0.1".into() },
            snapshot: Some("20261121T051115Z-1a2b3c4d".into()),
            endpoint: Some("10.0.0.2:6443".into()),
        }
    }

    #[tokio::test]
    async fn exec_hooks_get_the_facts_and_a_failure_names_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let write = HookSpec::exec(vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo \"$KDR_PHASE $KDR_EPOCH $KDR_NEW_PRIMARY_ADDRESS $KDR_OLD_PRIMARY_NAME $KDR_ENDPOINT\" > {}",
                out.display()
            ),
        ]);
        let mut fail = HookSpec::exec(vec!["sh".into(), "-c".into(), "exit 9".into()]);
        fail.name = Some("switch-dns".into());
        let never =
            HookSpec::exec(vec!["sh".into(), "-c".into(), format!("touch {}/never", dir.path().display())]);
        let err = run_hooks(&[write, fail, never], &ctx()).await.unwrap_err().to_string();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "post 5 10.0.0.2 master-1 10.0.0.2:6443\n");
        assert!(err.contains("hook `switch-dns` failed") && err.contains("exit code 9"), "{err}");
        assert!(!dir.path().join("never").exists(), "hooks after a failure must not run");
    }

    #[tokio::test]
    async fn a_hook_that_times_out_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let mut hook = HookSpec::exec(vec![
            "sh".into(),
            "-c".into(),
            format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display()),
        ]);
        hook.name = Some("move-vip".into());
        hook.timeout = Duration::from_secs(1);
        let err = run_hooks(&[hook], &ctx()).await.unwrap_err().to_string();
        assert!(err.contains("hook `move-vip` failed") && err.contains("timed out after 1s"), "{err}");
        let grandchild = crate::process::tests::pid_in(&pidfile).await;
        assert!(
            crate::process::tests::wait_gone(grandchild).await,
            "the hook's background sleep ({grandchild}) outlived its timeout"
        );
    }

    #[tokio::test]
    async fn webhook_posts_json_with_the_bearer_token_and_non_2xx_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 16384];
                let mut got = Vec::new();
                // Read headers and body (content-length is small; stop at the closing brace).
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    if n == 0 || got.ends_with(b"}") {
                        break;
                    }
                }
                seen.push(String::from_utf8_lossy(&got).into_owned());
                let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope");
                s.write_all(resp.as_bytes()).await.unwrap();
            }
            seen
        });
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "s3cret-token\n").unwrap();
        let mut hook = HookSpec::webhook(format!("http://{addr}/switch"));
        hook.bearer_token_file = Some(tok);
        run_hooks(std::slice::from_ref(&hook), &ctx()).await.unwrap();
        let err = run_hooks(&[hook], &ctx()).await.unwrap_err().to_string();
        assert!(err.contains("exit code 503"), "{err}");
        assert!(!err.contains("s3cret-token"));
        let seen = server.await.unwrap();
        assert!(seen[0].starts_with("POST /switch HTTP/1.1"), "{}", seen[0]);
        assert!(seen[0].to_ascii_lowercase().contains("authorization: bearer s3cret-token"));
        let body = &seen[0][seen[0].find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["epoch"], 5);
        assert_eq!(v["new_primary"]["address"], "10.0.0.2");
    }

    #[test]
    fn settings_validate() {
        let s: HooksSettings = toml::from_str(
            "[[pre]]\nexec = [\"/bin/true\"]\n[[post]]\nwebhook = \"https://dns.example/switch\"\ntimeout = \"30s\"\n",
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.post[0].timeout, Duration::from_secs(30));
        let both: HooksSettings =
            toml::from_str("[[pre]]\nexec = [\"x\"]\nwebhook = \"http://a\"\n").unwrap();
        assert!(matches!(both.validate(), Err(Error::Config { key, .. }) if key == "hooks.pre[0]"));
        let creds: HooksSettings = toml::from_str("[[post]]\nwebhook = \"http://u:p@a/\"\n").unwrap();
        assert!(creds.validate().is_err());
    }
}
