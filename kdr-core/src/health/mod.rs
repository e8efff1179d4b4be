//! Health probes: the [`HealthProbe`] trait, [`ProbeResult`], and [`ProbeSet`], which runs one
//! bounded round of probes for the monitor.
//!
//! | file | probe | what it checks |
//! | --- | --- | --- |
//! | `http.rs` | [`ApiServerProbe`] | HTTPS `GET /healthz` (or `/livez`) on the primary's API server, verified against the cluster CA, optional client certificate |
//! | `tcp.rs` | [`TcpProbe`] | a TCP connect to `host:port` |
//! | `icmp.rs` | [`IcmpProbe`] | an ICMP echo (surge-ping) |
//! | `witness.rs` | [`WitnessProbe`] | a command on a worker, through [`NodeRemote`](crate::remote::NodeRemote): does *it* reach the primary? |
//! | `self_probe.rs` | [`SelfProbe`] | the standby's own gateway (ICMP or TCP) or DNS |
//!
//! # Probes never pile up
//! Every probe has a timeout shorter than the probe interval ([`ProbeSet::new`] refuses
//! anything else). [`ProbeSet::round`] runs the probes concurrently, each cut off at its timeout
//! by [`probe_bounded`] (the probe's future is dropped, which cancels its I/O), and returns only
//! when all are done. The monitor awaits the round before it waits for the next tick, so there
//! is never more than one probe of a kind in flight; a slow probe is never a queue.
//!
//! # What an overrun means depends on the probe's role
//! A probe cut off at its timeout ([`ProbeRole::overrun_status`]) is:
//!
//! | role | overrun | why |
//! | --- | --- | --- |
//! | api, host | down | the primary itself did not answer in time: a slow primary is a failed primary |
//! | self | down | the standby cannot confirm its own network: it is self-isolated and promotes nothing |
//! | witness | unknown | the witness could not be *asked* in time (its node or the path to it is down, or its SSH connection hangs); that says nothing about the primary, and a witness that cannot be asked never votes "primary down" |
//!
//! So a standby cut off from the primary's rack, workers included, sees its witnesses as
//! unknown: it cannot reach a majority of them and is self-isolated (detector invariants 4 and
//! 5), instead of counting each unreachable witness as one that saw the primary die.
//!
//! ```no_run
//! # async fn driver(set: kdr_core::health::ProbeSet, mut detector: kdr_core::failover::FailoverDetector,
//! #                 clock: &dyn kdr_core::clock::Clock) {
//! use kdr_core::failover::Input;
//! let mut ticker = tokio::time::interval(set.interval());
//! // A round that ran late skips the missed ticks instead of firing them back to back.
//! ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
//! loop {
//!     ticker.tick().await;
//!     let observations = set.round().await; // done within the longest probe timeout < interval
//!     let _actions = detector.handle(Input::Round(observations), clock.instant());
//!     // ... execute the actions (see kdr_core::failover), then loop.
//! }
//! # }
//! ```
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::failover::{Observation, WitnessVerdict};

pub mod http;
pub mod icmp;
pub mod self_probe;
pub mod tcp;
pub mod witness;

pub use http::{ApiServerProbe, ApiServerProbeBuilder};
pub use icmp::IcmpProbe;
pub use self_probe::SelfProbe;
pub use tcp::TcpProbe;
pub use witness::WitnessProbe;

/// A probe's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStatus {
    /// The target answered healthy.
    Up,
    /// The target did not answer, answered unhealthy, or (api, host and self probes) too slowly.
    Down,
    /// The probe could not tell (a witness could not be reached or asked in time, a socket could
    /// not be opened). Not evidence either way.
    Unknown,
}

/// What one probe run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// The verdict.
    pub status: ProbeStatus,
    /// Why, for logs and alerts ("connection refused", "HTTP 500: etcd failed").
    pub detail: String,
}

impl ProbeResult {
    /// An [`ProbeStatus::Up`] result.
    pub fn up(detail: impl Into<String>) -> Self {
        Self { status: ProbeStatus::Up, detail: detail.into() }
    }
    /// A [`ProbeStatus::Down`] result.
    pub fn down(detail: impl Into<String>) -> Self {
        Self { status: ProbeStatus::Down, detail: detail.into() }
    }
    /// An [`ProbeStatus::Unknown`] result.
    pub fn unknown(detail: impl Into<String>) -> Self {
        Self { status: ProbeStatus::Unknown, detail: detail.into() }
    }
}

