//! The multi-host DR drill (issue 8): seed 000's scenario across hosts with their own addresses
//! on private Docker networks, through the real `kdr-monitor` and `kdr` binaries.
//!
//! Topology (built by [`topology::Drill::start`]):
//! - `master-1`: real etcd 3.5.16 with TLS and an HTTPS `/healthz` stand-in for the API server,
//!   both run by a stand-in for kubelet's static pods (they stop when the manifests are moved
//!   aside), sshd, and kdr-monitor in the primary role backing up every 2 s;
//! - `worker-1..3`: sshd with recording kubeadm/systemctl stand-ins; the witnesses;
//! - `master-2`: sshd and kdr-monitor in the standby role (interval 1 s, `dead_after` 5 s),
//!   promoting with `kdr failover`; its kubeadm stand-in starts etcd and the API server's
//!   `/healthz` on the restored data;
//! - `uplink`: the standby's gateway stand-in (its self probe connects there) and the alert
//!   webhook receiver, which can be told to hang;
//! - the S3 store (s3s-fs).
//!
//! The networks: `lan` joins every host; `link` joins only the two masters, and master-2 probes
//! master-1 at its address there, so `docker network disconnect` cuts only that link; `uplink`
//! (internal, no route out) joins the standby and the uplink only, so cutting the standby's `lan`
//! and `link` leaves its gateway answering. The masters have fixed addresses (`.200`, `.201`), as
//! real control planes do.
//!
//! No kubelet, kube-apiserver or kubeadm can run here: their stand-ins are the scripts in
//! `tests/drill/hosts/`. Everything else is real: etcd, TLS, S3, sshd, the networks, the binaries.
//! Each scenario prints its figures (detection, restore, RTO, keys lost, RPO); the README records
//! them.
/// Helpers shared with the other integration tests (the binaries).
#[path = "../common/mod.rs"]
mod common;
mod topology;

use std::time::Duration;

use kdr_core::clock::{Clock, SystemClock};

use common::wait::wait_for;
use topology::{Drill, Writer, secs_between};

/// How long after a backup committed the primary is stopped (the backup interval is 2 s).
const BACKUP_OFFSET_MS: u64 = 1500;

/// Both drills share one machine: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many times the standby's detector went isolated between `a` and `b` (each time, its
/// evidence starts again).
fn isolated_between(
    drill: &Drill,
    a: chrono::DateTime<chrono::Utc>,
    b: chrono::DateTime<chrono::Utc>,
) -> usize {
    drill
        .standby_file("alerts.log")
        .lines()
        .filter(|l| l.contains("failover detector state: isolated"))
        .filter_map(|l| chrono::DateTime::parse_from_rfc3339(l.split(' ').next()?).ok())
        .filter(|t| *t >= a && *t <= b)
        .count()
}

/// A topology (`tag` names its networks and containers) with the writer running, two backups
/// taken and the standby watching the primary: where every scenario starts.
async fn started(tag: &str) -> (Drill, Writer) {
    let drill = Drill::start(tag).await;
    let writer = Writer::start(&drill).await;
    drill.wait_backups(2, Duration::from_secs(60)).await;
    drill.wait_standby_watching(Duration::from_secs(60)).await;
    (drill, writer)
}

