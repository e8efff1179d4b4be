//! The failover detector against recorded traces: the design's samples with their expected
//! outcome, trace families of our own, and properties over random traces (proptest).
use std::path::PathBuf;

use kdr::failover::trace::{ReplayEvent, ReplayLine, ReplaySummary, Trace, replay_default};
use proptest::prelude::*;

/// The design's sample traces, copied into the repository (`tests/fixtures/detector-traces/`):
/// no test reads anything outside it.
fn traces_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detector-traces");
    assert!(dir.join("expected.json").is_file(), "the sample traces are missing from {}", dir.display());
    dir
}

fn run(text: &str) -> Vec<ReplayLine> {
    let trace = Trace::parse(text, "test trace").expect("trace parses");
    replay_default(&trace).expect("replay runs")
}

#[test]
fn sample_traces_match_expected_json() {
    let dir = traces_dir();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    assert!(expected.len() >= 8, "expected.json lists {} traces", expected.len());
    for (name, want) in expected {
        let path = dir.join(format!("{name}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines = run(&text);
        let s = ReplaySummary::of(&lines);
        let want_promotes = want["promotes"].as_u64().unwrap() as usize;
        assert_eq!(s.promotions.len(), want_promotes, "{name}: promotions at {:?}", s.promotions);
        if let Some(window) = want.get("window") {
            let (lo, hi) = (window[0].as_f64().unwrap(), window[1].as_f64().unwrap());
            for p in &s.promotions {
                assert!((lo..=hi).contains(p), "{name}: promotion at {p}, expected within [{lo}, {hi}]");
            }
        }
        // Every output line is the design doc's shape.
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(&l.to_json_line()).unwrap();
            assert!(v["t"].is_f64(), "{name}: {}", l.to_json_line());
            assert!(v.get("state").is_some() ^ v.get("action").is_some(), "{name}: {}", l.to_json_line());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trace families of our own, written as JSONL like the monitor records them.

#[derive(Clone)]
struct Tb {
    lines: Vec<String>,
}

impl Tb {
    fn new(interval: f64, dead_after: f64, witnesses: &[&str], quorum: &str, fencing: &str) -> Self {
        let ws: Vec<String> = witnesses.iter().map(|w| format!("\"{w}\"")).collect();
        Tb {
            lines: vec![format!(
                "{{\"config\": {{\"interval_s\": {interval}, \"dead_after_s\": {dead_after}, \"witnesses\": [{}], \
                 \"witness_quorum\": \"{quorum}\", \"fencing\": \"{fencing}\"}}}}",
                ws.join(", ")
            )],
        }
    }
    fn plain() -> Self {
        Self::new(10.0, 300.0, &[], "majority", "none")
    }
    fn round(&mut self, t: f64, api: bool, host: bool, self_ok: bool) -> &mut Self {
        self.lines.push(format!("{{\"t\": {t}, \"probe\": \"api\", \"ok\": {api}}}"));
        self.lines.push(format!("{{\"t\": {t}, \"probe\": \"host\", \"ok\": {host}}}"));
        self.lines.push(format!("{{\"t\": {}, \"probe\": \"self\", \"ok\": {self_ok}}}", t + 0.1));
        self
    }
    fn witness(&mut self, t: f64, id: &str, verdict: &str) -> &mut Self {
        self.lines.push(format!(
            "{{\"t\": {t}, \"probe\": \"witness\", \"id\": \"{id}\", \"verdict\": \"{verdict}\"}}"
        ));
        self
    }
    /// Rounds every `step` seconds from `from` while `t < to`.
    fn rounds(&mut self, from: f64, to: f64, step: f64, api: bool, host: bool, self_ok: bool) -> &mut Self {
        let mut t = from;
        while t < to - 1e-9 {
            self.round(t, api, host, self_ok);
            t += step;
        }
        self
    }
    fn event(&mut self, t: f64, e: &str) -> &mut Self {
        self.lines.push(format!("{{\"t\": {t}, \"event\": \"{e}\"}}"));
        self
    }
    fn replay(&self) -> Vec<ReplayLine> {
        run(&self.lines.join("\n"))
    }
    fn promotions(&self) -> Vec<f64> {
        ReplaySummary::of(&self.replay()).promotions
    }
}

fn alerts(lines: &[ReplayLine], needle: &str) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| matches!(&l.event, ReplayEvent::Alert(r) if r.contains(needle)))
        .map(|l| l.t)
        .collect()
}

#[test]
fn boundary_timings_at_dead_after_plus_minus_one_second() {
    for (interval, dead_after) in [(10.0, 300.0), (5.0, 60.0), (10.0, 301.0), (15.0, 120.0)] {
        // Dead from 100; the primary answers again at 100 + dead_after - 1: never dead long enough.
        let mut tb = Tb::new(interval, dead_after, &[], "majority", "none");
        tb.rounds(0.0, 100.0, interval, true, true, true);
        tb.rounds(100.0, 100.0 + dead_after - 1.0, interval, false, false, true);
        tb.round(100.0 + dead_after - 1.0, true, true, true);
        tb.rounds(100.0 + dead_after + interval, 100.0 + 3.0 * dead_after, interval, true, true, true);
        assert_eq!(
            tb.promotions(),
            Vec::<f64>::new(),
            "interval {interval}, dead_after {dead_after}: up at -1 s"
        );

        // ... at 100 + dead_after + 1: promoted at exactly 100 + dead_after, once.
        let mut tb = Tb::new(interval, dead_after, &[], "majority", "none");
        tb.rounds(0.0, 100.0, interval, true, true, true);
        tb.rounds(100.0, 100.0 + dead_after + 1.0, interval, false, false, true);
        tb.round(100.0 + dead_after + 1.0, true, true, true);
        assert_eq!(
            tb.promotions(),
            vec![100.0 + dead_after],
            "interval {interval}, dead_after {dead_after}: up at +1 s"
        );
    }
}

#[test]
fn flapping_never_promotes_and_alerts() {
    for (down, up) in [(30.0, 30.0), (290.0, 10.0), (200.0, 20.0), (50.0, 10.0)] {
        let mut tb = Tb::plain();
        let mut t = 0.0;
        while t < 4000.0 {
            tb.rounds(t, t + down, 10.0, false, false, true);
            tb.rounds(t + down, t + down + up, 10.0, true, true, true);
            t += down + up;
        }
        let lines = tb.replay();
        assert_eq!(ReplaySummary::of(&lines).promotions, Vec::<f64>::new(), "down {down} / up {up}");
        if down + up <= 100.0 {
            assert!(
                !alerts(&lines, "primary flapping").is_empty(),
                "down {down} / up {up}: no flapping alert"
            );
        }
    }
}

#[test]
fn partial_partitions_do_not_promote() {
    // API down, machine up (the API server crashed): degraded, never dead.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 2000.0, 10.0, false, true, true);
    assert_eq!(tb.promotions(), Vec::<f64>::new());
    // Machine unreachable by ping, API answers (ICMP filtered): alive.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 2000.0, 10.0, true, false, true);
    assert_eq!(tb.promotions(), Vec::<f64>::new());
    // Standby cut off: its own self probe fails too.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 2000.0, 10.0, false, false, false);
    assert_eq!(tb.promotions(), Vec::<f64>::new());
    // Self probe flickers once inside the window: evidence restarts after it.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 200.0, 10.0, false, false, true).round(200.0, false, false, false);
    tb.rounds(210.0, 1000.0, 10.0, false, false, true);
    assert_eq!(tb.promotions(), vec![510.1]);
}

fn witness_round(tb: &mut Tb, t: f64, verdicts: &[(&str, &str)]) {
    tb.round(t, false, false, true);
    for (id, v) in verdicts {
        tb.witness(t + 0.2, id, v);
    }
}

#[test]
fn witness_disagreement() {
    let ids = ["w1", "w2", "w3"];
    let case = |quorum: &str, verdicts: [&str; 3]| {
        let mut tb = Tb::new(10.0, 300.0, &ids, quorum, "none");
        let mut t = 0.0;
        while t < 1500.0 {
            let v: Vec<(&str, &str)> = ids.iter().copied().zip(verdicts).collect();
            witness_round(&mut tb, t, &v);
            t += 10.0;
        }
        tb.promotions()
    };
    assert_eq!(case("majority", ["down", "down", "down"]), vec![300.2]);
    assert_eq!(case("majority", ["down", "down", "unknown"]), vec![300.2]);
    assert_eq!(case("majority", ["down", "down", "up"]), Vec::<f64>::new(), "one witness up vetoes");
    assert_eq!(
        case("majority", ["down", "unknown", "unknown"]),
        Vec::<f64>::new(),
        "isolated from witnesses"
    );
    assert_eq!(case("all", ["down", "down", "unknown"]), Vec::<f64>::new(), "quorum all not met");
    assert_eq!(case("all", ["down", "down", "down"]), vec![300.2]);

    // The witness that still sees the primary rotates: never a full window without a veto.
    let mut tb = Tb::new(10.0, 300.0, &ids, "majority", "none");
    for i in 0..150 {
        let t = i as f64 * 10.0;
        let up = ids[(i / 5) % 3];
        let v: Vec<(&str, &str)> =
            ids.iter().map(|&w| (w, if i % 20 == 0 && w == up { "up" } else { "down" })).collect();
        witness_round(&mut tb, t, &v);
    }
    let p = tb.promotions();
    // A veto every 200 s: the window never reaches 300 s.
    assert_eq!(p, Vec::<f64>::new());

    // One "up" from a single witness mid-window restarts the window.
    let mut tb = Tb::new(10.0, 300.0, &ids, "majority", "none");
    for i in 0..100 {
        let t = i as f64 * 10.0;
        let w1 = if t == 200.0 { "up" } else { "down" };
        witness_round(&mut tb, t, &[("w1", w1), ("w2", "down"), ("w3", "down")]);
    }
    // The up report at 200.2 stays fresh until 220.2; w1's "down" at 210.2 replaces it.
    assert_eq!(tb.promotions(), vec![510.2]);
}

#[test]
fn restarts_at_every_phase() {
    // During warm-up, while healthy, just before and during suspicion (several places), and
    // right before the promotion would have happened.
    for restart_at in [0.05f64, 5.0, 95.0, 100.05, 100.5, 250.5, 399.5] {
        let mut tb = Tb::plain();
        tb.rounds(0.0, 100.0, 10.0, true, true, true);
        tb.rounds(100.0, 2000.0, 10.0, false, false, true);
        // Insert the restart in time order.
        let mut body: Vec<String> = tb.lines.split_off(1);
        body.push(format!("{{\"t\": {restart_at}, \"event\": \"restart\"}}"));
        let t_of = |l: &String| serde_json::from_str::<serde_json::Value>(l).unwrap()["t"].as_f64().unwrap();
        body.sort_by(|a, b| t_of(a).total_cmp(&t_of(b)));
        tb.lines.extend(body);
        // Evidence starts once api, host and self have all reported after the restart (self at
        // +0.1); before 80 s the restart is long forgotten (self at 90.1 is fresh at 100).
        let next_round = (restart_at / 10.0).ceil() * 10.0;
        let start = if restart_at < 80.0 {
            100.0
        } else if restart_at < 100.0 {
            100.1
        } else if restart_at % 10.0 < 0.1 {
            next_round // between a round and its self probe: that self probe is in before it
        } else {
            next_round + 0.1
        };
        assert_eq!(tb.promotions(), vec![start + 300.0], "restart at {restart_at}");
    }
    // Restart after the promotion, many times: latched, never again.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 500.0, 10.0, false, false, true);
    for r in [505.0, 1005.0, 1505.0] {
        tb.event(r, "restart").rounds(r + 5.0, r + 500.0, 10.0, false, false, true);
    }
    assert_eq!(tb.promotions(), vec![300.1]);
}

#[test]
fn clock_gaps_discard_evidence() {
    // A gap of 2 * interval + 1 s (190 -> 211) in the middle of the window delays the promotion.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 200.0, 10.0, false, false, true);
    tb.rounds(211.0, 1000.0, 10.0, false, false, true);
    assert_eq!(tb.promotions(), vec![511.1], "evidence restarts after the gap");
    // A gap of exactly 2 * interval (190 -> 210) does not.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 200.0, 10.0, false, false, true);
    tb.rounds(210.0, 1000.0, 10.0, false, false, true);
    assert_eq!(tb.promotions(), vec![300.1]);
    // A long stall (the VM paused for an hour) never counts as evidence.
    let mut tb = Tb::plain();
    tb.rounds(0.0, 100.0, 10.0, false, false, true);
    tb.rounds(3700.0, 3800.0, 10.0, false, false, true);
    assert_eq!(tb.promotions(), Vec::<f64>::new());
}

#[test]
fn pause_resume_rearm_in_a_trace() {
    let mut tb = Tb::plain();
    tb.event(0.0, "pause");
    tb.rounds(0.0, 1000.0, 10.0, false, false, true);
    tb.event(1000.0, "resume");
    tb.rounds(1000.0, 1400.0, 10.0, false, false, true);
    tb.event(1400.0, "rearm");
    tb.rounds(1400.0, 6000.0, 10.0, false, false, true);
    let lines = tb.replay();
    let s = ReplaySummary::of(&lines);
    // Paused: an alert at 300.1 (evidence from the first self probe at 0.1), no action;
    // resumed at 1000: fresh 300 s -> 1300; re-armed at 1400: block period 3600 s -> 5000.
    assert_eq!(alerts(&lines, "would fail over"), vec![300.1, 1700.0]);
    assert_eq!(s.promotions, vec![1300.0, 5000.0]);
}

#[test]
fn fencing_ok_fences_first_and_fencing_fail_never_promotes() {
    let mut tb = Tb::new(10.0, 300.0, &[], "majority", "ok");
    tb.rounds(0.0, 1000.0, 10.0, false, false, true);
    let lines = tb.replay();
    let actions: Vec<String> = lines
        .iter()
        .filter(|l| !matches!(l.event, ReplayEvent::State(_) | ReplayEvent::Alert(_)))
        .map(|l| l.to_json_line())
        .collect();
    assert_eq!(
        actions,
        vec![
            r#"{"t": 300.1, "action": "fence", "epoch": 1}"#,
            r#"{"t": 300.1, "action": "promote", "epoch": 1}"#
        ]
    );
    let mut tb = Tb::new(10.0, 300.0, &[], "majority", "fail");
    tb.rounds(0.0, 1000.0, 10.0, false, false, true);
    let lines = tb.replay();
    let s = ReplaySummary::of(&lines);
    assert_eq!((s.fences, s.promotions), (vec![300.1], vec![]));
    assert_eq!(alerts(&lines, "fencing the old primary failed"), vec![300.1]);
}

#[test]
fn recorded_lines_parse_back_to_the_same_trace() {
    let mut tb = Tb::new(10.0, 300.0, &["w1"], "all", "ok");
    tb.round(0.0, true, false, true).witness(0.5, "w1", "unknown").event(1.0, "pause").event(2.0, "rearm");
    let trace = Trace::parse(&tb.lines.join("\n"), "t").unwrap();
    let mut text = vec![trace.config.to_json_line()];
    text.extend(trace.records.iter().map(|r| r.to_json_line()));
    let again = Trace::parse(&text.join("\n"), "t2").unwrap();
    assert_eq!(again.config, trace.config);
    assert_eq!(
        again.records.iter().map(|r| (&r.event, r.t)).collect::<Vec<_>>(),
        trace.records.iter().map(|r| (&r.event, r.t)).collect::<Vec<_>>()
    );
    assert_eq!(text[1], r#"{"t": 0.0, "probe": "api", "ok": true}"#);
}

#[test]
fn malformed_traces_name_the_line() {
    let cfg = r#"{"config": {"interval_s": 10, "dead_after_s": 300, "witnesses": ["w1"], "witness_quorum": "majority", "fencing": "none"}}"#;
    let cases = [
        ("{\"config\": {\"interval_s\": 10, \"dead_after\": 300}}", 1, "unknown field `dead_after`"),
        (r#"{"config": {"fencing": "required"}}"#, 1, "\"none\", \"ok\" or \"fail\""),
        (r#"{"t": 0, "probe": "api", "ok": true}"#, 1, "the first line must be"),
        (
            &format!(
                "{cfg}\n{{\"t\": 0, \"probe\": \"api\", \"ok\": true}}\n{{\"t\": 1, \"probe\": \"api\"}}"
            ),
            3,
            "needs \"ok\"",
        ),
        (&format!("{cfg}\n{{\"t\": 0, \"probe\": \"api\", \"ok\": tru}}"), 2, "not a JSON object"),
        (
            &format!(
                "{cfg}\n{{\"t\": 5, \"probe\": \"api\", \"ok\": true}}\n{{\"t\": 4, \"event\": \"pause\"}}"
            ),
            3,
            "earlier than t = 5 on line 2",
        ),
        (
            &format!("{cfg}\n{{\"t\": 0, \"probe\": \"witness\", \"id\": \"w7\", \"verdict\": \"up\"}}"),
            2,
            "not in config.witnesses",
        ),
        (
            &format!("{cfg}\n{{\"t\": 0, \"probe\": \"witness\", \"id\": \"w1\", \"verdict\": \"maybe\"}}"),
            2,
            "unknown variant `maybe`",
        ),
        (&format!("{cfg}\n{{\"t\": 0, \"event\": \"reboot\"}}"), 2, "unknown event \"reboot\""),
        (
            &format!("{cfg}\n{{\"t\": 0, \"probe\": \"api\", \"ok\": true, \"colour\": 1}}"),
            2,
            "unknown field `colour`",
        ),
        (&format!("{cfg}\n\n{{\"t\": -1, \"event\": \"pause\"}}"), 3, ">= 0"),
        ("", 1, "empty"),
    ];
    for (text, line, needle) in cases {
        let err = Trace::parse(text, "x.jsonl").unwrap_err();
        let msg = err.to_string();
        assert!(err.is_usage(), "{msg}");
        assert!(msg.contains(&format!("x.jsonl line {line}:")), "want line {line}: {msg}");
        assert!(msg.contains(needle), "want {needle:?}: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Properties over random traces.

#[derive(Clone, Debug)]
struct Step {
    dt: u32,
    api: bool,
    host: bool,
    self_ok: bool,
    witnesses: [u8; 3], // 0 up, 1 down, 2 unknown
    event: Option<&'static str>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![8 => 5u32..=15, 1 => 16u32..=40],
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.97),
        prop::array::uniform3(prop_oneof![1 => Just(0u8), 12 => Just(1u8), 2 => Just(2u8)]),
        prop_oneof![60 => Just(None), 1 => Just(Some("restart")), 1 => Just(Some("pause")), 1 => Just(Some("resume")), 1 => Just(Some("rearm"))],
    )
        .prop_map(|(dt, api, host, self_ok, witnesses, event)| Step { dt, api, host, self_ok, witnesses, event })
}

#[derive(Clone, Debug)]
struct Scenario {
    dead_after: f64,
    witnesses: usize,
    quorum_all: bool,
    fencing: &'static str,
    steps: Vec<Step>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![Just(60.0), Just(120.0), Just(300.0)],
        prop_oneof![Just(0usize), Just(3usize)],
        any::<bool>(),
        prop_oneof![Just("none"), Just("ok"), Just("fail")],
        prop::collection::vec(step(), 20..400),
    )
        .prop_map(|(dead_after, witnesses, quorum_all, fencing, steps)| Scenario {
            dead_after,
            witnesses,
            quorum_all,
            fencing,
            steps,
        })
}

const IDS: [&str; 3] = ["w1", "w2", "w3"];
const INTERVAL: f64 = 10.0;

struct Round {
    t: f64,
    dead: bool,
}

/// Builds the trace (each round: api, host, self and every witness at the same `t`) and the
/// oracle's view of each round: "dead-looking" = api down, host down, self up, no witness up,
/// the witness quorum down and a majority of witnesses reachable.
fn build(s: &Scenario) -> (String, Vec<Round>, Vec<(f64, &'static str)>) {
    let ids = &IDS[..s.witnesses];
    let quorum = if s.quorum_all { "all" } else { "majority" };
    let mut tb = Tb::new(INTERVAL, s.dead_after, ids, quorum, s.fencing);
    let mut rounds = Vec::new();
    let mut events = Vec::new();
    let mut t = 0.0;
    for st in &s.steps {
        if let Some(e) = st.event {
            tb.event(t, e);
            events.push((t, e));
        }
        tb.lines.push(format!("{{\"t\": {t}, \"probe\": \"api\", \"ok\": {}}}", st.api));
        tb.lines.push(format!("{{\"t\": {t}, \"probe\": \"host\", \"ok\": {}}}", st.host));
        tb.lines.push(format!("{{\"t\": {t}, \"probe\": \"self\", \"ok\": {}}}", st.self_ok));
        let mut downs = 0;
        let mut ups = 0;
        let mut unknown = 0;
        for (i, id) in ids.iter().enumerate() {
            let v = ["up", "down", "unknown"][st.witnesses[i] as usize];
            tb.witness(t, id, v);
            match st.witnesses[i] {
                0 => ups += 1,
                1 => downs += 1,
                _ => unknown += 1,
            }
        }
        let n = ids.len();
        let need = if n == 0 {
            0
        } else if s.quorum_all {
            n
        } else {
            n / 2 + 1
        };
        let reachable = n == 0 || n - unknown > n / 2;
        let dead = !st.api && !st.host && st.self_ok && ups == 0 && downs >= need && reachable;
        rounds.push(Round { t, dead });
        t += st.dt as f64;
    }
    (tb.lines.join("\n"), rounds, events)
}

fn check_safety(s: &Scenario) -> std::result::Result<(), TestCaseError> {
    let (text, rounds, events) = build(s);
    let lines = run(&text);
    let promotions: Vec<(f64, u64)> = lines
        .iter()
        .filter_map(|l| match l.event {
            ReplayEvent::Promote { epoch } => Some((l.t, epoch)),
            _ => None,
        })
        .collect();
    let fences: Vec<(f64, u64)> = lines
        .iter()
        .filter_map(|l| match l.event {
            ReplayEvent::Fence { epoch } => Some((l.t, epoch)),
            _ => None,
        })
        .collect();
    let stale = 2.0 * INTERVAL;
    // Which events reset the evidence: every restart; a resume while paused; a re-arm after a
    // failover attempt (a fence or a promotion) since the previous effective re-arm.
    let mut effective = Vec::new();
    let mut paused = false;
    let mut last_rearm = f64::NEG_INFINITY;
    for &(t, e) in &events {
        match e {
            "restart" => effective.push((t, e)),
            "pause" => paused = true,
            "resume" if paused => {
                paused = false;
                effective.push((t, e));
            }
            "rearm" => {
                let attempted = fences.iter().chain(&promotions).any(|&(a, _)| a >= last_rearm && a <= t);
                if attempted {
                    last_rearm = t;
                    effective.push((t, e));
                }
            }
            _ => {}
        }
    }
    for &(p, epoch) in &promotions {
        let start = p - s.dead_after;
        // 1. Continuous, gap-free evidence over [start, p): the round in force at `start` and
        //    every later round before p look dead; rounds are never more than 2 intervals apart.
        let r0 = rounds.iter().rposition(|r| r.t <= start + 1e-6);
        prop_assert!(r0.is_some(), "promotion at {p}: no observation before the window start {start}");
        let r0 = r0.unwrap();
        let window: Vec<&Round> = rounds[r0..].iter().filter(|r| r.t < p).collect();
        prop_assert!(
            window.iter().all(|r| r.dead),
            "promotion at {p}: a live-looking round in [{start}, {p})"
        );
        prop_assert!(
            start - rounds[r0].t <= stale + 1e-6,
            "promotion at {p}: evidence stale at window start"
        );
        let times: Vec<f64> = window.iter().map(|r| r.t).chain([p]).collect();
        prop_assert!(
            times.windows(2).all(|w| w[1] - w[0] <= stale + 1e-6),
            "promotion at {p}: gap in evidence {times:?}"
        );
        // 2. No restart, effective resume or effective re-arm inside the window (each starts
        //    suspicion from zero; a resume while not paused and a re-arm while not latched are no-ops).
        //    A trace line at exactly `p` is processed after the timer that promoted at `p` (replay
        //    fires due timers before the next line), so it cannot have reset this window.
        prop_assert!(
            !effective.iter().any(|&(t, _)| t > start + 1e-6 && t < p),
            "promotion at {p}: an event restarted the evidence inside the window"
        );
        // 3. Not paused (pause survives restarts).
        let paused = events.iter().rfind(|(t, e)| *t < p && (*e == "pause" || *e == "resume"));
        prop_assert!(paused.is_none_or(|(_, e)| *e == "resume"), "promotion at {p} while paused");
        // 4. Fence before promote, same epoch, when fencing is configured; never after a failed fence.
        match s.fencing {
            "none" => prop_assert!(fences.is_empty()),
            "ok" => prop_assert!(
                fences.iter().any(|&(t, e)| e == epoch && t <= p),
                "promote {epoch} without its fence"
            ),
            _ => prop_assert!(false, "promotion at {p} although fencing fails"),
        }
    }
    // 5. At most one promotion between re-arms.
    let rearms: Vec<f64> = events.iter().filter(|(_, e)| *e == "rearm").map(|(t, _)| *t).collect();
    let mut bounds = vec![f64::NEG_INFINITY];
    bounds.extend(rearms);
    bounds.push(f64::INFINITY);
    for b in bounds.windows(2) {
        let n = promotions.iter().filter(|&&(p, _)| p >= b[0] && p < b[1]).count();
        prop_assert!(n <= 1, "{n} promotions between re-arms at {} and {}", b[0], b[1]);
    }
    // Epochs only grow.
    prop_assert!(promotions.windows(2).all(|w| w[1].1 > w[0].1));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_traces_keep_the_safety_invariants(s in scenario()) {
        check_safety(&s)?;
    }

    /// Liveness: after a noisy prefix (no pause, no re-arm), a clean dead tail promotes exactly
    /// once, within [tail + dead_after, tail + dead_after + 2 * interval] (the design's window).
    #[test]
    fn a_clean_dead_tail_promotes_once_in_the_window(mut s in scenario(), tail_rounds in 40usize..80) {
        for st in &mut s.steps {
            if matches!(st.event, Some("pause" | "rearm" | "resume")) {
                st.event = None;
            }
        }
        s.fencing = if s.fencing == "fail" { "ok" } else { s.fencing };
        // A healthy round first ends any latch-free suspicion; then a clean dead tail.
        let healthy = Step { dt: 10, api: true, host: true, self_ok: true, witnesses: [0, 0, 0], event: None };
        let dead = Step { dt: 10, api: false, host: false, self_ok: true, witnesses: [1, 1, 1], event: None };
        let tail_start: f64 = s.steps.iter().map(|st| st.dt as f64).sum::<f64>() + 10.0;
        s.steps.push(healthy);
        s.steps.extend(std::iter::repeat_n(dead, tail_rounds));
        check_safety(&s)?;
        let (text, _, _) = build(&s);
        let promotions = ReplaySummary::of(&run(&text)).promotions;
        if promotions.first().is_some_and(|&p| p < tail_start) {
            // Latched by evidence from the prefix: the tail must not promote again.
            prop_assert_eq!(promotions.len(), 1, "{:?}", promotions);
        } else {
            prop_assert_eq!(promotions.len(), 1, "tail from {}: {:?}", tail_start, promotions);
            let p = promotions[0];
            prop_assert!(p >= tail_start + s.dead_after && p <= tail_start + s.dead_after + 20.0, "promotion at {} for a tail from {}", p, tail_start);
        }
    }
}
