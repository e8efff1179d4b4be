//! [`LocalEtcd`]: a throwaway etcd process on free loopback ports, started on a data dir and
//! stopped when done. Drills start one on a restored set; the demo and tests use it too.
use std::collections::VecDeque;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::process::GroupChild;

/// What etcd logs once it serves clients (3.4 in plain text, 3.5 in JSON).
const READY_LINE: &str = "ready to serve client requests";
/// Lines of etcd's log kept for error messages.
const LOG_TAIL_LINES: usize = 40;

/// How to start a [`LocalEtcd`].
#[derive(Clone, Debug)]
pub struct LocalEtcdOptions {
    /// The etcd binary (default `etcd` on `PATH`).
    pub binary: PathBuf,
    /// The data dir. An existing one (e.g. a restored snapshot) is served as it is; a missing one
    /// is created as a new one-member cluster.
    pub data_dir: PathBuf,
    /// The member name (must match the name a restored data dir was made with).
    pub name: String,
    /// How long to wait for etcd to serve clients.
    pub start_timeout: Duration,
}

impl LocalEtcdOptions {
    /// Options for `data_dir`, with `etcd` from `PATH`, member name `default` and a 60 s start
    /// timeout (a large restored db takes a while to open).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: PathBuf::from("etcd"),
            data_dir: data_dir.into(),
            name: "default".into(),
            start_timeout: Duration::from_secs(60),
        }
    }

    /// Uses this etcd binary.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = binary.into();
        self
    }

    /// Uses this member name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// A running throwaway etcd on 127.0.0.1. Stop it with [`stop`](Self::stop); dropping it kills
/// the process (and anything it started: it runs in its own process group).
#[derive(Debug)]
pub struct LocalEtcd {
    child: GroupChild,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl LocalEtcd {
    /// Starts etcd on `opts.data_dir` with free loopback client and peer ports and waits until it
    /// serves clients. Fails with [`Error::CommandFailed`] (with etcd's last log lines) if it
    /// exits, or [`Error::Timeout`] if it is not ready in time (the process is then killed).
    pub async fn start(opts: LocalEtcdOptions) -> Result<Self> {
        // Free ports are found by binding port 0 and letting go; another process may grab one in
        // between, so a start that fails on a taken port is retried with new ports.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&opts).await {
                Err(Error::CommandFailed { stderr, .. }) if stderr.contains("address already in use") => {
                    last = Some(stderr);
                }
                other => return other,
            }
        }
        Err(Error::CommandFailed {
            host: "localhost".into(),
            command: format!("{} --data-dir {}", opts.binary.display(), opts.data_dir.display()),
            exit_code: None,
            stderr: last.unwrap_or_default(),
        })
    }

    async fn start_once(opts: &LocalEtcdOptions) -> Result<Self> {
        let (client_port, peer_port) = free_ports()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let args: Vec<String> = vec![
            format!("--name={}", opts.name),
            format!("--data-dir={}", opts.data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={}={peer_url}", opts.name),
            "--initial-cluster-state=new".into(),
            // A one-member throwaway cluster: elect at once.
            "--heartbeat-interval=10".into(),
            "--election-timeout=100".into(),
        ];
        let command = format!("{} {}", opts.binary.display(), args.join(" "));
        let mut cmd = Command::new(&opts.binary);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = GroupChild::spawn(&mut cmd)
            .map_err(|e| Error::io(format!("cannot start {}", opts.binary.display()), e))?;

        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        let (ready_tx, ready_rx) = oneshot::channel();
        let stderr = child.take_stderr().ok_or_else(|| Error::refused("etcd's stderr was not captured"))?;
        tokio::spawn(drain_log(stderr, Arc::clone(&log), ready_tx));

        let waited = tokio::time::timeout(opts.start_timeout, async {
            tokio::select! {
                ready = ready_rx => ready.is_ok(),
                _ = child.wait() => false,
            }
        })
        .await;
        let tail = |log: &Arc<Mutex<VecDeque<String>>>| {
            log.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
        };
        match waited {
            Ok(true) => Ok(Self { child, client_url, peer_url, data_dir: opts.data_dir.clone(), log }),
            Ok(false) => {
                let status = child.wait().await.ok();
                // Give the log reader a moment to take in etcd's last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(Error::CommandFailed {
                    host: "localhost".into(),
                    command,
                    exit_code: status.and_then(|s| s.code()),
                    stderr: tail(&log),
                })
            }
            Err(_) => {
                child.kill().await;
                tracing::warn!(log = %tail(&log), "etcd did not become ready");
                Err(Error::Timeout { what: format!("starting `{command}`"), after: opts.start_timeout })
            }
        }
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The peer URL, `http://127.0.0.1:<port>`.
    pub fn peer_url(&self) -> &str {
        &self.peer_url
    }

    /// The data dir it serves.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines etcd logged.
    pub fn log_tail(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// A client connected to it.
    pub async fn client(&self) -> Result<etcd_client::Client> {
        etcd_client::Client::connect([self.client_url.as_str()], None).await.map_err(|e| {
            Error::unavailable(format!("cannot connect to local etcd at {}", self.client_url), e)
        })
    }

    /// Stops etcd: SIGTERM, then SIGKILL (to its whole process group) after 10 s. Its data dir
    /// is left as it is.
    pub async fn stop(mut self) -> Result<()> {
        self.child.signal_group(rustix::process::Signal::TERM);
        if let Ok(status) = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            status.map_err(|e| Error::io("cannot wait for local etcd to exit", e))?;
            return Ok(());
        }
        self.child.kill().await;
        Ok(())
    }
}

/// Two distinct free TCP ports on 127.0.0.1.
fn free_ports() -> Result<(u16, u16)> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("cannot find a free loopback port", e))
    };
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| {
        l.local_addr().map(|a| a.port()).map_err(|e| Error::io("cannot read a loopback port", e))
    };
    Ok((port(&a)?, port(&b)?))
}

/// Reads etcd's log to the end: keeps the last lines and signals the ready line once. Draining
/// matters: a full pipe would block etcd.
async fn drain_log(
    stderr: tokio::process::ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains(READY_LINE)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(());
        }
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_TAIL_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let (a, b) = free_ports().unwrap();
        assert_ne!(a, b);
        assert!(a > 0 && b > 0);
    }

    #[tokio::test]
    async fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = LocalEtcd::start(LocalEtcdOptions::new(dir.path().join("d")).binary("/nonexistent/etcd"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/etcd"), "{e}");
    }
}
