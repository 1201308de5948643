//! What a plugin's trap is called in its deny reason.
//!
//! A plugin can run out of stack in two ways. The WebAssembly stack
//! (`max_wasm_stack`) overflowing is [`Trap::StackOverflow`]. But Rust, C and
//! most other compilers keep their locals in a second stack inside linear
//! memory (a `__stack_pointer` global moving down from the top of a region
//! at the bottom of memory); when a deep recursion runs it below address 0,
//! the next access wraps around to the top of the 32-bit address space and
//! traps as [`Trap::MemoryOutOfBounds`]. That trap alone cannot be told from
//! any other stray access, but the backtrace can: wasmtime captures the
//! innermost frames, and when the capture is full and one function recurs
//! in it, the access happened deep in a recursion.

use wasmtime::{Trap, WasmBacktrace};

/// Innermost frames wasmtime captures (its default,
/// `Config::wasm_backtrace_max_frames`).
const CAPTURED_FRAMES: usize = 20;

/// The reason text for a plugin that trapped with `trap` (`e` being the
/// whole error, with its backtrace).
pub(crate) fn describe(e: &wasmtime::Error, trap: Trap) -> String {
    match trap {
        Trap::StackOverflow => "stack exhausted (WebAssembly stack overflow)".to_string(),
        Trap::MemoryOutOfBounds if deep_recursion(e.downcast_ref::<WasmBacktrace>()) => {
            "stack exhausted (out of bounds memory access in a deep recursion)".to_string()
        }
        t => format!("trapped: {t}"),
    }
}

/// Whether the backtrace is full and some function appears in it twice.
fn deep_recursion(bt: Option<&WasmBacktrace>) -> bool {
    let Some(bt) = bt else { return false };
    let frames = bt.frames();
    if frames.len() < CAPTURED_FRAMES {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    frames
        .iter()
        .any(|f| !seen.insert((f.module().name().map(str::to_owned), f.func_index())))
}
