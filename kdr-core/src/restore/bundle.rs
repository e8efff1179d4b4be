//! Restoring the control-plane bundle: verify every file against the manifest, then write it to
//! its original path (same-host or new-host selection) or into a dir for inspection.
//!
//! Two modes, because a different host must not get the old host's identity-bound files (see the
//! promotion notes in the design docs):
//! - [`BundleMode::SameHost`]: everything, as seeds 001 and 004 do when the host keeps its IP and
//!   name.
//! - [`BundleMode::NewHost`]: the cluster's identity only: the CA key pairs (`pki/ca.*`,
//!   `pki/front-proxy-ca.*`, `pki/etcd/ca.*`), the service-account keys (`pki/sa.key`,
//!   `pki/sa.pub`) and the API server's encryption-provider config. Leaf certs, kubeconfigs and
//!   static pod manifests name the old host; kubeadm regenerates them, signed by the kept CAs.
//!
//! Nothing is deleted: a file that exists with other content is moved to an aside dir first.
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::snapshot::Manifest;

/// Which bundle files a restore to the original paths writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BundleMode {
    /// Restoring onto the host the backup came from (same IP and hostname): every file.
    SameHost,
    /// Restoring onto a different host: the cluster identity only (CA pairs, service-account
    /// keys, encryption config); kubeadm regenerates the host-specific rest.
    NewHost,
}

impl std::str::FromStr for BundleMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "same-host" => Ok(Self::SameHost),
            "new-host" => Ok(Self::NewHost),
            _ => Err(Error::config("--bundle-mode", format!("{s:?} is not one of same-host, new-host"))),
        }
    }
}

/// Why a file is or is not restored in new-host mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    /// A CA pair or service-account key: the cluster's identity, valid on any host.
    Identity,
    /// The API server's encryption-provider config: without it restored Secrets are unreadable.
    EncryptionConfig,
    /// Names the old host (leaf certs, kubeconfigs, static pod manifests, kubeadm config).
    HostSpecific,
}

/// The identity files, as paths relative to the kubernetes PKI dir.
const IDENTITY: &[&str] = &[
    "pki/ca.crt",
    "pki/ca.key",
    "pki/sa.key",
    "pki/sa.pub",
    "pki/front-proxy-ca.crt",
    "pki/front-proxy-ca.key",
    "pki/etcd/ca.crt",
    "pki/etcd/ca.key",
];

/// One verified file of a bundle, held in memory (a control-plane bundle is a few hundred KiB).
#[derive(Clone, PartialEq, Eq)]
pub struct BundleEntry {
    /// The absolute path on the source host, e.g. `/etc/kubernetes/pki/ca.key`.
    pub path: String,
    /// The mode it is written with: the original bits, with group and other access removed from
    /// private keys and the encryption config.
    pub mode: u32,
    /// What it is.
    pub role: FileRole,
    /// The content.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for BundleEntry {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEntry")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("role", &self.role)
            .field("size", &self.data.len())
            .finish()
    }
}

/// What happened to each file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleReport {
    /// Where the files went: `/` (original paths) or the inspection dir.
    pub root: PathBuf,
    /// Files written (their paths as restored).
    pub written: Vec<PathBuf>,
    /// Files already there with the same content and mode.
    pub unchanged: Vec<PathBuf>,
    /// Existing files that differed, moved aside: (original path, where it went).
    pub moved_aside: Vec<(PathBuf, PathBuf)>,
    /// Files not restored in new-host mode (host-specific), by their source path.
    pub skipped: Vec<String>,
}

