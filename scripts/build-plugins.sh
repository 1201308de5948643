#!/usr/bin/env bash
# Builds every component in plugins/ (the bundled policies and the test
# plugins) for wasm32-wasip2 with the pinned toolchain, into
# target/plugins/wasm32-wasip2/release/.
#
# The three bundled policies are committed, built, in
# crates/modelvault-bundled-policies/bundled/, so that building the server needs no
# wasm toolchain. This script keeps them honest:
#
#   bash scripts/build-plugins.sh           # build plugins/ only
#   bash scripts/build-plugins.sh --check   # and fail unless the committed
#                                           # components are byte-identical
#   bash scripts/build-plugins.sh --update  # and copy the fresh builds over
#                                           # the committed ones
#
# It adds the wasm32-wasip2 target to the pinned toolchain when missing
# (an explicit `rustup target add`, which works with RUSTUP_AUTO_INSTALL=0).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode="${1:-build}"
log() { printf '[build-plugins] %s\n' "$*" >&2; }

rustup target list --installed | grep -qx wasm32-wasip2 || {
  log "adding the wasm32-wasip2 target to $(rustc --version)"
  rustup target add wasm32-wasip2 >/dev/null
}

# The outer build's settings must not leak into the wasm build.
# The bundled three are built on their own first (features unify across the
# packages of one cargo invocation, so this keeps their bytes independent of
# the test plugins), then the rest of the workspace.
wasm_build() {
  (cd plugins && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR \
    cargo build --release --locked --target wasm32-wasip2 --target-dir "$root/target/plugins" "$@")
}
wasm_build -p sensitivity-environment -p approval-gate -p separation-of-duties
mkdir -p "$root/target/plugins/bundled"
for name in sensitivity_environment approval_gate separation_of_duties; do
  cp "$root/target/plugins/wasm32-wasip2/release/$name.wasm" "$root/target/plugins/bundled/$name.wasm"
done
# The rest (the SDK's `std` feature for the test plugins must not reach the
# bundled three: they stay the lean no_std builds above, in release/ too).
# The lean test plugin, like the bundled three, without the SDK's `std`.
wasm_build -p lean-hostile
wasm_build --workspace --exclude sensitivity-environment --exclude approval-gate --exclude separation-of-duties --exclude lean-hostile

built="$root/target/plugins/bundled"
committed="$root/crates/modelvault-bundled-policies/bundled"
bundled=(sensitivity_environment approval_gate separation_of_duties)
case "$mode" in
  build) ;;
  --check)
    for name in "${bundled[@]}"; do
      if ! cmp -s "$built/$name.wasm" "$committed/$name.wasm"; then
        log "crates/modelvault-bundled-policies/bundled/$name.wasm differs from a fresh build of plugins/"
        log "rebuild and commit it: bash scripts/build-plugins.sh --update"
        exit 1
      fi
    done
    log "the committed bundled policies are byte-identical to a fresh build of plugins/"
    ;;
  --update)
    mkdir -p "$committed"
    for name in "${bundled[@]}"; do
      cp "$built/$name.wasm" "$committed/$name.wasm"
    done
    (cd "$committed" && sha256sum "${bundled[@]/%/.wasm}" >SHA256SUMS)
    log "updated crates/modelvault-bundled-policies/bundled/ (commit it)"
    ;;
  *) log "unknown argument $mode (use --check or --update)"; exit 2 ;;
esac
