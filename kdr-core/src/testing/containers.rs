//! Real etcd, S3 and sshd servers in containers, for integration tests.
//!
//! Every integration test of kdr talks to real servers. These fixtures start them with
//! testcontainers from local images (built by `scripts/setup-test-env.sh`; no registry needed):
//!
//! | fixture | image (override) | what it is |
//! | --- | --- | --- |
//! | [`EtcdContainer`] | `kdr-test/etcd:3.5.16` (`KDR_TEST_ETCD_IMAGE`), `kdr-test/etcd:3.4.23` (`KDR_TEST_ETCD_3_4_IMAGE`) | etcd, plain or with kubeadm-style TLS |
//! | [`S3Container`] | `kdr-test/s3s-fs:0.14.1` (`KDR_TEST_S3_IMAGE`) | s3s-fs, a real S3 HTTP server (SigV4) over a directory |
//! | [`SshNodeContainer`] | `kdr-test/node:bookworm` | Debian with sshd, user `kube` with passwordless sudo, recording stand-ins |
//!
//! Containers are labelled `kdr.test=1`; the test command removes any left behind. A test that
//! needs Docker fails (never skips) when Docker is missing, with an error that says so.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use testcontainers::core::{ContainerPort, ExecCommand, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::error::{Error, Result};

const LABEL: &str = "kdr.test";
const STARTUP: Duration = Duration::from_secs(60);

fn docker_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable(
        format!("failed to {what}"),
        format!(
            "{e}. kdr's integration tests need a running Docker engine and the local test images: \
             run `make test` (or scripts/setup-test-env.sh) first"
        ),
    )
}

fn image_from_env(var: &str, default: &str) -> (String, String) {
    let full = std::env::var(var).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| default.to_owned());
    match full.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (full, "latest".to_owned()),
    }
}

/// Runs `docker exec` through the container's API and returns (exit code, stdout, stderr).
async fn exec_in<I: testcontainers::Image>(
    c: &ContainerAsync<I>,
    script: &str,
) -> Result<(i64, String, String)> {
    let mut res = c
        .exec(ExecCommand::new(["sh", "-c", script]))
        .await
        .map_err(|e| docker_error(&format!("exec `{script}` in container {}", c.id()), e))?;
    let stdout = res.stdout_to_vec().await.map_err(|e| docker_error("read exec stdout", e))?;
    let stderr = res.stderr_to_vec().await.map_err(|e| docker_error("read exec stderr", e))?;
    let mut code = None;
    for _ in 0..100 {
        code = res.exit_code().await.map_err(|e| docker_error("read exec exit code", e))?;
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((
        code.unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}

/// Removes shared containers left by test processes that no longer exist (statics are never
/// dropped, so a shared container outlives its test binary; this keeps them from piling up).
fn reap_orphaned_shared_containers() {
    let Ok(out) = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=kdr.test.pid",
            "--format",
            "{{.ID}} {{.Label \"kdr.test.pid\"}}",
        ])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((id, pid)) = line.split_once(' ')
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

// ------------------------------------------------------------------------------------------------
// etcd
// ------------------------------------------------------------------------------------------------

/// The etcd versions the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdVersion {
    /// etcd 3.5.16, with etcdutl (kubeadm clusters of the seeds' era run 3.5.x).
    V3_5_16,
    /// etcd 3.4.23 (etcdctl only), a compatibility case for snapshot and restore.
    V3_4_23,
}

impl EtcdVersion {
    /// The version string, e.g. `3.5.16`.
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdVersion::V3_5_16 => "3.5.16",
            EtcdVersion::V3_4_23 => "3.4.23",
        }
    }

    fn image(self) -> (String, String) {
        match self {
            EtcdVersion::V3_5_16 => image_from_env("KDR_TEST_ETCD_IMAGE", "kdr-test/etcd:3.5.16"),
            EtcdVersion::V3_4_23 => image_from_env("KDR_TEST_ETCD_3_4_IMAGE", "kdr-test/etcd:3.4.23"),
        }
    }
}

