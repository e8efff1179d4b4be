//! [`ApiServerProbe`]: HTTPS `GET /healthz` (or `/livez`) on the primary's API server.
//!
//! reqwest with rustls (already in the tree through object_store). The server is verified
//! against the cluster CA only (`/etc/kubernetes/pki/ca.crt`), never the system roots; a client
//! certificate is optional (kubeadm allows anonymous `/healthz` and `/livez`). Skipping
//! verification exists, as kubeconfig's `insecure-skip-tls-verify` does, only through
//! [`ApiServerProbeBuilder::insecure_skip_tls_verify`], and is logged as a warning on build.
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use super::{HealthProbe, ProbeResult};
use crate::error::{Error, Result};

/// Probes the API server's health endpoint. Up only on HTTP 200 with body `ok`.
#[derive(Debug, Clone)]
pub struct ApiServerProbe {
    name: String,
    url: url::Url,
    timeout: Duration,
    client: reqwest::Client,
}

/// Builds an [`ApiServerProbe`].
#[derive(Debug)]
pub struct ApiServerProbeBuilder {
    url: String,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    timeout: Duration,
    insecure: bool,
}

impl ApiServerProbe {
    /// A builder for `url`, e.g. `https://10.0.0.10:6443/healthz`. A URL without a path gets
    /// `/healthz`. The default timeout is 3 s.
    pub fn builder(url: impl Into<String>) -> ApiServerProbeBuilder {
        ApiServerProbeBuilder {
            url: url.into(),
            ca_pem: None,
            identity_pem: None,
            timeout: Duration::from_secs(3),
            insecure: false,
        }
    }

    /// The probed URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("failed to read {what} {}", path.display()), e))
}

impl ApiServerProbeBuilder {
    /// Trust this CA (PEM), normally the cluster CA `/etc/kubernetes/pki/ca.crt`.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Trust the CA in this PEM file.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = read(path.as_ref(), "API server CA file")?;
        Ok(self.ca_pem(pem))
    }

    /// Present this client certificate and key (PEM each).
    pub fn client_identity_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        let mut both = cert_pem.to_vec();
        if !both.ends_with(b"\n") {
            both.push(b'\n');
        }
        both.extend_from_slice(key_pem);
        self.identity_pem = Some(both);
        self
    }

    /// Present the client certificate and key in these PEM files.
    pub fn client_identity_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let c = read(cert.as_ref(), "client certificate")?;
        let k = read(key.as_ref(), "client key")?;
        Ok(self.client_identity_pem(&c, &k))
    }

    /// How long one probe may take (connect, TLS and response), shorter than the interval.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// DANGEROUS: accept any server certificate. Anyone on the path can then answer "ok" for a
    /// dead primary and prevent a failover. For a lab only.
    pub fn insecure_skip_tls_verify(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Builds the probe. Errors ([`Error::Config`]) name what is wrong: not an https URL, no CA
    /// (and no explicit insecure option), an unreadable CA or identity.
    pub fn build(self) -> Result<ApiServerProbe> {
        let key = "detector.api_url";
        let mut url = url::Url::parse(&self.url).map_err(|e| {
            Error::config(
                key,
                format!("{:?} is not a URL ({e}); e.g. https://10.0.0.10:6443/healthz", self.url),
            )
        })?;
        if url.scheme() != "https" {
            return Err(Error::config(key, format!("{url} is not https: the API server only speaks TLS")));
        }
        if url.path() == "/" || url.path().is_empty() {
            url.set_path("/healthz");
        }
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .no_proxy() // the monitor talks to the primary directly, whatever HTTPS_PROXY says
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0); // a fresh connection each time: a dead primary is not hidden by a pooled one
        match (&self.ca_pem, self.insecure) {
            (_, true) => {
                tracing::warn!(url = %url, "API server probe skips TLS verification (insecure_skip_tls_verify): anyone on the path can fake the primary's health");
                builder = builder.tls_danger_accept_invalid_certs(true);
            }
            (Some(pem), false) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                    Error::config("detector.api_ca_file", format!("not a PEM certificate bundle: {e}"))
                })?;
                if certs.is_empty() {
                    return Err(Error::config("detector.api_ca_file", "contains no PEM certificate"));
                }
                builder = builder.tls_certs_only(certs);
            }
            (None, false) => {
                return Err(Error::config(
                    "detector.api_ca_file",
                    "no CA to verify the API server with: set it to the cluster CA (/etc/kubernetes/pki/ca.crt); \
                     skipping verification needs the explicit insecure_skip_tls_verify option",
                ));
            }
        }
        if let Some(pem) = &self.identity_pem {
            let id = reqwest::Identity::from_pem(pem).map_err(|e| {
                Error::config("detector.api_client_cert", format!("not a PEM certificate and key: {e}"))
            })?;
            builder = builder.identity(id);
        }
        let client = builder
            .build()
            .map_err(|e| Error::config("detector.api_url", format!("cannot build the HTTPS client: {e}")))?;
        Ok(ApiServerProbe { name: format!("api {url}"), url, timeout: self.timeout, client })
    }
}

#[async_trait]
impl HealthProbe for ApiServerProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn probe(&self) -> ProbeResult {
        let response = match self.client.get(self.url.clone()).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return ProbeResult::down(format!("{}: no answer within {:?}", self.name, self.timeout));
            }
            Err(e) => return ProbeResult::down(format!("{}: {}", self.name, crate::error::error_chain(&e))),
        };
        let status = response.status();
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => {
                return ProbeResult::down(format!(
                    "{}: HTTP {status}, body unreadable: {}",
                    self.name,
                    crate::error::error_chain(&e)
                ));
            }
        };
        let body = body.trim();
        let tail: String = body.chars().take(300).collect();
        if status == reqwest::StatusCode::OK && body == "ok" {
            ProbeResult::up(format!("{}: ok", self.name))
        } else {
            ProbeResult::down(format!("{}: HTTP {status}: {tail}", self.name))
        }
    }
}
