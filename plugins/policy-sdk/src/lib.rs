//! The Rust SDK for Modelvault policies (WIT `modelvault:policy@0.2.0`; a
//! component built with it exports `modelvault:policy/evaluator@0.2.0`).
//! Policies built with SDK 0.1 keep running unchanged (the host serves
//! both interface versions).
//!
//! ```ignore
//! use modelvault_policy_sdk::*;
//! struct MyPolicy;
//! impl Guest for MyPolicy {
//!     fn evaluate(req: Request, config: Config) -> Decision {
//!         if req.action == Action::Download { allow("my.ok", "fine") } else { abstain("my.na", "not mine") }
//!     }
//! }
//! export_policy!(MyPolicy with_types_in modelvault_policy_sdk::bindings);
//! // Name, version, authors and description from Cargo.toml, shown by
//! // `modelvault policy list`.
//! policy_metadata!();
//! ```

/// The generated bindings (re-exported at the crate root).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.2.0",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "modelvault_policy_sdk::bindings",
    });
}

pub use bindings::exports::modelvault::policy::evaluator::*;
pub use bindings::export_policy;

/// The plugin's configuration pairs.
pub type Config = Vec<(String, String)>;

/// Looks `key` up in the configuration.
pub fn config_value<'a>(config: &'a [(String, String)], key: &str) -> Option<&'a str> {
    config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A comma-separated configuration list, trimmed, empty items dropped.
pub fn config_list(config: &[(String, String)], key: &str) -> Option<Vec<String>> {
    config_value(config, key).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// An allow decision.
pub fn allow(code: &str, reason: impl Into<String>) -> Decision {
    Decision { outcome: Outcome::Allow, reason_code: code.into(), reason: reason.into() }
}

/// A deny decision.
pub fn deny(code: &str, reason: impl Into<String>) -> Decision {
    Decision { outcome: Outcome::Deny, reason_code: code.into(), reason: reason.into() }
}

/// An abstain decision.
pub fn abstain(code: &str, reason: impl Into<String>) -> Decision {
    Decision { outcome: Outcome::Abstain, reason_code: code.into(), reason: reason.into() }
}

impl Sensitivity {
    /// The lowercase name used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Confidential => "confidential",
            Sensitivity::Restricted => "restricted",
        }
    }
}

/// The environment an action is about: the target environment of approve
/// and deploy, the caller's own environment otherwise.
pub fn effective_environment(req: &Request) -> &str {
    match req.action {
        Action::Approve | Action::Deploy => req
            .resource
            .target_environment
            .as_deref()
            .unwrap_or(req.context.environment.as_str()),
        _ => req.context.environment.as_str(),
    }
}

/// Distinct approvers of the resource for `environment` with a `review`
/// approval (what an approval meant before approval kinds).
pub fn approvers_for(req: &Request, environment: &str) -> Vec<String> {
    approvers_of_kind(req, environment, ApprovalKind::Review, None)
}

/// Distinct approvers of the resource for `environment` with an approval
/// of `kind`, holding `role` in the namespace when they approved (any role
/// when `None`).
pub fn approvers_of_kind(
    req: &Request,
    environment: &str,
    kind: ApprovalKind,
    role: Option<&str>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &req.resource.approvals {
        if a.environment == environment
            && a.kind == kind
            && role.is_none_or(|r| a.approver_roles.iter().any(|x| x == r))
            && !out.contains(&a.approver)
        {
            out.push(a.approver.clone());
        }
    }
    out
}

impl ApprovalKind {
    /// The lowercase name used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Review => "review",
            ApprovalKind::Compliance => "compliance",
            ApprovalKind::Training => "training",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "review" => Some(ApprovalKind::Review),
            "compliance" => Some(ApprovalKind::Compliance),
            "training" => Some(ApprovalKind::Training),
            _ => None,
        }
    }
}

impl Stage {
    /// The kebab-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Candidate => "candidate",
            Stage::ProductionReady => "production-ready",
            Stage::Deprecated => "deprecated",
            Stage::Archived => "archived",
        }
    }
}

/// Embeds metadata about the policy in the component, in the custom
/// section `modelvault:metadata` (one JSON object of optional strings
/// `name`, `version`, `author`, `description`), which the server reads at
/// install and `modelvault policy list` shows. Use it once per crate.
///
/// ```ignore
/// // From Cargo.toml: the package's name, version, authors (Cargo joins
/// // several with ':') and description; empty ones are left out.
/// policy_metadata!();
/// // Or any of the four fields, as string constants:
/// policy_metadata!(
///     name: "frozen-models",
///     version: env!("CARGO_PKG_VERSION"),
///     author: "ML platform team <mlp@example.com>",
///     description: "Denies frozen models outside exempt environments",
/// );
/// ```
///
/// A field not listed above, a control character in a value, or a value
/// over its bound (128 bytes for name and version, 256 for author, 1024
/// for description) fails the build.
#[macro_export]
macro_rules! policy_metadata {
    () => {
        $crate::policy_metadata!(
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            author: env!("CARGO_PKG_AUTHORS"),
            description: env!("CARGO_PKG_DESCRIPTION"),
        );
    };
    ($($field:ident : $value:expr),* $(,)?) => {
        const _: () = {
            const FIELDS: &[(&str, &str)] = &[$((stringify!($field), $value)),*];
            const LEN: usize = $crate::metadata::json_len(FIELDS);
            #[used]
            #[unsafe(link_section = "modelvault:metadata")]
            static MODELVAULT_METADATA: [u8; LEN] = $crate::metadata::json::<LEN>(FIELDS);
        };
    };
}

/// Compile-time JSON for [`policy_metadata!`] (not for direct use).
#[doc(hidden)]
pub mod metadata {
    const FIELDS: [(&str, usize); 4] =
        [("name", 128), ("version", 128), ("author", 256), ("description", 1024)];

