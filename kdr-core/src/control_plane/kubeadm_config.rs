//! The pure derivation of `kubeadm init`'s configuration ([`derive_kubeadm_config`]) for the
//! node being promoted; [`KubeadmInit`](super::KubeadmInit) runs it.
//!
//! Seed 000 runs `kubeadm init --config master-2-config.yaml
//! --ignore-preflight-errors=DirAvailable--var-lib-etcd` with a hand-written file. kdr derives
//! that file from the cluster's own ClusterConfiguration (backed up in the bundle), adjusted for
//! the node being promoted, so nothing the old control plane was configured with is lost:
//!
//! - `InitConfiguration`: `localAPIEndpoint.advertiseAddress`/`bindPort` and
//!   `nodeRegistration.name` (and `criSocket` if configured) are this node's; everything else of
//!   a backed-up InitConfiguration (taints, kubelet extra args, skipped phases) is kept. Bootstrap
//!   tokens and a certificate key are dropped: kdr creates its own short-lived token.
//! - `ClusterConfiguration`: kept whole (unknown fields included), except `etcd.local.dataDir`
//!   (the restored dir), `controlPlaneEndpoint` (see [`EndpointPolicy`]), and any mention of the
//!   old primary's address in extra args and certificate SANs, which is rewritten to this node's.
//! - Custom `kube-apiserver` flags found in the old static pod manifest (admission plugins, audit,
//!   `--encryption-provider-config`, ...) that kubeadm does not generate itself are carried into
//!   `apiServer.extraArgs`, and the host paths they need into `apiServer.extraVolumes` (kubeadm
//!   writes the manifests afresh; the old ones name the old host).
//! - `KubeletConfiguration` and `KubeProxyConfiguration` documents are kept as they are.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::{Mapping, Value};

use super::NodeIdentity;
use crate::error::{Error, Result};

/// What to do with the ClusterConfiguration's `controlPlaneEndpoint`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EndpointPolicy {
    /// Rewrite it to this node when it names the old primary (by address or name); keep it when
    /// it is a DNS name or VIP that moves with the primary (seed 002's switch, done by a hook).
    #[default]
    Auto,
    /// Keep it as it is.
    Keep,
    /// Always point it at this node (`<advertise address>:<bind port>`).
    ThisNode,
    /// Set it to this `host:port`.
    Set(String),
}

impl EndpointPolicy {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "keep" => Self::Keep,
            "this-node" => Self::ThisNode,
            other if !other.is_empty() && !other.contains(char::is_whitespace) => Self::Set(other.to_owned()),
            other => {
                return Err(format!(
                    "{other:?} is not \"auto\", \"keep\", \"this-node\" or a host:port such as \"k8s.example.com:6443\""
                ));
            }
        })
    }
}

impl Serialize for EndpointPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Self::Auto => "auto",
            Self::Keep => "keep",
            Self::ThisNode => "this-node",
            Self::Set(v) => v,
        })
    }
}

impl<'de> Deserialize<'de> for EndpointPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The inputs of [`derive_kubeadm_config`].
#[derive(Clone, Debug)]
pub struct DeriveInput<'a> {
    /// The backed-up kubeadm configuration: a ClusterConfiguration document, possibly with
    /// InitConfiguration, KubeletConfiguration and KubeProxyConfiguration documents.
    pub cluster_configuration: &'a str,
    /// The old primary's kube-apiserver static pod manifest, if it was backed up.
    pub old_apiserver_manifest: Option<&'a str>,
    /// The node being promoted.
    pub this_node: &'a NodeIdentity,
    /// The node it replaces.
    pub old_primary: &'a NodeIdentity,
    /// The API server's port on this node.
    pub bind_port: u16,
    /// The restored etcd data dir.
    pub etcd_data_dir: &'a str,
    /// `nodeRegistration.criSocket`, if configured.
    pub cri_socket: Option<&'a str>,
    /// What to do with `controlPlaneEndpoint`.
    pub endpoint: &'a EndpointPolicy,
}

/// The result of [`derive_kubeadm_config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedConfig {
    /// The configuration for `kubeadm init --config`, as YAML documents.
    pub yaml: String,
    /// The kubeadm API version used (that of the backed-up ClusterConfiguration).
    pub api_version: String,
    /// The endpoint workers reach the new API server at (`host:port`).
    pub endpoint: String,
    /// What was changed or carried, one line each, for the plan and the journal.
    pub notes: Vec<String>,
}

