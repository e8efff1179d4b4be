//! Synchronous tables of (time, input) -> actions. Commands are completed by hand here, so that a
//! restart can be placed between any two steps of a failover.
use std::time::{Duration, Instant};

use super::*;
use crate::clock::{Clock, SystemClock};

#[derive(Debug, Default)]
struct FailingStore;

impl StateStore for FailingStore {
    fn load(&self) -> Result<Option<PersistedState>> {
        Ok(None)
    }
    fn save(&mut self, _: &PersistedState) -> Result<()> {
        Err(crate::Error::io("failed to write detector state file /x", std::io::Error::other("disk full")))
    }
}

struct Harness {
    det: FailoverDetector,
    store: Box<dyn StateStore>,
    cfg: DetectorConfig,
    origin: Instant,
    /// Commands handed out by commit, not yet completed.
    pending: Vec<Command>,
}

impl Harness {
    fn new(cfg: DetectorConfig) -> Self {
        Self::with_store(cfg, Box::new(InMemoryStateStore::default()))
    }

    fn with_store(cfg: DetectorConfig, store: Box<dyn StateStore>) -> Self {
        let origin = SystemClock.instant();
        let (det, actions) =
            FailoverDetector::start(cfg.clone(), Box::new(SeedRulePolicy), store.load().unwrap(), origin)
                .unwrap();
        let mut h = Self { det, store, cfg, origin, pending: Vec::new() };
        h.apply(actions, origin);
        h
    }

    fn at(&self, t: f64) -> Instant {
        self.origin + Duration::from_secs_f64(t)
    }

    /// Runs actions like a driver, without completing commands; returns them as text.
    fn apply(&mut self, actions: Vec<Action>, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for a in actions {
            match a {
                Action::State(s) => out.push(format!("state {s}")),
                Action::Alert(r) => out.push(format!("alert {r}")),
                Action::Persist(p) => match p.commit(self.store.as_mut()) {
                    Ok(cmds) => {
                        for c in cmds {
                            out.push(format!("{:?} {}", c.kind(), c.epoch()).to_lowercase());
                            self.pending.push(c);
                        }
                    }
                    Err(e) => {
                        let more = self.det.handle(Input::PersistFailed { reason: e.to_string() }, now);
                        out.push("persist failed".into());
                        out.extend(self.apply(more, now));
                    }
                },
            }
        }
        out
    }

    fn feed(&mut self, t: f64, input: Input) -> Vec<String> {
        let now = self.at(t);
        let actions = self.det.handle(input, now);
        self.apply(actions, now)
    }

    /// One probe round: api, host, self (and witnesses, if given) at `t`.
    fn round(
        &mut self,
        t: f64,
        api: bool,
        host: bool,
        self_ok: bool,
        witnesses: &[(&str, WitnessVerdict)],
    ) -> Vec<String> {
        let mut obs = vec![
            Observation::Api { ok: api },
            Observation::Host { ok: host },
            Observation::SelfCheck { ok: self_ok },
        ];
        obs.extend(witnesses.iter().map(|(id, v)| Observation::Witness { id: (*id).into(), verdict: *v }));
        self.feed(t, Input::Round(obs))
    }

    /// Rounds every `interval_s` over [from, to], firing due timers first, like the monitor.
    fn rounds(&mut self, from: f64, to: f64, api: bool, host: bool, self_ok: bool) -> Vec<(f64, String)> {
        let mut log = Vec::new();
        let mut t = from;
        while t <= to + 1e-9 {
            log.extend(self.ticks_until(t));
            log.extend(self.round(t, api, host, self_ok, &[]).into_iter().map(|e| (t, e)));
            t += self.cfg.interval_s;
        }
        log
    }

