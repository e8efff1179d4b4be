//! Reading a backup's data from ONE etcd member: its status (revision, version, db size, name),
//! a key inventory and the pod names at that revision, a single key, and the Snapshot RPC stream
//! with etcd's sha256 trailer verified on the fly.
//!
//! The Snapshot RPC streams the bbolt db in chunks of at most 32 KiB, then one last message whose
//! blob is the 32-byte sha256 of everything before it (`remaining_bytes` is 0 on both the last
//! data chunk and the hash message). [`EtcdSource::snapshot`] holds one message back; the one
//! held at the end of the stream is the hash. The stream it returns yields the db followed by the
//! 32-byte trailer (so the stored file is exactly what `etcdctl snapshot save` writes and
//! `etcdutl snapshot restore` verifies), and fails with [`Error::Integrity`] if the trailer does
//! not match.
//!
//! The stream is bounded twice ([`EtcdSourceOptions`]): a member that sends nothing for
//! `snapshot_idle_timeout` (alive enough for keep-alives, stuck otherwise) and a stream that is
//! still running after `snapshot_timeout` both end it with [`Error::Timeout`] naming the endpoint.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, ConnectOptions, GetOptions};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::snapshot::trailer::{SnapshotDigest, TRAILER, TrailerHasher};
use crate::snapshot::{ByteStream, PodNames};

/// Client TLS files for etcd (kubeadm: `/etc/kubernetes/pki/etcd/ca.crt` and the
/// `apiserver-etcd-client` or `healthcheck-client` pair).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EtcdTlsFiles {
    /// CA certificate that signed etcd's server certificate (`--cacert`).
    pub cacert: Option<PathBuf>,
    /// Client certificate (`--cert`).
    pub cert: Option<PathBuf>,
    /// Client private key (`--key`).
    pub key: Option<PathBuf>,
}

impl EtcdTlsFiles {
    /// Whether any TLS file is set.
    pub fn is_set(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// How to reach the etcd member to back up.
#[derive(Clone, Debug)]
pub struct EtcdSourceOptions {
    /// One member's client URL, e.g. `https://127.0.0.1:2379`.
    pub endpoint: String,
    /// TLS files (required for `https://` with client-cert auth, as kubeadm sets up).
    pub tls: EtcdTlsFiles,
    /// Limit for connecting and for each unary request (default 10 s). The snapshot stream has
    /// its own limits, below; a dead member is noticed sooner by keep-alives.
    pub request_timeout: Duration,
    /// The snapshot fails when etcd sends no data for this long (default 60 s). Only time spent
    /// waiting on etcd counts, not time the consumer (a slow upload) takes.
    pub snapshot_idle_timeout: Duration,
    /// The snapshot fails when the whole stream, from its start, takes longer than this (default
    /// 2 h; `None`: no limit). A stream that long holds etcd's read transaction open all along.
    pub snapshot_timeout: Option<Duration>,
}

/// The default of [`EtcdSourceOptions::snapshot_idle_timeout`].
pub const DEFAULT_SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default of [`EtcdSourceOptions::snapshot_timeout`].
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

impl EtcdSourceOptions {
    /// Options for `endpoint` with defaults.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: EtcdTlsFiles::default(),
            request_timeout: Duration::from_secs(10),
            snapshot_idle_timeout: DEFAULT_SNAPSHOT_IDLE_TIMEOUT,
            snapshot_timeout: Some(DEFAULT_SNAPSHOT_TIMEOUT),
        }
    }
}

/// What `status()` and the member list say about the member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member's name (empty if not found in the member list).
    pub name: String,
    /// The member's id, hex.
    pub id: String,
    /// Server version, e.g. `3.5.16`.
    pub version: String,
    /// The store's current revision.
    pub revision: i64,
    /// The db's size on disk.
    pub db_size: u64,
}

/// Count of keys per `/registry/<resource>/` prefix at a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyInventory {
    /// Keys per resource (`pods`, `secrets`, ...); keys outside `/registry/` count as `other`.
    pub by_resource: BTreeMap<String, u64>,
    /// All keys.
    pub total: u64,
    /// The revision the keys were read at.
    pub revision: i64,
}

