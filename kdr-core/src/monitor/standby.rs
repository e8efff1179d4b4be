//! The standby role: probe rounds on a jittered interval, never overlapping; the
//! [`FailoverDetector`] fed with their results, operators' control requests and ticks; its
//! actions executed persist-before-act; and the promotion run once per epoch.
//!
//! The detector hands out fence and promote commands only through
//! [`Persist::commit`](crate::failover::Persist::commit), after its state file was written,
//! fsynced and renamed, so a crash after the decision finds "promotion in progress" and halts
//! instead of promoting twice. The promotion itself is a [`Promoter`]; the default,
//! [`RunbookPromoter`], runs the same [`Runbook`](crate::runbook::Runbook) as `kdr failover`
//! in-process (one journal, one claim, one fence: its journal and epoch claim refuse a second run
//! of the same epoch). [`ExecPromoter`] runs a configured command instead (deprecated).
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::control;
use super::metrics::{OutcomeLabel, ProbeLabels, VerdictLabel};
use super::{DetectorStatus, Shared, stopped};
use crate::command::run_argv;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::failover::trace::{TraceConfig, TraceEvent, TraceFencing, TraceRecorder};
use crate::failover::{
    Action, CommandKind, DetectorConfig, FailoverDetector, Fencing, FileStateStore, Input, Latch,
    Observation, Outcome, SeedRulePolicy, State, StateStore, WitnessVerdict,
};
use crate::fence::{ExecFencer, FenceTarget, Fencer};
use crate::health::{
    ApiServerProbe, HealthProbe, IcmpProbe, ProbeResult, ProbeRole, ProbeStatus, SelfProbe, TcpProbe,
    WitnessProbe, probe_bounded,
};
use crate::remote::{NodeRemote, SshNodeRemote};

/// Promotes this standby for an epoch.
///
/// Guarantees: `promote` returns `Ok` only when the promotion completed; it refuses (or
/// resumes without repeating destructive steps) a second call for the same epoch, as the
/// runbook's journal and epoch claim do.
#[async_trait]
pub trait Promoter: Send + Sync + fmt::Debug {
    /// Runs the promotion of `epoch`; returns a one-line summary.
    async fn promote(&self, epoch: u64) -> Result<String>;
}

/// Runs a command (argv, no shell) with `KDR_EPOCH` set and `{epoch}` replaced in its arguments,
/// e.g. `kdr failover --config FILE --epoch {epoch}`.
#[derive(Clone, Debug)]
pub struct ExecPromoter {
    argv: Vec<String>,
    timeout: Duration,
}

impl ExecPromoter {
    /// A promoter running `argv` within `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        Self { argv, timeout }
    }
}

#[async_trait]
impl Promoter for ExecPromoter {
    async fn promote(&self, epoch: u64) -> Result<String> {
        let env = [("KDR_EPOCH".to_owned(), epoch.to_string())];
        let argv: Vec<String> = self.argv.iter().map(|a| a.replace("{epoch}", &epoch.to_string())).collect();
        let out = run_argv(&argv, &env, self.timeout, "monitor.standby.promote_command").await?;
        let last = out.stdout.lines().last().unwrap_or("").to_owned();
        Ok(format!(
            "{} exited 0{}",
            self.argv.join(" "),
            if last.is_empty() { String::new() } else { format!(": {last}") }
        ))
    }
}

/// Runs the [`Runbook`](crate::runbook::Runbook) in-process: the monitor's default promoter.
#[derive(Debug)]
pub struct RunbookPromoter(pub crate::runbook::Runbook);

#[async_trait]
impl Promoter for RunbookPromoter {
    async fn promote(&self, epoch: u64) -> Result<String> {
        let report = self.0.run(Some(epoch)).await?;
        if report.succeeded() {
            Ok(format!("epoch {epoch} promoted from set {}", report.snapshot))
        } else {
            Err(Error::refused(format!(
                "promotion of epoch {epoch} finished with failed workers: {}",
                report.failed_workers().join(", ")
            )))
        }
    }
}

/// The standby's loop. See the [module docs](self).
#[derive(Debug)]
pub struct Standby {
    shared: Arc<Shared>,
    detector: DetectorConfig,
    probes: Vec<(ProbeRole, Arc<dyn HealthProbe>)>,
    interval: Duration,
    jitter: f64,
    state_dir: PathBuf,
    state: FileStateStore,
    trace_path: Option<PathBuf>,
    fencer: Option<Arc<dyn Fencer>>,
    fence_target: FenceTarget,
    promoter: Arc<dyn Promoter>,
    grace: Duration,
    /// The longest a round may take: the longest probe timeout plus slack. A round that took
    /// longer was not observed in real time (the process was paused or starved) and is discarded.
    round_budget: Duration,
    /// How long a fence or a promotion may keep the loop busy (for `/healthz`).
    command_allowance: Duration,
    /// Where promotions claim their epoch: read at start-up and every [`CLAIMS_EVERY`] so that
    /// the detector's next epoch is past the newest claim (a rebuilt standby starts at 0).
    claims: Option<crate::runbook::ClaimStore>,
    /// This node (`[promotion] node_name`, `advertise_address`): a fence aimed at it is refused.
    this_node: crate::control_plane::NodeIdentity,
    /// A fence or promotion ran since the last round: the loop was busy on purpose, so the
    /// time since that round is not reported as an observation gap (the detector is latched
    /// or waiting for the command's result meanwhile, and still sees the readings go stale).
    ran_command: bool,
}

