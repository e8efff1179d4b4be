//! The failover decision: [`FailoverDetector`], a pure state machine, and [`DetectorPolicy`].
//!
//! The detector has no clock, no network and no files (quinn-proto's rule): the monitor feeds it
//! [`Input`]s with the monotonic instant they happened at, and turns the [`Action`]s it returns
//! into I/O. [`FailoverDetector::poll_timeout`] says when to call it again if nothing else
//! happens. The same core runs live in the monitor and offline in [`trace::replay`].
//!
//! # Invariants (design doc `failover-detector.md`), enforced here whatever the policy
//! 1. No promotion before `dead_after` of continuous evidence: readings older than two
//!    intervals are unknown, and anything but a dead verdict (one "up", a stale reading, a gap)
//!    restarts the window.
//! 2. One promotion, then latched until an operator re-arms ([`Input::Rearm`]); after a re-arm
//!    no automatic promotion for `block_period_s`.
//! 3. Persist before act: see below. A restart found mid-promotion halts, it never promotes
//!    again on its own; suspicion starts from zero after every start.
//! 4. Self-isolated (own gateway/DNS fails, or a majority of witnesses unreachable): no action.
//! 5. With witnesses: the quorum must report "down" and none "up".
//! 6. Paused: observe, alert "would fail over", never act; pause is persisted.
//! 7. With fencing: fence first; promote only after the fence succeeded.
//! 8. Only monotonic [`Instant`]s come in; there is no wall clock to step.
//!
//! # The epoch follows the store's claims
//! The persisted epoch is only this standby's view. A standby rebuilt with an empty state dir
//! starts at 0, while the store may already hold claims (an earlier failover claimed epoch 1).
//! The monitor reads the newest claim (`ClaimStore::newest`) at start-up and periodically, and
//! feeds it as [`Input::ClaimSeen`]; the detector raises its epoch to `max(local, newest)` and
//! persists that before anything else, so its next decision is `newest + 1`.
//!
//! # Persist before act, enforced by the types
//! The detector never hands out a fence or promote [`Command`] directly. It returns
//! [`Action::Persist`] holding the new [`PersistedState`] and the commands that depend on it;
//! the only way to get the commands out is [`Persist::commit`], which saves the state to a
//! [`StateStore`] first and yields them only if the save succeeded. [`Command`] cannot be built
//! outside this module. The driver's loop is:
//!
//! ```
//! use kdr_core::failover::*;
//! # fn main() -> kdr_core::Result<()> {
//! # let now = kdr_core::clock::Clock::instant(&kdr_core::clock::SystemClock);
//! let mut store = InMemoryStateStore::default(); // FileStateStore in the monitor
//! let (mut detector, actions) =
//!     FailoverDetector::start(DetectorConfig::default(), Box::new(SeedRulePolicy), store.load()?, now)?;
//! let mut queue: std::collections::VecDeque<Action> = actions.into();
//! queue.extend(detector.handle(Input::Observed(Observation::Api { ok: true }), now));
//! while let Some(action) = queue.pop_front() {
//!     match action {
//!         Action::State(state) => println!("state {state}"),
//!         Action::Alert(reason) => println!("alert: {reason}"),
//!         Action::Persist(p) => match p.commit(&mut store) {
//!             Ok(commands) => {
//!                 for command in commands {
//!                     // run the fencer / promotion runbook, then report the outcome:
//!                     let input = match command.kind() {
//!                         CommandKind::Fence => Input::FenceDone { epoch: command.epoch(), outcome: Outcome::Ok },
//!                         CommandKind::Promote => Input::PromoteDone { epoch: command.epoch(), outcome: Outcome::Ok },
//!                     };
//!                     queue.extend(detector.handle(input, now));
//!                 }
//!             }
//!             Err(e) => queue.extend(detector.handle(Input::PersistFailed { reason: e.to_string() }, now)),
//!         },
//!     }
//! }
//! # Ok(()) }
//! ```
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod config;
pub mod policy;
pub mod state;
pub mod trace;

pub use config::{DetectorConfig, Fencing, WitnessQuorum};
pub use policy::{DetectorPolicy, SeedRulePolicy, Verdict, View, WitnessReport};
pub use state::{FileStateStore, InMemoryStateStore, Latch, PersistedState, Phase, StateStore};

/// A staleness-adjusted reading of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The probe succeeded.
    Up,
    /// The probe failed (or timed out).
    Down,
    /// No reading younger than two intervals.
    Unknown,
}

