//! Injected time.
//!
//! Logic in kdr-core never reads the clock itself (a clippy `disallowed-methods` entry enforces
//! it): the detector takes `now: Instant` arguments, and code that stamps wall-clock times (backup
//! ids, manifests, journals) takes a [`Clock`]. [`SystemClock`] is the one real implementation;
//! [`ManualClock`] is for tests and replay.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A source of wall-clock (UTC) and monotonic time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current UTC time, for timestamps that humans and other hosts read.
    fn utc(&self) -> DateTime<Utc>;
    /// The current monotonic instant, for measuring durations and deadlines.
    fn instant(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[allow(clippy::disallowed_methods)] // the one place the real clock is read
impl Clock for SystemClock {
    fn utc(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(DateTime<Utc>, Instant)>>,
}

impl ManualClock {
    /// A clock starting at `utc`, with its monotonic origin at `origin`.
    pub fn new(utc: DateTime<Utc>, origin: Instant) -> Self {
        Self { inner: Arc::new(Mutex::new((utc, origin))) }
    }

    /// Moves both times forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        g.1 += by;
    }

    /// Sets the wall clock (a wall-clock step; the monotonic time does not move).
    pub fn set_utc(&self, utc: DateTime<Utc>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0 = utc;
    }
}

impl Clock for ManualClock {
    fn utc(&self) -> DateTime<Utc> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn instant(&self) -> Instant {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}
