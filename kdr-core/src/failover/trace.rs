//! Recorded observations (JSON Lines) and their replay with a simulated clock.
//!
//! The format is the design doc's (`failover-detector.md`, "Trace format"): a first line
//! `{"config": {...}}` with the `[detector]` keys (unknown keys are an error), then one object per
//! line in time order, `t` in seconds since the start of the trace:
//!
//! ```text
//! {"config": {"interval_s": 10, "dead_after_s": 300, "witnesses": ["w1"], "witness_quorum": "majority", "fencing": "ok"}}
//! {"t": 0.0, "probe": "api", "ok": false}
//! {"t": 0.0, "probe": "host", "ok": false}
//! {"t": 0.5, "probe": "self", "ok": true}
//! {"t": 1.0, "probe": "witness", "id": "w1", "verdict": "down"}
//! {"t": 900, "event": "restart"}
//! ```
//!
//! In a trace, `fencing` is `"none"` (no fencer), `"ok"` or `"fail"` (what the simulated fencer
//! returns); in the monitor's configuration it is `"none"` or `"required"`. Blank lines are
//! skipped; any other malformed line is an error naming its line number.
//!
//! [`replay`] prints, in time order, every action and state change as one JSON object per line:
//! `{"t": 301.0, "action": "fence", "epoch": 1}`, `{"t": 301.0, "state": "promoted"}`,
//! `{"t": 400.0, "action": "alert", "reason": "..."}`. Times are rounded to the millisecond.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Action, CommandKind, DetectorConfig, DetectorPolicy, FailoverDetector, Fencing, InMemoryStateStore,
    Input, Observation, Outcome, SeedRulePolicy, State, StateStore, WitnessVerdict,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// What the simulated fencer of a trace does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceFencing {
    /// No fencer configured (`"none"`).
    #[default]
    None,
    /// Fencing succeeds (`"ok"`).
    Ok,
    /// Fencing fails (`"fail"`).
    Fail,
}

impl TraceFencing {
    fn as_str(self) -> &'static str {
        match self {
            TraceFencing::None => "none",
            TraceFencing::Ok => "ok",
            TraceFencing::Fail => "fail",
        }
    }
}

/// A trace's first line.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// The detector settings (`fencing` is [`Fencing::Required`] when the trace says ok/fail).
    pub detector: DetectorConfig,
    /// What the simulated fencer returns.
    pub fencing: TraceFencing,
}

/// One thing that happened, in a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A probe result.
    Observed(Observation),
    /// The monitor restarted: in-memory state is lost, persisted state is kept.
    Restart,
    /// An operator paused automatic failover.
    Pause,
    /// An operator resumed it.
    Resume,
    /// An operator re-armed the latch.
    Rearm,
}

/// One line of a trace after the config.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRecord {
    /// The line number in the file (1-based), for messages.
    pub line: usize,
    /// Seconds since the start of the trace.
    pub t: f64,
    /// What happened.
    pub event: TraceEvent,
}

/// A parsed trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The first line.
    pub config: TraceConfig,
    /// The records, in time order.
    pub records: Vec<TraceRecord>,
}

fn line_error(source: &str, line: usize, reason: impl Into<String>) -> Error {
    Error::config(format!("{source} line {line}"), reason)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    t: f64,
    probe: Option<String>,
    ok: Option<bool>,
    id: Option<String>,
    verdict: Option<WitnessVerdict>,
    event: Option<String>,
}

fn parse_config(value: Value) -> std::result::Result<TraceConfig, String> {
    let Value::Object(mut top) = value else {
        return Err("the first line must be {\"config\": {...}}".into());
    };
    let Some(Value::Object(mut cfg)) = top.remove("config") else {
        return Err("the first line must be {\"config\": {...}} with the [detector] keys".into());
    };
    if let Some(k) = top.keys().next() {
        return Err(format!("unknown key {k:?} beside \"config\" on the first line"));
    }
    let fencing = match cfg.remove("fencing") {
        None => TraceFencing::None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => TraceFencing::None,
            "ok" => TraceFencing::Ok,
            "fail" => TraceFencing::Fail,
            other => {
                return Err(format!(
                    "config.fencing is {other:?}; a trace says \"none\", \"ok\" or \"fail\""
                ));
            }
        },
        Some(v) => return Err(format!("config.fencing is {v}; a trace says \"none\", \"ok\" or \"fail\"")),
    };
    let mut detector: DetectorConfig =
        serde_json::from_value(Value::Object(cfg)).map_err(|e| format!("config: {e}"))?;
    detector.fencing = if fencing == TraceFencing::None { Fencing::None } else { Fencing::Required };
    detector.validate().map_err(|e| e.to_string())?;
    Ok(TraceConfig { detector, fencing })
}

