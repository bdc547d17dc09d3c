//! Replays every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
//! through its target: the fuzzers' findings stay fixed, and `cargo test`
//! covers the corpus without fuzzing.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn corpus_and_regressions_replay_without_panics() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dirs) = std::fs::read_dir(root().join(kind)) else {
            continue;
        };
        for dir in dirs {
            let dir = dir.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let Some(&(_, target)) = batchling_fuzz::TARGETS.iter().find(|(n, _)| *n == name)
            else {
                panic!("fuzz/{kind}/{name} matches no target in batchling_fuzz::TARGETS");
            };
            for file in std::fs::read_dir(&dir).unwrap() {
                let path = file.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failures.push(path.display().to_string());
                }
                replayed += 1;
            }
        }
    }
    batchling_server::fuzzing::remove_data_dir();
    assert!(failures.is_empty(), "these inputs panic: {failures:#?}");
    assert!(replayed > 0, "no corpus found under {}", root().display());
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in batchling_fuzz::TARGETS {
        let dir = root().join("corpus").join(name);
        let files = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        assert!(files > 0, "{} is empty or missing", dir.display());
    }
}
