//! The drill's hosts, networks and measurements. See the [crate docs](crate).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::bins::bins;
use crate::common::wait::{metric, parse_metrics, wait_for};
use chrono::{DateTime, Utc};
use kdr_core::clock::{Clock, SystemClock};
use kdr_core::runbook::ClaimStore;
use kdr_core::snapshot::{ObjectStoreSnapshotStore, SnapshotStore, StoreOptions};
use kdr_core::testing::containers::{EtcdTls, S3Container, SshNodeContainer, SshNodeOptions, test_ca};
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};

/// The standby's probe interval, in seconds.
pub const INTERVAL_S: u64 = 1;
/// The standby's `dead_after`, in seconds.
pub const DEAD_AFTER_S: u64 = 5;
/// The primary's backup interval, in seconds.
pub const BACKUP_INTERVAL_S: u64 = 2;
/// How long the uplink's webhook hangs on each alert while told to (`hosts/uplink`).
pub const WEBHOOK_HANG_S: u64 = 30;
/// The uplink's webhook port, also what the standby's self probe connects to.
const UPLINK_PORT: u16 = 8080;

const HOSTS: &[(&str, &str)] = &[
    ("supervise", include_str!("hosts/supervise")),
    ("boot-master-1", include_str!("hosts/boot-master-1")),
    ("boot-standby", include_str!("hosts/boot-standby")),
    ("static-pods", include_str!("hosts/static-pods")),
    ("kubeadm", include_str!("hosts/kubeadm")),
    ("kubectl", include_str!("hosts/kubectl")),
    ("etcdutl", include_str!("hosts/etcdutl")),
    ("fence-ipmi", include_str!("hosts/fence-ipmi")),
    ("alert", include_str!("hosts/alert")),
    ("uplink", include_str!("hosts/uplink")),
];

/// Seconds from `a` to `b`.
pub fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

fn docker(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("docker").args(args).output().expect("docker CLI (the drill needs Docker)");
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), s(&out.stdout), s(&out.stderr))
}

fn docker_ok(args: &[&str]) -> String {
    let (code, out, err) = docker(args);
    assert_eq!(code, 0, "docker {}: {err}", args.join(" "));
    out
}

fn write(path: &Path, contents: impl AsRef<[u8]>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn etcd_dir() -> PathBuf {
    let d = PathBuf::from(
        std::env::var_os("KDR_ETCD_3_5_DIR").expect("KDR_ETCD_3_5_DIR: run `make test` or `. .tools/env`"),
    );
    assert!(d.join("etcd").exists() && d.join("etcdutl").exists(), "{} lacks etcd/etcdutl", d.display());
    d
}

/// The masters' fixed addresses: on `lan` (everyone) and on `link` (the two masters only).
#[derive(Clone, Debug)]
struct Ips {
    m1: String,
    m2: String,
    m1_link: String,
    m2_link: String,
}

/// The cluster CA and the API server's serving cert (for master-1, on both networks).
struct ClusterPki {
    ca_crt: String,
    ca_key: String,
    apiserver_crt: String,
    apiserver_key: String,
}

fn cluster_pki(ips: &Ips) -> ClusterPki {
    let ca = test_ca("kubernetes").unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["master-1".to_owned(), ips.m1.clone(), ips.m1_link.clone()]).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &ca).unwrap();
    ClusterPki {
        ca_crt: ca.pem(),
        ca_key: ca.key().serialize_pem(),
        apiserver_crt: cert.pem(),
        apiserver_key: key.serialize_pem(),
    }
}

fn pod_manifest(name: &str, command: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\nspec:\n  hostNetwork: true\n  \
         containers:\n  - name: {name}\n    image: registry.k8s.io/{name}:v1.29.15\n    command:\n"
    );
    for c in command {
        s.push_str(&format!("    - {c}\n"));
    }
    s
}

fn cluster_configuration(m1: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: v1.29.15\n\
         clusterName: drill\ncontrolPlaneEndpoint: {m1}:6443\netcd:\n  local:\n    dataDir: /var/lib/etcd\n\
         networking:\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.96.0.0/12\n"
    )
}

/// A Docker network removed (with whatever is still attached) on drop.
struct Net(String);

impl Net {
    /// Creates `name` (`internal`: no route out of it) on `10.<octet>.<third>.0/24`, trying other third octets while a subnet
    /// overlaps an existing network; dynamic addresses (the workers') come from the lower half,
    /// so the masters' fixed `.200`/`.201` stay free. Returns the network and its `10.<octet>.<third>.` prefix.
    fn create(name: String, octet: u8, internal: bool) -> (Self, String) {
        let _ = docker(&["network", "rm", &name]);
        let mut third = (std::process::id() % 200) as u8 + 20;
        for _ in 0..30 {
            let prefix = format!("10.{octet}.{third}.");
            let subnet = format!("{prefix}0/24");
            let range = format!("{prefix}0/25");
            let mut args =
                vec!["network", "create", "--label", "kdr.test=1", "--subnet", &subnet, "--ip-range", &range];
            if internal {
                args.push("--internal");
            }
            args.push(&name);
            let (code, _, err) = docker(&args);
            if code == 0 {
                return (Self(name), prefix);
            }
            assert!(err.contains("overlap"), "docker network create {name}: {err}");
            third = third.wrapping_add(7).max(20);
        }
        panic!("no free 10.{octet}.x.0/24 subnet for {name}");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let (_, ids, _) = docker(&["ps", "-aq", "--filter", &format!("network={}", self.0)]);
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        let _ = docker(&["network", "rm", &self.0]);
    }
}

