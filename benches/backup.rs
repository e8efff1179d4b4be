//! `kdr backup` against `etcdctl snapshot save`, side by side.
//!
//! For each db size (default 800 MB; `KDR_BENCH_SIZES_MB=100,800,1600` for the flat-memory
//! curve) it generates an etcd db once (cached under `<target>/kdr-bench/`), serves it with a
//! local etcd 3.5, and measures wall time and peak RSS (`/usr/bin/time -f '%e %M'`; Debian
//! package `time`) of:
//! - `etcdctl snapshot save` to local disk (the reference: what the seeds run);
//! - `kdr backup` (release build) to a local S3 server (s3s-fs, `$KDR_S3S_FS`), with sha256
//!   verification and zstd on (the default), no bundle: once with the payload signed (the
//!   default over plain http, where s3s-fs also hashes every body to check it) and once with
//!   `UNSIGNED-PAYLOAD` (the default over https);
//! - `kdr backup` to a local directory (`file://`), for reference.
//!
//! Each is run `KDR_BENCH_RUNS` times (default 3), alternating; the median is printed, with
//! kdr's ratios to etcdctl. Goals (issue 3): wall-time ratio ≤ 1.0, kdr's peak RSS ≤ 48 MiB and
//! flat across sizes. Nothing here asserts timings; it prints.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

