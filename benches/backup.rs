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
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod common;
use common::{
    BenchArgs, Measure, Server, etcd_bin, free_port, generate, measure, median, start_etcd, target_dir,
    wait_port,
};

fn main() -> Result<()> {
    let Some(BenchArgs { sizes, runs }) = BenchArgs::from_env()? else { return Ok(()) };
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