/// kube-apiserver flags that kubeadm generates itself from the configuration; a value found for
/// them in an old manifest is never carried over (they name the old host or kubeadm's paths).
const KUBEADM_APISERVER_FLAGS: &[&str] = &[
    "advertise-address",
    "allow-privileged",
    "client-ca-file",
    "enable-bootstrap-token-auth",
    "etcd-cafile",
    "etcd-certfile",
    "etcd-keyfile",
    "etcd-servers",
    "insecure-port",
    "kubelet-client-certificate",
    "kubelet-client-key",
    "kubelet-preferred-address-types",
    "proxy-client-cert-file",
    "proxy-client-key-file",
    "requestheader-allowed-names",
    "requestheader-client-ca-file",
    "requestheader-extra-headers-prefix",
    "requestheader-group-headers",
    "requestheader-username-headers",
    "secure-port",
    "service-account-issuer",
    "service-account-key-file",
    "service-account-signing-key-file",
    "service-cluster-ip-range",
    "tls-cert-file",
    "tls-private-key-file",
];

/// Flags kubeadm generates with a default; a different value in the old manifest is a
/// customisation and is carried.
const KUBEADM_APISERVER_DEFAULTS: &[(&str, &str)] =
    &[("authorization-mode", "Node,RBAC"), ("enable-admission-plugins", "NodeRestriction")];

/// The host-path volumes kubeadm itself gives the API server.
const KUBEADM_APISERVER_VOLUMES: &[&str] = &[
    "ca-certs",
    "etc-ca-certificates",
    "etc-pki",
    "k8s-certs",
    "usr-local-share-ca-certificates",
    "usr-share-ca-certificates",
];

const KEPT_KINDS: &[&str] = &["KubeletConfiguration", "KubeProxyConfiguration"];

pub(super) fn key(k: &str) -> Value {
    Value::String(k.to_owned())
}

fn bad(reason: impl Into<String>) -> Error {
    Error::config("kubeadm.cluster_configuration", reason)
}

/// `m[k]` as a mapping, created (or replaced, if it was not a mapping) when missing.
pub(super) fn child<'m>(m: &'m mut Mapping, k: &str) -> &'m mut Mapping {
    let slot = m.entry(key(k)).or_insert_with(|| Value::Mapping(Mapping::new()));
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    slot.as_mapping_mut().expect("just made a mapping")
}

/// Replaces `old` in `s` where it stands as a whole host name or address (not inside a longer
/// one: `10.0.0.1` is not replaced inside `10.0.0.10`).
fn replace_host(s: &str, old: &str, new: &str) -> String {
    if old.is_empty() {
        return s.to_owned();
    }
    let part = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(old) {
        let before = rest[..i].chars().next_back().or_else(|| out.chars().next_back());
        let after_str = &rest[i + old.len()..];
        let mut after = after_str.chars();
        let next = after.next();
        let boundary_before = before.is_none_or(|c| !part(c) && c != '.');
        let boundary_after = match next {
            None => true,
            Some('.') => !after.next().is_some_and(part),
            Some(c) => !part(c),
        };
        out.push_str(&rest[..i]);
        if boundary_before && boundary_after {
            out.push_str(new);
        } else {
            out.push_str(old);
        }
        rest = after_str;
    }
    out.push_str(rest);
    out
}

fn host_of(endpoint: &str) -> &str {
    if let Some(rest) = endpoint.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match endpoint.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => endpoint,
    }
}

fn port_of(endpoint: &str) -> Option<&str> {
    let (_, p) = endpoint.rsplit_once(':')?;
    (p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() && !endpoint.ends_with(']')).then_some(p)
}

/// extraArgs in either kubeadm API shape: a map (v1beta3) or a list of `{name, value}` (v1beta4).
#[derive(Debug, Default)]
struct ExtraArgs {
    args: Vec<(String, String)>,
}

impl ExtraArgs {
    fn read(v: Option<&Value>) -> Self {
        let mut args = Vec::new();
        match v {
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    if let Some(k) = k.as_str() {
                        args.push((k.to_owned(), scalar(v)));
                    }
                }
            }
            Some(Value::Sequence(seq)) => {
                for item in seq {
                    if let Some(name) = item.get("name").and_then(Value::as_str) {
                        args.push((name.to_owned(), item.get("value").map(scalar).unwrap_or_default()));
                    }
                }
            }
            _ => {}
        }
        Self { args }
    }

    fn has(&self, name: &str) -> bool {
        self.args.iter().any(|(k, _)| k == name)
    }

    fn write(&self, list_form: bool) -> Value {
        if list_form {
            Value::Sequence(
                self.args
                    .iter()
                    .map(|(k, v)| {
                        let mut m = Mapping::new();
                        m.insert(key("name"), key(k));
                        m.insert(key("value"), key(v));
                        Value::Mapping(m)
                    })
                    .collect(),
            )
        } else {
            Value::Mapping(self.args.iter().map(|(k, v)| (key(k), key(v))).collect())
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_owned(),
    }
}

