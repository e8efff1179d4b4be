#!/usr/bin/env bash
# Installs everything kdr's test suite needs on a Debian 12 machine (as root), idempotently:
#   - Debian packages: protobuf-compiler, libprotobuf-dev (etcd-client needs protoc), openssh-server,
#     debootstrap (for the sshd "node" image), iproute2, curl;
#   - etcd 3.5.16 (with etcdutl) from Debian trixie's .debs and etcd 3.4.23 from bookworm's, both
#     unpacked (never installed) into the git-ignored tools folder $KDR_TOOLS (default ./.tools);
#   - s3s-fs 0.14.1 built by `cargo install` (pinned, --locked, cached in $KDR_CACHE);
#   - local Docker images (no registry): kdr-test/etcd:{3.5.16,3.4.23}, kdr-test/s3s-fs:0.14.1 and
#     kdr-test/node:bookworm, each labelled with a hash of its inputs and rebuilt only when they change.
# Writes $KDR_TOOLS/env, which the test command sources.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tools=${KDR_TOOLS:-$here/.tools}
cache=${KDR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kdr}
mkdir -p "$tools" "$cache"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# --- Docker first: the container tests are the point, so no Docker is a hard failure. ------------
command -v docker >/dev/null 2>&1 \
  || die "docker is not installed. kdr's integration tests run real etcd, S3 and sshd in containers; install Docker Engine (apt-get install docker.io) and re-run."
docker info >/dev/null 2>&1 \
  || die "the Docker daemon is not reachable ('docker info' failed). Start it (systemctl start docker) and re-run; the container tests are never skipped."

# --- Debian packages ----------------------------------------------------------------------------
need=()
for p in protobuf-compiler libprotobuf-dev openssh-server debootstrap iproute2 curl ca-certificates xz-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  [ "$(id -u)" = 0 ] || die "missing Debian packages (${need[*]}) and not root: run as root or install them"
  log "apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The mirror is derived from the machine's own apt configuration, never written into the repo.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"

# --- etcd binaries from .debs, unpacked into the tools folder (scripts/install-etcd.sh) -----------
"$here/scripts/install-etcd.sh" trixie 3.5.16 >/dev/null
"$here/scripts/install-etcd.sh" bookworm 3.4.23 >/dev/null
[ -x "$tools/etcd-3.5.16/usr/bin/etcdutl" ] || die "etcd 3.5.16 unpacked without etcdutl"

# --- s3s-fs, pinned and cached -------------------------------------------------------------------
s3s=$cache/s3s-fs-0.14.1/bin/s3s-fs
if [ ! -x "$s3s" ]; then
  log "building s3s-fs 0.14.1 (static; a few minutes, cached in $cache)"
  RUSTFLAGS='-C target-feature=+crt-static' cargo install s3s-fs --version 0.14.1 --locked \
    --features binary --target x86_64-unknown-linux-gnu --root "$cache/s3s-fs-0.14.1" -q
fi
mkdir -p "$tools/bin"; ln -sf "$s3s" "$tools/bin/s3s-fs"

# --- Docker images, labelled by a hash of their inputs --------------------------------------------
# image_current NAME HASH: true when NAME exists with label kdr.inputs=HASH. Each image is
# hashed from its own inputs (binaries, package list, its build function), so editing another
# part of this script rebuilds nothing.
image_current() {
  [ "$(docker image inspect -f '{{index .Config.Labels "kdr.inputs"}}' "$1" 2>/dev/null || true)" = "$2" ]
}

build_etcd_image() { # version
  local v=$1 src=$tools/etcd-$1/usr/bin
  local bins=("$src/etcd" "$src/etcdctl"); [ -x "$src/etcdutl" ] && bins+=("$src/etcdutl")
  local h; h=$( (cat "${bins[@]}" /lib/x86_64-linux-gnu/libc.so.6; declare -f build_etcd_image) | sha256sum | cut -c1-16)
  image_current "kdr-test/etcd:$v" "$h" && return
  log "building image kdr-test/etcd:$v"
  local root; root=$(mktemp -d)
  mkdir -p "$root/usr/bin" "$root/lib/x86_64-linux-gnu" "$root/lib64" "$root/tmp" "$root/var/lib/etcd" "$root/etc/kubernetes/pki/etcd"
  chmod 1777 "$root/tmp"
  cp "${bins[@]}" "$root/usr/bin/"
  cp -L /lib/x86_64-linux-gnu/libc.so.6 "$root/lib/x86_64-linux-gnu/"
  cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
  tar -C "$root" -c . | docker import --change 'ENTRYPOINT ["/usr/bin/etcd"]' \
    --change "LABEL kdr.inputs=$h" - "kdr-test/etcd:$v" >/dev/null
  rm -rf "$root"
}
build_etcd_image 3.5.16
build_etcd_image 3.4.23

build_s3_image() {
  local h; h=$( (cat "$s3s"; declare -f build_s3_image) | sha256sum | cut -c1-16)
  image_current kdr-test/s3s-fs:0.14.1 "$h" && return
  log "building image kdr-test/s3s-fs:0.14.1"
  local root; root=$(mktemp -d)
  mkdir -p "$root/usr/bin" "$root/data" "$root/tmp"; chmod 1777 "$root/tmp"
  cp "$s3s" "$root/usr/bin/s3s-fs"
  tar -C "$root" -c . | docker import \
    --change 'ENV RUST_LOG=info' \
    --change 'ENTRYPOINT ["/usr/bin/s3s-fs", "--host", "0.0.0.0", "--port", "9000"]' \
    --change "LABEL kdr.inputs=$h" - kdr-test/s3s-fs:0.14.1 >/dev/null
  rm -rf "$root"
}
build_s3_image

# The "node" image: a minimal Debian with sshd, sudo and the tools a worker or a master stand-in
# needs. debootstrap takes minutes, so it only runs when the package list or this script changes.
node_pkgs="openssh-server,sudo,iproute2,iputils-ping,curl,ca-certificates,procps,python3-minimal"
build_node_image() {
  local h; h=$(printf '%s\n%s\n' "$node_pkgs" "$(declare -f build_node_image)" | sha256sum | cut -c1-16)
  image_current kdr-test/node:bookworm "$h" && return
  log "building image kdr-test/node:bookworm with debootstrap (a few minutes)"
  local root; root=$(mktemp -d)
  debootstrap --variant=minbase --include="$node_pkgs" bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $cache/debootstrap.log"
  rm -f "$root"/etc/ssh/ssh_host_*   # each container gets the host key its test generates
  mkdir -p "$root/run/sshd"
  chroot "$root" apt-get clean
  tar -C "$root" -c . | docker import \
    --change 'CMD ["/usr/sbin/sshd", "-D", "-e"]' \
    --change "LABEL kdr.inputs=$h" - kdr-test/node:bookworm >/dev/null
  rm -rf "$root"
}
build_node_image

cat > "$tools/env" <<ENV
# Written by scripts/setup-test-env.sh; sourced by the test command.
export KDR_ETCD_3_5_DIR="$tools/etcd-3.5.16/usr/bin"
export KDR_ETCD_3_4_DIR="$tools/etcd-3.4.23/usr/bin"
export KDR_S3S_FS="$s3s"
export PATH="$tools/etcd-3.5.16/usr/bin:$tools/bin:\$PATH"
ENV
log "test environment ready (tools in $tools)"
