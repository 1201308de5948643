//! The bundled policies, built from `plugins/` by this crate's build script
//! and carried inside the binary. `init` installs all three.

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
        component: include_bytes!(concat!(env!("OUT_DIR"), "/sensitivity_environment.wasm")),
        cases: include_str!("../../../plugins/sensitivity-environment/cases.json"),
    },
    BundledPolicy {
        name: "approval-gate",
        component: include_bytes!(concat!(env!("OUT_DIR"), "/approval_gate.wasm")),
        cases: include_str!("../../../plugins/approval-gate/cases.json"),
    },
    BundledPolicy {
        name: "separation-of-duties",
        component: include_bytes!(concat!(env!("OUT_DIR"), "/separation_of_duties.wasm")),
        cases: include_str!("../../../plugins/separation-of-duties/cases.json"),
    },
];
