#!/usr/bin/env bash
# Runs the whole Modelvault test suite on a fresh machine: installs and
# starts what the tests need (the wasm32-wasip2 target for the plugins, a
# moto S3 server on loopback with a test bucket), runs every test, builds the
# benches (they are not run here), and stops what it started. Also starts
# a throwaway OIDC provider (oidc-provider, Node) for the identity tests and
# initializes a throwaway SoftHSM2 token for the PKCS#11 provider tests.
# Then the Python SDK, huggingface_hub and MLflow tests (python/tests,
# pytest).
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -- NAME    # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
env_dir="$root/.test-env"
mkdir -p "$env_dir"

log() { printf '[test.sh] %s\n' "$*" >&2; }

# 1. Toolchain (rust-toolchain.toml pins it), the wasm32-wasip2 target
#    (added here when missing), and every component of plugins/ built from
#    source; the committed bundled policies must equal a fresh build.
log "toolchain: $(rustc --version)"
bash scripts/build-plugins.sh --check

# 2. moto, the S3-compatible server, in a private virtualenv.
if [ ! -x "$env_dir/venv/bin/moto_server" ] || [ ! -x "$env_dir/venv/bin/componentize-py" ]; then
  log "installing moto[server] and componentize-py into $env_dir/venv"
  python3 -m venv "$env_dir/venv"
  "$env_dir/venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5' 'componentize-py==0.25.1'
fi

# 2b. The example policies in other languages, built from source.
examples_out="$root/target/plugins/examples"
mkdir -p "$examples_out"
log "building plugins/examples/python-allow-listed-owners (componentize-py)"
(cd plugins/examples/python-allow-listed-owners &&
  "$env_dir/venv/bin/componentize-py" -d ../../../wit/since_v0.1.0 -w policy componentize app \
    -o "$examples_out/python-allow-listed-owners.wasm" >/dev/null)
export MODELVAULT_TEST_PY_POLICY="$examples_out/python-allow-listed-owners.wasm"
if [ ! -x "$env_dir/js/node_modules/.bin/jco" ]; then
  log "installing jco and componentize-js into $env_dir/js"
  npm install --silent --no-audit --no-fund --prefix "$env_dir/js" \
    @bytecodealliance/jco@1.34.0 @bytecodealliance/componentize-js@0.23.0 >/dev/null
fi
log "building plugins/examples/javascript-business-hours (jco componentize)"
"$env_dir/js/node_modules/.bin/jco" componentize plugins/examples/javascript-business-hours/policy.js \
  --wit wit/since_v0.1.0 --world-name policy --disable all \
  -o "$examples_out/javascript-business-hours.wasm" >/dev/null
export MODELVAULT_TEST_JS_POLICY="$examples_out/javascript-business-hours.wasm"
# The C example: clang and wasi-libc from Debian (with compiler-rt's wasm32
# builtins), wit-bindgen's C generator (cargo install, once, C only), and
# wasm-component-ld from the Rust toolchain.
if ! command -v clang >/dev/null 2>&1 || [ ! -e /usr/lib/wasm32-wasi/libc.a ] ||
  ! compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a' >/dev/null; then
  log "installing clang, wasi-libc and libclang-rt-dev-wasm32 (Debian packages)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  c_pkgs=(clang wasi-libc libclang-rt-dev-wasm32)
  $sudo_cmd apt-get install -y -q "${c_pkgs[@]}" >/dev/null 2>&1 ||
    { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q "${c_pkgs[@]}" >/dev/null; }
  [ "${MODELVAULT_CLEAN_APT_CACHE:-}" != 1 ] || $sudo_cmd apt-get clean
fi
if [ "$("$env_dir/tools/bin/wit-bindgen" --version 2>/dev/null)" != "wit-bindgen-cli 0.46.0" ]; then
  log "installing wit-bindgen-cli 0.46.0 (C generator only) into $env_dir/tools"
  cargo install --quiet --locked wit-bindgen-cli --version 0.46.0 --no-default-features --features c \
    --root "$env_dir/tools"