impl KeyInventory {
    /// Adds one key to the counts.
    pub fn count_key(&mut self, key: &[u8]) {
        *self.by_resource.entry(resource_of(key)).or_default() += 1;
        self.total += 1;
    }
}

/// The inventory bucket of a key: the first segment after `/registry/`, else `other`.
pub fn resource_of(key: &[u8]) -> String {
    key.strip_prefix(b"/registry/")
        .and_then(|rest| {
            let end = rest.iter().position(|&b| b == b'/')?;
            (end > 0).then(|| String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .unwrap_or_else(|| "other".to_owned())
}

/// The pod a key names, as `<namespace>/<name>`: `Some` for `/registry/pods/<ns>/<name>` only.
pub fn pod_name_of(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(b"/registry/pods/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (ns, name) = (&rest[..slash], &rest[slash + 1..]);
    if ns.is_empty() || name.is_empty() || name.contains(&b'/') {
        return None;
    }
    Some(String::from_utf8_lossy(rest).into_owned())
}

/// A snapshot stream and, once it has been read to the end, its digest.
pub struct SnapshotStream {
    /// The db bytes followed by etcd's 32-byte sha256 trailer.
    pub stream: ByteStream,
    /// Resolves after the stream ends without error (so etcd's trailer matched): the size and
    /// sha256 of the bytes yielded, db and trailer.
    pub digest: oneshot::Receiver<SnapshotDigest>,
}

impl std::fmt::Debug for SnapshotStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStream").finish_non_exhaustive()
    }
}

/// A connection to one etcd member.
#[derive(Clone)]
pub struct EtcdSource {
    client: Client,
    opts: EtcdSourceOptions,
}

impl std::fmt::Debug for EtcdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSource").field("endpoint", &self.opts.endpoint).finish()
    }
}

fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                what: format!("{flag} file {}", path.display()),
                hint: Some(format!("fix {flag}; kubeadm keeps etcd's client certs in /etc/kubernetes/pki")),
            }
        } else {
            Error::io(format!("failed to read {flag} file {}", path.display()), e)
        }
    })
}