    const fn eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Checks a field and returns the length of its escaped value.
    const fn checked_len(key: &str, value: &str) -> usize {
        let mut known = false;
        let mut max = 0;
        let mut f = 0;
        while f < FIELDS.len() {
            if eq(FIELDS[f].0, key) {
                known = true;
                max = FIELDS[f].1;
            }
            f += 1;
        }
        if !known {
            panic!("policy_metadata!: fields are name, version, author and description");
        }
        let v = value.as_bytes();
        if v.len() > max {
            panic!("policy_metadata!: a value is too long");
        }
        let mut n = 0;
        let mut i = 0;
        while i < v.len() {
            let b = v[i];
            // C0 controls, DEL, C1 controls (U+0080..U+009F: C2 80..9F), the
            // line and paragraph separators and the bidirectional controls
            // (U+200E, U+200F, U+2028..U+202E: E2 80 xx; U+2066..U+2069:
            // E2 81 A6..A9), which the server refuses.
            let c1 = b == 0xc2 && i + 1 < v.len() && v[i + 1] < 0xa0;
            let e2 = b == 0xe2 && i + 2 < v.len() && {
                let (b1, b2) = (v[i + 1], v[i + 2]);
                (b1 == 0x80 && (b2 == 0x8e || b2 == 0x8f || (b2 >= 0xa8 && b2 <= 0xae)))
                    || (b1 == 0x81 && b2 >= 0xa6 && b2 <= 0xa9)
            };
            if b < 0x20 || b == 0x7f || c1 || e2 {
                panic!("policy_metadata!: a value contains a control character");
            }
            n += if b == b'"' || b == b'\\' { 2 } else { 1 };
            i += 1;
        }
        n
    }

    /// Length of the JSON object of `fields` (empty values left out).
    pub const fn json_len(fields: &[(&str, &str)]) -> usize {
        let mut n = 2;
        let mut first = true;
        let mut i = 0;
        while i < fields.len() {
            let (k, v) = fields[i];
            let len = checked_len(k, v);
            if !v.is_empty() {
                if !first {
                    n += 1;
                }
                first = false;
                n += k.len() + 3 + len + 2;
            }
            let mut j = 0;
            while j < i {
                if eq(fields[j].0, k) {
                    panic!("policy_metadata!: a field is given twice");
                }
                j += 1;
            }
            i += 1;
        }
        n
    }

    const fn put(out: &mut [u8], mut at: usize, bytes: &[u8], escape: bool) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if escape && (b == b'"' || b == b'\\') {
                out[at] = b'\\';
                at += 1;
            }
            out[at] = b;
            at += 1;
            i += 1;
        }
        at
    }

    /// The JSON object of `fields`; `N` is [`json_len`] of them.
    pub const fn json<const N: usize>(fields: &[(&str, &str)]) -> [u8; N] {
        let mut out = [0u8; N];
        out[0] = b'{';
        let mut at = 1;
        let mut first = true;
        let mut i = 0;
        while i < fields.len() {
            let (k, v) = fields[i];
            if !v.is_empty() {
                if !first {
                    out[at] = b',';
                    at += 1;
                }
                first = false;
                out[at] = b'"';
                at = put(&mut out, at + 1, k.as_bytes(), false);
                out[at] = b'"';
                out[at + 1] = b':';
                out[at + 2] = b'"';
                at = put(&mut out, at + 3, v.as_bytes(), true);
                out[at] = b'"';
                at += 1;
            }
            i += 1;
        }
        out[at] = b'}';
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn builds_json() {
            const F: &[(&str, &str)] =
                &[("name", "a\"b"), ("version", ""), ("author", "x\\y"), ("description", "d")];
            const N: usize = super::json_len(F);
            const J: [u8; N] = super::json::<N>(F);
            assert_eq!(
                std::str::from_utf8(&J).unwrap(),
                r#"{"name":"a\"b","author":"x\\y","description":"d"}"#
            );
        }
    }
}

/// A bump allocator over a static arena, used as the global allocator of
/// every policy built with this SDK. Each decision runs in a fresh
/// instance, so nothing needs freeing, and serving allocations from a
/// zero-initialized static buffer means a fresh instance never grows its
/// memory (the first `memory.grow` is the single largest cost of a fresh
/// decision). Allocations beyond the arena fall back to the system
/// allocator.
#[cfg(target_arch = "wasm32")]
mod arena {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    const ARENA_BYTES: usize = 128 * 1024;

    #[repr(C, align(16))]
    struct Arena {
        bytes: UnsafeCell<[u8; ARENA_BYTES]>,
        next: UnsafeCell<usize>,
    }

    // SAFETY: wasm32 policy instances are single-threaded.
    unsafe impl Sync for Arena {}

    static ARENA: Arena = Arena {
        bytes: UnsafeCell::new([0; ARENA_BYTES]),
        next: UnsafeCell::new(0),
    };

    struct Bump;

    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: single-threaded; `next` is only touched here.
            unsafe {
                let next = &mut *ARENA.next.get();
                let start = (*next + layout.align() - 1) & !(layout.align() - 1);
                let end = start.saturating_add(layout.size());
                if end <= ARENA_BYTES {
                    *next = end;
                    ARENA.bytes.get().cast::<u8>().add(start)
                } else {
                    std::alloc::System.alloc(layout)
                }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let base = ARENA.bytes.get() as usize;
            let p = ptr as usize;
            if p < base || p >= base + ARENA_BYTES {
                // SAFETY: it came from the system allocator above.
                unsafe { std::alloc::System.dealloc(ptr, layout) }
            }
        }
    }

    #[global_allocator]
    static GLOBAL: Bump = Bump;
}
