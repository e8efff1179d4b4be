//! kdr-monitor against real etcd and S3 (s3s-fs) containers: scheduled backups then a prune with
//! `/metrics` scraped and parsed; SIGTERM mid-upload (the built binary); a restart that keeps
//! the latch and pause (the built binaries, `kdr pause`); the self-fence guard and a newer claim;
//! scheduled drills of the newest set, passing and then failing on a tampered set; webhook and
//! exec alerts received by a local HTTP receiver when etcd stops; a cron schedule; JSON logs.
//! Needs Docker (tests named `docker_*`) and, for the drill, the etcd 3.5 binaries
//! (`KDR_ETCD_3_5_DIR`; `make test`, or `. .tools/env`).
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kdr_core::clock::SystemClock;
use kdr_core::config::Config;
use kdr_core::failover::{Latch, StateStore};
use kdr_core::monitor::primary::Primary;
use kdr_core::monitor::{Shared, Status};
use kdr_core::runbook::{Claim, ClaimStore};
use kdr_core::snapshot::{ObjectKind, ObjectStoreSnapshotStore, SnapshotStore};
use kdr_core::testing::containers::{EtcdContainer, EtcdVersion, S3Container};

use common::bins::bins;
use common::wait::{metric, parse_metrics, wait_for};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `[store]` for the shared S3 container under `prefix` (the secret goes in the environment).
fn store_toml(s3: &S3Container, prefix: &str) -> String {
    format!(
        "[store]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nallow_http = true\n",
        s3.bucket(),
        s3.endpoint(),
        s3.region(),
        s3.access_key()
    )
}

fn open_store(config: &Config) -> ObjectStoreSnapshotStore {
    ObjectStoreSnapshotStore::from_url(config.store_url().unwrap(), &config.store_options().unwrap()).unwrap()
}