/// Certificates laid out like kubeadm's `/etc/kubernetes/pki/etcd`, generated at test time.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The directory holding them (the equivalent of `/etc/kubernetes/pki/etcd`).
    pub pki_dir: PathBuf,
    /// `ca.crt`: the etcd CA.
    pub ca_cert: PathBuf,
    /// `ca.key`.
    pub ca_key: PathBuf,
    /// `server.crt`: serving cert for `localhost`, `127.0.0.1` and `etcd`.
    pub server_cert: PathBuf,
    /// `server.key`.
    pub server_key: PathBuf,
    /// `healthcheck-client.crt`: a client cert signed by the CA (what kdr uses to back up).
    pub client_cert: PathBuf,
    /// `healthcheck-client.key`.
    pub client_key: PathBuf,
}

/// A throwaway self-signed CA named `common_name` for test certificates: `.pem()` is its
/// certificate, `.key()` its key, and leaves are signed with `params.signed_by(&key, &ca)`.
pub fn test_ca(common_name: &str) -> std::result::Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

impl EtcdTls {
    /// Generates a fresh CA with server, peer and client certs under `dir` (which must exist).
    /// Calling it twice gives two unrelated CAs, e.g. for wrong-CA tests.
    pub fn generate(dir: &Path) -> Result<Self> {
        let err = |e: rcgen::Error| Error::integrity("test certificates", e.to_string());
        let write = |name: &str, data: String, mode: u32| -> Result<PathBuf> {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(name);
            std::fs::write(&p, data).map_err(|e| Error::io(format!("write {}", p.display()), e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
            Ok(p)
        };

        let ca = test_ca("etcd-ca").map_err(err)?;

        let leaf = |cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| -> Result<(String, String)> {
            let key = KeyPair::generate().map_err(err)?;
            let mut p =
                CertificateParams::new(vec!["localhost".to_owned(), "etcd".to_owned()]).map_err(err)?;
            p.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            p.distinguished_name = dn;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            p.extended_key_usages = usages;
            let cert = p.signed_by(&key, &ca).map_err(err)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (server_crt, server_key) = leaf("etcd-server", vec![ServerAuth, ClientAuth])?;
        let (peer_crt, peer_key) = leaf("etcd-peer", vec![ServerAuth, ClientAuth])?;
        let (client_crt, client_key) = leaf("kube-etcd-healthcheck-client", vec![ClientAuth])?;

        write("peer.crt", peer_crt, 0o644)?;
        write("peer.key", peer_key, 0o600)?;
        Ok(Self {
            pki_dir: dir.to_owned(),
            ca_cert: write("ca.crt", ca.pem(), 0o644)?,
            ca_key: write("ca.key", ca.key().serialize_pem(), 0o600)?,
            server_cert: write("server.crt", server_crt, 0o644)?,
            server_key: write("server.key", server_key, 0o600)?,
            client_cert: write("healthcheck-client.crt", client_crt, 0o644)?,
            client_key: write("healthcheck-client.key", client_key, 0o600)?,
        })
    }

    /// etcd-client connect options that present the client cert and trust the CA.
    pub fn connect_options(&self) -> Result<etcd_client::ConnectOptions> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(format!("read {}", p.display()), e));
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca_cert)?))
            .identity(etcd_client::Identity::from_pem(read(&self.client_cert)?, read(&self.client_key)?));
        Ok(etcd_client::ConnectOptions::new().with_tls(tls).with_connect_timeout(Duration::from_secs(5)))
    }
}

/// A real etcd server in a container.
#[derive(Debug)]
pub struct EtcdContainer {
    container: ContainerAsync<GenericImage>,
    endpoint: String,
    version: EtcdVersion,
    tls: Option<EtcdTls>,
    // Keeps the generated certificates alive as long as the container.
    _dir: Option<tempfile::TempDir>,
}

impl EtcdContainer {
    /// Starts etcd `version` serving plain HTTP on a random loopback port.
    pub async fn start(version: EtcdVersion) -> Result<Self> {
        Self::start_inner(version, false).await
    }

    /// Starts etcd `version` the way kubeadm runs it: HTTPS with client-certificate auth, certs in
    /// `/etc/kubernetes/pki/etcd` (generated now; see [`EtcdContainer::tls`]).
    pub async fn start_tls(version: EtcdVersion) -> Result<Self> {
        Self::start_inner(version, true).await
    }