/// How often the standby reads the newest claim from the store.
pub const CLAIMS_EVERY: Duration = Duration::from_secs(30);

fn ip(key: &str, v: &str) -> Result<IpAddr> {
    v.parse().map_err(|e| Error::config(key, format!("{v:?} is not an IP address ({e})")))
}

impl Standby {
    /// Builds the probes, fencer and promoter of `config`.
    pub fn from_config(config: &Config, shared: Arc<Shared>) -> Result<Self> {
        let s = &config.monitor.standby;
        let t = config.detector.probe_timeout();
        let mut probes: Vec<(ProbeRole, Arc<dyn HealthProbe>)> = Vec::new();
        if let Some(url) = &s.api_url {
            let mut b = ApiServerProbe::builder(url.clone()).timeout(t);
            if let Some(ca) = &s.api_ca_file {
                b = b.ca_file(ca)?;
            }
            if let (Some(c), Some(k)) = (&s.api_client_cert, &s.api_client_key) {
                b = b.client_identity_files(c, k)?;
            }
            if s.api_insecure_skip_tls_verify {
                b = b.insecure_skip_tls_verify();
            }
            probes.push((ProbeRole::Api, Arc::new(b.build()?)));
        }
        if let Some(h) = &s.host_icmp {
            probes.push((ProbeRole::Host, Arc::new(IcmpProbe::new(ip("monitor.standby.host_icmp", h)?, t))));
        } else if let Some(h) = &s.host_tcp {
            probes.push((ProbeRole::Host, Arc::new(TcpProbe::new(h.clone(), t))));
        }
        if let Some(g) = &s.self_gateway {
            probes.push((
                ProbeRole::SelfCheck,
                Arc::new(SelfProbe::gateway(ip("monitor.standby.self_gateway", g)?, t)),
            ));
        } else if let Some(a) = &s.self_tcp {
            probes.push((ProbeRole::SelfCheck, Arc::new(SelfProbe::tcp(a.clone(), t))));
        } else if let Some(d) = &s.self_dns {
            probes.push((ProbeRole::SelfCheck, Arc::new(SelfProbe::dns(d.clone(), t))));
        }
        if let Some(url) = s.witness_url.as_ref().or(s.api_url.as_ref()) {
            for id in &config.detector.witnesses {
                let worker = config.workers.iter().find(|w| &w.name == id).ok_or_else(|| {
                    Error::config("detector.witnesses", format!("witness {id:?} is not a [[workers]] entry"))
                })?;
                let remote: Arc<dyn NodeRemote> =
                    Arc::new(SshNodeRemote::new(worker.ssh_target(&config.ssh))?);
                let probe = WitnessProbe::api_healthz(id.clone(), remote, url, &s.witness_ca_file, t);
                probes.push((ProbeRole::Witness(id.clone()), Arc::new(probe)));
            }
        }
        let fencer: Option<Arc<dyn Fencer>> = if config.detector.fencing == Fencing::Required {
            Some(Arc::new(ExecFencer::new(s.fence_command.clone(), Duration::from_secs(s.fence_timeout_s))?))
        } else {
            None
        };
        // The runbook's claim store is the one the detector reads the newest claim from.
        let mut claims = None;
        let promoter: Arc<dyn Promoter> = if s.promote_command.is_empty() {
            let runbook = crate::runbook::build_runbook(config, shared.clock.clone())?;
            claims = Some(runbook.claims().clone());
            Arc::new(RunbookPromoter(runbook))
        } else {
            tracing::warn!(
                command = %s.promote_command.join(" "),
                "monitor.standby.promote_command is deprecated: it runs a second process that re-reads the \
                 configuration; remove it to promote in-process through the runbook (kdr failover stays the \
                 operator's resume command)"
            );
            Arc::new(ExecPromoter::new(s.promote_command.clone(), Duration::from_secs(s.promote_timeout_s)))
        };
        let standby = Self::new(config, shared, probes, fencer, promoter)?;
        // With a deprecated promote_command, the claims are read from [store] if there is one.
        if claims.is_none() && config.store_url().is_ok() {
            claims = Some(crate::runbook::open_claim_store(config)?);
        }
        Ok(match claims {
            Some(c) => standby.with_claims(c),
            None => standby,
        })
    }

