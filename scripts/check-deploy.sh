#!/usr/bin/env bash
# Checks the deployment files in deploy/ with the tools their users run:
#   - the Kubernetes manifests against the Kubernetes 1.37 schemas
#     (kubernetes-validate from PyPI, --strict: unknown fields fail);
#   - the systemd unit with `systemd-analyze verify` (ExecStart pointed at
#     the binary this run built) and its sandboxing settings;
#   - the Dockerfile parsed (dockerfile-parse from PyPI): two stages, the
#     README's build step, a non-root user, the data volume, a health check
#     on /healthz, and `serve` flags the built binary accepts.
#   MODELVAULT_BIN=target/debug/modelvault bash scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
env_dir="$root/.test-env"
bin="${MODELVAULT_BIN:-$root/target/debug/modelvault}"
log() { printf '[check-deploy] %s\n' "$*" >&2; }

venv="$env_dir/deploy-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  'kubernetes-validate==1.37.0' 'dockerfile-parse==2.0.1'

log "Kubernetes manifests (kubernetes-validate --strict, Kubernetes 1.37)"
"$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml

if ! command -v systemd-analyze >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  log "installing systemd (for systemd-analyze)"
  $sudo_cmd apt-get install -y -q systemd >/dev/null 2>&1 ||
    { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q systemd >/dev/null; }
fi
log "systemd unit (systemd-analyze verify)"
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
sed "s|/usr/local/bin/modelvault serve|$bin serve|" deploy/modelvault.service >"$unit_dir/modelvault.service"
out=$(systemd-analyze verify "$unit_dir/modelvault.service" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
# verify prints problems it does not fail on (unknown keys, bad values).
if printf '%s\n' "$out" | grep -i "modelvault.service" | grep -qiv "user\|group"; then
  printf '%s\n' "$out" >&2
  exit 1
fi
for want in 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'PrivateTmp=yes' \
  'ReadWritePaths=/var/lib/modelvault' 'LimitNOFILE=' 'CapabilityBoundingSet=' \
  'KillSignal=SIGTERM' 'SystemCallFilter=@system-service'; do
  grep -q "^$want" deploy/modelvault.service || { log "the unit lacks $want"; exit 1; }
done

log "Dockerfile (dockerfile-parse)"
"$venv/bin/python" - "$bin" <<'PY'
import json, subprocess, sys
from dockerfile_parse import DockerfileParser

bin_path = sys.argv[1]
d = DockerfileParser(path="deploy/Dockerfile")
stages = [i for i in d.structure if i["instruction"] == "FROM"]
assert len(stages) >= 2, "the Dockerfile must be multi-stage"
final = d.structure[d.structure.index(stages[-1]):]
def last(instr):
    hits = [i for i in final if i["instruction"] == instr]
    assert hits, f"the runtime stage lacks {instr}"
    return hits[-1]["value"]
user = last("USER").split(":")[0]
assert user not in ("root", "0"), f"the runtime stage runs as {user}"
assert "/var/lib/modelvault" in last("VOLUME"), "the data directory must be a volume"
assert "/healthz" in last("HEALTHCHECK"), "HEALTHCHECK must probe /healthz"
build = " ".join(i["value"] for i in d.structure[: d.structure.index(stages[-1])] if i["instruction"] == "RUN")
readme = open("README.md").read()
assert "cargo build --release" in readme and "cargo build --release" in build, \
    "the image must build with the README's step (cargo build --release)"
cmd = json.loads(last("CMD"))
assert cmd[0] == "serve"
flags = [a for a in cmd if a.startswith("--")]
help_text = subprocess.run([bin_path, "serve", "--help"], capture_output=True, text=True, check=True).stdout
for f in flags:
    assert f in help_text, f"`modelvault serve` has no {f} flag"
print(f"[check-deploy] Dockerfile: {len(stages)} stages, user {user}, serve flags {flags} exist")
PY
log "deploy/ checked"
