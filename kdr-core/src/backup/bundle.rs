//! The bundle: a tar of the control-plane files a restore needs besides etcd's data.
//!
//! kubeadm defaults ([`BundleSpec::Defaults`], under [`BundleOptions::kubernetes_dir`],
//! `/etc/kubernetes` unless told otherwise):
//! - `pki/` — the cluster CA, service-account keys, front-proxy CA, etcd CA and their certs;
//! - `manifests/` — the static pod manifests;
//! - the encryption-provider config, if `manifests/kube-apiserver.yaml` passes
//!   `--encryption-provider-config` (without it, restored Secrets are unreadable);
//! - the kubeadm `ClusterConfiguration`, from `--kubeadm-config FILE` if given, else from the
//!   `kubeadm-config` ConfigMap in etcd (`/registry/configmaps/kube-system/kubeadm-config`).
//!
//! Whatever its source, the ClusterConfiguration is stored at [`KUBEADM_CONFIG_BUNDLE_PATH`], so
//! a restore finds it in one place. Kubernetes stores ConfigMaps in etcd protobuf-encoded (a
//! `k8s\0` magic, then a `runtime.Unknown` wrapping the ConfigMap); [`kubeadm_config_from_etcd_value`]
//! walks that encoding (or JSON, for clusters configured to store JSON) and extracts the
//! `ClusterConfiguration` string, which is YAML. A value encrypted at rest (`k8s:enc:` prefix)
//! cannot be read without the API server's keys: the backup then asks for `--kubeadm-config`.
//!
//! If a default path is missing, [`plan`] fails naming every missing one, unless the bundle is
//! turned off (`--no-bundle`) or given explicitly (`--bundle PATH`): a DR backup that silently
//! lacks the CA is a trap. Paths are stored relative to `/` with their modes (keys stay 0600);
//! files found under `kubernetes_dir` are recorded as under `/etc/kubernetes`.
use prost::Message as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::snapshot::BundleFile;

/// Where the kubeadm ClusterConfiguration is stored in every bundle that has one.
pub const KUBEADM_CONFIG_BUNDLE_PATH: &str = "/etc/kubernetes/kubeadm-config.yaml";

/// The etcd key of kubeadm's ConfigMap.
pub const KUBEADM_CONFIG_ETCD_KEY: &str = "/registry/configmaps/kube-system/kubeadm-config";

/// The kubeadm control-plane directory.
pub const KUBERNETES_DIR: &str = "/etc/kubernetes";

/// What goes into the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum BundleSpec {
    /// The kubeadm defaults (see the [module docs](self)); missing ones are an error.
    #[default]
    Defaults,
    /// Exactly these files or directories (plus the kubeadm config if found).
    Paths(Vec<PathBuf>),
    /// No bundle (`--no-bundle`).
    None,
}

/// Where to find the bundle's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleOptions {
    /// What to bundle.
    pub spec: BundleSpec,
    /// The kubeadm directory (default `/etc/kubernetes`).
    pub kubernetes_dir: PathBuf,
    /// A file holding the kubeadm ClusterConfiguration, instead of reading it from etcd.
    pub kubeadm_config: Option<PathBuf>,
}

impl Default for BundleOptions {
    fn default() -> Self {
        Self {
            spec: BundleSpec::Defaults,
            kubernetes_dir: PathBuf::from(KUBERNETES_DIR),
            kubeadm_config: None,
        }
    }
}

/// One file to put in the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    /// Where to read it.
    pub source: PathBuf,
    /// The absolute path recorded (the tar entry is this without the leading `/`).
    pub path: String,
    /// Unix mode bits.
    pub mode: u32,
    /// Size when planned.
    pub size: u64,
}

/// The files of a bundle, plus in-memory entries (the kubeadm config read from etcd).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundlePlan {
    /// Files read from disk.
    pub files: Vec<PlannedFile>,
    /// Entries with given content: `(path, mode, content)`.
    pub generated: Vec<(String, u32, Vec<u8>)>,
    /// Whether the kubeadm ClusterConfiguration is already in the plan.
    pub has_kubeadm_config: bool,
}

