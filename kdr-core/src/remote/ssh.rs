//! [`SshNodeRemote`]: [`NodeRemote`] over SSH (async-ssh2-tokio on russh).
//!
//! - Key authentication with a private key *file*; the key is never read into a log or a message.
//! - Host keys verified against a known_hosts file by default. Accepting any host key takes the
//!   explicit, loudly named [`HostKeyPolicy::AcceptAnyInsecure`], and every connection made under
//!   it logs a warning.
//! - A per-command timeout ([`RemoteCommand::timeout`]) that covers the whole command: waiting
//!   for the connection, connecting (TCP, handshake, authentication), opening the channel and
//!   running. The connect is also bounded by the connect timeout, so it gets
//!   `min(connect timeout, what is left of the command's timeout)`: a witness probe with a 3 s
//!   budget never waits out a 10 s connect. On a command timeout the remote process is sent
//!   `SIGTERM` and the channel closed (given at most a second, so a dead link cannot hold the
//!   error back). Keepalives go through russh's `Config`.
//! - Output is streamed line by line into `tracing` (target `kdr::remote::output`, level debug)
//!   while the command runs, and also returned in full.
//! - A command killed by a signal has `exit_code: None`.
//!
//! One connection per node is opened on first use and reused (each command is its own channel,
//! so commands on one node may run concurrently); a dropped connection is reopened once. A
//! command that does not finish on a cached connection (it timed out, the link failed, or the
//! caller dropped its future, as a bounded probe does) marks that connection broken: the next
//! command opens a new one instead of waiting on a session over a dead link, which keepalives
//! would only notice after three intervals. Commands already running on the old connection keep
//! it until they end.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_ssh2_tokio::client::{AuthMethod, Client, ServerCheckMethod};
use async_trait::async_trait;
use russh::{ChannelMsg, Sig};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{CommandOutput, NodeRemote, RemoteCommand};
use crate::error::{Error, Result};

/// How long sending `SIGTERM` and closing the channel of a timed-out command may take.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How a node's SSH host key is verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostKeyPolicy {
    /// The host key must be listed for the host (and port) in the known_hosts file
    /// ([`SshConfig::known_hosts`]). An unknown or changed key refuses the connection.
    #[default]
    KnownHosts,
    /// Accept whatever key the server presents. Anyone who can intercept the connection can then
    /// impersonate the node and receive the commands kdr sends it (including a bootstrap token).
    /// For disposable labs only; every connection made under it logs a warning.
    AcceptAnyInsecure,
}

/// The `[ssh]` section of the configuration: how kdr reaches nodes. Per-worker entries may
/// override the port, user and key file.
///
/// ```toml
/// [ssh]
/// user = "kube"                                # default "root"
/// port = 22                                    # default 22
/// key_file = "/root/.ssh/id_ed25519"           # default; a path, never the key itself
/// known_hosts = "/root/.ssh/known_hosts"       # default
/// host_key_policy = "known_hosts"              # default; "accept_any_insecure" to skip checks
/// connect_timeout = "10s"                      # default
/// command_timeout = "5m"                       # default, for commands without their own
/// keepalive_interval = "15s"                   # default; 3 unanswered keepalives drop the link
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// The login user on every node (it needs passwordless `sudo` for the recovery commands).
    pub user: String,
    /// The SSH port.
    pub port: u16,
    /// The private key file used for authentication (OpenSSH or PEM format, unencrypted).
    pub key_file: PathBuf,
    /// The known_hosts file the nodes' host keys are checked against (OpenSSH format, hashed
    /// entries allowed; `[host]:port` for ports other than 22). It must hold the key type the
    /// server presents first (ed25519 on current OpenSSH): `ssh-keyscan` output has them all.
    pub known_hosts: PathBuf,
    /// Whether host keys are checked; see [`HostKeyPolicy`].
    pub host_key_policy: HostKeyPolicy,
    /// How long connecting and authenticating may take (never more than what is left of the
    /// command's own timeout).
    #[serde(with = "crate::serde_duration")]
    pub connect_timeout: Duration,
    /// The timeout of commands that don't set their own.
    #[serde(with = "crate::serde_duration")]
    pub command_timeout: Duration,
    /// How often an idle connection is probed; three unanswered probes close it.
    #[serde(with = "crate::serde_duration")]
    pub keepalive_interval: Duration,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            user: "root".into(),
            port: 22,
            key_file: PathBuf::from("/root/.ssh/id_ed25519"),
            known_hosts: PathBuf::from("/root/.ssh/known_hosts"),
            host_key_policy: HostKeyPolicy::KnownHosts,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(15),
        }
    }
}