/// Rewrites the old primary's address and name in the extra args at `m[field]` (in place, keeping
/// the API version's shape); returns a note per rewritten arg.
fn rewrite_extra_args(
    m: &mut Mapping,
    field: &str,
    list_form: bool,
    ctx: &Ctx<'_>,
    what: &str,
) -> Vec<String> {
    let mut args = ExtraArgs::read(m.get(field));
    let mut notes = Vec::new();
    for (k, v) in &mut args.args {
        let new = ctx.rewrite(v);
        if new != *v {
            notes.push(format!("{what}.extraArgs.{k}: {v} -> {new} (named the old primary)"));
            *v = new;
        }
    }
    if !notes.is_empty() {
        m.insert(key(field), args.write(list_form));
    }
    notes
}

fn rewrite_sans(m: &mut Mapping, field: &str, ctx: &Ctx<'_>, what: &str) -> Vec<String> {
    let Some(Value::Sequence(sans)) = m.get_mut(field) else { return Vec::new() };
    let mut notes = Vec::new();
    for san in sans.iter_mut() {
        if let Value::String(s) = san
            && (s == &ctx.old.address || s == &ctx.old.name)
        {
            let new = if s == &ctx.old.name { ctx.this.name.clone() } else { ctx.this.address.clone() };
            notes.push(format!("{what}.{field}: {s} -> {new} (named the old primary)"));
            *s = new;
        }
    }
    notes
}

struct Ctx<'a> {
    this: &'a NodeIdentity,
    old: &'a NodeIdentity,
}

impl Ctx<'_> {
    fn rewrite(&self, s: &str) -> String {
        let s = replace_host(s, &self.old.address, &self.this.address);
        if self.old.name != self.old.address { replace_host(&s, &self.old.name, &self.this.name) } else { s }
    }

    fn names_old(&self, host: &str) -> bool {
        host == self.old.address || host == self.old.name
    }
}

/// The custom flags and extra host-path volumes of an old kube-apiserver static pod manifest.
#[derive(Debug, Default)]
struct OldManifest {
    flags: Vec<(String, String)>,
    volumes: Vec<Mapping>,
}

fn parse_old_manifest(yaml: &str) -> Result<OldManifest> {
    let bad = |r: String| Error::config("kubeadm.old_apiserver_manifest", r);
    let pod: Value = serde_yaml_ng::from_str(yaml)
        .map_err(|e| bad(format!("not a YAML static pod manifest ({e}); fix the file or unset the key")))?;
    let container = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .and_then(|cs| {
            cs.iter().find(|c| c.get("name").and_then(Value::as_str) == Some("kube-apiserver")).or(cs.first())
        })
        .ok_or_else(|| bad("no spec.containers in the kube-apiserver manifest".into()))?;
    let words = container
        .get("command")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .chain(container.get("args").and_then(Value::as_sequence).into_iter().flatten())
        .filter_map(Value::as_str);
    let mut flags = Vec::new();
    for w in words {
        if let Some(flag) = w.strip_prefix("--") {
            let (k, v) = flag.split_once('=').unwrap_or((flag, "true"));
            flags.push((k.to_owned(), v.to_owned()));
        }
    }
    // Host-path volumes and where the container mounts them.
    let mounts: Vec<&Value> = container
        .get("volumeMounts")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    let mut volumes = Vec::new();
    for vol in
        pod.get("spec").and_then(|s| s.get("volumes")).and_then(Value::as_sequence).into_iter().flatten()
    {
        let (Some(name), Some(host)) = (vol.get("name").and_then(Value::as_str), vol.get("hostPath")) else {
            continue;
        };
        if KUBEADM_APISERVER_VOLUMES.contains(&name) {
            continue;
        }
        let Some(mount) = mounts.iter().find(|m| m.get("name").and_then(Value::as_str) == Some(name)) else {
            continue;
        };
        let mut ev = Mapping::new();
        ev.insert(key("name"), key(name));
        ev.insert(key("hostPath"), host.get("path").cloned().unwrap_or(Value::Null));
        ev.insert(key("mountPath"), mount.get("mountPath").cloned().unwrap_or(Value::Null));
        ev.insert(
            key("readOnly"),
            Value::Bool(mount.get("readOnly").and_then(Value::as_bool).unwrap_or(false)),
        );
        if let Some(t) = host.get("type") {
            ev.insert(key("pathType"), t.clone());
        }
        volumes.push(ev);
    }
    Ok(OldManifest { flags, volumes })
}

