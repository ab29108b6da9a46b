//! Every fuzz target's seed corpus and every input that once crashed one
//! (`fuzz/regressions/<target>/`), replayed through the same entry points
//! on stable Rust: a crash found by `cargo fuzz` stays fixed.

use std::path::Path;

#[test]
fn every_seed_and_every_past_crash_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, run) in portico::fuzzing::TARGETS {
        let mut seeds = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for entry in dir {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "md") {
                    continue;
                }
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
                seeds += 1;
            }
        }
        assert!(seeds > 0, "{target} has a seed corpus");
        replayed += seeds;
    }
    assert!(replayed >= portico::fuzzing::TARGETS.len());
}