/// A master: a container run with the docker CLI (stopped, started and rebuilt by the drill).
struct Master {
    name: String,
    /// Its host name (`master-1`, `master-2`): its node name and claim holder.
    host: String,
    /// Its `/drill`.
    dir: PathBuf,
    /// Its fixed addresses on `lan` and on `link`.
    ip: String,
    link_ip: String,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// A container run with the docker CLI, removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// What every standby's and promoted node's config shares, kept to write a rebuilt node's.
struct Shared {
    /// `[cluster]` and `[store]`.
    store_toml: String,
    /// `[[workers]]`.
    workers_toml: String,
    /// The standby's `[monitor.alerts]`: the exec hook and the uplink's webhook.
    alerts_toml: String,
    /// The uplink's address (the standby's self probe target and webhook).
    uplink_ip: String,
}

/// A standby's config: `me` watches `primary` (its API and sshd at their `link` addresses, the
/// witnesses asking for its API at its `lan` address) and promotes itself with `kdr failover`.
/// `roles` and `extra` (more tables) let the operator give it the primary role after a promotion.
fn standby_toml(sh: &Shared, me: &Master, primary: &Master, roles: &str, extra: &str) -> String {
    format!(
        "{store_toml}[restore]\netcdutl = \"/drill/bin/etcdutl\"\netcdctl = \"/opt/etcd/etcdctl\"\netcd = \"/opt/etcd/etcd\"\n\
         initial_advertise_peer_urls = \"http://{me_ip}:2380\"\n\
         [ssh]\nuser = \"kube\"\nknown_hosts = \"/drill/ssh/known_hosts\"\nkey_file = \"/drill/ssh/worker-1.key\"\n\
         connect_timeout = \"3s\"\n{workers_toml}\
         [worker_recovery]\nmode = \"rewire\"\nkubectl = \"/drill/bin/kubectl\"\nadmin_kubeconfig = \"/etc/kubernetes/admin.conf\"\n\
         poll_interval = \"1s\"\n\
         [primary]\nname = \"{p_host}\"\naddress = \"{p_ip}\"\n\
         [promotion]\nnode_name = \"{me_host}\"\nadvertise_address = \"{me_ip}\"\nstate_dir = \"/var/lib/kdr/promotion\"\nbundle_dir = \"/var/lib/kdr/promotion/bundle\"\n\
         [promotion.checks]\nkubectl = \"/drill/bin/kubectl\"\ntimeout = \"60s\"\npoll_interval = \"1s\"\n\
         [kubeadm]\nkubeadm = \"/drill/bin/kubeadm\"\netcd_data_dir = \"/var/lib/etcd\"\ninit_timeout = \"2m\"\n\
         [fence]\nkind = \"exec\"\ncommand = [\"/drill/bin/fence-ipmi\"]\n\
         [detector]\ninterval_s = {INTERVAL_S}\ndead_after_s = {DEAD_AFTER_S}\nprobe_timeout_s = 0.8\n\
         witnesses = [\"worker-1\", \"worker-2\", \"worker-3\"]\n\
         [monitor]\nroles = {roles}\nlisten = \"0.0.0.0:9464\"\nstate_dir = \"/var/lib/kdr/monitor\"\n\
         record_trace = \"/drill/trace.jsonl\"\n\
         [monitor.standby]\napi_url = \"https://{p_link}:6443/healthz\"\napi_ca_file = \"/drill/pki/ca.crt\"\n\
         host_tcp = \"{p_link}:22\"\nself_tcp = \"{uplink}:{UPLINK_PORT}\"\nwitness_url = \"https://{p_ip}:6443/healthz\"\n\
         promote_timeout_s = 600\n{alerts}{extra}",
        store_toml = sh.store_toml,
        workers_toml = sh.workers_toml,
        alerts = sh.alerts_toml,
        uplink = sh.uplink_ip,
        me_ip = me.ip,
        me_host = me.host,
        p_host = primary.host,
        p_ip = primary.ip,
        p_link = primary.link_ip,
    )
}

/// What a promotion left: the journal's figures.
#[derive(Debug, Clone)]
pub struct Promoted {
    /// The backup set restored.
    pub snapshot: String,
    /// The restore step's start and end.
    pub restore: (DateTime<Utc>, DateTime<Utc>),
    /// When the runbook completed.
    pub finished_at: DateTime<Utc>,
    /// When the promotion alert fired (the detector's decision).
    pub decided_at: DateTime<Utc>,
}

/// A write master-1 acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    key: String,
    revision: i64,
    at: DateTime<Utc>,
}

/// The figures of one failover.
pub struct Report {
    /// Stop -> the detector's decision.
    pub detection_s: f64,
    restore_s: f64,
    /// Stop -> the runbook complete.
    pub rto_s: f64,
    etcd_serving_s: f64,
    acked: usize,
    lost: Vec<String>,
    rpo_s: f64,
    since_backup_s: f64,
}

impl Report {
    /// Prints the figures on one block (the README records them).
    pub fn print(&self, title: &str) {
        let lost = match (self.lost.first(), self.lost.last()) {
            (Some(a), Some(b)) => format!(" ({a} .. {b})"),
            _ => String::new(),
        };
        println!(
            "{title}:\n  detection {:.2} s (stop -> promotion decided; dead_after {DEAD_AFTER_S} s, interval {INTERVAL_S} s)\n  \
             restore {:.2} s (download, verify, etcdutl restore, bundle)\n  etcd serving on master-2 {:.2} s after the stop\n  \
             RTO {:.2} s (stop -> runbook complete: workers rewired, post-checks passed)\n  \
             data: {} writes acknowledged by master-1, {} lost{lost}\n  \
             RPO {:.2} s (newest surviving write -> the stop); the restored set was taken {:.2} s before the stop",
            self.detection_s,
            self.restore_s,
            self.etcd_serving_s,
            self.rto_s,
            self.acked,
            self.lost.len(),
            self.rpo_s,
            self.since_backup_s
        );
    }
}