impl EtcdSource {
    /// Connects to the member (TLS if the endpoint is `https://`). Nothing is sent yet; errors
    /// surface on the first request, named with the endpoint and the flags to check.
    pub async fn connect(opts: &EtcdSourceOptions) -> Result<Self> {
        let endpoint = opts.endpoint.trim();
        let url = url::Url::parse(endpoint).map_err(|e| {
            Error::config(
                "--etcd-endpoint",
                format!("{endpoint:?} is not a URL ({e}); e.g. https://127.0.0.1:2379"),
            )
        })?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(Error::config(
                    "--etcd-endpoint",
                    format!("{endpoint:?}: scheme {other:?} is not http or https"),
                ));
            }
        };
        let mut co = ConnectOptions::new()
            .with_connect_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10))
            .with_keep_alive_while_idle(true);
        if https {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &opts.tls.cacert {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem("--cacert", ca)?));
            }
            match (&opts.tls.cert, &opts.tls.key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read_pem("--cert", c)?,
                        read_pem("--key", k)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::config(
                        "--cert/--key",
                        "give both the client certificate and its key, or neither",
                    ));
                }
            }
            co = co.with_tls(tls);
        } else if opts.tls.is_set() {
            return Err(Error::config(
                "--etcd-endpoint",
                format!("{endpoint} is plain http but TLS files were given; use https://"),
            ));
        }
        let client = tokio::time::timeout(opts.request_timeout, Client::connect([endpoint], Some(co)))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("connecting to etcd at {endpoint}"),
                after: opts.request_timeout,
            })?
            .map_err(|e| unreachable(endpoint, https, "connecting", &e))?;
        Ok(Self { client, opts: EtcdSourceOptions { endpoint: endpoint.to_owned(), ..opts.clone() } })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.opts.endpoint
    }

    async fn unary<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let https = self.opts.endpoint.starts_with("https");
        tokio::time::timeout(self.opts.request_timeout, fut)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{what} on etcd at {}", self.opts.endpoint),
                after: self.opts.request_timeout,
            })?
            .map_err(|e| unreachable(&self.opts.endpoint, https, what, &e))
    }

    /// The member's status: name, id, version, revision, db size.
    pub async fn status(&self) -> Result<MemberStatus> {
        let mut mc = self.client.maintenance_client();
        let status = self.unary("reading status", mc.status()).await?;
        let header = status.header().ok_or_else(|| {
            Error::integrity(format!("etcd at {}", self.opts.endpoint), "status response has no header")
        })?;
        let member_id = header.member_id();
        let revision = header.revision();
        let mut cc = self.client.cluster_client();
        let members = self.unary("listing members", cc.member_list()).await?;
        let name = members
            .members()
            .iter()
            .find(|m| m.id() == member_id)
            .map(|m| m.name().to_owned())
            .unwrap_or_default();
        Ok(MemberStatus {
            name,
            id: format!("{member_id:x}"),
            version: status.version().to_owned(),
            revision,
            db_size: status.db_size().max(0) as u64,
        })
    }

    /// Counts keys per `/registry/<resource>/` prefix at `revision`.
    ///
    /// etcd reads every value from its backend even for a keys-only range, so paging through all
    /// keys would read the whole db a second time. Instead this skip-scans: one keys-only,
    /// limit-1 range finds the next resource, and a count-only range (answered from etcd's
    /// in-memory index, no backend reads) counts its keys; then it jumps past that prefix. Two
    /// small requests per resource, whatever the db size.
    pub async fn key_inventory(&self, revision: i64) -> Result<KeyInventory> {
        const REGISTRY: &[u8] = b"/registry/";
        const REGISTRY_END: &[u8] = b"/registry0"; // '/' + 1
        let mut kv = self.client.kv_client();
        let mut inv = KeyInventory { revision, ..Default::default() };
        let add = |inv: &mut KeyInventory, resource: &str, n: u64| {
            if n > 0 {
                *inv.by_resource.entry(resource.to_owned()).or_default() += n;
                inv.total += n;
            }
        };
        // Keys before and after /registry/ are `other`.
        for (start, end) in [(vec![0u8], REGISTRY.to_vec()), (REGISTRY_END.to_vec(), vec![0u8])] {
            let opts = GetOptions::new().with_range(end).with_count_only().with_revision(revision);
            let resp = self.unary("counting keys", kv.get(start, Some(opts))).await?;
            add(&mut inv, "other", resp.count().max(0) as u64);
        }
        let mut start = REGISTRY.to_vec();
        loop {
            let opts = GetOptions::new()
                .with_range(REGISTRY_END)
                .with_keys_only()
                .with_limit(1)
                .with_revision(revision);
            let resp = self.unary("reading the key inventory", kv.get(start.clone(), Some(opts))).await?;
            let Some(first) = resp.kvs().first() else { break };
            let key = first.key().to_vec();
            let rest = &key[REGISTRY.len()..];
            match rest.iter().position(|&b| b == b'/') {
                Some(pos) if pos > 0 => {
                    let prefix = key[..REGISTRY.len() + pos + 1].to_vec();
                    let mut end = prefix.clone();
                    *end.last_mut().expect("prefix ends with '/'") += 1;
                    let opts =
                        GetOptions::new().with_range(end.clone()).with_count_only().with_revision(revision);
                    let resp = self.unary("counting keys", kv.get(prefix, Some(opts))).await?;
                    add(&mut inv, &String::from_utf8_lossy(&rest[..pos]), resp.count().max(0) as u64);
                    start = end;
                }
                _ => {
                    add(&mut inv, "other", 1);
                    start = key;
                    start.push(0);
                }
            }
        }
        Ok(inv)
    }

    /// The names of the pods at `revision` ([`pod_name_of`] each key under `/registry/pods/`), at
    /// most `max` of them (then `truncated`).
    ///
    /// A keys-only range, paged: etcd still reads each pod's value from its backend (see
    /// [`key_inventory`](Self::key_inventory)), so this costs a read of the pods' share of the db,
    /// bounded by `max`; it does not touch the snapshot stream.
    pub async fn pod_names(&self, revision: i64, max: usize) -> Result<PodNames> {
        const PODS: &[u8] = b"/registry/pods/";
        const PODS_END: &[u8] = b"/registry/pods0"; // '/' + 1
        const PAGE: i64 = 1000;
        let mut kv = self.client.kv_client();
        let mut names = Vec::new();
        let mut start = PODS.to_vec();
        loop {
            let opts = GetOptions::new()
                .with_range(PODS_END)
                .with_keys_only()
                .with_limit(PAGE)
                .with_revision(revision);
            let resp = self.unary("listing the pod keys", kv.get(start.clone(), Some(opts))).await?;
            for name in resp.kvs().iter().filter_map(|kv| pod_name_of(kv.key())) {
                if names.len() == max {
                    return Ok(PodNames { names, truncated: true });
                }
                names.push(name);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(PodNames { names, truncated: false }),
            }
        }
    }

    /// The value of `key` at `revision` (0: latest), if present.
    pub async fn get(&self, key: &str, revision: i64) -> Result<Option<Vec<u8>>> {
        let mut kv = self.client.kv_client();
        let resp = self
            .unary(&format!("reading {key}"), kv.get(key, Some(GetOptions::new().with_revision(revision))))
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Starts the Snapshot RPC. See the [module docs](self) for what the stream yields.
    pub async fn snapshot(&self) -> Result<SnapshotStream> {
        let mut mc = self.client.maintenance_client();
        let streaming = self.unary("starting the snapshot", mc.snapshot()).await?;
        let chunks = futures::stream::unfold(streaming, |mut s| async move {
            match s.message().await {
                Ok(Some(msg)) => Some((Ok(Bytes::copy_from_slice(msg.blob())), s)),
                Ok(None) => None,
                Err(e) => Some((Err(e), s)),
            }
        })
        .boxed();
        Ok(TrailerState::stream(chunks, &self.opts))
    }
}

