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
//!
//! Features: `std` (default) for a std policy. Without it the policy is
//! `#![no_std]` (with `extern crate alloc`), the SDK supplies the runtime
//! (`cabi_realloc`, `memcmp`/`bcmp`, a panic handler that traps), and the
//! component imports nothing: about half the cost of a fresh-instance
//! decision. The allocator is the SDK's in both (a static bump arena).
//!
//! Invariants: the SDK itself only uses `core` and `alloc`; exactly one
//! panic handler exists in a policy's crate graph (std's, or the SDK's
//! when `std` is off).

#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

use alloc::string::{String, ToString as _};
use alloc::vec::Vec;

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

/// The global allocator of every policy built with this SDK: a bump
/// allocator over a zero-initialized static arena, then over pages it grows
/// itself. Each decision runs in a fresh instance, so a fresh instance
/// never grows its memory for a typical request (the first `memory.grow`
/// is the single largest cost of a fresh decision). It counts live
/// allocations and starts over when none is left, so an instance that is
/// called again (the host never does so between decisions) reuses its
/// memory. 32 KiB holds the request of a version of a couple of hundred
/// files; with a 24 KiB stack (`plugins/.cargo/config.toml`) the whole
/// memory of a bundled policy is one 64 KiB page, which the host resets
/// fastest.
#[cfg(target_arch = "wasm32")]
mod arena {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    const ARENA_BYTES: usize = 32 * 1024;
    const PAGE: usize = 65_536;

    #[repr(C, align(16))]
    struct Arena {
        bytes: UnsafeCell<[u8; ARENA_BYTES]>,
        state: UnsafeCell<State>,
    }

    struct State {
        /// Next free offset in the static arena.
        next: usize,
        /// The grown region: its start, next free address and end.
        grown_start: usize,
        grown_next: usize,
        grown_end: usize,
        /// Allocations not yet freed.
        live: usize,
    }

    // SAFETY: wasm32 policy instances are single-threaded.
    unsafe impl Sync for Arena {}

    static ARENA: Arena = Arena {
        bytes: UnsafeCell::new([0; ARENA_BYTES]),
        state: UnsafeCell::new(State { next: 0, grown_start: 0, grown_next: 0, grown_end: 0, live: 0 }),
    };

    const fn align_up(x: usize, align: usize) -> usize {
        (x + align - 1) & !(align - 1)
    }

    struct Bump;

    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: single-threaded; the state is only touched here and
            // in `dealloc`.
            let st = unsafe { &mut *ARENA.state.get() };
            let (size, align) = (layout.size(), layout.align());
            let start = align_up(st.next, align);
            if let Some(end) = start.checked_add(size).filter(|e| *e <= ARENA_BYTES) {
                st.next = end;
                st.live += 1;
                // SAFETY: `start..end` lies inside the arena.
                return unsafe { ARENA.bytes.get().cast::<u8>().add(start) };
            }
            let mut start = align_up(st.grown_next, align);
            if st.grown_end == 0 || start.checked_add(size).is_none_or(|e| e > st.grown_end) {
                let Some(pages) = size.checked_add(align).map(|n| n.div_ceil(PAGE)) else {
                    return core::ptr::null_mut();
                };
                let prev = core::arch::wasm32::memory_grow(0, pages);
                if prev == usize::MAX {
                    return core::ptr::null_mut();
                }
                let base = prev * PAGE;
                if base != st.grown_end {
                    // Not contiguous with the last region: start a new one.
                    st.grown_start = base;
                    st.grown_next = base;
                }
                st.grown_end = base + pages * PAGE;
                start = align_up(st.grown_next, align);
            }
            st.grown_next = start + size;
            st.live += 1;
            start as *mut u8
        }

        unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {
            // SAFETY: as in `alloc`.
            let st = unsafe { &mut *ARENA.state.get() };
            st.live = st.live.saturating_sub(1);
            if st.live == 0 {
                st.next = 0;
                st.grown_next = st.grown_start;
            }
        }
    }

    #[global_allocator]
    static GLOBAL: Bump = Bump;
}

/// What a `no_std` policy needs from its runtime (the SDK built without
/// its default `std` feature): a panic handler (a panic traps, and the
/// host counts a trap as a deny) and the two byte-comparison functions the
/// compiler calls and no C library provides here.
#[cfg(all(target_arch = "wasm32", not(feature = "std"), not(test)))]
mod lean_runtime {
    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        core::arch::wasm32::unreachable()
    }

    /// The component model's allocation entry point (std defines it on
    /// wasm32-wasip2; without std the SDK must).
    ///
    /// # Safety
    /// Called by the host as the canonical ABI says: `old_ptr`/`old_len`
    /// name an earlier allocation of this function (or are 0), `align` is
    /// a power of two.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn cabi_realloc(
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        use alloc::alloc::{Layout, alloc, handle_alloc_error, realloc};
        if new_len == 0 {
            return align as *mut u8;
        }
        // SAFETY: the caller's contract (align a power of two, sizes from
        // the canonical ABI, old_ptr from this allocator).
        unsafe {
            let p = if old_len == 0 {
                alloc(Layout::from_size_align_unchecked(new_len, align))
            } else {
                realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
            };
            if p.is_null() {
                handle_alloc_error(Layout::from_size_align_unchecked(new_len, align));
            }
            p
        }
    }

    /// # Safety
    /// `a` and `b` are valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            // Volatile reads: the compiler must not turn this loop back
            // into a call to `memcmp`.
            // SAFETY: in bounds by the caller's contract.
            let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        0
    }

    /// # Safety
    /// As [`memcmp`].
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the same contract.
        unsafe { memcmp(a, b, n) }
    }
}