/// Derives the configuration for `kubeadm init` on the promoted node. Pure: no I/O. See the
/// [module docs](self) for what is changed and what is kept.
///
/// Errors are [`Error::Config`] naming `kubeadm.cluster_configuration` (or
/// `kubeadm.old_apiserver_manifest`) and what is wrong: no ClusterConfiguration document, an API
/// version kubeadm no longer reads, or external etcd (kdr restores stacked etcd).
pub fn derive_kubeadm_config(input: &DeriveInput<'_>) -> Result<DerivedConfig> {
    let ctx = Ctx { this: input.this_node, old: input.old_primary };
    let docs = parse_documents(input.cluster_configuration)?;
    let mut cluster = cluster_document(&docs)?;
    let (api_version, list_form) = api_version_of(&cluster)?;
    let mut notes = Vec::new();

    set_stacked_etcd(&mut cluster, input, &ctx, list_form, &mut notes)?;
    let endpoint = set_control_plane_endpoint(&mut cluster, input, &ctx, &mut notes);
    rewrite_apiserver(&mut cluster, input, &ctx, list_form, &mut notes)?;
    for comp in ["controllerManager", "scheduler"] {
        if let Some(Value::Mapping(m)) = cluster.get_mut(comp) {
            notes.extend(rewrite_extra_args(m, "extraArgs", list_form, &ctx, comp));
        }
    }
    let init = init_configuration(&docs, &api_version, input, &mut notes);
    let yaml = render(init, cluster, &docs, &mut notes)?;
    Ok(DerivedConfig { yaml, api_version, endpoint, notes })
}

fn kind_of(v: &Value) -> Option<&str> {
    v.get("kind").and_then(Value::as_str)
}

/// The non-empty YAML documents of the backed-up kubeadm configuration.
fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de)
            .map_err(|e| bad(format!("YAML document {} does not parse: {e}", i + 1)))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The ClusterConfiguration document, the one the derivation starts from.
fn cluster_document(docs: &[Value]) -> Result<Mapping> {
    let cluster = docs.iter().find(|d| kind_of(d) == Some("ClusterConfiguration")).ok_or_else(|| {
        bad("no document of kind ClusterConfiguration; back up the cluster's (kubectl -n kube-system get cm \
             kubeadm-config -o jsonpath='{.data.ClusterConfiguration}') or set kubeadm.config_file"
            .to_owned())
    })?;
    Ok(cluster.as_mapping().cloned().unwrap_or_default())
}

/// The ClusterConfiguration's API version, and whether its extra args are list-shaped
/// (v1beta4) rather than a map (v1beta3).
fn api_version_of(cluster: &Mapping) -> Result<(String, bool)> {
    let api_version = cluster.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
    let list_form = match api_version.as_str() {
        "kubeadm.k8s.io/v1beta3" => false,
        "kubeadm.k8s.io/v1beta4" => true,
        other => {
            return Err(bad(format!(
                "apiVersion {other:?} is not one kubeadm reads any more (v1beta3 or v1beta4); convert it with \
                 `kubeadm config migrate --old-config FILE`"
            )));
        }
    };
    Ok((api_version, list_form))
}

/// etcd: stacked, on the restored dir, with the old primary's mentions rewritten.
fn set_stacked_etcd(
    cluster: &mut Mapping,
    input: &DeriveInput<'_>,
    ctx: &Ctx<'_>,
    list_form: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    let etcd = child(cluster, "etcd");
    if etcd.contains_key("external") {
        return Err(bad(
            "etcd.external is set: kdr restores and promotes stacked (local) etcd only".to_owned()
        ));
    }
    let local = child(etcd, "local");
    let data_dir = key(input.etcd_data_dir);
    if local.get("dataDir") != Some(&data_dir) {
        notes.push(format!("etcd.local.dataDir set to {} (the restored data)", input.etcd_data_dir));
        local.insert(key("dataDir"), data_dir);
    }
    notes.extend(rewrite_extra_args(local, "extraArgs", list_form, ctx, "etcd.local"));
    notes.extend(rewrite_sans(local, "serverCertSANs", ctx, "etcd.local"));
    notes.extend(rewrite_sans(local, "peerCertSANs", ctx, "etcd.local"));
    Ok(())
}

/// Applies the [`EndpointPolicy`] to `controlPlaneEndpoint`; returns the endpoint workers reach
/// the new API server at.
fn set_control_plane_endpoint(
    cluster: &mut Mapping,
    input: &DeriveInput<'_>,
    ctx: &Ctx<'_>,
    notes: &mut Vec<String>,
) -> String {
    let this_endpoint = format!("{}:{}", input.this_node.address, input.bind_port);
    let current = cluster.get("controlPlaneEndpoint").and_then(Value::as_str).unwrap_or_default().to_owned();
    let wanted = match input.endpoint {
        EndpointPolicy::Keep => current.clone(),
        EndpointPolicy::ThisNode => this_endpoint.clone(),
        EndpointPolicy::Set(e) => e.clone(),
        EndpointPolicy::Auto if current.is_empty() => String::new(),
        EndpointPolicy::Auto if ctx.names_old(host_of(&current)) => {
            format!(
                "{}:{}",
                input.this_node.address,
                port_of(&current).map(str::to_owned).unwrap_or_else(|| input.bind_port.to_string())
            )
        }
        EndpointPolicy::Auto => {
            notes.push(format!(
                "controlPlaneEndpoint {current} kept (not the old primary's address): make sure it now resolves \
                 to {} (a DNS or VIP switch hook)",
                input.this_node.address
            ));
            current.clone()
        }
    };
    if wanted != current {
        notes.push(format!(
            "controlPlaneEndpoint: {} -> {wanted}",
            if current.is_empty() { "(unset)" } else { current.as_str() }
        ));
        cluster.insert(key("controlPlaneEndpoint"), key(&wanted));
    }
    if wanted.is_empty() { this_endpoint } else { wanted }
}

