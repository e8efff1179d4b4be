//! The [`HealthProbe`] conformance suite.
//!
//! [`check`] runs one probe against an endpoint whose state the caller knows (up, down, or one
//! the probe cannot tell about) and checks the trait's guarantees: the probe answers within
//! about its own timeout (bounded by [`probe_bounded`], an overrun reads as its role says: down
//! for the primary's probes and the self probe, unknown for a witness); the verdict is the
//! expected one; the detail says what was probed and why; a probe cancelled mid-run (its future
//! dropped) leaves it usable, and a second run gives the same verdict.
//!
//! Each default probe runs it against real endpoints in `kdr-core/tests/conformance.rs`: an
//! HTTPS server with a test CA, open and closed TCP ports, ICMP and DNS on loopback, a server
//! that never answers, and (witnesses) real sshd nodes in `kdr-core/tests/witness_nodes.rs`.
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::health::{HealthProbe, ProbeRole, ProbeStatus, probe_bounded};

/// How much longer than its timeout a bounded probe may take to come back (scheduling slack).
pub const SLACK: Duration = Duration::from_millis(750);

/// Runs `probe` (in `role`) against an endpoint that should read `expect`; panics naming the
/// probe and the broken guarantee.
pub async fn check(role: &ProbeRole, probe: &dyn HealthProbe, expect: ProbeStatus) {
    let name = probe.name().to_owned();
    assert!(!name.is_empty(), "name() must say what is probed");
    assert!(probe.timeout() > Duration::ZERO, "{name}: a probe must have a timeout");
    let t0 = SystemClock.instant();
    let r = probe_bounded(role, probe).await;
    let took = SystemClock.instant().duration_since(t0);
    assert!(
        took <= probe.timeout() + SLACK,
        "{name}: came back after {took:?}, its timeout is {:?}",
        probe.timeout()
    );
    assert_eq!(r.status, expect, "{name}: {r:?}");
    assert!(!r.detail.trim().is_empty(), "{name}: a result must say why: {r:?}");

    // Cancelled mid-run (the monitor drops a round at shutdown): nothing is left that breaks the
    // next run.
    let cut = (probe.timeout() / 10).max(Duration::from_millis(1));
    let _ = tokio::time::timeout(cut, probe.probe()).await;
    let again = probe_bounded(role, probe).await;
    assert_eq!(again.status, expect, "{name}: a second run after a cancelled one: {again:?}");
}
