//! [`JoinCommand`]: the output of `kubeadm token create --print-join-command`, parsed so that its
//! bootstrap token never appears in a log, a journal or a command line.
use std::fmt;

use crate::error::{Error, Result};

/// A parsed `kubeadm join` command for a worker.
///
/// It holds a bootstrap token, a credential: `Debug` and [`JoinCommand::redacted`] show only the
/// token's public id, and there is no `Display` or `Serialize`, so it cannot end up in a journal
/// by accident. Workers receive it as a kubeadm `JoinConfiguration` on standard input
/// ([`JoinCommand::join_configuration`]), never on a command line.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinCommand {
    api_server: String,
    token: String,
    ca_cert_hashes: Vec<String>,
    unsafe_skip_ca_verification: bool,
}

impl JoinCommand {
    /// Parses `kubeadm join HOST:PORT --token ID.SECRET --discovery-token-ca-cert-hash sha256:HEX`
    /// (a leading `sudo` is allowed). Error messages never contain the token.
    pub fn parse(line: &str) -> Result<Self> {
        let bad = |reason: String| Error::config("join command", reason);
        let words = shlex::split(line.trim())
            .ok_or_else(|| bad("it is not a well-formed shell command line (unbalanced quotes)".into()))?;
        let mut it = words.iter().map(String::as_str).peekable();
        if it.peek() == Some(&"sudo") {
            it.next();
        }
        if (it.next(), it.next()) != (Some("kubeadm"), Some("join")) {
            return Err(bad(
                "it must start with `kubeadm join` (the output of `kubeadm token create --print-join-command`)"
                    .into(),
            ));
        }
        let (mut api_server, mut token, mut hashes, mut skip) = (None, None, Vec::new(), false);
        while let Some(word) = it.next() {
            let (flag, inline) = match word.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (word, None),
            };
            let mut value = || inline.clone().or_else(|| it.next().map(str::to_owned));
            match flag {
                "--token" | "--discovery-token" => {
                    token = Some(value().ok_or_else(|| bad(format!("{flag} has no value")))?)
                }
                "--discovery-token-ca-cert-hash" => {
                    hashes.push(value().ok_or_else(|| bad(format!("{flag} has no value")))?)
                }
                "--discovery-token-unsafe-skip-ca-verification" => skip = true,
                "--control-plane" | "--certificate-key" => {
                    return Err(bad(format!(
                        "{flag} joins a control-plane node; worker recovery needs a worker join command"
                    )));
                }
                f if f.starts_with('-') => {
                    return Err(bad(format!(
                        "unsupported flag {f}: only --token, --discovery-token-ca-cert-hash and \
                         --discovery-token-unsafe-skip-ca-verification are understood"
                    )));
                }
                endpoint if api_server.is_none() => api_server = Some(endpoint.to_owned()),
                _ => return Err(bad("more than one API server endpoint".into())),
            }
        }
        let api_server = api_server.ok_or_else(|| bad("no API server endpoint (HOST:PORT)".into()))?;
        valid_endpoint(&api_server).map_err(|r| bad(format!("API server endpoint {api_server:?} {r}")))?;
        let token = token.ok_or_else(|| bad("no --token".into()))?;
        if !valid_token(&token) {
            return Err(bad(
                "the --token value is not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16}); value not shown"
                    .into(),
            ));
        }
        for h in &hashes {
            let hex = h.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "--discovery-token-ca-cert-hash {h:?} is not sha256:<64 hex digits>"
                )));
            }
        }
        if hashes.is_empty() && !skip {
            return Err(bad(
                "no --discovery-token-ca-cert-hash: without it the worker cannot verify the control plane \
                 (add the hash, or --discovery-token-unsafe-skip-ca-verification if you accept the risk)"
                    .into(),
            ));
        }
        Ok(Self { api_server, token, ca_cert_hashes: hashes, unsafe_skip_ca_verification: skip })
    }

    /// The API server endpoint (`HOST:PORT`) workers join.
    pub fn api_server(&self) -> &str {
        &self.api_server
    }

    /// The command with the token's secret half replaced by `<redacted>`, for logs and messages.
    pub fn redacted(&self) -> String {
        let id = self.token.split('.').next().unwrap_or("");
        let mut s = format!("kubeadm join {} --token {id}.<redacted>", self.api_server);
        for h in &self.ca_cert_hashes {
            s.push_str(" --discovery-token-ca-cert-hash ");
            s.push_str(h);
        }
        if self.unsafe_skip_ca_verification {
            s.push_str(" --discovery-token-unsafe-skip-ca-verification");
        }
        s
    }

    /// The kubeadm `JoinConfiguration` (JSON, which kubeadm reads as YAML) for node `node_name`.
    /// **Contains the token**: send it only on standard input.
    pub fn join_configuration(&self, api_version: &str, node_name: &str) -> String {
        let mut bootstrap = serde_json::json!({
            "apiServerEndpoint": self.api_server,
            "token": self.token,
        });
        if self.unsafe_skip_ca_verification {
            bootstrap["unsafeSkipCAVerification"] = true.into();
        } else {
            bootstrap["caCertHashes"] = self.ca_cert_hashes.clone().into();
        }
        let doc = serde_json::json!({
            "apiVersion": api_version,
            "kind": "JoinConfiguration",
            "discovery": { "bootstrapToken": bootstrap, "tlsBootstrapToken": self.token },
            "nodeRegistration": { "name": node_name },
        });
        format!("{doc:#}\n")
    }
}

