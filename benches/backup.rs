//! `kdr backup` against `etcdctl snapshot save`, side by side.
//!
//! For each db size (default 800 MB; `KDR_BENCH_SIZES_MB=100,800,1600` for the flat-memory
//! curve) it generates an etcd db once (cached under `<target>/kdr-bench/`), serves it with a
//! local etcd 3.5, and measures wall time, peak RSS and CPU time (`/usr/bin/time`; Debian
//! package `time`) of:
//! - `etcdctl snapshot save` to local disk (the reference: what the seeds run);
//! - `kdr backup` (release build) to each local S3 server (`common::s3`: s3s-fs and Garage;
//!   `KDR_BENCH_S3` picks), with sha256 verification and zstd on (the default), no bundle: once
//!   with the payload signed (the default over plain http, where the server also hashes every
//!   body to check it) and once with `UNSIGNED-PAYLOAD` (the default over https);
//! - `kdr backup` to a local directory (`file://`), for reference.
//!
//! Each is run `KDR_BENCH_RUNS` times (default 3), alternating, after a `sync`; each S3 server
//! runs for all of them (each run writes its own prefix); the median is printed, with
//! kdr's ratios to etcdctl. Goals (issue 3): wall-time ratio ≤ 1.0, kdr's peak RSS ≤ 48 MiB and
//! flat across sizes. Nothing here asserts timings; it prints.
use std::process::Command;

use anyhow::Result;

mod common;
use common::s3::{S3, S3Kind};
use common::{BenchArgs, Tool, etcd_bin, generate, measure, median_of, release_kdr, start_etcd, target_dir};

fn main() -> Result<()> {
    let Some(BenchArgs { sizes, runs }) = BenchArgs::from_env()? else { return Ok(()) };
    let servers = S3Kind::from_env()?;
    let target = target_dir();
    let bench_dir = target.join("kdr-bench");
    std::fs::create_dir_all(&bench_dir)?;

    let kdr = release_kdr(&target, "backup", "backup")?;

    let mut rows = Vec::new();
    for &mb in &sizes {
        let data = bench_dir.join(format!("etcd-{mb}mb"));
        generate(&data, mb)?;
        let (etcd, url) = start_etcd(&data, &[])?;
        let mut db_size = 0;
        let out_dir = bench_dir.join("out");
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir)?;

        // One server of each kind for all runs, as a store is in use (a fresh one is slower on its
        // first objects); every run writes its own prefix, and the data goes at the end.
        let stores = servers
            .iter()
            .map(|&kind| S3::start(kind, &out_dir.join(kind.name())))
            .collect::<Result<Vec<_>>>()?;
        let mut tools = vec![Tool::new("etcdctl snapshot save -> disk")];
        for kind in &servers {
            for (payload, when) in [("signed", "default over http"), ("unsigned", "default over https")] {
                tools.push(Tool::new(format!("kdr backup -> {} ({payload} payload, {when})", kind.name())));
            }
        }
        tools.push(Tool::new("kdr backup -> file://"));
        for run in 0..runs {
            let snap = out_dir.join("etcdctl.db");
            let _ = std::fs::remove_file(&snap);
            let etcd_before = etcd.cpu_secs();
            let m = measure(
                Command::new(etcd_bin("etcdctl"))
                    .arg(format!("--endpoints={url}"))
                    .args(["snapshot", "save"])
                    .arg(&snap),
                "etcdctl snapshot save",
            )?;
            tools[0].push(m, etcd.cpu_secs() - etcd_before, 0.0);
            // The snapshot's size is the data both tools move.
            db_size = std::fs::metadata(&snap)?.len();
            std::fs::remove_file(&snap)?;

            let mut slot = 1;
            for s3 in &stores {
                for unsigned in ["false", "true"] {
                    let store = format!(
                        "s3://kdr/bench-{run}-{}",
                        if unsigned == "true" { "unsigned" } else { "signed" }
                    );
                    let (etcd_before, s3_before) = (etcd.cpu_secs(), s3.cpu_secs());
                    let m = measure(
                        s3.env(
                            Command::new(&kdr)
                                .args(["backup", "--no-bundle", "--etcd-endpoint", &url, "--store", &store])
                                .env("KDR_STORE_UNSIGNED_PAYLOAD", unsigned),
                        ),
                        &format!("kdr backup to {}", s3.kind.name()),
                    )?;
                    tools[slot].push(m, etcd.cpu_secs() - etcd_before, s3.cpu_secs() - s3_before);
                    slot += 1;
                }
            }

            let file_store = out_dir.join("file-store");
            let etcd_before = etcd.cpu_secs();
            let m = measure(
                Command::new(&kdr)
                    .args(["backup", "--no-bundle", "--etcd-endpoint", &url, "--store"])
                    .arg(format!("file://{}", file_store.display())),
                "kdr backup to file://",
            )?;
            tools[slot].push(m, etcd.cpu_secs() - etcd_before, 0.0);
            std::fs::remove_dir_all(&file_store)?;
        }
        drop(stores);
        std::fs::remove_dir_all(&out_dir)?;
        rows.push((mb, db_size, tools));
    }

    println!();
    println!(
        "kdr backup vs etcdctl snapshot save: median wall time of {runs} runs, max peak RSS, median CPU \
         seconds of the tool, of etcd serving it, and of the S3 server; zstd and sha256 on"
    );
    println!(
        "{:>7} {:>10}  {:<62} {:>7} {:>6} {:>8} {:>6} {:>6} {:>6} {:>7} {:>6}",
        "db", "snapshot", "tool", "wall s", "MB/s", "RSS MiB", "CPU s", "etcd", "S3", "time x", "RSS x"
    );
    for (mb, db, tools) in &rows {
        let reference = tools[0].median();
        for tool in tools {
            let m = tool.median();
            println!(
                "{:>5}MB {:>10}  {:<62} {:>7.2} {:>6.0} {:>8.1} {:>6.2} {:>6.2} {:>6.2} {:>7.2} {:>6.2}",
                mb,
                db,
                tool.name,
                m.secs,
                *db as f64 / 1e6 / m.secs.max(0.001),
                m.rss_kib as f64 / 1024.0,
                m.cpu_secs,
                median_of(tool.etcd_cpu.clone()),
                median_of(tool.server_cpu.clone()),
                m.secs / reference.secs.max(0.001),
                m.rss_kib as f64 / reference.rss_kib.max(1) as f64,
            );
        }
    }
    println!("goal: kdr -> local S3 time ratio <= 1.0, peak RSS <= 48 MiB and flat across sizes");
    Ok(())
}