const VALUE_SIZE: usize = 8 * 1024;
const PUTS_PER_TXN: usize = 96;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn etcd_bin(name: &str) -> PathBuf {
    match std::env::var_os("KDR_ETCD_3_5_DIR") {
        Some(d) => Path::new(&d).join(name),
        None => PathBuf::from(name),
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start listening on port {port}")
}

fn start_etcd(data_dir: &Path, extra: &[&str]) -> Result<(Server, String)> {
    let port = free_port()?;
    let peer = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(data_dir.with_extension("log"))?;
    let child = Command::new(etcd_bin("etcd"))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        .arg("--quota-backend-bytes=8589934592")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start etcd (source .tools/env for KDR_ETCD_3_5_DIR)")?;
    let server = Server(child);
    wait_port(port, "etcd")?;
    std::thread::sleep(Duration::from_millis(500));
    Ok((server, url))
}

/// Generates a db of about `mb` MB: 8 KiB values, half noise and half text (Kubernetes objects
/// compress roughly 2-4x), in /registry/<resource>/ keys.
fn generate(dir: &Path, mb: usize) -> Result<()> {
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir.parent().unwrap())?;
    eprintln!("generating a {mb} MB etcd db in {} (once; cached)", dir.display());
    let (server, url) = start_etcd(dir, &["--unsafe-no-fsync"])?;
    let keys = mb * 1024 * 1024 / VALUE_SIZE;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = etcd_client::Client::connect([url.as_str()], None).await?;
        let mut tasks = Vec::new();
        let workers = 4;
        for w in 0..workers {
            let mut kv = client.kv_client();
            tasks.push(tokio::spawn(async move {
                let mut x: u64 = 0x9e3779b97f4a7c15 ^ (w as u64 + 1);
                let text =
                    b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"namespace\":\"bench\"}}";
                let mut i = w;
                while i < keys {
                    let mut ops = Vec::new();
                    for j in i..(i + PUTS_PER_TXN * workers).min(keys) {
                        if j % workers != w {
                            continue;
                        }
                        let mut value = Vec::with_capacity(VALUE_SIZE);
                        while value.len() < VALUE_SIZE / 2 {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            value.extend_from_slice(&x.to_le_bytes());
                        }
                        while value.len() < VALUE_SIZE {
                            value.extend_from_slice(text);
                        }
                        value.truncate(VALUE_SIZE);
                        let resource = ["configmaps", "secrets", "pods", "events"][j % 4];
                        ops.push(etcd_client::TxnOp::put(
                            format!("/registry/{resource}/bench/obj-{j:08}"),
                            value,
                            None,
                        ));
                    }
                    kv.txn(etcd_client::Txn::new().and_then(ops)).await?;
                    i += PUTS_PER_TXN * workers;
                }
                Ok::<_, etcd_client::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    drop(server);
    std::fs::write(done, b"")?;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct Measure {
    secs: f64,
    rss_kib: u64,
}

/// Runs `cmd` under /usr/bin/time and returns (wall seconds, peak RSS KiB).
fn measure(cmd: &mut Command, what: &str) -> Result<Measure> {
    let times = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-o").arg(times.path()).arg("-f").arg("%e %M").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = timed.output().context("run /usr/bin/time (apt-get install time)")?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(times.path())?;
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().context("time output")?.parse()?;
    let rss_kib: u64 = it.next().context("time output")?.parse()?;
    Ok(Measure { secs, rss_kib })
}

fn median(v: &mut [Measure]) -> Measure {
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let secs = v[v.len() / 2].secs;
    let rss_kib = v.iter().map(|m| m.rss_kib).max().unwrap_or(0);
    Measure { secs, rss_kib }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists harness=false benches this way: nothing to list.
        return Ok(());
    }
    let sizes: Vec<usize> = std::env::var("KDR_BENCH_SIZES_MB")
        .unwrap_or_else(|_| "800".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .context("KDR_BENCH_SIZES_MB: comma-separated sizes in MB")?;
    let runs: usize = std::env::var("KDR_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let s3s = std::env::var_os("KDR_S3S_FS").map(PathBuf::from).context("KDR_S3S_FS (source .tools/env)")?;
    let target = target_dir();
    let bench_dir = target.join("kdr-bench");
    std::fs::create_dir_all(&bench_dir)?;

    eprintln!("building the release kdr binary");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "kdr-cli", "--bin", "kdr"])
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p kdr-cli failed");
    }
    let kdr = target.join("release/kdr");

    let mut rows = Vec::new();
    for &mb in &sizes {
        let data = bench_dir.join(format!("etcd-{mb}mb"));
        generate(&data, mb)?;
        let (_etcd, url) = start_etcd(&data, &[])?;
        let mut db_size = 0;
        let out_dir = bench_dir.join("out");
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir)?;

        let mut results: Vec<(&str, Vec<Measure>)> = vec![
            ("etcdctl snapshot save -> disk", Vec::new()),
            ("kdr backup -> s3s-fs (signed payload, default over http)", Vec::new()),
            ("kdr backup -> s3s-fs (unsigned payload, default over https)", Vec::new()),
            ("kdr backup -> file://", Vec::new()),
        ];
        for run in 0..runs {
            let snap = out_dir.join("etcdctl.db");
            let _ = std::fs::remove_file(&snap);
            results[0].1.push(measure(
                Command::new(etcd_bin("etcdctl"))
                    .arg(format!("--endpoints={url}"))
                    .args(["snapshot", "save"])
                    .arg(&snap),
                "etcdctl snapshot save",
            )?);
            // The snapshot's size is the data both tools move.
            db_size = std::fs::metadata(&snap)?.len();
            std::fs::remove_file(&snap)?;

            for (slot, unsigned) in [(1, "false"), (2, "true")] {
                // A fresh S3 server and bucket per run, storing on the same disk.
                let s3_root = out_dir.join(format!("s3-{run}"));
                std::fs::create_dir_all(s3_root.join("kdr"))?;
                let port = free_port()?;
                let child = Command::new(&s3s)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", "bench", "--secret-key", "bench-secret"])
                    .arg(&s3_root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start s3s-fs")?;
                let s3 = Server(child);
                wait_port(port, "s3s-fs")?;
                results[slot].1.push(measure(
                    Command::new(&kdr)
                        .args(["backup", "--no-bundle", "--etcd-endpoint", &url, "--store", "s3://kdr/bench"])
                        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
                        .env("AWS_ALLOW_HTTP", "true")
                        .env("AWS_ACCESS_KEY_ID", "bench")
                        .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
                        .env("AWS_REGION", "us-east-1")
                        .env("KDR_STORE_UNSIGNED_PAYLOAD", unsigned),
                    "kdr backup to s3s-fs",
                )?);
                drop(s3);
                std::fs::remove_dir_all(&s3_root)?;
            }

            let file_store = out_dir.join("file-store");
            results[3].1.push(measure(
                Command::new(&kdr)
                    .args(["backup", "--no-bundle", "--etcd-endpoint", &url, "--store"])
                    .arg(format!("file://{}", file_store.display())),
                "kdr backup to file://",
            )?);
            std::fs::remove_dir_all(&file_store)?;
        }
        let medians: Vec<(&str, Measure)> = results.iter_mut().map(|(name, v)| (*name, median(v))).collect();
        rows.push((mb, db_size, medians));
    }

    println!();
    println!(
        "kdr backup vs etcdctl snapshot save: median wall time of {runs} runs, max peak RSS; zstd and sha256 on"
    );
    println!(
        "{:>7} {:>9}  {:<62} {:>7} {:>7} {:>8} {:>7} {:>7}",
        "db", "snapshot", "tool", "wall s", "MB/s", "RSS MiB", "time x", "RSS x"
    );
    for (mb, db, medians) in &rows {
        let reference = medians[0].1;
        for (name, m) in medians {
            println!(
                "{:>5}MB {:>9}  {:<62} {:>7.2} {:>7.0} {:>8.1} {:>7.2} {:>7.2}",
                mb,
                db,
                name,
                m.secs,
                *db as f64 / 1e6 / m.secs.max(0.001),
                m.rss_kib as f64 / 1024.0,
                m.secs / reference.secs.max(0.001),
                m.rss_kib as f64 / reference.rss_kib.max(1) as f64,
            );
        }
    }
    println!("goal: kdr -> s3s-fs time ratio <= 1.0, peak RSS <= 48 MiB and flat across sizes");
    Ok(())
}