    async fn start_inner(version: EtcdVersion, tls: bool) -> Result<Self> {
        let (name, tag) = version.image();
        let scheme = if tls { "https" } else { "http" };
        let mut args: Vec<String> = [
            "--name=kdr-test",
            "--data-dir=/var/lib/etcd",
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--initial-cluster-state=new",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--listen-client-urls={scheme}://0.0.0.0:2379"));
        args.push(format!("--advertise-client-urls={scheme}://127.0.0.1:2379"));
        args.push(format!("--listen-peer-urls={scheme}://0.0.0.0:2380"));
        args.push(format!("--initial-advertise-peer-urls={scheme}://127.0.0.1:2380"));
        args.push(format!("--initial-cluster=kdr-test={scheme}://127.0.0.1:2380"));

        let mut request = GenericImage::new(name, tag)
            .with_exposed_port(ContainerPort::Tcp(2379))
            .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
            .with_label(LABEL, "1")
            .with_startup_timeout(STARTUP);

        let (tls_files, dir) = if tls {
            let dir = tempfile::tempdir().map_err(|e| Error::io("create temp dir for etcd certs", e))?;
            let files = EtcdTls::generate(dir.path())?;
            const PKI: &str = "/etc/kubernetes/pki/etcd";
            args.extend([
                format!("--cert-file={PKI}/server.crt"),
                format!("--key-file={PKI}/server.key"),
                format!("--trusted-ca-file={PKI}/ca.crt"),
                "--client-cert-auth=true".to_owned(),
                format!("--peer-cert-file={PKI}/peer.crt"),
                format!("--peer-key-file={PKI}/peer.key"),
                format!("--peer-trusted-ca-file={PKI}/ca.crt"),
                "--peer-client-cert-auth=true".to_owned(),
            ]);
            for f in ["ca.crt", "server.crt", "server.key", "peer.crt", "peer.key"] {
                let data = std::fs::read(dir.path().join(f))
                    .map_err(|e| Error::io(format!("read generated {f}"), e))?;
                request = request.with_copy_to(format!("{PKI}/{f}"), data);
            }
            (Some(files), Some(dir))
        } else {
            (None, None)
        };

        let container = request
            .with_cmd(args)
            .start()
            .await
            .map_err(|e| docker_error(&format!("start etcd {} container", version.as_str()), e))?;
        let port = container
            .get_host_port_ipv4(2379)
            .await
            .map_err(|e| docker_error("read etcd container's port", e))?;
        Ok(Self {
            container,
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
            version,
            tls: tls_files,
            _dir: dir,
        })
    }

    /// The client URL, e.g. `https://127.0.0.1:32771`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The version running.
    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    /// The certificates, for a TLS container.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// A connected etcd client (with the client cert for a TLS container).
    pub async fn client(&self) -> Result<etcd_client::Client> {
        let opts = match &self.tls {
            Some(t) => t.connect_options()?,
            None => etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5)),
        };
        etcd_client::Client::connect([self.endpoint.as_str()], Some(opts))
            .await
            .map_err(|e| Error::unavailable(format!("connect to test etcd at {}", self.endpoint), e))
    }

    /// Stops the container (etcd gets SIGTERM, then SIGKILL after 1 s).
    pub async fn stop(&self) -> Result<()> {
        self.container.stop_with_timeout(Some(1)).await.map_err(|e| docker_error("stop etcd container", e))
    }

    /// Runs a shell-less command in the container (the etcd image has no shell): e.g.
    /// `["/usr/bin/etcdctl", "endpoint", "status"]`. Returns (exit code, stdout, stderr).
    pub async fn exec(&self, argv: &[&str]) -> Result<(i64, String, String)> {
        let mut res = self
            .container
            .exec(ExecCommand::new(argv.iter().copied()))
            .await
            .map_err(|e| docker_error("exec in etcd container", e))?;
        let stdout = res.stdout_to_vec().await.map_err(|e| docker_error("read exec stdout", e))?;
        let stderr = res.stderr_to_vec().await.map_err(|e| docker_error("read exec stderr", e))?;
        let code = res.exit_code().await.map_err(|e| docker_error("read exec exit code", e))?.unwrap_or(-1);
        Ok((
            code,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        ))
    }
}

