//! The stream layers between raw bytes (an etcd snapshot, a bundle tar) and the bytes a store
//! holds: `sha256(raw)` → zstd → optional age encryption (the store then hashes what it stores).
//! [`encode`] goes one way during backup, [`decode`] the other way during verify, download and
//! restore.
//!
//! Both directions run in one blocking thread fed and drained through small bounded channels, so
//! memory stays flat whatever the object size (about 1 MiB of buffers plus zstd's window) and
//! the CPU-heavy work (hashing, compression, encryption) runs beside the async network I/O on the
//! runtime's worker threads.
//!
//! Keys (age X25519 identities and recipients, and the check that one decrypts a set) are in
//! [`keys`](super::keys); [`EncryptionKey`] and [`check_key`] are re-exported here.
//!
//! ```
//! # #[tokio::main] async fn main() -> kdr_core::Result<()> {
//! use futures::StreamExt;
//! use kdr_core::snapshot::codec::{EncodeOptions, decode, encode};
//! use kdr_core::snapshot::keys::EncryptionKey;
//! use kdr_core::snapshot::{ObjectEntry, ObjectKind};
//! use sha2::Digest;
//!
//! let key = EncryptionKey::generate();
//! let opts = EncodeOptions { encryption_key: Some(key.clone()), ..Default::default() };
//! let raw = futures::stream::iter([Ok(bytes::Bytes::from_static(b"bbolt pages..."))]).boxed();
//! let encoded = encode(raw, &opts);
//! let stored: Vec<u8> = encoded.stream.map(|c| c.unwrap().to_vec()).concat().await;
//! let digest = encoded.raw.digest().await?;
//!
//! // What a manifest records, then the way back.
//! let entry = ObjectEntry {
//!     name: opts.object_name(ObjectKind::EtcdSnapshot), // "etcd.db.zst.age"
//!     kind: ObjectKind::EtcdSnapshot,
//!     stored_size: stored.len() as u64,
//!     stored_sha256: hex::encode(sha2::Sha256::digest(&stored)),
//!     raw_size: digest.size,
//!     raw_sha256: digest.sha256.unwrap(),
//! };
//! let back = futures::stream::iter([Ok(bytes::Bytes::from(stored))]).boxed();
//! let decoded = decode(back, &entry, opts.compression, &opts.encryption(), Some(&key))?;
//! let raw: Vec<u8> = decoded.map(|c| c.unwrap().to_vec()).concat().await;
//! assert_eq!(raw, b"bbolt pages...");
//! # Ok(()) }
//! ```
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

pub use super::keys::{EncryptionKey, check_key};
use super::{ByteStream, Compression, Encryption, ObjectEntry, ObjectKind};
use crate::error::{Error, Result};

/// The zstd level used by default: fast enough to keep up with etcd's snapshot stream on one
/// core, while sparse bbolt pages still shrink a lot.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Size of the chunks the encoder and decoder hand on.
const OUT_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the blocking thread and the async side, each way.
const CHANNEL_DEPTH: usize = 4;

/// How [`encode`] transforms a stream.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Compression (zstd by default).
    pub compression: Compression,
    /// zstd level ([`DEFAULT_ZSTD_LEVEL`] by default).
    pub zstd_level: i32,
    /// Encrypt to this key's recipient, if set.
    pub encryption_key: Option<EncryptionKey>,
    /// Hash the raw bytes (on by default). A caller that already hashes the raw stream itself
    /// (the etcd snapshot source does, to check etcd's trailer) turns this off to save a pass;
    /// [`RawDigest::sha256`] is then `None`.
    pub hash_raw: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            encryption_key: None,
            hash_raw: true,
        }
    }
}

impl EncodeOptions {
    /// The [`Encryption`] to record in a manifest for these options.
    pub fn encryption(&self) -> Encryption {
        match &self.encryption_key {
            None => Encryption::None,
            Some(k) => Encryption::AgeX25519 { recipient: k.recipient() },
        }
    }

