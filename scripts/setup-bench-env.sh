#!/usr/bin/env bash
# Installs what the benchmarks need beyond the test suite's tools (scripts/setup-test-env.sh):
#   - Garage 2.5.0 (AGPL-3.0, a production S3 server written in Rust), built by `cargo install`
#     (pinned, --locked, LMDB metadata only, cached in $KDR_CACHE; about 7 minutes on 2 cores).
#     The benches run kdr against it beside s3s-fs: s3s-fs copies every part again when a
#     multipart upload completes and serves reads 4 KiB at a time, which a production server
#     does not, so the two together show kdr's cost apart from the test server's.
# Writes $KDR_TOOLS/bench-env (sourced by `make bench`). Not part of `make test`.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tools=${KDR_TOOLS:-$here/.tools}
cache=${KDR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kdr}
mkdir -p "$tools" "$cache"
log() { printf '\033[1m[setup-bench]\033[0m %s\n' "$*" >&2; }

"$here/scripts/setup-test-env.sh"

command -v /usr/bin/time >/dev/null 2>&1 || {
  log "apt-get install time (the benches read wall time and peak RSS from /usr/bin/time)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
}

garage=$cache/garage-2.5.0/bin/garage
if [ ! -x "$garage" ]; then
  log "building Garage 2.5.0 (about 7 minutes, cached in $cache)"
  cargo install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb \
    --root "$cache/garage-2.5.0" -q
fi

cat > "$tools/bench-env" <<ENV
# Written by scripts/setup-bench-env.sh; sourced by \`make bench\`.
. "$tools/env"
export KDR_GARAGE="$garage"
ENV
log "ready: . $tools/bench-env && cargo bench --bench backup (or restore, workers)"