/// apiServer: rewrites mentions of the old primary, then carries the old manifest's
/// customisations.
fn rewrite_apiserver(
    cluster: &mut Mapping,
    input: &DeriveInput<'_>,
    ctx: &Ctx<'_>,
    list_form: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    let api = child(cluster, "apiServer");
    notes.extend(rewrite_extra_args(api, "extraArgs", list_form, ctx, "apiServer"));
    notes.extend(rewrite_sans(api, "certSANs", ctx, "apiServer"));
    match input.old_apiserver_manifest {
        None => notes.push(
            "no old kube-apiserver manifest: no custom API server flags carried (check apiServer.extraArgs)"
                .into(),
        ),
        Some(yaml) => {
            let old = parse_old_manifest(yaml)?;
            carry_flags(api, old.flags, ctx, list_form, notes);
            carry_volumes(api, old.volumes, notes);
        }
    }
    Ok(())
}

/// Carries the old manifest's custom flags (not kubeadm's own, not its defaults, not already
/// set) into `apiServer.extraArgs`.
fn carry_flags(
    api: &mut Mapping,
    flags: Vec<(String, String)>,
    ctx: &Ctx<'_>,
    list_form: bool,
    notes: &mut Vec<String>,
) {
    let mut args = ExtraArgs::read(api.get("extraArgs"));
    let mut carried = false;
    for (k, v) in flags {
        if KUBEADM_APISERVER_FLAGS.contains(&k.as_str()) || args.has(&k) || k.is_empty() {
            continue;
        }
        if KUBEADM_APISERVER_DEFAULTS.iter().any(|(f, d)| *f == k && *d == v) {
            continue;
        }
        let v2 = ctx.rewrite(&v);
        notes.push(format!("apiServer.extraArgs.{k}={v2} carried from the old kube-apiserver manifest"));
        args.args.push((k, v2));
        carried = true;
    }
    if carried {
        api.insert(key("extraArgs"), args.write(list_form));
    }
}

/// Carries the old manifest's extra host-path volumes into `apiServer.extraVolumes`, unless one
/// of the same name or host path is already there.
fn carry_volumes(api: &mut Mapping, volumes: Vec<Mapping>, notes: &mut Vec<String>) {
    if volumes.is_empty() {
        return;
    }
    let existing = api.entry(key("extraVolumes")).or_insert_with(|| Value::Sequence(Vec::new()));
    if !existing.is_sequence() {
        *existing = Value::Sequence(Vec::new());
    }
    let seq = existing.as_sequence_mut().expect("just made a sequence");
    for vol in volumes {
        let same = |e: &Value| e.get("name") == vol.get("name") || e.get("hostPath") == vol.get("hostPath");
        if seq.iter().any(same) {
            continue;
        }
        notes.push(format!(
            "apiServer.extraVolumes: {} ({}) carried from the old kube-apiserver manifest",
            vol.get("name").map(scalar).unwrap_or_default(),
            vol.get("hostPath").map(scalar).unwrap_or_default()
        ));
        seq.push(Value::Mapping(vol));
    }
}

/// InitConfiguration: the backed-up one (if any) with this node's identity, and without its
/// bootstrap tokens and certificate key.
fn init_configuration(
    docs: &[Value],
    api_version: &str,
    input: &DeriveInput<'_>,
    notes: &mut Vec<String>,
) -> Mapping {
    let mut init = docs
        .iter()
        .find(|d| kind_of(d) == Some("InitConfiguration"))
        .and_then(|d| d.as_mapping().cloned())
        .unwrap_or_default();
    init.insert(key("apiVersion"), key(api_version));
    init.insert(key("kind"), key("InitConfiguration"));
    for dropped in ["bootstrapTokens", "certificateKey"] {
        if init.remove(dropped).is_some() {
            notes.push(format!(
                "InitConfiguration.{dropped} dropped (kdr creates its own short-lived join token)"
            ));
        }
    }
    let lep = child(&mut init, "localAPIEndpoint");
    lep.insert(key("advertiseAddress"), key(&input.this_node.address));
    lep.insert(key("bindPort"), Value::Number(input.bind_port.into()));
    let reg = child(&mut init, "nodeRegistration");
    reg.insert(key("name"), key(&input.this_node.name));
    if let Some(cri) = input.cri_socket {
        reg.insert(key("criSocket"), key(cri));
    }
    init
}

