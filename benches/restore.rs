//! `kdr restore` from local S3 servers against `etcdutl snapshot restore` from a local file,
//! side by side.
//!
//! For each db size (default 800 MB; `KDR_BENCH_SIZES_MB=100,800`), it reuses the etcd db that
//! `benches/backup.rs` generates (`benches/common`, cached under `<target>/kdr-bench/`), and
//! prepares once (cached under `<target>/kdr-bench/restore-<size>mb/`): the reference snapshot
//! file (`etcdctl snapshot save`) and a backup set of the same db in an s3s-fs bucket
//! (`kdr backup`, zstd, no bundle); Garage (`common::s3`) gets a fresh backup of the same db per
//! bench run. Then, `KDR_BENCH_RUNS` times (default 3), alternating, each after a `sync`:
//! - `etcdutl snapshot restore FILE --bump-revision 1000000000 --mark-compacted` (the reference;
//!   etcdutl checks the snapshot's sha256 trailer itself);
//! - `kdr restore --store s3://...` from each server (`KDR_BENCH_S3`, default s3s-fs and
//!   Garage) with the same bump: download through the codec (zstd), the stored sha256 verified
//!   while streaming, then the same etcdutl (told to skip its hash pass) while kdr checks the raw
//!   sha256 and etcd's trailer beside it, then the swap into place;
//! - `kdr restore --store file://...` of the s3s-fs set (the bucket's directory), to show kdr's
//!   own cost apart from any S3 server's.
//!
//! Wall time and peak RSS are the median and max over runs. RSS is polled from `/proc`: kdr's own
//! peak (`VmHWM` of the kdr process), and separately the peak of the etcdutl it runs, which is
//! the same work as the reference's. Goals (issue 4): time ratio ≤ 1.3, kdr's own peak RSS
//! ≤ 64 MiB. Nothing here asserts timings; it prints.
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

mod common;
use common::s3::{S3, S3Kind};
use common::{
    BenchArgs, Tool, etcd_bin, generate, measure_polled, median_of, release_kdr, start_etcd, target_dir,
};

const BUMP: &str = "1000000000";

/// The snapshot file and the S3 backup set of `data`, made once.
fn prepare(kdr: &Path, data: &Path, dir: &Path) -> Result<()> {
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir.join("s3/kdr"))?;
    eprintln!(
        "preparing the restore bench's snapshot file and S3 backup set in {} (once; cached)",
        dir.display()
    );
    let (etcd, url) = start_etcd(data, &[])?;
    let status = Command::new(etcd_bin("etcdctl"))
        .arg(format!("--endpoints={url}"))
        .args(["snapshot", "save"])
        .arg(dir.join("snapshot.db"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("etcdctl snapshot save failed");
    }
    let s3 = S3::start(S3Kind::S3sFs, &dir.join("s3"))?;
    backup_into(kdr, &url, &s3)?;
    drop(s3);
    drop(etcd);
    std::fs::write(done, b"")?;
    Ok(())
}