/// Checks one thing once.
///
/// Guarantees every implementation gives:
/// - `probe` never returns an error and never panics on a network failure: failures are
///   [`ProbeStatus::Down`] (the target failed) or [`ProbeStatus::Unknown`] (the probe could not
///   tell), with a detail naming the target and the cause;
/// - `probe` gives up by itself within about [`timeout`](Self::timeout); callers still bound it
///   with [`probe_bounded`], which reads an overrun by the probe's role (`Down` for the api, host
///   and self probes, `Unknown` for a witness: see [`ProbeRole::overrun_status`]);
/// - `probe` is cancel-safe: dropping its future leaves nothing behind.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait HealthProbe: Send + Sync + fmt::Debug {
    /// What is probed, for logs ("api https://10.0.0.10:6443/healthz").
    fn name(&self) -> &str;
    /// How long one run may take; must be shorter than the probe interval.
    fn timeout(&self) -> Duration;
    /// Runs the probe once.
    async fn probe(&self) -> ProbeResult;
}

/// Runs `probe` in `role`, cut off at its timeout: a probe that has not finished by then has
/// its future dropped, and reads as `role`'s [`overrun_status`](ProbeRole::overrun_status):
///
/// - api and host: [`ProbeStatus::Down`] ("api ...: no answer within 3s"): the primary did not
///   answer in time;
/// - self: [`ProbeStatus::Down`]: the standby cannot confirm its own network, which is the
///   self-isolated reading (no promotion), the safe one;
/// - witness: [`ProbeStatus::Unknown`] ("witness w1 (worker-1): no answer within 3s: unknown,
///   not evidence"): the witness could not be asked in time, which says nothing about the
///   primary.
pub async fn probe_bounded(role: &ProbeRole, probe: &dyn HealthProbe) -> ProbeResult {
    let limit = probe.timeout();
    match tokio::time::timeout(limit, probe.probe()).await {
        Ok(result) => result,
        Err(_) => {
            let detail = format!("{}: no answer within {limit:?}", probe.name());
            match role.overrun_status() {
                ProbeStatus::Unknown => ProbeResult::unknown(format!("{detail}: unknown, not evidence")),
                status => ProbeResult { status, detail },
            }
        }
    }
}

/// What a probe's result means to the detector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeRole {
    /// The primary's API server.
    Api,
    /// The primary machine.
    Host,
    /// The standby's own network.
    SelfCheck,
    /// A witness, by its configured id.
    Witness(String),
}

impl ProbeRole {
    /// What a probe in this role that overran its timeout means (see [`probe_bounded`]).
    ///
    /// The api and host probes ask the primary itself, so an overrun is [`ProbeStatus::Down`].
    /// The self probe's `Down` means "the standby is isolated", which blocks promotion, so an
    /// overrun is `Down` there too: the safe reading. A witness probe asks a worker *about* the
    /// primary; an overrun means the worker could not be asked in time (unreachable node, dead
    /// SSH session), so it is [`ProbeStatus::Unknown`]: never a vote that the primary is down.
    pub fn overrun_status(&self) -> ProbeStatus {
        match self {
            ProbeRole::Api | ProbeRole::Host | ProbeRole::SelfCheck => ProbeStatus::Down,
            ProbeRole::Witness(_) => ProbeStatus::Unknown,
        }
    }

    /// The detector observation for `result`. `Unknown` results of the api, host and self
    /// probes give no observation: the detector's reading then goes stale (unknown) by itself,
    /// instead of counting a probe that could not run as "down" or "up".
    pub fn observation(&self, result: &ProbeResult) -> Option<Observation> {
        let ok = match result.status {
            ProbeStatus::Up => Some(true),
            ProbeStatus::Down => Some(false),
            ProbeStatus::Unknown => None,
        };
        match self {
            ProbeRole::Api => ok.map(|ok| Observation::Api { ok }),
            ProbeRole::Host => ok.map(|ok| Observation::Host { ok }),
            ProbeRole::SelfCheck => ok.map(|ok| Observation::SelfCheck { ok }),
            ProbeRole::Witness(id) => Some(Observation::Witness {
                id: id.clone(),
                verdict: match result.status {
                    ProbeStatus::Up => WitnessVerdict::Up,
                    ProbeStatus::Down => WitnessVerdict::Down,
                    ProbeStatus::Unknown => WitnessVerdict::Unknown,
                },
            }),
        }
    }
}