fn parse(text: &str, s3: &S3Container) -> Config {
    let mut c = Config::from_toml(text, "test").unwrap();
    let env = [("AWS_SECRET_ACCESS_KEY".to_owned(), s3.secret_key().to_owned())].into_iter().collect();
    c.apply_env(&env).unwrap();
    c
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    parse_metrics(&http_get(port, "/metrics").expect("/metrics answers 200"))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    metric(scrape, name, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_three_scheduled_backups_then_a_prune_and_metrics_scraped() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    for i in 0..20 {
        client.put(format!("/registry/pods/default/p{i}"), "x", None).await.unwrap();
    }
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = parse(
        &format!(
            "{}[etcd]\nendpoint = \"{}\"\n[backup]\nno_bundle = true\n\
             [retention]\nkeep_last = 2\nkeep_hourly = 0\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n\
             [monitor]\nlisten = \"127.0.0.1:{port}\"\nroles = [\"primary\"]\nstate_dir = \"{}\"\n\
             [monitor.backup]\ninterval_s = 1.2\n[monitor.drill]\nenabled = false\n",
            store_toml(s3, "scheduled"),
            etcd.endpoint(),
            dir.path().display()
        ),
        s3,
    );
    let store = open_store(&config);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let monitor = tokio::spawn(kdr_core::monitor::run(config, Arc::new(SystemClock), async {
        let _ = rx.await;
    }));

    let scrape = wait_for("three backups and a prune", Duration::from_secs(60), async || {
        let s = tokio::task::spawn_blocking(move || http_get(port, "/metrics").map(|_| scrape(port)))
            .await
            .ok()??;
        (value(&s, "kdr_backups_total")? >= 3.0 && value(&s, "kdr_pruned_sets_total")? >= 1.0).then_some(s)
    })
    .await;
    tx.send(()).unwrap();
    monitor.await.unwrap().expect("clean shutdown");

    assert_eq!(value(&scrape, "kdr_backup_failures_total"), Some(0.0));
    assert!(value(&scrape, "kdr_backup_last_size_bytes").unwrap() > 0.0);
    assert!(value(&scrape, "kdr_backup_last_duration_seconds").unwrap() > 0.0);
    assert!(value(&scrape, "kdr_backup_last_success_timestamp_seconds").unwrap() > 1.7e9);
    let sets = store.list().await.unwrap();
    let backups = value(&scrape, "kdr_backups_total").unwrap() as usize;
    let pruned = value(&scrape, "kdr_pruned_sets_total").unwrap() as usize;
    assert!(
        sets.len() <= 3 && sets.len() >= 2,
        "keep_last = 2 (plus at most one taken after the scrape): {sets:?}"
    );
    assert!(pruned >= backups - 2, "{backups} backups, {pruned} pruned");
    assert_eq!(sets[0].total_keys, sets[1].total_keys);
    assert!(store.list_incomplete().await.unwrap().is_empty());
    // /healthz and /status while running were checked by the scrape loop; check the status JSON shape.
}

struct Monitor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Monitor {
    /// A test that fails half-way does not leave a monitor running (backing up, drilling).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Monitor {
    fn start(config: &Path, s3: Option<&S3Container>) -> Self {
        let mut cmd = Command::new(bins().join("kdr-monitor"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        if let Some(s3) = s3 {
            cmd.env("AWS_SECRET_ACCESS_KEY", s3.secret_key());
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Self { child, lines, log }
    }

    fn wait_line(&self, needle: &str, limit: Duration) -> String {
        loop {
            match self.lines.recv_timeout(limit) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => {
                    panic!("no log line with {needle:?}; log:\n{}", self.log.lock().unwrap().join("\n"))
                }
            }
        }
    }

    /// Waits for the monitor to exit on its own; its exit status and every stderr line.
    fn wait_exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        (status, self.drain())
    }

    /// After the exit: every stderr line (the reader thread ends at EOF and drops its sender).
    fn drain(&self) -> Vec<String> {
        while self.lines.recv_timeout(Duration::from_secs(10)).is_ok() {}
        self.log.lock().unwrap().clone()
    }

    fn sigterm_and_wait(mut self) -> (std::process::ExitStatus, String) {
        let ok =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
        let status = self.child.wait().unwrap();
        (status, self.drain().join("\n"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_sigterm_mid_upload_leaves_no_listed_partial_set() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    // ~96 MiB of incompressible values, so the upload is still running when SIGTERM arrives.
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in 0..96 {
        let value: Vec<u8> = (0..1024 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        client.put(format!("/registry/configmaps/big/c{i}"), value, None).await.unwrap();
    }
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[etcd]\nendpoint = \"{}\"\n[backup]\nno_bundle = true\ncompression = \"none\"\n\
         [monitor]\nlisten = \"127.0.0.1:{}\"\nroles = [\"primary\"]\nstate_dir = \"{}\"\nshutdown_grace_s = 0\n\
         [monitor.backup]\ninterval_s = 1\n[monitor.drill]\nenabled = false\n[monitor.self_fence]\nenabled = false\n",
        store_toml(s3, "sigterm"),
        etcd.endpoint(),
        free_port(),
        dir.path().display()
    );
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(&cfg, &text).unwrap();
    let store = open_store(&parse(&text, s3));

    let m = Monitor::start(&cfg, Some(s3));
    m.wait_line("backup started", Duration::from_secs(60));
    let (status, log) = m.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}\n{log}");
    assert!(log.contains("aborted at shutdown"), "the upload was in flight and aborted:\n{log}");
    assert!(store.list().await.unwrap().is_empty(), "no set listed");
    assert!(store.list_incomplete().await.unwrap().is_empty(), "its partial objects were removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_latch_and_pause() {
    let dir = tempfile::tempdir().unwrap();
    let promoted = dir.path().join("promoted");
    let (port, dead) = (free_port(), free_port());
    let text = format!(
        "[detector]\ninterval_s = 1\ndead_after_s = 3\nrequire_self_probe = false\n\
         [monitor]\nlisten = \"127.0.0.1:{port}\"\nroles = [\"standby\"]\nstate_dir = \"{}\"\n\
         record_trace = \"{}\"\n\
         [monitor.standby]\napi_url = \"https://127.0.0.1:{dead}/healthz\"\napi_insecure_skip_tls_verify = true\n\
         host_tcp = \"127.0.0.1:{dead}\"\npromote_command = [\"sh\", \"-c\", \"echo $KDR_EPOCH:$0 >> {}\", \"{{epoch}}\"]\n\
         [monitor.alerts]\nexec = [[\"sh\", \"-c\", \"echo \\\"$KDR_ALERT_KIND: $KDR_ALERT_MESSAGE\\\" >> {}\"]]\n\
         [fence]\nkind = \"exec\"\ncommand = [\"true\"]\n",
        dir.path().join("state").display(),
        dir.path().join("trace.jsonl").display(),
        promoted.display(),
        dir.path().join("alerts").display(),
    );
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(&cfg, &text).unwrap();
    let check = Command::new(bins().join("kdr-monitor"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let m = Monitor::start(&cfg, None);
    m.wait_line("epoch 1 promoted", Duration::from_secs(30));
    // A second monitor on the same state dir refuses to start, naming the first.
    let (status, log) = Monitor::start(&cfg, None).wait_exit();
    let log = log.join("\n");
    assert!(!status.success(), "{log}");
    assert!(log.contains("another kdr-monitor") && log.contains(&format!("(pid {})", m.child.id())), "{log}");
    let pause = Command::new(bins().join("kdr"))
        .args(["--config"])
        .arg(&cfg)
        .args(["pause", "--wait", "10"])
        .output()
        .unwrap();
    assert!(pause.status.success(), "{}", String::from_utf8_lossy(&pause.stderr));
    let (status, log) = m.sigterm_and_wait();
    assert!(status.success(), "{log}");

    let state = kdr_core::monitor::standby::state_store(&dir.path().join("state")).load().unwrap().unwrap();
    assert_eq!(state.latch, Latch::Promoted { epoch: 1 });
    assert!(state.paused);

    // Restarted: still latched and paused, and the primary still dead: no second promotion.
    let m = Monitor::start(&cfg, None);
    m.wait_line("starts paused", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(6)); // twice dead_after
    let status_json = http_get(port, "/status").expect("/status");
    let st: serde_json::Value = serde_json::from_str(&status_json).unwrap();
    assert_eq!(st["detector"]["latch"]["kind"], "promoted", "{st}");
    assert_eq!(st["detector"]["paused"], true, "{st}");
    let (status, log) = m.sigterm_and_wait();
    assert!(status.success(), "{log}");
    assert_eq!(
        std::fs::read_to_string(&promoted).unwrap(),
        "1:1\n",
        "promoted exactly once, {{epoch}} substituted"
    );
    let alerts = std::fs::read_to_string(dir.path().join("alerts")).unwrap();
    assert!(alerts.contains("promotion: epoch 1 promoted"), "{alerts}");
    let trace = std::fs::read_to_string(dir.path().join("trace.jsonl")).unwrap();
    assert!(trace.starts_with("{\"config\""), "{trace}");
    kdr_core::failover::trace::Trace::parse(&trace, "recorded").expect("the recording replays");
}

/// `<dir>/manifests` holding two stand-in static pod manifests (each file's text is its name).
fn static_pod_manifests(dir: &Path) -> PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for f in ["etcd.yaml", "kube-apiserver.yaml"] {
        std::fs::write(manifests.join(f), f).unwrap();
    }
    manifests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_self_fence_guard_reacts_to_a_newer_claim() {
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = static_pod_manifests(dir.path());
    let config = parse(
        &format!(
            "{}[monitor]\nroles = [\"primary\"]\nstate_dir = \"{}\"\n[monitor.backup]\nenabled = false\n\
             [monitor.drill]\nenabled = false\n[monitor.self_fence]\nepoch = 0\nholder = \"master-1\"\nmanifests_dir = \"{}\"\n\
             [monitor.alerts]\nexec = [[\"sh\", \"-c\", \"echo \\\"$KDR_ALERT_KIND\\\" >> {}\"]]\n",
            store_toml(s3, "fence"),
            dir.path().display(),
            manifests.display(),
            dir.path().join("alerts").display()
        ),
        s3,
    );
    let store = open_store(&config);
    let shared = Arc::new(Shared::new(&config, Arc::new(SystemClock)).unwrap());
    let primary = Primary::new(&config, shared.clone()).unwrap();
    let claims = ClaimStore::new(store.inner().clone(), store.prefix(), "test");
    let claim = |epoch: u64, holder: &str| Claim {
        epoch,
        holder: holder.into(),
        host: format!("{holder}.lan"),
        run_id: format!("run-{epoch}"),
        claimed_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        snapshot: None,
    };

    assert_eq!(primary.self_fence_check().await.unwrap(), None, "no claim: nothing happens");
    claims.claim(&claim(0, "master-1")).await.unwrap();
    assert_eq!(primary.self_fence_check().await.unwrap(), None, "its own epoch: nothing happens");
    assert_eq!(std::fs::read_dir(&manifests).unwrap().count(), 2);

    claims.claim(&claim(1, "master-2")).await.unwrap();
    let aside = primary.self_fence_check().await.unwrap().expect("fenced");
    assert!(primary.is_fenced());
    assert_eq!(std::fs::read_dir(&manifests).unwrap().count(), 0, "the static pods stop");
    assert_eq!(std::fs::read_to_string(aside.join("etcd.yaml")).unwrap(), "etcd.yaml", "moved, not deleted");
    let status: Status = shared.status();
    assert_eq!(status.self_fenced.as_ref().map(|s| s.0), Some(1));
    // Alerts are delivered by their own task: wait for it.
    assert!(shared.flush_alerts(Duration::from_secs(10)).await, "the alert hook finished");
    assert_eq!(std::fs::read_to_string(dir.path().join("alerts")).unwrap(), "self_fence\n");
    assert!(shared.encode_metrics().contains("kdr_self_fenced_total 1"));
    // A second check with nothing left to move does not alert again.
    assert_eq!(primary.self_fence_check().await.unwrap(), None);
}

/// A promoted standby turns the primary role on (to resume backups) without configuring
/// `monitor.self_fence.holder`: the newest claim is its own, so it neither fences itself nor
/// stops backing up. The same file on the old primary (it names the standby in `[promotion]`,
/// the file being shared) still fences there: the claim was made from another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_promoted_standby_with_the_primary_role_keeps_serving_and_backing_up() {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    client.put("/registry/pods/default/p0", "x", None).await.unwrap();
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests = static_pod_manifests(dir.path());
    let prefix = format!("promoted-{}", std::process::id());
    let text = |advertise: &str| {
        format!(
            "{}[etcd]\nendpoint = \"{}\"\n[backup]\nno_bundle = true\n\
             [promotion]\nnode_name = \"master-2\"\nadvertise_address = \"{advertise}\"\n\
             old_primary_name = \"master-1\"\nold_primary_address = \"203.0.113.201\"\n\
             [monitor]\nroles = [\"primary\"]\nstate_dir = \"{}\"\n[monitor.backup]\ninterval_s = 1\nprune = false\n\
             [monitor.drill]\nenabled = false\n[monitor.self_fence]\nepoch = 0\nmanifests_dir = \"{}\"\n",
            store_toml(s3, &prefix),
            etcd.endpoint(),
            dir.path().display(),
            manifests.display(),
        )
    };
    // This node promoted in epoch 1: `kdr failover` wrote the claim (holder = node_name, host =
    // advertise_address, here this host's loopback), where the runbook writes claims.
    let config = parse(&text("127.0.0.1"), s3);
    kdr_core::monitor::config::validate(&config).unwrap();
    let store = open_store(&config);
    let claims = kdr_core::runbook::claim_store(&config, &store).unwrap();
    let ours = Claim {
        epoch: 1,
        holder: "master-2".into(),
        host: "127.0.0.1".into(),
        run_id: "run-of-master-2".into(),
        claimed_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        snapshot: None,
    };
    claims.claim(&ours).await.unwrap();

    let shared = Arc::new(Shared::new(&config, Arc::new(SystemClock)).unwrap());
    let primary = Arc::new(Primary::new(&config, shared.clone()).unwrap());
    assert_eq!(primary.self_fence_check().await.unwrap(), None, "its own claim: not fenced");
    assert!(!primary.is_fenced());
    assert_eq!(std::fs::read_dir(&manifests).unwrap().count(), 2, "its static pods stay");

    // Backups run (each one checks the claims first).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let looping = {
        let p = primary.clone();
        tokio::spawn(async move { p.backup_loop(stop_rx).await })
    };
    let sets = wait_for("a backup by the promoted node", Duration::from_secs(60), async || {
        let sets = store.list().await.ok()?;
        (!sets.is_empty()).then_some(sets)
    })
    .await;
    stop_tx.send(true).unwrap();
    looping.await.unwrap().unwrap();
    assert!(!sets.is_empty());
    assert!(!primary.is_fenced());
    assert_eq!(std::fs::read_dir(&manifests).unwrap().count(), 2);
    assert!(shared.encode_metrics().contains("kdr_self_fenced_total 0"));

    // The old primary, reading the same file (which names master-2, the standby, in
    // [promotion]): the claim was made from another host, so it is not its own, and it fences.
    let old = parse(&text("203.0.113.202"), s3);
    let mut old_claim = ours.clone();
    old_claim.epoch = 2;
    old_claim.host = "203.0.113.202".into();
    old_claim.run_id = "run-2".into();
    claims.claim(&old_claim).await.unwrap();
    let shared = Arc::new(Shared::new(&old, Arc::new(SystemClock)).unwrap());
    let old_primary = Primary::new(&old, shared).unwrap();
    let aside = old_primary.self_fence_check().await.unwrap().expect("the old primary fences");
    assert!(old_primary.is_fenced());
    assert_eq!(std::fs::read_dir(&manifests).unwrap().count(), 0);
    assert!(aside.join("etcd.yaml").is_file(), "moved, not deleted");
}

// ------------------------------------------------------------------------------------------------
// Drills, alerts, cron, JSON logs: the built `kdr-monitor` against real etcd and S3.
// ------------------------------------------------------------------------------------------------

/// The etcd 3.5.16 bin dir set up by `scripts/setup-test-env.sh` (drills run etcd and etcdutl).
fn etcd_bin_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("KDR_ETCD_3_5_DIR").unwrap_or_else(|| {
        panic!(
            "KDR_ETCD_3_5_DIR is not set: run `make test`, or `. .tools/env` after scripts/setup-test-env.sh"
        )
    }))
}

/// An etcd container with `n` pods' keys.
async fn etcd_with_keys(n: usize) -> EtcdContainer {
    let etcd = EtcdContainer::start(EtcdVersion::V3_5_16).await.unwrap();
    let mut client = etcd.client().await.unwrap();
    for i in 0..n {
        client.put(format!("/registry/pods/default/p{i}"), format!("pod {i}"), None).await.unwrap();
    }
    etcd
}

/// A primary's config: `[store]` under `prefix`, `[etcd]`, no bundle, `[monitor]` on `port`, then
/// `sections` (the `[monitor.*]` tables the test needs).
fn primary_toml(
    s3: &S3Container,
    prefix: &str,
    etcd: &EtcdContainer,
    port: u16,
    dir: &Path,
    sections: &str,
) -> String {
    format!(
        "{}[etcd]\nendpoint = \"{}\"\n[backup]\nno_bundle = true\n\
         [monitor]\nlisten = \"127.0.0.1:{port}\"\nroles = [\"primary\"]\nstate_dir = \"{}\"\n{sections}",
        store_toml(s3, prefix),
        etcd.endpoint(),
        dir.join("state").display()
    )
}

/// Scrapes `/metrics` until `pred` holds (or `limit` passes: a failure naming `what`).
async fn metrics_when(
    port: u16,
    what: &str,
    limit: Duration,
    pred: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> prometheus_parse::Scrape {
    wait_for(what, limit, async || {
        let s = tokio::task::spawn_blocking(move || http_get(port, "/metrics").map(|_| scrape(port)))
            .await
            .ok()??;
        pred(&s).then_some(s)
    })
    .await
}

fn status(port: u16) -> serde_json::Value {
    serde_json::from_str(&http_get(port, "/status").expect("/status answers 200")).expect("/status is JSON")
}

/// A webhook receiver on 127.0.0.1 serving `path`: each POSTed JSON body (axum's `Json` also
/// checks the content type) goes to the channel, and the answer is `answer`.
async fn webhook_receiver(
    path: &str,
    answer: axum::http::StatusCode,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let _ = tx.send(body);
            std::future::ready(answer)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// The next alert POSTed to a receiver; fails after a minute.
async fn next_alert(rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("an alert POSTed within a minute")
        .expect("the receiver is running")
}

/// An exec alert hook (argv, as TOML) that appends `kind|host|at|message` to `out`.
fn exec_hook(dir: &Path, out: &Path) -> String {
    let script = dir.join("alert.sh");
    std::fs::write(
        &script,
        format!(
            "printf '%s|%s|%s|%s\\n' \"$KDR_ALERT_KIND\" \"$KDR_ALERT_HOST\" \"$KDR_ALERT_AT\" \"$KDR_ALERT_MESSAGE\" >> '{}'\n",
            out.display()
        ),
    )
    .unwrap();
    format!("[[\"sh\", \"{}\"]]", script.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_scheduled_drill_passes_on_the_newest_set_then_fails_and_alerts_on_a_tampered_one() {
    let etcd = etcd_with_keys(30).await;
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (hook, mut alerts) = webhook_receiver("/hooks/drill", axum::http::StatusCode::OK).await;
    let port = free_port();
    let bin = etcd_bin_dir();
    let text = format!(
        "{}[restore]\netcd = \"{}\"\netcdutl = \"{}\"\nwork_dir = \"{}\"\n",
        primary_toml(
            s3,
            "drill-scheduled",
            &etcd,
            port,
            dir.path(),
            &format!(
                "[monitor.backup]\nenabled = false\n[monitor.drill]\ninterval_s = 1\nstart_timeout_s = 30\n\
                 [monitor.self_fence]\nenabled = false\n[monitor.alerts]\nwebhooks = [\"{hook}\"]\nexec = {}\n",
                exec_hook(dir.path(), &dir.path().join("alerts"))
            )
        ),
        bin.join("etcd").display(),
        bin.join("etcdutl").display(),
        dir.path().display()
    );
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(&cfg, &text).unwrap();
    // Two sets, taken by the real `kdr backup` (this monitor only drills).
    for _ in 0..2 {
        let out = Command::new(bins().join("kdr"))
            .arg("--config")
            .arg(&cfg)
            .arg("backup")
            .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
            .output()
            .unwrap();
        assert!(out.status.success(), "kdr backup: {}", String::from_utf8_lossy(&out.stderr));
    }
    let store = open_store(&parse(&text, s3));
    assert_eq!(store.list().await.unwrap().len(), 2);
    let newest = store.latest().await.unwrap().unwrap();

    let m = Monitor::start(&cfg, Some(s3));
    let s = metrics_when(port, "a passed drill", Duration::from_secs(60), |s| {
        value(s, "kdr_drills_total").is_some_and(|v| v >= 1.0)
    })
    .await;
    assert_eq!(value(&s, "kdr_drill_failures_total"), Some(0.0));
    assert!(value(&s, "kdr_drill_last_success_timestamp_seconds").unwrap() > 1.7e9);
    let st = status(port);
    let drill = &st["last_drill"];
    assert_eq!(drill["set"], newest.id.as_str(), "the newest set is drilled: {st}");
    assert_eq!(drill["passed"], true, "{st}");
    assert!(
        drill["detail"].as_str().unwrap().contains(&format!("matched {} keys", newest.total_keys)),
        "{st}"
    );
    assert!(alerts.try_recv().is_err(), "no alert while drills pass");

    // Flip one byte of the newest set's stored snapshot, behind the server's back.
    let object = &newest.object(ObjectKind::EtcdSnapshot).unwrap().name;
    let path = s3.data_dir().join("kdr/drill-scheduled/sets").join(newest.id.as_str()).join(object);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let alert = next_alert(&mut alerts).await;
    assert_eq!(alert["kind"], "drill_failed", "{alert}");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("drill of set {}", newest.id)) && message.contains("integrity"),
        "{message}"
    );
    let s = metrics_when(port, "the failed drill counted", Duration::from_secs(10), |s| {
        value(s, "kdr_drill_failures_total").is_some_and(|v| v >= 1.0)
    })
    .await;
    assert!(value(&s, "kdr_alerts_total").unwrap() >= 1.0);
    assert_eq!(value(&s, "kdr_alert_delivery_failures_total"), Some(0.0));
    let st = status(port);
    assert_eq!(st["last_drill"]["set"], newest.id.as_str(), "{st}");
    assert_eq!(st["last_drill"]["passed"], false, "{st}");
    let (exit, log) = m.sigterm_and_wait();
    assert!(exit.success(), "{log}");
    let execs = std::fs::read_to_string(dir.path().join("alerts")).unwrap();
    assert!(execs.starts_with("drill_failed|"), "the exec hook ran too: {execs}");
    assert!(store.list_incomplete().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_webhook_and_exec_alerts_when_backups_fail_after_etcd_stops() {
    let etcd = etcd_with_keys(5).await;
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Chat webhook URLs carry tokens in their path: they must never reach the log.
    let (hook, mut alerts) =
        webhook_receiver("/services/T0/B0/s3cr3t-hook-token", axum::http::StatusCode::OK).await;
    let (broken, mut rejected) =
        webhook_receiver("/broken/0ther-hook-token", axum::http::StatusCode::INTERNAL_SERVER_ERROR).await;
    let port = free_port();
    let text = primary_toml(
        s3,
        "alerts",
        &etcd,
        port,
        dir.path(),
        &format!(
            "[monitor.backup]\ninterval_s = 1\nprune = false\n[monitor.drill]\nenabled = false\n\
             [monitor.self_fence]\nenabled = false\n\
             [monitor.alerts]\nwebhooks = [\"{hook}\", \"{broken}\"]\nexec = {}\ntimeout_s = 5\n",
            exec_hook(dir.path(), &dir.path().join("alerts"))
        ),
    );
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(&cfg, &text).unwrap();

    let m = Monitor::start(&cfg, Some(s3));
    metrics_when(port, "a committed backup", Duration::from_secs(60), |s| {
        value(s, "kdr_backups_total").is_some_and(|v| v >= 1.0)
    })
    .await;
    assert!(alerts.try_recv().is_err(), "no alert while backups work");
    etcd.stop().await.unwrap();

    let alert = next_alert(&mut alerts).await;
    let fields: Vec<&str> = alert.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["at", "host", "kind", "message"], "{alert}");
    assert_eq!(alert["kind"], "backup_failed", "{alert}");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.starts_with("scheduled backup to s3://kdr/alerts") && message.contains("failed"),
        "{message}"
    );
    let at = alert["at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(at).expect("`at` is RFC 3339");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    assert_eq!(alert["host"], host.as_str());
    assert_eq!(next_alert(&mut rejected).await, alert, "every webhook gets the same alert");

    let s = metrics_when(port, "the rejected delivery counted", Duration::from_secs(30), |s| {
        value(s, "kdr_alert_delivery_failures_total").is_some_and(|v| v >= 1.0)
    })
    .await;
    assert!(value(&s, "kdr_backup_failures_total").unwrap() >= 1.0);
    assert!(value(&s, "kdr_alerts_total").unwrap() >= 1.0);
    let st = status(port);
    assert!(st["last_backup_error"].as_str().is_some_and(|e| e.contains("failed")), "{st}");
    let (exit, log) = m.sigterm_and_wait();
    assert!(exit.success(), "{log}");

    let execs = std::fs::read_to_string(dir.path().join("alerts")).unwrap();
    let first = execs.lines().next().unwrap();
    assert_eq!(first, format!("backup_failed|{host}|{at}|{message}"), "the exec hook got the same alert");
    assert!(
        log.contains(&format!(
            "alert webhook {}/<redacted>: HTTP 500",
            broken.split("/broken").next().unwrap()
        )),
        "the rejected delivery is logged, redacted:\n{log}"
    );
    assert!(!log.contains("hook-token"), "a webhook URL's token leaked into the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cron_schedule_every_two_seconds_takes_backups() {
    let etcd = etcd_with_keys(5).await;
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // interval_s alone would wait an hour: the backups can only come from the cron expression.
    let text = primary_toml(
        s3,
        "cron",
        &etcd,
        port,
        dir.path(),
        "[monitor.backup]\ninterval_s = 3600\ncron = \"*/2 * * * * *\"\nprune = false\n\
         [monitor.drill]\nenabled = false\n[monitor.self_fence]\nenabled = false\n",
    );
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(&cfg, &text).unwrap();
    let check = Command::new(bins().join("kdr-monitor"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("cron = \"*/2 * * * * *\""));

    let m = Monitor::start(&cfg, Some(s3));
    let s = metrics_when(port, "two cron backups", Duration::from_secs(30), |s| {
        value(s, "kdr_backups_total").is_some_and(|v| v >= 2.0)
    })
    .await;
    assert_eq!(value(&s, "kdr_backup_failures_total"), Some(0.0));
    let (exit, log) = m.sigterm_and_wait();
    assert!(exit.success(), "{log}");
    let sets = open_store(&parse(&text, s3)).list().await.unwrap();
    assert!(sets.len() >= 2, "{sets:?}");
    assert!(sets.iter().all(|m| m.total_keys == 5), "{sets:?}");
}

/// Every line parses as a JSON object with a level, a message and a timestamp.
fn json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    assert!(!lines.is_empty(), "no log at all");
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap_or("")),
                "no level: {l}"
            );
            assert!(v["message"].is_string(), "no message: {l}");
            assert!(v["timestamp"].is_string(), "no timestamp: {l}");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_json_logs_every_stderr_line_is_a_json_object() {
    let etcd = etcd_with_keys(5).await;
    let s3 = S3Container::shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = primary_toml(
        s3,
        "json-logs",
        &etcd,
        free_port(),
        dir.path(),
        "log_format = \"json\"\n[monitor.backup]\ninterval_s = 1\n[monitor.drill]\nenabled = false\n\
         [monitor.self_fence]\nenabled = false\n",
    );
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(&cfg, &text).unwrap();

    let m = Monitor::start(&cfg, Some(s3));
    m.wait_line("\"kind\":\"prune\"", Duration::from_secs(60)); // a backup, then its prune
    let (exit, log) = m.sigterm_and_wait();
    assert!(exit.success(), "{log}");
    let lines = json_lines(&log.lines().map(str::to_owned).collect::<Vec<_>>());
    let find = |msg: &str| lines.iter().find(|v| v["message"] == msg).cloned();
    assert!(find("kdr-monitor started").is_some_and(|v| v["listen"].is_string()), "{lines:?}");
    let decision = lines
        .iter()
        .find(|v| v["message"] == "decision" && v["kind"] == "backup")
        .unwrap_or_else(|| panic!("a backup decision: {lines:?}"));
    assert!(decision["detail"].as_str().unwrap().starts_with("committed "), "{decision}");
    assert_eq!(decision["level"], "INFO");
    assert!(find("kdr-monitor stopped").is_some(), "{lines:?}");
}

#[test]
fn json_logs_report_a_startup_failure_as_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = dir.path().join("kdr.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"memory://\"\n[monitor]\nlog_format = \"json\"\nlisten = \"127.0.0.1:{port}\"\n\
             state_dir = \"{}\"\n[monitor.backup]\nenabled = false\n[monitor.drill]\nenabled = false\n\
             [monitor.self_fence]\nenabled = false\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let (exit, lines) = Monitor::start(&cfg, None).wait_exit();
    assert_eq!(exit.code(), Some(1), "{lines:?}");
    let lines = json_lines(&lines);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["message"], "kdr-monitor failed", "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot listen on 127.0.0.1:{port} (monitor.listen)")),
        "{last}"
    );
    drop(taken);
}