fn parse_record(raw: RawRecord, config: &DetectorConfig) -> std::result::Result<TraceEvent, String> {
    if !raw.t.is_finite() || raw.t < 0.0 {
        return Err(format!("t is {}; it must be seconds since the start of the trace (>= 0)", raw.t));
    }
    match (raw.probe.as_deref(), raw.event.as_deref()) {
        (Some(_), Some(_)) => Err("a line has either \"probe\" or \"event\", not both".into()),
        (None, None) => Err("a line needs \"probe\" (with \"ok\" or \"id\"+\"verdict\") or \"event\"".into()),
        (None, Some(event)) => {
            if raw.ok.is_some() || raw.id.is_some() || raw.verdict.is_some() {
                return Err(format!("event {event:?} takes no \"ok\", \"id\" or \"verdict\""));
            }
            Ok(match event {
                "restart" => TraceEvent::Restart,
                "pause" => TraceEvent::Pause,
                "resume" => TraceEvent::Resume,
                "rearm" => TraceEvent::Rearm,
                other => {
                    return Err(format!(
                        "unknown event {other:?}; expected \"restart\", \"pause\", \"resume\" or \"rearm\""
                    ));
                }
            })
        }
        (Some("witness"), None) => {
            if raw.ok.is_some() {
                return Err("a witness line has \"verdict\" (up/down/unknown), not \"ok\"".into());
            }
            let id = raw.id.ok_or("a witness line needs \"id\"")?;
            let verdict = raw.verdict.ok_or("a witness line needs \"verdict\" (up/down/unknown)")?;
            if !config.witnesses.contains(&id) {
                return Err(format!("witness {id:?} is not in config.witnesses {:?}", config.witnesses));
            }
            Ok(TraceEvent::Observed(Observation::Witness { id, verdict }))
        }
        (Some(probe), None) => {
            if raw.id.is_some() || raw.verdict.is_some() {
                return Err(format!("probe {probe:?} takes \"ok\", not \"id\"/\"verdict\""));
            }
            let ok = raw.ok.ok_or_else(|| format!("probe {probe:?} needs \"ok\": true|false"))?;
            Ok(TraceEvent::Observed(match probe {
                "api" => Observation::Api { ok },
                "host" => Observation::Host { ok },
                "self" => Observation::SelfCheck { ok },
                other => {
                    return Err(format!(
                        "unknown probe {other:?}; expected \"api\", \"host\", \"self\" or \"witness\""
                    ));
                }
            }))
        }
    }
}

impl Trace {
    /// Parses a trace. `source` names it in errors (a file name); every error names the line
    /// and is an [`Error::Config`] ("invalid FILE line N: ...").
    pub fn parse(text: &str, source: &str) -> Result<Trace> {
        let mut config = None;
        let mut records: Vec<TraceRecord> = Vec::new();
        for (i, raw_line) in text.lines().enumerate() {
            let line = i + 1;
            if raw_line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(raw_line)
                .map_err(|e| line_error(source, line, format!("not a JSON object: {e}")))?;
            let Some(config) = &config else {
                config = Some(parse_config(value).map_err(|e| line_error(source, line, e))?);
                continue;
            };
            let config: &TraceConfig = config;
            if value.get("config").is_some() {
                return Err(line_error(
                    source,
                    line,
                    "a second config line; only the first line is the config",
                ));
            }
            let raw: RawRecord =
                serde_json::from_value(value).map_err(|e| line_error(source, line, e.to_string()))?;
            let t = raw.t;
            let event = parse_record(raw, &config.detector).map_err(|e| line_error(source, line, e))?;
            if let Some(prev) = records.last().filter(|p| p.t > t) {
                return Err(line_error(
                    source,
                    line,
                    format!(
                        "t = {t} is earlier than t = {} on line {}: lines must be in time order",
                        prev.t, prev.line
                    ),
                ));
            }
            records.push(TraceRecord { line, t, event });
        }
        let config =
            config.ok_or_else(|| line_error(source, 1, "the trace is empty: it needs a config line"))?;
        Ok(Trace { config, records })
    }
}