/// Reads a bundle tar and checks it against the manifest: every file in `manifest.bundle_files`
/// is present with its sha256, and there is nothing else. Rejects absolute paths, `..`, links and
/// other special entries. `set` names the set in errors.
pub fn read_bundle(tar: &[u8], manifest: &Manifest) -> Result<Vec<BundleEntry>> {
    let set = manifest.id.as_str();
    let bad = |detail: String| Error::integrity(format!("bundle of backup set {set}"), detail);
    let mut expected: BTreeMap<String, &crate::snapshot::BundleFile> =
        manifest.bundle_files.iter().map(|f| (normalize(&f.path), f)).collect();
    let mut archive = tar::Archive::new(tar);
    let mut entries = Vec::new();
    for entry in archive.entries().map_err(|e| bad(format!("not a tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("unreadable tar entry: {e}")))?;
        let raw_path = entry.path().map_err(|e| bad(format!("unreadable path in tar: {e}")))?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "{} is a {kind:?} entry; a bundle holds regular files only",
                raw_path.display()
            )));
        }
        let rel = safe_relative(&raw_path)
            .ok_or_else(|| bad(format!("unsafe path {} in the bundle", raw_path.display())))?;
        let key = normalize(&rel.to_string_lossy());
        let Some(want) = expected.remove(&key) else {
            return Err(bad(format!("/{key} is in the bundle but not in the manifest")));
        };
        let mut data = Vec::with_capacity(want.size as usize);
        entry.read_to_end(&mut data).map_err(|e| bad(format!("cannot read /{key}: {e}")))?;
        let got = hex::encode(Sha256::digest(&data));
        if got != want.sha256 {
            return Err(bad(format!("sha256 of /{key} is {got}, the manifest says {}", want.sha256)));
        }
        let tar_mode = entry.header().mode().unwrap_or(want.mode);
        if tar_mode & 0o7777 != want.mode & 0o7777 {
            return Err(bad(format!(
                "/{key} has mode {:o} in the tar, {:o} in the manifest",
                tar_mode, want.mode
            )));
        }
        entries.push(BundleEntry {
            path: format!("/{key}"),
            mode: want.mode & 0o7777,
            role: FileRole::HostSpecific,
            data,
        });
    }
    if let Some(missing) = expected.keys().next() {
        return Err(bad(format!(
            "/{missing} is in the manifest but not in the bundle ({} missing)",
            expected.len()
        )));
    }
    classify(&mut entries);
    Ok(entries)
}

/// Sets each entry's role and tightens the mode of secrets.
fn classify(entries: &mut [BundleEntry]) {
    // The API server's manifest names its encryption config, whatever its path.
    let referenced: Vec<String> = entries
        .iter()
        .filter(|e| e.path.ends_with("/kube-apiserver.yaml"))
        .filter_map(|e| {
            crate::etcd::flag_value(&String::from_utf8_lossy(&e.data), "--encryption-provider-config")
        })
        .collect();
    for e in entries.iter_mut() {
        let text_kind = || {
            let t = String::from_utf8_lossy(&e.data[..e.data.len().min(4096)]).into_owned();
            t.contains("kind: EncryptionConfiguration")
                || t.contains("\"kind\":\"EncryptionConfiguration\"")
                || t.contains("\"kind\": \"EncryptionConfiguration\"")
        };
        e.role = if IDENTITY.iter().any(|id| e.path.ends_with(&format!("/{id}"))) {
            FileRole::Identity
        } else if referenced.iter().any(|r| r == &e.path) || text_kind() {
            FileRole::EncryptionConfig
        } else {
            FileRole::HostSpecific
        };
        if e.path.ends_with(".key") || e.role == FileRole::EncryptionConfig {
            e.mode &= !0o077;
        }
    }
}

/// The entries a mode restores, and the paths it skips.
pub fn select(entries: Vec<BundleEntry>, mode: BundleMode) -> (Vec<BundleEntry>, Vec<String>) {
    match mode {
        BundleMode::SameHost => (entries, Vec::new()),
        BundleMode::NewHost => {
            let (keep, skip): (Vec<_>, Vec<_>) =
                entries.into_iter().partition(|e| e.role != FileRole::HostSpecific);
            (keep, skip.into_iter().map(|e| e.path).collect())
        }
    }
}