    /// The object name for `kind` under these options, e.g. `etcd.db.zst.age`.
    pub fn object_name(&self, kind: ObjectKind) -> String {
        object_name(kind, self.compression, &self.encryption())
    }
}

/// The object name for `kind` with the given layers, e.g. `etcd.db.zst.age` or `bundle.tar`.
pub fn object_name(kind: ObjectKind, compression: Compression, encryption: &Encryption) -> String {
    let mut name = String::from(match kind {
        ObjectKind::EtcdSnapshot => "etcd.db",
        ObjectKind::Bundle => "bundle.tar",
    });
    if compression == Compression::Zstd {
        name.push_str(".zst");
    }
    if *encryption != Encryption::None {
        name.push_str(".age");
    }
    name
}

/// Size and sha256 of a raw (pre-compression) stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDigest {
    /// Bytes read.
    pub size: u64,
    /// Hex sha256, unless hashing was turned off ([`EncodeOptions::hash_raw`]).
    pub sha256: Option<String>,
}

/// Resolves to the raw digest once an [`Encoded`] stream has been fully consumed.
#[derive(Debug)]
pub struct RawDigestHandle(oneshot::Receiver<Result<RawDigest>>);

impl RawDigestHandle {
    /// The digest; an error if the encoder failed or its output was not read to the end.
    pub async fn digest(self) -> Result<RawDigest> {
        self.0.await.unwrap_or_else(|_| Err(Error::Cancelled { what: "encoding".into() }))
    }
}

/// The output of [`encode`].
pub struct Encoded {
    /// The bytes to store. Yields an error (and stops) if the input failed or encoding failed, so
    /// that the upload consuming it aborts.
    pub stream: ByteStream,
    /// The raw digest, ready after `stream` ends.
    pub raw: RawDigestHandle,
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded").finish_non_exhaustive()
    }
}

/// Compresses and optionally encrypts `input`, hashing the raw bytes on the way. Must be called
/// inside a tokio runtime (it spawns a blocking thread). Memory use is bounded.
pub fn encode(input: ByteStream, opts: &EncodeOptions) -> Encoded {
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(CHANNEL_DEPTH);
    let (digest_tx, digest_rx) = oneshot::channel();
    let handle = tokio::runtime::Handle::current();
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let result = run_encode(&handle, input, &opts, ChannelWriter::new(tx));
        let digest = match result {
            Ok(d) => Ok(d),
            Err(EncodeError::Input(e)) => {
                // The input's own error goes downstream (the upload aborts and reports it).
                let _ = err_tx.blocking_send(Err(e));
                Err(Error::Cancelled { what: "encoding (input failed)".into() })
            }
            Err(EncodeError::Output(e)) => {
                let msg = e.to_string();
                let _ = err_tx.blocking_send(Err(Error::io("failed to compress or encrypt the stream", e)));
                Err(Error::io("failed to compress or encrypt the stream", io::Error::other(msg)))
            }
        };
        let _ = digest_tx.send(digest);
    });
    Encoded { stream: ReceiverStream::new(rx).boxed(), raw: RawDigestHandle(digest_rx) }
}

enum EncodeError {
    Input(Error),
    Output(io::Error),
}

