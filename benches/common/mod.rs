//! Helpers shared by the benches: the etcd db generator (its dbs are cached under
//! `<target>/kdr-bench/` and reused by every bench), local etcd and S3 servers (`s3`), the release
//! `kdr` binary, and timing with CPU time and peak RSS.
#![allow(dead_code)] // each bench uses a subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub mod s3;

const VALUE_SIZE: usize = 8 * 1024;
const PUTS_PER_TXN: usize = 96;

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

pub fn etcd_bin(name: &str) -> PathBuf {
    match std::env::var_os("KDR_ETCD_3_5_DIR") {
        Some(d) => Path::new(&d).join(name),
        None => PathBuf::from(name),
    }
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed on drop.
pub struct Server(pub Child);

impl Server {
    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.0.id()).map(|(own, _)| own).unwrap_or(0.0)
    }
}

/// CPU seconds of `pid` itself and of its waited-for children, from `/proc/<pid>/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: state is the first, utime the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    const HZ: f64 = 100.0; // USER_HZ on Linux
    Some(((ticks(11)? + ticks(12)?) / HZ, (ticks(13)? + ticks(14)?) / HZ))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_port(port: u16, what: &str) -> Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start listening on port {port}")
}

pub fn start_etcd(data_dir: &Path, extra: &[&str]) -> Result<(Server, String)> {
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
pub fn generate(dir: &Path, mb: usize) -> Result<()> {
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
pub struct Measure {
    /// Wall time in seconds.
    pub secs: f64,
    /// CPU seconds (user + system) of the process and the children it waited for.
    pub cpu_secs: f64,
    /// Peak RSS in KiB.
    pub rss_kib: u64,
}

/// Writes back every dirty page (`sync`) before a measured run, so that the gigabyte the last
/// run wrote is not flushed by the kernel in the middle of this one.
pub fn settle() -> Result<()> {
    let status = Command::new("sync").status().context("run sync")?;
    if !status.success() {
        bail!("sync failed");
    }
    Ok(())
}

/// Runs `cmd` under /usr/bin/time (after [`settle`]) and returns its wall time, CPU time and peak
/// RSS.
pub fn measure(cmd: &mut Command, what: &str) -> Result<Measure> {
    settle()?;
    let times = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-o")
        .arg(times.path())
        .arg("-f")
        .arg("%e %M %U %S")
        .arg(cmd.get_program())
        .args(cmd.get_args());
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
    let user: f64 = it.next().context("time output")?.parse()?;
    let sys: f64 = it.next().context("time output")?.parse()?;
    Ok(Measure { secs, cpu_secs: user + sys, rss_kib })
}

/// The median wall time and the median CPU time (each of its own), and the largest peak RSS.
pub fn median(v: &[Measure]) -> Measure {
    let cpu_secs = median_of(v.iter().map(|m| m.cpu_secs).collect());
    let secs = median_of(v.iter().map(|m| m.secs).collect());
    let rss_kib = v.iter().map(|m| m.rss_kib).max().unwrap_or(0);
    Measure { secs, cpu_secs, rss_kib }
}

/// One row of a bench: a tool's runs, and what else was measured meanwhile (the CPU seconds of the
/// etcd serving it and of the S3 server, the peak RSS of the child processes it ran).
pub struct Tool {
    pub name: String,
    pub runs: Vec<Measure>,
    pub etcd_cpu: Vec<f64>,
    pub server_cpu: Vec<f64>,
    pub children_rss_kib: u64,
}

impl Tool {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            runs: Vec::new(),
            etcd_cpu: Vec::new(),
            server_cpu: Vec::new(),
            children_rss_kib: 0,
        }
    }

    /// Records a run and the CPU seconds etcd and the S3 server spent during it.
    pub fn push(&mut self, m: Measure, etcd_cpu: f64, server_cpu: f64) {
        self.runs.push(m);
        self.etcd_cpu.push(etcd_cpu);
        self.server_cpu.push(server_cpu);
    }

    /// Records a polled run ([`measure_polled`]) and the S3 server's CPU seconds during it.
    pub fn push_polled(&mut self, p: Polled, server_cpu: f64) {
        self.push(p.own, 0.0, server_cpu);
        self.children_rss_kib = self.children_rss_kib.max(p.children_rss_kib);
    }

    pub fn median(&self) -> Measure {
        median(&self.runs)
    }
}

