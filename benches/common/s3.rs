//! The local S3 servers the benches measure kdr against, side by side:
//! - s3s-fs (`$KDR_S3S_FS`, from scripts/setup-test-env.sh), the server of the test suite: a thin
//!   S3 layer over a directory. It copies every part into a new file when a multipart upload
//!   completes and serves a read 4 KiB at a time, so its own cost shows in every figure.
//! - Garage (`$KDR_GARAGE`, from scripts/setup-bench-env.sh), a production S3 server: a
//!   completed multipart upload is metadata only, and reads are served in whole blocks.
//!
//! `KDR_BENCH_S3` picks them (comma-separated; default `s3s-fs,garage`). A server that is asked
//! for and not installed is an error naming the script that installs it.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::{Server, free_port, wait_port};

/// Garage's bench credentials (a throwaway server on loopback; the format Garage imports).
const GARAGE_KEY_ID: &str = "GK0b5e7c1d2a3f4e5d6c7b8a90";
const GARAGE_SECRET: &str = "5f0c3e8b9a7d6e5f4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Kind {
    S3sFs,
    Garage,
}

impl S3Kind {
    pub fn name(self) -> &'static str {
        match self {
            S3Kind::S3sFs => "s3s-fs",
            S3Kind::Garage => "garage",
        }
    }

    /// The servers `KDR_BENCH_S3` asks for (default both).
    pub fn from_env() -> Result<Vec<S3Kind>> {
        let list = std::env::var("KDR_BENCH_S3").unwrap_or_else(|_| "s3s-fs,garage".into());
        list.split(',')
            .map(|s| match s.trim() {
                "s3s-fs" => Ok(S3Kind::S3sFs),
                "garage" => Ok(S3Kind::Garage),
                other => bail!("KDR_BENCH_S3: unknown server {other:?} (known: s3s-fs, garage)"),
            })
            .collect()
    }

    fn binary(self) -> Result<PathBuf> {
        let (var, script) = match self {
            S3Kind::S3sFs => ("KDR_S3S_FS", "scripts/setup-test-env.sh, then . .tools/env"),
            S3Kind::Garage => ("KDR_GARAGE", "scripts/setup-bench-env.sh, then . .tools/bench-env"),
        };
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .with_context(|| format!("${var} is not set: run {script} (or leave it out of KDR_BENCH_S3)"))?;
        if !path.is_file() {
            bail!("${var} = {} does not exist: run {script}", path.display());
        }
        Ok(path)
    }
}

/// A running local S3 server with a bucket named `kdr`.
pub struct S3 {
    pub kind: S3Kind,
    pub endpoint: String,
    key_id: &'static str,
    secret: &'static str,
    server: Server,
}

impl S3 {
    /// Starts `kind` on free loopback ports, keeping its data under `root`, with bucket `kdr`.
    /// s3s-fs over an existing `root` serves what is there (the restore bench reuses a set).
    pub fn start(kind: S3Kind, root: &Path) -> Result<Self> {
        let bin = kind.binary()?;
        match kind {
            S3Kind::S3sFs => start_s3s(&bin, root),
            S3Kind::Garage => start_garage(&bin, root),
        }
    }

    /// CPU seconds the server has used so far.
    pub fn cpu_secs(&self) -> f64 {
        self.server.cpu_secs()
    }

    /// The environment for `kdr` to use this server.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", self.secret)
            .env("AWS_REGION", "us-east-1")
    }
}

fn start_s3s(bin: &Path, root: &Path) -> Result<S3> {
    std::fs::create_dir_all(root.join("kdr"))?; // a bucket is a directory
    let port = free_port()?;
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "bench-secret"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start s3s-fs")?;
    let server = Server(child);
    wait_port(port, "s3s-fs")?;
    Ok(S3 {
        kind: S3Kind::S3sFs,
        endpoint: format!("http://127.0.0.1:{port}"),
        key_id: "bench",
        secret: "bench-secret",
        server,
    })
}

/// A one-node Garage over a fresh `root`: its config, the layout (one zone, one node), the
/// bench key and the bucket. Compression is off: kdr's objects are zstd already.
fn start_garage(bin: &Path, root: &Path) -> Result<S3> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::create_dir_all(root)?;
    let (s3_port, rpc_port, admin_port) = (free_port()?, free_port()?, free_port()?);
    let config = root.join("garage.toml");
    std::fs::write(
        &config,
        format!(
            r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "lmdb"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{GARAGE_SECRET}"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
"#,
            root = root.display()
        ),
    )?;
    let log = std::fs::File::create(root.join("garage.log"))?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config)
        .arg("server")
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("RUST_LOG", "garage=warn")
        .spawn()
        .context("start garage")?;
    let server = Server(child);
    wait_port(rpc_port, "garage (rpc)")?;
    wait_port(s3_port, "garage (s3)")?;

    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new(bin).arg("-c").arg(&config).args(args).output()?;
        if !out.status.success() {
            bail!(
                "garage {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let node = cli(&["node", "id", "-q"])?;
    let node = node.trim().split('@').next().unwrap_or_default().to_owned();
    cli(&["layout", "assign", "-z", "dc1", "-c", "100G", &node])?;
    cli(&["layout", "apply", "--version", "1"])?;
    cli(&["key", "import", "--yes", "-n", "bench", GARAGE_KEY_ID, GARAGE_SECRET])?;
    cli(&["bucket", "create", "kdr"])?;
    cli(&["bucket", "allow", "--read", "--write", "--owner", "kdr", "--key", "bench"])?;
    Ok(S3 {
        kind: S3Kind::Garage,
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        key_id: GARAGE_KEY_ID,
        secret: GARAGE_SECRET,
        server,
    })
}
