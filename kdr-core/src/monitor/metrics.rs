//! The monitor's Prometheus metrics (prometheus-client; text exposition format at `/metrics`).
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::failover::State;

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Labels of a probe's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `api`, `host`, `self` or `witness`.
    pub role: String,
    /// What is probed (the probe's name: URL or address).
    pub target: String,
}

/// A `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The detector state.
    pub state: String,
}

/// An `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or `failed`.
    pub outcome: String,
}

/// A `verdict` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// `up`, `down` or `unknown`.
    pub verdict: String,
}

/// Every metric the monitor exports (all names start with `kdr_`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Unix time of the last committed backup.
    pub backup_last_success: FloatGauge,
    /// Stored bytes of the last committed backup.
    pub backup_last_size: Gauge,
    /// Seconds the last committed backup took.
    pub backup_last_duration: FloatGauge,
    /// Committed backups.
    pub backups: Counter,
    /// Failed (or aborted) backups.
    pub backup_failures: Counter,
    /// Sets deleted by retention.
    pub pruned: Counter,
    /// Unix time of the last passed drill.
    pub drill_last_success: FloatGauge,
    /// Passed drills.
    pub drills: Counter,
    /// Failed drills (error or key mismatch).
    pub drill_failures: Counter,
    /// 1 for the detector's current state, 0 for the others.
    pub detector_state: Family<StateLabel, Gauge>,
    /// Seconds the detector has been in its current suspicion (0 when not suspecting).
    pub suspicion_seconds: FloatGauge,
    /// 1 when paused.
    pub paused: Gauge,
    /// 1 when latched (promoted or halted).
    pub latched: Gauge,
    /// The detector's epoch.
    pub epoch: Gauge,
    /// Last result per probe: 1 up, 0 down, -1 unknown.
    pub probe_up: Family<ProbeLabels, Gauge>,
    /// Last latency per probe, in seconds.
    pub probe_latency: Family<ProbeLabels, FloatGauge>,
    /// Witnesses per verdict in the last round.
    pub witnesses: Family<VerdictLabel, Gauge>,
    /// Fraction of configured witnesses agreeing with the local probes in the last round (1 with
    /// no witnesses).
    pub witness_agreement: FloatGauge,
    /// Promotions by outcome.
    pub promotions: Family<OutcomeLabel, Counter>,
    /// Fences by outcome.
    pub fences: Family<OutcomeLabel, Counter>,
    /// Times the self-fence guard moved the manifests aside.
    pub self_fenced: Counter,
    /// Alerts raised.
    pub alerts: Counter,
    /// Alert deliveries that failed.
    pub alert_failures: Counter,
    /// Alerts dropped because the delivery queue was full (deliveries far slower than alerts).
    pub alerts_dropped: Counter,
    /// Per monitor loop: unix time of its last completed turn (`/healthz` checks it).
    pub loop_last_turn: Family<LoopLabel, FloatGauge>,
}

/// A `loop` label: `standby`, `backup`, `drill`, `self-fence`, `alerts`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabel {
    /// The loop's name.
    pub r#loop: String,
}

/// Every detector state, for the one-hot `kdr_detector_state` gauge.
pub const STATES: [State; 10] = [
    State::Warmup,
    State::Healthy,
    State::Degraded,
    State::Unknown,
    State::Suspect,
    State::Vetoed,
    State::Unconfirmed,
    State::Isolated,
    State::Promoted,
    State::Halted,
];

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn register(&self) -> Registry {
        let mut r = Registry::with_prefix("kdr");
        r.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of the last committed backup",
            self.backup_last_success.clone(),
        );
        r.register(
            "backup_last_size_bytes",
            "Stored bytes of the last committed backup",
            self.backup_last_size.clone(),
        );
        r.register(
            "backup_last_duration_seconds",
            "Seconds the last committed backup took",
            self.backup_last_duration.clone(),
        );
        r.register("backups", "Committed backups", self.backups.clone());
        r.register("backup_failures", "Failed or aborted backups", self.backup_failures.clone());
        r.register("pruned_sets", "Backup sets deleted by retention", self.pruned.clone());
        r.register(
            "drill_last_success_timestamp_seconds",
            "Unix time of the last passed drill",
            self.drill_last_success.clone(),
        );
        r.register("drills", "Passed drills", self.drills.clone());
        r.register("drill_failures", "Failed drills", self.drill_failures.clone());
        r.register("detector_state", "1 for the detector's current state", self.detector_state.clone());
        r.register(
            "detector_suspicion_seconds",
            "Seconds in the current suspicion",
            self.suspicion_seconds.clone(),
        );
        r.register("detector_paused", "1 when automatic failover is paused", self.paused.clone());
        r.register(
            "detector_latched",
            "1 when latched (promoted or halted) until re-armed",
            self.latched.clone(),
        );
        r.register("detector_epoch", "The detector's failover epoch", self.epoch.clone());
        r.register("probe_up", "Last probe result: 1 up, 0 down, -1 unknown", self.probe_up.clone());
        r.register("probe_latency_seconds", "Last probe latency", self.probe_latency.clone());
        r.register("witnesses", "Witnesses per verdict in the last round", self.witnesses.clone());
        r.register(
            "witness_agreement_ratio",
            "Fraction of witnesses agreeing with the local probes",
            self.witness_agreement.clone(),
        );
        r.register("promotions", "Promotions by outcome", self.promotions.clone());
        r.register("fences", "Fences by outcome", self.fences.clone());
        r.register(
            "self_fenced",
            "Times the self-fence guard moved the static pod manifests aside",
            self.self_fenced.clone(),
        );
        r.register("alerts", "Alerts raised", self.alerts.clone());
        r.register("alert_delivery_failures", "Alert deliveries that failed", self.alert_failures.clone());
        r.register(
            "alerts_dropped",
            "Alerts dropped because the delivery queue was full",
            self.alerts_dropped.clone(),
        );
        r.register(
            "loop_last_turn_timestamp_seconds",
            "Unix time each monitor loop last completed a turn",
            self.loop_last_turn.clone(),
        );
        r
    }

    /// Sets the one-hot state gauge.
    pub fn set_state(&self, state: State) {
        for s in STATES {
            self.detector_state
                .get_or_create(&StateLabel { state: s.to_string() })
                .set(i64::from(s == state));
        }
    }
}

/// Renders `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