/// A witness's verdict on the primary, as its probe reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WitnessVerdict {
    /// The witness reaches the primary.
    Up,
    /// The witness does not reach the primary.
    Down,
    /// The witness could not be asked, or could not tell.
    Unknown,
}

/// One probe result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The primary's API server answered `/healthz` (or not).
    Api {
        /// Whether it answered healthy within the probe timeout.
        ok: bool,
    },
    /// The primary machine answered ping/TCP (or not).
    Host {
        /// Whether it answered within the probe timeout.
        ok: bool,
    },
    /// The standby sees its own gateway or DNS (or not).
    SelfCheck {
        /// Whether the self probe succeeded.
        ok: bool,
    },
    /// A witness reported.
    Witness {
        /// The witness id from the configuration.
        id: String,
        /// Its verdict.
        verdict: WitnessVerdict,
    },
}

/// The result of a fence or promote command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed; the text says how.
    Failed(String),
}

/// Something that happened, fed to [`FailoverDetector::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A probe result.
    Observed(Observation),
    /// Several probe results taken at the same instant (one probe round), evaluated together so
    /// that "API down" does not show as a transient state before "host down" arrives.
    Round(Vec<Observation>),
    /// An operator paused automatic failover.
    Pause,
    /// An operator resumed automatic failover (evidence collection starts from zero).
    Resume,
    /// An operator re-armed a latched detector (the block period starts).
    Rearm,
    /// The fence command of `epoch` finished.
    FenceDone {
        /// The epoch the command carried.
        epoch: u64,
        /// How it went.
        outcome: Outcome,
    },
    /// The promote command of `epoch` finished.
    PromoteDone {
        /// The epoch the command carried.
        epoch: u64,
        /// How it went.
        outcome: Outcome,
    },
    /// [`Persist::commit`] failed: the detector must not act on what it could not persist.
    PersistFailed {
        /// The error, for the alert.
        reason: String,
    },
    /// The newest epoch claimed in the object store (`ClaimStore::newest`), by anyone. The
    /// persisted epoch becomes `max(local, epoch)` (persisted before anything else happens), so
    /// the next failover decision is `epoch + 1` and never an epoch another standby already
    /// claimed (a rebuilt standby starts from epoch 0). Never lowers the epoch, never changes the
    /// latch. The monitor feeds it at start-up, before the first probe round, and after each
    /// periodic read of the claims.
    ClaimSeen {
        /// The newest claimed epoch (0: no claim yet).
        epoch: u64,
    },
    /// Nothing happened; time passed (the driver calls this at [`FailoverDetector::poll_timeout`]).
    Tick,
}

/// What the detector reports about the primary and itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Just started: not every probe has reported yet.
    Warmup,
    /// The primary is alive.
    Healthy,
    /// The policy says degraded (e.g. API server down, machine up): no failover.
    Degraded,
    /// Not enough fresh readings to tell.
    Unknown,
    /// The primary looks dead; evidence is accumulating toward `dead_after`.
    Suspect,
    /// The local probes say dead but a witness still reaches the primary.
    Vetoed,
    /// The local probes say dead but too few witnesses confirm it.
    Unconfirmed,
    /// The standby cannot see its own network (self probe or a majority of witnesses).
    Isolated,
    /// Promoted; latched until re-armed.
    Promoted,
    /// A failover started and did not complete; latched until re-armed.
    Halted,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s =
            serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}

/// Which command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// Make sure the old primary cannot serve any more.
    Fence,
    /// Promote the standby.
    Promote,
}

/// A fence or promote order. Only [`Persist::commit`] hands these out, after the state that
/// records them is durable; no other code can construct one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    kind: CommandKind,
    epoch: u64,
}

impl Command {
    /// Fence or promote.
    pub fn kind(&self) -> CommandKind {
        self.kind
    }
    /// The failover's epoch: pass it to the fencer/promoter as a fencing token, and back in
    /// [`Input::FenceDone`]/[`Input::PromoteDone`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// A state change that must be durable before anything else happens, and the commands that may
/// run only once it is. Dropping it without committing leaves the detector waiting.
#[derive(Debug)]
#[must_use = "commit it to a StateStore, then run the commands it returns"]
pub struct Persist {
    state: PersistedState,
    commands: Vec<Command>,
}

impl Persist {
    /// The state to save.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// Whether committing yields commands (a fence or a promote).
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Saves the state, then returns the commands to run, in order. If the save fails, the
    /// commands are dropped: report the error with [`Input::PersistFailed`].
    pub fn commit(self, store: &mut dyn StateStore) -> Result<Vec<Command>> {
        store.save(&self.state)?;
        Ok(self.commands)
    }
}

/// What the detector asks the driver to do.
#[derive(Debug)]
pub enum Action {
    /// The reported state changed (log it; a status endpoint shows it).
    State(State),
    /// Tell a human.
    Alert(String),
    /// Save state, then run the returned commands (see [`Persist`]).
    Persist(Persist),
}

/// Why the detector did not act on evidence that was long enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    Policy,
    Paused,
    Blocked,
}

