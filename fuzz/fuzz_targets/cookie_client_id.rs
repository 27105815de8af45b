//! `cookie_client_id`: see `keel_tests::fuzzing::cookie` (tests/src/fuzzing/cookie.rs) for
//! the input format and the invariants checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keel_tests::fuzzing::cookie::cookie_client_id(data));
