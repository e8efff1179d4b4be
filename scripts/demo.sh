#!/usr/bin/env bash
# The README's first command (`make demo`): backup -> loss -> verified restore -> check, on a
# throwaway local etcd seeded with Kubernetes-like keys, through the `kdr` binary and the embedded
# file:// store. No Docker, no cluster. Everything lives in one temp dir, removed at the end
# (KDR_DEMO_KEEP=1 keeps it). Installs etcd 3.5.16 into ./.tools if it is not there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
die() { printf '\033[1;31mdemo failed:\033[0m %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
declare -a timings=()
timed() { # label command...: runs it and records its wall time
  local label=$1; shift
  local t0; t0=$(now_ms)
  "$@"
  timings+=("$(printf '%-34s %6d ms' "$label" $(( $(now_ms) - t0 )))")
}

# --- Tools ---------------------------------------------------------------------------------------
step "Tools"
if [ -x .tools/etcd-3.5.16/usr/bin/etcd ] && [ -x .tools/etcd-3.5.16/usr/bin/etcdutl ]; then
  etcd_bin=$root/.tools/etcd-3.5.16/usr/bin
elif command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v etcdutl >/dev/null; then
  etcd_bin=$(dirname "$(command -v etcd)")
else
  etcd_bin=$(./scripts/install-etcd.sh)
fi
export PATH="$etcd_bin:$PATH"
echo "etcd:    $(etcd --version | head -1) ($etcd_bin)"
if ! command -v protoc >/dev/null; then
  # etcd-client's build needs protoc and the well-known protos.
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || die "protoc is missing: install protobuf-compiler and libprotobuf-dev, then run make demo again"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
fi
command -v cargo >/dev/null || die "cargo is missing: install Rust (https://rustup.rs) to build kdr"
echo "kdr:     building (cargo build -p kdr-cli)..."
cargo build -q -p kdr-cli
kdr=${CARGO_TARGET_DIR:-$root/target}/debug/kdr
[ -x "$kdr" ] || die "built kdr not found at $kdr"
echo "kdr:     $kdr"

# --- A throwaway etcd ------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kdr-demo.XXXXXX")
etcd_pid=""
finish() {
  local rc=$?
  if [ -n "$etcd_pid" ] && kill -0 "$etcd_pid" 2>/dev/null; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "the demo's files are kept for inspection in $work" >&2
  elif [ "${KDR_DEMO_KEEP:-0}" = 1 ]; then
    echo "kept $work (KDR_DEMO_KEEP=1)"
  else
    rm -rf -- "$work" # the demo's own temp dir: its throwaway etcd dirs and store
  fi
}
trap finish EXIT

free_port() {
  local p
  for p in $(shuf -i 20000-60999 -n 100); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free loopback port found"
}
client_port=$(free_port); peer_port=$(free_port)
endpoint=http://127.0.0.1:$client_port
peer=http://127.0.0.1:$peer_port
data=$work/etcd-data
ctl() { etcdctl --endpoints "$endpoint" "$@"; }

start_etcd() { # log file
  etcd --name demo --data-dir "$data" \
    --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "demo=$peer" \
    --heartbeat-interval 10 --election-timeout 100 >"$1" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 1 300); do
    grep -q "ready to serve client requests" "$1" 2>/dev/null && return 0
    kill -0 "$etcd_pid" 2>/dev/null || { tail -5 "$1" >&2; die "etcd exited"; }
    sleep 0.1
  done
  tail -5 "$1" >&2; die "etcd did not start in 30 s"
}
stop_etcd() {
  kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true; etcd_pid=""
}

step "A throwaway etcd in $work"
timed "start etcd" start_etcd "$work/etcd-1.log"
echo "etcd:    $endpoint (pid $etcd_pid), data dir $data"