/// `kdr backup` of the etcd at `url` into `s3://kdr/restore-bench` on `s3` (not measured).
fn backup_into(kdr: &Path, url: &str, s3: &S3) -> Result<()> {
    let status = s3
        .env(Command::new(kdr).args([
            "backup",
            "--no-bundle",
            "--etcd-endpoint",
            url,
            "--store",
            "s3://kdr/restore-bench",
        ]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kdr backup to {} failed", s3.kind.name());
    }
    Ok(())
}

fn main() -> Result<()> {
    let Some(BenchArgs { sizes, runs }) = BenchArgs::from_env()? else { return Ok(()) };
    let target = target_dir();
    let bench_dir = target.join("kdr-bench");
    let kdr = release_kdr(&target, "restore", "restore")?;
    let servers = S3Kind::from_env()?;

    let mut rows = Vec::new();
    for &mb in &sizes {
        let data = bench_dir.join(format!("etcd-{mb}mb"));
        generate(&data, mb)?;
        let dir = bench_dir.join(format!("restore-{mb}mb"));
        prepare(&kdr, &data, &dir)?;
        let snapshot = dir.join("snapshot.db");
        let snap_size = std::fs::metadata(&snapshot)?.len();
        let out = dir.join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;
        // s3s-fs serves the cached set from its directory; Garage keeps its own format, so it
        // gets a fresh backup of the same db.
        let mut stores = Vec::new();
        for &kind in &servers {
            let s3 = match kind {
                S3Kind::S3sFs => S3::start(kind, &dir.join("s3"))?,
                S3Kind::Garage => {
                    let s3 = S3::start(kind, &out.join("garage"))?;
                    let (etcd, url) = start_etcd(&data, &[])?;
                    backup_into(&kdr, &url, &s3)?;
                    drop(etcd);
                    s3
                }
            };
            stores.push(s3);
        }

        let mut tools = vec![Tool::new("etcdutl <- file")];
        for s3 in &stores {
            tools.push(Tool::new(format!("kdr restore <- {}", s3.kind.name())));
        }
        tools.push(Tool::new("kdr restore <- file://"));
        let kdr_restore = |store: &str, data_dir: &Path| {
            let mut cmd = Command::new(&kdr);
            cmd.args(["restore", "--no-bundle", "--name", "default", "--store", store])
                .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--bump-revision", BUMP])
                .arg("--data-dir")
                .arg(data_dir)
                .env("KDR_ETCDUTL", etcd_bin("etcdutl"));
            cmd
        };
        for run in 0..runs {
            let ref_dir = out.join(format!("etcdutl-{run}"));
            let r = measure_polled(
                Command::new(etcd_bin("etcdutl"))
                    .args(["snapshot", "restore"])
                    .arg(&snapshot)
                    .arg("--data-dir")
                    .arg(&ref_dir)
                    .args(["--bump-revision", BUMP, "--mark-compacted"]),
                "etcdutl snapshot restore",
            )?;
            tools[0].push_polled(r, 0.0);
            std::fs::remove_dir_all(&ref_dir)?;

            let mut slot = 1;
            for s3 in &stores {
                let kdr_dir = out.join(format!("kdr-{}-{run}", s3.kind.name()));
                let s3_before = s3.cpu_secs();
                let k = measure_polled(
                    s3.env(&mut kdr_restore("s3://kdr/restore-bench", &kdr_dir)),
                    &format!("kdr restore from {}", s3.kind.name()),
                )?;
                tools[slot].push_polled(k, s3.cpu_secs() - s3_before);
                if !kdr_dir.join("member/snap/db").exists() {
                    bail!("kdr restore left no db in {}", kdr_dir.display());
                }
                std::fs::remove_dir_all(&kdr_dir)?;
                slot += 1;
            }

            // The s3s-fs set read from the bucket's directory directly (file://): kdr without an
            // S3 server's cost.
            let file_dir = out.join(format!("kdr-file-{run}"));
            let store = format!("file://{}", dir.join("s3/kdr/restore-bench").display());
            let f = measure_polled(&mut kdr_restore(&store, &file_dir), "kdr restore from file://")?;
            tools[slot].push_polled(f, 0.0);
            std::fs::remove_dir_all(&file_dir)?;
        }
        drop(stores);
        rows.push((mb, snap_size, tools));
    }

    println!();
    println!(
        "kdr restore vs etcdutl snapshot restore (local file), both --bump-revision {BUMP} --mark-compacted"
    );
    println!(
        "median of {runs} runs; peak RSS is the max over runs (kdr: its own process; the etcdutl it runs: separately); \
         CPU s: the tool with the etcdutl it runs; S3: the server's CPU s"
    );
    println!(
        "{:>7} {:>11}  {:<28} {:>7} {:>7} {:>8} {:>6} {:>6} {:>7} {:>15}",
        "db", "snapshot", "tool", "wall s", "MB/s", "RSS MiB", "CPU s", "S3", "time x", "its etcdutl MiB"
    );
    for (mb, size, tools) in &rows {
        let reference = tools[0].median();
        for tool in tools {
            let m = tool.median();
            println!(
                "{:>5}MB {:>11}  {:<28} {:>7.2} {:>7.0} {:>8.1} {:>6.2} {:>6.2} {:>7.2} {:>15}",
                mb,
                size,
                tool.name,
                m.secs,
                *size as f64 / 1e6 / m.secs.max(0.001),
                m.rss_kib as f64 / 1024.0,
                m.cpu_secs,
                median_of(tool.server_cpu.clone()),
                m.secs / reference.secs.max(0.001),
                if tool.children_rss_kib > 0 {
                    format!("{:.1}", tool.children_rss_kib as f64 / 1024.0)
                } else {
                    "-".into()
                },
            );
        }
    }
    println!("goal: kdr time ratio <= 1.3, kdr's own peak RSS <= 64 MiB");
    Ok(())
}