/// Runs master `m` booting with `boot`: on `lan` at its fixed address, and on each of `more`
/// (network, fixed address if any) before it boots.
fn run_master(m: &Master, lan: &str, more: &[(&str, Option<&str>)], boot: &str, extra: &[&str]) {
    let mut args: Vec<String> = ["create", "--name", &m.name, "--hostname", &m.host, "--network", lan]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(["--ip".into(), m.ip.clone(), "--label".into(), "kdr.test=1".into()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let bins = bins();
    for (src, dst) in [
        (m.dir.clone(), "/drill"),
        (etcd_dir(), "/opt/etcd"),
        (bins.join("kdr"), "/opt/kdr/kdr"),
        (bins.join("kdr-monitor"), "/opt/kdr/kdr-monitor"),
    ] {
        args.push("-v".into());
        args.push(format!("{}:{dst}{}", src.display(), if dst == "/drill" { "" } else { ":ro" }));
    }
    args.extend(["kdr-test/node:bookworm".into(), "bash".into(), format!("/drill/bin/{boot}")]);
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (net, ip) in more {
        match ip {
            Some(ip) => docker_ok(&["network", "connect", "--ip", ip, net, &m.name]),
            None => docker_ok(&["network", "connect", net, &m.name]),
        };
    }
    docker_ok(&["start", &m.name]);
}

/// The drill's topology. Dropping it removes every container and the networks.
pub struct Drill {
    // Field order is drop order: containers first, then the networks, then the files.
    /// master-1 until [`Drill::rebuild_primary_as_standby`] swaps the two.
    primary: Master,
    standby: Master,
    _uplink: Container,
    workers: Vec<SshNodeContainer>,
    /// Kept for its lifetime: the store's server.
    _s3: S3Container,
    etcd_tls: EtcdTls,
    store: ObjectStoreSnapshotStore,
    lan: String,
    link: String,
    uplink_net: String,
    uplink_dir: PathBuf,
    shared: Shared,
    _nets: [Net; 3],
    dir: tempfile::TempDir,
}

impl Drill {
    /// Builds the topology and waits until master-1 serves and master-2's monitor runs.
    pub async fn start(tag: &str) -> Self {
        bins();
        let id = format!("kdr-drill-{tag}-{}", std::process::id());
        let (lan, lan_net) = Net::create(format!("{id}-lan"), 213, false);
        let (link, link_net) = Net::create(format!("{id}-link"), 214, false);
        // The standby's uplink: a network of its own (no route out), which cutting `lan` and
        // `link` leaves up, as a standby's gateway stays up when its LAN switch port dies.
        let (uplink, uplink_prefix) = Net::create(format!("{id}-uplink"), 215, true);
        let ips = Ips {
            m1: format!("{lan_net}200"),
            m2: format!("{lan_net}201"),
            m1_link: format!("{link_net}200"),
            m2_link: format!("{link_net}201"),
        };
        let dir = tempfile::tempdir().unwrap();

        let s3 = S3Container::start().await.unwrap();
        docker_ok(&["network", "connect", "--alias", "s3", &lan.0, s3.id()]);
        let prefix = format!("drill-{tag}");
        let store_url = format!("s3://{}/{prefix}", s3.bucket());
        let store = ObjectStoreSnapshotStore::from_url(
            &store_url,
            &StoreOptions {
                endpoint: Some(s3.endpoint()),
                region: Some(s3.region().into()),
                access_key_id: Some(s3.access_key().into()),
                secret_access_key: Some(s3.secret_key().into()),
                allow_http: true,
                ..Default::default()
            },
        )
        .unwrap();

        let pki = cluster_pki(&ips);
        let etcd_pki = dir.path().join("etcd-pki");
        std::fs::create_dir_all(&etcd_pki).unwrap();
        let etcd_tls = EtcdTls::generate(&etcd_pki).unwrap();

        // Workers: sshd, the cluster CA (for their witness curl), kubelet.conf naming master-1.
        let mut workers = Vec::new();
        for i in 1..=3 {
            let w = SshNodeContainer::start_with(SshNodeOptions {
                network: Some(lan.0.clone()),
                hostname: Some(format!("worker-{i}")),
            })
            .await
            .unwrap();
            w.install_recorders(&["kubeadm", "systemctl", "crictl"]).await.unwrap();
            w.install_file("/etc/kubernetes/pki/ca.crt", pki.ca_crt.as_bytes(), 0o644).await.unwrap();
            let kubelet_conf = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: \
                 /etc/kubernetes/pki/ca.crt\n    server: https://{}:6443\n  name: default-cluster\n",
                ips.m1
            );
            w.install_file("/etc/kubernetes/kubelet.conf", kubelet_conf.as_bytes(), 0o600).await.unwrap();
            let ip = w.network_ip().await.unwrap().to_string();
            workers.push((w, ip));
        }

        // The uplink: its webhook receiver (hosts/uplink) at a fixed address.
        let uplink_dir = dir.path().join("uplink");
        write(&uplink_dir.join("bin/uplink"), include_str!("hosts/uplink"), 0o755);
        let uplink_ip = format!("{uplink_prefix}250");
        let uplink_c = Container(format!("{id}-uplink"));
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &uplink_c.0,
            "--hostname",
            "uplink",
            "--network",
            &uplink.0,
            "--ip",
            &uplink_ip,
            "--label",
            "kdr.test=1",
            "-v",
            &format!("{}:/drill", uplink_dir.display()),
            "kdr-test/node:bookworm",
            "python3",
            "/drill/bin/uplink",
        ]);

        let common_env = format!("AWS_SECRET_ACCESS_KEY={}\nRUST_LOG=info\n", s3.secret_key());
        let store_toml = format!(
            "[cluster]\nname = \"drill\"\n[store]\nurl = \"{store_url}\"\nendpoint = \"http://s3:9000\"\n\
             region = \"{}\"\naccess_key_id = \"{}\"\nallow_http = true\n",
            s3.region(),
            s3.access_key()
        );
        let alerts = "[monitor.alerts]\nexec = [[\"/drill/bin/alert\"]]\n";

        // master-1's files.
        let m1_dir = dir.path().join("m1");
        let seed = m1_dir.join("seed/etc/kubernetes");
        write(&seed.join("pki/ca.crt"), &pki.ca_crt, 0o644);
        write(&seed.join("pki/ca.key"), &pki.ca_key, 0o600);
        write(&seed.join("pki/apiserver.crt"), &pki.apiserver_crt, 0o644);
        write(&seed.join("pki/apiserver.key"), &pki.apiserver_key, 0o600);
        write(&seed.join("pki/sa.key"), "-----BEGIN PRIVATE KEY-----\nsa (drill)\n", 0o600);
        write(&seed.join("pki/sa.pub"), "-----BEGIN PUBLIC KEY-----\nsa (drill)\n", 0o644);
        write(&seed.join("pki/front-proxy-ca.crt"), "front-proxy-ca (drill)\n", 0o644);
        write(&seed.join("pki/front-proxy-ca.key"), "front-proxy-ca key (drill)\n", 0o600);
        for f in [
            "ca.crt",
            "ca.key",
            "server.crt",
            "server.key",
            "peer.crt",
            "peer.key",
            "healthcheck-client.crt",
            "healthcheck-client.key",
        ] {
            let mode = if f.ends_with(".key") { 0o600 } else { 0o644 };
            write(&seed.join("pki/etcd").join(f), std::fs::read(etcd_pki.join(f)).unwrap(), mode);
        }
        write(
            &seed.join("manifests/etcd.yaml"),
            pod_manifest(
                "etcd",
                &["etcd", "--data-dir=/var/lib/etcd", "--advertise-client-urls=https://master-1:2379"],
            ),
            0o600,
        );
        write(
            &seed.join("manifests/kube-apiserver.yaml"),
            pod_manifest(
                "kube-apiserver",
                &[
                    "kube-apiserver",
                    &format!("--advertise-address={}", ips.m1),
                    "--etcd-servers=https://127.0.0.1:2379",
                ],
            ),
            0o600,
        );
        for m in ["kube-controller-manager", "kube-scheduler"] {
            write(&seed.join(format!("manifests/{m}.yaml")), pod_manifest(m, &[m]), 0o600);
        }
        write(&seed.join("kubeadm-config.yaml"), cluster_configuration(&ips.m1), 0o644);
        write(&m1_dir.join("www/healthz"), "ok", 0o644);
        write(&m1_dir.join("monitor.env"), &common_env, 0o600);
        let m1_toml = format!(
            "{store_toml}[etcd]\nendpoint = \"https://127.0.0.1:2379\"\ncacert = \"/etc/kubernetes/pki/etcd/ca.crt\"\n\
             cert = \"/etc/kubernetes/pki/etcd/healthcheck-client.crt\"\nkey = \"/etc/kubernetes/pki/etcd/healthcheck-client.key\"\n\
             [backup]\nkubeadm_config = \"/etc/kubernetes/kubeadm-config.yaml\"\n\
             [monitor]\nroles = [\"primary\"]\nlisten = \"0.0.0.0:9464\"\nstate_dir = \"/var/lib/kdr/monitor\"\n\
             [monitor.backup]\ninterval_s = {BACKUP_INTERVAL_S}\nprune = false\n[monitor.drill]\nenabled = false\n\
             [monitor.self_fence]\ninterval_s = 1\nepoch = 0\nholder = \"master-1\"\n{alerts}"
        );
        write(&m1_dir.join("kdr.toml"), m1_toml, 0o600);

        // master-2's files.
        let m2_dir = dir.path().join("m2");
        write(&m2_dir.join("pki/ca.crt"), &pki.ca_crt, 0o644);
        write(&m2_dir.join("monitor.env"), &common_env, 0o600);
        write(&m2_dir.join("www/healthz"), "ok", 0o644);
        let mut known_hosts = String::new();
        let mut workers_toml = String::new();
        for (i, (w, ip)) in workers.iter().enumerate() {
            let n = i + 1;
            write(
                &m2_dir.join(format!("ssh/worker-{n}.key")),
                std::fs::read(w.private_key_path()).unwrap(),
                0o600,
            );
            let key: Vec<&str> = w.host_public_key().split_whitespace().take(2).collect();
            known_hosts.push_str(&format!("{ip} {}\n", key.join(" ")));
            workers_toml.push_str(&format!(
                "[[workers]]\nname = \"worker-{n}\"\nhost = \"{ip}\"\nkey_file = \"/drill/ssh/worker-{n}.key\"\n"
            ));
        }
        write(&m2_dir.join("ssh/known_hosts"), known_hosts, 0o644);
        let shared = Shared {
            store_toml,
            workers_toml,
            // The webhook's timeout is longer than its hang: a hanging webhook is felt in full.
            alerts_toml: format!(
                "[monitor.alerts]\nexec = [[\"/drill/bin/alert\"]]\nwebhooks = [\"http://{uplink_ip}:{UPLINK_PORT}/alert\"]\n\
                 timeout_s = {}\n",
                WEBHOOK_HANG_S + 15
            ),
            uplink_ip,
        };
        let m1 = Master {
            name: format!("{id}-master-1"),
            host: "master-1".into(),
            dir: m1_dir,
            ip: ips.m1.clone(),
            link_ip: ips.m1_link.clone(),
        };
        let m2 = Master {
            name: format!("{id}-master-2"),
            host: "master-2".into(),
            dir: m2_dir,
            ip: ips.m2.clone(),
            link_ip: ips.m2_link.clone(),
        };
        write(&m2.dir.join("kdr.toml"), standby_toml(&shared, &m2, &m1, "[\"standby\"]", ""), 0o600);
        for d in [&m1.dir, &m2.dir] {
            for (name, text) in HOSTS {
                write(&d.join("bin").join(name), text, 0o755);
            }
        }

        run_master(&m1, &lan.0, &[(&link.0, Some(&m1.link_ip))], "boot-master-1", &["-p", "127.0.0.1::2379"]);
        let drill = Self {
            dir,
            primary: m1,
            standby: m2,
            _uplink: uplink_c,
            workers: workers.into_iter().map(|(w, _)| w).collect(),
            _s3: s3,
            etcd_tls,
            store,
            lan: lan.0.clone(),
            link: link.0.clone(),
            uplink_net: uplink.0.clone(),
            uplink_dir,
            shared,
            _nets: [lan, link, uplink],
        };
        drill.wait_primary_serving(Duration::from_secs(60)).await;
        drill.seed_cluster().await;
        // The standby starts once the primary serves (else its first rounds would see it dead).
        drill.run_standby(&drill.standby);
        drill
    }

    /// Runs `m` as a standby (`boot-standby`) on `lan`, `link` and the uplink.
    fn run_standby(&self, m: &Master) {
        run_master(
            m,
            &self.lan,
            &[(&self.link, Some(&m.link_ip)), (&self.uplink_net, None)],
            "boot-standby",
            &[],
        );
    }

    fn sh(&self, container: &str, script: &str) -> (i32, String, String) {
        docker(&["exec", container, "bash", "-c", script])
    }

    /// Runs a shell script on the standby and returns its stdout.
    pub fn standby_sh(&self, script: &str) -> String {
        self.sh(&self.standby.name, script).1
    }

    fn primary_port(&self) -> Option<u16> {
        let (code, out, _) = docker(&["port", &self.primary.name, "2379/tcp"]);
        if code != 0 {
            return None;
        }
        out.lines().next()?.rsplit(':').next()?.trim().parse().ok()
    }

    /// A TLS client of the primary's etcd, from the test host (master-1's published port).
    pub async fn primary_client(&self) -> Option<etcd_client::Client> {
        let port = self.primary_port()?;
        etcd_client::Client::connect(
            [format!("https://127.0.0.1:{port}")],
            Some(self.etcd_tls.connect_options().unwrap().with_timeout(Duration::from_secs(2))),
        )
        .await
        .ok()
    }

    async fn wait_primary_serving(&self, limit: Duration) {
        wait_for("master-1's etcd and API server", limit, async || {
            let mut c = self.primary_client().await?;
            c.status().await.ok()?;
            let (code, _, _) = self.workers[0]
                .exec(&format!(
                    "curl -sf --cacert /etc/kubernetes/pki/ca.crt https://{}:6443/healthz",
                    self.primary.ip
                ))
                .await
                .ok()?;
            (code == 0).then_some(())
        })
        .await;
    }

    /// Kubernetes-like keys: the nodes, a few pods, a secret.
    async fn seed_cluster(&self) {
        let mut c = self.primary_client().await.expect("master-1 etcd");
        for n in ["master-1", "worker-1", "worker-2", "worker-3"] {
            c.put(format!("/registry/minions/{n}"), format!("{{\"name\":\"{n}\"}}"), None).await.unwrap();
        }
        for p in [
            "kube-system/etcd-master-1",
            "kube-system/kube-apiserver-master-1",
            "default/web-1",
            "default/web-2",
        ] {
            c.put(format!("/registry/pods/{p}"), format!("{{\"pod\":\"{p}\"}}"), None).await.unwrap();
        }
        c.put("/registry/secrets/default/db", "s3cr3t", None).await.unwrap();
    }

    /// The newest committed set: its id and when it was taken.
    pub async fn newest_set(&self) -> Option<(String, DateTime<Utc>)> {
        self.store.list().await.unwrap().first().map(|m| (m.id.to_string(), m.created_at))
    }

    /// When each set taken after `t` was taken, oldest first.
    pub async fn sets_since(&self, t: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut v: Vec<_> =
            self.store.list().await.unwrap().into_iter().map(|m| m.created_at).filter(|c| *c > t).collect();
        v.sort();
        v
    }

    /// The committed backup sets in the store.
    pub async fn backup_count(&self) -> usize {
        self.store.list().await.map(|l| l.len()).unwrap_or(0)
    }

    /// Waits until the store holds at least `n` complete sets.
    pub async fn wait_backups(&self, n: usize, limit: Duration) {
        wait_for(&format!("{n} backup sets"), limit, async || (self.backup_count().await >= n).then_some(()))
            .await;
    }

    /// Scrapes the standby's monitor.
    pub fn standby_metrics(&self) -> Metrics {
        Metrics(parse_metrics(&self.standby_sh("curl -sf http://127.0.0.1:9464/metrics")))
    }

    /// Polls the standby's metrics until `f` answers.
    pub async fn wait_metrics<T>(&self, limit: Duration, f: impl Fn(&Metrics) -> Option<T>) -> T {
        wait_for(&format!("{}'s metrics", self.standby.host), limit, async || f(&self.standby_metrics()))
            .await
    }

    /// Waits until the standby's detector is watching a live primary (every probe up).
    pub async fn wait_standby_watching(&self, limit: Duration) {
        self.wait_metrics(limit, |m| {
            (m.value("kdr_probe_up", &[("role", "api")]) == Some(1.0)
                && m.value("kdr_probe_up", &[("role", "host")]) == Some(1.0)
                && m.value("kdr_witnesses", &[("verdict", "up")]) == Some(3.0))
            .then_some(())
        })
        .await;
    }

    /// Cuts the standby <-> primary link only.
    pub fn cut_link(&self) {
        docker_ok(&["network", "disconnect", &self.link, &self.primary.name]);
    }

    /// Restores it.
    pub fn restore_link(&self) {
        docker_ok(&["network", "connect", "--ip", &self.primary.link_ip, &self.link, &self.primary.name]);
    }

    /// Cuts the standby off from the primary and every worker (its `lan` and `link`); its
    /// uplink stays. Returns when.
    pub fn isolate_standby(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["network", "disconnect", &self.lan, &self.standby.name]);
        docker_ok(&["network", "disconnect", &self.link, &self.standby.name]);
        at
    }

    /// Connects it again, at its addresses.
    pub fn reconnect_standby(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["network", "connect", "--ip", &self.standby.ip, &self.lan, &self.standby.name]);
        docker_ok(&["network", "connect", "--ip", &self.standby.link_ip, &self.link, &self.standby.name]);
        at
    }

    /// The primary looks dead to everyone without losing its disk or its address: its link to the
    /// standby cut, and the machine frozen (`docker pause`: the witnesses' TLS handshakes stall).
    pub fn freeze_primary(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        self.cut_link();
        docker_ok(&["pause", &self.primary.name]);
        at
    }

    /// Thaws it and restores the link.
    pub fn thaw_primary(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["unpause", &self.primary.name]);
        self.restore_link();
        at
    }

    /// Freezes the standby's whole container (a paused VM, a stopped process); returns when.
    pub fn pause_standby(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["pause", &self.standby.name]);
        at
    }

    /// Thaws it; returns when.
    pub fn unpause_standby(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["unpause", &self.standby.name]);
        at
    }

    /// Freezes worker `n` (1-based): its kernel still accepts TCP on port 22 (the listening
    /// socket's backlog) but sshd never answers: a silent witness.
    pub fn silence_worker(&self, n: usize) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["pause", self.workers[n - 1].id()]);
        at
    }

    /// Lets it answer again.
    pub fn wake_worker(&self, n: usize) {
        docker_ok(&["unpause", self.workers[n - 1].id()]);
    }

    /// Makes the uplink's alert webhook hang [`WEBHOOK_HANG_S`] on each alert (or answer at once).
    pub fn hang_webhook(&self, hang: bool) {
        let f = self.uplink_dir.join("webhook-hang");
        if hang {
            write(&f, "", 0o644);
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    /// The alerts the webhook received: (time received, `ok`|`hang`, JSON body).
    pub fn webhook_calls(&self) -> Vec<(DateTime<Utc>, String, String)> {
        let text = std::fs::read_to_string(self.uplink_dir.join("webhook.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let at = DateTime::parse_from_rfc3339(it.next()?).ok()?.with_timezone(&Utc);
                Some((at, it.next()?.to_owned(), it.next().unwrap_or("").to_owned()))
            })
            .collect()
    }

    /// The operator gives the promoted standby the primary role: the same config file with
    /// `roles = ["primary"]`, its etcd (the promoted one, with the restored healthcheck client
    /// cert) and backups every [`BACKUP_INTERVAL_S`] s, and nothing about the self-fence (no epoch,
    /// no holder): the defaults must not fence this node for its own claim. The monitor is
    /// restarted (its supervisor runs the new config). Returns when.
    pub fn give_standby_primary_role(&self) -> DateTime<Utc> {
        let primary_tables = format!(
            "[etcd]\nendpoint = \"https://127.0.0.1:2379\"\ncacert = \"/etc/kubernetes/pki/etcd/ca.crt\"\n\
             cert = \"/etc/kubernetes/pki/etcd/healthcheck-client.crt\"\nkey = \"/etc/kubernetes/pki/etcd/healthcheck-client.key\"\n\
             [backup]\nkubeadm_config = \"/etc/kubernetes/kdr-kubeadm-init.yaml\"\n\
             [monitor.backup]\ninterval_s = {BACKUP_INTERVAL_S}\nprune = false\n[monitor.drill]\nenabled = false\n\
             [monitor.self_fence]\ninterval_s = 1\n"
        );
        let toml = standby_toml(&self.shared, &self.standby, &self.primary, "[\"primary\"]", &primary_tables);
        write(&self.standby.dir.join("kdr.toml"), toml, 0o600);
        let at = SystemClock.utc();
        let (code, _, err) = self.sh(&self.standby.name, "pkill -f '^[/]opt/kdr/kdr-monitor'; true");
        assert_eq!(code, 0, "{err}");
        at
    }

    /// Rebuilds the old primary (a fresh machine: new disk, same name and addresses) as the
    /// standby of the promoted one, and swaps the two: from here on `primary` is the promoted
    /// node and `standby` the rebuilt one. Its monitor starts with an empty state dir.
    pub fn rebuild_primary_as_standby(&mut self) {
        docker_ok(&["rm", "-f", &self.primary.name]);
        let dir = self.dir.path().join(format!("{}-rebuilt", self.primary.host));
        for f in ["pki/ca.crt", "monitor.env", "www/healthz", "ssh/known_hosts"] {
            let mode = if f == "monitor.env" { 0o600 } else { 0o644 };
            write(&dir.join(f), std::fs::read(self.standby.dir.join(f)).unwrap(), mode);
        }
        for n in 1..=self.workers.len() {
            let f = format!("ssh/worker-{n}.key");
            write(&dir.join(&f), std::fs::read(self.standby.dir.join(&f)).unwrap(), 0o600);
        }
        for (name, text) in HOSTS {
            write(&dir.join("bin").join(name), text, 0o755);
        }
        let rebuilt = Master {
            name: self.primary.name.clone(),
            host: self.primary.host.clone(),
            dir,
            ip: self.primary.ip.clone(),
            link_ip: self.primary.link_ip.clone(),
        };
        write(
            &rebuilt.dir.join("kdr.toml"),
            standby_toml(&self.shared, &rebuilt, &self.standby, "[\"standby\"]", ""),
            0o600,
        );
        self.run_standby(&rebuilt);
        // The old value names the same container, now the rebuilt node's: dropping it would
        // remove that.
        let old = std::mem::replace(&mut self.primary, rebuilt);
        std::mem::forget(old);
        std::mem::swap(&mut self.primary, &mut self.standby);
    }

    /// Stops the primary at once (power loss); returns when.
    pub fn stop_primary(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["stop", "-t", "0", &self.primary.name]);
        at
    }

    /// Starts the (old) primary again (its disk kept); returns when.
    pub fn start_primary(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        docker_ok(&["start", &self.primary.name]);
        at
    }

    /// Makes the standby's kubeadm stand-in wait at `kubeadm init`.
    pub fn hold_kubeadm(&self) {
        write(&self.standby.dir.join("kubeadm-hold"), "", 0o644);
    }

    /// Lets it go on.
    pub fn release_kubeadm(&self) {
        std::fs::remove_file(self.standby.dir.join("kubeadm-hold")).unwrap();
    }

    /// Kills the standby's monitor with its promotion (`kdr failover`) and the held kubeadm, as
    /// systemd kills a crashed service's cgroup; the supervisor restarts the monitor.
    pub fn kill_standby_monitor(&self) -> DateTime<Utc> {
        let at = SystemClock.utc();
        let (code, _, err) = self
            .sh(&self.standby.name, "pkill -9 -f '^[/]opt/kdr/'; pkill -9 -f '[/]drill/bin/kubeadm'; true");
        assert_eq!(code, 0, "{err}");
        at
    }

    /// The operator resumes the promotion by hand: `kdr failover --config` on the standby.
    pub fn operator_failover(&self) -> (i32, String, String) {
        self.sh(
            &self.standby.name,
            "set -a; . /drill/monitor.env; set +a; exec /opt/kdr/kdr failover --config /drill/kdr.toml",
        )
    }

    /// A file under the standby's /drill.
    pub fn standby_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.standby.dir.join(name)).unwrap_or_default()
    }

    fn primary_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.primary.dir.join(name)).unwrap_or_default()
    }

    /// Waits for a line containing `needle` in the standby's `file`.
    pub async fn wait_standby_log(&self, file: &str, needle: &str, limit: Duration) -> String {
        wait_for(&format!("{needle:?} in {}'s {file}", self.standby.host), limit, async || {
            self.standby_file(file).lines().find(|l| l.contains(needle)).map(str::to_owned)
        })
        .await
    }

    fn alert_in(text: &str, needle: &str) -> Option<(DateTime<Utc>, String)> {
        text.lines().find(|l| l.contains(needle)).and_then(|l| {
            let (at, rest) = l.split_once(' ')?;
            Some((DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc), rest.to_owned()))
        })
    }

    /// Waits for a standby alert containing `needle`; returns its time and text.
    pub async fn wait_standby_alert(&self, needle: &str, limit: Duration) -> (DateTime<Utc>, String) {
        wait_for(&format!("{} alert {needle:?}", self.standby.host), limit, async || {
            Self::alert_in(&self.standby_file("alerts.log"), needle)
        })
        .await
    }

    /// Waits for a primary alert containing `needle`.
    pub async fn wait_primary_alert(&self, needle: &str, limit: Duration) -> (DateTime<Utc>, String) {
        wait_for(&format!("{} alert {needle:?}", self.primary.host), limit, async || {
            Self::alert_in(&self.primary_file("alerts.log"), needle)
        })
        .await
    }

    /// Waits until the primary's etcd and API server stand-ins are down (after its self-fence).
    pub async fn wait_primary_control_plane_stopped(&self, limit: Duration) {
        wait_for(&format!("{}'s control plane to stop", self.primary.host), limit, async || {
            let (code, out, _) = self.sh(&self.primary.name, "pgrep -x etcd; pgrep -x openssl; true");
            (code == 0 && out.trim().is_empty()).then_some(())
        })
        .await;
    }

    /// How long the primary's etcd ran after its last start, from the static-pods log.
    pub fn primary_served_after_return(&self) -> f64 {
        let log = self.primary_file("static-pods.log");
        let at = |needle: &str| {
            log.lines()
                .filter(|l| l.contains(needle))
                .filter_map(|l| DateTime::parse_from_rfc3339(l.split(' ').next()?).ok())
                .map(|t| t.with_timezone(&Utc))
                .next_back()
        };
        match (at("started etcd"), at("stopped etcd")) {
            (Some(a), Some(b)) if b >= a => secs_between(a, b),
            other => panic!("master-1's static-pods log lacks a start and a stop of etcd: {other:?}\n{log}"),
        }
    }

    /// The primary's static pod manifests.
    pub fn primary_manifests(&self) -> Vec<String> {
        let (_, out, _) = self.sh(&self.primary.name, "ls /etc/kubernetes/manifests");
        out.split_whitespace().map(str::to_owned).collect()
    }

    /// Where its self-fence moved them.
    pub fn primary_manifests_aside(&self) -> Vec<String> {
        let (_, out, _) = self.sh(&self.primary.name, "ls /etc/kubernetes/manifests.kdr-fenced-epoch-1");
        out.split_whitespace().map(str::to_owned).collect()
    }

    /// The newest epoch claimed in the store (the runbook's claims, read with its [`ClaimStore`]).
    pub async fn newest_claim(&self) -> Option<u64> {
        self.newest_claim_by().await.map(|c| c.0)
    }

    /// The newest claim's epoch and holder.
    pub async fn newest_claim_by(&self) -> Option<(u64, String)> {
        let claims = ClaimStore::new(self.store.inner().clone(), self.store.prefix(), "drill");
        claims.newest().await.unwrap().map(|c| (c.epoch, c.holder))
    }

    /// The standby's static pod manifests.
    pub fn standby_manifests(&self) -> Vec<String> {
        let (_, out, _) = self.sh(&self.standby.name, "ls /etc/kubernetes/manifests");
        out.split_whitespace().map(str::to_owned).collect()
    }

    fn count_lines(&self, file: &str, needle: &str) -> usize {
        self.standby_file(file).lines().filter(|l| l.contains(needle)).count()
    }

    /// etcdutl restores run on the standby.
    pub fn restores(&self) -> usize {
        self.count_lines("etcdutl-calls.log", "snapshot restore")
    }

    /// kubeadm inits run on the standby.
    pub fn kubeadm_inits(&self) -> usize {
        self.count_lines("kubeadm-calls.log", "kubeadm init")
    }

    /// Fence hook calls on the standby, against the primary.
    pub fn fences(&self) -> usize {
        self.count_lines("fence-calls.log", &format!("fence {} ", self.primary.host))
    }

    /// The promotion journal of `epoch` on the standby.
    pub fn journal(&self, epoch: u64) -> Option<serde_json::Value> {
        let (code, out, _) =
            self.sh(&self.standby.name, &format!("cat /var/lib/kdr/promotion/promotion-epoch-{epoch}.json"));
        (code == 0).then(|| serde_json::from_str(&out).unwrap())
    }

    /// Waits until the promotion of `epoch` completed; returns the journal's figures.
    pub async fn wait_promoted(&self, epoch: u64, limit: Duration) -> Promoted {
        let journal = wait_for(&format!("the promotion of epoch {epoch} to complete"), limit, async || {
            let j = self.journal(epoch)?;
            if j["completed_at"].is_string() { Some(j) } else { None }
        })
        .await;
        let time = |v: &serde_json::Value| -> DateTime<Utc> {
            DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&Utc)
        };
        let restore = step(&journal, "restore").expect("a restore step");
        let decided_at = Self::alert_in(&self.standby_file("alerts.log"), "promoting this standby")
            .map(|a| a.0)
            .unwrap_or_else(|| time(&journal["created_at"]));
        Promoted {
            snapshot: journal["snapshot"].as_str().unwrap().to_owned(),
            restore: (time(&restore["started_at"]), time(&restore["finished_at"])),
            finished_at: time(&journal["completed_at"]),
            decided_at,
        }
    }

    /// The promoted etcd's keys under `/registry/drill/` (read on the standby with the real etcdctl).
    pub fn promoted_drill_keys(&self) -> Vec<String> {
        let (code, out, err) = self.sh(
            &self.standby.name,
            "P=/etc/kubernetes/pki/etcd; /opt/etcd/etcdctl --endpoints=https://127.0.0.1:2379 --cacert $P/ca.crt \
             --cert $P/server.crt --key $P/server.key get /registry/drill/ --prefix --keys-only",
        );
        assert_eq!(code, 0, "reading {}'s etcd: {err}", self.standby.host);
        out.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    }

    /// The promotion restored the newest set, and the standby's etcd serves every write master-1
    /// acknowledged up to that set's revision. The set's revision is read just before its
    /// snapshot streams, so the snapshot may hold a few writes more: what survives is a prefix of
    /// the acknowledged writes (no holes), at least up to that revision.
    pub async fn assert_promoted_from_latest(&self, p: &Promoted, acked: &[Acked]) {
        let sets = self.store.list().await.unwrap();
        let newest = sets.first().expect("sets");
        assert_eq!(p.snapshot, newest.id.to_string(), "restored from the latest backup");
        let keys = self.promoted_drill_keys();
        let newest_present =
            acked.iter().filter(|a| keys.contains(&a.key)).map(|a| a.revision).max().unwrap_or(0);
        assert!(
            newest_present >= newest.source.revision,
            "the set's revision is {} but the newest surviving write has revision {newest_present}",
            newest.source.revision
        );
        for a in acked {
            let present = keys.contains(&a.key);
            assert_eq!(
                present,
                a.revision <= newest_present,
                "{} (revision {}; set revision {}, newest surviving write {newest_present}): present {present}",
                a.key,
                a.revision,
                newest.source.revision
            );
        }
        let (code, out, _) = self.sh(
            &self.standby.name,
            "P=/etc/kubernetes/pki/etcd; /opt/etcd/etcdctl --endpoints=https://127.0.0.1:2379 --cacert $P/ca.crt \
             --cert $P/server.crt --key $P/server.key get /registry/secrets/default/db --print-value-only",
        );
        assert_eq!((code, out.trim()), (0, "s3cr3t"));
    }

    /// Each worker's kubelet now talks to the standby, and kubelet was restarted (no reset, no join).
    pub async fn assert_workers_rewired(&self) {
        for w in &self.workers {
            let (_, conf, _) = w.exec("cat /etc/kubernetes/kubelet.conf").await.unwrap();
            assert!(conf.contains(&format!("server: https://{}:6443", self.standby.ip)), "{conf}");
            let calls = w.recorded_calls().await.unwrap();
            assert!(calls.iter().any(|c| c == "systemctl restart kubelet"), "{calls:?}");
            assert!(!calls.iter().any(|c| c.starts_with("kubeadm reset")), "{calls:?}");
        }
    }

    /// The figures of a failover that stopped the primary at `stopped_at`.
    pub async fn measure(&self, stopped_at: DateTime<Utc>, p: &Promoted, acked: &[Acked]) -> Report {
        let keys = self.promoted_drill_keys();
        let lost: Vec<String> =
            acked.iter().filter(|a| !keys.contains(&a.key)).map(|a| a.key.clone()).collect();
        let newest_surviving = acked.iter().filter(|a| keys.contains(&a.key)).map(|a| a.at).max();
        let set =
            self.store.list().await.unwrap().into_iter().find(|m| m.id.to_string() == p.snapshot).unwrap();
        let serving = self
            .standby_file("kubeadm-calls.log")
            .lines()
            .filter(|l| l.contains("etcd serves the restored data"))
            .filter_map(|l| DateTime::parse_from_rfc3339(l.split(' ').next()?).ok())
            .map(|t| t.with_timezone(&Utc))
            .next_back();
        Report {
            detection_s: secs_between(stopped_at, p.decided_at),
            restore_s: secs_between(p.restore.0, p.restore.1),
            rto_s: secs_between(stopped_at, p.finished_at),
            etcd_serving_s: serving.map_or(f64::NAN, |t| secs_between(stopped_at, t)),
            acked: acked.len(),
            lost,
            rpo_s: newest_surviving.map_or(f64::NAN, |t| secs_between(t, stopped_at)),
            since_backup_s: secs_between(set.created_at, stopped_at),
        }
    }
}

