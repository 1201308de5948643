#![no_main]
//! Header and segment parser: any input gives an error or plaintext, never
//! a panic or an out-of-bounds read.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    modelvault_format::fuzz_parse_and_open(data);
});
