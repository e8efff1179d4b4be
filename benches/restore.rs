//! `kdr restore` from a local S3 server against `etcdutl snapshot restore` from a local file,
//! side by side.
//!
//! For each db size (default 800 MB; `KDR_BENCH_SIZES_MB=100,800`), it reuses the etcd db that
//! `benches/backup.rs` generates (`benches/common`, cached under `<target>/kdr-bench/`), and
//! prepares once (cached under `<target>/kdr-bench/restore-<size>mb/`): the reference snapshot
//! file (`etcdctl snapshot save`) and a backup set of the same db in an s3s-fs bucket
//! (`kdr backup`, zstd, no bundle). Then, `KDR_BENCH_RUNS` times (default 3), alternating:
//! - `etcdutl snapshot restore FILE --bump-revision 1000000000 --mark-compacted` (the reference;
//!   etcdutl checks the snapshot's sha256 trailer itself);
//! - `kdr restore --store s3://...` with the same bump: download through the codec (zstd),
//!   stored and raw sha256 and etcd's trailer verified while streaming, then the same etcdutl
//!   (told the trailer is verified), then the swap into place.
//!
//! - `kdr restore --store file://...` of the same set (the bucket's directory), to show kdr's own
//!   cost apart from the S3 server's.
//!
//! Wall time and peak RSS are the median and max over runs. RSS is polled from `/proc`: kdr's own
//! peak (`VmHWM` of the kdr process), and separately the peak of the etcdutl it runs, which is
//! the same work as the reference's. Goals (issue 4): time ratio ≤ 1.3, kdr's own peak RSS
//! ≤ 64 MiB. Nothing here asserts timings; it prints.
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

mod common;
use common::{
    BenchArgs, Measure, etcd_bin, generate, measure_polled, median, release_kdr, s3_env, start_etcd,
    start_s3s, target_dir,
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
    let (s3, endpoint) = start_s3s(&dir.join("s3"))?;
    let status = s3_env(
        Command::new(kdr).args([
            "backup",
            "--no-bundle",
            "--etcd-endpoint",
            &url,
            "--store",
            "s3://kdr/restore-bench",
        ]),
        &endpoint,
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .status()?;
    if !status.success() {
        bail!("kdr backup to s3s-fs failed");
    }
    drop(s3);
    drop(etcd);
    std::fs::write(done, b"")?;
    Ok(())
}

fn main() -> Result<()> {
    let Some(BenchArgs { sizes, runs }) = BenchArgs::from_env()? else { return Ok(()) };
    let target = target_dir();
    let bench_dir = target.join("kdr-bench");
    let kdr = release_kdr(&target, "restore", "restore")?;

    let mut rows = Vec::new();
    for &mb in &sizes {
        let data = bench_dir.join(format!("etcd-{mb}mb"));
        generate(&data, mb)?;
        let dir = bench_dir.join(format!("restore-{mb}mb"));
        prepare(&kdr, &data, &dir)?;
        let snapshot = dir.join("snapshot.db");
        let snap_size = std::fs::metadata(&snapshot)?.len();
        let (_s3, endpoint) = start_s3s(&dir.join("s3"))?;
        let out = dir.join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;

        let (mut reference, mut ours, mut ours_file, mut tool_rss) =
            (Vec::new(), Vec::new(), Vec::new(), 0u64);
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
            reference.push(r.own);
            std::fs::remove_dir_all(&ref_dir)?;

            let kdr_dir = out.join(format!("kdr-{run}"));
            let k = measure_polled(
                s3_env(
                    Command::new(&kdr)
                        .args([
                            "restore",
                            "--store",
                            "s3://kdr/restore-bench",
                            "--no-bundle",
                            "--name",
                            "default",
                        ])
                        .args([
                            "--initial-advertise-peer-urls",
                            "http://127.0.0.1:2380",
                            "--bump-revision",
                            BUMP,
                        ])
                        .arg("--data-dir")
                        .arg(&kdr_dir)
                        .env("KDR_ETCDUTL", etcd_bin("etcdutl")),
                    &endpoint,
                ),
                "kdr restore",
            )?;
            ours.push(k.own);
            tool_rss = tool_rss.max(k.children_rss_kib);
            if !kdr_dir.join("member/snap/db").exists() {
                bail!("kdr restore left no db in {}", kdr_dir.display());
            }
            std::fs::remove_dir_all(&kdr_dir)?;

            // The same set read from the bucket's directory directly (file://): kdr without the
            // S3 server's cost.
            let file_dir = out.join(format!("kdr-file-{run}"));
            let f = measure_polled(
                Command::new(&kdr)
                    .args(["restore", "--no-bundle", "--name", "default", "--store"])
                    .arg(format!("file://{}", dir.join("s3/kdr/restore-bench").display()))
                    .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--bump-revision", BUMP])
                    .arg("--data-dir")
                    .arg(&file_dir)
                    .env("KDR_ETCDUTL", etcd_bin("etcdutl")),
                "kdr restore from file://",
            )?;
            ours_file.push(f.own);
            std::fs::remove_dir_all(&file_dir)?;
        }
        rows.push((
            mb,
            snap_size,
            median(&mut reference),
            median(&mut ours),
            tool_rss,
            median(&mut ours_file),
        ));
    }

    println!();
    println!(
        "kdr restore (s3s-fs) vs etcdutl snapshot restore (local file), both --bump-revision {BUMP} --mark-compacted"
    );
    println!(
        "median of {runs} runs; peak RSS is the max over runs (kdr: its own process; etcdutl under kdr: separately)"
    );
    println!(
        "{:>8} {:>11} | {:>22} | {:>39} | {:>14} | {:>30}",
        "db",
        "snapshot",
        "etcdutl <- file",
        "kdr restore <- s3s-fs",
        "etcdutl in kdr",
        "kdr restore <- file://"
    );
    println!(
        "{:>8} {:>11} | {:>8} {:>6} {:>6} | {:>8} {:>6} {:>6} {:>7} {:>8} | {:>14} | {:>8} {:>6} {:>6} {:>7}",
        "",
        "bytes",
        "s",
        "MiB",
        "MB/s",
        "s",
        "MiB",
        "MB/s",
        "time x",
        "RSS x",
        "MiB",
        "s",
        "MiB",
        "MB/s",
        "time x"
    );
    for (mb, size, e, k, tool, f) in &rows {
        let mbps = |m: &Measure| *size as f64 / 1e6 / m.secs.max(0.001);
        println!(
            "{:>6}MB {:>11} | {:>8.2} {:>6.1} {:>6.0} | {:>8.2} {:>6.1} {:>6.0} {:>7.2} {:>8.2} | {:>14.1} | {:>8.2} {:>6.1} {:>6.0} {:>7.2}",
            mb,
            size,
            e.secs,
            e.rss_kib as f64 / 1024.0,
            mbps(e),
            k.secs,
            k.rss_kib as f64 / 1024.0,
            mbps(k),
            k.secs / e.secs.max(0.001),
            k.rss_kib as f64 / e.rss_kib.max(1) as f64,
            *tool as f64 / 1024.0,
            f.secs,
            f.rss_kib as f64 / 1024.0,
            mbps(f),
            f.secs / e.secs.max(0.001),
        );
    }
    println!("goal: kdr time ratio <= 1.3, kdr's own peak RSS <= 64 MiB");
    Ok(())
}