/// Scenarios 2, 1, 3, 9 and 8 in order on one topology: a cut link (no promotion), then the
/// primary stopped (one promotion, after `dead_after`, from the latest backup), then the old
/// primary back (it fences itself and alerts); then the promoted master-2 given the primary role
/// (backups resume, no self-fence), master-1 rebuilt as its standby and master-2 stopped (one
/// promotion, epoch 2, with no operator action).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_drill_partition_then_primary_loss_then_return_then_second_failover() {
    let _serial = SERIAL.lock().await;
    let (mut drill, writer) = started("a").await;

    // ---- Scenario 2: only the master-2 <-> master-1 link is cut -----------------------------
    let cut_at = SystemClock.utc();
    drill.cut_link();
    // The standby sees the primary's API and machine fail; the witnesses still reach it.
    drill
        .wait_metrics(Duration::from_secs(30), |m| {
            (m.value("kdr_probe_up", &[("role", "api")]) == Some(0.0)
                && m.value("kdr_witnesses", &[("verdict", "up")]) == Some(3.0))
            .then_some(())
        })
        .await;
    // Three times dead_after, and then some: nothing is claimed, nothing promoted.
    tokio::time::sleep(Duration::from_secs(3 * topology::DEAD_AFTER_S + 3)).await;
    assert_eq!(drill.newest_claim().await, None, "a cut link alone must not promote");
    assert!(drill.standby_file("kubeadm-calls.log").is_empty(), "no kubeadm on the standby");
    let m = drill.standby_metrics();
    assert_eq!(m.value("kdr_promotions_total", &[("outcome", "ok")]).unwrap_or(0.0), 0.0);
    let written_during_cut = writer.acked_since(cut_at);
    assert!(written_during_cut > 0, "master-1 kept serving its clients during the cut");
    drill.restore_link();
    drill
        .wait_metrics(Duration::from_secs(30), |m| {
            (m.value("kdr_probe_up", &[("role", "api")]) == Some(1.0)).then_some(())
        })
        .await;
    println!(
        "drill scenario 2 (link master-2<->master-1 cut for {:.0} s, witnesses reach master-1): no promotion; \
         {written_during_cut} writes acknowledged by master-1 meanwhile, 0 keys lost",
        secs_between(cut_at, SystemClock.utc())
    );

    // ---- Scenario 1: master-1 stopped --------------------------------------------------------
    // Stopped 3/4 of a backup interval after a backup: neither the best nor the worst case.
    drill.wait_backups(drill.backup_count().await + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(BACKUP_OFFSET_MS)).await;
    let stopped_at = drill.stop_primary();
    let acked = writer.stop().await;
    let promoted = drill.wait_promoted(1, Duration::from_secs(180)).await;
    let report = drill.measure(stopped_at, &promoted, &acked).await;
    report.print("drill scenario 1 (master-1 stopped)");
    assert!(
        report.detection_s >= topology::DEAD_AFTER_S as f64,
        "promoted {:.2} s after the stop: before dead_after ({} s)",
        report.detection_s,
        topology::DEAD_AFTER_S
    );
    drill.assert_promoted_from_latest(&promoted, &acked).await;
    drill.assert_workers_rewired().await;
    // Exactly once: one claim, one restore, one kubeadm init, and nothing more a while later.
    tokio::time::sleep(Duration::from_secs(2 * topology::DEAD_AFTER_S)).await;
    assert_eq!(drill.newest_claim().await, Some(1), "one claim, epoch 1 (epochs start at 1)");
    assert_eq!(drill.restores(), 1, "one restore");
    assert_eq!(drill.kubeadm_inits(), 1, "one kubeadm init");
    assert_eq!(drill.fences(), 1, "the runbook fenced master-1 once");

    // ---- Scenario 3: master-1 returns ----------------------------------------------------------
    let back_at = drill.start_primary();
    let fenced = drill.wait_primary_alert("self_fence", Duration::from_secs(60)).await;
    drill.wait_primary_control_plane_stopped(Duration::from_secs(30)).await;
    let sets_before = drill.backup_count().await;
    tokio::time::sleep(Duration::from_secs(3 * topology::BACKUP_INTERVAL_S)).await;
    assert_eq!(drill.backup_count().await, sets_before, "the fenced old primary takes no backups");
    assert!(drill.primary_manifests().is_empty(), "its static pod manifests stay aside");
    assert_eq!(drill.primary_manifests_aside().len(), 4, "moved, never deleted");
    let served = drill.primary_served_after_return();
    println!(
        "drill scenario 3 (master-1 returns after the promotion): self-fenced and alerted {:.2} s after it \
         started; its static pods (started at boot, as kubelet does) served for {:.2} s, then etcd and the API \
         server stopped; no backup from it since; alert: {}",
        secs_between(back_at, fenced.0),
        served,
        fenced.1
    );

    // ---- Scenario 9: the promoted master-2 given the primary role ----------------------------
    let role_at = drill.give_standby_primary_role();
    let alerted =
        |kind: &str| drill.standby_file("alerts.log").lines().any(|l| l.contains(&format!(" {kind} ")));
    // Three backups from it, or its self-fence (which stops them), or a failed backup.
    wait_for(
        "three backups from master-2, its self-fence or a failed backup",
        Duration::from_secs(60),
        async || {
            (alerted("self_fence") || alerted("backup_failed") || drill.sets_since(role_at).await.len() >= 3)
                .then_some(())
        },
    )
    .await;
    let alerts = drill.standby_file("alerts.log");
    assert!(!alerted("self_fence"), "the promoted node fenced itself for its own claim:\n{alerts}");
    assert!(!alerted("backup_failed"), "a backup on the promoted node failed:\n{alerts}");
    let sets = drill.sets_since(role_at).await;
    let checked_for = secs_between(role_at, SystemClock.utc());
    assert_eq!(drill.standby_manifests().len(), 4, "its static pod manifests stay in place");
    assert_eq!(
        drill.newest_claim_by().await,
        Some((1, "master-2".to_owned())),
        "its own claim, still the newest"
    );
    println!(
        "drill scenario 9 (the promoted master-2 given the primary role, self-fence defaults): first backup {:.2} s \
         after its monitor restarted, {} backups in {checked_for:.0} s; not self-fenced (its own claim of epoch 1 is the newest)",
        secs_between(role_at, sets[0]),
        sets.len()
    );

    // ---- Scenario 8: master-1 rebuilt as master-2's standby; master-2 stopped -----------------
    // What master-2 serves: master-1's writes it restored (nothing was written since).
    let keys = drill.promoted_drill_keys();
    drill.rebuild_primary_as_standby();
    drill.wait_standby_watching(Duration::from_secs(60)).await;
    drill.wait_backups(drill.backup_count().await + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(BACKUP_OFFSET_MS)).await;
    let stopped_at = drill.stop_primary();
    let decided = drill.wait_standby_alert("promoting this standby", Duration::from_secs(60)).await;
    assert!(
        decided.1.ends_with("epoch 2"),
        "the rebuilt standby must promote epoch 2 (newest claim + 1): {}",
        decided.1
    );
    let promoted = drill.wait_promoted(2, Duration::from_secs(90)).await;
    let (newest, taken_at) = drill.newest_set().await.expect("sets");
    assert_eq!(promoted.snapshot, newest, "restored from master-2's latest backup");
    let detection_s = secs_between(stopped_at, promoted.decided_at);
    assert!(detection_s >= topology::DEAD_AFTER_S as f64, "promoted {detection_s:.2} s after the stop");
    drill.assert_workers_rewired().await;
    assert_eq!(drill.promoted_drill_keys(), keys, "master-1 serves every key master-2 served");
    tokio::time::sleep(Duration::from_secs(2 * topology::DEAD_AFTER_S)).await;
    assert_eq!(drill.newest_claim_by().await, Some((2, "master-1".to_owned())), "one claim of epoch 2");
    assert!(drill.journal(1).is_none() && drill.journal(3).is_none(), "only epoch 2 was run on master-1");
    assert_eq!(drill.restores(), 1, "one restore");
    assert_eq!(drill.kubeadm_inits(), 1, "one kubeadm init");
    assert_eq!(drill.fences(), 1, "the runbook fenced master-2 once");
    let m = drill.standby_metrics();
    assert_eq!(m.value("kdr_promotions_total", &[("outcome", "ok")]), Some(1.0));
    assert_eq!(m.value("kdr_promotions_total", &[("outcome", "failed")]).unwrap_or(0.0), 0.0);
    println!(
        "drill scenario 8 (second failover: master-1 rebuilt as master-2's standby, master-2 stopped):\n  \
         detection {detection_s:.2} s; restore {:.2} s; RTO {:.2} s; one promotion, epoch 2 (the rebuilt node's \
         state dir started empty), no operator action; the restored set was taken {:.2} s before the stop; \
         the {} keys master-2 served (master-1's writes from the first generation) all served by master-1",
        secs_between(promoted.restore.0, promoted.restore.1),
        secs_between(stopped_at, promoted.finished_at),
        secs_between(taken_at, stopped_at),
        keys.len()
    );
}