/// `m` with apiVersion and kind first, as kubeadm's own files have them.
fn head_first(m: Mapping) -> Mapping {
    let mut out = Mapping::new();
    for k in ["apiVersion", "kind"] {
        if let Some(v) = m.get(k) {
            out.insert(key(k), v.clone());
        }
    }
    for (k, v) in m {
        if !matches!(k.as_str(), Some("apiVersion" | "kind")) {
            out.insert(k, v);
        }
    }
    out
}

/// The output documents: InitConfiguration, ClusterConfiguration, then the kept kinds of the
/// input (the rest are dropped, with a note).
fn render(init: Mapping, cluster: Mapping, docs: &[Value], notes: &mut Vec<String>) -> Result<String> {
    let mut out_docs = vec![Value::Mapping(head_first(init)), Value::Mapping(cluster)];
    for d in docs {
        match kind_of(d) {
            Some("ClusterConfiguration" | "InitConfiguration") => {}
            Some(k) if KEPT_KINDS.contains(&k) => out_docs.push(d.clone()),
            other => notes.push(format!(
                "document of kind {} dropped (kubeadm init does not take it)",
                other.unwrap_or("(none)")
            )),
        }
    }
    let mut yaml = String::from(
        "# Generated by kdr for a promotion: derived from the backed-up ClusterConfiguration.\n",
    );
    for (i, d) in out_docs.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&serde_yaml_ng::to_string(d).map_err(|e| bad(format!("cannot render YAML: {e}")))?);
    }
    Ok(yaml)
}

/// The `controlPlaneEndpoint` of the ClusterConfiguration in `yaml` (kubeadm config documents),
/// if set. Workers and the cluster's kubeconfigs use it instead of the node's own address.
pub fn control_plane_endpoint_of(yaml: &str) -> Option<String> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|d| Value::deserialize(d).ok())
        .find(|d| d.get("kind").and_then(Value::as_str) == Some("ClusterConfiguration"))
        .and_then(|d| d.get("controlPlaneEndpoint").and_then(Value::as_str).map(str::to_owned))
        .filter(|e| !e.is_empty())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::control_plane) const CLUSTER_V1BETA3: &str = r#"
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.29.15
clusterName: prod
controlPlaneEndpoint: 192.168.30.200:6443
imageRepository: registry.k8s.io
etcd:
  local:
    dataDir: /var/lib/etcd
    serverCertSANs: [192.168.30.200, etcd.internal]
    extraArgs:
      listen-metrics-urls: http://192.168.30.200:2381
      quota-backend-bytes: "8589934592"
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
apiServer:
  certSANs: [master-1, 192.168.30.200, k8s.example.com]
  extraArgs:
    audit-log-maxage: "30"
  timeoutForControlPlane: 4m0s
featureGates:
  SomeFutureGate: true
someFieldKubeadmAddsLater:
  nested: [1, 2, 3]
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
localAPIEndpoint:
  advertiseAddress: 192.168.30.200
  bindPort: 6443
nodeRegistration:
  name: master-1
  criSocket: unix:///run/containerd/containerd.sock
  taints:
  - key: node-role.kubernetes.io/control-plane
    effect: NoSchedule
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"#;

    pub(in crate::control_plane) const OLD_MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --advertise-address=192.168.30.200
    - --allow-privileged=true
    - --authorization-mode=Node,RBAC
    - --enable-admission-plugins=NodeRestriction,PodSecurity,EventRateLimit
    - --admission-control-config-file=/etc/kubernetes/admission/config.yaml
    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml
    - --etcd-servers=https://127.0.0.1:2379
    - --audit-log-maxage=7
    - --oidc-issuer-url=https://master-1.example.com:8443
    - --service-cluster-ip-range=10.96.0.0/12
    - --secure-port=6443
    volumeMounts:
    - {name: k8s-certs, mountPath: /etc/kubernetes/pki, readOnly: true}
    - {name: enc, mountPath: /etc/kubernetes/enc, readOnly: true}
    - {name: admission, mountPath: /etc/kubernetes/admission, readOnly: true}
  volumes:
  - {name: k8s-certs, hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}}
  - {name: enc, hostPath: {path: /etc/kubernetes/enc, type: DirectoryOrCreate}}
  - {name: admission, hostPath: {path: /etc/kubernetes/admission}}
