//! `kdr restore`: a verified restore of a backup set into an etcd data dir, never deleting the
//! dir it replaces.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kdr_core::clock::SystemClock;
use kdr_core::config::Config;
use kdr_core::etcd::{RestoreSpec, default_peer_url};
use kdr_core::restore::{
    BundleMode, BundleTarget, Plan, Restore, RestoreOptions, RestoreReport, SetSelector,
};

use crate::common::{self, GlobalArgs, Output, human_bytes, out, print_json};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The store: s3://bucket/prefix, gs://, az://, file:///dir, memory://. Env: KDR_STORE.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The set to restore (default: the newest complete one).
    #[arg(long, value_name = "ID", conflicts_with = "before")]
    snapshot: Option<String>,
    /// Restore the newest set taken at or before TIME (RFC 3339, e.g. 2026-11-21T05:00:00Z).
    #[arg(long, value_name = "TIME")]
    before: Option<String>,
    /// The etcd data dir to restore into (kubeadm: /var/lib/etcd). An existing one is moved to
    /// <DIR>.kdr-replaced-<time>, never deleted. Env: KDR_RESTORE_DATA_DIR.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The restored member's name (kubeadm: the node name). Env: KDR_RESTORE_NAME.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The restored member's peer URL (default: from /etc/kubernetes/manifests/etcd.yaml, else
    /// https://<this host's address>:2380). Env: KDR_RESTORE_PEER_URL.
    #[arg(long, value_name = "URL")]
    initial_advertise_peer_urls: Option<String>,
    /// The initial cluster (default: <NAME>=<peer URL>, a one-member cluster).
    #[arg(long, value_name = "S")]
    initial_cluster: Option<String>,
    /// The initial cluster token (default: etcd-cluster).
    #[arg(long, value_name = "T")]
    initial_cluster_token: Option<String>,
    /// Move the revision forward by N (default 1000000000; 0 for none). Needs etcdutl 3.5.10+.
    #[arg(long, value_name = "N")]
    bump_revision: Option<u64>,
    /// Restore the bundle to its original paths: same-host (every file) or new-host (only the
    /// cluster identity: CA pairs, service-account keys, encryption config). Env: KDR_RESTORE_BUNDLE_MODE.
    #[arg(long, value_name = "MODE", conflicts_with_all = ["bundle_to", "no_bundle"])]
    bundle_mode: Option<BundleMode>,
    /// With --bundle-mode: restore under DIR instead of / (e.g. a mounted disk).
    #[arg(long, value_name = "DIR", requires = "bundle_mode")]
    bundle_root: Option<PathBuf>,
    /// Write every bundle file under DIR for inspection instead (DIR must be new or empty).
    #[arg(long, value_name = "DIR", conflicts_with = "no_bundle")]
    bundle_to: Option<PathBuf>,
    /// Leave the bundle alone (restore etcd only).
    #[arg(long)]
    no_bundle: bool,
    /// The age identity file of an encrypted set. Env: KDR_ENCRYPTION_KEY_FILE.
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// The etcdutl binary (default: etcdutl on PATH). Env: KDR_ETCDUTL.
    #[arg(long, value_name = "PATH")]
    etcdutl: Option<PathBuf>,
    /// The etcdctl binary, used when there is no etcdutl (etcd 3.4). Env: KDR_ETCDCTL.
    #[arg(long, value_name = "PATH")]
    etcdctl: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
}

fn config(g: &GlobalArgs, a: &mut RestoreArgs) -> anyhow::Result<Config> {
    let mut c = common::load_config(g)?;
    let r = &mut c.restore;
    if a.store.is_some() {
        c.store.url = a.store.take();
    }
    if a.encryption_key_file.is_some() {
        c.backup.encryption_key_file = a.encryption_key_file.take();
    }
    if a.data_dir.is_some() {
        r.data_dir = a.data_dir.take();
    }
    if a.name.is_some() {
        r.name = a.name.take();
    }
    if a.initial_advertise_peer_urls.is_some() {
        r.initial_advertise_peer_urls = a.initial_advertise_peer_urls.take();
    }
    if a.initial_cluster.is_some() {
        r.initial_cluster = a.initial_cluster.take();
    }
    if let Some(t) = a.initial_cluster_token.take() {
        r.initial_cluster_token = t;
    }
    if let Some(n) = a.bump_revision {
        r.bump_revision = n;
    }
    if a.bundle_mode.is_some() {
        r.bundle_mode = a.bundle_mode;
    }
    if let Some(p) = a.etcdutl.take() {
        r.etcdutl = p;
    }
    if let Some(p) = a.etcdctl.take() {
        r.etcdctl = p;
    }
    Ok(c)
}