/// Scenario 4: the standby's monitor is killed mid-promotion (after the restore, during kubeadm
/// init) and restarted. It halts with an alert instead of promoting again on its own (the
/// detector's contract); the operator's `kdr failover` resumes the journal, and nothing is
/// restored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_drill_standby_killed_mid_promotion_resumes_from_the_journal() {
    let _serial = SERIAL.lock().await;
    let (drill, writer) = started("b").await;
    drill.hold_kubeadm();
    drill.wait_backups(drill.backup_count().await + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(BACKUP_OFFSET_MS)).await;
    let stopped_at = drill.stop_primary();
    let acked = writer.stop().await;
    drill.wait_standby_log("kubeadm-calls.log", "kubeadm init", Duration::from_secs(120)).await;
    let journal = drill.journal(1).expect("a journal for epoch 1");
    assert_eq!(topology::step_status(&journal, "restore").as_deref(), Some("succeeded"), "{journal}");
    let killed_at = drill.kill_standby_monitor();
    let halted = drill
        .wait_standby_alert("the monitor restarted during the promote step", Duration::from_secs(60))
        .await;
    assert!(halted.1.contains("kdr failover --config"), "the alert names the resume command: {}", halted.1);
    // The restarted monitor does not promote again on its own.
    tokio::time::sleep(Duration::from_secs(2 * topology::DEAD_AFTER_S)).await;
    assert_eq!(drill.kubeadm_inits(), 1, "no second kubeadm init by the restarted monitor");
    assert_eq!(drill.restores(), 1);

    drill.release_kubeadm();
    let resumed_at = SystemClock.utc();
    let (code, out, err) = drill.operator_failover();
    assert_eq!(code, 0, "kdr failover (resume) failed:\n{out}\n{err}");
    assert!(err.contains("epoch 1, the failover the monitor's detector started"), "{err}");
    let promoted = drill.wait_promoted(1, Duration::from_secs(10)).await;
    assert_eq!(drill.restores(), 1, "the resumed run did not restore again");
    assert_eq!(drill.kubeadm_inits(), 2, "kubeadm init ran again: it had not finished");
    assert!(
        drill.standby_sh("ls -d /var/lib/etcd.kdr-replaced-* 2>/dev/null | wc -l").trim() == "0",
        "no data dir replaced twice"
    );
    let journal = drill.journal(1).unwrap();
    assert_eq!(topology::step_attempts(&journal, "restore"), Some(1), "{journal}");
    assert!(topology::step_attempts(&journal, "control-plane-init").unwrap_or(0) >= 2, "{journal}");
    drill.assert_promoted_from_latest(&promoted, &acked).await;
    drill.assert_workers_rewired().await;
    let report = drill.measure(stopped_at, &promoted, &acked).await;
    report.print("drill scenario 4 (standby killed mid-promotion, resumed by the operator)");
    println!(
        "drill scenario 4: monitor killed {:.2} s after the stop, halted and alerted {:.2} s after the kill; \
         the operator's resume took {:.2} s",
        secs_between(stopped_at, killed_at),
        secs_between(killed_at, halted.0),
        secs_between(resumed_at, promoted.finished_at)
    );
}