impl SshConfig {
    /// The target for node `name` at `host`, with this section's settings.
    pub fn target(&self, name: impl Into<String>, host: impl Into<String>) -> SshTarget {
        SshTarget {
            name: name.into(),
            host: host.into(),
            port: self.port,
            user: self.user.clone(),
            key_file: self.key_file.clone(),
            known_hosts: self.known_hosts.clone(),
            host_key_policy: self.host_key_policy,
            connect_timeout: self.connect_timeout,
            keepalive_interval: self.keepalive_interval,
        }
    }
}

/// Everything needed to reach one node over SSH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// The node's name, used in messages and result tables.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file (the path only is kept; the key is read at connect time by russh).
    pub key_file: PathBuf,
    /// known_hosts file checked under [`HostKeyPolicy::KnownHosts`].
    pub known_hosts: PathBuf,
    /// Host key policy.
    pub host_key_policy: HostKeyPolicy,
    /// Connect (TCP + handshake + authentication) timeout; a command's connect gets at most
    /// what is left of the command's timeout.
    pub connect_timeout: Duration,
    /// Keepalive interval.
    pub keepalive_interval: Duration,
}

impl SshTarget {
    fn addr(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// [`NodeRemote`] over SSH. See the [module docs](self).
#[derive(Debug)]
pub struct SshNodeRemote {
    target: SshTarget,
    connection: Mutex<Option<Arc<Connection>>>,
}

/// The cached connection to a node.
#[derive(Debug)]
struct Connection {
    client: Client,
    /// Set when a command on it did not finish: nothing new is started on it.
    broken: AtomicBool,
}

impl Connection {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Acquire) && !self.client.is_closed()
    }
}

/// A command's hold on a connection: unless [`done`](Self::done) is called, dropping it marks
/// the connection broken. Dropping the command's future (a timeout, a cancelled caller) drops it.
struct InUse<'a> {
    connection: Arc<Connection>,
    node: &'a str,
    done: bool,
}

impl<'a> InUse<'a> {
    fn new(connection: Arc<Connection>, node: &'a str) -> Self {
        Self { connection, node, done: false }
    }

    /// The command finished: the connection is fine to reuse.
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if !self.done && !self.connection.broken.swap(true, Ordering::AcqRel) {
            tracing::debug!(
                node = self.node,
                "a command on the cached ssh connection did not finish: the next command reconnects"
            );
        }
    }
}

impl SshNodeRemote {
    /// A remote for `target`. Checks that the key file (and, under
    /// [`HostKeyPolicy::KnownHosts`], the known_hosts file) exist; connects lazily.
    pub fn new(target: SshTarget) -> Result<Self> {
        if !target.key_file.is_file() {
            return Err(Error::config(
                "ssh.key_file",
                format!(
                    "private key file {} (for node {}) does not exist or is not a file; point ssh.key_file \
                     (or the worker's key_file) at the key whose public half is in {}'s authorized_keys",
                    target.key_file.display(),
                    target.name,
                    target.user
                ),
            ));
        }
        if target.host_key_policy == HostKeyPolicy::KnownHosts && !target.known_hosts.is_file() {
            return Err(Error::config(
                "ssh.known_hosts",
                format!(
                    "known_hosts file {} (for node {}) does not exist; record the nodes' host keys in it \
                     (ssh-keyscan -p PORT HOST, after checking the fingerprints out of band)",
                    target.known_hosts.display(),
                    target.name
                ),
            ));
        }
        Ok(Self { target, connection: Mutex::new(None) })
    }

