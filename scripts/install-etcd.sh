#!/usr/bin/env bash
# Usage: install-etcd.sh [SUITE VERSION]   (default: trixie 3.5.16; the tests also use bookworm 3.4.23)
# Puts etcd VERSION (etcd, etcdctl, and etcdutl from 3.5) into the git-ignored tools folder
# ($KDR_TOOLS, default ./.tools/etcd-VERSION/usr/bin), for `make demo` and scripts/setup-test-env.sh, without Docker
# and without installing anything system-wide: Debian trixie's etcd-server and etcd-client .debs
# are downloaded with apt and unpacked with dpkg -x (their binaries link only libc and run on
# bookworm). Idempotent. Prints the bin dir on stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tools=${KDR_TOOLS:-$here/.tools}
suite=${1:-trixie}
version=${2:-3.5.16}
dest=$tools/etcd-$version

log() { printf '\033[1m[install-etcd]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[install-etcd] error:\033[0m %s\n' "$*" >&2; exit 1; }

if [ -x "$dest/usr/bin/etcd" ] && "$dest/usr/bin/etcd" --version 2>/dev/null | grep -q "etcd Version: $version"; then
  echo "$dest/usr/bin"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 \
  || die "etcd is not installed and this is not a Debian-like system: install etcd 3.5 (etcd, etcdctl, etcdutl) and put it on PATH"
# The mirror comes from the machine's own apt configuration, never from this repo.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"

log "fetching etcd $version from Debian $suite ($mirror) into $dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "deb $mirror $suite main" > "$work/sources.list"
mkdir -p "$work/lists/partial" "$work/debs"
opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists"
      -o APT::Get::List-Cleanup=0)
[ "$(id -u)" = 0 ] && opts+=(-o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq >&2 || die "apt-get update for $suite failed"
(cd "$work/debs" && apt-get "${opts[@]}" download etcd-server etcd-client >&2) || die "apt-get download etcd-server etcd-client failed"
mkdir -p "$tools"
rm -rf "$dest.partial"; mkdir -p "$dest.partial"
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$dest.partial"; done
"$dest.partial/usr/bin/etcd" --version | grep -q "etcd Version: $version" \
  || die "Debian $suite's etcd-server is not $version: $("$dest.partial/usr/bin/etcd" --version | head -1)"
case $version in 3.4.*) ;; *) [ -x "$dest.partial/usr/bin/etcdutl" ] || die "etcd $version unpacked without etcdutl" ;; esac
rm -rf "$dest"; mv "$dest.partial" "$dest"
echo "$dest/usr/bin"