    /// Reads the newest claim from `claims` at start-up and every [`CLAIMS_EVERY`], and feeds it
    /// to the detector ([`Input::ClaimSeen`]): an epoch already claimed is never decided again.
    pub fn with_claims(mut self, claims: crate::runbook::ClaimStore) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Starts the task that reads the newest claimed epoch; the loop takes what it found
    /// without waiting (a slow store never holds up a probe round).
    fn watch_claims(&self, mut stop: watch::Receiver<bool>) -> Option<watch::Receiver<Option<u64>>> {
        let claims = self.claims.clone()?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match tokio::time::timeout(CLAIMS_EVERY, claims.newest()).await {
                    Ok(Ok(newest)) => {
                        warned = false;
                        let _ = tx.send(Some(newest.map_or(0, |c| c.epoch)));
                    }
                    Ok(Err(e)) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, "cannot read the newest claim; the runbook re-checks before claiming");
                    }
                    Ok(Err(_)) => {}
                    Err(_) if !warned => {
                        warned = true;
                        tracing::warn!(after = ?CLAIMS_EVERY, "reading the newest claim timed out; will retry");
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(CLAIMS_EVERY) => {}
                    () = stopped(&mut stop) => return,
                    () = tx.closed() => return,
                }
            }
        });
        Some(rx)
    }

    /// A standby with these parts (for embedders: probes of their own, a [`RunbookPromoter`], ...).
    pub fn new(
        config: &Config,
        shared: Arc<Shared>,
        probes: Vec<(ProbeRole, Arc<dyn HealthProbe>)>,
        fencer: Option<Arc<dyn Fencer>>,
        promoter: Arc<dyn Promoter>,
    ) -> Result<Self> {
        let interval = config.detector.interval();
        // Same check as ProbeSet: a probe that may outlast the interval would pile up.
        crate::health::ProbeSet::new(probes.clone(), interval)?;
        let m = &config.monitor;
        let longest = probes.iter().map(|(_, p)| p.timeout()).max().unwrap_or_default();
        let command_allowance = Duration::from_secs(m.standby.fence_timeout_s + m.standby.promote_timeout_s)
            + m.shutdown_grace()
            + interval * 3;
        Ok(Self {
            claims: None,
            ran_command: false,
            this_node: crate::control_plane::NodeIdentity {
                name: config.promotion.node_name.clone(),
                address: config.promotion.advertise_address.clone(),
            },
            round_budget: longest + (interval / 2).max(Duration::from_millis(500)),
            command_allowance,
            shared,
            detector: config.detector.clone(),
            probes,
            interval,
            jitter: m.standby.jitter,
            state_dir: m.state_dir.clone(),
            state: FileStateStore::new(m.state_file()),
            trace_path: m.record_trace.clone(),
            fencer,
            fence_target: FenceTarget {
                name: m.standby.primary_name.clone(),
                host: m.standby.primary_address.clone(),
                epoch: 0,
            },
            promoter,
            grace: m.shutdown_grace(),
        })
    }

    fn open_trace(&self, origin: Instant) -> Result<Option<TraceRecorder<BufWriter<File>>>> {
        let Some(path) = &self.trace_path else { return Ok(None) };
        // One recording per run: an earlier one is moved aside (kept), since a trace has exactly
        // one config line and its times start at zero.
        if path.metadata().is_ok_and(|m| m.len() > 0) {
            let stamp = self.shared.clock.utc().format("%Y%m%dT%H%M%SZ");
            let aside = PathBuf::from(format!("{}.{stamp}", path.display()));
            std::fs::rename(path, &aside).map_err(|e| {
                Error::io(format!("failed to move the previous trace {} aside", path.display()), e)
            })?;
        }
        let file = File::create(path).map_err(|e| {
            Error::io(format!("failed to create the trace {} (monitor.record_trace)", path.display()), e)
        })?;
        let fencing =
            if self.detector.fencing == Fencing::Required { TraceFencing::Ok } else { TraceFencing::None };
        let config = TraceConfig { detector: self.detector.clone(), fencing };
        Ok(Some(TraceRecorder::start(BufWriter::new(file), &config, origin)?))
    }

    /// Runs until `stop`. Fails at start on a corrupt state file.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let clock = self.shared.clock.clone();
        let origin = clock.instant();
        let mut trace = self.open_trace(origin)?;
        let persisted = self.state.load()?;
        let (mut det, actions) =
            FailoverDetector::start(self.detector.clone(), Box::new(SeedRulePolicy), persisted, origin)?;
        let mut suspect_since = None;
        if !self.drive(&mut det, actions, &mut stop, &mut suspect_since).await {
            return Ok(());
        }
        let mut last_round: Option<Instant> = None;
        let mut newest_claim = self.watch_claims(stop.clone());
        loop {
            let round_start = clock.instant();
            self.beat_probing();
            let seen = newest_claim
                .as_mut()
                .and_then(|rx| rx.has_changed().unwrap_or(false).then(|| *rx.borrow_and_update()).flatten());
            if let Some(epoch) = seen {
                let actions = det.handle(Input::ClaimSeen { epoch }, round_start);
                if !self.drive(&mut det, actions, &mut stop, &mut suspect_since).await {
                    return Ok(());
                }
            }
            // Time this process did not observe is never evidence: the detector sees `now` before
            // any new reading, so readings older than two intervals (a paused VM, a starved
            // process) go stale and the evidence window restarts.
            let actions = det.handle(Input::Tick, round_start);
            if !self.drive(&mut det, actions, &mut stop, &mut suspect_since).await {
                return Ok(());
            }
            if std::mem::take(&mut self.ran_command) {
                last_round = None;
            }
            if let Some(prev) = last_round {
                let gap = round_start.saturating_duration_since(prev);
                if gap > self.detector.stale_after() {
                    self.observation_gap(gap, "between two probe rounds");
                }
            }
            // Operators' requests first: a pause must take effect before this round's evidence.
            let (requests, bad) = control::take(&self.state_dir)?;
            for b in bad {
                self.shared.alert("control", b).await;
            }
            for (req, by) in requests {
                self.shared.decide("control", format!("{req:?} requested by {by}"));
                if let Some(t) = trace.as_mut() {
                    let ev = match req {
                        control::ControlRequest::Pause => TraceEvent::Pause,
                        control::ControlRequest::Resume => TraceEvent::Resume,
                        control::ControlRequest::Rearm => TraceEvent::Rearm,
                    };
                    record(t, clock.instant(), ev);
                }
                let actions = det.handle(req.input(), clock.instant());
                if !self.drive(&mut det, actions, &mut stop, &mut suspect_since).await {
                    return Ok(());
                }
            }
            let probes_start = clock.instant();
            let observations = self.round().await;
            let now = clock.instant();
            let took = now.saturating_duration_since(probes_start);
            let actions = if took > self.round_budget {
                // Every probe is cut off at its timeout, so a round this long was not observed
                // in real time: its readings cannot be dated, and are not applied.
                self.observation_gap(took, "during a probe round (its readings are discarded)");
                det.handle(Input::Tick, now)
            } else {
                if let Some(t) = trace.as_mut() {
                    for o in &observations {
                        record(t, now, TraceEvent::Observed(o.clone()));
                    }
                }
                last_round = Some(now);
                det.handle(Input::Round(observations), now)
            };
            if !self.drive(&mut det, actions, &mut stop, &mut suspect_since).await {
                return Ok(());
            }
            // Wait for the next round, waking for the detector's timeouts on the way.
            let factor = 1.0 + self.jitter * (2.0 * rand::random::<f64>() - 1.0);
            let next_round = round_start + self.interval.mul_f64(factor);
            loop {
                let deadline = det.poll_timeout().map_or(next_round, |t| t.min(next_round));
                let wait = deadline.saturating_duration_since(clock.instant());
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stopped(&mut stop) => {
                        if let Some(t) = trace.take() { let _ = t.finish(); }
                        return Ok(());
                    }
                }
                // Tick even when the next round is already due: a wake-up long after the deadline
                // is a gap, and the detector must see it before the next round's fresh readings.
                let now = clock.instant();
                let actions = det.handle(Input::Tick, now);
                if !self.drive(&mut det, actions, &mut stop, &mut suspect_since).await {
                    return Ok(());
                }
                if now >= next_round {
                    break;
                }
            }
        }
    }

    /// Logs and records an observation gap (the detector discards the evidence by itself).
    fn observation_gap(&self, gap: Duration, when: &str) {
        let msg = format!(
            "observation gap of {:.1} s {when}: the monitor was paused or starved; time it did not observe is \
             not evidence, so any suspicion starts again",
            gap.as_secs_f64()
        );
        tracing::warn!("{msg}");
        self.shared.decide("gap", msg);
    }

    fn beat_probing(&self) {
        let allowed = self.interval * 3 + self.round_budget;
        self.shared.beat("standby", allowed, format!("probing every {:?}", self.interval));
    }

    /// One round: every probe at once, each bounded by its timeout; records results and latency.
    async fn round(&self) -> Vec<Observation> {
        let clock = self.shared.clock.clone();
        let runs = self.probes.iter().map(|(role, p)| {
            let clock = clock.clone();
            async move {
                let t0 = clock.instant();
                let r = probe_bounded(role, p.as_ref()).await;
                (role.clone(), p.name().to_owned(), r, clock.instant().saturating_duration_since(t0))
            }
        });
        let results: Vec<(ProbeRole, String, ProbeResult, Duration)> = futures::future::join_all(runs).await;
        let m = &self.shared.metrics;
        let (mut local_dead, mut w_up, mut w_down, mut w_unknown) = (true, 0i64, 0i64, 0i64);
        let mut observations = Vec::new();
        for (role, name, result, took) in &results {
            let role_name = match role {
                ProbeRole::Api => "api",
                ProbeRole::Host => "host",
                ProbeRole::SelfCheck => "self",
                ProbeRole::Witness(_) => "witness",
            };
            let labels = ProbeLabels { role: role_name.into(), target: name.clone() };
            m.probe_up.get_or_create(&labels).set(match result.status {
                ProbeStatus::Up => 1,
                ProbeStatus::Down => 0,
                ProbeStatus::Unknown => -1,
            });
            m.probe_latency.get_or_create(&labels).set(took.as_secs_f64());
            tracing::debug!(probe = %name, status = ?result.status, detail = %result.detail, took_ms = took.as_millis() as u64, "probe");
            if matches!(role, ProbeRole::Api | ProbeRole::Host) && result.status != ProbeStatus::Down {
                local_dead = false;
            }
            if let Some(o) = role.observation(result) {
                if let Observation::Witness { verdict, .. } = &o {
                    match verdict {
                        WitnessVerdict::Up => w_up += 1,
                        WitnessVerdict::Down => w_down += 1,
                        WitnessVerdict::Unknown => w_unknown += 1,
                    }
                }
                observations.push(o);
            }
        }
        for (v, n) in [("up", w_up), ("down", w_down), ("unknown", w_unknown)] {
            m.witnesses.get_or_create(&VerdictLabel { verdict: v.into() }).set(n);
        }
        let total = w_up + w_down + w_unknown;
        let agree = if local_dead { w_down } else { w_up };
        m.witness_agreement.set(if total == 0 { 1.0 } else { agree as f64 / total as f64 });
        observations
    }

    /// Executes the detector's actions in order (persist before act). Returns false when a stop
    /// interrupted a command beyond the grace period (the loop then ends).
    async fn drive(
        &mut self,
        det: &mut FailoverDetector,
        actions: Vec<Action>,
        stop: &mut watch::Receiver<bool>,
        suspect_since: &mut Option<Instant>,
    ) -> bool {
        let clock = self.shared.clock.clone();
        let mut queue: VecDeque<Action> = actions.into();
        let mut finished = true;
        while let Some(action) = queue.pop_front() {
            match action {
                Action::State(state) => {
                    self.shared.metrics.set_state(state);
                    *suspect_since =
                        (state == State::Suspect).then(|| suspect_since.unwrap_or(clock.instant()));
                    self.shared.decide("state", state.to_string());
                    if state != State::Warmup {
                        self.shared
                            .alert("detector_state", format!("failover detector state: {state}"))
                            .await;
                    }
                }
                Action::Alert(reason) => self.shared.alert("detector", reason).await,
                Action::Persist(p) => match p.commit(&mut self.state) {
                    Ok(commands) => {
                        for command in commands {
                            self.ran_command = true;
                            let epoch = command.epoch();
                            self.shared.beat(
                                "standby",
                                self.command_allowance,
                                format!("running the {:?} step of epoch {epoch}", command.kind()),
                            );
                            let (kind, outcome) = match command.kind() {
                                CommandKind::Fence => ("fence", self.fence(epoch, stop).await),
                                CommandKind::Promote => ("promote", self.promote(epoch, stop).await),
                            };
                            let Some(outcome) = outcome else {
                                finished = false;
                                break;
                            };
                            let label = OutcomeLabel {
                                outcome: if outcome == Outcome::Ok { "ok" } else { "failed" }.into(),
                            };
                            let now = clock.instant();
                            let input = if kind == "fence" {
                                self.shared.metrics.fences.get_or_create(&label).inc();
                                Input::FenceDone { epoch, outcome }
                            } else {
                                self.shared.metrics.promotions.get_or_create(&label).inc();
                                self.shared.update(|s| s.promotion = Some((epoch, label.outcome.clone())));
                                Input::PromoteDone { epoch, outcome }
                            };
                            queue.extend(det.handle(input, now));
                        }
                    }
                    Err(e) => {
                        let now = clock.instant();
                        queue.extend(det.handle(Input::PersistFailed { reason: e.to_string() }, now));
                    }
                },
            }
            if !finished {
                break;
            }
        }
        self.beat_probing();
        self.publish(det, *suspect_since);
        finished
    }

    fn publish(&self, det: &FailoverDetector, suspect_since: Option<Instant>) {
        let p = det.persisted();
        let m = &self.shared.metrics;
        let suspicion = suspect_since
            .map_or(0.0, |t| self.shared.clock.instant().saturating_duration_since(t).as_secs_f64());
        m.suspicion_seconds.set(suspicion);
        m.paused.set(i64::from(p.paused));
        m.latched.set(i64::from(matches!(p.latch, Latch::Promoted { .. } | Latch::Halted { .. })));
        m.epoch.set(i64::try_from(p.epoch).unwrap_or(i64::MAX));
        let st = DetectorStatus {
            state: det.state(),
            epoch: p.epoch,
            latch: p.latch.clone(),
            paused: p.paused,
            suspicion_s: suspicion,
        };
        self.shared.update(|s| s.detector = Some(st));
    }

    /// Runs `fut`; if `stop` turns true meanwhile, gives it the grace period, then drops it.
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = T>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<T> {
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => Some(r),
            () = stopped(stop) => {
                tracing::warn!(grace = ?self.grace, "shutdown during the {what}: letting it finish within the grace period");
                tokio::time::timeout(self.grace, fut).await.ok()
            }
        }
    }

    async fn fence(&self, epoch: u64, stop: &mut watch::Receiver<bool>) -> Option<Outcome> {
        let Some(fencer) = self.fencer.clone() else {
            return Some(Outcome::Failed("no fencer configured".into()));
        };
        let target = FenceTarget { epoch, ..self.fence_target.clone() };
        // Never aimed at this node itself (a same-host rebuild, or a config naming this host).
        if let Err(e) = crate::fence::refuse_fencing_this_host(&target, &self.this_node).await {
            return Some(Outcome::Failed(e.to_string()));
        }
        self.shared.decide("fence", format!("fencing {} ({}) for epoch {epoch}", target.name, target.host));
        let r = self.bounded("fence", async { fencer.fence(&target).await }, stop).await?;
        Some(match r {
            Ok(report) => {
                self.shared.decide("fence", format!("epoch {epoch}: fenced ({})", report.actions.join("; ")));
                Outcome::Ok
            }
            Err(e) => Outcome::Failed(e.to_string()),
        })
    }

    async fn promote(&self, epoch: u64, stop: &mut watch::Receiver<bool>) -> Option<Outcome> {
        self.shared.alert("promotion", format!("promoting this standby: epoch {epoch}")).await;
        let promoter = self.promoter.clone();
        let r = self.bounded("promotion", async { promoter.promote(epoch).await }, stop).await?;
        Some(match r {
            Ok(summary) => {
                self.shared.alert("promotion", format!("epoch {epoch} promoted: {summary}")).await;
                Outcome::Ok
            }
            Err(e) => {
                self.shared.alert("promotion", format!("promotion of epoch {epoch} failed: {e}")).await;
                Outcome::Failed(e.to_string())
            }
        })
    }
}

