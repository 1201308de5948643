//! The bundled policies, carried inside the binary. `init` installs all
//! three. The components are committed, built, in this crate's `bundled/`
//! so that
//! building the server needs no wasm toolchain; `scripts/build-plugins.sh
//! --check` (run by the test command) rebuilds them from `plugins/` with the
//! pinned toolchain and fails unless the bytes are identical, and
//! `--update` refreshes them after a change to a bundled policy.

#![forbid(unsafe_code)]

/// One bundled policy.
#[derive(Debug, Clone, Copy)]
pub struct BundledPolicy {
    /// Installed name.
    pub name: &'static str,
    /// The component bytes.
    pub component: &'static [u8],
    /// Its test cases (plugins/<name>/cases.json).
    pub cases: &'static str,
}

/// The three bundled policies. (The chain evaluates installed policies in
/// name order.)
pub const BUNDLED: [BundledPolicy; 3] = [
    BundledPolicy {
        name: "sensitivity-environment",
        component: include_bytes!("../bundled/sensitivity_environment.wasm"),
        cases: include_str!("../../../plugins/sensitivity-environment/cases.json"),
    },
    BundledPolicy {
        name: "approval-gate",
        component: include_bytes!("../bundled/approval_gate.wasm"),
        cases: include_str!("../../../plugins/approval-gate/cases.json"),
    },
    BundledPolicy {
        name: "separation-of-duties",
        component: include_bytes!("../bundled/separation_of_duties.wasm"),
        cases: include_str!("../../../plugins/separation-of-duties/cases.json"),
    },
];