    fn ticks_until(&mut self, t: f64) -> Vec<(f64, String)> {
        let mut log = Vec::new();
        while let Some(d) = self.det.poll_timeout().filter(|&d| d <= self.at(t)) {
            let ts = d.duration_since(self.origin).as_secs_f64();
            let actions = self.det.handle(Input::Tick, d);
            log.extend(self.apply(actions, d).into_iter().map(|e| (ts, e)));
        }
        log
    }

    fn complete(&mut self, t: f64, outcome: Outcome) -> Vec<String> {
        let c = self.pending.remove(0);
        let input = match c.kind() {
            CommandKind::Fence => Input::FenceDone { epoch: c.epoch(), outcome },
            CommandKind::Promote => Input::PromoteDone { epoch: c.epoch(), outcome },
        };
        self.feed(t, input)
    }

    fn restart(&mut self, t: f64) -> Vec<String> {
        let now = self.at(t);
        self.pending.clear(); // in-flight commands die with the process
        let (det, actions) = FailoverDetector::start(
            self.cfg.clone(),
            Box::new(SeedRulePolicy),
            self.store.load().unwrap(),
            now,
        )
        .unwrap();
        self.det = det;
        self.apply(actions, now)
    }
}

fn cfg() -> DetectorConfig {
    DetectorConfig { block_period_s: 600.0, ..Default::default() }
}

fn has(log: &[(f64, String)], needle: &str) -> Vec<f64> {
    log.iter().filter(|(_, e)| e.contains(needle)).map(|(t, _)| *t).collect()
}

#[test]
fn promotes_exactly_dead_after_past_the_first_dead_round() {
    let mut h = Harness::new(cfg());
    let mut log = h.rounds(0.0, 90.0, true, true, true);
    assert_eq!(has(&log, "state healthy"), vec![0.0]);
    log.extend(h.rounds(100.0, 390.0, false, false, true));
    assert_eq!(has(&log, "state suspect"), vec![100.0]);
    assert!(has(&log, "promote").is_empty(), "{log:?}");
    assert_eq!(h.det.poll_timeout(), Some(h.at(400.0)));
    log.extend(h.ticks_until(400.0));
    assert_eq!(has(&log, "promote 1"), vec![400.0]);
    assert_eq!(h.det.persisted().latch, Latch::InProgress { epoch: 1, phase: Phase::Promote });
    let done = h.complete(400.0, Outcome::Ok);
    assert_eq!(done, vec!["state promoted"]);
    assert_eq!(h.store.load().unwrap().unwrap().latch, Latch::Promoted { epoch: 1 });
}

#[test]
fn the_command_only_comes_out_of_a_successful_persist() {
    let mut h = Harness::with_store(cfg(), Box::new(FailingStore));
    let mut log = h.rounds(0.0, 390.0, false, false, true);
    log.extend(h.ticks_until(400.0));
    assert!(has(&log, "promote 1").is_empty(), "no command after a failed save: {log:?}");
    assert_eq!(has(&log, "persist failed").len(), 1, "{log:?}");
    assert!(!has(&log, "stops before its promote step").is_empty(), "{log:?}");
    assert_eq!(h.det.state(), Some(State::Halted));
    assert!(h.pending.is_empty());
    // And it stays halted: no second attempt.
    let log = h.rounds(400.0, 1500.0, false, false, true);
    assert!(has(&log, "promote 1").is_empty(), "{log:?}");
}

