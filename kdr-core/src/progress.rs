//! Progress of a long transfer, e.g. a progress bar: [`Progress`], reported to by the backup
//! (raw bytes read from etcd) and by downloads (bytes read from the store).

/// Progress of a transfer, e.g. a progress bar. Calls are cheap and frequent.
pub trait Progress: Send + Sync {
    /// The expected size (etcd's reported db size).
    fn start(&self, total: u64);
    /// `bytes` more raw bytes were read from etcd.
    fn advance(&self, bytes: u64);
    /// The transfer is done (successfully or not).
    fn finish(&self);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
