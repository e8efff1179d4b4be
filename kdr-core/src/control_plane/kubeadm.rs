//! [`KubeadmInit`]: [`ControlPlaneInit`] with `kubeadm init`, on a configuration derived by
//! [`derive_kubeadm_config`] (see [`kubeadm_config`](super::kubeadm_config) for what it changes
//! and keeps), or the operator's own file.
//!
//! Every command runs through a [`NodeRemote`]: [`LocalNodeRemote`](crate::remote::local::LocalNodeRemote)
//! on the standby itself, or `SshNodeRemote` to drive it from elsewhere.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

pub use super::kubeadm_config::{
    DeriveInput, DerivedConfig, EndpointPolicy, control_plane_endpoint_of, derive_kubeadm_config,
};
use super::kubeadm_config::{child, key};
use super::{
    ControlPlaneInit, InitPlan, InitReport, InitState, JoinCommand, NodeIdentity, generate_bootstrap_token,
};
use crate::error::{Error, Result};
use crate::remote::{NodeRemote, RemoteCommand, shell_quote};

/// The kubeadm preflight check that a restored etcd data dir trips (it is meant to be there).
pub const ETCD_DIR_PREFLIGHT: &str = "DirAvailable--var-lib-etcd";

/// The files `kubeadm init` writes that tell whether a node runs a control plane.
pub const INIT_MARKERS: [&str; 5] = [
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/manifests/kube-apiserver.yaml",
    "/etc/kubernetes/manifests/kube-controller-manager.yaml",
    "/etc/kubernetes/manifests/kube-scheduler.yaml",
    "/etc/kubernetes/manifests/etcd.yaml",
];

/// The `[kubeadm]` section of the configuration. Every key has a default (see
/// `examples/kdr.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeadmSettings {
    /// The kubeadm binary on the node.
    pub kubeadm: String,
    /// The operator's own kubeadm configuration, used as it is instead of deriving one.
    pub config_file: Option<PathBuf>,
    /// The backed-up ClusterConfiguration (as restored from the bundle) to derive from.
    pub cluster_configuration: PathBuf,
    /// The old primary's `kube-apiserver` static pod manifest (as restored from the bundle), whose
    /// custom flags are carried over. Not found: nothing is carried, and the plan says so.
    pub old_apiserver_manifest: Option<PathBuf>,
    /// Where the derived configuration is written on the node (mode 0600).
    pub rendered_config: PathBuf,
    /// The API server's port on this node.
    pub bind_port: u16,
    /// The etcd data dir the restore step filled (`etcd.local.dataDir`).
    pub etcd_data_dir: PathBuf,
    /// The CRI socket (`nodeRegistration.criSocket`); unset keeps the backed-up one, or lets
    /// kubeadm detect it.
    pub cri_socket: Option<String>,
    /// `"auto"`, `"keep"`, `"this-node"` or a `host:port`; see [`EndpointPolicy`].
    pub control_plane_endpoint: EndpointPolicy,
    /// Preflight errors to ignore. `DirAvailable--var-lib-etcd` is always added.
    pub ignore_preflight_errors: Vec<String>,
    /// Where the admin kubeconfig is installed for kubectl (mode 0600).
    pub admin_kubeconfig: PathBuf,
    /// How long `kubeadm init` (or, on the same host, the API server's return) may take.
    #[serde(with = "crate::serde_duration")]
    pub init_timeout: Duration,
    /// How long each other command may take.
    #[serde(with = "crate::serde_duration")]
    pub command_timeout: Duration,
    /// How long the workers' bootstrap token stays valid.
    #[serde(with = "crate::serde_duration")]
    pub join_token_ttl: Duration,
}