#[test]
fn fence_comes_before_promote_and_a_failed_fence_promotes_nothing() {
    let fenced = DetectorConfig { fencing: Fencing::Required, ..cfg() };
    let mut h = Harness::new(fenced.clone());
    let mut log = h.rounds(0.0, 390.0, false, false, true);
    log.extend(h.ticks_until(400.0));
    assert_eq!(has(&log, "fence 1"), vec![300.0], "dead since 0 s: {log:?}");
    assert!(has(&log, "promote").is_empty());
    assert_eq!(h.complete(300.0, Outcome::Ok), vec!["promote 1"]);
    assert_eq!(h.pending.len(), 1);
    assert_eq!(h.pending[0].kind(), CommandKind::Promote);
    assert_eq!(h.complete(301.0, Outcome::Ok), vec!["state promoted"]);

    let mut h = Harness::new(fenced);
    h.rounds(0.0, 390.0, false, false, true);
    h.ticks_until(400.0);
    let out = h.complete(300.0, Outcome::Failed("ssh: connection refused".into()));
    assert!(
        out.iter().any(|e| e.contains("fencing the old primary failed") && e.contains("connection refused")),
        "{out:?}"
    );
    assert!(out.contains(&"state halted".to_owned()));
    assert!(h.pending.is_empty(), "no promote after a failed fence");
    let log = h.rounds(310.0, 2000.0, false, false, true);
    assert!(has(&log, "promote").is_empty() && has(&log, "fence").is_empty(), "{log:?}");
}

#[test]
fn a_restart_at_every_phase_never_promotes_twice() {
    let fenced = DetectorConfig { fencing: Fencing::Required, ..cfg() };
    // (restart after how many completed commands, expected latch after restart)
    for completed in 0..=2 {
        let mut h = Harness::new(fenced.clone());
        h.rounds(0.0, 290.0, false, false, true);
        h.ticks_until(300.0);
        for i in 0..completed {
            h.complete(300.0 + i as f64, Outcome::Ok);
        }
        let out = h.restart(305.0);
        let latch = h.det.persisted().latch.clone();
        match completed {
            0 | 1 => {
                assert!(matches!(latch, Latch::Halted { epoch: 1, .. }), "{completed}: {latch:?}");
                assert!(out.iter().any(|e| e.contains("restarted during the")), "{out:?}");
                assert!(out.contains(&"state halted".to_owned()), "{out:?}");
            }
            _ => {
                assert_eq!(latch, Latch::Promoted { epoch: 1 });
                assert_eq!(out, vec!["state promoted"]);
            }
        }
        // Persisted too: a second restart says the same without a new alert.
        assert_eq!(h.store.load().unwrap().unwrap().latch, latch);
        let log = h.rounds(310.0, 3000.0, false, false, true);
        assert!(has(&log, "fence").is_empty() && has(&log, "promote").is_empty(), "{completed}: {log:?}");
        assert!(h.pending.is_empty());
    }
}

#[test]
fn restart_mid_suspicion_starts_evidence_from_zero() {
    let mut h = Harness::new(cfg());
    h.rounds(0.0, 250.0, false, false, true);
    assert_eq!(h.restart(255.0), vec!["state warmup"]);
    let mut log = h.rounds(260.0, 550.0, false, false, true);
    log.extend(h.ticks_until(600.0));
    assert_eq!(has(&log, "promote 1"), vec![560.0], "{log:?}");
}

#[test]
fn pause_alerts_once_survives_restart_and_resume_needs_fresh_evidence() {
    let mut h = Harness::new(cfg());
    let out = h.feed(0.0, Input::Pause);
    assert!(out[0].starts_with("alert detector paused"), "{out:?}");
    assert!(h.store.load().unwrap().unwrap().paused);
    let mut log = h.rounds(0.0, 200.0, false, false, true);
    log.extend(h.restart(205.0).into_iter().map(|e| (205.0, e)));
    assert!(!has(&log, "starts paused").is_empty(), "{log:?}");
    log.extend(h.rounds(210.0, 900.0, false, false, true));
    assert!(has(&log, "promote").is_empty(), "{log:?}");
    assert_eq!(has(&log, "would fail over").len(), 1, "{log:?}");
    assert_eq!(has(&log, "would fail over"), vec![510.0]);
    h.feed(905.0, Input::Resume);
    let log = h.rounds(910.0, 1300.0, false, false, true);
    assert_eq!(has(&log, "promote 1"), vec![1205.0], "a fresh dead_after from the resume: {log:?}");
}