fn run_encode(
    handle: &tokio::runtime::Handle,
    mut input: ByteStream,
    opts: &EncodeOptions,
    sink: ChannelWriter,
) -> std::result::Result<RawDigest, EncodeError> {
    let encrypted = match &opts.encryption_key {
        None => Encrypted::Plain(sink),
        Some(key) => {
            let encryptor =
                age::Encryptor::with_recipients(std::iter::once(&key.recipient as &dyn age::Recipient))
                    .map_err(|e| EncodeError::Output(io::Error::other(e.to_string())))?;
            Encrypted::Age(encryptor.wrap_output(sink).map_err(EncodeError::Output)?)
        }
    };
    let mut top = match opts.compression {
        Compression::None => Compressed::Plain(encrypted),
        Compression::Zstd => Compressed::Zstd(
            zstd::stream::write::Encoder::new(encrypted, opts.zstd_level).map_err(EncodeError::Output)?,
        ),
    };
    let mut hasher = opts.hash_raw.then(Sha256::new);
    let mut size = 0u64;
    while let Some(chunk) = handle.block_on(input.next()) {
        let chunk = chunk.map_err(EncodeError::Input)?;
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        size += chunk.len() as u64;
        top.write_all(&chunk).map_err(EncodeError::Output)?;
    }
    top.finish().map_err(EncodeError::Output)?;
    Ok(RawDigest { size, sha256: hasher.map(|h| hex::encode(h.finalize())) })
}

enum Encrypted {
    Plain(ChannelWriter),
    Age(age::stream::StreamWriter<ChannelWriter>),
}

impl Write for Encrypted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encrypted::Plain(w) => w.write(buf),
            Encrypted::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encrypted::Plain(w) => w.flush(),
            Encrypted::Age(w) => w.flush(),
        }
    }
}

impl Encrypted {
    fn finish(self) -> io::Result<()> {
        let sink = match self {
            Encrypted::Plain(w) => w,
            Encrypted::Age(w) => w.finish()?,
        };
        sink.finish()
    }
}

enum Compressed {
    Plain(Encrypted),
    Zstd(zstd::stream::write::Encoder<'static, Encrypted>),
}

impl Write for Compressed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressed::Plain(w) => w.write(buf),
            Compressed::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressed::Plain(w) => w.flush(),
            Compressed::Zstd(w) => w.flush(),
        }
    }
}

impl Compressed {
    fn finish(self) -> io::Result<()> {
        match self {
            Compressed::Plain(w) => w.finish(),
            Compressed::Zstd(w) => w.finish()?.finish(),
        }
    }
}

/// A `Write` that batches bytes into [`OUT_CHUNK`]-sized `Bytes` and sends them to a bounded
/// channel, blocking when the consumer is behind (that is the back-pressure).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Result<Bytes>>) -> Self {
        Self { tx, buf: BytesMut::with_capacity(OUT_CHUNK) }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(OUT_CHUNK);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send_buf()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(OUT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() >= OUT_CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        // Batching is the point; chunks go out when full or at finish.
        Ok(())
    }
}

/// Runs `produce` in a blocking thread, writing into a bounded channel, and returns the bytes it
/// writes as a stream plus its result. If `produce` fails, the stream ends with its error; if
/// the stream is dropped, `produce`'s writes fail with `BrokenPipe`.
pub(crate) fn spawn_writer<T, F>(produce: F) -> (ByteStream, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Write) -> Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(CHANNEL_DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let mut sink = ChannelWriter::new(tx);
        let result = produce(&mut sink).and_then(|v| {
            sink.finish().map_err(|e| Error::io("failed to hand on the stream", e))?;
            Ok(v)
        });
        let result = match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let msg = e.to_string();
                let _ = err_tx.blocking_send(Err(e));
                Err(Error::io("stream producer failed", io::Error::other(msg)))
            }
        };
        let _ = done_tx.send(result);
    });
    (ReceiverStream::new(rx).boxed(), done_rx)
}

/// Decodes a stored object back to its raw bytes: decrypt (if the set is encrypted) → decompress,
/// verifying the stored and raw sizes and sha256s against `entry` on the fly.
///
/// The key is checked against the set's recipient before reading ([`check_key`]). The returned
/// stream yields raw bytes as they are decoded and ends with an [`Error::Integrity`] item if any
/// check fails at the end (size or hash mismatch, truncated or tampered data, failed decryption).
/// A consumer must therefore treat the output as untrusted until the stream has ended without an
/// error (e.g. write to a temporary name and rename only then). Memory use is bounded.
pub fn decode(
    stored: ByteStream,
    entry: &ObjectEntry,
    compression: Compression,
    encryption: &Encryption,
    key: Option<&EncryptionKey>,
) -> Result<ByteStream> {
    decode_with(stored, entry, compression, encryption, key, DecodeOptions::default())
}

