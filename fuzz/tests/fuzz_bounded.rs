//! Every fuzz target for a few seconds from its seed corpus: what CI runs
//! of the fuzzer. A longer run is `mailfort-fuzz all --seconds N`.

use std::time::Duration;

use fuzz::engine::{self, Options};
use fuzz::targets::{self, TARGETS};

/// How long each target runs here: 8 targets stay under a minute in all.
const SECONDS_PER_TARGET: u64 = 5;
/// A fixed seed, so that a run is the same from one CI run to the next
/// (up to how many inputs fit in the time).
const SEED: u64 = 0x6d61_696c_666f_7274;

fn fuzz_for_a_while(name: &str) {
    let t = targets::find(name).unwrap_or_else(|| panic!("no target {name}"));
    let seeds = engine::load_corpus(&engine::default_corpus_dir(), name).expect("the target's seed corpus");
    assert!(!seeds.is_empty(), "{name} has no seeds in corpus/{name}/");
    let n = seeds.len() as u64;
    let opts = Options { seed: SEED, duration: Some(Duration::from_secs(SECONDS_PER_TARGET)), iterations: None, artifacts: engine::default_artifacts_dir(), verbose: false };
    match engine::fuzz(t, seeds, &opts) {
        Ok(report) => {
            println!("{report}");
            assert!(report.runs > n + 100, "{name} ran only {} inputs", report.runs);
        }
        Err(crash) => panic!("{crash}"),
    }
}

#[test]
fn every_target_is_tested_here() {
    let names = ["smtp", "pop3", "data", "line", "sasl", "multipart", "forms", "cert"];
    assert_eq!(TARGETS.iter().map(|t| t.name).collect::<Vec<_>>(), names);
    assert!(TARGETS.len() as u64 * SECONDS_PER_TARGET < 60);
}

#[test]
fn fuzz_smtp() {
    fuzz_for_a_while("smtp");
}

#[test]
fn fuzz_pop3() {
    fuzz_for_a_while("pop3");
}

#[test]
fn fuzz_data() {
    fuzz_for_a_while("data");
}

#[test]
fn fuzz_line() {
    fuzz_for_a_while("line");
}

#[test]
fn fuzz_sasl() {
    fuzz_for_a_while("sasl");
}

#[test]
fn fuzz_multipart() {
    fuzz_for_a_while("multipart");
}

#[test]
fn fuzz_forms() {
    fuzz_for_a_while("forms");
}

#[test]
fn fuzz_cert() {
    fuzz_for_a_while("cert");
}

/// Inputs that once broke a target's invariants: `regressions/<target>/*`,
/// each replayed as it is.
fn replay_regressions(name: &str) {
    let t = targets::find(name).unwrap_or_else(|| panic!("no target {name}"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let inputs = engine::load_corpus(&dir, name).expect("the target's regression inputs");
    assert!(!inputs.is_empty());
    for input in inputs {
        if let Err(m) = engine::run_one(t, &input, &mut targets::Features::new()) {
            panic!("{m}\ninput: b\"{}\"", input.escape_ascii());
        }
    }
}

/// A certificate whose subjectAltName extension is malformed (one base64
/// character of a dNSName changed): the upload was refused ("invalid
/// extensions") after the file had been saved, so the refused certificate
/// became the cluster's, and the console could no longer read it.
#[test]
fn cert_regressions() {
    replay_regressions("cert");
}