    /// The target this remote connects to.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Connects within `budget` (the command's timeout) or the connect timeout, whichever is
    /// shorter.
    async fn connect(&self, budget: Duration) -> Result<Client> {
        let t = &self.target;
        let check = match t.host_key_policy {
            HostKeyPolicy::KnownHosts => {
                ServerCheckMethod::KnownHostsFile(t.known_hosts.to_string_lossy().into_owned())
            }
            HostKeyPolicy::AcceptAnyInsecure => {
                tracing::warn!(
                    node = %t.name,
                    addr = %t.addr(),
                    "INSECURE: accepting any SSH host key for this node (host_key_policy = \
                     \"accept_any_insecure\"); anyone able to intercept the connection can impersonate it"
                );
                ServerCheckMethod::NoCheck
            }
        };
        let config = async_ssh2_tokio::Config {
            keepalive_interval: Some(t.keepalive_interval),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        let auth = AuthMethod::with_key_file(&t.key_file, None);
        tracing::debug!(node = %t.name, addr = %t.addr(), "connecting over ssh");
        let connecting = Client::connect_with_config((t.host.as_str(), t.port), &t.user, auth, check, config);
        let limit = t.connect_timeout.min(budget);
        match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(connect_error(t, e)),
            Err(_) => Err(Error::Timeout {
                what: format!(
                    "connecting to node {} ({}) over ssh (check that the host is up and reachable)",
                    t.name,
                    t.addr()
                ),
                after: limit,
            }),
        }
    }