impl Default for KubeadmSettings {
    fn default() -> Self {
        Self {
            kubeadm: "kubeadm".into(),
            config_file: None,
            cluster_configuration: PathBuf::from(
                "/var/lib/kdr/promotion/bundle/etc/kubernetes/kubeadm-config.yaml",
            ),
            old_apiserver_manifest: Some(PathBuf::from(
                "/var/lib/kdr/promotion/bundle/etc/kubernetes/manifests/kube-apiserver.yaml",
            )),
            rendered_config: PathBuf::from("/etc/kubernetes/kdr-kubeadm-init.yaml"),
            bind_port: 6443,
            etcd_data_dir: PathBuf::from("/var/lib/etcd"),
            cri_socket: None,
            control_plane_endpoint: EndpointPolicy::Auto,
            ignore_preflight_errors: vec![ETCD_DIR_PREFLIGHT.into()],
            admin_kubeconfig: PathBuf::from("/root/.kube/config"),
            init_timeout: Duration::from_secs(600),
            command_timeout: Duration::from_secs(120),
            join_token_ttl: Duration::from_secs(7200),
        }
    }
}

/// [`ControlPlaneInit`] with kubeadm. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct KubeadmInit {
    settings: KubeadmSettings,
    this_node: NodeIdentity,
    old_primary: NodeIdentity,
    remote: Arc<dyn NodeRemote>,
    same_host: bool,
}

/// Exit code the read command uses for "file absent", to tell it from a failure.
const ABSENT: i32 = 3;

impl KubeadmInit {
    /// Initialises `this_node` (reached through `remote`) to replace `old_primary`.
    pub fn new(
        settings: KubeadmSettings,
        this_node: NodeIdentity,
        old_primary: NodeIdentity,
        remote: Arc<dyn NodeRemote>,
    ) -> Self {
        Self { settings, this_node, old_primary, remote, same_host: false }
    }

    /// Same-host mode (seeds 001/004): the restore put the old manifests and kubeconfigs back, so
    /// "init" is restarting kubelet and waiting for the API server, not `kubeadm init`.
    pub fn same_host(mut self, same_host: bool) -> Self {
        self.same_host = same_host;
        self
    }

    /// The endpoint a configuration file on the node sets, else this node's address and port.
    async fn endpoint_in(&self, file: &std::path::Path) -> String {
        let own = format!("{}:{}", self.this_node.address, self.settings.bind_port);
        match self.read(file).await {
            Ok(Some(text)) => control_plane_endpoint_of(&text).unwrap_or(own),
            _ => own,
        }
    }

    fn cmd(&self, c: impl Into<String>) -> RemoteCommand {
        RemoteCommand::new(c, self.settings.command_timeout).with_sudo()
    }

    fn host(&self) -> &str {
        self.remote.node()
    }

    async fn run_checked(&self, c: &RemoteCommand) -> Result<String> {
        Ok(self.remote.run(c).await?.check(self.host(), c)?.stdout)
    }

    /// Reads a file on the node; `None` if it does not exist.
    async fn read(&self, path: &std::path::Path) -> Result<Option<String>> {
        let q = shell_quote(&path.to_string_lossy());
        let c = self.cmd(format!("[ -f {q} ] || exit {ABSENT}; cat {q}"));
        let out = self.remote.run(&c).await?;
        if out.exit_code == Some(ABSENT) {
            return Ok(None);
        }
        Ok(Some(out.check(self.host(), &c)?.stdout))
    }

    fn preflight_flag(&self) -> String {
        let mut ignores: Vec<&str> = vec![ETCD_DIR_PREFLIGHT];
        for i in &self.settings.ignore_preflight_errors {
            if !ignores.contains(&i.as_str()) {
                ignores.push(i);
            }
        }
        format!("--ignore-preflight-errors={}", ignores.join(","))
    }

    fn init_command(&self, config: &str) -> String {
        format!("{} init --config {} {}", self.settings.kubeadm, shell_quote(config), self.preflight_flag())
    }

    fn admin_command(&self) -> String {
        format!(
            "install -D -m 0600 /etc/kubernetes/admin.conf {}",
            shell_quote(&self.settings.admin_kubeconfig.to_string_lossy())
        )
    }

    fn token_command(&self) -> String {
        // The token arrives on stdin (in an InitConfiguration); kubeadm prints it back inside the
        // join command, so the shell replaces it before anything leaves the node.
        format!(
            "out=$({} token create --config /dev/stdin --print-join-command) || exit $?; \
             printf '%s\\n' \"$out\" | sed -E 's/--token [^ ]+/--token REDACTED/'",
            self.settings.kubeadm
        )
    }