/// The messages of the Snapshot RPC, as they arrive.
type Chunks = BoxStream<'static, std::result::Result<Bytes, etcd_client::Error>>;

struct TrailerState {
    chunks: Option<Chunks>,
    held: Option<Bytes>,
    hasher: TrailerHasher,
    digest_tx: Option<oneshot::Sender<SnapshotDigest>>,
    endpoint: String,
    https: bool,
    idle: Duration,
    /// Fires `snapshot_timeout` after the stream started, with that limit.
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, Duration)>,
}

impl TrailerState {
    /// The stream of `chunks` (the RPC's messages) with the trailer held back and checked, and
    /// the limits of `opts`.
    fn stream(chunks: Chunks, opts: &EtcdSourceOptions) -> SnapshotStream {
        let (tx, rx) = oneshot::channel();
        let state = Self {
            chunks: Some(chunks),
            held: None,
            hasher: TrailerHasher::new(),
            digest_tx: Some(tx),
            endpoint: opts.endpoint.clone(),
            https: opts.endpoint.starts_with("https"),
            idle: opts.snapshot_idle_timeout,
            deadline: opts.snapshot_timeout.map(|t| (Box::pin(tokio::time::sleep(t)), t)),
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        })
        .boxed();
        SnapshotStream { stream, digest: rx }
    }

    /// The next chunk to yield, the final error, or `None` when done.
    async fn next_item(&mut self) -> Option<Result<Bytes>> {
        loop {
            let chunks = self.chunks.as_mut()?;
            let next = tokio::time::timeout(self.idle, chunks.next());
            let next = match &mut self.deadline {
                Some((deadline, total)) => tokio::select! {
                    biased;
                    () = deadline.as_mut() => Err(*total),
                    next = next => Ok(next),
                },
                None => Ok(next.await),
            };
            match next {
                Ok(Ok(Some(Ok(blob)))) => {
                    if let Some(prev) = self.held.replace(blob) {
                        self.hasher.update(&prev);
                        return Some(Ok(prev));
                    }
                }
                Ok(Ok(None)) => {
                    self.chunks = None;
                    return Some(self.finish());
                }
                Ok(Ok(Some(Err(e)))) => {
                    self.chunks = None;
                    let mut err = unreachable(&self.endpoint, self.https, "streaming the snapshot", &e);
                    if let Error::Unavailable { what, .. } = &mut err {
                        *what = format!("{what} (stream broke after {} bytes)", self.hasher.size());
                    }
                    return Some(Err(err));
                }
                Ok(Err(_idle)) => {
                    self.chunks = None;
                    return Some(Err(Error::Timeout {
                        what: format!(
                            "waiting for snapshot data from etcd at {} (nothing more after {} bytes; check the \
                             member's load and disk, or raise [etcd] snapshot_idle_timeout_secs)",
                            self.endpoint,
                            self.hasher.size()
                        ),
                        after: self.idle,
                    }));
                }
                Err(total) => {
                    self.chunks = None;
                    return Some(Err(Error::Timeout {
                        what: format!(
                            "streaming the snapshot from etcd at {} ({} bytes read; raise [etcd] \
                             snapshot_timeout_secs, or back up a less loaded member)",
                            self.endpoint,
                            self.hasher.size()
                        ),
                        after: total,
                    }));
                }
            }
        }
    }

    fn finish(&mut self) -> Result<Bytes> {
        let what = format!("etcd snapshot from {}", self.endpoint);
        let trailer =
            self.held.take().ok_or_else(|| Error::integrity(&what, "the snapshot stream was empty"))?;
        if trailer.len() != TRAILER {
            return Err(Error::integrity(
                &what,
                format!("the last message is {} bytes, not etcd's 32-byte sha256 trailer", trailer.len()),
            ));
        }
        self.hasher.update(&trailer);
        let digest = std::mem::take(&mut self.hasher).finish(&what)?;
        if let Some(tx) = self.digest_tx.take() {
            let _ = tx.send(digest);
        }
        Ok(trailer)
    }
}