/// Serializes like the design doc's examples (and Python's `json.dumps`): `{"k": v, "k2": v2}`,
/// keys in the order given (serde_json's own maps would sort them).
fn ordered(pairs: Vec<(&str, Value)>) -> String {
    let fields: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{}: {}", Value::String(k.to_owned()), doc_style(&v)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

fn doc_style(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(doc_style).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => ordered(map.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()),
        other => other.to_string(),
    }
}

impl TraceConfig {
    /// The config line, for a recording.
    pub fn to_json_line(&self) -> String {
        let d = &self.detector;
        let mut pairs = vec![
            ("interval_s", json!(d.interval_s)),
            ("dead_after_s", json!(d.dead_after_s)),
            ("witnesses", json!(d.witnesses)),
            ("witness_quorum", json!(d.witness_quorum)),
            ("fencing", json!(self.fencing.as_str())),
        ];
        if let Some(t) = d.probe_timeout_s {
            pairs.push(("probe_timeout_s", json!(t)));
        }
        pairs.extend([
            ("block_period_s", json!(d.block_period_s)),
            ("require_self_probe", json!(d.require_self_probe)),
            ("flap_alert_transitions", json!(d.flap_alert_transitions)),
        ]);
        let inner: Vec<String> = pairs
            .into_iter()
            .map(|(k, v)| format!("{}: {}", Value::String(k.to_owned()), doc_style(&v)))
            .collect();
        format!("{{\"config\": {{{}}}}}", inner.join(", "))
    }
}

impl TraceRecord {
    /// The record as one line of a recording (without a newline).
    pub fn to_json_line(&self) -> String {
        let t = ("t", json!(self.t));
        match &self.event {
            TraceEvent::Observed(Observation::Api { ok }) => {
                ordered(vec![t, ("probe", json!("api")), ("ok", json!(ok))])
            }
            TraceEvent::Observed(Observation::Host { ok }) => {
                ordered(vec![t, ("probe", json!("host")), ("ok", json!(ok))])
            }
            TraceEvent::Observed(Observation::SelfCheck { ok }) => {
                ordered(vec![t, ("probe", json!("self")), ("ok", json!(ok))])
            }
            TraceEvent::Observed(Observation::Witness { id, verdict }) => {
                ordered(vec![t, ("probe", json!("witness")), ("id", json!(id)), ("verdict", json!(verdict))])
            }
            TraceEvent::Restart => ordered(vec![t, ("event", json!("restart"))]),
            TraceEvent::Pause => ordered(vec![t, ("event", json!("pause"))]),
            TraceEvent::Resume => ordered(vec![t, ("event", json!("resume"))]),
            TraceEvent::Rearm => ordered(vec![t, ("event", json!("rearm"))]),
        }
    }
}

/// Writes what the monitor observes as a trace, for replay later: the config line first, then
/// one line per observation or event, `t` measured from the recorder's `origin`.
#[derive(Debug)]
pub struct TraceRecorder<W: std::io::Write> {
    out: W,
    origin: Instant,
    last_t: f64,
}

impl<W: std::io::Write> TraceRecorder<W> {
    /// Starts a recording at `origin` (the monitor's start) and writes the config line.
    pub fn start(mut out: W, config: &TraceConfig, origin: Instant) -> Result<Self> {
        writeln!(out, "{}", config.to_json_line())
            .map_err(|e| Error::io("failed to write the trace config line", e))?;
        Ok(Self { out, origin, last_t: 0.0 })
    }

    /// Records `event` at `now` (an instant before the previous one is recorded at the
    /// previous one's time, so the trace stays in time order).
    pub fn record(&mut self, now: Instant, event: TraceEvent) -> Result<()> {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        let t = (ms as f64 / 1000.0).max(self.last_t);
        self.last_t = t;
        let line = TraceRecord { line: 0, t, event }.to_json_line();
        writeln!(self.out, "{line}").map_err(|e| Error::io("failed to write a trace line", e))
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out.flush().map_err(|e| Error::io("failed to flush the trace", e))?;
        Ok(self.out)
    }
}

/// One line of replay output.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayLine {
    /// Seconds since the start of the trace, rounded to the millisecond.
    pub t: f64,
    /// What happened.
    pub event: ReplayEvent,
}