"#;

    pub(in crate::control_plane) fn nodes() -> (NodeIdentity, NodeIdentity) {
        (
            NodeIdentity { name: "master-2".into(), address: "192.168.30.202".into() },
            NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() },
        )
    }

    fn derive(cc: &str, old: Option<&str>, policy: &EndpointPolicy) -> DerivedConfig {
        let (this, prev) = nodes();
        derive_kubeadm_config(&DeriveInput {
            cluster_configuration: cc,
            old_apiserver_manifest: old,
            this_node: &this,
            old_primary: &prev,
            bind_port: 6443,
            etcd_data_dir: "/var/lib/etcd",
            cri_socket: None,
            endpoint: policy,
        })
        .unwrap()
    }

    fn docs(yaml: &str) -> Vec<Value> {
        serde_yaml_ng::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).unwrap()).collect()
    }

    #[test]
    fn derives_identity_keeps_unknown_fields_and_carries_custom_flags() {
        let d = derive(CLUSTER_V1BETA3, Some(OLD_MANIFEST), &EndpointPolicy::Auto);
        let docs = docs(&d.yaml);
        assert_eq!(docs.len(), 3, "{}", d.yaml);
        let (init, cluster, kubelet) = (&docs[0], &docs[1], &docs[2]);

        assert_eq!(init["kind"].as_str(), Some("InitConfiguration"));
        assert_eq!(init["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta3"));
        assert_eq!(init["localAPIEndpoint"]["advertiseAddress"].as_str(), Some("192.168.30.202"));
        assert_eq!(init["nodeRegistration"]["name"].as_str(), Some("master-2"));
        assert_eq!(
            init["nodeRegistration"]["criSocket"].as_str(),
            Some("unix:///run/containerd/containerd.sock")
        );
        assert_eq!(init["nodeRegistration"]["taints"][0]["effect"].as_str(), Some("NoSchedule"));
        assert!(init.get("bootstrapTokens").is_none(), "an old token must not be reused");

        assert_eq!(cluster["controlPlaneEndpoint"].as_str(), Some("192.168.30.202:6443"));
        assert_eq!(d.endpoint, "192.168.30.202:6443");
        assert_eq!(cluster["etcd"]["local"]["dataDir"].as_str(), Some("/var/lib/etcd"));
        assert_eq!(
            cluster["etcd"]["local"]["extraArgs"]["listen-metrics-urls"].as_str(),
            Some("http://192.168.30.202:2381")
        );
        assert_eq!(cluster["etcd"]["local"]["extraArgs"]["quota-backend-bytes"].as_str(), Some("8589934592"));
        assert_eq!(cluster["etcd"]["local"]["serverCertSANs"][0].as_str(), Some("192.168.30.202"));
        assert_eq!(cluster["etcd"]["local"]["serverCertSANs"][1].as_str(), Some("etcd.internal"));
        let sans: Vec<&str> = cluster["apiServer"]["certSANs"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(sans, ["master-2", "192.168.30.202", "k8s.example.com"]);
        // Unknown and untouched fields survive.
        assert_eq!(cluster["someFieldKubeadmAddsLater"]["nested"][2].as_u64(), Some(3));
        assert_eq!(cluster["featureGates"]["SomeFutureGate"].as_bool(), Some(true));
        assert_eq!(cluster["apiServer"]["timeoutForControlPlane"].as_str(), Some("4m0s"));
        assert_eq!(cluster["networking"]["podSubnet"].as_str(), Some("10.244.0.0/16"));
        assert_eq!(kubelet["cgroupDriver"].as_str(), Some("systemd"));

        let args = &cluster["apiServer"]["extraArgs"];
        // The configuration's own value wins over the old manifest's.
        assert_eq!(args["audit-log-maxage"].as_str(), Some("30"));
        assert_eq!(args["encryption-provider-config"].as_str(), Some("/etc/kubernetes/enc/enc.yaml"));
        assert_eq!(
            args["admission-control-config-file"].as_str(),
            Some("/etc/kubernetes/admission/config.yaml")
        );
        assert_eq!(
            args["enable-admission-plugins"].as_str(),
            Some("NodeRestriction,PodSecurity,EventRateLimit")
        );
        assert_eq!(args["oidc-issuer-url"].as_str(), Some("https://master-1.example.com:8443"));
        for generated in
            ["advertise-address", "etcd-servers", "secure-port", "authorization-mode", "allow-privileged"]
        {
            assert!(args.get(generated).is_none(), "{generated} is kubeadm's to generate");
        }
        let vols: Vec<&str> = cluster["apiServer"]["extraVolumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(vols, ["enc", "admission"]);
        assert_eq!(
            cluster["apiServer"]["extraVolumes"][0]["mountPath"].as_str(),
            Some("/etc/kubernetes/enc")
        );
        assert_eq!(cluster["apiServer"]["extraVolumes"][0]["readOnly"].as_bool(), Some(true));
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("controlPlaneEndpoint: 192.168.30.200:6443 -> 192.168.30.202:6443"))
        );
        assert!(d.notes.iter().any(|n| n.contains("bootstrapTokens dropped")));
    }

    #[test]
    fn a_dns_endpoint_is_kept_and_policies_apply() {
        let cc = CLUSTER_V1BETA3.replace(
            "controlPlaneEndpoint: 192.168.30.200:6443",
            "controlPlaneEndpoint: k8s.example.com:6443",
        );
        let d = derive(&cc, None, &EndpointPolicy::Auto);
        assert_eq!(docs(&d.yaml)[1]["controlPlaneEndpoint"].as_str(), Some("k8s.example.com:6443"));
        assert_eq!(d.endpoint, "k8s.example.com:6443");
        assert!(d.notes.iter().any(|n| n.contains("kept")), "{:?}", d.notes);
        let d = derive(&cc, None, &EndpointPolicy::ThisNode);
        assert_eq!(d.endpoint, "192.168.30.202:6443");
        let d = derive(&cc, None, &EndpointPolicy::Set("vip.example.com:443".into()));
        assert_eq!(docs(&d.yaml)[1]["controlPlaneEndpoint"].as_str(), Some("vip.example.com:443"));
        let d = derive(CLUSTER_V1BETA3, None, &EndpointPolicy::Keep);
        assert_eq!(d.endpoint, "192.168.30.200:6443");
        // No endpoint at all: workers use this node's advertise address.
        let bare = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n";
        let d = derive(bare, None, &EndpointPolicy::Auto);
        assert_eq!(d.endpoint, "192.168.30.202:6443");
        assert!(docs(&d.yaml)[1].get("controlPlaneEndpoint").is_none());
    }

    #[test]
    fn v1beta4_list_shaped_extra_args() {
        let cc = r#"
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
apiServer:
  extraArgs:
  - name: audit-log-maxage
    value: "30"
  - name: bind-address
    value: 192.168.30.200
"#;
        let d = derive(cc, Some(OLD_MANIFEST), &EndpointPolicy::Auto);
        let cluster = &docs(&d.yaml)[1];
        let args = cluster["apiServer"]["extraArgs"].as_sequence().unwrap();
        let get = |n: &str| {
            args.iter().find(|a| a["name"].as_str() == Some(n)).map(|a| a["value"].as_str().unwrap())
        };
        assert_eq!(get("bind-address"), Some("192.168.30.202"));
        assert_eq!(get("audit-log-maxage"), Some("30"));
        assert_eq!(get("encryption-provider-config"), Some("/etc/kubernetes/enc/enc.yaml"));
        assert_eq!(docs(&d.yaml)[0]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
    }

    #[test]
    fn bad_inputs_name_the_key_and_the_fix() {
        let (this, prev) = nodes();
        let run = |cc: &str| {
            derive_kubeadm_config(&DeriveInput {
                cluster_configuration: cc,
                old_apiserver_manifest: None,
                this_node: &this,
                old_primary: &prev,
                bind_port: 6443,
                etcd_data_dir: "/var/lib/etcd",
                cri_socket: None,
                endpoint: &EndpointPolicy::Auto,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(run("kind: InitConfiguration\n").contains("no document of kind ClusterConfiguration"));
        assert!(
            run("apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\n")
                .contains("kubeadm config migrate")
        );
        assert!(
            run("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\netcd:\n  external:\n    endpoints: [x]\n")
                .contains("stacked")
        );
        assert!(run(": : :\n  - [").contains("kubeadm.cluster_configuration"));
        assert!(EndpointPolicy::parse("two words").is_err());
    }

    #[test]
    fn endpoint_of_a_configuration() {
        assert_eq!(control_plane_endpoint_of(CLUSTER_V1BETA3).as_deref(), Some("192.168.30.200:6443"));
        assert_eq!(
            control_plane_endpoint_of("kind: ClusterConfiguration\ncontrolPlaneEndpoint: \"\"\n"),
            None
        );
        assert_eq!(control_plane_endpoint_of("kind: InitConfiguration\n"), None);
    }

    #[test]
    fn host_replacement_respects_boundaries() {
        assert_eq!(replace_host("https://10.0.0.1:2379", "10.0.0.1", "10.0.0.9"), "https://10.0.0.9:2379");
        assert_eq!(replace_host("10.0.0.10,10.0.0.1", "10.0.0.1", "X"), "10.0.0.10,X");
        assert_eq!(replace_host("master-1.example.com", "master-1", "master-2"), "master-1.example.com");
        assert_eq!(replace_host("master-10", "master-1", "master-2"), "master-10");
        assert_eq!(replace_host("master-1", "master-1", "master-2"), "master-2");
        assert_eq!(replace_host("at master-1.", "master-1", "master-2"), "at master-2.");
    }
}