/// Scenarios 5, 7 and 10 on one topology: the standby cut off from the primary and every worker
/// (self-isolated: no promotion, then or after it is reconnected); the standby frozen longer than
/// `dead_after` while it suspected a primary that came back meanwhile (the evidence is discarded);
/// then the primary stopped while the alert webhook hangs (detection as usual).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_drill_standby_isolated_then_paused_then_primary_loss_with_a_hanging_webhook() {
    let _serial = SERIAL.lock().await;
    let (drill, writer) = started("c").await;
    let no_promotion = async |what: &str| {
        assert_eq!(drill.newest_claim().await, None, "{what}: nothing claimed");
        assert_eq!(drill.fences(), 0, "{what}: nothing fenced");
        assert_eq!(drill.kubeadm_inits(), 0, "{what}: no kubeadm on the standby");
        let m = drill.standby_metrics();
        for outcome in ["ok", "failed"] {
            assert_eq!(
                m.value("kdr_promotions_total", &[("outcome", outcome)]).unwrap_or(0.0),
                0.0,
                "{what}"
            );
        }
    };

    // ---- Scenario 5: the standby cut off from the primary and every worker -------------------
    let cut_at = drill.isolate_standby();
    tokio::time::sleep(Duration::from_secs(3 * topology::DEAD_AFTER_S)).await;
    let alerts = drill.standby_file("alerts.log");
    assert!(!alerts.contains("promoting this standby"), "the cut-off standby decided to promote:\n{alerts}");
    let isolated =
        drill.wait_standby_alert("failover detector state: isolated", Duration::from_secs(1)).await;
    let m = drill.standby_metrics();
    assert_eq!(m.value("kdr_probe_up", &[("role", "self")]), Some(1.0), "its uplink still answers");
    assert_eq!(m.state().as_deref(), Some("isolated"));
    no_promotion("isolated").await;
    let isolated_for = secs_between(cut_at, SystemClock.utc());
    let back_at = drill.reconnect_standby();
    drill.wait_standby_watching(Duration::from_secs(30)).await;
    let watching_after = secs_between(back_at, SystemClock.utc());
    tokio::time::sleep(Duration::from_secs(topology::DEAD_AFTER_S + 2)).await;
    assert_eq!(drill.standby_metrics().state().as_deref(), Some("healthy"));
    no_promotion("reconnected").await;
    println!(
        "drill scenario 5 (master-2 cut off from master-1 and every worker for {isolated_for:.0} s, its uplink \
         answering): self-isolation alerted {:.2} s after the cut; no claim, no fence, no promotion; reconnected, \
         watching a live primary again {watching_after:.2} s later, no promotion",
        secs_between(cut_at, isolated.0)
    );

    // ---- Scenario 7: the standby paused longer than dead_after while suspecting ----------------
    let frozen_at = drill.freeze_primary();
    drill
        .wait_metrics(Duration::from_secs(30), |m| (m.state().as_deref() == Some("suspect")).then_some(()))
        .await;
    let paused_at = drill.pause_standby();
    drill.thaw_primary();
    tokio::time::sleep(Duration::from_secs(topology::DEAD_AFTER_S + 3)).await;
    let resumed_at = drill.unpause_standby();
    drill.wait_standby_watching(Duration::from_secs(30)).await;
    let watching_after = secs_between(resumed_at, SystemClock.utc());
    tokio::time::sleep(Duration::from_secs(topology::DEAD_AFTER_S + 2)).await;
    assert_eq!(drill.standby_metrics().state().as_deref(), Some("healthy"));
    no_promotion("resumed after the pause").await;
    println!(
        "drill scenario 7 (master-2 paused {:.1} s, longer than dead_after, {:.2} s into suspecting a frozen \
         master-1, which came back meanwhile): no promotion; watching a live primary again {watching_after:.2} s \
         after the resume",
        secs_between(paused_at, resumed_at),
        secs_between(frozen_at, paused_at)
    );

    // ---- Scenario 10: master-1 stopped while the alert webhook hangs -------------------------
    drill.wait_backups(drill.backup_count().await + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(BACKUP_OFFSET_MS)).await;
    drill.hang_webhook(true);
    let stopped_at = drill.stop_primary();
    let acked = writer.stop().await;
    // Until the decision, the standby's /healthz: 503 when its loop has not turned for 3 s.
    let mut health = Vec::new();
    wait_for("the promotion decision", Duration::from_secs(90), async || {
        health.push(drill.standby_sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/healthz"));
        drill.standby_file("alerts.log").contains("promoting this standby").then_some(())
    })
    .await;
    let promoted = drill.wait_promoted(1, Duration::from_secs(180)).await;
    let report = drill.measure(stopped_at, &promoted, &acked).await;
    report.print(&format!(
        "drill scenario 10 (master-1 stopped, the alert webhook hanging {} s on each alert)",
        topology::WEBHOOK_HANG_S
    ));
    let hung: Vec<_> = drill
        .webhook_calls()
        .into_iter()
        .filter(|c| c.1 == "hang" && c.0 >= stopped_at && c.0 <= promoted.decided_at)
        .collect();
    assert!(!hung.is_empty(), "the webhook was called (and hung) during the suspicion");
    // The loop never waited for the webhook: it kept turning (its /healthz stayed 200), the
    // decision came before the hang could have ended, and the promotion did not wait either.
    // (Detection itself also depends on the witnesses answering in time: a late one can make the
    // detector isolated for a while, which restarts the evidence; counted below.)
    let stalled = health.iter().filter(|c| c.as_str() != "200").count();
    assert_eq!(stalled, 0, "the standby loop stalled while the webhook hung: {health:?}");
    assert!(
        (topology::DEAD_AFTER_S as f64..topology::WEBHOOK_HANG_S as f64).contains(&report.detection_s),
        "detection {:.2} s: not within dead_after ({} s) .. the webhook's hang",
        report.detection_s,
        topology::DEAD_AFTER_S
    );
    let promoting_s = secs_between(promoted.decided_at, promoted.finished_at);
    assert!(
        promoting_s < topology::WEBHOOK_HANG_S as f64,
        "the promotion took {promoting_s:.2} s: it waited for the webhook"
    );
    drill.assert_promoted_from_latest(&promoted, &acked).await;
    drill.assert_workers_rewired().await;
    println!(
        "drill scenario 10: {} alert(s) hung at the webhook between the stop and the decision (the first {:.2} s \
         after the stop); the standby's /healthz answered 200 to all {} polls meanwhile (its loop never waited); \
         the evidence restarted {} time(s) on late witness answers (isolated)",
        hung.len(),
        secs_between(stopped_at, hung[0].0),
        health.len(),
        isolated_between(&drill, stopped_at, promoted.decided_at)
    );
}