    fn restart_command(&self) -> &'static str {
        "systemctl restart kubelet"
    }

    fn readyz_command(&self) -> &'static str {
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw=/readyz"
    }

    /// The configuration to run with: the operator's file, or one derived from the bundle.
    async fn config(&self) -> Result<(String, Option<DerivedConfig>)> {
        if let Some(f) = &self.settings.config_file {
            return Ok((f.to_string_lossy().into_owned(), None));
        }
        let cc_path = &self.settings.cluster_configuration;
        let cc = self.read(cc_path).await?.ok_or_else(|| {
            Error::config(
                "kubeadm.cluster_configuration",
                format!(
                    "{} not found on {}: the restored bundle holds no ClusterConfiguration there; point the key at \
                     it, or set kubeadm.config_file to your kubeadm configuration",
                    cc_path.display(),
                    self.host()
                ),
            )
        })?;
        let old = match &self.settings.old_apiserver_manifest {
            Some(p) => self.read(p).await?,
            None => None,
        };
        let data_dir = self.settings.etcd_data_dir.to_string_lossy();
        let derived = derive_kubeadm_config(&DeriveInput {
            cluster_configuration: &cc,
            old_apiserver_manifest: old.as_deref(),
            this_node: &self.this_node,
            old_primary: &self.old_primary,
            bind_port: self.settings.bind_port,
            etcd_data_dir: &data_dir,
            cri_socket: self.settings.cri_socket.as_deref(),
            endpoint: &self.settings.control_plane_endpoint,
        })?;
        Ok((self.settings.rendered_config.to_string_lossy().into_owned(), Some(derived)))
    }

    fn write_command(&self, path: &str) -> String {
        let q = shell_quote(path);
        let tmp = shell_quote(&format!("{path}.kdr-tmp"));
        format!("umask 077; mkdir -p \"$(dirname {q})\" && cat > {tmp} && mv {tmp} {q}")
    }

    fn token_config(&self, api_version: &str, token: &str) -> String {
        let ttl = humantime::format_duration(self.settings.join_token_ttl).to_string().replace(' ', "");
        let mut bt = Mapping::new();
        bt.insert(key("token"), key(token));
        bt.insert(key("ttl"), key(&ttl));
        bt.insert(key("description"), key("kdr promotion: workers rejoin the new control plane"));
        bt.insert(key("usages"), Value::Sequence(vec![key("signing"), key("authentication")]));
        bt.insert(
            key("groups"),
            Value::Sequence(vec![key("system:bootstrappers:kubeadm:default-node-token")]),
        );
        let mut init = Mapping::new();
        init.insert(key("apiVersion"), key(api_version));
        init.insert(key("kind"), key("InitConfiguration"));
        init.insert(key("bootstrapTokens"), Value::Sequence(vec![Value::Mapping(bt)]));
        let lep = child(&mut init, "localAPIEndpoint");
        lep.insert(key("advertiseAddress"), key(&self.this_node.address));
        lep.insert(key("bindPort"), Value::Number(self.settings.bind_port.into()));
        let reg = child(&mut init, "nodeRegistration");
        reg.insert(key("name"), key(&self.this_node.name));
        if let Some(cri) = &self.settings.cri_socket {
            reg.insert(key("criSocket"), key(cri));
        }
        serde_yaml_ng::to_string(&Value::Mapping(init)).unwrap_or_default()
    }

    async fn wait_ready(&self) -> Result<()> {
        let c = RemoteCommand::new(self.readyz_command(), self.settings.command_timeout).with_sudo();
        let poll = async {
            loop {
                match self.remote.run(&c).await {
                    Ok(out) if out.success() => return,
                    Ok(_) | Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
                }
            }
        };
        tokio::time::timeout(self.settings.init_timeout, poll).await.map_err(|_| Error::Timeout {
            what: format!("the API server on {} becoming ready after kubelet restarted", self.host()),
            after: self.settings.init_timeout,
        })
    }
}