fn record(t: &mut TraceRecorder<BufWriter<File>>, now: Instant, ev: TraceEvent) {
    if let Err(e) = t.record(now, ev) {
        tracing::warn!(error = %e, "could not record the observation");
    }
}

/// The detector state file of a monitor whose state dir is `state_dir`, for `kdr pause|resume|rearm`.
pub fn state_store(state_dir: &Path) -> FileStateStore {
    FileStateStore::new(state_dir.join("detector-state.json"))
}

#[cfg(test)]
mod tests {
    //! The live loop against fake probes and a clock that can jump (a paused process): time the
    //! loop did not observe is never evidence, and alerts never hold up detection.
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::clock::Clock;

    /// tokio's (paused) time plus a jump: `jump` moves the monotonic time the way a paused VM
    /// sees it on resume, without any timer firing in between.
    #[derive(Debug, Default)]
    struct JumpClock {
        jumped: Mutex<Duration>,
    }

    impl JumpClock {
        fn jump(&self, by: Duration) {
            *self.jumped.lock().unwrap() += by;
        }
    }

    impl Clock for JumpClock {
        fn utc(&self) -> DateTime<Utc> {
            DateTime::<Utc>::UNIX_EPOCH
                + chrono::Duration::from_std(self.instant().elapsed()).unwrap_or_default()
        }
        #[allow(clippy::disallowed_methods)] // the test's clock is tokio's paused time
        fn instant(&self) -> Instant {
            tokio::time::Instant::now().into_std() + *self.jumped.lock().unwrap()
        }
    }