// ------------------------------------------------------------------------------------------------
// S3
// ------------------------------------------------------------------------------------------------

/// A real S3 server (s3s-fs by default) with a bucket named `kdr`.
///
/// The data directory is a host temp dir bind-mounted at `/data` (a bucket is a directory there),
/// so buckets can be created without a shell in the image.
#[derive(Debug)]
pub struct S3Container {
    container: ContainerAsync<GenericImage>,
    endpoint: String,
    data_dir: tempfile::TempDir,
}

const S3_ACCESS_KEY: &str = "kdr-test-access";
const S3_SECRET_KEY: &str = "kdr-test-secret-key-not-for-production";

static SHARED_S3: tokio::sync::OnceCell<S3Container> = tokio::sync::OnceCell::const_new();

impl S3Container {
    /// Starts a new S3 server with an empty bucket `kdr`.
    pub async fn start() -> Result<Self> {
        Self::start_labelled(None).await
    }

    /// One S3 server shared by every test of this test binary (give each test its own prefix or
    /// bucket). Never stop it: other tests use it. It is removed by the test command's cleanup,
    /// or by the next test binary that finds its owner process gone.
    pub async fn shared() -> Result<&'static S3Container> {
        SHARED_S3
            .get_or_try_init(|| async {
                reap_orphaned_shared_containers();
                Self::start_labelled(Some(std::process::id())).await
            })
            .await
    }

    async fn start_labelled(owner_pid: Option<u32>) -> Result<Self> {
        let (name, tag) = image_from_env("KDR_TEST_S3_IMAGE", "kdr-test/s3s-fs:0.14.1");
        let data_dir = tempfile::tempdir().map_err(|e| Error::io("create temp dir for S3 data", e))?;
        std::fs::create_dir(data_dir.path().join("kdr")).map_err(|e| Error::io("create bucket dir", e))?;
        let mut request = GenericImage::new(name, tag)
            .with_exposed_port(ContainerPort::Tcp(9000))
            .with_wait_for(WaitFor::message_on_either_std("server is running at"))
            .with_label(LABEL, "1")
            .with_startup_timeout(STARTUP)
            .with_mount(Mount::bind_mount(data_dir.path().to_string_lossy(), "/data"))
            .with_cmd(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY, "/data"]);
        if let Some(pid) = owner_pid {
            request = request.with_label("kdr.test.pid", pid.to_string());
        }
        let container = request.start().await.map_err(|e| docker_error("start S3 (s3s-fs) container", e))?;
        let port = container
            .get_host_port_ipv4(9000)
            .await
            .map_err(|e| docker_error("read S3 container's port", e))?;
        Ok(Self { container, endpoint: format!("http://127.0.0.1:{port}"), data_dir })
    }

    /// The S3 endpoint URL, e.g. `http://127.0.0.1:32772`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The bucket created at start: `kdr`.
    pub fn bucket(&self) -> &str {
        "kdr"
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        S3_ACCESS_KEY
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        S3_SECRET_KEY
    }

    /// The region to sign requests for.
    pub fn region(&self) -> &str {
        "us-east-1"
    }

    /// Creates another (empty) bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let p = self.data_dir.path().join(name);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(format!("create bucket dir {}", p.display()), e))
    }

    /// The host directory backing the server (`<dir>/<bucket>/<key>`), for tests that tamper
    /// with stored objects behind the server's back.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// An object_store client for `bucket` on this server, with its credentials.
    pub fn object_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(self.region())
            .with_bucket_name(bucket)
            .with_access_key_id(S3_ACCESS_KEY)
            .with_secret_access_key(S3_SECRET_KEY)
            .build()
            .map_err(|e| Error::config("test S3 store", e.to_string()))?;
        Ok(Arc::new(s3))
    }

    /// Stops the server (for "store dying mid-upload" tests). Don't call it on [`Self::shared`].
    pub async fn stop(&self) -> Result<()> {
        self.container.stop_with_timeout(Some(1)).await.map_err(|e| docker_error("stop S3 container", e))
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        self.container.id()
    }
}