#[async_trait]
impl ControlPlaneInit for KubeadmInit {
    async fn plan(&self) -> Result<InitPlan> {
        if self.same_host {
            return Ok(InitPlan {
                config_source: "the restored static pod manifests (same-host restore)".into(),
                endpoint: self.endpoint_in(&self.settings.cluster_configuration).await,
                commands: vec![
                    self.restart_command().into(),
                    format!("{} (polled until it succeeds)", self.readyz_command()),
                    self.admin_command(),
                ],
                notes: vec![],
            });
        }
        if self.settings.config_file.is_none()
            && self.read(&self.settings.cluster_configuration).await?.is_none()
        {
            // A fresh standby: the restore step has not staged the bundle yet. Show what will
            // happen; the derivation itself is shown by a dry run after the restore.
            let path = self.settings.rendered_config.to_string_lossy().into_owned();
            return Ok(InitPlan {
                config_source: format!(
                    "to be derived from {} once the restore step stages the bundle",
                    self.settings.cluster_configuration.display()
                ),
                endpoint: format!("{}:{}", self.this_node.address, self.settings.bind_port),
                commands: vec![
                    format!("{}  (stdin: the derived configuration)", self.write_command(&path)),
                    self.init_command(&path),
                    self.admin_command(),
                    format!("{}  (stdin: a fresh bootstrap token, never shown)", self.token_command()),
                ],
                notes: vec![format!(
                    "the backed-up ClusterConfiguration is not staged yet ({} is absent): the endpoint shown assumes \
                     controlPlaneEndpoint names the old primary (kubeadm.control_plane_endpoint = \"auto\")",
                    self.settings.cluster_configuration.display()
                )],
            });
        }
        let (path, derived) = self.config().await?;
        let mut commands = Vec::new();
        let (source, endpoint, notes) = match derived {
            Some(d) => {
                commands.push(format!("{}  (stdin: the derived configuration)", self.write_command(&path)));
                (
                    format!("derived from {}", self.settings.cluster_configuration.display()),
                    d.endpoint,
                    d.notes,
                )
            }
            None => (
                format!("the operator's file {path}, as it is"),
                self.endpoint_in(std::path::Path::new(&path)).await,
                vec![],
            ),
        };
        commands.push(self.init_command(&path));
        commands.push(self.admin_command());
        commands.push(format!("{}  (stdin: a fresh bootstrap token, never shown)", self.token_command()));
        Ok(InitPlan { config_source: source, endpoint, commands, notes })
    }

    async fn state(&self) -> Result<InitState> {
        let list = INIT_MARKERS.map(shell_quote).join(" ");
        let c = self.cmd(format!("for f in {list}; do [ -e \"$f\" ] && echo \"$f\"; done; true"));
        let out = self.run_checked(&c).await?;
        let found: Vec<String> =
            out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        let missing: Vec<String> =
            INIT_MARKERS.iter().filter(|m| !found.iter().any(|f| f == *m)).map(|m| (*m).to_owned()).collect();
        Ok(if found.is_empty() {
            InitState::NotInitialized
        } else if missing.is_empty() {
            InitState::Initialized
        } else {
            InitState::Partial { found, missing }
        })
    }

    async fn init(&self) -> Result<InitReport> {
        let mut commands = Vec::new();
        if self.same_host {
            let restart = self.cmd(self.restart_command());
            self.run_checked(&restart).await?;
            commands.push(restart.command);
            self.wait_ready().await?;
            commands.push(self.readyz_command().into());
            let admin = self.cmd(self.admin_command());
            self.run_checked(&admin).await?;
            commands.push(admin.command);
            return Ok(InitReport {
                config_path: None,
                endpoint: self.endpoint_in(&self.settings.cluster_configuration).await,
                admin_kubeconfig: self.settings.admin_kubeconfig.to_string_lossy().into_owned(),
                commands,
                notes: vec![],
            });
        }
        match self.state().await? {
            InitState::NotInitialized => {}
            other => {
                return Err(Error::refused(format!(
                    "{} already has control-plane files ({other:?}); kdr will not run kubeadm init over them, nor \
                     `kubeadm reset` (it deletes the etcd data dir). Move the listed files aside and run again",
                    self.host()
                )));
            }
        }
        let (path, derived) = self.config().await?;
        let mut notes = Vec::new();
        let mut endpoint = match &derived {
            None => self.endpoint_in(std::path::Path::new(&path)).await,
            Some(_) => String::new(),
        };
        if let Some(d) = derived {
            let w = self.cmd(self.write_command(&path));
            self.remote.run_with_stdin(&w, d.yaml.as_bytes()).await?.check(self.host(), &w)?;
            commands.push(w.command);
            notes = d.notes;
            endpoint = d.endpoint;
        }
        let init = RemoteCommand::new(self.init_command(&path), self.settings.init_timeout).with_sudo();
        tracing::info!(node = %self.host(), command = %init.command, "initialising the control plane");
        self.run_checked(&init).await?;
        commands.push(init.command);
        let admin = self.cmd(self.admin_command());
        self.run_checked(&admin).await?;
        commands.push(admin.command);
        Ok(InitReport {
            config_path: Some(path),
            endpoint,
            admin_kubeconfig: self.settings.admin_kubeconfig.to_string_lossy().into_owned(),
            commands,
            notes,
        })
    }

