//! kdr's configuration: a TOML file, then `KDR_*` (and the standard `AWS_*`, `GOOGLE_*`,
//! `AZURE_*`) environment variables, then command-line flags, each overriding the one before.
//!
//! [`Config`] is the one typed view of the whole file, shared by every `kdr` command and by
//! `kdr-monitor`: each section is a field holding its owner module's settings struct. A
//! top-level section or a key no one reads is [`Error::Config`] naming it. `examples/kdr.toml`
//! documents every key with its default.
//!
//! Library code never reads the process environment: [`Config::apply_env`] takes the variables
//! as a map (the binary passes `std::env::vars()`), so the mapping is testable without
//! `set_var`. Secrets (`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, Azure/GCS keys) come only
//! from the environment, never from the file or flags, and are never printed.
//!
//! ```toml
//! [cluster]
//! name = "prod-eu1"                 # recorded in each manifest (default "kubernetes")
//!
//! [etcd]
//! endpoint = "https://127.0.0.1:2379"
//! cacert = "/etc/kubernetes/pki/etcd/ca.crt"
//! cert = "/etc/kubernetes/pki/apiserver-etcd-client.crt"
//! key = "/etc/kubernetes/pki/apiserver-etcd-client.key"
//!
//! [store]
//! url = "s3://backups/prod-eu1"
//! endpoint = "https://minio.internal:9000"   # S3-compatible servers
//! region = "us-east-1"
//! allow_http = false
//!
//! [backup]
//! compression = "zstd"              # or "none"
//! encryption_key_file = "/etc/kdr/backup.age"   # an age identity or recipient (age1...)
//!
//! [retention]
//! keep_last = 7
//! keep_daily = 7
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backup::bundle::{BundleOptions, BundleSpec, KUBERNETES_DIR};
use crate::backup::etcd_source::{
    DEFAULT_SNAPSHOT_IDLE_TIMEOUT, DEFAULT_SNAPSHOT_TIMEOUT, EtcdSourceOptions, EtcdTlsFiles,
};
use crate::error::{Error, Result};
use crate::snapshot::codec::{DEFAULT_ZSTD_LEVEL, EncodeOptions, EncryptionKey};
use crate::snapshot::retention::RetentionPolicy;
use crate::snapshot::{Compression, StoreOptions};

/// The whole configuration file. Every section and field has a default (except what a command
/// needs to be told, e.g. the store URL or the promotion's node names, checked where used).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[cluster]`
    pub cluster: ClusterConfig,
    /// `[primary]`: the primary control plane, named once for the standby
    /// (`[monitor.standby] primary_*`) and the promotion (`[promotion] old_primary_*`).
    pub primary: PrimaryConfig,
    /// `[etcd]`
    pub etcd: EtcdConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[backup]`
    pub backup: BackupConfig,
    /// `[retention]`
    pub retention: RetentionPolicy,
    /// `[restore]` (see [`RestoreConfig`](crate::restore::config::RestoreConfig)).
    pub restore: crate::restore::config::RestoreConfig,
    /// `[detector]` (see [`DetectorConfig`](crate::failover::DetectorConfig)): the standby's
    /// failover decision.
    pub detector: crate::failover::DetectorConfig,
    /// `[monitor]` (see [`MonitorConfig`](crate::monitor::config::MonitorConfig)): what
    /// `kdr-monitor run` does.
    pub monitor: crate::monitor::config::MonitorConfig,
    /// `[ssh]`: how kdr reaches the workers and the old primary (`kdr failover`, `kdr rejoin`).
    pub ssh: crate::remote::SshConfig,
    /// `[[workers]]`: the worker nodes recovered after a promotion (default: none).
    pub workers: Vec<crate::workers::WorkerConfig>,
    /// `[worker_recovery]`: how workers are recovered.
    pub worker_recovery: crate::workers::WorkerRecoveryConfig,
    /// `[promotion]` (see [`PromotionSettings`](crate::runbook::PromotionSettings)): the
    /// standby being promoted by `kdr failover` and the node it replaces.
    pub promotion: crate::runbook::PromotionSettings,
    /// `[kubeadm]`: how the promoted control plane is initialised.
    pub kubeadm: crate::control_plane::KubeadmSettings,
    /// `[fence]`: how the old primary is fenced.
    pub fence: crate::fence::FenceSettings,
    /// `[hooks]`: pre/post promotion hooks.
    pub hooks: crate::runbook::HooksSettings,
}

/// The top-level sections of the file, in the order `examples/kdr.toml` documents them.
pub const SECTIONS: &[&str] = &[
    "cluster",
    "primary",
    "etcd",
    "store",
    "backup",
    "retention",
    "restore",
    "detector",
    "monitor",
    "ssh",
    "workers",
    "worker_recovery",
    "promotion",
    "kubeadm",
    "fence",
    "hooks",
];

/// `[primary]`: the primary control plane node, the one a standby watches and replaces. Its name
/// and address fill `[monitor.standby] primary_name`/`primary_address` and `[promotion]
/// old_primary_name`/`old_primary_address` where those are not set; a section that sets them to
/// something else is refused, naming both keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrimaryConfig {
    /// Its Kubernetes node name (no default).
    pub name: String,
    /// Its address: what the fence targets and what is rewritten in configurations (no default).
    pub address: String,
}