// ------------------------------------------------------------------------------------------------
// sshd "nodes"
// ------------------------------------------------------------------------------------------------

/// Where recording stand-ins log their calls inside a node container.
pub const RECORDER_LOG: &str = "/var/log/kdr-calls.log";

const RECORDER_SCRIPT: &str = r#"#!/bin/sh
# kdr recording stand-in: logs each call, then prints and exits as configured in /etc/kdr-recorder.
n=$(basename "$0")
printf '%s\n' "$n $*" >> /var/log/kdr-calls.log
d=/etc/kdr-recorder
[ -f "$d/$n.stdout" ] && cat "$d/$n.stdout"
[ -f "$d/$n.stderr" ] && cat "$d/$n.stderr" >&2
exit "$(cat "$d/$n.exit" 2>/dev/null || echo 0)"
"#;

/// Options for [`SshNodeContainer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct SshNodeOptions {
    /// A Docker network to attach to (created by the test), instead of the default bridge.
    pub network: Option<String>,
    /// The container's hostname (and network alias).
    pub hostname: Option<String>,
}

/// A Debian "node" with sshd: user `kube` with key auth and passwordless sudo (as seed 000's
/// workers are set up), a host key known in advance, and optional recording stand-ins for
/// `kubeadm`, `systemctl`, `kubectl` and `crictl`.
#[derive(Debug)]
pub struct SshNodeContainer {
    container: ContainerAsync<GenericImage>,
    port: u16,
    dir: tempfile::TempDir,
    known_hosts: PathBuf,
    host_public_key: String,
}

fn ssh_keygen(path: &Path) -> Result<String> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kdr-test", "-f"])
        .arg(path)
        .output()
        .map_err(|e| Error::io("run ssh-keygen (apt-get install openssh-client)", e))?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            host: "localhost".into(),
            command: "ssh-keygen".into(),
            exit_code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let pubkey = path.with_extension("pub");
    std::fs::read_to_string(&pubkey).map_err(|e| Error::io(format!("read {}", pubkey.display()), e))
}

impl SshNodeContainer {
    /// Starts a node on the default bridge network, sshd published on a loopback port.
    pub async fn start() -> Result<Self> {
        Self::start_with(SshNodeOptions::default()).await
    }

