//! [`ObjectStoreSnapshotStore`]: backup sets in any [`object_store::ObjectStore`] — S3 and
//! S3-compatible servers (MinIO, s3s), Google Cloud Storage, Azure Blob Storage, a local
//! directory, or memory.
//!
//! Uploads stream: an object smaller than one part is sent with a single PUT, a larger one as a
//! multipart upload of [`StoreOptions::part_size`] parts with at most
//! [`StoreOptions::upload_concurrency`] in flight, so memory stays near
//! `part_size × (concurrency + 1)` whatever the object size. Any failure (the input stream's or
//! the store's) aborts the multipart upload. The manifest is written last with
//! [`PutMode::Create`], which is what makes a set exist.
//!
//! Library code never reads the process environment: credentials and endpoints arrive in
//! [`StoreOptions`], filled by the binary from its flags, config file and `AWS_*`/`KDR_*`
//! variables.
//!
//! ```
//! # #[tokio::main] async fn main() -> kdr_core::Result<()> {
//! use kdr_core::snapshot::{ObjectStoreSnapshotStore, SnapshotStore, StoreOptions};
//!
//! let store = ObjectStoreSnapshotStore::from_url("memory://", &StoreOptions::default())?;
//! store.check().await?;
//! assert!(store.list().await?.is_empty());
//! assert_eq!(store.describe(), "memory://");
//! # Ok(()) }
//! ```
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
use object_store::RetryConfig;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::{
    ByteStream, IncompleteSet, MANIFEST_OBJECT, MANIFEST_SCHEMA_VERSION, Manifest, SnapshotId, SnapshotStore,
    StoredObject,
};
use crate::error::{Error, Result};

/// S3's minimum part size (except for the last part).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// A spawned ranged read, aborted if the download is dropped (nothing keeps fetching for nobody).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<object_store::Result<T>> {
    type Output = object_store::Result<T>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(object_store::Error::Generic { store: "download", source: Box::new(e) })
            })
        })
    }
}

/// Objects larger than this are downloaded as parallel ranged reads.
const PARALLEL_GET_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The size of each ranged read of a large object.
const DOWNLOAD_RANGE: u64 = 1024 * 1024;
/// Ranged reads in flight at once (memory: this many ranges).
const DOWNLOAD_CONCURRENCY: usize = 8;

