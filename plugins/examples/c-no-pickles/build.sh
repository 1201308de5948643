#!/usr/bin/env bash
# Builds the C example into a component: bindings from the WIT with
# wit-bindgen's C generator, compiled with clang against wasi-libc, linked
# into a component by wasm-component-ld (which ships with Rust's toolchain
# and embeds the WASI preview-1 adapter that wasi-libc needs).
#
#   ./build.sh [OUT.wasm]            (default: policy.wasm)
#
# Tools, each overridable by a variable: WIT_BINDGEN (wit-bindgen 0.46.0),
# CLANG (clang with the wasm32 target; Debian: clang), WASI_SYSROOT (a
# wasi-libc sysroot; Debian's wasi-libc installs into /usr), and
# WASM_COMPONENT_LD / WASM_LD (default: from `rustc --print sysroot`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-policy.wasm}")"
wit="$here/../../../wit/since_v0.1.0"
wit_bindgen="${WIT_BINDGEN:-wit-bindgen}"
clang="${CLANG:-clang}"
sysroot="${WASI_SYSROOT:-/usr}"
if [ -z "${WASM_COMPONENT_LD:-}" ] || [ -z "${WASM_LD:-}" ]; then
  rust_bin="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
  : "${WASM_COMPONENT_LD:=$rust_bin/wasm-component-ld}"
  : "${WASM_LD:=$rust_bin/gcc-ld/wasm-ld}"
fi

gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
# policy.h, policy.c (the canonical-ABI glue) and policy_component_type.o
# (the world's type, which the linker turns into the component's exports).
if ! log=$("$wit_bindgen" c "$wit" --world policy --out-dir "$gen" 2>&1); then
  echo "$log" >&2
  exit 1
fi
# -mexec-model=reactor: a library with exports, no main. --stack-first:
# the C stack (64 KiB in linear memory) at the bottom of memory, so running
# off its end traps instead of overwriting static data.
"$clang" --target=wasm32-wasi --sysroot="$sysroot" -mexec-model=reactor \
  -Os -Wall -Wextra -Werror -I"$gen" \
  "$here/policy.c" "$gen/policy.c" "$gen/policy_component_type.o" \
  -fuse-ld="$WASM_COMPONENT_LD" -Wl,--wasm-ld-path="$WASM_LD" \
  -Wl,--stack-first -Wl,--strip-all \
  -o "$out"
