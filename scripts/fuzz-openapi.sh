#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis:
# initializes a throwaway data directory with the built binary, starts
# `modelvault serve` on an ephemeral loopback port, seeds one model with a
# committed version, creates a low-privilege token, then runs schemathesis
# (phases examples, coverage, fuzzing) once with the low-privilege token
# and once with the admin token (about 3 minutes in all). Fails on
# any response >= 500, any response the document does not allow (status,
# content type, body schema), or a server crash; afterwards the server must
# still answer /healthz and `modelvault audit verify` must pass.
#
#   bash scripts/fuzz-openapi.sh        # after `cargo build -p modelvault-cli`
#
# Environment:
#   MODELVAULT_BIN      the binary (default target/debug/modelvault)
#   FUZZ_MAX_EXAMPLES   examples per operation (default 12)
#   FUZZ_MAX_TIME       seconds per schemathesis run (default 70)
#   FUZZ_SEED           hypothesis seed (default 20261; fixed so CI repeats)
#   FUZZ_KEEP           set to keep the work directory (logs, reports)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
env_dir="$root/.test-env"
bin=${MODELVAULT_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/modelvault}
schemathesis_version=4.32.5
max_examples=${FUZZ_MAX_EXAMPLES:-12}
max_time=${FUZZ_MAX_TIME:-70}
seed=${FUZZ_SEED:-20261}

log() { printf '[fuzz-openapi] %s\n' "$*" >&2; }

[ -x "$bin" ] || { log "no binary at $bin: run cargo build -p modelvault-cli first"; exit 1; }

# schemathesis, pinned, in the test virtualenv (beside moto).
st="$env_dir/venv/bin/schemathesis"
if ! "$st" --version 2>/dev/null | grep -qx "schemathesis, version $schemathesis_version"; then
  log "installing schemathesis $schemathesis_version into $env_dir/venv"
  [ -x "$env_dir/venv/bin/pip" ] || python3 -m venv "$env_dir/venv"
  "$env_dir/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mv-fuzz.XXXXXX")
data="$work/data"
serve_log="$work/serve.log"
pid=""
status=1
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ]; then
    log "server log (last 40 lines of $serve_log):"
    tail -n 40 "$serve_log" >&2 || true
  fi
  if [ -z "${FUZZ_KEEP:-}" ] && [ "$status" -eq 0 ]; then rm -rf "$work"; else log "kept $work"; fi
}
trap cleanup EXIT

# `init` prints the admin token as its only stdout line.
admin=$("$bin" init --data-dir "$data" 2>"$work/init.log")

MODELVAULT_LOG=info MODELVAULT_LOG_FORMAT=text "$bin" serve --data-dir "$data" --listen 127.0.0.1:0 >"$serve_log" 2>&1 &
pid=$!
url=""
for _ in $(seq 1 300); do
  url=$(sed -n 's|.*listening on \(http://[0-9.:]*\).*|\1|p' "$serve_log" | head -n 1)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { log "server exited at start"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { log "server did not start"; exit 1; }
curl -fsS "$url/healthz" >/dev/null
log "server on $url (data in $data)"

mvcli() { MODELVAULT_URL="$url" MODELVAULT_CONFIG_DIR="$work/cli-config" "$bin" "$@"; }

# Something to find: the model and version the document's examples name
# (nlp/bert@1, file weights.bin), so generated requests reach past 404s.
mkdir -p "$work/model"
printf 'weights\n' >"$work/model/weights.bin"
MODELVAULT_TOKEN=$admin mvcli model create nlp/bert --sensitivity internal --tag team=nlp >/dev/null
MODELVAULT_TOKEN=$admin mvcli push nlp/bert@1 "$work/model" >/dev/null
# The low-privilege token: read, write and download in one namespace.
low=$(MODELVAULT_TOKEN=$admin mvcli token create --name fuzz-data-scientist --role data-scientist --namespace nlp)

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
failed=0
# The low-privilege token first: the admin run may grant it more (it
# learns principal names from responses). The admin run leaves out token
# revocation, which would revoke its own token (the name is in GET
# /v1/tokens) and leave the rest of the run at 401; the low-privilege run
# covers that route.
for who in low admin; do
  exclude=()
  if [ "$who" = admin ]; then
    token=$admin
    exclude=(--exclude-path-regex '^/v1/tokens/\{name\}$')
  else
    token=$low
  fi
  # One worker: with two threads, Python 3.11's ast module can fail inside
  # schemathesis with "AST constructor recursion depth mismatch" (CPython
  # gh-106905), a crash of the tool that says nothing about the server.
  log "schemathesis $schemathesis_version as $who (max $max_examples examples per operation, ${max_time}s)"
  set +e
  (cd "$work" && "$st" run "$url/v1/openapi.json" \
    --url "$url" \
    --header "Authorization: Bearer $token" \
    --checks "$checks" \
    --phases examples,coverage,fuzzing \
    --max-examples "$max_examples" \
    --max-time "$max_time" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 30 \
    --generation-database none \
    --suppress-health-check all \
    --report ndjson --report-ndjson-path "$work/$who.ndjson" \
    "${exclude[@]}" \
    --no-color) 2>&1 | tee "$work/$who.log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    log "schemathesis as $who failed (exit $rc)"
    failed=1
  fi
  kill -0 "$pid" 2>/dev/null || { log "the server crashed"; exit 1; }
done

# The server still serves, and the audit trail of all that is intact.
curl -fsS "$url/healthz" >/dev/null || { log "/healthz does not answer after fuzzing"; exit 1; }
MODELVAULT_TOKEN=$admin mvcli audit verify >"$work/verify.log" 2>&1 ||
  { cat "$work/verify.log" >&2; log "audit verify failed after fuzzing"; exit 1; }
log "$(tail -n 1 "$work/verify.log")"
if [ "$failed" -ne 0 ]; then
  log "failures: see the reports above"
  exit 1
fi
# Server errors in its own log (a 5xx schemathesis did not see as such).
if grep -q 'request failed' "$serve_log"; then
  grep 'request failed' "$serve_log" | head -n 20 >&2
  log "the server logged failed requests"
  exit 1
fi
answered=$(sed 's/\x1b\[[0-9;]*m//g' "$serve_log" | grep -c ' request request_id=' || true)
# A count of zero means the log format changed under this check: fail.
[ "$answered" -gt 0 ] || { log "no answered request found in $serve_log"; exit 1; }
status=0
log "$answered requests answered: no server errors, no responses outside the document, no crash; audit verify passed"