fi
log "building plugins/examples/c-no-pickles (wit-bindgen c, clang, wasi-libc)"
WIT_BINDGEN="$env_dir/tools/bin/wit-bindgen" bash plugins/examples/c-no-pickles/build.sh \
  "$examples_out/c-no-pickles.wasm"
export MODELVAULT_TEST_C_POLICY="$examples_out/c-no-pickles.wasm"
export MODELVAULT_REQUIRE_EXAMPLES=1   # a missing example is a failure, not a skip
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$env_dir/venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$env_dir/moto.log" 2>&1 &
moto_pid=$!
cleanup() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS -X PUT "http://127.0.0.1:$port/modelvault-test" >/dev/null
log "moto S3 on 127.0.0.1:$port, bucket modelvault-test"

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export MODELVAULT_TEST_S3_BUCKET=modelvault-test
export MODELVAULT_REQUIRE_S3=1   # a missing S3 server is a failure, not a skip
export MODELVAULT_REQUIRE_KMS=1  # moto serves KMS on the same port: the aws-kms provider suite runs

# 2c. The OIDC identity provider (oidc-provider on loopback) with throwaway
#     signing keys the tests may also sign with.
idp_dir="$env_dir/idp"
mkdir -p "$idp_dir"
if ! cmp -s tests/idp/package.json "$idp_dir/package.json" || [ ! -d "$idp_dir/node_modules/oidc-provider" ]; then
  log "installing oidc-provider into $idp_dir"
  cp tests/idp/package.json "$idp_dir/package.json"
  npm install --silent --no-audit --no-fund --prefix "$idp_dir" >/dev/null
fi
cp tests/idp/server.mjs "$idp_dir/server.mjs"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$idp_dir/rsa.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$idp_dir/ec.pem" 2>/dev/null
idp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
node "$idp_dir/server.mjs" "$idp_port" "$idp_dir/rsa.pem" "$idp_dir/ec.pem" >"$env_dir/idp.log" 2>&1 &
idp_pid=$!
cleanup() {
  kill "$moto_pid" "$idp_pid" 2>/dev/null || true
  wait "$moto_pid" "$idp_pid" 2>/dev/null || true
  rm -f "$idp_dir/rsa.pem" "$idp_dir/ec.pem"
}
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$idp_port/.well-known/openid-configuration" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$idp_port/.well-known/openid-configuration" >/dev/null ||
  { cat "$env_dir/idp.log" >&2; exit 1; }
log "oidc-provider on 127.0.0.1:$idp_port"
export MODELVAULT_TEST_OIDC_ISSUER="http://127.0.0.1:$idp_port"
export MODELVAULT_TEST_OIDC_RSA_KEY="$idp_dir/rsa.pem" MODELVAULT_TEST_OIDC_EC_KEY="$idp_dir/ec.pem"
export MODELVAULT_REQUIRE_OIDC=1   # a missing IdP is a failure, not a skip

# 2d. SoftHSM2, a PKCS#11 token for the HSM provider tests: a throwaway
#     token in a private directory, removed at exit.
if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
  log "installing softhsm2 (Debian package)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y -q softhsm2 >/dev/null 2>&1 ||
    { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q softhsm2 >/dev/null; }
  [ "${MODELVAULT_CLEAN_APT_CACHE:-}" != 1 ] || $sudo_cmd apt-get clean
fi
hsm_dir="$env_dir/softhsm"
rm -rf "$hsm_dir"
mkdir -p "$hsm_dir/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$hsm_dir/tokens" >"$hsm_dir/softhsm2.conf"
export SOFTHSM2_CONF="$hsm_dir/softhsm2.conf"
softhsm2-util --init-token --free --label modelvault-test --so-pin 87654321 --pin modelvault-test-pin >/dev/null
cleanup() {
  kill "$moto_pid" "$idp_pid" 2>/dev/null || true
  wait "$moto_pid" "$idp_pid" 2>/dev/null || true
  rm -f "$idp_dir/rsa.pem" "$idp_dir/ec.pem"
  rm -rf "$hsm_dir"
}
log "SoftHSM2 token modelvault-test in $hsm_dir"
export MODELVAULT_TEST_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
export MODELVAULT_TEST_PKCS11_TOKEN=modelvault-test MODELVAULT_TEST_PKCS11_PIN=modelvault-test-pin
export MODELVAULT_REQUIRE_PKCS11=1   # a missing token is a failure, not a skip

