//! `store_model`: see `keel_tests::fuzzing::model` (tests/src/fuzzing/model.rs) for
//! the input format and the invariants checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel_tests::fuzzing::model::store_model(data));
