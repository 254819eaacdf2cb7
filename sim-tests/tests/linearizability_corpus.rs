//! The checker against Porcupine's published corpus: every verdict must agree, and an
//! undecided history counts as a disagreement.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_sim_tests::linearizability::corpus::{
    parse_expected, parse_jepsen_register_log, parse_kv_log,
};
use keel_sim_tests::linearizability::models::{AppendKv, CasRegister};
use keel_sim_tests::linearizability::{check, Verdict};

/// The corpus lives in the shared checkout beside the repository; CI always has it, so a
/// missing corpus is a failure, never a skip.
fn corpus_dir() -> PathBuf {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/linearizability"
    ));
    assert!(
        dir.is_dir(),
        "linearizability corpus not found at {} (expected the `shared` checkout beside the \
         repository); the checker cannot be trusted without it",
        dir.display()
    );
    dir.to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The corpus must stay cheap enough for every `cargo test`; each half gets half a minute.
const TIME_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn jepsen_etcd_verdicts_match_porcupine() {
    let dir = corpus_dir().join("jepsen-etcd");
    let expected =
        parse_expected(&read(&dir.join("EXPECTED"))).unwrap_or_else(|e| panic!("EXPECTED: {e}"));
    assert!(
        expected.len() >= 100,
        "EXPECTED lists only {} histories",
        expected.len()
    );

    let started = Instant::now();
    let mut disagreements = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for entry in &expected {
        let path = dir.join(&entry.file);
        let history = parse_jepsen_register_log(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", entry.file));
        let one = Instant::now();
        let outcome = check(&CasRegister, &history);
        let took = one.elapsed();
        if took > slowest.0 {
            slowest = (took, entry.file.clone());
        }
        let want = if entry.linearizable {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        if outcome.verdict() != want {
            disagreements.push(format!(
                "{}: expected {want}, got {}\n{}",
                entry.file,
                outcome.verdict(),
                outcome.explain(&history)
            ));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "jepsen-etcd: {} histories checked in {elapsed:?} (slowest {} in {:?})",
        expected.len(),
        slowest.1,
        slowest.0
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(elapsed < TIME_LIMIT, "jepsen-etcd corpus took {elapsed:?}");
}

#[test]
fn kv_verdicts_match_file_names() {
    let dir = corpus_dir().join("kv");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    files.retain(|path| path.extension().is_some_and(|ext| ext == "txt"));
    files.sort();
    assert!(files.len() >= 6, "kv corpus has only {} files", files.len());

    let started = Instant::now();
    let mut disagreements = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let want = if name.ends_with("-ok.txt") {
            Verdict::Linearizable
        } else if name.ends_with("-bad.txt") {
            Verdict::NotLinearizable
        } else {
            panic!("{name}: neither -ok nor -bad");
        };
        let history = parse_kv_log(&read(path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let one = Instant::now();
        let outcome = check(&AppendKv, &history);
        println!(
            "kv/{name}: {} ops, {} in {:?}",
            history.len(),
            outcome.verdict(),
            one.elapsed()
        );
        if outcome.verdict() != want {
            disagreements.push(format!(
                "{name}: expected {want}, got {}\n{}",
                outcome.verdict(),
                outcome.explain(&history)
            ));
        }
    }
    let elapsed = started.elapsed();
    println!("kv: {} histories checked in {elapsed:?}", files.len());
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(elapsed < TIME_LIMIT, "kv corpus took {elapsed:?}");
}