# 3. Every test of the workspace (unit, conformance, storage on local and
#    S3, the end-to-end suite in tests/all, the fuzz seed corpus replay).
extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi
cargo test --workspace --locked -- "${extra[@]}"

# 3b. The API fuzzed against its own OpenAPI document (schemathesis, pinned,
#     installed into .test-env/venv) on the binary `cargo test` just built.
MODELVAULT_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/modelvault" bash scripts/fuzz-openapi.sh

# 3a'. The deployment files (deploy/): Kubernetes manifests against the
#      schemas, the systemd unit with systemd-analyze, the Dockerfile parsed.
MODELVAULT_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/modelvault" bash scripts/check-deploy.sh

# 3c. The Python side, with the users' own tools, in a virtualenv of its
#     own (.test-env/sdk-venv): the SDK built from python/ (maturin + PyO3
#     over the workspace crates, its own target directory), huggingface_hub,
#     mlflow-skinny (with the SQLite tracking store's and pyfunc's needs),
#     all pinned; pytest drives real servers started from the binary
#     `cargo test` built.
sdk_venv="$env_dir/sdk-venv"
[ -x "$sdk_venv/bin/python" ] || python3 -m venv "$sdk_venv"
log "installing huggingface_hub, mlflow-skinny and pytest into $sdk_venv"
"$sdk_venv/bin/pip" install --quiet --disable-pip-version-check \
  'huggingface_hub==2.4.0' 'mlflow-skinny==3.18.0' 'numpy==2.4.6' 'pandas==3.1.1' \
  'sqlalchemy==2.1.9' 'alembic==1.20.1' 'pytest==9.2.0'
# The OpenSSF model signing tool, to sign models the way users do, in a
# virtualenv of its own (its sigstore and cryptography pins stay out of the
# SDK's); 1.1.1 imports pyOpenSSL without declaring it.
ms_venv="$env_dir/model-signing-venv"
[ -x "$ms_venv/bin/python" ] || python3 -m venv "$ms_venv"
log "installing model-signing into $ms_venv"
"$ms_venv/bin/pip" install --quiet --disable-pip-version-check \
  'model-signing==1.1.1' 'pyopenssl==26.4.0'
export MODELVAULT_MODEL_SIGNING="$ms_venv/bin/model_signing" MODELVAULT_REQUIRE_MODEL_SIGNING=1
# The console's browser tests: Debian's Chromium and ChromeDriver, Selenium
# (PyPI; 4.52.0 needs a certifi newer than the registry has) and axe-core
# (npm), all pinned.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  log "installing chromium and chromium-driver (Debian packages)"
  $sudo_cmd apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q chromium chromium-driver >/dev/null; }
  [ "${MODELVAULT_CLEAN_APT_CACHE:-}" != 1 ] || $sudo_cmd apt-get clean
fi
"$sdk_venv/bin/pip" install --quiet --disable-pip-version-check 'selenium==4.51.0'
axe_dir="$env_dir/axe"
if [ ! -f "$axe_dir/node_modules/axe-core/axe.min.js" ]; then
  log "installing axe-core into $axe_dir"
  mkdir -p "$axe_dir"
  npm install --silent --no-audit --no-fund --prefix "$axe_dir" axe-core@4.14.1 >/dev/null
fi
export MODELVAULT_TEST_AXE="$axe_dir/node_modules/axe-core/axe.min.js" MODELVAULT_REQUIRE_CONSOLE=1
log "installing the Python SDK (pip install ./python)"
CARGO_TARGET_DIR="$root/python/target" "$sdk_venv/bin/pip" install --quiet \
  --disable-pip-version-check --force-reinstall --no-deps ./python
(cd python/tests &&
  MODELVAULT_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/modelvault" MODELVAULT_REQUIRE_MLFLOW=1 \
    "$sdk_venv/bin/python" -m pytest -q -p no:cacheprovider .)

# 4. Benches are built, not run (run them with `cargo bench`).
cargo build --benches --locked -p modelvault-cli
log "all tests passed"
