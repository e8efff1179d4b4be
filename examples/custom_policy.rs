//! Plugging a failover policy of your own into kdr's detector, and asking what it would have
//! done with a recorded trace.
//!
//! Two policies:
//! - `TwoWitnessRounds`: a witness counts as "down" only after two consecutive "down" reports
//!   (one flaky round from a worker is not enough);
//! - `ChangeFreeze`: during a change freeze, page instead of failing over.
//!
//! Neither can bypass the detector's invariants: they only return a verdict; continuous
//! evidence, quorum and veto, self-isolation, the latch, pause and persist-before-act stay in
//! the core.
//!
//! ```text
//! cargo run --example custom_policy                  # a built-in trace
//! cargo run --example custom_policy -- FILE.jsonl    # a recording of yours
//! ```
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kdr::failover::trace::{ReplaySummary, Trace, replay};
use kdr::failover::{DetectorPolicy, Observation, SeedRulePolicy, Verdict, View, WitnessVerdict};

/// The seed's rule, but each witness must report "down" twice in a row to count.
#[derive(Debug, Default)]
struct TwoWitnessRounds {
    down_streak: HashMap<String, u32>,
}

impl DetectorPolicy for TwoWitnessRounds {
    fn name(&self) -> &str {
        "two-witness-rounds"
    }

    fn observe(&mut self, observation: &Observation, _view: &View<'_>) {
        if let Observation::Witness { id, verdict } = observation {
            let streak = self.down_streak.entry(id.clone()).or_default();
            *streak = if *verdict == WitnessVerdict::Down { *streak + 1 } else { 0 };
        }
    }

    fn verdict(&self, view: &View<'_>) -> Verdict {
        let base = SeedRulePolicy.verdict(view);
        if base != Verdict::Dead || view.witnesses.is_empty() {
            return base;
        }
        let confirmed = view
            .witnesses
            .iter()
            .filter(|w| w.verdict == WitnessVerdict::Down)
            .filter(|w| self.down_streak.get(&w.id).copied().unwrap_or(0) >= 2)
            .count();
        // Not yet confirmed is "unknown", which restarts the detector's evidence window.
        if confirmed >= view.witness_quorum { Verdict::Dead } else { Verdict::Unknown }
    }
}

/// Wraps a policy: while the freeze flag is set (by your change-management hook), a dead
/// primary pages instead of failing over.
#[derive(Debug)]
struct ChangeFreeze {
    frozen: Arc<AtomicBool>,
    inner: Box<dyn DetectorPolicy>,
}

impl DetectorPolicy for ChangeFreeze {
    fn name(&self) -> &str {
        "change-freeze"
    }

    fn observe(&mut self, observation: &Observation, view: &View<'_>) {
        self.inner.observe(observation, view);
    }

    fn verdict(&self, view: &View<'_>) -> Verdict {
        match self.inner.verdict(view) {
            Verdict::Dead if self.frozen.load(Ordering::Relaxed) => Verdict::DeadAlertOnly(
                "change freeze in effect: page the on-call instead of failing over".into(),
            ),
            v => v,
        }
    }
}

/// The primary dies at t = 100 (API server, machine and every witness agree); a fencer works.
fn built_in_trace() -> String {
    let mut lines = vec![
        r#"{"config": {"interval_s": 10, "dead_after_s": 300, "witnesses": ["w1", "w2", "w3"], "witness_quorum": "majority", "fencing": "ok"}}"#.to_owned(),
    ];
    for i in 0..=60 {
        let t = f64::from(i) * 10.0;
        let dead = t >= 100.0;
        lines.push(format!(r#"{{"t": {t:.1}, "probe": "api", "ok": {}}}"#, !dead));
        lines.push(format!(r#"{{"t": {t:.1}, "probe": "host", "ok": {}}}"#, !dead));
        lines.push(format!(r#"{{"t": {:.1}, "probe": "self", "ok": true}}"#, t + 0.1));
        for w in ["w1", "w2", "w3"] {
            let v = if dead { "down" } else { "up" };
            lines.push(format!(
                r#"{{"t": {:.1}, "probe": "witness", "id": "{w}", "verdict": "{v}"}}"#,
                t + 0.2
            ));
        }
    }
    lines.join("\n")
}

/// Builds a fresh policy (at the start, and after each restart in the trace).
type PolicyFactory = dyn FnMut() -> Box<dyn DetectorPolicy>;

fn main() -> kdr::Result<()> {
    let (name, text) = match std::env::args().nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| kdr::Error::io(format!("failed to read {path}"), e))?;
            (path, text)
        }
        None => ("built-in trace".to_owned(), built_in_trace()),
    };
    let trace = Trace::parse(&text, &name)?;

    let frozen = Arc::new(AtomicBool::new(true));
    let runs: Vec<(&str, Box<PolicyFactory>)> = vec![
        ("seed rule (default)", Box::new(|| Box::new(SeedRulePolicy))),
        ("two witness rounds", Box::new(|| Box::new(TwoWitnessRounds::default()))),
        (
            "change freeze",
            Box::new(move || {
                Box::new(ChangeFreeze { frozen: frozen.clone(), inner: Box::new(SeedRulePolicy) })
            }),
        ),
    ];
    for (label, mut new_policy) in runs {
        let lines = replay(&trace, &mut *new_policy)?;
        let summary = ReplaySummary::of(&lines);
        println!("== {label}: promotions at {:?}, {} alert(s)", summary.promotions, summary.alerts);
        for line in lines {
            println!("{}", line.to_json_line());
        }
    }
    Ok(())
}