/// What a replay line reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayEvent {
    /// The detector's state changed.
    State(State),
    /// An alert.
    Alert(String),
    /// A fence command (after its state was persisted).
    Fence {
        /// Its epoch.
        epoch: u64,
    },
    /// A promote command (after its state was persisted).
    Promote {
        /// Its epoch.
        epoch: u64,
    },
}

impl ReplayLine {
    /// The line as the design doc prints it, e.g. `{"t": 301.0, "action": "promote", "epoch": 1}`.
    pub fn to_json_line(&self) -> String {
        let t = ("t", json!(self.t));
        match &self.event {
            ReplayEvent::State(s) => ordered(vec![t, ("state", json!(s))]),
            ReplayEvent::Alert(r) => ordered(vec![t, ("action", json!("alert")), ("reason", json!(r))]),
            ReplayEvent::Fence { epoch } => {
                ordered(vec![t, ("action", json!("fence")), ("epoch", json!(epoch))])
            }
            ReplayEvent::Promote { epoch } => {
                ordered(vec![t, ("action", json!("promote")), ("epoch", json!(epoch))])
            }
        }
    }
}

/// Replays `trace` with the default [`SeedRulePolicy`].
pub fn replay_default(trace: &Trace) -> Result<Vec<ReplayLine>> {
    replay(trace, &mut || Box::new(SeedRulePolicy))
}

/// Feeds `trace` to a [`FailoverDetector`] with a simulated clock and returns what it did.
///
/// `new_policy` builds the policy at the start and after each `restart` record (in-memory state
/// is lost on a restart; the persisted state lives in an [`InMemoryStateStore`] that survives
/// it). Timers ([`FailoverDetector::poll_timeout`]) due before a record fire before it, at their
/// own instant; consecutive observations with the same `t` are fed as one [`Input::Round`]. Commands complete at once: fence with the trace's `fencing` outcome, promote
/// with success. The replay ends at the last record.
pub fn replay(
    trace: &Trace,
    new_policy: &mut dyn FnMut() -> Box<dyn DetectorPolicy>,
) -> Result<Vec<ReplayLine>> {
    // Only differences between instants matter; any origin will do.
    let origin = SystemClock.instant();
    let at = |t: f64| origin + Duration::from_secs_f64(t);
    let mut run =
        Run { store: InMemoryStateStore::default(), fencing: trace.config.fencing, origin, out: Vec::new() };
    let start = at(0.0);
    let (mut detector, actions) =
        FailoverDetector::start(trace.config.detector.clone(), new_policy(), run.store.load()?, start)?;
    run.drive(&mut detector, actions, start)?;
    let mut i = 0;
    while i < trace.records.len() {
        let record = &trace.records[i];
        let now = at(record.t);
        let mut ticks = 0u32;
        while let Some(deadline) = detector.poll_timeout().filter(|&d| d <= now) {
            ticks += 1;
            if ticks > 100_000 {
                return Err(Error::refused(format!(
                    "replay stuck before line {}: the detector's timer does not advance (a bug in kdr)",
                    record.line
                )));
            }
            let actions = detector.handle(Input::Tick, deadline);
            run.drive(&mut detector, actions, deadline)?;
        }
        // Observations with the same `t` are one probe round: feed them together.
        let mut round = Vec::new();
        while let Some(TraceRecord { t, event: TraceEvent::Observed(o), .. }) = trace.records.get(i) {
            if *t != record.t {
                break;
            }
            round.push(o.clone());
            i += 1;
        }
        let input = if !round.is_empty() {
            if round.len() == 1 { Input::Observed(round.remove(0)) } else { Input::Round(round) }
        } else {
            i += 1;
            match &record.event {
                TraceEvent::Restart => {
                    let (restarted, actions) = FailoverDetector::start(
                        trace.config.detector.clone(),
                        new_policy(),
                        run.store.load()?,
                        now,
                    )?;
                    detector = restarted;
                    run.drive(&mut detector, actions, now)?;
                    continue;
                }
                TraceEvent::Observed(_) => unreachable!("observations are collected into the round above"),
                TraceEvent::Pause => Input::Pause,
                TraceEvent::Resume => Input::Resume,
                TraceEvent::Rearm => Input::Rearm,
            }
        };
        let actions = detector.handle(input, now);
        run.drive(&mut detector, actions, now)?;
    }
    Ok(run.out)
}

