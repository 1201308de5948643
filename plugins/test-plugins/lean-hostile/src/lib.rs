//! A lean (`no_std`, import-free) policy that misbehaves on demand (tag
//! `hostile=<kind>`), for the sandbox tests of the host's lean engine,
//! where components that import nothing run. Benign otherwise.
//!
//! `fresh` answers whether this instance has decided before: a static
//! counter that must read zero at the start of every decision, since every
//! decision gets a fresh instance whose memory is reset to its image.
//!
//! `echo` denies with the whole request as the guest received it (its
//! `Debug` rendering) as the reason: the host's tests compare it with what
//! they sent, field by field.

#![no_std]

extern crate alloc;

use alloc::string::{String, ToString as _};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use modelvault_policy_sdk::*;

struct LeanHostile;

/// Decisions this instance has made (in its data segment, reset between
/// decisions by the host).
static DECISIONS: AtomicU32 = AtomicU32::new(0);

// Recursing without end is the point: it must overflow the wasm stack.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64, buf: &mut [u8; 256]) -> u64 {
    buf[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    next.copy_from_slice(buf);
    recurse(depth + 1, &mut next) + next[0] as u64
}

impl Guest for LeanHostile {
    fn evaluate(req: Request, _config: Config) -> Decision {
        let before = DECISIONS.fetch_add(1, Ordering::Relaxed);
        let kind: String = req
            .resource
            .tags
            .iter()
            .find(|(k, _)| k == "hostile")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        match kind.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = core::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    core::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("lean hostile plugin traps on purpose"),
            "stack" => {
                let mut buf = [0u8; 256];
                let n = recurse(0, &mut buf);
                allow("hostile.escaped", n.to_string())
            }
            "big-reason" => allow("hostile.big", "x".repeat(10 << 20)),
            "echo" => deny("hostile.echo", alloc::format!("{req:?}")),
            "fresh" if before == 0 => deny("hostile.fresh", "a fresh instance"),
            "fresh" => deny("hostile.reused", "this instance decided before"),
            _ => allow("hostile.benign", "no trigger in the request"),
        }
    }
}

export_policy!(LeanHostile with_types_in modelvault_policy_sdk::bindings);