/// How to reach a store. Filled by the binary (flags, config file, `AWS_*`/`KDR_*` environment);
/// fields that do not apply to a URL's scheme are ignored.
#[derive(Clone)]
pub struct StoreOptions {
    /// S3 endpoint for S3-compatible servers, e.g. `http://127.0.0.1:9000` (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// S3 region (`AWS_REGION`); `us-east-1` if unset.
    pub region: Option<String>,
    /// S3 access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// S3 secret access key (`AWS_SECRET_ACCESS_KEY`). Never printed.
    pub secret_access_key: Option<String>,
    /// S3 session token (`AWS_SESSION_TOKEN`). Never printed.
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (off by default; needed for a local MinIO or s3s).
    pub allow_http: bool,
    /// Use virtual-hosted-style S3 requests (`bucket.host`); path style (`host/bucket`, what
    /// MinIO and s3s expect) is the default.
    pub virtual_hosted_style: bool,
    /// Send S3 bodies as `UNSIGNED-PAYLOAD` instead of signing their sha256 (saves a hash pass
    /// on both ends). `None` (the default) decides by transport, as current AWS SDKs do:
    /// unsigned over HTTPS, whose TLS already protects the bytes in flight, signed over plain
    /// HTTP. kdr's own sha256 of every stored object is recorded in the manifest either way.
    pub unsigned_payload: Option<bool>,
    /// Further `object_store` configuration for `gs://` and `az://` (and S3), as
    /// `(key, value)` pairs such as `("google_service_account", "/path/key.json")` or
    /// `("azure_storage_account_name", "acct")`.
    pub extra: Vec<(String, String)>,
    /// Multipart part size in bytes (at least [`MIN_PART_SIZE`]; default 8 MiB).
    pub part_size: usize,
    /// Parts uploaded concurrently (default 2).
    pub upload_concurrency: usize,
    /// Give up retrying a failing request after this long (default 30 s).
    pub retry_timeout: Duration,
    /// Retries of a failing request (default 3).
    pub max_retries: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            virtual_hosted_style: false,
            unsigned_payload: None,
            extra: Vec::new(),
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 2,
            retry_timeout: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("unsigned_payload", &self.unsigned_payload)
            .field("extra_keys", &self.extra.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("retry_timeout", &self.retry_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl StoreOptions {
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn retry(&self) -> RetryConfig {
        RetryConfig { max_retries: self.max_retries, retry_timeout: self.retry_timeout, ..Default::default() }
    }
}

/// A [`SnapshotStore`] over an [`ObjectStore`] and a path prefix. See the [module docs](self).
#[derive(Clone)]
pub struct ObjectStoreSnapshotStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    description: String,
    part_size: usize,
    concurrency: usize,
}

impl fmt::Debug for ObjectStoreSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreSnapshotStore")
            .field("store", &self.description)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl ObjectStoreSnapshotStore {
    /// A store over `store`, keeping sets under `prefix` (may be empty). `description` is used in
    /// messages and must hold no credentials (e.g. `s3://kdr/prod`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, description: impl Into<String>) -> Self {
        let defaults = StoreOptions::default();
        Self {
            store,
            prefix: Path::from(prefix.trim_matches('/')),
            description: description.into(),
            part_size: defaults.part_size,
            concurrency: defaults.upload_concurrency,
        }
    }

    /// Sets the multipart part size (raised to [`MIN_PART_SIZE`]) and upload concurrency (≥ 1).
    pub fn with_upload(mut self, part_size: usize, concurrency: usize) -> Self {
        self.part_size = part_size.max(MIN_PART_SIZE);
        self.concurrency = concurrency.max(1);
        self
    }

    /// Builds a store from a URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `file:///dir` (created if missing) or `memory://`.
    ///
    /// Errors: [`Error::Config`] naming `--store` for a malformed URL, an unsupported scheme or
    /// an invalid option. Reachability is not checked here; see [`SnapshotStore::check`].
    pub fn from_url(url: &str, opts: &StoreOptions) -> Result<Self> {
        let bad = |reason: String| Error::config("--store", format!("{url:?}: {reason}"));
        let parsed = url::Url::parse(url).map_err(|e| {
            bad(format!(
                "not a URL ({e}); expected s3://bucket/prefix, gs://, az://, file:///dir or memory://"
            ))
        })?;
        let scheme = parsed.scheme();
        let host = parsed.host_str().unwrap_or("").to_owned();
        let path = parsed.path().trim_matches('/').to_owned();
        let (store, prefix, description): (Arc<dyn ObjectStore>, String, String) = match scheme {
            "memory" => {
                let prefix = if host.is_empty() { path } else { format!("{host}/{path}") };
                (Arc::new(object_store::memory::InMemory::new()), prefix, url.to_owned())
            }
            "file" => {
                if !host.is_empty() && host != "localhost" {
                    return Err(bad(
                        "a file:// URL needs an absolute path, e.g. file:///var/backups/kdr".into()
                    ));
                }
                let dir = parsed.to_file_path().map_err(|()| bad("not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::io(format!("failed to create the local store directory {}", dir.display()), e)
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(format!("cannot use {}: {e}", dir.display())))?;
                (Arc::new(fs), String::new(), format!("file://{}", dir.display()))
            }
            #[cfg(not(feature = "s3"))]
            "s3" | "s3a" => return Err(missing_feature(url, "s3")),
            #[cfg(not(feature = "gcs"))]
            "gs" => return Err(missing_feature(url, "gcs")),
            #[cfg(not(feature = "azure"))]
            "az" | "azure" | "abfs" | "abfss" => return Err(missing_feature(url, "azure")),
            #[cfg(feature = "s3")]
            "s3" | "s3a" => {
                if host.is_empty() {
                    return Err(bad("missing bucket name (s3://BUCKET/prefix)".into()));
                }
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&host)
                    .with_region(opts.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_allow_http(opts.allow_http)
                    .with_virtual_hosted_style_request(opts.virtual_hosted_style)
                    .with_retry(opts.retry());
                if let Some(e) = &opts.endpoint {
                    b = b.with_endpoint(e);
                }
                let https = opts.endpoint.as_deref().is_none_or(|e| e.starts_with("https://"));
                b = b.with_unsigned_payload(opts.unsigned_payload.unwrap_or(https));
                if let Some(k) = &opts.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &opts.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                if let Some(t) = &opts.session_token {
                    b = b.with_token(t);
                }
                for (k, v) in &opts.extra {
                    let key = k.parse().map_err(|e| bad(format!("store option {k}: {e}")))?;
                    b = b.with_config(key, v);
                }
                let s3 = b.build().map_err(|e| bad(e.to_string()))?;
                let mut desc = join_desc(format!("s3://{host}"), &path);
                if let Some(e) = &opts.endpoint {
                    desc.push_str(&format!(" (endpoint {e})"));
                }
                (Arc::new(s3), path, desc)
            }
            #[cfg(feature = "gcs")]
            "gs" => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&host)
                    .with_retry(opts.retry());
                for (k, v) in &opts.extra {
                    let key = k.parse().map_err(|e| bad(format!("store option {k}: {e}")))?;
                    b = b.with_config(key, v);
                }
                let gcs = b.build().map_err(|e| bad(e.to_string()))?;
                let desc = join_desc(format!("gs://{host}"), &path);
                (Arc::new(gcs), path, desc)
            }
            #[cfg(feature = "azure")]
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                    .with_url(url)
                    .with_allow_http(opts.allow_http)
                    .with_retry(opts.retry());
                for (k, v) in &opts.extra {
                    let key = k.parse().map_err(|e| bad(format!("store option {k}: {e}")))?;
                    b = b.with_config(key, v);
                }
                let az = b.build().map_err(|e| bad(e.to_string()))?;
                let desc = join_desc(format!("{scheme}://{host}"), &path);
                (Arc::new(az), path, desc)
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?}; use s3://, gs://, az://, file:// or memory://"
                )));
            }
        };
        Ok(Self::new(store, &prefix, description).with_upload(opts.part_size, opts.upload_concurrency))
    }

    /// The path prefix the sets live under (empty: the bucket's root).
    pub fn prefix(&self) -> &str {
        self.prefix.as_ref()
    }

    /// The underlying object store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn sets_dir(&self) -> Path {
        self.prefix.clone().join("sets")
    }

    fn set_dir(&self, id: &str) -> Path {
        self.sets_dir().join(id)
    }

    fn object_path(&self, id: &str, name: &str) -> Path {
        self.set_dir(id).join(name)
    }

    fn map_err(&self, doing: &str, e: object_store::Error) -> Error {
        map_store_error(&self.description, doing, e)
    }

    async fn read_manifest(&self, id: &str) -> Result<Manifest> {
        let path = self.object_path(id, MANIFEST_OBJECT);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(|e| self.map_err(&format!("reading manifest of {id}"), e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    what: format!("backup set {id} in {}", self.description),
                    hint: Some("`kdr snapshot list` shows the complete sets".into()),
                });
            }
            Err(e) => return Err(self.map_err(&format!("reading manifest of {id}"), e)),
        };
        parse_manifest(id, &bytes)
    }

    async fn upload_multipart(
        &self,
        path: &Path,
        what: &str,
        first: Vec<Bytes>,
        mut data: ByteStream,
        hasher: &mut Sha256,
        size: &mut u64,
    ) -> Result<()> {
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| self.map_err(&format!("starting the upload of {what}"), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        for chunk in first {
            writer.put(chunk);
        }
        loop {
            if let Err(e) = writer.wait_for_capacity(self.concurrency).await {
                let _ = writer.abort().await;
                return Err(self.map_err(&format!("uploading {what}"), e));
            }
            match data.next().await {
                None => break,
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    *size += chunk.len() as u64;
                    writer.put(chunk);
                }
                Some(Err(e)) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(%abort, "failed to abort the multipart upload of {what}");
                    }
                    return Err(e);
                }
            }
        }
        tracing::debug!(%what, bytes = *size, "input ended; completing the multipart upload");
        writer.finish().await.map_err(|e| self.map_err(&format!("completing the upload of {what}"), e))?;
        Ok(())
    }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn join_desc(base: String, path: &str) -> String {
    if path.is_empty() { base } else { format!("{base}/{path}") }
}