/// Scenario 6: a witness that accepts TCP and never answers (worker-2 frozen) during a real
/// primary loss: the two others agree, the failover happens, and worker-2 reads unknown, never
/// down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_drill_primary_loss_with_a_silent_witness() {
    let _serial = SERIAL.lock().await;
    let (drill, writer) = started("d").await;
    let silent_at = drill.silence_worker(2);
    drill
        .wait_metrics(Duration::from_secs(20), |m| {
            (m.witness("worker-2") != Some(1.0)
                && m.value("kdr_witnesses", &[("verdict", "up")]) == Some(2.0))
            .then_some(())
        })
        .await;
    drill.wait_backups(drill.backup_count().await + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(BACKUP_OFFSET_MS)).await;
    let stopped_at = drill.stop_primary();
    let acked = writer.stop().await;
    // Until the decision, every scrape's verdict of worker-2.
    let mut verdicts = Vec::new();
    wait_for("the promotion decision", Duration::from_secs(60), async || {
        verdicts.extend(drill.standby_metrics().witness("worker-2"));
        drill.standby_file("alerts.log").contains("promoting this standby").then_some(())
    })
    .await;
    // Awake again for the runbook, which rewires every worker.
    drill.wake_worker(2);
    let promoted = drill.wait_promoted(1, Duration::from_secs(180)).await;
    let report = drill.measure(stopped_at, &promoted, &acked).await;
    report.print("drill scenario 6 (master-1 stopped, worker-2 silent: TCP accepted, sshd never answers)");
    let unknown = verdicts.iter().filter(|v| **v == -1.0).count();
    let down = verdicts.iter().filter(|v| **v == 0.0).count();
    assert_eq!(down, 0, "the silent witness was reported down: {verdicts:?}");
    assert!(unknown > 0, "the silent witness was never reported unknown: {verdicts:?}");
    assert!(report.detection_s >= topology::DEAD_AFTER_S as f64, "detection {:.2} s", report.detection_s);
    drill.assert_promoted_from_latest(&promoted, &acked).await;
    drill.assert_workers_rewired().await;
    // With one witness silent, the two others must both answer in time in every round: one late
    // answer (unknown) leaves a minority reporting, the detector reads itself isolated and the
    // evidence starts again. Detection is dead_after + a round when they do.
    let isolated = isolated_between(&drill, stopped_at, promoted.decided_at);
    println!(
        "drill scenario 6: worker-2 silent from {:.2} s before the stop until the decision; read unknown in {unknown} \
         of {} scrapes, down in 0; promoted on worker-1's and worker-3's word; the evidence restarted {isolated} \
         time(s) on a late answer from one of them (isolated: a minority of witnesses reporting)",
        secs_between(silent_at, stopped_at),
        verdicts.len()
    );
}
