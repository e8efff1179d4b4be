//! The kubeadm side of a control-plane node in the sshd tests (`tests/promotion`,
//! `tests/conformance_runbook.rs`): the kubeadm stand-in and the backed-up configuration it is
//! initialised from.

/// A kubeadm stand-in that records like the fixture's recorders and behaves enough like kubeadm
/// for the sequence: `init` writes the files kubeadm writes; `token create --config /dev/stdin
/// --print-join-command` reads the token from its stdin config (recording it root-only for the
/// test) and prints the join command with it, as kubeadm does.
pub const KUBEADM_STAND_IN: &str = r#"#!/bin/sh
printf '%s\n' "kubeadm $*" >> /var/log/kdr-calls.log
case "$1" in
init)
  mkdir -p /etc/kubernetes/manifests
  for f in admin.conf manifests/kube-apiserver.yaml manifests/kube-controller-manager.yaml manifests/kube-scheduler.yaml manifests/etcd.yaml; do
    echo "written by kubeadm init" > /etc/kubernetes/$f
  done
  touch /etc/kdr-fake/in-init 2>/dev/null
  while [ -e /etc/kdr-fake/hang-init ]; do sleep 0.1; done ;;
token)
  tok=$(sed -n 's/^- token: *//p; s/^  token: *//p' /dev/stdin | tr -d "'\"" | head -n1)
  umask 077; echo "$tok" > /root/seen-token
  echo "kubeadm join 192.168.30.202:6443 --token $tok --discovery-token-ca-cert-hash sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" ;;
esac
"#;

/// The backed-up ClusterConfiguration of a cluster whose primary was master-1 (192.168.30.200).
pub const CLUSTER_CONFIGURATION: &str = "apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.29.15
controlPlaneEndpoint: 192.168.30.200:6443
etcd:
  local:
    dataDir: /var/lib/etcd
networking:
  podSubnet: 10.244.0.0/16
";

/// The old primary's kube-apiserver manifest, with a custom flag kdr carries over.
pub const OLD_APISERVER: &str = "apiVersion: v1
kind: Pod
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --advertise-address=192.168.30.200
    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml
    volumeMounts:
    - {name: enc, mountPath: /etc/kubernetes/enc, readOnly: true}
  volumes:
  - {name: enc, hostPath: {path: /etc/kubernetes/enc, type: DirectoryOrCreate}}
";

/// Where the runbook unpacks the backed-up `/etc/kubernetes` before `kubeadm init`.
pub const BUNDLE: &str = "/var/lib/kdr/promotion/bundle/etc/kubernetes";

/// Makes `node` a standby ready for `kubeadm init`: recorders for systemctl, kubectl and crictl,
/// the kubeadm stand-in, and the backed-up ClusterConfiguration and API-server manifest.
pub async fn prepare_standby(node: &kdr_core::testing::containers::SshNodeContainer) {
    node.install_recorders(&["systemctl", "kubectl", "crictl"]).await.unwrap();
    node.install_file("/usr/local/bin/kubeadm", KUBEADM_STAND_IN.as_bytes(), 0o755).await.unwrap();
    node.install_file(&format!("{BUNDLE}/kubeadm-config.yaml"), CLUSTER_CONFIGURATION.as_bytes(), 0o600)
        .await
        .unwrap();
    node.install_file(&format!("{BUNDLE}/manifests/kube-apiserver.yaml"), OLD_APISERVER.as_bytes(), 0o600)
        .await
        .unwrap();
}