impl BundlePlan {
    /// Whether there is nothing to bundle.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.generated.is_empty()
    }

    /// Adds the kubeadm ClusterConfiguration (YAML) at [`KUBEADM_CONFIG_BUNDLE_PATH`].
    pub fn add_kubeadm_config(&mut self, yaml: Vec<u8>) {
        self.generated.push((KUBEADM_CONFIG_BUNDLE_PATH.to_owned(), 0o600, yaml));
        self.has_kubeadm_config = true;
    }
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() { 0o444 } else { 0o644 }
    }
}

/// Adds `source` (a file, or a directory walked recursively, sorted) recorded as `recorded`.
fn add_path(files: &mut Vec<PlannedFile>, source: &Path, recorded: &str) -> Result<()> {
    let meta = std::fs::metadata(source)
        .map_err(|e| Error::io(format!("failed to read bundle path {}", source.display()), e))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(source)
            .map_err(|e| Error::io(format!("failed to list bundle directory {}", source.display()), e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(format!("failed to list bundle directory {}", source.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            add_path(files, &entry.path(), &format!("{}/{name}", recorded.trim_end_matches('/')))?;
        }
    } else if meta.is_file() {
        files.push(PlannedFile {
            source: source.to_owned(),
            path: recorded.to_owned(),
            mode: mode_of(&meta),
            size: meta.len(),
        });
    }
    // Sockets, fifos and devices are not configuration: skipped.
    Ok(())
}

/// The path recorded for a file under `kubernetes_dir`: as if under `/etc/kubernetes`.
fn recorded_path(kubernetes_dir: &Path, source: &Path) -> String {
    match source.strip_prefix(kubernetes_dir) {
        Ok(rel) => format!("{KUBERNETES_DIR}/{}", rel.display()),
        Err(_) => source.display().to_string(),
    }
}

/// Where a path referenced by the API server's manifest lives here: references under
/// `/etc/kubernetes` are resolved under `kubernetes_dir`.
fn resolve_reference(kubernetes_dir: &Path, referenced: &str) -> PathBuf {
    match Path::new(referenced).strip_prefix(KUBERNETES_DIR) {
        Ok(rel) => kubernetes_dir.join(rel),
        Err(_) => PathBuf::from(referenced),
    }
}

/// The `--encryption-provider-config` path in a kube-apiserver manifest, if any.
pub fn encryption_config_path(apiserver_manifest: &str) -> Option<String> {
    let mut words = apiserver_manifest
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '[' || c == ']')
        .filter(|w| !w.is_empty() && *w != "-");
    while let Some(w) = words.next() {
        if let Some(v) = w.strip_prefix("--encryption-provider-config=") {
            return Some(v.to_owned());
        }
        if w == "--encryption-provider-config" {
            return words.next().map(str::to_owned);
        }
    }
    None
}

/// Plans the bundle from the options. The kubeadm config from etcd is added by the caller when
/// [`BundlePlan::has_kubeadm_config`] is false (see [`kubeadm_config_from_etcd_value`]).
///
/// Errors: [`Error::NotFound`] naming every missing default path, with the flags that change
/// what is bundled; [`Error::NotFound`] for a missing explicit path or kubeadm config file.
pub fn plan(opts: &BundleOptions) -> Result<BundlePlan> {
    let mut plan = BundlePlan::default();
    if let Some(cfg) = &opts.kubeadm_config {
        let yaml = std::fs::read(cfg).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("kubeadm config file {}", cfg.display()),
                    hint: Some("fix --kubeadm-config".into()),
                }
            } else {
                Error::io(format!("failed to read kubeadm config file {}", cfg.display()), e)
            }
        })?;
        plan.add_kubeadm_config(yaml);
    }
    match &opts.spec {
        BundleSpec::None => {
            plan.generated.clear();
            plan.has_kubeadm_config = false;
        }
        BundleSpec::Paths(paths) => {
            for p in paths {
                if !p.exists() {
                    return Err(Error::NotFound {
                        what: format!("bundle path {}", p.display()),
                        hint: Some("fix --bundle".into()),
                    });
                }
                let abs = std::path::absolute(p)
                    .map_err(|e| Error::io(format!("bad bundle path {}", p.display()), e))?;
                add_path(&mut plan.files, &abs, &abs.display().to_string())?;
            }
        }
        BundleSpec::Defaults => {
            let dir = &opts.kubernetes_dir;
            let mut missing = Vec::new();
            for sub in ["pki", "manifests"] {
                let p = dir.join(sub);
                if p.is_dir() {
                    add_path(&mut plan.files, &p, &recorded_path(dir, &p))?;
                } else {
                    missing.push(p.display().to_string());
                }
            }
            let apiserver = dir.join("manifests/kube-apiserver.yaml");
            if let Ok(text) = std::fs::read_to_string(&apiserver)
                && let Some(reference) = encryption_config_path(&text)
            {
                let local = resolve_reference(dir, &reference);
                if local.is_file() {
                    // Inside manifests/ it is already planned.
                    if !plan.files.iter().any(|f| f.source == local) {
                        add_path(&mut plan.files, &local, &reference)?;
                    }
                } else {
                    missing.push(format!(
                        "{} (the encryption-provider config that {} references)",
                        local.display(),
                        apiserver.display()
                    ));
                }
            }
            if !missing.is_empty() {
                return Err(Error::NotFound {
                    what: format!("default bundle path(s) {}", missing.join(", ")),
                    hint: Some(
                        "a DR backup without the CA and manifests is a trap: run on a kubeadm control-plane \
                         node, point --kubernetes-dir at the right place, list files with --bundle PATH, \
                         or pass --no-bundle to back up etcd only"
                            .into(),
                    ),
                });
            }
        }
    }
    Ok(plan)
}