/// Writes entries under `root` (`/` for the original paths). Each file is written to a hidden
/// temp file in its dir with its mode, fsynced and renamed into place. A file that exists with the
/// same content and mode is left alone; one that differs is first moved to the same relative path
/// under `aside` (never deleted).
pub fn install(entries: &[BundleEntry], root: &Path, aside: &Path) -> Result<BundleReport> {
    let mut report = BundleReport { root: root.to_owned(), ..Default::default() };
    for e in entries {
        let rel = e.path.trim_start_matches('/');
        let dest = root.join(rel);
        let parent = dest.parent().unwrap_or(root);
        fs::create_dir_all(parent)
            .map_err(|err| Error::io(format!("cannot create {}", parent.display()), err))?;
        if let Ok(meta) = fs::symlink_metadata(&dest) {
            let same = meta.is_file()
                && meta.permissions().mode() & 0o7777 == e.mode
                && fs::read(&dest).is_ok_and(|d| d == e.data);
            if same {
                report.unchanged.push(dest);
                continue;
            }
        }
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // A dot name: kubelet ignores hidden files in the static pod dir.
        let tmp = parent.join(format!(".{name}.kdr-partial"));
        write_file(&tmp, e.mode, &e.data)?;
        if fs::symlink_metadata(&dest).is_ok() {
            let to = aside.join(rel);
            if let Err(err) = move_aside(&dest, &to) {
                let _ = fs::remove_file(&tmp);
                return Err(err);
            }
            report.moved_aside.push((dest.clone(), to));
        }
        fs::rename(&tmp, &dest).map_err(|err| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("cannot rename {} to {}", tmp.display(), dest.display()), err)
        })?;
        super::datadir::sync_dir(parent);
        report.written.push(dest);
    }
    Ok(report)
}

/// Writes all entries under `dir` for inspection. `dir` must be missing or empty (nothing there is
/// overwritten).
pub fn extract_to(entries: &[BundleEntry], dir: &Path) -> Result<BundleReport> {
    if let Ok(mut it) = fs::read_dir(dir)
        && it.next().is_some()
    {
        return Err(Error::refused(format!(
            "--bundle-to {} is not empty; give a new or empty dir so that nothing in it is overwritten",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    install(entries, dir, &dir.join(".kdr-aside"))
}

fn write_file(path: &Path, mode: u32, data: &[u8]) -> Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    let _ = fs::remove_file(path); // a stale temp file of ours from an interrupted run
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o700) // never readable by others, even for a moment
        .open(path)
        .map_err(|e| Error::io(ctx(), e))?;
    f.write_all(data).map_err(|e| Error::io(ctx(), e))?;
    // The umask may have cut bits: set the exact mode.
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| Error::io(ctx(), e))?;
    f.sync_all().map_err(|e| Error::io(ctx(), e))
}

fn move_aside(from: &Path, to: &Path) -> Result<()> {
    if let Some(p) = to.parent() {
        fs::create_dir_all(p).map_err(|e| Error::io(format!("cannot create {}", p.display()), e))?;
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(Error::AlreadyExists {
            what: format!("{} (where {} would be moved)", to.display(), from.display()),
        });
    }
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            // Another filesystem: copy (keeping the mode), then remove the original.
            fs::copy(from, to)
                .map_err(|e| Error::io(format!("cannot copy {} to {}", from.display(), to.display()), e))?;
            fs::remove_file(from).map_err(|e| Error::io(format!("cannot remove {}", from.display()), e))
        }
        Err(e) => Err(Error::io(format!("cannot move {} aside to {}", from.display(), to.display()), e)),
    }
}

/// `etc/kubernetes/x` for `/etc/kubernetes/x`, `./etc/kubernetes/x` or `etc/kubernetes/x`.
fn normalize(p: &str) -> String {
    p.trim_start_matches("./").trim_start_matches('/').to_owned()
}