    /// A channel for one command, with the command's hold on its connection: on the cached
    /// connection if it is usable, else on a new one (opened once, under the lock, so concurrent
    /// commands share it). `budget` bounds the connect; the caller bounds the whole.
    async fn channel(&self, budget: Duration) -> Result<(InUse<'_>, russh::Channel<russh::client::Msg>)> {
        let node = self.target.name.as_str();
        let cached = self.connection.lock().await.as_ref().filter(|c| c.usable()).cloned();
        if let Some(connection) = cached {
            let hold = InUse::new(connection, node);
            match hold.connection.client.get_channel().await {
                Ok(ch) => return Ok((hold, ch)),
                // `hold` drops unfinished: the connection is marked broken, and replaced below.
                Err(e) => tracing::debug!(node, error = %e, "the cached ssh connection failed; reconnecting"),
            }
        }
        let connection = {
            let mut guard = self.connection.lock().await;
            match guard.as_ref().filter(|c| c.usable()) {
                // Another command reconnected while this one waited for the lock.
                Some(c) => c.clone(),
                None => {
                    *guard = None;
                    let c = Arc::new(Connection {
                        client: self.connect(budget).await?,
                        broken: AtomicBool::new(false),
                    });
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        let hold = InUse::new(connection, node);
        let ch = hold
            .connection
            .client
            .get_channel()
            .await
            .map_err(|e| Error::unavailable(format!("opening an ssh channel to node {node}"), e))?;
        Ok((hold, ch))
    }

    async fn exec(&self, command: &RemoteCommand, stdin: Option<&[u8]>) -> Result<CommandOutput> {
        let node = self.target.name.as_str();
        let line = command.command_line();
        // The command's timeout covers everything: the lock, the connect, the channel and the
        // run. `started` holds the channel once the command runs, to stop it on a timeout.
        let mut started = None;
        let attempt = async {
            let (hold, channel) = self.channel(command.timeout).await?;
            if command.quiet {
                tracing::debug!(node, command = %line, stdin = stdin.is_some(), "running");
            } else {
                tracing::info!(node, command = %line, stdin = stdin.is_some(), "running");
            }
            let out = drive(started.insert(channel), node, &line, stdin).await.map_err(|e| {
                Error::unavailable(
                    format!("running `{}` on node {} (the ssh connection failed)", command.command, node),
                    e,
                )
            })?;
            hold.done();
            Ok(out)
        };
        match tokio::time::timeout(command.timeout, attempt).await {
            Ok(Ok(out)) => {
                if command.quiet {
                    tracing::debug!(node, command = %line, exit_code = ?out.exit_code, "finished");
                } else {
                    tracing::info!(node, command = %line, exit_code = ?out.exit_code, "finished");
                }
                Ok(out)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => match started {
                Some(channel) => {
                    // Best effort: ask sshd to signal the process, then close our side. Bounded:
                    // over a dead link the session may not even take the messages.
                    let stop = async {
                        let _ = channel.signal(Sig::TERM).await;
                        let _ = channel.close().await;
                    };
                    let _ = tokio::time::timeout(STOP_GRACE, stop).await;
                    Err(Error::Timeout {
                        what: format!("command `{}` on node {}", command.command, node),
                        after: command.timeout,
                    })
                }
                None => Err(Error::Timeout {
                    what: format!(
                        "connecting to node {node} ({}) over ssh to run `{}` (no session within the \
                         command's timeout; check that the host is up and reachable)",
                        self.target.addr(),
                        command.command
                    ),
                    after: command.timeout,
                }),
            },
        }
    }
}

#[async_trait]
impl NodeRemote for SshNodeRemote {
    fn node(&self) -> &str {
        &self.target.name
    }

    async fn run(&self, command: &RemoteCommand) -> Result<CommandOutput> {
        self.exec(command, None).await
    }

    async fn run_with_stdin(&self, command: &RemoteCommand, stdin: &[u8]) -> Result<CommandOutput> {
        self.exec(command, Some(stdin)).await
    }
}

/// Runs `line` on `channel`: feeds `stdin` then EOF (so a command reading stdin never hangs),
/// and drains stdout, stderr and the exit status in one loop, logging lines as they come.
async fn drive(
    channel: &mut russh::Channel<russh::client::Msg>,
    node: &str,
    line: &str,
    stdin: Option<&[u8]>,
) -> std::result::Result<CommandOutput, russh::Error> {
    channel.exec(true, line).await?;
    if let Some(data) = stdin {
        channel.data(data).await?;
    }
    channel.eof().await?;
    let mut stdout = LineLogger::new(node, "stdout");
    let mut stderr = LineLogger::new(node, "stderr");
    let mut exit_status = None;
    let mut signal = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.push(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => stderr.push(&data),
            ChannelMsg::ExitStatus { exit_status: code } => exit_status = Some(code),
            ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
            ChannelMsg::Failure => {
                return Err(russh::Error::RequestDenied);
            }
            _ => {}
        }
    }
    if exit_status.is_none() && signal.is_none() {
        // The channel closed with neither an exit status nor a signal: the connection broke.
        return Err(russh::Error::Disconnect);
    }
    if let Some(sig) = &signal {
        tracing::info!(node, command = %line, signal = ?sig, "killed by a signal");
    }
    Ok(CommandOutput {
        exit_code: exit_status.map(|c| i32::try_from(c).unwrap_or(i32::MAX)),
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    })
}

/// Collects a stream's bytes and logs each complete line as it arrives.
struct LineLogger<'a> {
    node: &'a str,
    stream: &'static str,
    all: Vec<u8>,
    logged: usize,
}

impl<'a> LineLogger<'a> {
    fn new(node: &'a str, stream: &'static str) -> Self {
        Self { node, stream, all: Vec::new(), logged: 0 }
    }

    fn push(&mut self, data: &[u8]) {
        self.all.extend_from_slice(data);
        while let Some(nl) = self.all[self.logged..].iter().position(|&b| b == b'\n') {
            let end = self.logged + nl;
            self.log(self.logged, end);
            self.logged = end + 1;
        }
    }

    fn log(&self, start: usize, end: usize) {
        let text = String::from_utf8_lossy(&self.all[start..end]);
        tracing::debug!(target: "kdr::remote::output", node = self.node, stream = self.stream, "{text}");
    }

    fn finish(self) -> String {
        if self.logged < self.all.len() {
            self.log(self.logged, self.all.len());
        }
        String::from_utf8_lossy(&self.all).into_owned()
    }
}

fn connect_error(t: &SshTarget, e: async_ssh2_tokio::Error) -> Error {
    use async_ssh2_tokio::Error as E;
    let node = &t.name;
    let addr = t.addr();
    match e {
        E::KeyAuthFailed => Error::unavailable(
            format!(
                "ssh authentication as {} on node {node} ({addr}) failed: check that the public key of {} \
                 is in ~{}/.ssh/authorized_keys on the node",
                t.user,
                t.key_file.display(),
                t.user
            ),
            e,
        ),
        E::KeyInvalid(_) => Error::config(
            "ssh.key_file",
            format!(
                "cannot load the private key {} for node {node}: it must be an unencrypted OpenSSH or PEM \
                 private key ({e})",
                t.key_file.display()
            ),
        ),
        E::ServerCheckFailed | E::SshError(russh::Error::UnknownKey) => Error::unavailable(
            format!(
                "the host key of node {node} ({addr}) is not in known_hosts {} or does not match it: \
                 refusing to connect. If the node was legitimately reinstalled, verify its new key \
                 fingerprint out of band and update the file",
                t.known_hosts.display()
            ),
            e,
        ),
        E::AddressInvalid(_) => Error::unavailable(
            format!("cannot resolve the address of node {node} ({addr}): check the worker's host"),
            e,
        ),
        other => Error::unavailable(
            format!(
                "cannot reach node {node} over ssh at {addr}: check that the host is up, sshd listens on \
                 port {} and nothing blocks it",
                t.port
            ),
            other,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_parse() {
        let c: SshConfig = toml::from_str("").unwrap();
        assert_eq!(c, SshConfig::default());
        let c: SshConfig = toml::from_str(
            r#"
            user = "kube"
            port = 2222
            key_file = "/k"
            host_key_policy = "accept_any_insecure"
            connect_timeout = "3s"
            "#,
        )
        .unwrap();
        assert_eq!(c.user, "kube");
        assert_eq!(c.port, 2222);
        assert_eq!(c.host_key_policy, HostKeyPolicy::AcceptAnyInsecure);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.command_timeout, Duration::from_secs(300));
        let t = c.target("w1", "10.0.0.1");
        assert_eq!((t.name.as_str(), t.host.as_str(), t.port), ("w1", "10.0.0.1", 2222));
    }

    #[test]
    fn config_rejects_unknown_keys_and_bad_durations() {
        let e = toml::from_str::<SshConfig>("passwrd = \"x\"").unwrap_err().to_string();
        assert!(e.contains("passwrd"), "{e}");
        let e = toml::from_str::<SshConfig>("connect_timeout = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("invalid duration \"soon\""), "{e}");
    }

    #[test]
    fn missing_key_or_known_hosts_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = SshConfig::default().target("w1", "127.0.0.1");
        t.key_file = dir.path().join("nokey");
        let e = SshNodeRemote::new(t.clone()).unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "ssh.key_file"), "{e}");
        std::fs::write(dir.path().join("key"), "x").unwrap();
        t.key_file = dir.path().join("key");
        t.known_hosts = dir.path().join("nohosts");
        let e = SshNodeRemote::new(t.clone()).unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "ssh.known_hosts"), "{e}");
        t.host_key_policy = HostKeyPolicy::AcceptAnyInsecure;
        SshNodeRemote::new(t).unwrap();
    }

    fn keygen(path: &std::path::Path) {
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
            .status()
            .expect("ssh-keygen (openssh-client) for the test keys");
        assert!(st.success());
    }

    /// A remote for `port` on loopback: a real client key, any host key accepted.
    fn loopback(dir: &std::path::Path, name: &str, port: u16, connect_timeout: Duration) -> SshNodeRemote {
        let key = dir.join("id_ed25519");
        if !key.exists() {
            keygen(&key);
        }
        let mut t = SshConfig::default().target(name, "127.0.0.1");
        t.port = port;
        t.key_file = key;
        t.host_key_policy = HostKeyPolicy::AcceptAnyInsecure;
        t.connect_timeout = connect_timeout;
        SshNodeRemote::new(t).unwrap()
    }

    fn connect_timed_out(r: &Result<CommandOutput>, node: &str, after: Duration) -> bool {
        matches!(r, Err(Error::Timeout { what, after: a })
            if what.starts_with(&format!("connecting to node {node} ")) && *a == after)
    }

    #[tokio::test(start_paused = true)]
    async fn the_connect_is_bounded_by_the_command_timeout_and_the_connect_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let silent = crate::testing::net::SilentListener::start().await.unwrap();
        let port = silent.port();
        let budget = Duration::from_secs(2);
        let within = budget + Duration::from_millis(1);

        // A 10 s connect timeout, a 2 s command: the command's budget wins.
        let r = loopback(dir.path(), "silent-1", port, Duration::from_secs(10));
        let out = tokio::time::timeout(within, r.run(&RemoteCommand::new("true", budget))).await;
        let out = out.expect("the connect must not outlive the command's 2s budget");
        assert!(connect_timed_out(&out, "silent-1", budget), "{out:?}");

        // Two commands at once: the second waits for the first's connect, within its own budget.
        let (a, b) = tokio::time::timeout(
            within,
            futures::future::join(
                r.run(&RemoteCommand::new("a", budget)),
                r.run(&RemoteCommand::new("b", budget)),
            ),
        )
        .await
        .expect("waiting for another command's connect is inside the budget too");
        assert!(connect_timed_out(&a, "silent-1", budget), "{a:?}");
        assert!(connect_timed_out(&b, "silent-1", budget), "{b:?}");

        // A 1 s connect timeout, a 20 s command: the connect timeout wins.
        let r = loopback(dir.path(), "silent-2", port, Duration::from_secs(1));
        let out = tokio::time::timeout(
            Duration::from_millis(1001),
            r.run(&RemoteCommand::new("true", Duration::from_secs(20))),
        )
        .await
        .expect("bounded by the 1s connect timeout");
        assert!(connect_timed_out(&out, "silent-2", Duration::from_secs(1)), "{out:?}");
        drop(silent);
    }

    /// A minimal in-process SSH server (russh's): accepts any key, and answers every command
    /// with exit status 0 without running anything. Enough to test connection handling.
    #[derive(Clone)]
    struct TinySshd;

    impl russh::server::Handler for TinySshd {
        type Error = russh::Error;

        async fn auth_publickey(
            &mut self,
            _: &str,
            _: &russh::keys::PublicKey,
        ) -> std::result::Result<russh::server::Auth, Self::Error> {
            Ok(russh::server::Auth::Accept)
        }

        async fn channel_open_session(
            &mut self,
            _: russh::Channel<russh::server::Msg>,
            reply: russh::server::ChannelOpenHandle,
            _: &mut russh::server::Session,
        ) -> std::result::Result<(), Self::Error> {
            reply.accept().await;
            Ok(())
        }

        async fn exec_request(
            &mut self,
            channel: russh::ChannelId,
            _: &[u8],
            session: &mut russh::server::Session,
        ) -> std::result::Result<(), Self::Error> {
            session.channel_success(channel)?;
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
            Ok(())
        }
    }

    /// [`TinySshd`] behind a TCP relay that can freeze the connections it carries: a frozen
    /// connection stays open at both ends and carries nothing, as over a dead link (no RST, no
    /// FIN). Connections made after a freeze are relayed normally.
    struct FreezableSshd {
        port: u16,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        freezers: Arc<std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<()>>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl FreezableSshd {
        async fn start(dir: &std::path::Path) -> Self {
            let host_key = dir.join("host_ed25519");
            keygen(&host_key);
            let config = Arc::new(russh::server::Config {
                keys: vec![russh::keys::load_secret_key(&host_key, None).unwrap()],
                ..Default::default()
            });
            let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = relay.local_addr().unwrap().port();
            let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let freezers = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (acc, frz) = (accepted.clone(), freezers.clone());
            let task = tokio::spawn(async move {
                while let Ok((mut outer, _)) = relay.accept().await {
                    acc.fetch_add(1, Ordering::SeqCst);
                    let (mut relayed, inner) = tokio::io::duplex(1 << 16);
                    let session = russh::server::run_stream(config.clone(), inner, TinySshd);
                    tokio::spawn(async move {
                        if let Ok(s) = session.await {
                            let _ = s.await;
                        }
                    });
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    frz.lock().unwrap().push(tx);
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut outer, &mut relayed) => {}
                            _ = rx => std::future::pending::<()>().await,
                        }
                    });
                }
            });
            Self { port, accepted, freezers, task }
        }

        fn freeze_existing(&self) {
            for tx in self.freezers.lock().unwrap().drain(..) {
                let _ = tx.send(());
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }
    }

    impl Drop for FreezableSshd {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[tokio::test]
    async fn a_command_that_times_out_drops_the_cached_connection() {
        let dir = tempfile::tempdir().unwrap();
        let sshd = FreezableSshd::start(dir.path()).await;
        let r = loopback(dir.path(), "node-1", sshd.port, Duration::from_secs(5));
        let cmd = RemoteCommand::new("true", Duration::from_millis(500));
        assert_eq!(r.run(&cmd).await.unwrap().exit_code, Some(0));
        assert_eq!(r.run(&cmd).await.unwrap().exit_code, Some(0));
        assert_eq!(sshd.accepted(), 1, "the connection is cached and reused");

        // The link goes dead under the cached connection: TCP stays up, nothing gets through.
        sshd.freeze_existing();
        let out = tokio::time::timeout(Duration::from_secs(3), r.run(&cmd)).await.expect("bounded by 500ms");
        assert!(matches!(&out, Err(Error::Timeout { what, .. }) if what.contains("node node-1")), "{out:?}");
        // The next command does not wait on the dead session: it reconnects.
        let out = tokio::time::timeout(Duration::from_secs(3), r.run(&cmd)).await.expect("bounded by 500ms");
        assert_eq!(out.unwrap().exit_code, Some(0));
        assert_eq!(sshd.accepted(), 2, "a new connection replaced the dead one");

        // Same when the caller gives up first (a bounded probe drops the command's future).
        sshd.freeze_existing();
        let long = RemoteCommand::new("true", Duration::from_secs(60));
        assert!(tokio::time::timeout(Duration::from_millis(500), r.run(&long)).await.is_err());
        let out = tokio::time::timeout(Duration::from_secs(3), r.run(&cmd)).await.expect("bounded by 500ms");
        assert_eq!(out.unwrap().exit_code, Some(0));
        assert_eq!(sshd.accepted(), 3, "a new connection replaced the abandoned one");
    }

    #[test]
    fn line_logger_keeps_all_bytes() {
        let mut l = LineLogger::new("n", "stdout");
        l.push(b"ab");
        l.push(b"c\nde\n");
        l.push(b"f");
        assert_eq!(l.finish(), "abc\nde\nf");
    }
}