    /// Starts a node with options.
    pub async fn start_with(opts: SshNodeOptions) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("create temp dir for ssh keys", e))?;
        let client_pub = ssh_keygen(&dir.path().join("id_ed25519"))?;
        let host_pub = ssh_keygen(&dir.path().join("host_ed25519"))?;
        let host_key = std::fs::read(dir.path().join("host_ed25519"))
            .map_err(|e| Error::io("read generated host key", e))?;

        let setup = "set -e; \
            id kube >/dev/null 2>&1 || useradd -m -s /bin/bash kube; usermod -p '*' kube; \
            install -d -m 700 -o kube -g kube /home/kube/.ssh; \
            install -m 600 -o kube -g kube /kdr/authorized_keys /home/kube/.ssh/authorized_keys; \
            install -m 600 /kdr/host_ed25519 /etc/ssh/ssh_host_ed25519_key; \
            echo 'kube ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/kube; chmod 440 /etc/sudoers.d/kube; \
            mkdir -p /run/sshd /etc/kdr-recorder; touch /var/log/kdr-calls.log; chmod 666 /var/log/kdr-calls.log; \
            exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PasswordAuthentication=no";
        let mut request = GenericImage::new("kdr-test/node", "bookworm")
            .with_exposed_port(ContainerPort::Tcp(22))
            .with_wait_for(WaitFor::message_on_stderr("Server listening on"))
            .with_label(LABEL, "1")
            .with_startup_timeout(STARTUP)
            .with_copy_to("/kdr/authorized_keys", client_pub.into_bytes())
            .with_copy_to("/kdr/host_ed25519", host_key)
            .with_cmd(["sh", "-c", setup]);
        if let Some(net) = &opts.network {
            request = request.with_network(net.clone());
        }
        if let Some(h) = &opts.hostname {
            request = request.with_hostname(h.clone());
        }
        let container = request.start().await.map_err(|e| docker_error("start sshd node container", e))?;
        let port = container
            .get_host_port_ipv4(22)
            .await
            .map_err(|e| docker_error("read node container's port", e))?;

        let host_public_key = host_pub.trim().to_owned();
        let key_part = host_public_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {key_part}\n"))
            .map_err(|e| Error::io("write known_hosts", e))?;
        Ok(Self { container, port, dir, known_hosts, host_public_key })
    }

    /// The address to connect to: `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The loopback port sshd is published on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user, `kube`.
    pub fn user(&self) -> &str {
        "kube"
    }

    /// The client private key (ed25519, no passphrase) authorized for `kube`.
    pub fn private_key_path(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// A known_hosts file with this node's host key for `[127.0.0.1]:<port>`.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// An `[ssh]` configuration that reaches this node as `kube`, with its key and known host
    /// key and a 5 s connect timeout.
    pub fn ssh_config(&self) -> crate::remote::SshConfig {
        crate::remote::SshConfig {
            user: self.user().to_owned(),
            port: self.port(),
            key_file: self.private_key_path(),
            known_hosts: self.known_hosts_path().to_owned(),
            connect_timeout: Duration::from_secs(5),
            ..crate::remote::SshConfig::default()
        }
    }

    /// The node's host public key (`ssh-ed25519 AAAA... kdr-test`).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The container's address on its Docker network (for multi-host tests).
    pub async fn network_ip(&self) -> Result<std::net::IpAddr> {
        self.container.get_bridge_ip_address().await.map_err(|e| docker_error("read node container's IP", e))
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// Runs a shell command inside the container as root (docker exec, not ssh): for test setup
    /// and inspection. Returns (exit code, stdout, stderr).
    pub async fn exec(&self, script: &str) -> Result<(i64, String, String)> {
        exec_in(&self.container, script).await
    }

    /// Writes a file inside the container with `mode`.
    pub async fn install_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(contents);
        let q = crate::remote::shell_quote(path);
        let script = format!(
            "mkdir -p \"$(dirname {q})\" && printf %s '{b64}' | base64 -d > {q} && chmod {mode:o} {q}"
        );
        let (code, _, err) = self.exec(&script).await?;
        if code != 0 {
            return Err(Error::CommandFailed {
                host: self.id().to_owned(),
                command: format!("install {path}"),
                exit_code: Some(code as i32),
                stderr: err,
            });
        }
        Ok(())
    }

    /// Installs recording stand-ins in `/usr/local/bin` (ahead of any real binary on PATH).
    /// Each call appends `<name> <args...>` to [`RECORDER_LOG`], prints what
    /// [`Self::set_recorder_output`] configured, and exits 0 unless [`Self::set_recorder_exit`]
    /// says otherwise.
    pub async fn install_recorders(&self, names: &[&str]) -> Result<()> {
        for name in names {
            self.install_file(&format!("/usr/local/bin/{name}"), RECORDER_SCRIPT.as_bytes(), 0o755).await?;
        }
        Ok(())
    }

    /// Makes the stand-in `name` exit with `code` from now on.
    pub async fn set_recorder_exit(&self, name: &str, code: i32) -> Result<()> {
        self.install_file(&format!("/etc/kdr-recorder/{name}.exit"), code.to_string().as_bytes(), 0o644).await
    }

    /// Makes the stand-in `name` print `stdout` from now on.
    pub async fn set_recorder_output(&self, name: &str, stdout: &str) -> Result<()> {
        self.install_file(&format!("/etc/kdr-recorder/{name}.stdout"), stdout.as_bytes(), 0o644).await
    }

    /// The calls recorded so far, in order: `kubeadm reset -f`, `systemctl restart kubelet`, ...
    pub async fn recorded_calls(&self) -> Result<Vec<String>> {
        let (_, out, _) = self.exec(&format!("cat {RECORDER_LOG}")).await?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// Stops the container (the node goes away: connections are refused or time out).
    pub async fn stop(&self) -> Result<()> {
        self.container.stop_with_timeout(Some(1)).await.map_err(|e| docker_error("stop node container", e))
    }
}