    async fn join_command(&self) -> Result<JoinCommand> {
        let api_version = match &self.settings.config_file {
            Some(_) => "kubeadm.k8s.io/v1beta3".to_owned(),
            None => self
                .config()
                .await
                .ok()
                .and_then(|(_, d)| d.map(|d| d.api_version))
                .unwrap_or_else(|| "kubeadm.k8s.io/v1beta3".into()),
        };
        let token = generate_bootstrap_token();
        let c = self.cmd(self.token_command());
        let out = self.remote.run_with_stdin(&c, self.token_config(&api_version, &token).as_bytes()).await?;
        // The output was redacted on the node; it is still never logged here.
        let out = out.check(self.host(), &c)?;
        super::join_command_from_redacted(&out.stdout, &token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::kubeadm_config::tests::{CLUSTER_V1BETA3, OLD_MANIFEST, nodes};
    use crate::testing::remote::{RecordingNodeRemote, Reply};

    fn init_with(remote: Arc<RecordingNodeRemote>) -> KubeadmInit {
        let (this, prev) = nodes();
        KubeadmInit::new(KubeadmSettings::default(), this, prev, remote)
    }

    #[tokio::test]
    async fn init_sequence_and_join_token_stays_off_command_lines() {
        let fake = Arc::new(RecordingNodeRemote::new("master-2"));
        fake.respond("kubeadm-config.yaml", Reply::exit(0, CLUSTER_V1BETA3, ""))
            .respond("manifests/kube-apiserver.yaml ]", Reply::exit(0, OLD_MANIFEST, ""))
            .respond("for f in", Reply::exit(0, "", ""))
            .respond(
                "token create",
                Reply::exit(
                    0,
                    &format!("kubeadm join 192.168.30.202:6443 --token REDACTED --discovery-token-ca-cert-hash sha256:{}\n", "ab".repeat(32)),
                    "",
                ),
            );
        let init = init_with(fake.clone());
        let report = init.init().await.unwrap();
        assert_eq!(report.endpoint, "192.168.30.202:6443");
        let join = init.join_command().await.unwrap();
        assert_eq!(join.api_server(), "192.168.30.202:6443");
        assert!(join.redacted().ends_with(&"ab".repeat(32)));

        let calls = fake.recorded();
        let cmds: Vec<&str> = calls.iter().map(|c| c.command.command.as_str()).collect();
        assert!(cmds[0].starts_with("for f in"), "state checked first: {cmds:?}");
        assert!(cmds[1].contains("kubeadm-config.yaml"));
        assert!(cmds[2].contains("kube-apiserver.yaml"));
        assert!(cmds[3].contains("cat > /etc/kubernetes/kdr-kubeadm-init.yaml.kdr-tmp"));
        assert_eq!(
            cmds[4],
            "kubeadm init --config /etc/kubernetes/kdr-kubeadm-init.yaml --ignore-preflight-errors=DirAvailable--var-lib-etcd"
        );
        assert_eq!(cmds[5], "install -D -m 0600 /etc/kubernetes/admin.conf /root/.kube/config");
        assert!(cmds.last().unwrap().contains("token create --config /dev/stdin --print-join-command"));
        assert!(calls.iter().all(|c| c.command.sudo));
        // The rendered config went over stdin, and the token only ever over stdin.
        let rendered = String::from_utf8(calls[3].stdin.clone().unwrap()).unwrap();
        assert!(rendered.contains("advertiseAddress: 192.168.30.202"));
        let token_cfg = String::from_utf8(calls.last().unwrap().stdin.clone().unwrap()).unwrap();
        let token = serde_yaml_ng::from_str::<Value>(&token_cfg).unwrap()["bootstrapTokens"][0]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            join.join_configuration("kubeadm.k8s.io/v1beta3", "w").contains(&token),
            "the join uses our token"
        );
        assert!(token_cfg.contains("ttl: 2h"));
        assert!(calls.iter().all(|c| !c.command.command.contains(&token)));
    }

    #[tokio::test]
    async fn init_refuses_over_existing_control_plane_files() {
        let fake = Arc::new(RecordingNodeRemote::new("master-2"));
        fake.respond("for f in", Reply::exit(0, "/etc/kubernetes/admin.conf\n", ""));
        let init = init_with(fake.clone());
        assert!(matches!(init.state().await.unwrap(), InitState::Partial { .. }));
        let err = init.init().await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err}");
        assert!(fake.commands().iter().all(|c| !c.contains("kubeadm")), "{:?}", fake.commands());
    }

