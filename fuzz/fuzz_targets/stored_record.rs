//! `stored_record`: see `keel_tests::fuzzing::record` (tests/src/fuzzing/record.rs) for
//! the input format and the invariants checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel_tests::fuzzing::record::stored_record(data));
