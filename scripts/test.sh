#!/usr/bin/env bash
# The README's test command (`make test`): installs what the tests need (scripts/setup-test-env.sh,
# cached and idempotent), then runs fmt, clippy and every test, container tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-test-env.sh
# shellcheck source=/dev/null
. ./.tools/env

# Containers and networks (the drill's) from an earlier, interrupted run are labelled; remove them
# before and after.
cleanup() {
  docker ps -aq --filter label=kdr.test=1 | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls -q --filter label=kdr.test=1 | xargs -r docker network rm >/dev/null 2>&1 || true
}
cleanup
trap cleanup EXIT

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
# An embedder without the cloud backends (kdr-core's s3, gcs and azure features) still builds.
cargo clippy -p kdr-core --no-default-features -- -D warnings
cargo test --workspace --all-features --no-fail-fast
