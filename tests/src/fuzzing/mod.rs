//! The checks behind Keel's fuzz targets, one function per target.
//!
//! Each function takes the raw bytes of one input and panics if Keel
//! misbehaves on it (a panic inside Keel, or a broken invariant). The same
//! functions run in two places:
//!
//! - the cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly, libFuzzer; see
//!   `docs/FUZZING.md`), each a one-line call into this module;
//! - `tests/tests/fuzz_corpus_replay.rs`, which replays every file of the
//!   checked-in corpus `fuzz/corpus/<target>/` on stable, so CI exercises
//!   each seed and every regression input.
//!
//! Keeping the checks in this workspace crate means clippy, rustfmt and the
//! stable test run see them; `fuzz/` stays outside the workspace, so
//! libFuzzer never reaches the libraries' dependency graph.

pub mod cookie;
pub mod model;
pub mod record;
pub mod seeds;
pub mod value;

// NOTE: the store's own simulated disk (crash simulation and fault
// injection through redb's `StorageBackend`), shared with the store's
// integration tests rather than copied.
// Its own inner attribute allows `dead_code`, `unreachable_pub`, unwrap and
// expect; a library crate also needs these two.
#[allow(missing_docs, missing_debug_implementations)]
#[path = "../../../store/tests/common/mod.rs"]
mod store_common;

/// The names of the fuzz targets, which are also the corpus directories.
pub const TARGETS: &[&str] = &[
    "cookie_client_id",
    "stored_value",
    "stored_record",
    "store_model",
];

/// Run the check of `target` on `data`.
///
/// # Panics
/// If the check fails, or `target` is not one of [`TARGETS`].
pub fn run(target: &str, data: &[u8]) {
    match target {
        "cookie_client_id" => cookie::cookie_client_id(data),
        "stored_value" => value::stored_value(data),
        "stored_record" => record::stored_record(data),
        "store_model" => model::store_model(data),
        other => panic!("no fuzz target named {other:?}"),
    }
}