/// How [`decode_with`] checks what it decodes.
#[derive(Clone, Copy, Debug)]
pub struct DecodeOptions {
    /// Hash the raw bytes and check them against `entry.raw_sha256` (on by default). A caller
    /// that hashes the raw stream itself (the restore does, to check etcd's trailer in the same
    /// pass) turns this off to save a pass, and must then check `raw_sha256` itself. The stored
    /// size and sha256 and the raw size are always checked.
    pub hash_raw: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self { hash_raw: true }
    }
}

/// [`decode`], with [`DecodeOptions`].
pub fn decode_with(
    stored: ByteStream,
    entry: &ObjectEntry,
    compression: Compression,
    encryption: &Encryption,
    key: Option<&EncryptionKey>,
    opts: DecodeOptions,
) -> Result<ByteStream> {
    let identity = check_key(encryption, key)?.and_then(|k| k.identity);
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(CHANNEL_DEPTH);
    let handle = tokio::runtime::Handle::current();
    let entry = entry.clone();
    tokio::task::spawn_blocking(move || {
        let state = Arc::new(Mutex::new(StoredState {
            stream: Some(stored),
            hasher: Sha256::new(),
            size: 0,
            pending: Bytes::new(),
            error: None,
        }));
        let reader = StoredReader { state: state.clone(), handle: handle.clone() };
        let result = run_decode(reader, &entry, compression, identity.as_ref(), opts, &tx);
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        // An input (download) error outranks what it caused downstream.
        let outcome = match (st.error.take(), result) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => {
                if st.stream.is_some() || !st.pending.is_empty() {
                    // Drain whatever the decoders did not need, so that the stored hash covers all.
                    drop(st);
                    let mut rest = StoredReader { state: state.clone(), handle };
                    let drained = io::copy(&mut rest, &mut io::sink());
                    st = state.lock().unwrap_or_else(|e| e.into_inner());
                    match (st.error.take(), drained) {
                        (Some(e), _) => Err(e),
                        (None, Err(e)) => Err(Error::io(format!("failed to read {}", entry.name), e)),
                        (None, Ok(extra)) if extra > 0 => Err(Error::integrity(
                            &entry.name,
                            format!("{extra} unexpected bytes after the end of the compressed data"),
                        )),
                        (None, Ok(_)) => check_stored(&entry, &st),
                    }
                } else {
                    check_stored(&entry, &st)
                }
            }
        };
        if let Err(e) = outcome {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(ReceiverStream::new(rx).boxed())
}

fn check_stored(entry: &ObjectEntry, st: &StoredState) -> Result<()> {
    if st.size != entry.stored_size {
        return Err(Error::integrity(
            &entry.name,
            format!("stored size is {} bytes, the manifest says {}", st.size, entry.stored_size),
        ));
    }
    let sha = hex::encode(st.hasher.clone().finalize());
    if sha != entry.stored_sha256 {
        return Err(Error::integrity(
            &entry.name,
            format!("stored sha256 is {sha}, the manifest says {}", entry.stored_sha256),
        ));
    }
    Ok(())
}

fn run_decode(
    reader: StoredReader,
    entry: &ObjectEntry,
    compression: Compression,
    identity: Option<&age::x25519::Identity>,
    opts: DecodeOptions,
    tx: &mpsc::Sender<Result<Bytes>>,
) -> Result<()> {
    let what = &entry.name;
    let decrypted: Box<dyn Read> = match identity {
        None => Box::new(reader),
        Some(id) => {
            let dec = age::Decryptor::new(reader).map_err(|e| age_error(what, e))?;
            Box::new(dec.decrypt(std::iter::once(id as &dyn age::Identity)).map_err(|e| age_error(what, e))?)
        }
    };
    let mut raw: Box<dyn Read> = match compression {
        Compression::None => decrypted,
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(decrypted)
                .map_err(|e| Error::io(format!("failed to start decompressing {what}"), e))?,
        ),
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffers = BufferPool::default();
    let mut buf = buffers.take();
    loop {
        let mut filled = 0;
        while filled < OUT_CHUNK {
            match raw.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::integrity(what, format!("could not decode the stored data: {e}")));
                }
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = buf.split_to(filled).freeze();
        buffers.lend(&chunk);
        buf = buffers.take();
        if opts.hash_raw {
            hasher.update(&chunk);
        }
        size += filled as u64;
        if tx.blocking_send(Ok(chunk)).is_err() {
            return Err(Error::Cancelled { what: format!("decoding {what}") });
        }
    }
    if size != entry.raw_size {
        return Err(Error::integrity(
            what,
            format!("decoded size is {size} bytes, the manifest says {}", entry.raw_size),
        ));
    }
    let sha = hex::encode(hasher.finalize());
    if opts.hash_raw && sha != entry.raw_sha256 {
        return Err(Error::integrity(
            what,
            format!("raw sha256 is {sha}, the manifest says {}", entry.raw_sha256),
        ));
    }
    Ok(())
}

/// Output buffers for the decoder, reused once the consumer has dropped them: a 1 GB snapshot
/// would otherwise take 4,000 fresh, zeroed 256 KiB allocations (memset and page faults cost
/// more CPU than the decompression). Holds at most [`POOL_SIZE`] buffers.
#[derive(Default)]
struct BufferPool {
    /// Chunks handed out, oldest first; one whose consumer is done comes back as a buffer.
    lent: VecDeque<Bytes>,
}

/// Buffers a [`BufferPool`] keeps track of: more than are in flight between the decoder and a
/// consumer (the channel's depth plus the consumer's own queue).
const POOL_SIZE: usize = 16;

impl BufferPool {
    /// A buffer of `OUT_CHUNK` bytes: the oldest lent chunk if no one else holds it any more,
    /// else a new one.
    fn take(&mut self) -> BytesMut {
        if let Some(oldest) = self.lent.pop_front() {
            match oldest.try_into_mut() {
                Ok(mut buf) if buf.capacity() >= OUT_CHUNK => {
                    // Its bytes are initialised (zeroed once, then written): no new memset.
                    buf.resize(OUT_CHUNK, 0);
                    return buf;
                }
                Ok(_) => {}
                Err(still_held) if self.lent.len() + 1 < POOL_SIZE => self.lent.push_front(still_held),
                Err(_) => {} // forgotten: the consumer keeps it
            }
        }
        BytesMut::zeroed(OUT_CHUNK)
    }

    /// Remembers `chunk` (a cheap reference) so its buffer can be reused once consumed.
    fn lend(&mut self, chunk: &Bytes) {
        self.lent.push_back(chunk.clone());
    }
}

fn age_error(what: &str, e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::config(
            "--encryption-key-file",
            format!("the key file does not decrypt {what} (no matching key in the age header)"),
        ),
        other => Error::integrity(what, format!("age decryption failed: {other}")),
    }
}