#[derive(Clone, Copy, Debug)]
struct Stamped<T> {
    value: T,
    at: Instant,
}

/// The failover state machine. See the module documentation.
#[derive(Debug)]
pub struct FailoverDetector {
    config: DetectorConfig,
    stale_after: Duration,
    dead_after: Duration,
    policy: Box<dyn DetectorPolicy>,
    persisted: PersistedState,
    started: Instant,
    last_now: Instant,
    api: Option<Stamped<bool>>,
    host: Option<Stamped<bool>>,
    self_check: Option<Stamped<bool>>,
    witnesses: Vec<(String, Option<Stamped<WitnessVerdict>>)>,
    /// When the current window of continuous dead evidence began.
    evidence_since: Option<Instant>,
    /// Why a "would fail over" alert was sent for the current evidence window, if one was.
    hold_alerted: Option<Hold>,
    block_until: Option<Instant>,
    reported: Option<State>,
    /// Recent dead→alive transitions, for the flapping alert.
    flaps: VecDeque<Instant>,
    flap_alerted: bool,
    reachable_alerted: bool,
}

fn fresh<T: Copy>(r: &Option<Stamped<T>>, now: Instant, stale_after: Duration) -> Option<T> {
    r.as_ref().filter(|s| now.saturating_duration_since(s.at) <= stale_after).map(|s| s.value)
}

fn health(r: &Option<Stamped<bool>>, now: Instant, stale_after: Duration) -> Health {
    match fresh(r, now, stale_after) {
        Some(true) => Health::Up,
        Some(false) => Health::Down,
        None => Health::Unknown,
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s:.1} s") }
}

impl FailoverDetector {
    /// Starts a detector at `now` with the state loaded from a [`StateStore`] (`None`: first
    /// start, armed). Returns the actions of the start itself: a persisted promotion in progress
    /// is turned into [`Latch::Halted`] (persist + alert), a persisted pause is announced.
    pub fn start(
        config: DetectorConfig,
        policy: Box<dyn DetectorPolicy>,
        persisted: Option<PersistedState>,
        now: Instant,
    ) -> Result<(Self, Vec<Action>)> {
        config.validate()?;
        let mut persisted = persisted.unwrap_or_default();
        let mut actions = Vec::new();
        if let Latch::InProgress { epoch, phase } = persisted.latch {
            let reason = format!(
                "the monitor restarted during the {phase} step of failover epoch {epoch}; it does not \
                 resume on its own: check whether the old primary is fenced, then finish the promotion by \
                 hand (`kdr failover --config FILE` resumes its journal, skipping finished steps), then re-arm"
            );
            persisted.latch = Latch::Halted { epoch, reason: reason.clone() };
            actions.push(Action::Persist(Persist { state: persisted.clone(), commands: Vec::new() }));
            actions.push(Action::Alert(reason));
        }
        if persisted.paused {
            actions.push(Action::Alert(
                "detector starts paused (persisted): observing only, no automatic failover until resumed"
                    .into(),
            ));
        }
        let block_until = persisted.block_pending.then(|| now + config.block_period());
        let witnesses = config.witnesses.iter().map(|w| (w.clone(), None)).collect();
        let mut detector = Self {
            stale_after: config.stale_after(),
            dead_after: config.dead_after(),
            config,
            policy,
            persisted,
            started: now,
            last_now: now,
            api: None,
            host: None,
            self_check: None,
            witnesses,
            evidence_since: None,
            hold_alerted: None,
            block_until,
            reported: None,
            flaps: VecDeque::new(),
            flap_alerted: false,
            reachable_alerted: false,
        };
        detector.evaluate(now, &mut actions);
        Ok((detector, actions))
    }

    /// The configuration in force.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The state as last persisted (or being persisted).
    pub fn persisted(&self) -> &PersistedState {
        &self.persisted
    }

