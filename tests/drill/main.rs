//! The multi-host DR drill (issue 8): seed 000's scenario across hosts with their own addresses
//! on private Docker networks, through the real `kdr-monitor` and `kdr` binaries.
//!
//! Topology (built by [`topology::Drill::start`]):
//! - `master-1`: real etcd 3.5.16 with TLS and an HTTPS `/healthz` stand-in for the API server,
//!   both run by a stand-in for kubelet's static pods (they stop when the manifests are moved
//!   aside), sshd, and kdr-monitor in the primary role backing up every 2 s;
//! - `worker-1..3`: sshd with recording kubeadm/systemctl stand-ins; the witnesses;
//! - `master-2`: kdr-monitor in the standby role (interval 1 s, `dead_after` 5 s), promoting with
//!   `kdr failover`; its kubeadm stand-in starts etcd on the restored data dir;
//! - the S3 store (s3s-fs).
//!
//! The networks: `lan` joins every host; `link` joins only the two masters, and master-2 probes
//! master-1 at its address there, so `docker network disconnect` cuts only that link. The masters
//! have fixed addresses (`.200`, `.201`), as real control planes do.
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

use topology::{Drill, Writer, secs_between};

/// How long after a backup committed the primary is stopped (the backup interval is 2 s).
const BACKUP_OFFSET_MS: u64 = 1500;

/// Both drills share one machine: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A topology (`tag` names its networks and containers) with the writer running, two backups
/// taken and the standby watching the primary: where every scenario starts.
async fn started(tag: &str) -> (Drill, Writer) {
    let drill = Drill::start(tag).await;
    let writer = Writer::start(&drill).await;
    drill.wait_backups(2, Duration::from_secs(60)).await;
    drill.wait_standby_watching(Duration::from_secs(60)).await;
    (drill, writer)
}

/// Scenarios 2, 1 and 3 in order on one topology: a cut link (no promotion), then the primary
/// stopped (one promotion, after `dead_after`, from the latest backup), then the old primary back
/// (it fences itself and alerts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_drill_partition_then_primary_loss_then_return() {
    let _serial = SERIAL.lock().await;
    let (drill, writer) = started("a").await;

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
    assert!(drill.m2_file("kubeadm-calls.log").is_empty(), "no kubeadm on the standby");
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
    let stopped_at = drill.stop_master_1();
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
    let back_at = drill.start_master_1();
    let fenced = drill.wait_m1_alert("self_fence", Duration::from_secs(60)).await;
    drill.wait_m1_control_plane_stopped(Duration::from_secs(30)).await;
    let sets_before = drill.backup_count().await;
    tokio::time::sleep(Duration::from_secs(3 * topology::BACKUP_INTERVAL_S)).await;
    assert_eq!(drill.backup_count().await, sets_before, "the fenced old primary takes no backups");
    assert!(drill.m1_manifests().is_empty(), "its static pod manifests stay aside");
    assert_eq!(drill.m1_manifests_aside().len(), 4, "moved, never deleted");
    let served = drill.m1_served_after_return();
    println!(
        "drill scenario 3 (master-1 returns after the promotion): self-fenced and alerted {:.2} s after it \
         started; its static pods (started at boot, as kubelet does) served for {:.2} s, then etcd and the API \
         server stopped; no backup from it since; alert: {}",
        secs_between(back_at, fenced.0),
        served,
        fenced.1
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
    let stopped_at = drill.stop_master_1();
    let acked = writer.stop().await;
    drill.wait_m2_log("kubeadm-calls.log", "kubeadm init", Duration::from_secs(120)).await;
    let journal = drill.journal(1).expect("a journal for epoch 1");
    assert_eq!(topology::step_status(&journal, "restore").as_deref(), Some("succeeded"), "{journal}");
    let killed_at = drill.kill_standby_monitor();
    let halted =
        drill.wait_m2_alert("the monitor restarted during the promote step", Duration::from_secs(60)).await;
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
        drill.m2_sh("ls -d /var/lib/etcd.kdr-replaced-* 2>/dev/null | wc -l").trim() == "0",
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
