//! `kdr backup` against `etcdctl snapshot save`, side by side.
//!
//! For each db size (default 800 MB; `KDR_BENCH_SIZES_MB=100,800,1600` for the flat-memory
//! curve) it generates an etcd db once (cached under `<target>/kdr-bench/`), serves it with a
//! local etcd 3.5, and measures wall time and peak RSS (`/usr/bin/time -f '%e %M'`; Debian
//! package `time`) of:
//! - `etcdctl snapshot save` to local disk (the reference: what the seeds run);
//! - `kdr backup` (release build) to a local S3 server (s3s-fs, `$KDR_S3S_FS`), with sha256
//!   verification and zstd on (the default), no bundle;
//! - `kdr backup` to a local directory (`file://`), for reference.
//!
//! Each is run `KDR_BENCH_RUNS` times (default 3), alternating; the median is printed, with
//! kdr's ratios to etcdctl. Goals (issue 3): wall-time ratio ≤ 1.0, kdr's peak RSS ≤ 48 MiB and
//! flat across sizes. Nothing here asserts timings; it prints.
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod common;
use common::{
    Measure, Server, etcd_bin, free_port, generate, measure, median, start_etcd, target_dir, wait_port,
};

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

        let (mut etcdctl, mut kdr_s3, mut kdr_file) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let snap = out_dir.join("etcdctl.db");
            let _ = std::fs::remove_file(&snap);
            etcdctl.push(measure(
                Command::new(etcd_bin("etcdctl"))
                    .arg(format!("--endpoints={url}"))
                    .args(["snapshot", "save"])
                    .arg(&snap),
                "etcdctl snapshot save",
            )?);
            // The snapshot's size is the data both tools move.
            db_size = std::fs::metadata(&snap)?.len();
            std::fs::remove_file(&snap)?;

            // A fresh S3 server and bucket per run, storing on the same disk.
            let s3_root = out_dir.join(format!("s3-{run}"));
            std::fs::create_dir_all(s3_root.join("kdr"))?;
            let port = free_port()?;
            let child = Command::new(&s3s)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--access-key",
                    "bench",
                    "--secret-key",
                    "bench-secret",
                ])
                .arg(&s3_root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start s3s-fs")?;
            let s3 = Server(child);
            wait_port(port, "s3s-fs")?;
            kdr_s3.push(measure(
                Command::new(&kdr)
                    .args(["backup", "--no-bundle", "--etcd-endpoint", &url, "--store", "s3://kdr/bench"])
                    .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "bench")
                    .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
                    .env("AWS_REGION", "us-east-1"),
                "kdr backup to s3s-fs",
            )?);
            drop(s3);
            std::fs::remove_dir_all(&s3_root)?;

            let file_store = out_dir.join("file-store");
            kdr_file.push(measure(
                Command::new(&kdr)
                    .args(["backup", "--no-bundle", "--etcd-endpoint", &url, "--store"])
                    .arg(format!("file://{}", file_store.display())),
                "kdr backup to file://",
            )?);
            std::fs::remove_dir_all(&file_store)?;
        }
        rows.push((mb, db_size, median(&mut etcdctl), median(&mut kdr_s3), median(&mut kdr_file)));
    }

    println!();
    println!("kdr backup vs etcdctl snapshot save (median of {runs} runs; peak RSS is the max over runs)");
    println!(
        "{:>8} {:>10} | {:>22} | {:>30} | {:>30}",
        "db",
        "snapshot",
        "etcdctl save -> disk",
        "kdr backup -> s3s-fs (zstd)",
        "kdr backup -> file:// (zstd)"
    );
    println!(
        "{:>8} {:>10} | {:>8} {:>6} {:>6} | {:>8} {:>6} {:>6} {:>7} | {:>8} {:>6} {:>6} {:>7}",
        "", "", "s", "MiB", "MB/s", "s", "MiB", "MB/s", "time x", "s", "MiB", "MB/s", "time x"
    );
    for (mb, db, e, s, f) in &rows {
        let mbps = |m: &Measure| *db as f64 / 1e6 / m.secs.max(0.001);
        println!(
            "{:>6}MB {:>10} | {:>8.2} {:>6.1} {:>6.0} | {:>8.2} {:>6.1} {:>6.0} {:>7.2} | {:>8.2} {:>6.1} {:>6.0} {:>7.2}",
            mb,
            db,
            e.secs,
            e.rss_kib as f64 / 1024.0,
            mbps(e),
            s.secs,
            s.rss_kib as f64 / 1024.0,
            mbps(s),
            s.secs / e.secs.max(0.001),
            f.secs,
            f.rss_kib as f64 / 1024.0,
            mbps(f),
            f.secs / e.secs.max(0.001),
        );
    }
    println!("goal: kdr -> s3s-fs time ratio <= 1.0, peak RSS <= 48 MiB and flat across sizes");
    Ok(())
}
