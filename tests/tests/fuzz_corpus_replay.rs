//! Every input of the checked-in fuzz corpus (`fuzz/corpus/<target>/*`, the
//! seeds and every regression input) passes its target's check on stable,
//! so CI exercises what the fuzzers found without nightly or libFuzzer. The
//! checks are the ones the fuzz targets run (`keel_tests::fuzzing`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, path::PathBuf};

use keel_tests::fuzzing::{self, TARGETS, seeds};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Replay every file of `target`'s corpus; the names of the files replayed.
fn replay(target: &str) -> Vec<String> {
    let dir = corpus_dir(target);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    entries.sort();
    let mut names = Vec::new();
    for path in entries {
        let data = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!("{target}: {name}");
        fuzzing::run(target, &data);
        names.push(name);
    }
    names
}

/// The corpus holds every current seed of `target`.
fn assert_seeds_checked_in(target: &str, replayed: &[String]) {
    for seed in seeds::seeds().iter().filter(|s| s.target == target) {
        assert!(
            replayed.contains(&seed.name),
            "seed {} of {target} is not in fuzz/corpus (regenerate: see seeds.rs)",
            seed.name
        );
    }
}

#[test]
fn the_cookie_client_id_corpus_passes() {
    let replayed = replay("cookie_client_id");
    assert_seeds_checked_in("cookie_client_id", &replayed);
}

#[test]
fn the_stored_value_corpus_passes() {
    let replayed = replay("stored_value");
    assert_seeds_checked_in("stored_value", &replayed);
}

#[test]
fn the_stored_record_corpus_passes() {
    let replayed = replay("stored_record");
    assert_seeds_checked_in("stored_record", &replayed);
}

#[test]
fn the_store_model_corpus_passes() {
    let replayed = replay("store_model");
    assert_seeds_checked_in("store_model", &replayed);
}

#[test]
fn every_target_has_a_corpus_directory() {
    for target in TARGETS {
        assert!(corpus_dir(target).is_dir(), "no corpus for {target}");
    }
}

#[test]
fn seed_encodings_read_back_as_written() {
    use arbitrary::{Arbitrary, Unstructured};
    use keel_tests::fuzzing::{model::Scenario, record::Case};
    for seed in seeds::seeds() {
        match seed.target {
            "store_model" => {
                let scenario = Scenario::parse(&seed.bytes);
                assert_eq!(seeds::encoded(&scenario), seed.bytes, "{}", seed.name);
            }
            "stored_record" if !seed.name.starts_with("seed-raw-") => {
                let case = Case::arbitrary(&mut Unstructured::new(&seed.bytes)).unwrap();
                assert_eq!(seeds::encoded(&case), seed.bytes, "{}", seed.name);
            }
            _ => {}
        }
    }
}

#[test]
fn seeded_keel_ids_follow_the_documented_wire_format() {
    use keel_session::{KeelIdFormat, KeyRing};
    let ring = KeyRing::from_bytes(&fuzzing::cookie::ring_bytes()).unwrap();
    let format = KeelIdFormat::new(ring);
    assert_eq!(format.signing_key_id(&seeds::valid_keel_id(0, 1)), Some(1));
    assert_eq!(format.signing_key_id(&seeds::valid_keel_id(1, 1)), Some(7));
}

/// The inputs in `fuzz/regressions/<target>/` reproduce known issues of
/// code outside this crate's reach (listed in docs/FUZZING.md, "Findings");
/// the checks tolerate them so that fuzzing gets past them. Checked
/// strictly here, each must still fail: once this test fails, the issue is
/// fixed, and its input belongs in `fuzz/corpus/<target>/` (and the
/// tolerance in the check goes).
#[test]
fn the_known_issue_inputs_still_reproduce() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/stored_record");
    // No known issue is open when the folder is absent (git keeps no empty
    // folders).
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    let mut inputs: Vec<_> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    inputs.sort();
    fuzzing::record::set_tolerate_known_issues(false);
    for path in inputs {
        let data = fs::read(&path).unwrap();
        let strict = std::panic::catch_unwind(|| fuzzing::record::stored_record(&data));
        let message = match strict {
            Ok(()) => panic!(
                "{} no longer reproduces its known issue: move it to fuzz/corpus/stored_record/",
                path.display()
            ),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        assert!(
            message.contains("CorruptRecord"),
            "{} fails for another reason: {message}",
            path.display()
        );
    }
}