/// The path as a plain relative path, or `None` if it could escape (`..`, root, prefixes).
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir if out.as_os_str().is_empty() => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapshot::BundleFile;

    pub(crate) const FILES: &[(&str, u32, &str)] = &[
        ("/etc/kubernetes/pki/ca.crt", 0o644, "CA CERT"),
        ("/etc/kubernetes/pki/ca.key", 0o600, "CA KEY"),
        ("/etc/kubernetes/pki/sa.key", 0o600, "SA KEY"),
        ("/etc/kubernetes/pki/sa.pub", 0o644, "SA PUB"),
        ("/etc/kubernetes/pki/front-proxy-ca.crt", 0o644, "FP CERT"),
        ("/etc/kubernetes/pki/front-proxy-ca.key", 0o600, "FP KEY"),
        ("/etc/kubernetes/pki/etcd/ca.crt", 0o644, "ETCD CA"),
        ("/etc/kubernetes/pki/etcd/ca.key", 0o600, "ETCD KEY"),
        ("/etc/kubernetes/pki/apiserver.crt", 0o644, "APISERVER"),
        ("/etc/kubernetes/pki/apiserver.key", 0o644, "APISERVER KEY, too open at the source"),
        ("/etc/kubernetes/pki/etcd/server.crt", 0o644, "ETCD SERVER"),
        ("/etc/kubernetes/admin.conf", 0o600, "server: https://10.0.0.1:6443"),
        (
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
            0o600,
            "    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n",
        ),
        ("/etc/kubernetes/manifests/etcd.yaml", 0o600, "    - --data-dir=/var/lib/etcd\n"),
        (
            "/etc/kubernetes/enc/enc.yaml",
            0o600,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n",
        ),
    ];

    /// A tar as the backup writes it (paths relative to /, modes kept) and matching manifest entries.
    pub(crate) fn tar_and_files(files: &[(&str, u32, &str)]) -> (Vec<u8>, Vec<BundleFile>) {
        let mut b = tar::Builder::new(Vec::new());
        let mut listed = Vec::new();
        for (path, mode, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(*mode);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path.trim_start_matches('/'), content.as_bytes()).unwrap();
            listed.push(BundleFile {
                path: (*path).into(),
                mode: *mode,
                size: content.len() as u64,
                sha256: hex::encode(Sha256::digest(content.as_bytes())),
            });
        }
        (b.into_inner().unwrap(), listed)
    }

    fn manifest(files: Vec<BundleFile>) -> Manifest {
        let mut m = crate::restore::tests::manifest();
        m.bundle_files = files;
        m
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn reads_verifies_and_classifies() {
        let (tar, files) = tar_and_files(FILES);
        let entries = read_bundle(&tar, &manifest(files)).unwrap();
        assert_eq!(entries.len(), FILES.len());
        let role = |p: &str| entries.iter().find(|e| e.path == p).unwrap().role;
        assert_eq!(role("/etc/kubernetes/pki/ca.key"), FileRole::Identity);
        assert_eq!(role("/etc/kubernetes/pki/etcd/ca.crt"), FileRole::Identity);
        assert_eq!(role("/etc/kubernetes/pki/etcd/server.crt"), FileRole::HostSpecific);
        assert_eq!(role("/etc/kubernetes/enc/enc.yaml"), FileRole::EncryptionConfig);
        assert_eq!(role("/etc/kubernetes/admin.conf"), FileRole::HostSpecific);
        let key = entries.iter().find(|e| e.path == "/etc/kubernetes/pki/apiserver.key").unwrap();
        assert_eq!(key.mode, 0o600, "private keys are restored 0600");
        assert!(!format!("{key:?}").contains("APISERVER KEY"), "Debug never shows content");
    }

    #[test]
    fn new_host_keeps_only_the_identity() {
        let (tar, files) = tar_and_files(FILES);
        let (keep, skip) = select(read_bundle(&tar, &manifest(files)).unwrap(), BundleMode::NewHost);
        let kept: Vec<&str> = keep.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(kept.len(), 9, "{kept:?}");
        assert!(kept.contains(&"/etc/kubernetes/enc/enc.yaml"));
        for host in [
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/kubernetes/pki/etcd/server.crt",
        ] {
            assert!(skip.contains(&host.to_owned()), "{host} must be skipped");
        }
    }

    #[test]
    fn tampered_bundles_are_named() {
        let (tar, mut files) = tar_and_files(FILES);
        files[1].sha256 = "00".repeat(32);
        let e = read_bundle(&tar, &manifest(files)).unwrap_err().to_string();
        assert!(
            e.contains("pki/ca.key") && e.contains("sha256") && e.contains("20261121T051115Z-1a2b3c4d"),
            "{e}"
        );

        let (tar, mut files) = tar_and_files(FILES);
        files.pop();
        let e = read_bundle(&tar, &manifest(files)).unwrap_err().to_string();
        assert!(e.contains("enc.yaml") && e.contains("not in the manifest"), "{e}");

        let (tar, mut files) = tar_and_files(FILES);
        files.push(BundleFile {
            path: "/etc/kubernetes/extra".into(),
            mode: 0o600,
            size: 1,
            sha256: "x".into(),
        });
        let e = read_bundle(&tar, &manifest(files)).unwrap_err().to_string();
        assert!(e.contains("/etc/kubernetes/extra") && e.contains("not in the bundle"), "{e}");

        let (tar, files) = tar_and_files(FILES);
        let e = read_bundle(&tar[..tar.len() / 2], &manifest(files)).unwrap_err();
        assert!(matches!(e, Error::Integrity { .. }), "{e}");
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        assert_eq!(safe_relative(Path::new("/etc/x")), Some(PathBuf::from("etc/x")));
        assert_eq!(safe_relative(Path::new("./etc/x")), Some(PathBuf::from("etc/x")));
        assert_eq!(safe_relative(Path::new("etc/../../x")), None);
        assert_eq!(safe_relative(Path::new("")), None);
    }

    #[test]
    fn install_writes_modes_and_moves_changed_files_aside() {
        let root = tempfile::tempdir().unwrap();
        let aside = root.path().join("aside");
        let (tar, files) = tar_and_files(FILES);
        let entries = read_bundle(&tar, &manifest(files)).unwrap();
        // An existing different CA key, and an identical cert.
        let pki = root.path().join("etc/kubernetes/pki");
        fs::create_dir_all(&pki).unwrap();
        fs::write(pki.join("ca.key"), "OTHER KEY").unwrap();
        fs::write(pki.join("ca.crt"), "CA CERT").unwrap();
        fs::set_permissions(pki.join("ca.crt"), fs::Permissions::from_mode(0o644)).unwrap();

        let report = install(&entries, root.path(), &aside).unwrap();
        assert_eq!(report.unchanged, vec![pki.join("ca.crt")]);
        assert_eq!(report.written.len(), FILES.len() - 1);
        assert_eq!(fs::read_to_string(pki.join("ca.key")).unwrap(), "CA KEY");
        assert_eq!(mode_of(&pki.join("ca.key")), 0o600);
        assert_eq!(mode_of(&pki.join("apiserver.key")), 0o600);
        assert_eq!(mode_of(&pki.join("ca.crt")), 0o644);
        assert_eq!(fs::read_to_string(aside.join("etc/kubernetes/pki/ca.key")).unwrap(), "OTHER KEY");
        assert_eq!(report.moved_aside.len(), 1);
        // No temp file is left behind.
        let leftovers: Vec<_> = fs::read_dir(&pki)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("kdr-partial"))
            .collect();
        assert!(leftovers.is_empty());
        // Installing again changes nothing.
        let again = install(&entries, root.path(), &aside).unwrap();
        assert_eq!(again.unchanged.len(), FILES.len());
    }

    #[test]
    fn extract_to_refuses_a_non_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (tar, files) = tar_and_files(FILES);
        let entries = read_bundle(&tar, &manifest(files)).unwrap();
        let out = dir.path().join("out");
        let r = extract_to(&entries, &out).unwrap();
        assert_eq!(r.written.len(), FILES.len());
        assert_eq!(mode_of(&out.join("etc/kubernetes/pki/sa.key")), 0o600);
        let e = extract_to(&entries, &out).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
    }
}
