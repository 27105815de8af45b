//! `stored_value`: see `keel_tests::fuzzing::value` (tests/src/fuzzing/value.rs) for
//! the input format and the invariants checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel_tests::fuzzing::value::stored_value(data));
