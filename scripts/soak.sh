#!/usr/bin/env bash
# The scale-out soak: three Modelvault servers over one S3 bucket (moto,
# with its request recorder on) under a mixed load for MODELVAULT_SOAK_SECS
# seconds (default 60), reporting throughput with one, two and three
# replicas and the S3 requests one push, one download and one key release
# cost; then the audit chains verify and every replica pulls byte-exact.
# Bounded: about one and a half times the soak time (three throughput
# phases, then the mixed-load scenario for half of it) plus start-up and a
# build.
#   MODELVAULT_SOAK_SECS=300 bash scripts/soak.sh
# Needs what scripts/test.sh installs (.test-env/venv with moto); run that
# once first. The figures are for this machine: on two cores three replicas
# share the same CPUs, so throughput does not scale here; what scales on a
# real bucket is the per-request store work, which the S3 counts show.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
env_dir="$root/.test-env"
[ -x "$env_dir/venv/bin/moto_server" ] || { echo "run scripts/test.sh once first (it installs moto)" >&2; exit 1; }
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && MOTO_ENABLE_RECORDING=True exec "$env_dir/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1) &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS -X PUT "http://127.0.0.1:$port/modelvault-soak" >/dev/null
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export MODELVAULT_TEST_S3_BUCKET=modelvault-soak MODELVAULT_REQUIRE_S3=1
export MODELVAULT_SOAK_SECS="${MODELVAULT_SOAK_SECS:-60}"
timeout $((MODELVAULT_SOAK_SECS * 3 + 1800)) \
  cargo test --locked -p modelvault-cli --test all replicas::soak -- --ignored --nocapture 2>&1 |
  grep -E '^(soak|replicas):|test result|panicked|FAILED|error'