    /// The state last reported with [`Action::State`].
    pub fn state(&self) -> Option<State> {
        self.reported
    }

    /// Feeds one input that happened at `now` and returns what to do, in order.
    ///
    /// `now` must come from a monotonic clock; an instant earlier than a previous one is treated
    /// as the previous one (time never runs backwards in here).
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let now = now.max(self.last_now);
        self.last_now = now;
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Observed(obs) => self.observe(obs, now, &mut out),
            Input::Round(observations) => {
                for obs in observations {
                    self.observe(obs, now, &mut out);
                }
            }
            Input::Pause => {
                if !self.persisted.paused {
                    self.persisted.paused = true;
                    self.persist(&mut out, Vec::new());
                    out.push(Action::Alert(
                        "detector paused: observing only, no automatic failover until resumed".into(),
                    ));
                }
            }
            Input::Resume => {
                if self.persisted.paused {
                    self.persisted.paused = false;
                    self.persist(&mut out, Vec::new());
                    self.reset_evidence();
                    out.push(Action::Alert(format!(
                        "detector resumed: automatic failover needs {} of fresh evidence from now",
                        secs(self.dead_after)
                    )));
                }
            }
            Input::Rearm => self.rearm(now, &mut out),
            Input::ClaimSeen { epoch } => {
                if epoch > self.persisted.epoch {
                    self.persisted.epoch = epoch;
                    self.persist(&mut out, Vec::new());
                }
            }
            Input::FenceDone { epoch, outcome } => self.fence_done(epoch, outcome, &mut out),
            Input::PromoteDone { epoch, outcome } => self.promote_done(epoch, outcome, &mut out),
            Input::PersistFailed { reason } => {
                let mut msg = format!("could not persist the detector state: {reason}");
                if let Latch::InProgress { epoch, phase } = self.persisted.latch {
                    msg.push_str(&format!("; failover epoch {epoch} stops before its {phase} step"));
                    self.persisted.latch = Latch::Halted { epoch, reason: msg.clone() };
                    self.set_state(State::Halted, &mut out);
                }
                out.push(Action::Alert(msg));
            }
        }
        self.evaluate(now, &mut out);
        out
    }

    /// When to call [`handle`](Self::handle) with [`Input::Tick`] if no other input comes:
    /// when a reading goes stale, the warm-up ends, the evidence reaches `dead_after` or the
    /// block period ends. `None` while a command's result is awaited or nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.persisted.latch, Latch::InProgress { .. }) {
            return None;
        }
        // A reading is fresh while its age is <= stale_after: it changes one tick later.
        let stale = |at: Instant| at + self.stale_after + Duration::from_nanos(1);
        let mut candidates = Vec::new();
        candidates.push(stale(self.started));
        candidates.extend(self.api.iter().chain(&self.host).chain(&self.self_check).map(|s| stale(s.at)));
        candidates.extend(self.witnesses.iter().filter_map(|(_, w)| w.map(|s| stale(s.at))));
        if let Some(since) = self.evidence_since {
            candidates.push(since + self.dead_after);
        }
        if self.persisted.block_pending {
            candidates.extend(self.block_until);
        }
        candidates.into_iter().filter(|&t| t > self.last_now).min()
    }

    fn observe(&mut self, obs: Observation, now: Instant, out: &mut Vec<Action>) {
        let stamp = |value| Some(Stamped { value, at: now });
        match &obs {
            Observation::Api { ok } => self.api = stamp(*ok),
            Observation::Host { ok } => self.host = stamp(*ok),
            Observation::SelfCheck { ok } => self.self_check = stamp(*ok),
            Observation::Witness { id, verdict } => match self.witnesses.iter_mut().find(|(w, _)| w == id) {
                Some((_, slot)) => *slot = Some(Stamped { value: *verdict, at: now }),
                None => {
                    out.push(Action::Alert(format!(
                        "ignored a report from witness {id:?}, which is not in detector.witnesses"
                    )));
                    return;
                }
            },
        }
        let reports = self.witness_reports(now);
        let view = self.view(now, &reports);
        self.policy.observe(&obs, &view);
    }

    fn witness_reports(&self, now: Instant) -> Vec<WitnessReport> {
        self.witnesses
            .iter()
            .map(|(id, w)| WitnessReport {
                id: id.clone(),
                verdict: fresh(w, now, self.stale_after).unwrap_or(WitnessVerdict::Unknown),
            })
            .collect()
    }

    fn view<'a>(&self, now: Instant, reports: &'a [WitnessReport]) -> View<'a> {
        View {
            now,
            api: health(&self.api, now, self.stale_after),
            host: health(&self.host, now, self.stale_after),
            witnesses: reports,
            witness_quorum: self.config.quorum_needed(),
        }
    }

    fn persist(&self, out: &mut Vec<Action>, commands: Vec<Command>) {
        out.push(Action::Persist(Persist { state: self.persisted.clone(), commands }));
    }

    fn set_state(&mut self, state: State, out: &mut Vec<Action>) {
        if self.reported != Some(state) {
            self.reported = Some(state);
            out.push(Action::State(state));
        }
    }

    fn reset_evidence(&mut self) {
        self.evidence_since = None;
        self.hold_alerted = None;
    }

    fn rearm(&mut self, now: Instant, out: &mut Vec<Action>) {
        match &self.persisted.latch {
            Latch::Armed => out.push(Action::Alert("re-arm ignored: the detector is not latched".into())),
            Latch::InProgress { epoch, phase } => out.push(Action::Alert(format!(
                "re-arm refused: failover epoch {epoch} is in its {phase} step; wait for it to finish"
            ))),
            Latch::Promoted { .. } | Latch::Halted { .. } => {
                self.persisted.latch = Latch::Armed;
                self.persisted.block_pending = true;
                self.block_until = Some(now + self.config.block_period());
                self.persist(out, Vec::new());
                self.reset_evidence();
                self.flaps.clear();
                out.push(Action::Alert(format!(
                    "re-armed by an operator: no automatic failover for the block period ({})",
                    secs(self.config.block_period())
                )));
            }
        }
    }

    fn fence_done(&mut self, epoch: u64, outcome: Outcome, out: &mut Vec<Action>) {
        if self.persisted.latch != (Latch::InProgress { epoch, phase: Phase::Fence }) {
            out.push(Action::Alert(format!(
                "ignored a fence result for epoch {epoch}: no such fence in progress"
            )));
            return;
        }
        match outcome {
            Outcome::Ok => {
                self.persisted.latch = Latch::InProgress { epoch, phase: Phase::Promote };
                self.persist(out, vec![Command { kind: CommandKind::Promote, epoch }]);
            }
            Outcome::Failed(why) => {
                let reason =
                    format!("fencing the old primary failed in epoch {epoch} ({why}); not promoting");
                self.halt(epoch, reason, out);
            }
        }
    }

    fn promote_done(&mut self, epoch: u64, outcome: Outcome, out: &mut Vec<Action>) {
        if self.persisted.latch != (Latch::InProgress { epoch, phase: Phase::Promote }) {
            out.push(Action::Alert(format!(
                "ignored a promote result for epoch {epoch}: no such promotion in progress"
            )));
            return;
        }
        match outcome {
            Outcome::Ok => {
                self.persisted.latch = Latch::Promoted { epoch };
                self.persist(out, Vec::new());
                self.reachable_alerted = false;
                self.set_state(State::Promoted, out);
            }
            Outcome::Failed(why) => {
                self.halt(epoch, format!("promoting the standby failed in epoch {epoch} ({why})"), out);
            }
        }
    }

    fn halt(&mut self, epoch: u64, reason: String, out: &mut Vec<Action>) {
        self.persisted.latch = Latch::Halted { epoch, reason: reason.clone() };
        self.persist(out, Vec::new());
        out.push(Action::Alert(format!("{reason}; the detector is halted until an operator re-arms it")));
        self.reachable_alerted = false;
        self.set_state(State::Halted, out);
    }

    /// Applies the invariants at `now` and decides.
    fn evaluate(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.persisted.block_pending && self.block_until.is_some_and(|b| now >= b) {
            self.persisted.block_pending = false;
            self.block_until = None;
            self.persist(out, Vec::new());
            out.push(Action::Alert("block period after re-arm is over: automatic failover is armed".into()));
        }
        let latched_state = match &self.persisted.latch {
            Latch::InProgress { .. } => return,
            Latch::Armed => None,
            Latch::Promoted { .. } => Some(State::Promoted),
            Latch::Halted { .. } => Some(State::Halted),
        };
        if let Some(state) = latched_state {
            self.reset_evidence();
            let api = health(&self.api, now, self.stale_after);
            let host = health(&self.host, now, self.stale_after);
            if api == Health::Up || host == Health::Up {
                if !self.reachable_alerted {
                    self.reachable_alerted = true;
                    let what = if state == State::Promoted { "promotion" } else { "the failed failover" };
                    out.push(Action::Alert(format!("primary reachable after {what}")));
                }
            } else if api == Health::Down && host == Health::Down {
                self.reachable_alerted = false;
            }
            self.set_state(state, out);
            return;
        }

        let reports = self.witness_reports(now);
        let view = self.view(now, &reports);
        let verdict = self.policy.verdict(&view);
        let state = self.assess(now, &view, &verdict);

        // Flapping: dead-looking → alive, repeatedly, within dead_after.
        let was_dead = matches!(self.reported, Some(State::Suspect | State::Vetoed | State::Unconfirmed));
        self.set_state(state, out);
        if was_dead && state == State::Healthy {
            self.flaps.push_back(now);
        }
        while self.flaps.front().is_some_and(|&t| now.saturating_duration_since(t) > self.dead_after) {
            self.flaps.pop_front();
        }
        let n = self.config.flap_alert_transitions as usize;
        if n > 0 && self.flaps.len() >= n && !self.flap_alerted {
            self.flap_alerted = true;
            out.push(Action::Alert(format!(
                "primary flapping: {} dead-to-alive transitions within {}; no failover on flapping",
                self.flaps.len(),
                secs(self.dead_after)
            )));
        } else if self.flaps.is_empty() {
            self.flap_alerted = false;
        }

        if state != State::Suspect {
            self.reset_evidence();
            return;
        }
        let since = *self.evidence_since.get_or_insert(now);
        let dead_for = now.saturating_duration_since(since);
        if dead_for < self.dead_after {
            return;
        }
        let hold = if let Verdict::DeadAlertOnly(reason) = &verdict {
            Some((Hold::Policy, format!("policy {} holds: {reason}", self.policy.name())))
        } else if self.persisted.paused {
            Some((Hold::Paused, "the detector is paused".to_owned()))
        } else if self.persisted.block_pending {
            let left = self.block_until.map(|b| b.saturating_duration_since(now)).unwrap_or_default();
            Some((Hold::Blocked, format!("the block period after re-arm has {} left", secs(left))))
        } else {
            None
        };
        if let Some((kind, why)) = hold {
            // One alert per reason per evidence window, not one per probe round.
            if self.hold_alerted != Some(kind) {
                self.hold_alerted = Some(kind);
                out.push(Action::Alert(format!(
                    "would fail over (primary dead for {}), but {why}",
                    secs(dead_for)
                )));
            }
            return;
        }
        // Decide. The latch and the epoch are persisted before any command can run.
        self.persisted.epoch += 1;
        let epoch = self.persisted.epoch;
        let (phase, kind) = match self.config.fencing {
            Fencing::Required => (Phase::Fence, CommandKind::Fence),
            Fencing::None => (Phase::Promote, CommandKind::Promote),
        };
        self.persisted.latch = Latch::InProgress { epoch, phase };
        self.reset_evidence();
        self.persist(out, vec![Command { kind, epoch }]);
    }

    fn assess(&self, now: Instant, view: &View<'_>, verdict: &Verdict) -> State {
        let in_warmup = now.saturating_duration_since(self.started) <= self.stale_after;
        let first_round_missing = self.api.is_none()
            || self.host.is_none()
            || (self.config.require_self_probe && self.self_check.is_none())
            || self.witnesses.iter().any(|(_, w)| w.is_none());
        if in_warmup && first_round_missing {
            return State::Warmup;
        }
        let self_ok = fresh(&self.self_check, now, self.stale_after);
        if self.config.require_self_probe && self_ok != Some(true) {
            return State::Isolated;
        }
        let n = view.witnesses.len();
        if n > 0 && n - view.witnesses_reporting(WitnessVerdict::Unknown) < n / 2 + 1 {
            return State::Isolated;
        }
        match verdict {
            Verdict::Alive => State::Healthy,
            Verdict::Degraded(_) => State::Degraded,
            Verdict::Unknown => State::Unknown,
            Verdict::Dead | Verdict::DeadAlertOnly(_) => {
                if view.witnesses_reporting(WitnessVerdict::Up) > 0 {
                    State::Vetoed
                } else if view.witnesses_reporting(WitnessVerdict::Down) < view.witness_quorum {
                    State::Unconfirmed
                } else {
                    State::Suspect
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