/// Maps an etcd-client error to a kdr error naming the endpoint and what to check.
fn unreachable(endpoint: &str, https: bool, doing: &str, e: &etcd_client::Error) -> Error {
    let text = crate::error::error_chain(e);
    let lower = text.to_ascii_lowercase();
    let hint = if ["certificate", "tls", "handshake", "alert", "unknownca"].iter().any(|k| lower.contains(k))
    {
        "TLS failed: check --cacert (the CA that signed etcd's server cert, kubeadm: /etc/kubernetes/pki/etcd/ca.crt) \
         and --cert/--key (a client pair signed by etcd's CA)"
    } else if lower.contains("permission denied") || lower.contains("unauthenticated") {
        "etcd refused the client: check --cert/--key"
    } else if https {
        "check --etcd-endpoint and that etcd is running; with client-cert auth also --cacert/--cert/--key"
    } else {
        "check --etcd-endpoint and that etcd is running"
    };
    Error::unavailable(format!("etcd at {endpoint} failed while {doing} ({hint})"), etcd_cause(e))
}

/// What went wrong, once: etcd-client's messages repeat the transport error several times.
fn etcd_cause(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let mut root: Option<&dyn std::error::Error> = std::error::Error::source(status);
            while let Some(next) = root.and_then(|r| r.source()) {
                root = Some(next);
            }
            let head = format!("{:?}: {}", status.code(), status.message());
            match root {
                Some(r) if !head.contains(&r.to_string()) => format!("{head}: {r}"),
                _ => head,
            }
        }
        other => crate::snapshot::object_store::concise_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_the_first_segment_after_registry() {
        assert_eq!(resource_of(b"/registry/pods/default/nginx"), "pods");
        assert_eq!(resource_of(b"/registry/secrets/kube-system/x"), "secrets");
        assert_eq!(
            resource_of(b"/registry/apiregistration.k8s.io/apiservices/v1."),
            "apiregistration.k8s.io"
        );
        assert_eq!(resource_of(b"/registry/ranges/serviceips"), "ranges");
        assert_eq!(resource_of(b"/registry/health"), "other");
        assert_eq!(resource_of(b"/registry//x"), "other");
        assert_eq!(resource_of(b"compact_rev_key"), "other");
        let mut inv = KeyInventory::default();
        for k in ["/registry/pods/a/b", "/registry/pods/a/c", "/x"] {
            inv.count_key(k.as_bytes());
        }
        assert_eq!(inv.total, 3);
        assert_eq!(inv.by_resource["pods"], 2);
        assert_eq!(inv.by_resource["other"], 1);
    }

    #[test]
    fn pod_names_are_namespace_slash_name_of_pod_keys_only() {
        assert_eq!(pod_name_of(b"/registry/pods/default/nginx").as_deref(), Some("default/nginx"));
        assert_eq!(
            pod_name_of(b"/registry/pods/kube-system/etcd-master-1").as_deref(),
            Some("kube-system/etcd-master-1")
        );
        for not_a_pod in [
            &b"/registry/pods/default"[..],
            b"/registry/pods/default/",
            b"/registry/pods//nginx",
            b"/registry/pods/a/b/c",
            b"/registry/pods",
            b"/registry/podsecuritypolicy/psp/x",
            b"/registry/pods0/ns/a",
            b"/registry/secrets/default/nginx",
            b"compact_rev_key",
        ] {
            assert_eq!(pod_name_of(not_a_pod), None, "{}", String::from_utf8_lossy(not_a_pod));
        }
    }

    fn opts(idle_s: u64, total_s: Option<u64>) -> EtcdSourceOptions {
        let mut o = EtcdSourceOptions::new("https://10.0.0.1:2379");
        o.snapshot_idle_timeout = Duration::from_secs(idle_s);
        o.snapshot_timeout = total_s.map(Duration::from_secs);
        o
    }

    /// `n` chunks of `data`, one every `every`, then (if `hang`) nothing, forever.
    fn chunks(n: usize, every: Duration, hang: bool) -> Chunks {
        let sent = futures::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from_static(b"data"))
        });
        if hang { sent.chain(futures::stream::pending()).boxed() } else { sent.boxed() }
    }

    async fn drain(mut s: SnapshotStream) -> (usize, Result<()>) {
        let mut n = 0;
        while let Some(item) = s.stream.next().await {
            match item {
                Ok(b) => n += b.len(),
                Err(e) => return (n, Err(e)),
            }
        }
        (n, Ok(()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_that_stops_sending_fails_the_snapshot_naming_it() {
        let s = TrailerState::stream(chunks(3, Duration::from_secs(1), true), &opts(60, None));
        let (n, r) = drain(s).await;
        assert_eq!(n, 8, "the chunks before the stall were yielded (the last one held back)");
        let e = r.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Timeout { after, .. } if after == Duration::from_secs(60)), "{msg}");
        assert!(
            msg.contains("https://10.0.0.1:2379")
                && msg.contains("snapshot_idle_timeout_secs")
                && msg.contains("after 8 bytes"),
            "{msg}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_member_is_bounded_by_the_total_timeout() {
        // A chunk every 30 s never trips the 60 s idle limit; the 100 s total does.
        let s = TrailerState::stream(chunks(1000, Duration::from_secs(30), false), &opts(60, Some(100)));
        let (_, r) = drain(s).await;
        let e = r.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Timeout { after, .. } if after == Duration::from_secs(100)), "{msg}");
        assert!(msg.contains("https://10.0.0.1:2379") && msg.contains("snapshot_timeout_secs"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_does_not_count_as_an_idle_member() {
        let mut s = TrailerState::stream(chunks(3, Duration::ZERO, false), &opts(1, None));
        assert!(s.stream.next().await.unwrap().is_ok());
        // The upload is slow: the stream is not polled for far longer than the idle limit.
        tokio::time::sleep(Duration::from_secs(30)).await;
        // The last chunk is where the trailer goes: 4 bytes is not a 32-byte trailer, but the
        // error is about that, not about a timeout.
        assert!(s.stream.next().await.unwrap().is_ok());
        let e = s.stream.next().await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Integrity { .. }), "{e}");
    }

    #[tokio::test]
    async fn bad_endpoints_name_the_flag() {
        for bad in ["localhost:2379", "ftp://x:1"] {
            let e = EtcdSource::connect(&EtcdSourceOptions::new(bad)).await.unwrap_err();
            assert!(e.is_usage() && e.to_string().contains("--etcd-endpoint"), "{bad}: {e}");
        }
        let mut o = EtcdSourceOptions::new("https://127.0.0.1:1");
        o.tls.cacert = Some("/nonexistent/ca.crt".into());
        let e = EtcdSource::connect(&o).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }) && e.to_string().contains("--cacert"), "{e}");
    }
}