# Kubernetes-like keys: /registry/<resource>/<namespace>/<name>, JSON values, plus a few big ones.
seed() {
  local batch=$work/txn n=0 ns i
  : >"$batch"
  flush() { if [ -s "$batch" ]; then printf '\n%s\n\n\n' "$(cat "$batch")" | ctl txn >/dev/null; : >"$batch"; fi; }
  add() { # key json
    local v=${2//\\/\\\\}; v=${v//\"/\\\"}
    printf 'put %s "%s"\n' "$1" "$v" >>"$batch"
    n=$((n + 1)); if (( n % 100 == 0 )); then flush; fi
  }
  for ns in default kube-system prod staging payments; do
    add "/registry/namespaces/$ns" "{\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\"}}"
    for i in $(seq 1 150); do
      add "/registry/pods/$ns/web-$i" "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"web-$i\",\"namespace\":\"$ns\"},\"spec\":{\"nodeName\":\"worker-$((i % 3 + 1))\"}}"
    done
    for i in $(seq 1 40); do
      add "/registry/secrets/$ns/token-$i" "{\"kind\":\"Secret\",\"type\":\"Opaque\",\"data\":{\"token\":\"$(head -c 24 /dev/urandom | base64)\"}}"
      add "/registry/configmaps/$ns/config-$i" "{\"kind\":\"ConfigMap\",\"data\":{\"revision\":\"$i\"}}"
    done
    for i in $(seq 1 15); do
      add "/registry/services/specs/$ns/svc-$i" "{\"kind\":\"Service\",\"spec\":{\"clusterIP\":\"10.96.$i.$((RANDOM % 250 + 1))\"}}"
      add "/registry/deployments/$ns/app-$i" "{\"kind\":\"Deployment\",\"spec\":{\"replicas\":$((i % 5 + 1))}}"
      add "/registry/serviceaccounts/$ns/sa-$i" "{\"kind\":\"ServiceAccount\"}"
    done
  done
  for i in 1 2 3; do
    add "/registry/minions/worker-$i" "{\"kind\":\"Node\",\"metadata\":{\"name\":\"worker-$i\"}}"
    add "/registry/leases/kube-node-lease/worker-$i" "{\"kind\":\"Lease\"}"
  done
  add "/registry/apiregistration.k8s.io/apiservices/v1.apps" "{\"kind\":\"APIService\"}"
  add "/registry/ranges/serviceips" "{\"kind\":\"RangeAllocation\",\"range\":\"10.96.0.0/12\"}"
  flush
  # A few large values (e.g. big ConfigMaps), written one by one.
  for i in 1 2 3; do
    head -c 300000 /dev/urandom | base64 -w0 | ctl put "/registry/configmaps/kube-system/big-$i" >/dev/null
  done
  # Overwrites and deletes: the restore must hold the last state, not the history.
  ctl put /registry/pods/default/web-1 '{"kind":"Pod","metadata":{"name":"web-1"},"status":{"phase":"Running"}}' >/dev/null
  ctl del /registry/pods/default/web-150 >/dev/null
}
dump() { ctl get "" --prefix >"$1"; }
revision() { ctl endpoint status -w json | grep -o '"revision":[0-9]*' | head -1 | cut -d: -f2; }

step "Seed Kubernetes-like keys"
timed "seed keys" seed
dump "$work/before.txt"
keys=$(ctl get "" --prefix --keys-only | grep -c .)
rev_before=$(revision)
echo "seeded:  $keys keys, revision $rev_before"

# A control-plane dir laid out as kubeadm's /etc/kubernetes, with placeholder content.
kube=$work/kubernetes
mkdir -p "$kube/pki/etcd" "$kube/manifests" "$kube/enc"
for f in ca front-proxy-ca etcd/ca apiserver apiserver-kubelet-client etcd/server; do
  printf 'demo placeholder certificate for %s\n' "$f" >"$kube/pki/$f.crt"
  printf 'demo placeholder private key for %s\n' "$f" >"$kube/pki/$f.key"
  chmod 644 "$kube/pki/$f.crt"; chmod 600 "$kube/pki/$f.key"
done
printf 'demo placeholder service-account key\n' >"$kube/pki/sa.key"; chmod 600 "$kube/pki/sa.key"
printf 'demo placeholder service-account public key\n' >"$kube/pki/sa.pub"; chmod 644 "$kube/pki/sa.pub"
printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n' >"$kube/enc/encryption.yaml"
chmod 600 "$kube/enc/encryption.yaml"
printf 'spec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --encryption-provider-config=/etc/kubernetes/enc/encryption.yaml\n' \
  >"$kube/manifests/kube-apiserver.yaml"
printf 'spec:\n  containers:\n  - command:\n    - etcd\n    - --data-dir=/var/lib/etcd\n' >"$kube/manifests/etcd.yaml"
chmod 600 "$kube/manifests/"*.yaml
printf 'apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nclusterName: demo\n' >"$work/kubeadm-config.yaml"

store=file://$work/store

step "kdr backup (etcd snapshot + control-plane bundle, zstd, hashed, to $store)"
timed "kdr backup" "$kdr" backup --etcd-endpoint "$endpoint" --store "$store" --cluster-name demo \
  --kubernetes-dir "$kube" --kubeadm-config "$work/kubeadm-config.yaml" >"$work/id"
id=$(tail -1 "$work/id")
echo "$id"

step "kdr snapshot list"
timed "kdr snapshot list" "$kdr" snapshot list --store "$store"

step "Disaster: stop etcd and move its data dir away"
stop_etcd
mv "$data" "$work/lost-etcd-data"
echo "moved $data to $work/lost-etcd-data; nothing is at $data"

step "kdr restore $id (verify everything, then restore with a revision bump)"
timed "kdr restore" "$kdr" restore --store "$store" --snapshot "$id" --data-dir "$data" --name demo \
  --initial-advertise-peer-urls "$peer" --bundle-to "$work/restored-bundle"

step "Start etcd on the restored dir and check every key and value"
timed "start etcd on the restored dir" start_etcd "$work/etcd-2.log"
dump "$work/after.txt"
keys_after=$(ctl get "" --prefix --keys-only | grep -c .)
rev_after=$(revision)
cmp -s "$work/before.txt" "$work/after.txt" \
  || { diff "$work/before.txt" "$work/after.txt" | head -20 >&2; die "keys or values differ after the restore"; }
echo "keys:    $keys_after of $keys, every value identical"
(( rev_after >= rev_before + 1000000000 )) || die "revision $rev_after was not bumped past $rev_before + 1e9"
echo "revision $rev_before -> $rev_after (bumped by 1e9 so that watch caches re-list)"
echo "bundle:  restored for inspection under $work/restored-bundle:"
(cd "$work/restored-bundle" && find . -type f -printf '  %m %p\n' | sort -k2)
[ "$(stat -c %a "$work/restored-bundle/etc/kubernetes/pki/ca.key")" = 600 ] || die "ca.key was not restored with mode 0600"
stop_etcd

step "kdr drill (restore the set into a temp dir, serve it, compare the key inventory)"
timed "kdr drill" "$kdr" drill --store "$store" --snapshot "$id" --work-dir "$work"

step "Report"
bold "backup -> loss -> restore -> verify: OK"
echo "  $keys keys, every value identical after the restore; revision bumped $rev_before -> $rev_after"
echo "  backup set $id in $store"
echo "  the lost data dir was moved, not deleted; the restore never touched it"
for t in "${timings[@]}"; do echo "  $t"; done