#[test]
fn rearm_blocks_for_the_block_period_then_can_promote_again() {
    let mut h = Harness::new(cfg());
    h.rounds(0.0, 290.0, false, false, true);
    h.ticks_until(300.0);
    h.complete(300.0, Outcome::Ok);
    // Latched: still dead for a long time, no second promotion.
    let log = h.rounds(300.0, 1000.0, false, false, true);
    assert!(has(&log, "promote").is_empty(), "{log:?}");
    let out = h.feed(1000.0, Input::Rearm);
    assert!(out.iter().any(|e| e.contains("re-armed")), "{out:?}");
    assert!(h.store.load().unwrap().unwrap().block_pending);
    // Dead all along: after dead_after (1300) it only alerts; it acts at the block end (1600).
    let mut log = h.rounds(1000.0, 1590.0, false, false, true);
    assert!(has(&log, "promote").is_empty(), "{log:?}");
    assert_eq!(has(&log, "block period after re-arm has"), vec![1300.0], "{log:?}");
    log.extend(h.ticks_until(1600.0));
    assert_eq!(has(&log, "promote 2"), vec![1600.0], "{log:?}");
    assert!(!h.store.load().unwrap().unwrap().block_pending);
}

#[test]
fn a_restart_during_the_block_period_blocks_again_in_full() {
    let mut h = Harness::new(cfg());
    h.rounds(0.0, 290.0, false, false, true);
    h.ticks_until(300.0);
    h.complete(300.0, Outcome::Ok);
    h.feed(400.0, Input::Rearm);
    h.restart(900.0); // 100 s of block left; a restart cannot know that, so it blocks 600 s again
    let mut log = h.rounds(900.0, 1490.0, false, false, true);
    assert!(has(&log, "promote").is_empty(), "{log:?}");
    log.extend(h.ticks_until(1500.0));
    assert_eq!(has(&log, "promote 2"), vec![1500.0], "{log:?}");
}

#[test]
fn a_gap_longer_than_two_intervals_discards_the_evidence() {
    let mut h = Harness::new(cfg());
    let mut log = h.rounds(0.0, 200.0, false, false, true);
    // Nothing from 200 to 221 (a paused VM): readings go stale at 220 + 1 ns.
    log.extend(h.rounds(221.0, 600.0, false, false, true));
    assert_eq!(has(&log, "state isolated"), vec![220.000000001], "{log:?}");
    assert_eq!(has(&log, "promote 1"), vec![521.0], "{log:?}");
    // A gap of exactly two intervals keeps it.
    let mut h = Harness::new(cfg());
    let mut log = h.rounds(0.0, 200.0, false, false, true);
    log.extend(h.rounds(220.0, 300.0, false, false, true));
    assert_eq!(has(&log, "promote 1"), vec![300.0], "{log:?}");
}

#[test]
fn witnesses_quorum_veto_isolation() {
    use WitnessVerdict::*;
    let w = |q| DetectorConfig {
        witnesses: vec!["w1".into(), "w2".into(), "w3".into()],
        witness_quorum: q,
        ..cfg()
    };
    let cases: &[(WitnessQuorum, [WitnessVerdict; 3], State)] = &[
        (WitnessQuorum::Majority, [Down, Down, Down], State::Suspect),
        (WitnessQuorum::Majority, [Down, Down, Unknown], State::Suspect),
        (WitnessQuorum::Majority, [Down, Down, Up], State::Vetoed),
        (WitnessQuorum::Majority, [Down, Unknown, Unknown], State::Isolated),
        (WitnessQuorum::All, [Down, Down, Unknown], State::Unconfirmed),
        (WitnessQuorum::All, [Down, Down, Down], State::Suspect),
        (WitnessQuorum::All, [Up, Up, Up], State::Vetoed),
    ];
    for (q, verdicts, want) in cases {
        let mut h = Harness::new(w(*q));
        let ws: Vec<_> = ["w1", "w2", "w3"].into_iter().zip(verdicts.iter().copied()).collect();
        h.round(0.0, false, false, true, &ws);
        assert_eq!(h.det.state(), Some(*want), "{q:?} {verdicts:?}");
    }
    // Reports older than two intervals count as unknown: witnesses silent -> isolated.
    let mut h = Harness::new(w(WitnessQuorum::Majority));
    h.round(0.0, false, false, true, &[("w1", Down), ("w2", Down), ("w3", Down)]);
    for t in [10.0, 20.0] {
        h.round(t, false, false, true, &[]);
    }
    assert_eq!(h.det.state(), Some(State::Suspect));
    h.round(30.0, false, false, true, &[]);
    assert_eq!(h.det.state(), Some(State::Isolated));
}