pub async fn run(g: &GlobalArgs, mut a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = config(g, &mut a)?;
    let r = &config.restore;
    let data_dir = r.data_dir.clone().ok_or_else(|| {
        kdr_core::Error::config(
            "--data-dir",
            "no data dir given: pass --data-dir DIR (kubeadm: /var/lib/etcd)",
        )
    })?;
    let name = r.name.clone().ok_or_else(|| {
        kdr_core::Error::config("--name", "no member name given: pass --name NAME (kubeadm: the node name)")
    })?;
    let (peer_url, peer_url_source) = match &r.initial_advertise_peer_urls {
        Some(u) => (u.clone(), "--initial-advertise-peer-urls".to_owned()),
        None => {
            let d = default_peer_url(std::path::Path::new("/"))?;
            (d.url, d.source)
        }
    };
    let mut member = RestoreSpec::new(name, peer_url, data_dir);
    if let Some(c) = &r.initial_cluster {
        member.initial_cluster = c.clone();
    }
    member.initial_cluster_token = r.initial_cluster_token.clone();
    member.bump_revision = r.bump_revision;
    let bundle = match (&a.bundle_to, a.no_bundle, r.bundle_mode) {
        (Some(dir), _, _) => BundleTarget::InspectAt(dir.clone()),
        (None, true, _) => BundleTarget::Skip,
        (None, false, Some(mode)) => BundleTarget::Install {
            mode,
            root: a.bundle_root.clone().unwrap_or_else(|| "/".into()),
            aside: None,
        },
        (None, false, None) => BundleTarget::Unchosen,
    };
    let mut opts = RestoreOptions {
        set: SetSelector::from_flags(a.snapshot.as_deref(), a.before.as_deref())?,
        member,
        peer_url_source,
        bundle,
        encryption_key: config.encryption_key()?,
    };
    let store = common::open_store(&config)?;
    let restorer = r.restorer();
    let restore = Restore::new(store.as_ref(), &restorer, &SystemClock);

    let plan = restore.plan(&opts).await?;
    if a.dry_run {
        match g.output {
            Output::Json => print_json(&plan)?,
            Output::Table => print_plan(&plan, true),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if g.output == Output::Table {
        print_plan(&plan, false);
    }
    // Restore the set the plan showed, even if a newer one completes meanwhile.
    opts.set = SetSelector::Id(plan.set.clone());
    let report = restore.run(&opts).await?;
    match g.output {
        Output::Json => print_json(&report)?,
        Output::Table => print_report(&report),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(p: &Plan, dry_run: bool) {
    let mut lines = vec![
        format!(
            "{} backup set {} from {}",
            if dry_run { "would restore" } else { "restoring" },
            p.set,
            p.store
        ),
        format!(
            "  taken      {} from {}, revision {}, {} keys, {}",
            p.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            p.source,
            p.revision,
            p.total_keys,
            human_bytes(p.snapshot_bytes)
        ),
        format!(
            "  into       {}{}",
            p.data_dir.display(),
            if p.data_dir_exists { " (exists: it will be moved aside, not deleted)" } else { "" }
        ),
        format!("  member     {}", p.name),
        format!("  peer URL   {}  (from {})", p.peer_url, p.peer_url_source),
        format!("  cluster    {}", p.initial_cluster),
        format!("  tool       {}", p.etcd.tool),
        format!("  command    {}", p.etcd.command),
        format!("  bundle     {}", p.bundle),
    ];
    lines.extend(p.etcd.notes.iter().chain(&p.notes).map(|n| format!("  NOTE: {n}")));
    // The plan goes to stderr so that stdout stays the result; a dry run's plan is its result.
    for l in lines {
        if dry_run {
            out(&l);
        } else {
            eprintln!("{l}");
        }
    }
}

fn print_report(r: &RestoreReport) {
    let p = &r.plan;
    out(&format!(
        "restored backup set {} into {} ({} keys at revision {}{})",
        p.set,
        p.data_dir.display(),
        p.total_keys,
        p.revision,
        match p.etcd.bump_revision {
            Some(n) => format!(", revision bumped by {n}"),
            None => ", revision NOT bumped".to_owned(),
        }
    ));
    out(&format!("  verified   stored and raw sha256 against the manifest, etcd hash {}", r.etcd_hash));
    if let Some(old) = &r.replaced {
        out(&format!("  previous   data dir moved to {}", old.display()));
    }
    if let Some(b) = &r.bundle {
        out(&format!(
            "  bundle     {} written, {} unchanged, {} skipped (host-specific), {} moved aside, under {}",
            b.written.len(),
            b.unchanged.len(),
            b.skipped.len(),
            b.moved_aside.len(),
            b.root.display()
        ));
        for (from, to) in &b.moved_aside {
            out(&format!("             {} -> {}", from.display(), to.display()));
        }
    }
    out(&format!(
        "  timings    download {:.1}s, restore+verify+swap {:.1}s, bundle {:.1}s",
        r.download_ms as f64 / 1000.0,
        r.restore_ms as f64 / 1000.0,
        r.bundle_ms as f64 / 1000.0
    ));
    for n in p.etcd.notes.iter().chain(&p.notes) {
        out(&format!("  NOTE: {n}"));
    }
}
