//! Write the seed corpus (`keel_tests::fuzzing::seeds`) into
//! `fuzz/corpus/<target>/seed-*`, overwriting the seeds there and leaving
//! every other input alone:
//!
//! ```sh
//! cargo run -p keel-tests --example write_seed_corpus
//! ```
//!
//! `tests/fuzz_corpus_replay.rs` then fails if a seed is missing or no
//! longer decodes to what `seeds.rs` encodes.

use std::{error::Error, fs, path::PathBuf};

use keel_tests::fuzzing::seeds;

fn main() -> Result<(), Box<dyn Error>> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut written = 0;
    for seed in seeds::seeds() {
        let dir = corpus.join(seed.target);
        fs::create_dir_all(&dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;
        let path = dir.join(&seed.name);
        fs::write(&path, &seed.bytes)
            .map_err(|err| format!("writing {}: {err}", path.display()))?;
        written += 1;
    }
    println!("wrote {written} seeds under {}", corpus.display());
    Ok(())
}
