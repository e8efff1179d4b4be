//! The one public error type of kdr-core.
//!
//! Variants are the ones a caller can act on (retry, stop, fix the input). Backend-private errors
//! (etcd-client, object_store, russh, I/O) convert into them at the module boundary, keeping their
//! source. Messages follow kube-rs: what failed, on what, then the cause, e.g.
//! `failed to upload snapshot part 3 of backup 20261121T051115Z-1a2b: connection reset`.
use std::time::Duration;

/// A boxed, thread-safe error, the `source` of most variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with kdr-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything kdr-core can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named thing does not exist (a backup set, an object, a file, a bucket).
    #[error("{what} not found{}", hint_suffix(.hint))]
    NotFound {
        /// What was looked for, naming the input (e.g. `backup set 20261121T...` or `bucket kdr`).
        what: String,
        /// What the operator can do about it, if anything specific.
        hint: Option<String>,
    },

    /// A conditional create found the thing already there (a manifest, a promotion claim).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was being created.
        what: String,
    },

    /// Data failed a check: a hash mismatch, a truncated stream, a failed decryption, a key
    /// inventory that disagrees. Never retryable: the data is wrong, not the network.
    #[error("integrity check failed for {what}: {detail}")]
    Integrity {
        /// The object or set whose check failed.
        what: String,
        /// Which check failed and how (expected vs. actual).
        detail: String,
    },

    /// A service could not be reached or refused to work (etcd down, store down, access denied).
    /// Retrying later may help; the message says what to check.
    #[error("{what}: {source}")]
    Unavailable {
        /// What was being attempted, naming the endpoint.
        what: String,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },

    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being attempted.
        what: String,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// A command (local or on a node) exited non-zero or could not be run.
    #[error("command `{command}` on {host} failed{}: {stderr}", exit_suffix(.exit_code))]
    CommandFailed {
        /// `localhost` or the node's name.
        host: String,
        /// The command line, with no secret in it.
        command: String,
        /// The exit code, if the command exited (none if killed by a signal or not started).
        exit_code: Option<i32>,
        /// The tail of its standard error.
        stderr: String,
    },

    /// A configuration value or argument is wrong; `key` names it (`store.url`, `--data-dir`).
    #[error("invalid {key}: {reason}")]
    Config {
        /// The config key, flag or environment variable at fault.
        key: String,
        /// Why it is wrong and what a right value looks like.
        reason: String,
    },

    /// The operation was refused because it would be unsafe (a data dir in use, a latched
    /// detector, an epoch already promoted). Nothing was changed.
    #[error("refused: {reason}")]
    Refused {
        /// Why, and what to do instead.
        reason: String,
    },

    /// A local I/O error, with what was being done to which path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The operation was cancelled (shutdown requested); nothing partial was left listed.
    #[error("{what} cancelled")]
    Cancelled {
        /// What was cancelled.
        what: String,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

fn exit_suffix(code: &Option<i32>) -> String {
    match code {
        Some(c) => format!(" with exit code {c}"),
        None => String::new(),
    }
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// An [`Error::Config`].
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config { key: key.into(), reason: reason.into() }
    }

    /// An [`Error::Integrity`].
    pub fn integrity(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Integrity { what: what.into(), detail: detail.into() }
    }

    /// An [`Error::Unavailable`].
    pub fn unavailable(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable { what: what.into(), source: source.into() }
    }

    /// An [`Error::NotFound`] without a hint.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into(), hint: None }
    }

    /// An [`Error::Refused`].
    pub fn refused(reason: impl Into<String>) -> Self {
        Error::Refused { reason: reason.into() }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// Whether this error means the input or configuration is wrong (exit code 2 in the binaries).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Config { .. })
    }
}

/// An error and its whole cause chain as one line (`a: b: c`), skipping a cause whose text the
/// message already contains. Client crates' top-level messages ("error sending request",
/// "transport error") hide the part an operator needs: connection refused, unknown CA, timeout.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}