/// The median of `v` (the upper one of an even count); 0 when empty.
pub fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Builds the release `kdr` and copies it to `<bench dir>/kdr-<tag>`, so that another build in a
/// shared target dir cannot swap the binary under a running bench. Checks it has `subcommand`.
pub fn release_kdr(target: &Path, tag: &str, subcommand: &str) -> Result<PathBuf> {
    eprintln!("building the release kdr binary");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "kdr-cli", "--bin", "kdr"])
        .env("CARGO_TARGET_DIR", target)
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p kdr-cli failed");
    }
    let copy = target.join("kdr-bench").join(format!("kdr-{tag}"));
    std::fs::create_dir_all(copy.parent().unwrap())?;
    std::fs::copy(target.join("release/kdr"), &copy)?;
    let help = Command::new(&copy).args([subcommand, "--help"]).output()?;
    if !help.status.success() {
        bail!("the kdr just built has no `{subcommand}` (another build replaced it?); run the bench again");
    }
    Ok(copy)
}

/// What [`measure_polled`] saw.
#[derive(Clone, Copy, Debug)]
pub struct Polled {
    /// Wall time, CPU time (the process and the children it waited for, e.g. kdr's etcdutl) and
    /// the peak RSS of the process itself (its `VmHWM`, children excluded).
    pub own: Measure,
    /// The peak RSS of any of its child processes (e.g. the etcdutl that `kdr restore` runs), KiB.
    pub children_rss_kib: u64,
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `cmd` (after [`settle`]), polling `/proc` every 5 ms for the peak RSS of the process itself (`VmHWM`, a
/// high-water mark, so a late poll still sees an earlier peak) and of its children; `/usr/bin/time`
/// would report the largest of the whole tree instead.
#[allow(clippy::disallowed_methods)] // a bench measures real wall time
pub fn measure_polled(cmd: &mut Command, what: &str) -> Result<Polled> {
    settle()?;
    let started = std::time::Instant::now();
    // Output goes to a file, so a chatty process never blocks on a full pipe.
    let mut log = tempfile::tempfile()?;
    let mut child = cmd
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .spawn()
        .with_context(|| format!("start {what}"))?;
    let pid = child.id();
    let (mut own, mut children) = (0u64, std::collections::BTreeMap::<u32, u64>::new());
    let mut cpu_secs = 0.0;
    let status = loop {
        if let Some((mine, waited)) = proc_cpu_secs(pid) {
            cpu_secs = mine + waited;
        }
        if let Some(h) = vm_hwm_kib(pid) {
            own = own.max(h);
        }
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for kid in kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()) {
            if let Some(h) = vm_hwm_kib(kid) {
                let e = children.entry(kid).or_default();
                *e = (*e).max(h);
            }
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        use std::io::{Read, Seek};
        let mut text = String::new();
        log.rewind()?;
        log.read_to_string(&mut text)?;
        bail!("{what} failed: {text}");
    }
    Ok(Polled {
        own: Measure { secs, cpu_secs, rss_kib: own },
        children_rss_kib: children.values().copied().max().unwrap_or(0),
    })
}

/// What every side-by-side bench takes from its environment.
pub struct BenchArgs {
    /// db sizes in MB (`KDR_BENCH_SIZES_MB`, comma-separated; default 800).
    pub sizes: Vec<usize>,
    /// Runs per tool, of which the median is printed (`KDR_BENCH_RUNS`, default 3).
    pub runs: usize,
}

impl BenchArgs {
    /// `None` when `cargo test --benches` only lists harness=false benches (`--list`).
    pub fn from_env() -> Result<Option<Self>> {
        if std::env::args().any(|a| a == "--list") {
            return Ok(None);
        }
        let sizes = std::env::var("KDR_BENCH_SIZES_MB")
            .unwrap_or_else(|_| "800".into())
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .context("KDR_BENCH_SIZES_MB: comma-separated sizes in MB")?;
        let runs = std::env::var("KDR_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
        Ok(Some(Self { sizes, runs }))
    }
}
