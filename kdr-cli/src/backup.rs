//! `kdr backup`: one streaming pass from an etcd member to a store.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kdr_core::clock::SystemClock;
use kdr_core::config::parse_compression;

use crate::common::{self, Bar, GlobalArgs, Output};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// One etcd member's client URL, e.g. https://127.0.0.1:2379. Env: KDR_ETCD_ENDPOINT.
    #[arg(long, value_name = "URL")]
    etcd_endpoint: Option<String>,
    /// Where to store the set: s3://bucket/prefix, gs://, az://, file:///dir, memory://. Env: KDR_STORE.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// CA certificate of etcd's server cert (kubeadm: /etc/kubernetes/pki/etcd/ca.crt).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Bundle exactly this file or directory instead of the kubeadm defaults (repeatable).
    #[arg(long, value_name = "PATH")]
    bundle: Vec<PathBuf>,
    /// Back up etcd only, without control-plane files (PKI, manifests, encryption config).
    #[arg(long, conflicts_with = "bundle")]
    no_bundle: bool,
    /// The kubeadm directory whose defaults are bundled (default /etc/kubernetes).
    #[arg(long, value_name = "DIR")]
    kubernetes_dir: Option<PathBuf>,
    /// The kubeadm ClusterConfiguration file (default: read from etcd's kubeadm-config ConfigMap).
    #[arg(long, value_name = "FILE")]
    kubeadm_config: Option<PathBuf>,
    /// Encrypt to this age identity or recipient file (see `kdr keygen`). Env: KDR_ENCRYPTION_KEY_FILE.
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// zstd (default) or none.
    #[arg(long, value_name = "zstd|none")]
    compression: Option<String>,
    /// Cluster name recorded in the manifest (default "kubernetes"). Env: KDR_CLUSTER_NAME.
    #[arg(long, value_name = "NAME")]
    cluster_name: Option<String>,
}

pub async fn run(g: &GlobalArgs, a: BackupArgs) -> anyhow::Result<ExitCode> {
    let mut config = common::load_config(g)?;
    fn set<T>(slot: &mut Option<T>, v: Option<T>) {
        if v.is_some() {
            *slot = v;
        }
    }
    set(&mut config.etcd.endpoint, a.etcd_endpoint);
    set(&mut config.store.url, a.store);
    set(&mut config.etcd.cacert, a.cacert);
    set(&mut config.etcd.cert, a.cert);
    set(&mut config.etcd.key, a.key);
    set(&mut config.backup.kubeadm_config, a.kubeadm_config);
    set(&mut config.backup.encryption_key_file, a.encryption_key_file);
    if !a.bundle.is_empty() {
        config.backup.bundle = a.bundle;
        config.backup.no_bundle = false;
    }
    if a.no_bundle {
        config.backup.no_bundle = true;
        config.backup.bundle.clear();
    }
    if let Some(d) = a.kubernetes_dir {
        config.backup.kubernetes_dir = d;
    }
    if let Some(c) = a.compression {
        config.backup.compression = parse_compression("--compression", &c)?;
    }
    if let Some(n) = a.cluster_name {
        config.cluster.name = n;
    }

    let opts = kdr_core::backup::BackupOptions {
        cluster_name: config.cluster.name.clone(),
        etcd: config.etcd_options()?,
        bundle: config.bundle_options()?,
        encode: common::config_err(config.encode_options())?,
    };
    let store = common::open_store(&config)?;
    let bar = Bar::new(g, "etcd snapshot");
    // Ctrl-C aborts the upload and removes what was written: nothing partial is listed.
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: aborting the backup");
            on_signal.cancel();
        }
    });
    let manifest =
        kdr_core::backup::backup_cancellable(store.as_ref(), &opts, &SystemClock, bar, cancel).await?;
    match g.output {
        Output::Json => common::print_json(&manifest)?,
        Output::Table => {
            eprintln!(
                "backup {} of {} (revision {}, {} keys) stored in {}: {} in {:.1}s",
                manifest.id,
                manifest.source.endpoint,
                manifest.source.revision,
                manifest.total_keys,
                store.describe(),
                common::human_bytes(manifest.stored_bytes()),
                manifest.duration_ms as f64 / 1000.0
            );
            crate::common::out(&format!("{}", manifest.id));
        }
    }
    Ok(ExitCode::SUCCESS)
}