struct StoredState {
    stream: Option<ByteStream>,
    hasher: Sha256,
    size: u64,
    /// Bytes of the current chunk not yet read.
    pending: Bytes,
    /// The download's own error, kept so it can be reported instead of a decoder's complaint.
    error: Option<Error>,
}

/// A blocking `Read` over the stored byte stream that hashes what passes.
struct StoredReader {
    state: Arc<Mutex<StoredState>>,
    handle: tokio::runtime::Handle,
}

impl Read for StoredReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let n = st.pending.len().min(out.len());
            if n > 0 {
                out[..n].copy_from_slice(&st.pending[..n]);
                let _ = st.pending.split_to(n);
                return Ok(n);
            }
            let Some(stream) = st.stream.as_mut() else { return Ok(0) };
            match self.handle.block_on(stream.next()) {
                None => {
                    st.stream = None;
                    return Ok(0);
                }
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    st.size += chunk.len() as u64;
                    st.pending = chunk;
                }
                Some(Err(e)) => {
                    let msg = e.to_string();
                    st.error = Some(e);
                    st.stream = None;
                    return Err(io::Error::other(msg));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(data: Vec<u8>, chunk: usize) -> ByteStream {
        let chunks: Vec<Result<Bytes>> =
            data.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(chunks).boxed()
    }

    async fn collect(mut s: ByteStream) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn sample(len: usize) -> Vec<u8> {
        // Half compressible, half noise.
        (0..len).map(|i| if i % 2048 < 1024 { (i % 7) as u8 } else { rand::random() }).collect()
    }

    async fn roundtrip(opts: EncodeOptions, len: usize) -> (ObjectEntry, Vec<u8>, Vec<u8>) {
        let raw = sample(len);
        let enc = encode(stream_of(raw.clone(), 32 * 1024), &opts);
        let stored = collect(enc.stream).await.unwrap();
        let digest = enc.raw.digest().await.unwrap();
        assert_eq!(digest.size, raw.len() as u64);
        let entry = ObjectEntry {
            name: opts.object_name(ObjectKind::EtcdSnapshot),
            kind: ObjectKind::EtcdSnapshot,
            stored_size: stored.len() as u64,
            stored_sha256: hex::encode(Sha256::digest(&stored)),
            raw_size: digest.size,
            raw_sha256: digest.sha256.unwrap(),
        };
        assert_eq!(entry.raw_sha256, hex::encode(Sha256::digest(&raw)));
        (entry, raw, stored)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zstd_roundtrip_verifies() {
        let opts = EncodeOptions::default();
        let (entry, raw, stored) = roundtrip(opts, 3 * 1024 * 1024 + 17).await;
        assert!(stored.len() < raw.len(), "compressible data shrinks");
        let out =
            decode(stream_of(stored, 10_000), &entry, Compression::Zstd, &Encryption::None, None).unwrap();
        assert_eq!(collect(out).await.unwrap(), raw);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_roundtrip_and_empty_input() {
        let opts = EncodeOptions { compression: Compression::None, ..Default::default() };
        let (entry, raw, stored) = roundtrip(opts.clone(), 100_000).await;
        assert_eq!(stored, raw);
        assert_eq!(entry.name, "etcd.db");
        let (entry0, _, stored0) = roundtrip(opts, 0).await;
        assert!(stored0.is_empty());
        let out = decode(stream_of(stored0, 1), &entry0, Compression::None, &Encryption::None, None).unwrap();
        assert!(collect(out).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn age_roundtrip_and_key_checks() {
        let key = EncryptionKey::generate();
        let opts = EncodeOptions { encryption_key: Some(key.clone()), ..Default::default() };
        let encryption = opts.encryption();
        let (entry, raw, stored) = roundtrip(opts, 1_000_000).await;
        assert_eq!(entry.name, "etcd.db.zst.age");
        let out = decode(stream_of(stored.clone(), 4096), &entry, Compression::Zstd, &encryption, Some(&key))
            .unwrap();
        assert_eq!(collect(out).await.unwrap(), raw);

        // No key, wrong key, public-only key: each refused before reading, naming the flag.
        let none = decode(stream_of(vec![], 1), &entry, Compression::Zstd, &encryption, None).err().unwrap();
        assert!(none.to_string().contains("--encryption-key-file"), "{none}");
        let wrong = EncryptionKey::generate();
        let e =
            decode(stream_of(vec![], 1), &entry, Compression::Zstd, &encryption, Some(&wrong)).err().unwrap();
        assert!(e.to_string().contains("wrong key"), "{e}");
        let public = EncryptionKey::parse(&key.recipient()).unwrap();
        let e = decode(stream_of(vec![], 1), &entry, Compression::Zstd, &encryption, Some(&public))
            .err()
            .unwrap();
        assert!(e.to_string().contains("only the public recipient"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn public_recipient_is_enough_to_encrypt() {
        let key = EncryptionKey::generate();
        let public = EncryptionKey::parse(&format!("# comment\n{}\n", key.recipient())).unwrap();
        let opts = EncodeOptions { encryption_key: Some(public), ..Default::default() };
        let encryption = opts.encryption();
        let (entry, raw, stored) = roundtrip(opts, 200_000).await;
        let out = decode(stream_of(stored, 999), &entry, Compression::Zstd, &encryption, Some(&key)).unwrap();
        assert_eq!(collect(out).await.unwrap(), raw);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corruption_is_an_integrity_error() {
        for encrypted in [false, true] {
            let key = EncryptionKey::generate();
            let opts = EncodeOptions { encryption_key: encrypted.then(|| key.clone()), ..Default::default() };
            let encryption = opts.encryption();
            let (entry, _, mut stored) = roundtrip(opts, 500_000).await;
            let mid = stored.len() / 2;
            stored[mid] ^= 0x40;
            let out =
                decode(stream_of(stored, 8192), &entry, Compression::Zstd, &encryption, Some(&key)).unwrap();
            let err = collect(out).await.unwrap_err();
            assert!(matches!(err, Error::Integrity { .. }), "encrypted={encrypted}: {err}");
        }
        // Truncation too.
        let (entry, _, mut stored) = roundtrip(EncodeOptions::default(), 500_000).await;
        stored.truncate(stored.len() - 10);
        let out =
            decode(stream_of(stored, 8192), &entry, Compression::Zstd, &Encryption::None, None).unwrap();
        assert!(matches!(collect(out).await.unwrap_err(), Error::Integrity { .. }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn input_error_reaches_the_output() {
        let items: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"some bytes")),
            Err(Error::unavailable("etcd stream", io::Error::other("connection reset"))),
        ];
        let enc = encode(futures::stream::iter(items).boxed(), &EncodeOptions::default());
        let err = collect(enc.stream).await.unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert!(enc.raw.digest().await.is_err());
    }

    #[test]
    fn the_buffer_pool_reuses_a_buffer_only_once_its_chunk_is_dropped() {
        let mut pool = BufferPool::default();
        let mut buf = pool.take();
        assert_eq!(buf.len(), OUT_CHUNK);
        buf[..3].copy_from_slice(b"abc");
        let first = buf.split_to(3).freeze();
        drop(buf);
        pool.lend(&first);
        let first_ptr = first.as_ptr();

        // Still held by the consumer: a new buffer, and the chunk is untouched.
        let mut other = pool.take();
        other[..3].copy_from_slice(b"xyz");
        assert_ne!(other.as_ptr(), first_ptr);
        assert_eq!(&first[..], b"abc");

        // Consumed: its buffer comes back, full size, for the next chunk.
        drop(first);
        let again = pool.take();
        assert_eq!(again.as_ptr(), first_ptr);
        assert_eq!(again.len(), OUT_CHUNK);

        // A consumer that never lets go costs a new buffer each time, never more than POOL_SIZE kept.
        let held: Vec<Bytes> = (0..POOL_SIZE * 2)
            .map(|_| {
                let chunk = pool.take().freeze();
                pool.lend(&chunk);
                chunk
            })
            .collect();
        assert!(pool.lent.len() <= POOL_SIZE, "{}", pool.lent.len());
        assert!(held.iter().all(|c| c.len() == OUT_CHUNK));
    }
}