/// The probes of one monitor, run together once per interval. See the module documentation.
#[derive(Debug, Clone)]
pub struct ProbeSet {
    probes: Vec<(ProbeRole, Arc<dyn HealthProbe>)>,
    interval: Duration,
}

impl ProbeSet {
    /// A set of probes run every `interval`. Every probe's timeout must be shorter than the
    /// interval, or this is [`Error::Config`] naming the probe.
    pub fn new(probes: Vec<(ProbeRole, Arc<dyn HealthProbe>)>, interval: Duration) -> Result<Self> {
        for (_, p) in &probes {
            if p.timeout() >= interval {
                return Err(Error::config(
                    "detector.probe_timeout_s",
                    format!(
                        "probe {} has a timeout of {:?}, not shorter than the interval {interval:?}: probes \
                         would pile up; use at most half the interval",
                        p.name(),
                        p.timeout()
                    ),
                ));
            }
        }
        Ok(Self { probes, interval })
    }

    /// The probe interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Runs every probe once, concurrently, each bounded by its timeout, and returns the
    /// observations with their results (for logs and recordings), in the set's order.
    pub async fn round_with_results(&self) -> Vec<(ProbeRole, ProbeResult)> {
        let runs = self
            .probes
            .iter()
            .map(|(role, p)| async move { (role.clone(), probe_bounded(role, p.as_ref()).await) });
        futures::future::join_all(runs).await
    }