#[test]
fn reports_from_unknown_witnesses_are_ignored_loudly() {
    let mut h = Harness::new(cfg());
    let out =
        h.feed(0.0, Input::Observed(Observation::Witness { id: "w9".into(), verdict: WitnessVerdict::Down }));
    assert!(out.iter().any(|e| e.contains("\"w9\", which is not in detector.witnesses")), "{out:?}");
}

#[test]
fn time_never_runs_backwards_inside() {
    let mut h = Harness::new(cfg());
    h.rounds(0.0, 100.0, false, false, true);
    // An input stamped earlier than the last one is taken as happening at the last instant.
    h.feed(50.0, Input::Observed(Observation::Api { ok: false }));
    let mut log = h.rounds(110.0, 300.0, false, false, true);
    log.extend(h.ticks_until(300.0));
    assert_eq!(has(&log, "promote 1"), vec![300.0], "{log:?}");
}

#[test]
fn primary_reachable_after_promotion_alerts_once_per_return() {
    let mut h = Harness::new(cfg());
    h.rounds(0.0, 290.0, false, false, true);
    h.ticks_until(300.0);
    h.complete(300.0, Outcome::Ok);
    let mut log = h.rounds(310.0, 400.0, true, true, true);
    log.extend(h.rounds(410.0, 500.0, false, false, true));
    log.extend(h.rounds(510.0, 600.0, false, true, true));
    assert_eq!(has(&log, "primary reachable after promotion"), vec![310.0, 510.0], "{log:?}");
    assert!(has(&log, "promote").is_empty());
}

#[test]
fn results_for_the_wrong_epoch_are_ignored() {
    let mut h = Harness::new(DetectorConfig { fencing: Fencing::Required, ..cfg() });
    let out = h.feed(0.0, Input::FenceDone { epoch: 7, outcome: Outcome::Ok });
    assert!(out.iter().any(|e| e.contains("ignored a fence result for epoch 7")), "{out:?}");
    let out = h.feed(0.0, Input::PromoteDone { epoch: 7, outcome: Outcome::Ok });
    assert!(out.iter().any(|e| e.contains("ignored a promote result")), "{out:?}");
    let out = h.feed(0.0, Input::Rearm);
    assert!(out.iter().any(|e| e.contains("not latched")), "{out:?}");
}

#[test]
fn self_probe_not_required_relies_on_witnesses() {
    let c = DetectorConfig { require_self_probe: false, ..cfg() };
    let mut h = Harness::new(c);
    let log: Vec<_> = (0..=30)
        .flat_map(|i| {
            let t = i as f64 * 10.0;
            let mut l = h.ticks_until(t);
            let out = h
                .feed(t, Input::Round(vec![Observation::Api { ok: false }, Observation::Host { ok: false }]));
            l.extend(out.into_iter().map(|e| (t, e)));
            l
        })
        .collect();
    assert_eq!(has(&log, "promote 1"), vec![300.0], "{log:?}");
}

