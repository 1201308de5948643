#!/usr/bin/env bash
# The README quickstart as a script: a throwaway data directory, a server on
# a free port, a data-scientist token, a push and a verified pull.
#
#   bash examples/quickstart.sh          # builds the binary if needed
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin modelvault
mv=$PWD/target/release/modelvault
work=$(mktemp -d)
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

admin=$("$mv" init --data-dir "$work/data")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$mv" serve --data-dir "$work/data" --listen "127.0.0.1:$port" 2>"$work/server.log" &
server_pid=$!
export MODELVAULT_URL="http://127.0.0.1:$port"
until curl -fsS "$MODELVAULT_URL/healthz" >/dev/null 2>&1; do sleep 0.1; done

# Admins manage access but do not download: mint a data scientist.
alice=$(MODELVAULT_TOKEN=$admin "$mv" token create --role data-scientist --namespace demo --name alice --ttl 1h)
export MODELVAULT_TOKEN=$alice

mkdir -p "$work/model/tokenizer"
head -c $((8 << 20)) /dev/urandom >"$work/model/weights.bin"
echo '{"layers": 12}' >"$work/model/config.json"
echo 'hello world' >"$work/model/tokenizer/vocab.txt"

"$mv" model create demo/bert --sensitivity internal --tag team=nlp
"$mv" push demo/bert@1 "$work/model"
"$mv" model show demo/bert@1
"$mv" pull demo/bert@latest -o "$work/out"
diff -r "$work/model" "$work/out" && echo "quickstart: pulled files are identical"