/// Extracts the `ClusterConfiguration` (YAML text) from the value of the kubeadm-config
/// ConfigMap as stored in etcd: protobuf (`k8s\0` + `runtime.Unknown{raw: ConfigMap}`) or JSON.
///
/// Errors: [`Error::Config`] for a value encrypted at rest (pass `--kubeadm-config`) and
/// [`Error::Integrity`] for a value that does not decode.
pub fn kubeadm_config_from_etcd_value(value: &[u8]) -> Result<Vec<u8>> {
    let what = format!("etcd key {KUBEADM_CONFIG_ETCD_KEY}");
    if value.starts_with(b"k8s:enc:") {
        return Err(Error::config(
            "--kubeadm-config",
            format!(
                "{what} is encrypted at rest, so kdr cannot read the ClusterConfiguration from etcd; \
                 pass it with --kubeadm-config FILE (e.g. `kubectl -n kube-system get cm kubeadm-config \
                 -o jsonpath='{{.data.ClusterConfiguration}}'`)"
            ),
        ));
    }
    let found = if let Some(pb) = value.strip_prefix(b"k8s\x00") {
        let unknown = k8s_proto::Unknown::decode(pb)
            .map_err(|e| Error::integrity(&what, format!("bad protobuf envelope: {e}")))?;
        if unknown.raw.is_empty() {
            return Err(Error::integrity(&what, "protobuf without a raw object"));
        }
        let cm = k8s_proto::ConfigMap::decode(unknown.raw.as_slice())
            .map_err(|e| Error::integrity(&what, format!("bad protobuf ConfigMap: {e}")))?;
        cm.data.get("ClusterConfiguration").map(|s| s.as_bytes().to_vec())
    } else if value.first() == Some(&b'{') {
        let v: serde_json::Value =
            serde_json::from_slice(value).map_err(|e| Error::integrity(&what, format!("bad JSON: {e}")))?;
        v.get("data")
            .and_then(|d| d.get("ClusterConfiguration"))
            .and_then(|c| c.as_str())
            .map(|s| s.as_bytes().to_vec())
    } else {
        return Err(Error::integrity(&what, "neither protobuf (k8s\\0) nor JSON"));
    };
    found.ok_or_else(|| Error::integrity(&what, "the ConfigMap has no ClusterConfiguration entry"))
}

