//! Replays every committed fuzz seed (`fuzz/corpus/<target>/*`) through
//! `codex_as_api::fuzzing::run`, so `cargo test` catches a regression on any input the fuzzer
//! (or a person) ever found interesting, without needing cargo-fuzz or a nightly toolchain.

use std::fs;
use std::path::Path;

use codex_as_api::fuzzing;

#[test]
fn every_committed_fuzz_seed_replays_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let mut dirs: Vec<_> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no corpus directories under {}",
        root.display()
    );

    let mut seen_targets = Vec::new();
    for dir in dirs {
        let target = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus directory {target} has no seeds");
        for file in files {
            let bytes = fs::read(&file).unwrap();
            assert!(
                fuzzing::run(&target, &bytes),
                "corpus directory {target} does not name a target in fuzzing::TARGETS"
            );
        }
        seen_targets.push(target);
    }

    // Every target has seeds, so none silently drops out of replay.
    for target in fuzzing::TARGETS {
        assert!(
            seen_targets.iter().any(|t| t == target),
            "fuzz target {target} has no committed corpus"
        );
    }
}
