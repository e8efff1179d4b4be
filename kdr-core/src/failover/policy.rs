//! [`DetectorPolicy`]: what a user can plug into the detector, and the default [`SeedRulePolicy`].
//!
//! A policy looks at the current, staleness-adjusted readings and returns a [`Verdict`]. That is
//! all it can do: it cannot emit actions, see the latch, or touch time. The core applies the
//! design invariants after the verdict (witness quorum and veto, self-isolation, continuous
//! evidence for `dead_after`, latch, pause, block period, fence-before-promote,
//! persist-before-act), so a policy can make the detector more careful, never less.
use std::fmt;
use std::time::Instant;

use super::{Health, Observation, WitnessVerdict};

/// A witness's report as the policy sees it: reports older than two intervals already read
/// [`WitnessVerdict::Unknown`], and a witness that never reported is `Unknown` too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessReport {
    /// The witness id from the configuration.
    pub id: String,
    /// Its current verdict on the primary.
    pub verdict: WitnessVerdict,
}

/// The readings a policy decides on, at `now`. Readings older than two intervals are `Unknown`.
#[derive(Clone, Debug)]
pub struct View<'a> {
    /// The instant of the evaluation.
    pub now: Instant,
    /// The primary's API server (`/healthz`).
    pub api: Health,
    /// The primary machine (ping or TCP).
    pub host: Health,
    /// Every configured witness, in configuration order.
    pub witnesses: &'a [WitnessReport],
    /// How many "down" reports make the witness quorum (0 without witnesses).
    pub witness_quorum: usize,
}

impl View<'_> {
    /// How many witnesses currently report `verdict`.
    pub fn witnesses_reporting(&self, verdict: WitnessVerdict) -> usize {
        self.witnesses.iter().filter(|w| w.verdict == verdict).count()
    }
}

/// A policy's opinion of the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The primary is alive.
    Alive,
    /// Not dead, but not well either (API server down while the machine answers). Never leads to
    /// a failover; reported as state `degraded`.
    Degraded(String),
    /// The primary is dead. The core still applies every invariant before acting.
    Dead,
    /// The primary is dead, but this policy wants a page instead of a failover (a change freeze,
    /// a maintenance window). When the core would have acted it alerts with this reason instead.
    DeadAlertOnly(String),
    /// Not enough information to say.
    Unknown,
}

/// A failover policy. See the module documentation for what it can and cannot do.
///
/// A policy may keep state between calls (e.g. "two consecutive witness rounds"); the monitor
/// builds a fresh policy when it restarts, as the detector's own suspicion timers start from
/// zero after a restart.
pub trait DetectorPolicy: Send + fmt::Debug {
    /// A short name, for alerts and logs.
    fn name(&self) -> &str;

    /// Called with every observation before [`verdict`](Self::verdict), for stateful policies.
    /// `view` already includes the observation.
    fn observe(&mut self, _observation: &Observation, _view: &View<'_>) {}

    /// The verdict on the primary at `view.now`.
    fn verdict(&self, view: &View<'_>) -> Verdict;
}

/// The seed's rule: the primary is dead when its API server AND the machine both fail (the seed's
/// `curl /healthz` and `ping`). Witnesses, when configured, are applied by the core on top of it:
/// the quorum must report "down" and none "up".
///
/// | api | host | verdict |
/// | --- | --- | --- |
/// | down | down | dead |
/// | down | up | degraded (API server down, machine up: fix it, don't fail over) |
/// | up | any | alive |
/// | unknown | up | alive |
/// | otherwise | | unknown |
#[derive(Clone, Copy, Debug, Default)]
pub struct SeedRulePolicy;

impl DetectorPolicy for SeedRulePolicy {
    fn name(&self) -> &str {
        "seed-rule"
    }

    fn verdict(&self, view: &View<'_>) -> Verdict {
        match (view.api, view.host) {
            (Health::Down, Health::Down) => Verdict::Dead,
            (Health::Down, Health::Up) => {
                Verdict::Degraded("API server down while the machine answers".to_owned())
            }
            (Health::Up, _) | (Health::Unknown, Health::Up) => Verdict::Alive,
            _ => Verdict::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rule_table() {
        use Health::*;
        let view = |api, host| View {
            now: crate::clock::Clock::instant(&crate::clock::SystemClock),
            api,
            host,
            witnesses: &[],
            witness_quorum: 0,
        };
        let p = SeedRulePolicy;
        assert_eq!(p.verdict(&view(Down, Down)), Verdict::Dead);
        assert!(matches!(p.verdict(&view(Down, Up)), Verdict::Degraded(_)));
        assert_eq!(p.verdict(&view(Up, Down)), Verdict::Alive);
        assert_eq!(p.verdict(&view(Up, Up)), Verdict::Alive);
        assert_eq!(p.verdict(&view(Unknown, Up)), Verdict::Alive);
        assert_eq!(p.verdict(&view(Down, Unknown)), Verdict::Unknown);
        assert_eq!(p.verdict(&view(Unknown, Down)), Verdict::Unknown);
        assert_eq!(p.verdict(&view(Unknown, Unknown)), Verdict::Unknown);
    }
}
