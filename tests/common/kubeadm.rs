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
