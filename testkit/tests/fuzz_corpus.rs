//! Replays the committed fuzz corpus and every saved crash input through the
//! functions the cargo-fuzz targets call (the `check_*` functions of
//! `wshub_testkit`, the tungstenite differential of the `frames` target
//! included), so a plain `cargo test` keeps them passing without cargo-fuzz.
//!
//! Inputs live in `fuzz/corpus/<target>/` (minimized, committed; must exist
//! and be non-empty, or this test would silently test nothing) and
//! `fuzz/artifacts/<target>/` (crash inputs; may be absent). Every failing
//! file is reported, not just the first.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; empty when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}

fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let corpus_dir = fuzz_dir().join("corpus").join(target);
    let corpus = files(&corpus_dir);
    assert!(
        !corpus.is_empty(),
        "{} is missing or empty: the replay would test nothing",
        corpus_dir.display()
    );
    let artifacts = files(&fuzz_dir().join("artifacts").join(target));
    let mut failures = Vec::new();
    for file in corpus.iter().chain(&artifacts) {
        let data = fs::read(file).expect("readable input");
        if let Err(payload) = panic::catch_unwind(|| check(&data)) {
            let name = file.strip_prefix(fuzz_dir()).unwrap_or(file);
            failures.push(format!(
                "fuzz/{}: {}",
                name.display(),
                panic_text(&*payload)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs fail:\n{}",
        failures.len(),
        corpus.len() + artifacts.len(),
        failures.join("\n")
    );
}

/// The checks' anchor instant; only offsets from it matter.
#[allow(clippy::disallowed_methods)]
fn anchor() -> std::time::Instant {
    std::time::Instant::now()
}

#[test]
fn handshake_corpus() {
    replay("handshake", |d| wshub_testkit::check_handshake(anchor(), d));
}

#[test]
fn frames_corpus() {
    replay("frames", |data| {
        wshub_testkit::check_frames(anchor(), data);
        wshub_testkit::check_frames_differential(data);
    });
}

#[test]
fn hub_ops_corpus() {
    replay("hub_ops", |d| wshub_testkit::check_hub_ops(anchor(), d));
}

#[test]
fn backoff_corpus() {
    replay("backoff", |d| wshub_testkit::check_backoff(anchor(), d));
}

#[test]
fn client_corpus() {
    replay("client", |d| wshub_testkit::check_client_bytes(anchor(), d));
}

#[test]
fn recovery_corpus() {
    replay("recovery", |d| {
        wshub_testkit::check_recovery_bytes(anchor(), d)
    });
}

#[test]
fn broker_corpus() {
    replay("broker", |d| wshub_testkit::check_broker_bytes(anchor(), d));
}