struct Run {
    store: InMemoryStateStore,
    fencing: TraceFencing,
    origin: Instant,
    out: Vec<ReplayLine>,
}

impl Run {
    fn push(&mut self, now: Instant, event: ReplayEvent) {
        let ms = (now.saturating_duration_since(self.origin).as_nanos() + 500_000) / 1_000_000;
        self.out.push(ReplayLine { t: ms as f64 / 1000.0, event });
    }

    /// Executes actions like the monitor does: persist, then run the commands, then feed back
    /// their outcome; follow-up actions come before the rest of the batch.
    fn drive(&mut self, detector: &mut FailoverDetector, actions: Vec<Action>, now: Instant) -> Result<()> {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::State(s) => self.push(now, ReplayEvent::State(s)),
                Action::Alert(r) => self.push(now, ReplayEvent::Alert(r)),
                Action::Persist(p) => {
                    let mut follow = Vec::new();
                    for command in p.commit(&mut self.store)? {
                        let epoch = command.epoch();
                        let input = match command.kind() {
                            CommandKind::Fence => {
                                self.push(now, ReplayEvent::Fence { epoch });
                                let outcome = match self.fencing {
                                    TraceFencing::Ok => Outcome::Ok,
                                    TraceFencing::Fail => Outcome::Failed(
                                        "simulated fencer: trace says fencing \"fail\"".into(),
                                    ),
                                    TraceFencing::None => Outcome::Failed("no fencer configured".into()),
                                };
                                Input::FenceDone { epoch, outcome }
                            }
                            CommandKind::Promote => {
                                self.push(now, ReplayEvent::Promote { epoch });
                                Input::PromoteDone { epoch, outcome: Outcome::Ok }
                            }
                        };
                        follow.extend(detector.handle(input, now));
                    }
                    for a in follow.into_iter().rev() {
                        queue.push_front(a);
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a replay amounts to, for tests and summaries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplaySummary {
    /// When each promote command was issued.
    pub promotions: Vec<f64>,
    /// When each fence command was issued.
    pub fences: Vec<f64>,
    /// How many alerts.
    pub alerts: usize,
}

impl ReplaySummary {
    /// Summarizes replay output.
    pub fn of(lines: &[ReplayLine]) -> Self {
        let mut s = ReplaySummary::default();
        for l in lines {
            match l.event {
                ReplayEvent::Promote { .. } => s.promotions.push(l.t),
                ReplayEvent::Fence { .. } => s.fences.push(l.t),
                ReplayEvent::Alert(_) => s.alerts += 1,
                ReplayEvent::State(_) => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_replays_like_the_original() {
        let origin = SystemClock.instant();
        let config = TraceConfig { detector: DetectorConfig::default(), fencing: TraceFencing::Ok };
        let mut rec = TraceRecorder::start(Vec::new(), &config, origin).unwrap();
        for i in 0..60u64 {
            let now = origin + Duration::from_secs(i * 10);
            let ok = i < 10;
            rec.record(now, TraceEvent::Observed(Observation::Api { ok })).unwrap();
            rec.record(now, TraceEvent::Observed(Observation::Host { ok })).unwrap();
            rec.record(
                now + Duration::from_millis(100),
                TraceEvent::Observed(Observation::SelfCheck { ok: true }),
            )
            .unwrap();
        }
        // An instant from before the last one stays in order.
        rec.record(origin, TraceEvent::Pause).unwrap();
        let text = String::from_utf8(rec.finish().unwrap()).unwrap();
        assert!(text.starts_with("{\"config\": {\"interval_s\": 10.0, \"dead_after_s\": 300.0, \"witnesses\": [], \"witness_quorum\": \"majority\", \"fencing\": \"ok\""), "{text}");
        assert!(text.ends_with("{\"t\": 590.1, \"event\": \"pause\"}\n"), "{text}");
        let trace = Trace::parse(&text, "recording").unwrap();
        assert_eq!(
            trace.config,
            TraceConfig {
                detector: DetectorConfig { fencing: Fencing::Required, ..Default::default() },
                fencing: TraceFencing::Ok
            }
        );
        let lines = replay_default(&trace).unwrap();
        let s = ReplaySummary::of(&lines);
        assert_eq!((s.fences, s.promotions), (vec![400.0], vec![400.0]));
    }
}
