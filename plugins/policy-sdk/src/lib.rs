//! The Rust SDK for Modelvault policies (WIT `modelvault:policy@0.1.0`).
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
//! ```

/// The generated bindings (re-exported at the crate root).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.1.0",
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

/// Distinct approvers of the resource for `environment`.
pub fn approvers_for(req: &Request, environment: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &req.resource.approvals {
        if a.environment == environment && !out.contains(&a.approver) {
            out.push(a.approver.clone());
        }
    }
    out
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