    /// Runs every probe once (see [`round_with_results`](Self::round_with_results)) and returns
    /// the detector's observations.
    pub async fn round(&self) -> Vec<Observation> {
        self.round_with_results().await.iter().filter_map(|(role, r)| role.observation(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A probe that takes `delay` and counts how many of its runs are in flight at once.
    #[derive(Debug)]
    struct Slow {
        delay: Duration,
        in_flight: Arc<AtomicUsize>,
        max_in_flight: Arc<AtomicUsize>,
        runs: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl HealthProbe for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(3)
        }
        async fn probe(&self) -> ProbeResult {
            struct Guard<'a>(&'a AtomicUsize);
            impl Drop for Guard<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let _g = Guard(&self.in_flight);
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            self.runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            ProbeResult::up("finally")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_is_a_failed_probe_and_rounds_never_overlap() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let slow = Arc::new(Slow {
            delay: Duration::from_secs(3600),
            in_flight: in_flight.clone(),
            max_in_flight: max_in_flight.clone(),
            runs: runs.clone(),
        });
        let set = ProbeSet::new(vec![(ProbeRole::Api, slow)], Duration::from_secs(10)).unwrap();
        // The monitor's loop, for five rounds.
        let mut ticker = tokio::time::interval(set.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        for _ in 0..5 {
            ticker.tick().await;
            let results = set.round_with_results().await;
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].1.status, ProbeStatus::Down);
            assert!(results[0].1.detail.contains("no answer within 3s"), "{:?}", results[0].1);
            assert_eq!(in_flight.load(Ordering::SeqCst), 0, "the timed-out probe was cancelled");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        assert_eq!(max_in_flight.load(Ordering::SeqCst), 1, "never two runs of a probe at once");
    }

    /// A node nobody can reach: every command hangs (a dead link, an sshd that never answers).
    #[derive(Debug)]
    struct Unreachable;

    #[async_trait]
    impl crate::remote::NodeRemote for Unreachable {
        fn node(&self) -> &str {
            "worker-1"
        }
        async fn run(&self, _: &crate::remote::RemoteCommand) -> Result<crate::remote::CommandOutput> {
            std::future::pending().await
        }
    }

    fn unreachable_witness(id: &str) -> WitnessProbe {
        let command = crate::remote::RemoteCommand::new("curl ...", Duration::from_secs(3));
        WitnessProbe::new(id, Arc::new(Unreachable), command)
    }

    #[tokio::test(start_paused = true)]
    async fn a_witness_that_cannot_be_asked_in_time_is_unknown_not_down() {
        let probe = unreachable_witness("w1");
        let r = tokio::time::timeout(
            Duration::from_secs(3) + Duration::from_millis(1),
            probe_bounded(&ProbeRole::Witness("w1".into()), &probe),
        )
        .await
        .expect("bounded at the probe's 3s timeout");
        assert_eq!(
            r,
            ProbeResult::unknown("witness w1 (worker-1): no answer within 3s: unknown, not evidence")
        );
        assert_eq!(
            ProbeRole::Witness("w1".into()).observation(&r),
            Some(Observation::Witness { id: "w1".into(), verdict: WitnessVerdict::Unknown })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrun_is_down_for_the_primary_and_self_probes_and_unknown_for_witnesses() {
        let slow = Slow {
            delay: Duration::from_secs(3600),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            runs: Arc::default(),
        };
        for (role, want) in [
            (ProbeRole::Api, ProbeStatus::Down),
            (ProbeRole::Host, ProbeStatus::Down),
            (ProbeRole::SelfCheck, ProbeStatus::Down),
            (ProbeRole::Witness("w1".into()), ProbeStatus::Unknown),
        ] {
            assert_eq!(role.overrun_status(), want, "{role:?}");
            let r = probe_bounded(&role, &slow).await;
            assert_eq!(r.status, want, "{role:?}: {r:?}");
            assert!(r.detail.starts_with("slow: no answer within 3s"), "{role:?}: {r:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_with_every_witness_unreachable_has_no_witness_voting_down() {
        // The issue's partition: the standby's gateway answers, the primary's rack (primary
        // and workers) does not. The witnesses must read unknown (self-isolation), never down.
        let mut gateway = MockHealthProbe::new();
        gateway.expect_timeout().return_const(Duration::from_secs(3));
        gateway.expect_name().return_const("self gateway".to_owned());
        gateway.expect_probe().returning(|| ProbeResult::up("self gateway answers"));
        let mut probes: Vec<(ProbeRole, Arc<dyn HealthProbe>)> =
            vec![(ProbeRole::SelfCheck, Arc::new(gateway))];
        for id in ["w1", "w2", "w3"] {
            probes.push((ProbeRole::Witness(id.into()), Arc::new(unreachable_witness(id))));
        }
        let set = ProbeSet::new(probes, Duration::from_secs(10)).unwrap();
        let observations = tokio::time::timeout(Duration::from_secs(4), set.round()).await.unwrap();
        let want: Vec<Observation> = std::iter::once(Observation::SelfCheck { ok: true })
            .chain(
                ["w1", "w2", "w3"]
                    .map(|id| Observation::Witness { id: id.into(), verdict: WitnessVerdict::Unknown }),
            )
            .collect();
        assert_eq!(observations, want);
    }

    #[test]
    fn a_timeout_not_shorter_than_the_interval_is_refused() {
        let mut p = MockHealthProbe::new();
        p.expect_timeout().return_const(Duration::from_secs(10));
        p.expect_name().return_const("api x".to_owned());
        let err = ProbeSet::new(vec![(ProbeRole::Api, Arc::new(p))], Duration::from_secs(10)).unwrap_err();
        assert!(err.is_usage() && err.to_string().contains("probe api x has a timeout of 10s"), "{err}");
    }

    #[test]
    fn unknown_results_are_not_evidence() {
        let unknown = ProbeResult::unknown("cannot open an ICMP socket");
        assert_eq!(ProbeRole::Host.observation(&unknown), None);
        assert_eq!(ProbeRole::SelfCheck.observation(&unknown), None);
        assert_eq!(
            ProbeRole::Witness("w1".into()).observation(&unknown),
            Some(Observation::Witness { id: "w1".into(), verdict: WitnessVerdict::Unknown })
        );
        assert_eq!(ProbeRole::Api.observation(&ProbeResult::down("x")), Some(Observation::Api { ok: false }));
        assert_eq!(ProbeRole::Host.observation(&ProbeResult::up("x")), Some(Observation::Host { ok: true }));
    }
}