/// The two protobuf messages of Kubernetes' storage encoding that kdr reads: the
/// `runtime.Unknown` envelope (after the `k8s\0` magic) and a `core/v1.ConfigMap`. Only the
/// fields kdr needs are declared; prost skips the others.
pub mod k8s_proto {
    use std::collections::HashMap;

    /// `k8s.io.apimachinery.pkg.runtime.Unknown`: field 2 holds the encoded object.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Unknown {
        /// The encoded object (here a ConfigMap).
        #[prost(bytes = "vec", tag = "2")]
        pub raw: Vec<u8>,
        /// The content type, e.g. `application/vnd.kubernetes.protobuf`.
        #[prost(string, tag = "4")]
        pub content_type: String,
    }

    /// `k8s.io.api.core.v1.ConfigMap`: field 2 is `data`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConfigMap {
        /// The ConfigMap's data.
        #[prost(map = "string, string", tag = "2")]
        pub data: HashMap<String, String>,
    }
}

/// Writes the plan as a tar to `out`, returning what was bundled (with each file's sha256).
/// Blocking; run it in a blocking thread.
pub fn write_tar(plan: &BundlePlan, out: &mut dyn Write) -> Result<Vec<BundleFile>> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut recorded = Vec::new();
    let tar_err = |path: &str, e: std::io::Error| Error::io(format!("failed to add {path} to the bundle"), e);
    for f in &plan.files {
        let file = std::fs::File::open(&f.source)
            .map_err(|e| Error::io(format!("failed to open bundle file {}", f.source.display()), e))?;
        let size = file.metadata().map_err(|e| tar_err(&f.path, e))?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(f.mode);
        header.set_entry_type(tar::EntryType::Regular);
        let mut reader = HashingReader { inner: file.take(size), hasher: Sha256::new(), n: 0 };
        builder
            .append_data(&mut header, f.path.trim_start_matches('/'), &mut reader)
            .map_err(|e| tar_err(&f.path, e))?;
        if reader.n != size {
            return Err(Error::io(
                format!("bundle file {} changed while being read", f.source.display()),
                std::io::Error::other("size changed"),
            ));
        }
        recorded.push(BundleFile {
            path: f.path.clone(),
            mode: f.mode,
            size,
            sha256: hex::encode(reader.hasher.finalize()),
        });
    }
    for (path, mode, content) in &plan.generated {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path.trim_start_matches('/'), content.as_slice())
            .map_err(|e| tar_err(path, e))?;
        recorded.push(BundleFile {
            path: path.clone(),
            mode: *mode,
            size: content.len() as u64,
            sha256: hex::encode(Sha256::digest(content)),
        });
    }
    builder
        .into_inner()
        .and_then(|w| w.flush())
        .map_err(|e| Error::io("failed to finish the bundle tar", e))?;
    Ok(recorded)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    n: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeadm_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let k = d.path();
        std::fs::create_dir_all(k.join("pki/etcd")).unwrap();
        std::fs::create_dir_all(k.join("manifests")).unwrap();
        std::fs::create_dir_all(k.join("enc")).unwrap();
        std::fs::write(k.join("pki/ca.crt"), "CA CERT").unwrap();
        std::fs::write(k.join("pki/ca.key"), "CA KEY").unwrap();
        std::fs::write(k.join("pki/etcd/ca.key"), "ETCD CA KEY").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(k.join("pki/ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(
            k.join("manifests/kube-apiserver.yaml"),
            "spec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n",
        )
        .unwrap();
        std::fs::write(k.join("enc/enc.yaml"), "kind: EncryptionConfiguration").unwrap();
        d
    }

    #[test]
    fn defaults_bundle_pki_manifests_and_encryption_config() {
        let d = kubeadm_dir();
        let plan = plan(&BundleOptions { kubernetes_dir: d.path().into(), ..Default::default() }).unwrap();
        let paths: Vec<_> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/kubernetes/pki/ca.crt",
                "/etc/kubernetes/pki/ca.key",
                "/etc/kubernetes/pki/etcd/ca.key",
                "/etc/kubernetes/manifests/kube-apiserver.yaml",
                "/etc/kubernetes/enc/enc.yaml"
            ]
        );
        assert_eq!(plan.files[1].mode, 0o600);
        assert!(!plan.has_kubeadm_config);

        let mut tar_bytes = Vec::new();
        let mut plan = plan;
        plan.add_kubeadm_config(b"kind: ClusterConfiguration\n".to_vec());
        let files = write_tar(&plan, &mut tar_bytes).unwrap();
        assert_eq!(files.len(), 6);
        assert_eq!(files[0].sha256, hex::encode(Sha256::digest(b"CA CERT")));
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap())
            })
            .collect();
        assert_eq!(entries[1], ("etc/kubernetes/pki/ca.key".to_owned(), 0o600));
        assert_eq!(entries[5].0, "etc/kubernetes/kubeadm-config.yaml");
    }

    #[test]
    fn missing_defaults_are_named() {
        let d = tempfile::tempdir().unwrap();
        let e = plan(&BundleOptions { kubernetes_dir: d.path().into(), ..Default::default() }).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("pki") && msg.contains("manifests") && msg.contains("--no-bundle"), "{msg}");

        let d = kubeadm_dir();
        std::fs::remove_file(d.path().join("enc/enc.yaml")).unwrap();
        let e = plan(&BundleOptions { kubernetes_dir: d.path().into(), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("encryption-provider config"), "{e}");
    }

    #[test]
    fn explicit_paths_and_none() {
        let d = kubeadm_dir();
        let only = d.path().join("pki/ca.crt");
        let p = plan(&BundleOptions { spec: BundleSpec::Paths(vec![only.clone()]), ..Default::default() })
            .unwrap();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].path, only.display().to_string());
        let e = plan(&BundleOptions {
            spec: BundleSpec::Paths(vec![d.path().join("nope")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--bundle"), "{e}");
        let p = plan(&BundleOptions {
            spec: BundleSpec::None,
            kubernetes_dir: "/nonexistent".into(),
            kubeadm_config: None,
        })
        .unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn encryption_flag_forms() {
        assert_eq!(
            encryption_config_path("- --encryption-provider-config=/a/b.yaml\n").as_deref(),
            Some("/a/b.yaml")
        );
        assert_eq!(
            encryption_config_path("args: [\"--encryption-provider-config\", \"/c.yaml\"]").as_deref(),
            Some("/c.yaml")
        );
        assert_eq!(encryption_config_path("- --etcd-servers=https://x"), None);
    }

    #[test]
    fn kubeadm_config_from_protobuf_and_json() {
        let yaml = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n";
        let cm = k8s_proto::ConfigMap {
            data: [("Other", "x"), ("ClusterConfiguration", yaml)]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
        };
        let unknown = k8s_proto::Unknown {
            raw: prost::Message::encode_to_vec(&cm),
            content_type: "application/vnd.kubernetes.protobuf".into(),
        };
        let value = [b"k8s\x00".as_slice(), &prost::Message::encode_to_vec(&unknown)].concat();
        assert_eq!(kubeadm_config_from_etcd_value(&value).unwrap(), yaml.as_bytes());

        let json = serde_json::json!({"data": {"ClusterConfiguration": "kind: ClusterConfiguration\n"}});
        assert_eq!(
            kubeadm_config_from_etcd_value(json.to_string().as_bytes()).unwrap(),
            b"kind: ClusterConfiguration\n"
        );
        let e = kubeadm_config_from_etcd_value(b"k8s:enc:aescbc:v1:key1:xxxx").unwrap_err();
        assert!(e.to_string().contains("--kubeadm-config"), "{e}");
        assert!(kubeadm_config_from_etcd_value(b"k8s\x00garbage").is_err());
    }
}