/// `[cluster]`: identity of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Name recorded in manifests (default `kubernetes`, kubeadm's default cluster name).
    pub name: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { name: "kubernetes".into() }
    }
}

/// `[etcd]`: the member to back up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// One member's client URL (no default: `--etcd-endpoint` or `KDR_ETCD_ENDPOINT`).
    pub endpoint: Option<String>,
    /// CA of etcd's server certificate.
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Client key.
    pub key: Option<PathBuf>,
    /// Limit for connecting and for each request, in seconds (default 10).
    pub request_timeout_secs: u64,
    /// A snapshot fails when etcd sends no data for this many seconds (default 60).
    pub snapshot_idle_timeout_secs: u64,
    /// A snapshot fails when its stream takes longer than this many seconds (default 7200; 0: no
    /// limit).
    pub snapshot_timeout_secs: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            cacert: None,
            cert: None,
            key: None,
            request_timeout_secs: 10,
            snapshot_idle_timeout_secs: DEFAULT_SNAPSHOT_IDLE_TIMEOUT.as_secs(),
            snapshot_timeout_secs: DEFAULT_SNAPSHOT_TIMEOUT.as_secs(),
        }
    }
}

/// `[store]`: where backup sets live.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `s3://bucket/prefix`, `gs://...`, `az://...`, `file:///dir` or `memory://` (no default).
    pub url: Option<String>,
    /// S3 endpoint for S3-compatible servers (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// S3 region (`AWS_REGION`, default `us-east-1`).
    pub region: Option<String>,
    /// S3 access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Allow `http://` endpoints (default false).
    pub allow_http: bool,
    /// Virtual-hosted-style S3 requests (default false: path style).
    pub virtual_hosted_style: bool,
    /// Send S3 bodies unsigned (`UNSIGNED-PAYLOAD`); default: unsigned over HTTPS only.
    pub unsigned_payload: Option<bool>,
    /// Multipart part size in MiB (default 8, minimum 5).
    pub part_size_mib: usize,
    /// Parts uploaded at once (default 2).
    pub upload_concurrency: usize,
    /// Give up on a failing request after this many seconds of retries (default 30).
    pub retry_timeout_secs: u64,
    /// Retries per request (default 3).
    pub max_retries: usize,
    /// Secrets and provider options from the environment only (never serialized).
    #[serde(skip)]
    pub secrets: StoreSecrets,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            allow_http: false,
            virtual_hosted_style: false,
            unsigned_payload: None,
            part_size_mib: 8,
            upload_concurrency: 2,
            retry_timeout_secs: 30,
            max_retries: 3,
            secrets: StoreSecrets::default(),
        }
    }
}

impl std::fmt::Debug for StoreSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSecrets(<redacted>)")
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .field("secrets", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Store secrets, from the environment only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreSecrets {
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
    /// `GOOGLE_*` and `AZURE_*` variables as object_store options (lower-cased names).
    pub provider_options: Vec<(String, String)>,
}

/// `[backup]`: what a backup takes and how it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// `zstd` (default) or `none`.
    pub compression: Compression,
    /// zstd level (default 1: fast).
    pub zstd_level: i32,
    /// An age identity or recipient file; sets are encrypted when set (default: not encrypted).
    pub encryption_key_file: Option<PathBuf>,
    /// The kubeadm directory whose defaults are bundled (default `/etc/kubernetes`).
    pub kubernetes_dir: PathBuf,
    /// Bundle exactly these paths instead of the kubeadm defaults.
    pub bundle: Vec<PathBuf>,
    /// Bundle nothing (default false).
    pub no_bundle: bool,
    /// A file with the kubeadm ClusterConfiguration (default: read from etcd).
    pub kubeadm_config: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            encryption_key_file: None,
            kubernetes_dir: PathBuf::from(KUBERNETES_DIR),
            bundle: Vec::new(),
            no_bundle: false,
            kubeadm_config: None,
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(Error::config(key, format!("{v:?} is not a boolean (true/false)"))),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| Error::config(key, format!("{v:?} is not a number")))
}

/// The config file read when neither `--config` nor `KDR_CONFIG` names one (if it exists).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kdr/kdr.toml";