#[test]
fn a_wall_clock_step_changes_nothing() {
    // The monitor reads both clocks from one Clock; only the monotonic one reaches the detector.
    use crate::clock::ManualClock;
    let run = |step_wall_clock: bool| {
        let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH, SystemClock.instant());
        let (mut det, _) =
            FailoverDetector::start(cfg(), Box::new(SeedRulePolicy), None, clock.instant()).unwrap();
        let mut promoted_at = None;
        for i in 0..60 {
            if i == 15 && step_wall_clock {
                clock.set_utc(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(3650)); // NTP jump
            }
            let round = vec![
                Observation::Api { ok: false },
                Observation::Host { ok: false },
                Observation::SelfCheck { ok: true },
            ];
            for a in det.handle(Input::Round(round), clock.instant()) {
                if let Action::Persist(p) = a
                    && p.has_commands()
                {
                    promoted_at.get_or_insert(i);
                }
            }
            clock.advance(Duration::from_secs(10));
        }
        promoted_at
    };
    assert_eq!(run(false), Some(30));
    assert_eq!(run(true), Some(30));
}

/// The state the harness's store last saved.
fn saved(h: &Harness) -> PersistedState {
    h.store.load().unwrap().unwrap_or_default()
}

#[test]
fn a_rebuilt_standby_seeing_a_claim_decides_the_next_epoch_not_a_claimed_one() {
    // A fresh state dir (a rebuilt standby): epoch 0 locally, epoch 1 already claimed in the store.
    let mut h = Harness::new(cfg());
    assert_eq!(h.det.persisted().epoch, 0);
    let out = h.feed(0.0, Input::ClaimSeen { epoch: 1 });
    assert_eq!(saved(&h).epoch, 1, "raised and persisted at once: {out:?}");
    assert!(h.pending.is_empty());
    let mut log = h.rounds(0.0, 290.0, false, false, true);
    log.extend(h.ticks_until(300.0));
    assert_eq!(has(&log, "promote 2"), vec![300.0], "newest claim + 1: {log:?}");
    assert!(has(&log, "promote 1").is_empty(), "{log:?}");
    assert_eq!(h.det.persisted().latch, Latch::InProgress { epoch: 2, phase: Phase::Promote });
}

#[test]
fn claim_seen_never_lowers_the_epoch_and_survives_a_restart() {
    let mut h = Harness::new(cfg());
    h.feed(0.0, Input::ClaimSeen { epoch: 5 });
    assert_eq!(saved(&h).epoch, 5);
    // An older or equal claim changes nothing and persists nothing.
    let before = h.det.persisted().clone();
    let actions = h.det.handle(Input::ClaimSeen { epoch: 3 }, h.at(1.0));
    assert!(!actions.iter().any(|a| matches!(a, Action::Persist(_))), "{actions:?}");
    assert_eq!(h.det.persisted(), &before);
    h.feed(2.0, Input::ClaimSeen { epoch: 5 });
    assert_eq!(saved(&h).epoch, 5);
    assert_eq!(h.det.persisted().latch, Latch::Armed, "the latch is untouched");
    // Persisted: a restarted detector starts from it even without a new claim read.
    h.restart(10.0);
    assert_eq!(h.det.persisted().epoch, 5);
    let mut log = h.rounds(20.0, 310.0, false, false, true);
    log.extend(h.ticks_until(320.0));
    assert_eq!(has(&log, "promote 6"), vec![320.0], "{log:?}");
}

#[test]
fn claim_seen_is_persisted_before_the_decision_it_feeds() {
    // The claim arrives in the same instant the evidence reaches dead_after: the state saved with
    // the promote command already carries the raised epoch.
    let mut h = Harness::new(cfg());
    h.rounds(0.0, 290.0, false, false, true);
    let now = h.at(300.0);
    let actions = h.det.handle(Input::ClaimSeen { epoch: 7 }, now);
    let persisted: Vec<(u64, bool)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some((p.state().epoch, p.has_commands())),
            _ => None,
        })
        .collect();
    assert_eq!(persisted, [(7, false), (8, true)], "the raise is saved first, then the decision");
    let log = h.apply(actions, now);
    assert!(log.contains(&"promote 8".to_owned()), "{log:?}");
}