    /// A pending stall: the clock to jump and by how much, taken by the next probe run.
    type Stall = Arc<Mutex<Option<(Arc<JumpClock>, Duration)>>>;

    /// A probe whose answer the test sets; it can also stall (to stand in for a round during
    /// which the process was paused: the clock jumps while it runs).
    #[derive(Debug)]
    struct Fake {
        name: String,
        up: Arc<AtomicBool>,
        stall: Stall,
    }

    #[async_trait]
    impl HealthProbe for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn timeout(&self) -> Duration {
            Duration::from_millis(500)
        }
        async fn probe(&self) -> ProbeResult {
            if let Some((clock, by)) = self.stall.lock().unwrap().take() {
                clock.jump(by);
            }
            if self.up.load(Ordering::SeqCst) { ProbeResult::up("up") } else { ProbeResult::down("down") }
        }
    }

    /// Records when it was asked to promote (the clock's instant).
    #[derive(Debug)]
    struct Recorder {
        clock: Arc<JumpClock>,
        at: Mutex<Vec<(u64, Instant)>>,
    }

    #[async_trait]
    impl Promoter for Recorder {
        async fn promote(&self, epoch: u64) -> Result<String> {
            self.at.lock().unwrap().push((epoch, self.clock.instant()));
            Ok("recorded".into())
        }
    }

    struct Rig {
        clock: Arc<JumpClock>,
        up: Arc<AtomicBool>,
        stall: Stall,
        promoter: Arc<Recorder>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<()>>,
        shared: Arc<Shared>,
        _dir: tempfile::TempDir,
    }

    /// A standby (interval 1 s, dead_after 5 s, no witnesses, no fence) running on paused time.
    fn rig(alerts: &str) -> Rig {
        rig_with(alerts, None)
    }

    fn rig_with(alerts: &str, claims: Option<crate::runbook::ClaimStore>) -> Rig {
        rig_full(alerts, claims, None)
    }

    /// Counts its calls.
    #[derive(Debug, Default)]
    struct CountingFencer(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Fencer for CountingFencer {
        fn plan(&self, t: &FenceTarget) -> Vec<String> {
            vec![format!("count {}", t.name)]
        }
        async fn fence(&self, t: &FenceTarget) -> Result<crate::fence::FenceReport> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(crate::fence::FenceReport {
                method: "count".into(),
                actions: vec![format!("counted {}", t.name)],
            })
        }
    }

    /// The counting fake as the fencer conformance suite sees it: fenced once it counted.
    struct Counted<'a>(&'a CountingFencer, FenceTarget);

    #[async_trait(?Send)]
    impl crate::testing::conformance::fencer::FenceWorld for Counted<'_> {
        fn target(&self) -> FenceTarget {
            self.1.clone()
        }
        async fn view(&self) -> crate::testing::conformance::NodeView {
            let calls = vec!["fence".to_owned(); self.0.0.load(Ordering::SeqCst)];
            crate::testing::conformance::NodeView { calls, ..Default::default() }
        }
        async fn fenced(&self) -> bool {
            self.0.0.load(Ordering::SeqCst) > 0
        }
    }

    #[tokio::test]
    async fn the_counting_fencer_passes_the_fencer_conformance_suite() {
        let f = CountingFencer::default();
        let t = FenceTarget { name: "master-1".into(), host: "10.9.9.1".into(), epoch: 2 };
        let this = crate::control_plane::NodeIdentity { name: "master-2".into(), address: "10.9.9.9".into() };
        crate::testing::conformance::fencer::run_all(&f, &Counted(&f, t), &this).await;
    }

    fn rig_full(
        alerts: &str,
        claims: Option<crate::runbook::ClaimStore>,
        fence: Option<(&str, Arc<CountingFencer>)>,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (fencing, standby_keys, promotion) = match &fence {
            Some((target, _)) => (
                "fencing = \"required\"\n",
                format!("primary_name = \"master-1\"\nprimary_address = \"{target}\"\n"),
                "[promotion]\nnode_name = \"master-2\"\nadvertise_address = \"10.9.9.9\"\n",
            ),
            None => ("", String::new(), ""),
        };
        let text = format!(
            "[detector]\ninterval_s = 1\ndead_after_s = 5\nrequire_self_probe = false\n{fencing}{promotion}\
             [monitor]\nroles = [\"standby\"]\nstate_dir = \"{}\"\n\
             [monitor.standby]\njitter = 0.0\n{standby_keys}{alerts}",
            dir.path().join("state").display()
        );
        let config = Config::from_toml(&text, "test").unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let clock = Arc::new(JumpClock::default());
        let shared = Arc::new(Shared::new(&config, clock.clone()).unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let stall = Arc::new(Mutex::new(None));
        let probe = |name: &str| -> Arc<dyn HealthProbe> {
            Arc::new(Fake { name: name.into(), up: up.clone(), stall: stall.clone() })
        };
        let probes = vec![(ProbeRole::Api, probe("api")), (ProbeRole::Host, probe("host"))];
        let promoter = Arc::new(Recorder { clock: clock.clone(), at: Mutex::new(Vec::new()) });
        let fencer = fence.map(|(_, f)| f as Arc<dyn Fencer>);
        let mut standby = Standby::new(&config, shared.clone(), probes, fencer, promoter.clone()).unwrap();
        if let Some(c) = claims {
            standby = standby.with_claims(c);
        }
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(standby.run(rx));
        Rig { clock, up, stall, promoter, stop, task, shared, _dir: dir }
    }

    impl Rig {
        async fn finish(self) -> Vec<(u64, Instant)> {
            let _ = self.stop.send(true);
            self.task.await.unwrap().unwrap();
            self.promoter.at.lock().unwrap().clone()
        }
        fn decisions(&self, kind: &str) -> Vec<String> {
            self.shared
                .status()
                .recent_decisions
                .iter()
                .filter(|d| d.kind == kind)
                .map(|d| d.detail.clone())
                .collect()
        }
    }

    /// The loop is paused (its clock jumps 20 s, no timer fires in between) 3 s into a
    /// suspicion; the primary is still dead after the resume. The 20 s it did not observe are
    /// not evidence: the promotion comes no earlier than dead_after after the resume.
    #[tokio::test(start_paused = true)]
    async fn a_pause_during_the_wait_is_not_evidence() {
        let r = rig("");
        tokio::time::sleep(Duration::from_secs(5)).await; // warm-up, healthy
        r.up.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await; // 3 s of evidence (< dead_after)
        r.clock.jump(Duration::from_secs(20));
        let resumed = r.clock.instant();
        tokio::time::sleep(Duration::from_secs(15)).await;
        let gaps = r.decisions("gap");
        let promoted = r.finish().await;
        assert_eq!(promoted.len(), 1, "the primary stayed dead: one promotion");
        let after = promoted[0].1.duration_since(resumed);
        assert!(
            after >= Duration::from_secs(5),
            "promoted {after:?} after the resume: the pause counted as evidence"
        );
        assert!(after <= Duration::from_secs(8), "promoted {after:?} after the resume");
        assert!(!gaps.is_empty() && gaps[0].contains("observation gap of 2"), "{gaps:?}");
    }

    /// The process is paused in the middle of a probe round: that round's readings cannot be
    /// dated and are discarded, and the evidence before it does not count either.
    #[tokio::test(start_paused = true)]
    async fn a_pause_during_a_round_discards_its_readings() {
        let r = rig("");
        tokio::time::sleep(Duration::from_secs(5)).await;
        r.up.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        *r.stall.lock().unwrap() = Some((r.clock.clone(), Duration::from_secs(30)));
        let t0 = r.clock.instant();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let resumed = t0 + Duration::from_secs(30);
        tokio::time::sleep(Duration::from_secs(15)).await;
        let gaps = r.decisions("gap");
        let promoted = r.finish().await;
        assert_eq!(promoted.len(), 1);
        let after = promoted[0].1.saturating_duration_since(resumed);
        assert!(after >= Duration::from_secs(4), "promoted {after:?} after the paused round");
        assert!(gaps.iter().any(|g| g.contains("during a probe round")), "{gaps:?}");
    }

    /// Without any pause, the loop promotes dead_after (+ at most two intervals) after the
    /// primary died: the gap handling costs no detection time.
    #[tokio::test(start_paused = true)]
    async fn without_a_pause_detection_takes_dead_after() {
        let r = rig("");
        tokio::time::sleep(Duration::from_secs(5)).await;
        r.up.store(false, Ordering::SeqCst);
        let died = r.clock.instant();
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(r.decisions("gap").is_empty(), "{:?}", r.decisions("gap"));
        let promoted = r.finish().await;
        assert_eq!(promoted.len(), 1);
        let after = promoted[0].1.duration_since(died);
        assert!((Duration::from_secs(5)..=Duration::from_secs(7)).contains(&after), "{after:?}");
    }

    /// A rebuilt standby (no state file) in a cluster whose first failover claimed epoch 1:
    /// the claim read at start-up makes its first promotion epoch 2, never the claimed epoch 1.
    #[tokio::test(start_paused = true)]
    async fn a_rebuilt_standby_decides_past_the_newest_claim() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let claims = crate::runbook::ClaimStore::new(store, "prod", "memory://prod");
        let first = crate::runbook::Claim {
            epoch: 1,
            holder: "master-2".into(),
            host: "master-2".into(),
            run_id: "first-failover".into(),
            claimed_at: DateTime::<Utc>::UNIX_EPOCH,
            snapshot: None,
        };
        claims.claim(&first).await.unwrap();
        let r = rig_with("", Some(claims));
        tokio::time::sleep(Duration::from_secs(5)).await;
        r.up.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let promoted = r.finish().await;
        assert_eq!(promoted.iter().map(|p| p.0).collect::<Vec<_>>(), [2], "one promotion, at epoch 2");
    }

    /// A fence whose target is this host (here: loopback) is refused before the fencer runs,
    /// and a failed fence means no promotion; aimed at another host, it runs and the
    /// promotion follows.
    #[tokio::test(start_paused = true)]
    async fn the_monitor_never_fences_this_host() {
        for (target, fences, promotions) in [("127.0.0.1", 0, 0), ("10.1.1.1", 1, 1)] {
            let fencer = Arc::new(CountingFencer::default());
            let r = rig_full("", None, Some((target, fencer.clone())));
            tokio::time::sleep(Duration::from_secs(5)).await;
            r.up.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(10)).await;
            let fence_decisions = r.decisions("fence");
            let promoted = r.finish().await;
            assert_eq!(fencer.0.load(Ordering::SeqCst), fences, "{target}: {fence_decisions:?}");
            assert_eq!(promoted.len(), promotions, "{target}");
        }
    }

    /// An alert hook that hangs for 30 s (each state change alerts) does not delay detection:
    /// deliveries run on the alert queue's task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_alert_hook_does_not_delay_detection() {
        let r = rig("[monitor.alerts]\nexec = [[\"sleep\", \"30\"]]\ntimeout_s = 30\n");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        r.up.store(false, Ordering::SeqCst);
        let died = r.clock.instant();
        tokio::time::sleep(Duration::from_secs(9)).await;
        let promoted = r.finish().await;
        assert_eq!(promoted.len(), 1, "no promotion within 9 s while the alert hook hangs for 30 s");
        let after = promoted[0].1.duration_since(died);
        assert!(after <= Duration::from_secs(8), "promoted {after:?} after the primary died");
    }
}