/// Parses a manifest, refusing a newer schema.
fn parse_manifest(id: &str, bytes: &[u8]) -> Result<Manifest> {
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let v: Version = serde_json::from_slice(bytes).map_err(|e| {
        Error::integrity(format!("manifest of backup set {id}"), format!("not a kdr manifest: {e}"))
    })?;
    if v.schema_version > MANIFEST_SCHEMA_VERSION {
        return Err(Error::config(
            "manifest schema",
            format!(
                "backup set {id} has manifest schema {} but this kdr reads up to {MANIFEST_SCHEMA_VERSION}; \
                 upgrade kdr",
                v.schema_version
            ),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Error::integrity(format!("manifest of backup set {id}"), format!("unreadable: {e}")))
}

/// Maps an `object_store` error to a kdr [`Error`] that names the store and the fix.
pub(crate) fn map_store_error(store: &str, doing: &str, e: object_store::Error) -> Error {
    let text = crate::error::error_chain(&e);
    let lower = text.to_ascii_lowercase();
    if lower.contains("nosuchbucket") || lower.contains("the specified bucket does not exist") {
        return Error::NotFound {
            what: format!("bucket of store {store}"),
            hint: Some("create the bucket or fix --store / store.url".into()),
        };
    }
    if matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
        || lower.contains("accessdenied")
        || lower.contains("access denied")
        || lower.contains("invalidaccesskeyid")
        || lower.contains("signaturedoesnotmatch")
        || lower.contains("403 forbidden")
    {
        return Error::unavailable(
            format!(
                "access denied to store {store} while {doing}; check the credentials \
                 (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or store.* settings) and the bucket policy"
            ),
            concise_error(&e),
        );
    }
    match e {
        object_store::Error::NotFound { path, .. } => {
            Error::NotFound { what: format!("{path} in store {store}"), hint: None }
        }
        object_store::Error::AlreadyExists { path, .. } => {
            Error::AlreadyExists { what: format!("{path} in store {store}") }
        }
        e => {
            let unreachable = [
                "error sending request",
                "connection refused",
                "connect error",
                "dns error",
                "timed out",
                "connection reset",
                "broken pipe",
                "incompletemessage",
                "connection closed",
            ];
            if unreachable.iter().any(|k| lower.contains(k)) {
                Error::unavailable(
                    format!(
                        "store {store} is unreachable while {doing}; check the endpoint, the network and \
                         that the store is running"
                    ),
                    concise_error(&e),
                )
            } else {
                Error::unavailable(format!("store {store} failed while {doing}"), concise_error(&e))
            }
        }
    }
}

/// An error's own message plus its root cause when the message does not already say it: client
/// libraries nest the same text several levels deep, and operators need it once.
pub(crate) fn concise_error(e: &dyn std::error::Error) -> String {
    let top = e.to_string();
    let top = top.split(", source: ").next().unwrap_or(&top).trim().to_owned();
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let root = root.to_string();
    if top.contains(&root) { top } else { format!("{top}: {root}") }
}

/// The store URL names a backend this build was compiled without.
#[cfg(not(all(feature = "s3", feature = "gcs", feature = "azure")))]
fn missing_feature(url: &str, feature: &str) -> Error {
    Error::config(
        "store.url",
        format!(
            "{url:?} needs kdr-core's `{feature}` feature, which this build was compiled without: \
             build with it (it is on by default) or use another store"
        ),
    )
}

fn check_name(id: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == MANIFEST_OBJECT || name.starts_with('.') {
        return Err(Error::config(
            "object name",
            format!("{name:?} cannot be an object of set {id} (no '/', not the manifest's name)"),
        ));
    }
    Ok(())
}

#[async_trait]
impl SnapshotStore for ObjectStoreSnapshotStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn check(&self) -> Result<()> {
        self.store
            .list_with_delimiter(Some(&self.sets_dir()))
            .await
            .map(|_| ())
            .map_err(|e| self.map_err("listing backup sets", e))
    }

    async fn put_object(&self, id: &SnapshotId, name: &str, mut data: ByteStream) -> Result<StoredObject> {
        check_name(id.as_str(), name)?;
        let path = self.object_path(id.as_str(), name);
        let what = format!("{name} of backup {id} to {}", self.description);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        // Buffer up to one part: a small object goes up in one PUT, with no multipart state.
        let mut first = Vec::new();
        let mut buffered = 0usize;
        let mut ended = false;
        while buffered < self.part_size {
            match data.next().await {
                None => {
                    ended = true;
                    break;
                }
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    buffered += chunk.len();
                    first.push(chunk);
                }
                Some(Err(e)) => return Err(e),
            }
        }
        if ended {
            let payload: PutPayload = first.into_iter().collect();
            self.store
                .put_opts(&path, payload, PutOptions::default())
                .await
                .map_err(|e| self.map_err(&format!("uploading {what}"), e))?;
        } else {
            self.upload_multipart(&path, &what, first, data, &mut hasher, &mut size).await?;
        }
        Ok(StoredObject { size, sha256: hex::encode(hasher.finalize()) })
    }

    async fn commit(&self, manifest: &Manifest) -> Result<()> {
        let id = manifest.id.as_str();
        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::integrity(format!("manifest of {id}"), format!("cannot serialize: {e}")))?;
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&self.object_path(id, MANIFEST_OBJECT), body.into(), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(Error::AlreadyExists {
                what: format!("manifest of backup set {id} in {}", self.description),
            }),
            Err(e) => Err(self.map_err(&format!("writing the manifest of backup {id}"), e)),
        }
    }

    async fn list(&self) -> Result<Vec<Manifest>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.sets_dir()))
            .await
            .map_err(|e| self.map_err("listing backup sets", e))?;
        let ids: Vec<String> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
        let results: Vec<(String, Result<Manifest>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let r = self.read_manifest(&id).await;
                (id, r)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut sets = Vec::new();
        for (id, r) in results {
            match r {
                Ok(m) => sets.push(m),
                Err(Error::NotFound { .. }) => {} // incomplete: not a set
                Err(e @ (Error::Integrity { .. } | Error::Config { .. })) => {
                    tracing::warn!(set = %id, error = %e, "skipping a set whose manifest cannot be read");
                }
                Err(e) => return Err(e),
            }
        }
        sets.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        Ok(sets)
    }

    async fn manifest(&self, id: &SnapshotId) -> Result<Manifest> {
        self.read_manifest(id.as_str()).await
    }

    async fn get_object(&self, id: &SnapshotId, name: &str) -> Result<ByteStream> {
        check_name(id.as_str(), name)?;
        let path = self.object_path(id.as_str(), name);
        let what = format!("{name} of backup {id}");
        let not_found = || Error::NotFound { what: format!("{what} in {}", self.description), hint: None };
        // The size decides how to read: a HEAD, so that no body is started and then dropped.
        let size = match self.store.head(&path).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
            Err(e) => return Err(self.map_err(&format!("looking up {what}"), e)),
        };
        let description = self.description.clone();
        if size <= PARALLEL_GET_THRESHOLD {
            let result = match self.store.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
                Err(e) => return Err(self.map_err(&format!("downloading {what}"), e)),
            };
            return Ok(result
                .into_stream()
                .map_err(move |e| map_store_error(&description, &format!("downloading {what}"), e))
                .boxed());
        }
        // A large object is read as consecutive ranges, a few at a time, in order: one HTTP stream
        // is limited by the server's per-request speed, several are not. Each range is fetched by
        // its own task, so transfers progress while the consumer is busy (a decoder polls this
        // stream only between chunks). Memory stays bounded at DOWNLOAD_CONCURRENCY ranges.
        let store = self.store.clone();
        let ranges = (0..size)
            .step_by(DOWNLOAD_RANGE as usize)
            .map(move |start| start..(start + DOWNLOAD_RANGE).min(size));
        Ok(futures::stream::iter(ranges)
            .map(move |range| {
                let (store, path) = (store.clone(), path.clone());
                AbortOnDrop(tokio::spawn(async move { store.get_range(&path, range).await }))
            })
            .buffered(DOWNLOAD_CONCURRENCY)
            .map_err(move |e| map_store_error(&description, &format!("downloading {what}"), e))
            .boxed())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        if id.is_empty() || id.contains('/') || id == "." || id == ".." {
            return Err(Error::config("snapshot id", format!("{id:?} is not a backup set id")));
        }
        // Manifest first, so the set stops being listed before any object goes.
        match self.store.delete(&self.object_path(id, MANIFEST_OBJECT)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.map_err(&format!("deleting the manifest of {id}"), e)),
        }
        let dir = self.set_dir(id);
        let objects: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| self.map_err(&format!("listing the objects of {id}"), e))?;
        for path in objects {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.map_err(&format!("deleting {path}"), e)),
            }
        }
        Ok(())
    }

    async fn list_incomplete(&self) -> Result<Vec<IncompleteSet>> {
        let all: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.sets_dir()))
            .try_collect()
            .await
            .map_err(|e| self.map_err("listing backup objects", e))?;
        let sets_dir = self.sets_dir();
        let base: Vec<_> = sets_dir.parts().collect();
        let mut by_set: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for meta in all {
            let parts: Vec<_> = meta.location.parts().collect();
            if parts.len() != base.len() + 2 || parts[..base.len()] != base[..] {
                continue;
            }
            by_set
                .entry(parts[base.len()].as_ref().to_owned())
                .or_default()
                .push(parts[base.len() + 1].as_ref().to_owned());
        }
        let mut out = Vec::new();
        for (id, objects) in by_set {
            let reason = if !objects.iter().any(|o| o == MANIFEST_OBJECT) {
                "no manifest (interrupted backup)".to_owned()
            } else {
                match self.read_manifest(&id).await {
                    Ok(_) => continue,
                    // A newer kdr's set is complete for that kdr: never sweep it.
                    Err(Error::Config { .. }) => continue,
                    Err(e @ Error::Integrity { .. }) => e.to_string(),
                    Err(Error::NotFound { .. }) => "no manifest (interrupted backup)".to_owned(),
                    Err(e) => return Err(e),
                }
            };
            out.push(IncompleteSet { id, objects, reason });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::PodNames;

    #[tokio::test]
    async fn large_objects_come_back_whole_and_in_order_through_ranged_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStoreSnapshotStore::from_url(
            &format!("file://{}", dir.path().display()),
            &StoreOptions::default(),
        )
        .unwrap();
        let id = SnapshotId::parse("20261121T051115Z-1a2b3c4d").unwrap();
        // Not a multiple of the range size, so the last range is short.
        let size = PARALLEL_GET_THRESHOLD as usize + 3 * DOWNLOAD_RANGE as usize + 12_345;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect();
        let chunks: Vec<Result<Bytes>> =
            data.chunks(1 << 20).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        store.put_object(&id, "etcd.db", futures::stream::iter(chunks).boxed()).await.unwrap();
        let mut got = Vec::with_capacity(size);
        let mut stream = store.get_object(&id, "etcd.db").await.unwrap();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got.len(), size);
        assert!(got == data, "ranged reads must reassemble the object exactly");
    }

    #[test]
    fn urls_parse_and_bad_ones_name_the_flag() {
        let opts = StoreOptions::default();
        let mem = ObjectStoreSnapshotStore::from_url("memory://", &opts).unwrap();
        assert_eq!(mem.describe(), "memory://");
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let url = format!("file://{}", sub.display());
        let fs = ObjectStoreSnapshotStore::from_url(&url, &opts).unwrap();
        assert!(sub.is_dir());
        assert_eq!(fs.describe(), url);
        let s3 = ObjectStoreSnapshotStore::from_url(
            "s3://kdr/prod/cluster-a",
            &StoreOptions {
                endpoint: Some("http://127.0.0.1:1".into()),
                access_key_id: Some("AK".into()),
                secret_access_key: Some("SECRET".into()),
                allow_http: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s3.prefix.as_ref(), "prod/cluster-a");
        assert!(!format!("{s3:?}").contains("SECRET"));
        for bad in ["nope", "ftp://x/y", "s3:///prefix", "file://host/dir"] {
            let e = ObjectStoreSnapshotStore::from_url(bad, &opts).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains("--store"), "{bad}: {e}");
        }
    }

    #[test]
    fn options_debug_redacts_secrets() {
        let o = StoreOptions {
            secret_access_key: Some("TOPSECRET".into()),
            session_token: Some("TOKEN".into()),
            extra: vec![("azure_storage_account_key".into(), "AZSECRET".into())],
            ..Default::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("TOPSECRET") && !s.contains("TOKEN") && !s.contains("AZSECRET"), "{s}");
    }

    /// A manifest as kdr wrote it before it recorded pod names.
    const MANIFEST_WITHOUT_POD_NAMES: &str = r#"{
      "schema_version": 1, "id": "20261121T051115Z-1a2b3c4d", "created_at": "2026-11-21T05:11:15Z",
      "duration_ms": 900, "cluster_name": "prod",
      "source": {"endpoint": "https://10.0.0.1:2379", "member_name": "master-1", "member_id": "8e9e05c52164694d",
                 "etcd_version": "3.5.16", "revision": 42, "db_size": 1048576},
      "compression": "zstd", "encryption": {"scheme": "none"}, "etcd_hash_verified": true,
      "objects": [], "bundle_files": [], "key_inventory": {"pods": 2}, "total_keys": 2
    }"#;

    #[test]
    fn pod_names_round_trip_and_old_manifests_without_them_still_parse() {
        let old = parse_manifest("x", MANIFEST_WITHOUT_POD_NAMES.as_bytes()).unwrap();
        assert_eq!(old.pods, None);
        assert_eq!(old.key_inventory["pods"], 2);

        let mut m = old.clone();
        m.pods = Some(PodNames {
            names: vec!["default/a".into(), "kube-system/etcd-master-1".into()],
            truncated: true,
        });
        let json = serde_json::to_vec(&m).unwrap();
        let back = parse_manifest("x", &json).unwrap();
        assert_eq!(back, m);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["schema_version"], 1, "an optional field does not bump the schema");
        assert_eq!(v["pods"]["names"][1], "kube-system/etcd-master-1");
        assert_eq!(v["pods"]["truncated"], true);
        // A manifest without names is written as before (no `pods` key).
        let v = serde_json::to_value(&old).unwrap();
        assert!(v.get("pods").is_none(), "{v}");
    }

    #[test]
    fn newer_schema_is_refused_by_name() {
        let e = parse_manifest("x", br#"{"schema_version": 99}"#).unwrap_err();
        assert!(e.to_string().contains("upgrade kdr"), "{e}");
        let e = parse_manifest("x", b"garbage").unwrap_err();
        assert!(matches!(e, Error::Integrity { .. }));
    }
}