impl fmt::Debug for JoinCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinCommand").field(&self.redacted()).finish()
    }
}

fn valid_token(t: &str) -> bool {
    let ok =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(t.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

fn valid_endpoint(e: &str) -> std::result::Result<(), &'static str> {
    let (host, port) = e.rsplit_once(':').ok_or("has no :PORT")?;
    port.parse::<u16>().map_err(|_| "has an invalid port")?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b)) {
        return Err("has an invalid host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdef.0123456789abcdef";
    const HASH: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn line() -> String {
        format!("kubeadm join 192.168.30.202:6443 --token {TOKEN} --discovery-token-ca-cert-hash {HASH} \n")
    }

    #[test]
    fn parses_print_join_command_output() {
        let j = JoinCommand::parse(&line()).unwrap();
        assert_eq!(j.api_server(), "192.168.30.202:6443");
        assert_eq!(JoinCommand::parse(&format!("sudo {}", line())).unwrap(), j);
        let eq =
            format!("kubeadm join 192.168.30.202:6443 --token={TOKEN} --discovery-token-ca-cert-hash={HASH}");
        assert_eq!(JoinCommand::parse(&eq).unwrap(), j);
    }

    #[test]
    fn the_token_never_shows() {
        let j = JoinCommand::parse(&line()).unwrap();
        let red = j.redacted();
        assert_eq!(
            red,
            format!(
                "kubeadm join 192.168.30.202:6443 --token abcdef.<redacted> --discovery-token-ca-cert-hash {HASH}"
            )
        );
        assert!(!format!("{j:?}").contains("0123456789abcdef"));
        // Errors about the token don't echo it either.
        let e =
            JoinCommand::parse(&line().replace(TOKEN, "abcdef.SECRETSECRETSECRE")).unwrap_err().to_string();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn join_configuration_carries_the_discovery_settings() {
        let j = JoinCommand::parse(&line()).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&j.join_configuration("kubeadm.k8s.io/v1beta3", "worker-1")).unwrap();
        assert_eq!(doc["kind"], "JoinConfiguration");
        assert_eq!(doc["apiVersion"], "kubeadm.k8s.io/v1beta3");
        assert_eq!(doc["discovery"]["bootstrapToken"]["token"], TOKEN);
        assert_eq!(doc["discovery"]["bootstrapToken"]["apiServerEndpoint"], "192.168.30.202:6443");
        assert_eq!(doc["discovery"]["bootstrapToken"]["caCertHashes"][0], HASH);
        assert_eq!(doc["discovery"]["tlsBootstrapToken"], TOKEN);
        assert_eq!(doc["nodeRegistration"]["name"], "worker-1");
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        for (bad, needle) in [
            ("kubectl get nodes", "kubeadm join"),
            ("kubeadm join 1.2.3.4:6443 --token abcdef.0123456789abcdef", "ca-cert-hash"),
            (
                "kubeadm join 1.2.3.4 --token abcdef.0123456789abcdef --discovery-token-unsafe-skip-ca-verification",
                ":PORT",
            ),
            ("kubeadm join 1.2.3.4:6443 --control-plane", "control-plane"),
            ("kubeadm join 1.2.3.4:6443 --cri-socket x", "unsupported flag --cri-socket"),
            ("kubeadm join 'x", "well-formed"),
        ] {
            let e = JoinCommand::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Config { .. }) && e.to_string().contains(needle), "{bad}: {e}");
        }
        let skip = JoinCommand::parse(
            "kubeadm join h:6443 --token abcdef.0123456789abcdef --discovery-token-unsafe-skip-ca-verification",
        )
        .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&skip.join_configuration("v", "n")).unwrap();
        assert_eq!(doc["discovery"]["bootstrapToken"]["unsafeSkipCAVerification"], true);
    }
}