impl Drop for Drill {
    /// On a failure, shows the hosts' logs: the files are gone with the containers.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for m in [&self.primary, &self.standby] {
            for f in [
                "monitor.log",
                "alerts.log",
                "static-pods.log",
                "kubeadm-calls.log",
                "kubectl-calls.log",
                "etcdutl-calls.log",
                "fence-calls.log",
                "etcd.log",
            ] {
                let Ok(text) = std::fs::read_to_string(m.dir.join(f)) else { continue };
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!("---- {} {f} (last {} lines) ----\n{}", m.name, tail.len(), tail.join("\n"));
            }
        }
    }
}

/// A step's record in a journal.
fn step<'a>(journal: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    journal["steps"].as_array()?.iter().find(|s| s["step"] == name)
}

/// A step's status in a journal (`succeeded`, `started`, `failed`).
pub fn step_status(journal: &serde_json::Value, name: &str) -> Option<String> {
    step(journal, name)?["status"].as_str().map(str::to_owned)
}

/// How many times a step was attempted.
pub fn step_attempts(journal: &serde_json::Value, name: &str) -> Option<u64> {
    step(journal, name)?["attempts"].as_u64()
}

/// The standby's `/metrics`, parsed.
pub struct Metrics(prometheus_parse::Scrape);

impl Metrics {
    /// The first sample of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric(&self.0, name, labels)
    }

    /// The detector's state (the `kdr_detector_state` sample at 1).
    pub fn state(&self) -> Option<String> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == "kdr_detector_state" && matches!(s.value, prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) if v == 1.0))
            .and_then(|s| s.labels.get("state").map(str::to_owned))
    }

    /// Witness `id`'s last verdict: 1 up, 0 down, -1 unknown.
    pub fn witness(&self, id: &str) -> Option<f64> {
        let prefix = format!("witness {id} ");
        self.0
            .samples
            .iter()
            .find(|s| {
                s.metric == "kdr_probe_up"
                    && s.labels.get("role") == Some("witness")
                    && s.labels.get("target").is_some_and(|t| t.starts_with(&prefix))
            })
            .and_then(|s| metric(&self.0, "kdr_probe_up", &[("target", s.labels.get("target")?)]))
    }
}

/// Writes a key to master-1 every 100 ms, recording what it acknowledged.
pub struct Writer {
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts writing.
    pub async fn start(drill: &Drill) -> Self {
        let mut client = drill.primary_client().await.expect("master-1 etcd");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let log = acked.clone();
        let task = tokio::spawn(async move {
            for n in 0u64.. {
                if *stopped.borrow() {
                    return;
                }
                let key = format!("/registry/drill/k-{n:06}");
                let now = SystemClock.utc();
                let put = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.put(key.clone(), now.to_rfc3339(), None),
                );
                if let Ok(Ok(r)) = put.await {
                    let revision = r.header().map_or(0, |h| h.revision());
                    log.lock().unwrap().push(Acked { key, revision, at: SystemClock.utc() });
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Self { acked, stop, task }
    }

    /// Writes acknowledged since `t`.
    pub fn acked_since(&self, t: DateTime<Utc>) -> usize {
        self.acked.lock().unwrap().iter().filter(|a| a.at >= t).count()
    }

    /// Stops writing; returns every acknowledged write.
    pub async fn stop(self) -> Vec<Acked> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let v = self.acked.lock().unwrap().clone();
        assert!(!v.is_empty(), "master-1 acknowledged no write");
        v
    }
}
