//! [`DetectorConfig`]: the `[detector]` section of the monitor's configuration file.
//!
//! The same keys open every recorded trace (`{"config": {...}}`, see [`super::trace`]), so a
//! recording says with which settings it was observed and replay can re-run it with others.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How many configured witnesses must report the primary "down" before it counts as dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WitnessQuorum {
    /// More than half of the configured witnesses (2 of 3, 3 of 5).
    #[default]
    Majority,
    /// Every configured witness.
    All,
}

/// Whether a fencer is configured: something that makes sure the old primary can no longer
/// serve (stop its kubelet and static pods, power it off) before the standby is promoted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fencing {
    /// No fencer configured: promotion follows the decision directly. Without fencing, a primary
    /// that was only cut off from the standby keeps serving: two primaries (split brain).
    #[default]
    None,
    /// A fencer is configured: the detector emits a fence command first, and promotes only after
    /// the fence reported success. A failed fence means no promotion.
    Required,
}

/// The detector's settings (the `[detector]` section). Every key has a default; unknown keys are
/// an error, so that a typo (`dead_after = 300`) is not silently ignored.
///
/// | key | default | meaning |
/// | --- | --- | --- |
/// | `interval_s` | 10 | seconds between probe rounds; readings older than `2 * interval_s` count as unknown, and a longer gap discards the evidence |
/// | `dead_after_s` | 300 | seconds of continuous, gap-free evidence before the primary is declared dead (the seed's five minutes) |
/// | `probe_timeout_s` | `min(3, interval_s / 2)` | how long one probe may take; a slower probe is a failed probe. Must be shorter than `interval_s` |
/// | `witnesses` | `[]` | ids of witness workers; empty means the seed's two-probe rule alone |
/// | `witness_quorum` | `"majority"` | `"majority"` or `"all"` of the witnesses must report "down" |
/// | `fencing` | `"none"` | `"none"` or `"required"` (a fencer is configured and must succeed before promotion) |
/// | `block_period_s` | 3600 | after an operator re-arms a latched detector, no automatic promotion for this long |
/// | `require_self_probe` | `true` | the standby must see its own gateway/DNS to act; with `false` only witnesses can reveal self-isolation |
/// | `flap_alert_transitions` | 3 | alert "primary flapping" after this many dead→alive transitions within `dead_after_s` (0: never) |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Seconds between probe rounds.
    pub interval_s: f64,
    /// Seconds of continuous evidence before the primary is declared dead.
    pub dead_after_s: f64,
    /// How long one probe may take (default `min(3, interval_s / 2)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_timeout_s: Option<f64>,
    /// Ids of the witness workers.
    pub witnesses: Vec<String>,
    /// How many witnesses must agree that the primary is down.
    pub witness_quorum: WitnessQuorum,
    /// Whether a fencer must succeed before promotion.
    pub fencing: Fencing,
    /// Seconds after a re-arm during which no automatic promotion happens.
    pub block_period_s: f64,
    /// Whether the standby must see its own gateway or DNS to act.
    pub require_self_probe: bool,
    /// Dead→alive transitions within `dead_after_s` that raise a "flapping" alert (0: never).
    pub flap_alert_transitions: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            interval_s: 10.0,
            dead_after_s: 300.0,
            probe_timeout_s: None,
            witnesses: Vec::new(),
            witness_quorum: WitnessQuorum::Majority,
            fencing: Fencing::None,
            block_period_s: 3600.0,
            require_self_probe: true,
            flap_alert_transitions: 3,
        }
    }
}

