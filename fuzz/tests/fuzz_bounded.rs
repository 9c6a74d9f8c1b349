//! Every fuzz target for a fixed number of mutated inputs from its seed
//! corpus: what CI runs of the fuzzer. A longer run is `mailfort-fuzz all
//! --seconds N`.

use fuzz::engine::{self, Options};
use fuzz::targets::{self, TARGETS};

/// Mutated inputs per target. A count, not a time: the same inputs run on
/// a fast machine and on a loaded one (the seed is fixed), so the test
/// checks the same ground every time. The certificate target parses,
/// verifies and proves a TLS handshake per input, so it gets fewer.
const MUTATIONS: &[(&str, u64)] =
    &[("smtp", 3000), ("pop3", 3000), ("imap", 3000), ("data", 3000), ("line", 3000), ("sasl", 3000), ("multipart", 2000), ("forms", 1000), ("cert", 100)];
/// A fixed seed, so that a run is the same from one CI run to the next.
const SEED: u64 = 0x6d61_696c_666f_7274;

fn fuzz_for_a_while(name: &str) {
    let t = targets::find(name).unwrap_or_else(|| panic!("no target {name}"));
    let mutations = MUTATIONS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m).unwrap_or_else(|| panic!("no mutation count for {name}"));
    let seeds = engine::load_corpus(&engine::default_corpus_dir(), name).expect("the target's seed corpus");
    assert!(!seeds.is_empty(), "{name} has no seeds in corpus/{name}/");
    let n = seeds.len() as u64;
    let opts = Options { seed: SEED, duration: None, iterations: Some(mutations), artifacts: engine::default_artifacts_dir(), verbose: false };
    match engine::fuzz(t, seeds, &opts) {
        Ok(report) => {
            println!("{report}");
            // The seeds, the empty input, then every mutation.
            assert_eq!(report.runs, n + 1 + mutations, "{name}: every planned input ran");
        }
        Err(crash) => panic!("{crash}"),
    }
}

#[test]
fn every_target_is_tested_here() {
    let names = ["smtp", "pop3", "imap", "data", "line", "sasl", "multipart", "forms", "cert"];
    assert_eq!(TARGETS.iter().map(|t| t.name).collect::<Vec<_>>(), names);
    assert_eq!(MUTATIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>(), names);
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
fn fuzz_imap() {
    fuzz_for_a_while("imap");
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