    #[tokio::test]
    async fn unstaged_bundle_plans_ahead_but_init_is_a_config_error_naming_the_key() {
        let fake = Arc::new(RecordingNodeRemote::new("master-2"));
        fake.respond("kubeadm-config.yaml", Reply::exit(ABSENT, "", ""));
        let init = init_with(fake.clone());
        let plan = init.plan().await.unwrap();
        assert!(plan.config_source.contains("once the restore step stages the bundle"), "{plan:?}");
        assert!(plan.commands.iter().any(|c| c.starts_with("kubeadm init --config")));
        assert!(fake.commands().iter().all(|c| !c.starts_with("kubeadm ")), "planning runs nothing");
        let err = init.init().await.unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "kubeadm.cluster_configuration"), "{err}");
    }

    #[test]
    fn settings_parse_from_toml_with_defaults() {
        let s: KubeadmSettings =
            toml::from_str("control_plane_endpoint = \"keep\"\ninit_timeout = \"15m\"\n").unwrap();
        assert_eq!(s.control_plane_endpoint, EndpointPolicy::Keep);
        assert_eq!(s.init_timeout, Duration::from_secs(900));
        assert_eq!(s.bind_port, 6443);
        assert!(toml::from_str::<KubeadmSettings>("no_such_key = 1\n").is_err());
    }

    #[tokio::test]
    async fn same_host_restarts_kubelet_and_waits_for_the_api_server_instead_of_init() {
        let fake = Arc::new(RecordingNodeRemote::new("master-1"));
        fake.respond("kubeadm-config.yaml", Reply::exit(0, CLUSTER_V1BETA3, ""))
            .respond("get --raw=/readyz", Reply::exit(1, "", "connection refused"));
        let node = NodeIdentity { name: "master-1".into(), address: "192.168.30.200".into() };
        let settings = KubeadmSettings { init_timeout: Duration::from_millis(300), ..Default::default() };
        let init = KubeadmInit::new(settings, node.clone(), node, fake.clone()).same_host(true);
        assert!(matches!(init.init().await, Err(Error::Timeout { .. })), "an API server that never answers");
        fake.respond("get --raw=/readyz", Reply::exit(0, "ok", ""));
        let report = init.init().await.unwrap();
        assert_eq!(report.endpoint, "192.168.30.200:6443", "from the restored ClusterConfiguration");
        let cmds = fake.commands();
        assert!(
            cmds.iter().all(|c| !c.starts_with("kubeadm ")),
            "no kubeadm init on the same host: {cmds:?}"
        );
        assert_eq!(cmds.iter().filter(|c| *c == "systemctl restart kubelet").count(), 2);
        assert!(cmds.last().unwrap().starts_with("[ -f "), "{cmds:?}");
        assert!(cmds.iter().any(|c| c == "install -D -m 0600 /etc/kubernetes/admin.conf /root/.kube/config"));
    }
}