fn positive(key: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err(Error::config(
            format!("detector.{key}"),
            format!("{v} is not a positive number of seconds (e.g. {key} = 10)"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

impl DetectorConfig {
    /// Checks every value; the error names the key and what a right value looks like.
    pub fn validate(&self) -> Result<()> {
        let interval = positive("interval_s", self.interval_s)?;
        let dead_after = positive("dead_after_s", self.dead_after_s)?;
        positive("block_period_s", self.block_period_s)?;
        if dead_after < interval * 2 {
            return Err(Error::config(
                "detector.dead_after_s",
                format!(
                    "{} s is shorter than two probe intervals ({} s): the detector could declare \
                     the primary dead on a single failed round; use at least {}",
                    self.dead_after_s,
                    2.0 * self.interval_s,
                    2.0 * self.interval_s
                ),
            ));
        }
        if let Some(t) = self.probe_timeout_s {
            let timeout = positive("probe_timeout_s", t)?;
            if timeout >= interval {
                return Err(Error::config(
                    "detector.probe_timeout_s",
                    format!(
                        "{t} s is not shorter than interval_s ({} s): probes would pile up; \
                         use at most half the interval",
                        self.interval_s
                    ),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for w in &self.witnesses {
            if w.trim().is_empty() {
                return Err(Error::config("detector.witnesses", "a witness id is empty"));
            }
            if !seen.insert(w.as_str()) {
                return Err(Error::config(
                    "detector.witnesses",
                    format!("witness {w:?} is listed twice; each witness must be listed once"),
                ));
            }
        }
        Ok(())
    }

    /// The probe interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_s)
    }

    /// Continuous evidence needed before the primary is declared dead.
    pub fn dead_after(&self) -> Duration {
        Duration::from_secs_f64(self.dead_after_s)
    }

    /// Age beyond which a reading counts as unknown, and the longest gap evidence survives:
    /// twice the interval (design invariants 1 and 5).
    pub fn stale_after(&self) -> Duration {
        self.interval() * 2
    }

    /// The block period after a re-arm.
    pub fn block_period(&self) -> Duration {
        Duration::from_secs_f64(self.block_period_s)
    }

    /// How long one probe may take: `probe_timeout_s`, or `min(3 s, interval / 2)`.
    pub fn probe_timeout(&self) -> Duration {
        match self.probe_timeout_s {
            Some(t) => Duration::from_secs_f64(t),
            None => (self.interval() / 2).min(Duration::from_secs(3)),
        }
    }

    /// How many "down" witness reports make the quorum (0 without witnesses).
    pub fn quorum_needed(&self) -> usize {
        let n = self.witnesses.len();
        match self.witness_quorum {
            WitnessQuorum::Majority if n > 0 => n / 2 + 1,
            WitnessQuorum::Majority => 0,
            WitnessQuorum::All => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_five_minutes_and_valid() {
        let c = DetectorConfig::default();
        c.validate().unwrap();
        assert_eq!(c.dead_after(), Duration::from_secs(300));
        assert_eq!(c.stale_after(), Duration::from_secs(20));
        assert_eq!(c.probe_timeout(), Duration::from_secs(3));
        assert!(c.probe_timeout() < c.interval());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<DetectorConfig>(r#"{"dead_after": 300}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `dead_after`"), "{err}");
    }

    #[test]
    fn toml_section_parses_with_defaults() {
        let c: DetectorConfig =
            toml::from_str("interval_s = 5\nwitnesses = [\"w1\", \"w2\", \"w3\"]").unwrap();
        assert_eq!(c.interval_s, 5.0);
        assert_eq!(c.quorum_needed(), 2);
        assert_eq!(c.probe_timeout(), Duration::from_millis(2500));
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = DetectorConfig { probe_timeout_s: Some(10.0), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("detector.probe_timeout_s"));
        let c = DetectorConfig { dead_after_s: 15.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("detector.dead_after_s"));
        let c = DetectorConfig { interval_s: -1.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("detector.interval_s"));
        let c = DetectorConfig { witnesses: vec!["a".into(), "a".into()], ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("listed twice"));
    }

    #[test]
    fn quorum_sizes() {
        let mut c = DetectorConfig {
            witnesses: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            ..Default::default()
        };
        assert_eq!(c.quorum_needed(), 3);
        c.witness_quorum = WitnessQuorum::All;
        assert_eq!(c.quorum_needed(), 4);
    }
}