/// Where both binaries find their configuration file, in order: the `--config` flag, then the
/// `KDR_CONFIG` environment variable (when not empty), then [`DEFAULT_CONFIG_PATH`] if that file
/// exists. `None`: no file (a command that needs one says so).
pub fn find_config_file(flag: Option<&Path>, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| env.get("KDR_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()))
}

impl Config {
    /// Parses a TOML document; `origin` names it in errors. An unknown top-level section is
    /// [`Error::Config`] with key `"<section> in <origin>"`; an unknown key or a wrong value names
    /// the key (and its line). Checks that need no context run here too: duplicate
    /// `[[workers]]` names, `[fence]` and `[hooks]`.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        if let Some(k) = table.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            return Err(Error::config(
                format!("{k} in {origin}"),
                format!("unknown section: kdr reads {}", SECTIONS.join(", ")),
            ));
        }
        let config: Self = toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        if let Some(w) = config.workers.iter().find(|w| !seen.insert(w.name.as_str())) {
            return Err(Error::config(
                format!("workers in {origin}"),
                format!("worker {:?} is listed twice", w.name),
            ));
        }
        config.fence.validate()?;
        config.hooks.validate()?;
        let mut config = config;
        config.fill_primary(origin)?;
        Ok(config)
    }

    /// Copies `[primary]` into the sections that name the primary, refusing a disagreement.
    fn fill_primary(&mut self, origin: &str) -> Result<()> {
        let p = self.primary.clone();
        let targets = [
            (&mut self.monitor.standby.primary_name, "monitor.standby.primary_name", &p.name, "primary.name"),
            (
                &mut self.monitor.standby.primary_address,
                "monitor.standby.primary_address",
                &p.address,
                "primary.address",
            ),
            (&mut self.promotion.old_primary_name, "promotion.old_primary_name", &p.name, "primary.name"),
            (
                &mut self.promotion.old_primary_address,
                "promotion.old_primary_address",
                &p.address,
                "primary.address",
            ),
        ];
        for (slot, key, value, from) in targets {
            if value.is_empty() {
                continue;
            }
            if slot.is_empty() {
                *slot = value.clone();
            } else if slot != value {
                return Err(Error::config(
                    format!("{key} in {origin}"),
                    format!(
                        "{slot:?} disagrees with {from} = {value:?}: name the primary once, in [primary]"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The one loader every command uses: reads the TOML file at `path` (a missing or unreadable
    /// file is [`Error::Config`] naming it), then applies the environment `env` (see
    /// [`Config::apply_env`]). Flags are applied by the caller.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Self> {
        let origin = format!("config file {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(&origin, format!("cannot read it: {e}")))?;
        let mut config = Self::from_toml(&text, &origin)?;
        config.apply_env(env)?;
        Ok(config)
    }

    /// Applies environment variables (given as a map), overriding the file:
    ///
    /// | variable | setting |
    /// | --- | --- |
    /// | `KDR_CLUSTER_NAME` | `cluster.name` |
    /// | `KDR_ETCD_ENDPOINT`, `KDR_ETCD_CACERT`, `KDR_ETCD_CERT`, `KDR_ETCD_KEY` | `etcd.*` |
    /// | `KDR_STORE` | `store.url` |
    /// | `KDR_STORE_ENDPOINT`, else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT` | `store.endpoint` |
    /// | `KDR_STORE_REGION`, else `AWS_REGION`, `AWS_DEFAULT_REGION` | `store.region` |
    /// | `AWS_ACCESS_KEY_ID` | `store.access_key_id` |
    /// | `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | secrets (environment only) |
    /// | `KDR_STORE_ALLOW_HTTP`, else `AWS_ALLOW_HTTP` | `store.allow_http` |
    /// | `KDR_STORE_UNSIGNED_PAYLOAD`, `KDR_STORE_PART_SIZE_MIB`, `KDR_STORE_UPLOAD_CONCURRENCY`, `KDR_STORE_RETRY_TIMEOUT_SECS`, `KDR_STORE_MAX_RETRIES` | `store.*` |
    /// | `GOOGLE_*`, `AZURE_*` | passed to the GCS/Azure client as options |
    /// | `KDR_COMPRESSION`, `KDR_ENCRYPTION_KEY_FILE`, `KDR_KUBERNETES_DIR`, `KDR_KUBEADM_CONFIG` | `backup.*` |
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<()> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let first = |keys: &[&str]| keys.iter().find_map(|k| get(k));
        if let Some(v) = get("KDR_CLUSTER_NAME") {
            self.cluster.name = v;
        }
        if let Some(v) = get("KDR_ETCD_ENDPOINT") {
            self.etcd.endpoint = Some(v);
        }
        for (k, slot) in [
            ("KDR_ETCD_CACERT", &mut self.etcd.cacert),
            ("KDR_ETCD_CERT", &mut self.etcd.cert),
            ("KDR_ETCD_KEY", &mut self.etcd.key),
            ("KDR_ENCRYPTION_KEY_FILE", &mut self.backup.encryption_key_file),
            ("KDR_KUBEADM_CONFIG", &mut self.backup.kubeadm_config),
        ] {
            if let Some(v) = get(k) {
                *slot = Some(PathBuf::from(v));
            }
        }
        if let Some(v) = get("KDR_KUBERNETES_DIR") {
            self.backup.kubernetes_dir = PathBuf::from(v);
        }
        if let Some(v) = get("KDR_COMPRESSION") {
            self.backup.compression = parse_compression("KDR_COMPRESSION", &v)?;
        }
        if let Some(v) = get("KDR_STORE") {
            self.store.url = Some(v);
        }
        if let Some(v) =
            first(&["KDR_STORE_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"])
        {
            self.store.endpoint = Some(v);
        }
        if let Some(v) = first(&["KDR_STORE_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"]) {
            self.store.region = Some(v);
        }
        if let Some(v) = get("AWS_ACCESS_KEY_ID") {
            self.store.access_key_id = Some(v);
        }
        if let Some(v) = first(&["KDR_STORE_ALLOW_HTTP", "AWS_ALLOW_HTTP"]) {
            self.store.allow_http = parse_bool("KDR_STORE_ALLOW_HTTP", &v)?;
        }
        if let Some(v) = get("KDR_STORE_UNSIGNED_PAYLOAD") {
            self.store.unsigned_payload = Some(parse_bool("KDR_STORE_UNSIGNED_PAYLOAD", &v)?);
        }
        if let Some(v) = get("KDR_STORE_PART_SIZE_MIB") {
            self.store.part_size_mib = parse_num("KDR_STORE_PART_SIZE_MIB", &v)?;
        }
        if let Some(v) = get("KDR_STORE_UPLOAD_CONCURRENCY") {
            self.store.upload_concurrency = parse_num("KDR_STORE_UPLOAD_CONCURRENCY", &v)?;
        }
        if let Some(v) = get("KDR_STORE_RETRY_TIMEOUT_SECS") {
            self.store.retry_timeout_secs = parse_num("KDR_STORE_RETRY_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("KDR_STORE_MAX_RETRIES") {
            self.store.max_retries = parse_num("KDR_STORE_MAX_RETRIES", &v)?;
        }
        self.restore.apply_env(env)?;
        self.store.secrets.secret_access_key = get("AWS_SECRET_ACCESS_KEY");
        self.store.secrets.session_token = get("AWS_SESSION_TOKEN");
        self.store.secrets.provider_options = env
            .iter()
            .filter(|(k, _)| k.starts_with("GOOGLE_") || k.starts_with("AZURE_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        Ok(())
    }

    /// The store URL, or a [`Error::Config`] saying how to give one.
    pub fn store_url(&self) -> Result<&str> {
        self.store.url.as_deref().ok_or_else(|| {
            Error::config(
                "--store",
                "no store given: pass --store URL, set KDR_STORE, or [store] url in the config file",
            )
        })
    }

    /// Options for [`crate::snapshot::ObjectStoreSnapshotStore::from_url`].
    pub fn store_options(&self) -> Result<StoreOptions> {
        let s = &self.store;
        if s.part_size_mib < 5 {
            return Err(Error::config("store.part_size_mib", "S3 parts must be at least 5 MiB"));
        }
        if s.upload_concurrency == 0 {
            return Err(Error::config("store.upload_concurrency", "must be at least 1"));
        }
        // Only options that apply to the URL's provider (object_store rejects unknown keys).
        let scheme =
            s.url.as_deref().and_then(|u| u.split_once("://")).map(|(scheme, _)| scheme).unwrap_or("");
        let prefix = match scheme {
            "gs" => "google_",
            "az" | "azure" | "abfs" | "abfss" => "azure_",
            _ => "\0",
        };
        Ok(StoreOptions {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            access_key_id: s.access_key_id.clone(),
            secret_access_key: s.secrets.secret_access_key.clone(),
            session_token: s.secrets.session_token.clone(),
            allow_http: s.allow_http,
            virtual_hosted_style: s.virtual_hosted_style,
            unsigned_payload: s.unsigned_payload,
            extra: s
                .secrets
                .provider_options
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .cloned()
                .collect(),
            part_size: s.part_size_mib * 1024 * 1024,
            upload_concurrency: s.upload_concurrency,
            retry_timeout: Duration::from_secs(s.retry_timeout_secs),
            max_retries: s.max_retries,
        })
    }

    /// Options for the etcd source, or a [`Error::Config`] if no endpoint is set.
    pub fn etcd_options(&self) -> Result<EtcdSourceOptions> {
        let endpoint = self.etcd.endpoint.clone().ok_or_else(|| {
            Error::config(
                "--etcd-endpoint",
                "no etcd endpoint given: pass --etcd-endpoint URL, set KDR_ETCD_ENDPOINT, or [etcd] endpoint",
            )
        })?;
        let mut o = EtcdSourceOptions::new(endpoint);
        o.tls = EtcdTlsFiles {
            cacert: self.etcd.cacert.clone(),
            cert: self.etcd.cert.clone(),
            key: self.etcd.key.clone(),
        };
        o.request_timeout = Duration::from_secs(self.etcd.request_timeout_secs.max(1));
        o.snapshot_idle_timeout = Duration::from_secs(self.etcd.snapshot_idle_timeout_secs.max(1));
        o.snapshot_timeout = (self.etcd.snapshot_timeout_secs > 0)
            .then(|| Duration::from_secs(self.etcd.snapshot_timeout_secs));
        Ok(o)
    }

    /// For a standby (`kdr-monitor` with the `standby` role): refuses a fence that cannot succeed
    /// against a dead primary, and a fence named twice. `kdr-monitor check-config` and the
    /// monitor's start run it (through [`crate::monitor::config::validate`]).
    ///
    /// The detector fails over only when the primary's machine looks dead, and the promotion
    /// (the runbook `kdr failover` runs, in-process by default) fences it first with `[fence]`:
    /// - `kind = "ssh"` needs the machine to answer, so every automatic failover would halt at
    ///   the fence at 3 a.m. Refused unless `[fence] accept_no_automatic_failover_when_primary_is_down
    ///   = true`, which keeps the ssh fence knowingly and logs a warning at every start.
    /// - `kind = "exec"` (a power or cloud API) works without the machine; `kind = "none"` needs
    ///   its own acknowledgement ([`crate::fence::FenceSettings::validate`]).
    /// - `[monitor.standby] fence_command` is a second fence: with `[fence]` configured too, or
    ///   with the runbook as the promotion (the default, in-process, or a `promote_command` that
    ///   runs `kdr failover`), which fences again with `[fence]` (`ssh` by default), it is
    ///   refused, naming both keys. Name the fence once, in `[fence]`.
    pub fn check_automatic_failover_fence(&self) -> Result<()> {
        let f = &self.fence;
        let standby = &self.monitor.standby;
        let exec_example = "kind = \"exec\" and command = [\"/usr/local/bin/fence-primary\"], a hook that powers the \
                            machine off from outside it (IPMI: `ipmitool -I lanplus -H <bmc> -f /etc/kdr/ipmi.pass \
                            chassis power off`; a cloud CLI: `aws ec2 stop-instances --force --instance-ids <id>`, \
                            `gcloud compute instances stop <name>`); it gets KDR_FENCE_NODE, KDR_FENCE_HOST, KDR_EPOCH";
        if !standby.fence_command.is_empty() {
            let configured = *f != crate::fence::FenceSettings::default();
            let runbook = standby.promote_command.is_empty() || runs_kdr_failover(&standby.promote_command);
            if configured || runbook {
                let why = if configured {
                    "[fence] is configured too"
                } else if standby.promote_command.is_empty() {
                    "the monitor promotes through the runbook, which fences again with [fence] (default kind = \
                     \"ssh\", which needs the dead machine to answer: the failover would halt)"
                } else {
                    "promote_command runs `kdr failover`, which fences again with [fence] (default kind = \"ssh\", \
                     which needs the dead machine to answer: the failover would halt)"
                };
                return Err(Error::config(
                    "monitor.standby.fence_command and [fence]",
                    format!(
                        "the fence is named twice: monitor.standby.fence_command = {cmd:?} and {why}. Name it once, \
                         in [fence]: kind = \"exec\", command = {cmd:?}; then remove monitor.standby.fence_command \
                         and set [detector] fencing = \"none\" (kdr failover fences before it restores)",
                        cmd = standby.fence_command
                    ),
                ));
            }
            // The operator's own promotion, fenced by the monitor's exec hook: [fence] is unused.
            return Ok(());
        }
        let opted_out = f.accept_no_automatic_failover_when_primary_is_down;
        match f.kind {
            crate::fence::FenceKind::Ssh if !opted_out => Err(Error::config(
                "fence.kind",
                format!(
                    "kind = \"ssh\" cannot fence a dead primary: an ssh fence needs the machine to answer, and \
                     this standby fails over only when the machine looks dead, so every automatic failover \
                     would halt at the fence. Use a fence that works without the machine: {exec_example}. \
                     Or keep the ssh fence knowingly, a failover of a dead primary then halting at the fence for \
                     an operator: accept_no_automatic_failover_when_primary_is_down = true"
                ),
            )),
            crate::fence::FenceKind::Ssh => {
                tracing::warn!(
                    "[fence] kind = \"ssh\" with accept_no_automatic_failover_when_primary_is_down = true: if the \
                     primary's machine dies, the automatic failover halts at the fence; an operator must power it \
                     off and finish the promotion by hand. Configure kind = \"exec\" (IPMI, a cloud CLI) to fail \
                     over on its own"
                );
                Ok(())
            }
            _ if opted_out => Err(Error::config(
                "fence.accept_no_automatic_failover_when_primary_is_down",
                format!("only applies to kind = \"ssh\", not kind = {:?}: remove it", kind_name(f.kind)),
            )),
            _ => Ok(()),
        }
    }

    /// The encryption key from `backup.encryption_key_file`, if set (read and validated now).
    pub fn encryption_key(&self) -> Result<Option<EncryptionKey>> {
        self.backup.encryption_key_file.as_deref().map(EncryptionKey::from_file).transpose()
    }

    /// Encoding options for backups (reads the key file).
    pub fn encode_options(&self) -> Result<EncodeOptions> {
        Ok(EncodeOptions {
            compression: self.backup.compression,
            zstd_level: self.backup.zstd_level,
            encryption_key: self.encryption_key()?,
            hash_raw: true,
        })
    }

    /// What to bundle. `--no-bundle` with `--bundle` is a usage error.
    pub fn bundle_options(&self) -> Result<BundleOptions> {
        let b = &self.backup;
        let spec = match (b.no_bundle, b.bundle.is_empty()) {
            (true, false) => {
                return Err(Error::config("--no-bundle", "cannot be combined with --bundle PATH"));
            }
            (true, true) => BundleSpec::None,
            (false, false) => BundleSpec::Paths(b.bundle.clone()),
            (false, true) => BundleSpec::Defaults,
        };
        Ok(BundleOptions {
            spec,
            kubernetes_dir: b.kubernetes_dir.clone(),
            kubeadm_config: b.kubeadm_config.clone(),
        })
    }
}

/// Whether `argv` runs `kdr failover` (the program is `kdr`, wherever it is installed).
fn runs_kdr_failover(argv: &[String]) -> bool {
    argv.first().is_some_and(|p| Path::new(p).file_name().is_some_and(|n| n == "kdr"))
        && argv.iter().skip(1).any(|a| a == "failover")
}

fn kind_name(kind: crate::fence::FenceKind) -> &'static str {
    match kind {
        crate::fence::FenceKind::Exec => "exec",
        crate::fence::FenceKind::Ssh => "ssh",
        crate::fence::FenceKind::None => "none",
    }
}

/// Parses `zstd` or `none`.
pub fn parse_compression(key: &str, v: &str) -> Result<Compression> {
    match v.to_ascii_lowercase().as_str() {
        "zstd" => Ok(Compression::Zstd),
        "none" => Ok(Compression::None),
        _ => Err(Error::config(key, format!("{v:?} is not a compression: use zstd or none"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_is_named_once() {
        let c = Config::from_toml("[primary]\nname = \"master-1\"\naddress = \"10.0.0.1\"\n", "kdr.toml")
            .unwrap();
        assert_eq!(
            (c.monitor.standby.primary_name.as_str(), c.monitor.standby.primary_address.as_str()),
            ("master-1", "10.0.0.1")
        );
        assert_eq!(
            (c.promotion.old_primary_name.as_str(), c.promotion.old_primary_address.as_str()),
            ("master-1", "10.0.0.1")
        );
        // The same value twice is fine; a different one is refused naming both keys.
        Config::from_toml(
            "[primary]\nname = \"master-1\"\n[promotion]\nold_primary_name = \"master-1\"\n",
            "kdr.toml",
        )
        .unwrap();
        let e = Config::from_toml(
            "[primary]\naddress = \"10.0.0.1\"\n[promotion]\nold_primary_address = \"10.0.0.9\"\n",
            "kdr.toml",
        )
        .unwrap_err();
        assert!(e.is_usage(), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("promotion.old_primary_address") && msg.contains("primary.address"), "{msg}");
        // Without [primary], the sections keep what they say.
        let c = Config::from_toml("[promotion]\nold_primary_name = \"m1\"\n", "kdr.toml").unwrap();
        assert_eq!(
            (c.promotion.old_primary_name.as_str(), c.monitor.standby.primary_name.as_str()),
            ("m1", "")
        );
    }

    /// A standby's config: probes and a promotion, plus `extra`.
    fn standby(extra: &str) -> String {
        format!(
            "[monitor]\nroles = [\"standby\"]\n[detector]\nrequire_self_probe = false\n\
             [monitor.standby]\napi_url = \"https://10.0.0.1:6443/healthz\"\nhost_tcp = \"10.0.0.1:22\"\n\
             promote_command = [\"/usr/local/bin/kdr\", \"failover\", \"--config\", \"/etc/kdr/kdr.toml\"]\n{extra}"
        )
    }

    fn check(text: &str) -> Result<()> {
        crate::monitor::config::validate(&Config::from_toml(text, "kdr.toml")?)
    }

    #[test]
    fn a_standby_refuses_the_ssh_fence_unless_told_it_halts_failovers_of_a_dead_primary() {
        // The default [fence] is ssh.
        let e = check(&standby("")).unwrap_err();
        assert!(e.is_usage(), "{e}");
        let msg = e.to_string();
        for needle in [
            "fence.kind",
            "needs the machine to answer",
            "kind = \"exec\"",
            "ipmitool",
            "aws ec2 stop-instances",
            "accept_no_automatic_failover_when_primary_is_down = true",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing: {msg}");
        }
        check(&standby(
            "[fence]\nkind = \"ssh\"\naccept_no_automatic_failover_when_primary_is_down = true\n",
        ))
        .unwrap();
        check(&standby("[fence]\nkind = \"exec\"\ncommand = [\"/usr/local/bin/fence-ipmi\"]\n")).unwrap();
        check(&standby("[fence]\nkind = \"none\"\ni_accept_split_brain_risk = true\n")).unwrap();
        // The opt-out is for the ssh fence only.
        let e = check(&standby(
            "[fence]\nkind = \"exec\"\ncommand = [\"/f\"]\naccept_no_automatic_failover_when_primary_is_down = true\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("fence.accept_no_automatic_failover_when_primary_is_down"), "{e}");
        // A primary-only config keeps the ssh fence (kdr failover run by hand, machine up).
        check("[monitor]\nroles = [\"primary\"]\n[store]\nurl = \"memory://\"\n[etcd]\nendpoint = \"http://127.0.0.1:2379\"\n")
            .unwrap();
    }

    #[test]
    fn a_standby_refuses_a_fence_named_twice() {
        // fence_command and a configured [fence].
        let text = standby("[fence]\nkind = \"exec\"\ncommand = [\"/usr/local/bin/fence-ipmi\"]\n")
            .replace("require_self_probe = false\n", "require_self_probe = false\nfencing = \"required\"\n")
            .replace("promote_command", "fence_command = [\"/usr/local/bin/fence-ipmi\"]\npromote_command");
        let e = check(&text).unwrap_err();
        let msg = e.to_string();
        assert!(e.is_usage(), "{msg}");
        assert!(
            msg.contains("monitor.standby.fence_command")
                && msg.contains("[fence]")
                && msg.contains("named twice")
                && msg.contains("fencing = \"none\""),
            "{msg}"
        );
        // fence_command with the default [fence] and kdr failover as the promotion: kdr failover
        // would ssh-fence the machine fence_command just powered off.
        let text = standby("")
            .replace("require_self_probe = false\n", "require_self_probe = false\nfencing = \"required\"\n")
            .replace("promote_command", "fence_command = [\"/usr/local/bin/fence-ipmi\"]\npromote_command");
        let msg = check(&text).unwrap_err().to_string();
        assert!(
            msg.contains("monitor.standby.fence_command")
                && msg.contains("kdr failover")
                && msg.contains("halt"),
            "{msg}"
        );
        // fence_command with a promotion of the operator's own: the one fence, accepted.
        let own = text.replace(
            "[\"/usr/local/bin/kdr\", \"failover\", \"--config\", \"/etc/kdr/kdr.toml\"]",
            "[\"/usr/local/bin/promote-standby\"]",
        );
        check(&own).unwrap();
    }

    #[test]
    fn defaults_file_env_precedence() {
        let c = Config::default();
        assert_eq!(c.cluster.name, "kubernetes");
        assert_eq!(c.backup.compression, Compression::Zstd);
        assert_eq!(c.retention, RetentionPolicy::default());

        let mut c = Config::from_toml(
            "[cluster]\nname = \"prod\"\n[store]\nurl = \"s3://b/p\"\nregion = \"eu-west-1\"\n[retention]\nkeep_last = 3\n",
            "test",
        )
        .unwrap();
        assert_eq!(c.cluster.name, "prod");
        assert_eq!(c.retention.keep_last, 3);
        assert_eq!(c.retention.keep_daily, 7, "unset fields keep their defaults");
        let env: BTreeMap<String, String> = [
            ("KDR_STORE", "s3://other/x"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
            ("KDR_COMPRESSION", "none"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        c.apply_env(&env).unwrap();
        assert_eq!(c.store_url().unwrap(), "s3://other/x");
        let so = c.store_options().unwrap();
        assert_eq!(so.region.as_deref(), Some("us-west-2"));
        assert_eq!(so.secret_access_key.as_deref(), Some("SECRET"));
        assert!(so.allow_http);
        assert_eq!(c.backup.compression, Compression::None);
        assert!(!format!("{c:?}").contains("SECRET"));
        assert!(!toml::to_string(&c).unwrap().contains("SECRET"), "secrets are never serialized");
    }

    #[test]
    fn bad_config_names_the_key() {
        let e = Config::from_toml("[stroe]\nurl = \"x\"\n", "kdr.toml").unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("kdr.toml"), "{e}");
        let e = Config::from_toml("[backup]\ncompression = \"lz4\"\n", "kdr.toml").unwrap_err();
        assert!(e.is_usage(), "{e}");
        let mut c = Config::default();
        let env = BTreeMap::from([("KDR_STORE_ALLOW_HTTP".to_owned(), "maybe".to_owned())]);
        assert!(c.apply_env(&env).unwrap_err().to_string().contains("KDR_STORE_ALLOW_HTTP"));
        assert!(Config::default().store_url().unwrap_err().to_string().contains("--store"));
        assert!(Config::default().etcd_options().unwrap_err().to_string().contains("--etcd-endpoint"));
        let c = Config {
            backup: BackupConfig { no_bundle: true, bundle: vec!["/x".into()], ..Default::default() },
            ..Default::default()
        };
        assert!(c.bundle_options().unwrap_err().is_usage());
    }

    /// Every key of the TOML section `section` (`""`: top level) of `text`, commented out or not.
    fn documented_keys(text: &str, section: &str) -> Vec<String> {
        let mut current = String::new();
        let mut keys = Vec::new();
        for line in text.lines() {
            // Commented-out headers (`# [[workers]]`) open their section too.
            let t = line.trim().trim_start_matches('#').trim_start();
            if let Some((name, _)) =
                t.strip_prefix('[').map(|h| h.trim_start_matches('[')).and_then(|h| h.split_once(']'))
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            {
                current = name.to_owned();
                continue;
            }
            if current == section
                && let Some((k, _)) = t.split_once('=')
                && !k.trim().is_empty()
                && k.trim().chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            {
                keys.push(k.trim().to_owned());
            }
        }
        keys
    }

    /// examples/kdr.toml: parses with [`Config`] (the loader of every `kdr` command and of
    /// `kdr-monitor`), documents every key of every section, and shows the defaults except where
    /// it says "no default" or "Required".
    #[test]
    fn the_example_config_documents_and_defaults_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kdr.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::load(&path, &BTreeMap::new()).unwrap();

        let mut want = Config::default();
        want.etcd.endpoint = Some("https://127.0.0.1:2379".into());
        want.etcd.cacert = Some("/etc/kubernetes/pki/etcd/ca.crt".into());
        want.etcd.cert = Some("/etc/kubernetes/pki/apiserver-etcd-client.crt".into());
        want.etcd.key = Some("/etc/kubernetes/pki/apiserver-etcd-client.key".into());
        want.store.url = Some("s3://kdr-backups/prod".into());
        want.promotion.node_name = "master-2".into();
        want.promotion.advertise_address = "192.168.30.202".into();
        want.primary = PrimaryConfig { name: "master-1".into(), address: "192.168.30.200".into() };
        want.promotion.old_primary_name = "master-1".into();
        want.promotion.old_primary_address = "192.168.30.200".into();
        want.monitor.standby.primary_name = "master-1".into();
        want.monitor.standby.primary_address = "192.168.30.200".into();
        // Section by section first, for a readable failure; then the whole.
        assert_eq!(c.cluster, want.cluster);
        assert_eq!(c.etcd, want.etcd);
        assert_eq!(c.store, want.store);
        assert_eq!(c.backup, want.backup);
        assert_eq!(c.retention, RetentionPolicy::default());
        assert_eq!(c.restore, want.restore);
        assert_eq!(c.detector, crate::failover::DetectorConfig::default());
        assert_eq!(c.primary, want.primary);
        assert_eq!(c.monitor, want.monitor);
        assert_eq!(c.ssh, want.ssh);
        assert_eq!(c.workers, want.workers);
        assert_eq!(c.worker_recovery, want.worker_recovery);
        assert_eq!(c.promotion, want.promotion);
        assert_eq!(c.kubeadm, crate::control_plane::KubeadmSettings::default());
        assert_eq!(c.fence, crate::fence::FenceSettings::default());
        assert_eq!(c.hooks, crate::runbook::HooksSettings::default());
        assert_eq!(c, want);

        // Every key (Options included: JSON keeps them as null) is documented in its section.
        let json = serde_json::to_value(Config::default()).unwrap();
        let mut missing = Vec::new();
        for section in SECTIONS {
            if !text.contains(&format!("[{section}]")) && !text.contains(&format!("[[{section}]]")) {
                missing.push(format!("[{section}]"));
            }
        }
        let mut stack: Vec<(String, &serde_json::Value)> =
            json.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v)).collect();
        while let Some((name, v)) = stack.pop() {
            let Some(fields) = v.as_object() else { continue };
            let documented = documented_keys(&text, &name);
            for (k, v) in fields {
                if v.is_object() {
                    stack.push((format!("{name}.{k}"), v));
                } else if !documented.contains(k) {
                    missing.push(format!("{name}.{k}"));
                }
            }
        }
        for k in ["name", "host", "port", "user", "key_file"] {
            if !documented_keys(&text, "workers").iter().any(|d| d == k) {
                missing.push(format!("workers.{k}"));
            }
        }
        assert!(missing.is_empty(), "examples/kdr.toml does not document: {missing:?}");

        // kdr-monitor check-config accepts it.
        crate::monitor::config::validate(&c).unwrap();
        // kdr backup resolves its settings from it.
        let etcd = c.etcd_options().unwrap();
        assert_eq!(etcd.endpoint, "https://127.0.0.1:2379");
        assert_eq!(c.store_url().unwrap(), "s3://kdr-backups/prod");
        c.store_options().unwrap();
        c.encode_options().unwrap();
        assert!(matches!(c.bundle_options().unwrap().spec, BundleSpec::Defaults));
        // kdr failover's [promotion] is complete.
        c.promotion.validate().unwrap();

        // An unknown section is rejected, named.
        let e = Config::from_toml(&format!("{text}\n[monitr]\nlisten = \"x\"\n"), "examples/kdr.toml")
            .unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "monitr in examples/kdr.toml"), "{e}");
        assert!(e.is_usage());
        // And an unknown key in a known section, named.
        let e = Config::from_toml("[ssh]\nusr = \"kube\"\n", "kdr.toml").unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("usr"), "{e}");
        // A missing file names it.
        let e = Config::load(Path::new("/nonexistent/kdr.toml"), &BTreeMap::new()).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("/nonexistent/kdr.toml"), "{e}");
    }
}
