//! The fuzzer: runs a target on its seed corpus, then on mutations of the
//! corpus, for a time or a number of runs; an input that panics is saved
//! (made smaller first) and reported.
//!
//! There is no coverage instrumentation (the stable toolchain has no
//! sanitizer coverage): the only guidance is the targets' outcome classes,
//! and an input that reaches a new class joins the corpus.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::mutate::Mutator;
use crate::rng::Rng;
use crate::targets::{Features, Target};

/// Inputs kept in a corpus at most (seeds and finds together), so that a
/// long run stays small in memory.
pub const MAX_CORPUS: usize = 512;
/// How long a crash is made smaller before it is saved.
pub const MINIMIZE_TIME: Duration = Duration::from_secs(5);
/// How often a verbose run prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Options {
    /// The same seed (and the same corpus) makes the same inputs.
    pub seed: u64,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many mutated inputs, whichever comes first.
    pub iterations: Option<u64>,
    /// Where a crashing input is saved (`<artifacts>/<target>/crash-<hash>`).
    pub artifacts: PathBuf,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { seed: 1, duration: Some(Duration::from_secs(10)), iterations: None, artifacts: default_artifacts_dir(), verbose: false }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    /// Inputs run, seeds included.
    pub runs: u64,
    pub corpus: usize,
    /// Outcome classes reached.
    pub classes: usize,
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        write!(f, "{}: {} runs in {:.1} s ({:.0}/s), {} outcome classes, corpus {}", self.target, self.runs, secs, self.runs as f64 / secs, self.classes, self.corpus)
    }
}

/// An input that made a target panic.
#[derive(Debug, Clone)]
pub struct Crash {
    pub target: &'static str,
    /// The panic, with its location.
    pub message: String,
    /// The input, made smaller when that kept the same panic.
    pub input: Vec<u8>,
    /// Where it was saved, unless saving failed.
    pub artifact: Option<PathBuf>,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} crashed: {}", self.target, self.message)?;
        writeln!(f, "input ({} bytes): b\"{}\"", self.input.len(), self.input.escape_ascii())?;
        match &self.artifact {
            Some(p) => write!(f, "saved as {} (replay: mailfort-fuzz replay {} {})", p.display(), self.target, p.display()),
            None => write!(f, "(could not be saved)"),
        }
    }
}

/// The seed corpus kept with the fuzz crate.
pub fn default_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

pub fn default_artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts")
}

/// The seeds of `target`: every file in `<dir>/<target>/`, in name order.
pub fn load_corpus(dir: &Path, target: &str) -> io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join(target))?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

thread_local! {
    /// Set while this thread runs a target: its panics are recorded, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic hook that keeps a target's panic message for the report
/// instead of printing it, and leaves every other panic to the hook
/// there was.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                LAST_PANIC.with(|l| *l.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info)
            }
        }));
    });
}

/// Runs `target` on `data`; the panic message if it panicked.
pub fn run_one(target: &Target, data: &[u8], features: &mut Features) -> Result<(), String> {
    install_hook();
    features.clear();
    QUIET.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(data, features)));
    QUIET.with(|q| q.set(false));
    r.map_err(|_| LAST_PANIC.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "panic without a message".into()))
}

/// The panic's location ("panicked at FILE:LINE:COL"), which tells one
/// defect from another while an input is made smaller.
fn panic_site(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

/// Makes a crashing input smaller while it still panics at the same place.
pub fn minimize(target: &Target, input: &[u8], message: &str, budget: Duration) -> Vec<u8> {
    let start = Instant::now();
    let site = panic_site(message).to_string();
    let mut best = input.to_vec();
    let mut features = Features::new();
    let mut chunk = best.len().div_ceil(2).max(1);
    while start.elapsed() < budget {
        let mut i = 0;
        let mut shrunk = false;
        while i < best.len() && start.elapsed() < budget {
            let mut cand = best.clone();
            cand.drain(i..(i + chunk).min(cand.len()));
            match run_one(target, &cand, &mut features) {
                Err(m) if panic_site(&m) == site => {
                    best = cand;
                    shrunk = true;
                }
                _ => i += chunk,
            }
        }
        if chunk == 1 && !shrunk {
            break;
        }
        if !shrunk {
            chunk = (chunk / 2).max(1);
        }
    }
    best
}

fn save_artifact(dir: &Path, target: &str, input: &[u8]) -> io::Result<PathBuf> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    // FNV-1a: a stable name for the same input.
    let h = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let path = dir.join(format!("crash-{h:016x}"));
    std::fs::write(&path, input)?;
    Ok(path)
}

fn crash(target: &'static Target, input: &[u8], message: String, opts: &Options) -> Crash {
    let small = minimize(target, input, &message, MINIMIZE_TIME);
    let mut features = Features::new();
    let message = run_one(target, &small, &mut features).err().unwrap_or(message);
    let artifact = save_artifact(&opts.artifacts, target.name, &small).ok();
    Crash { target: target.name, message, input: small, artifact }
}

/// Fuzzes `target` from `seeds` until the options' time or run count is
/// used up, or until an input panics.
pub fn fuzz(target: &'static Target, seeds: Vec<Vec<u8>>, opts: &Options) -> Result<Report, Crash> {
    let start = Instant::now();
    let mut rng = Rng::new(opts.seed);
    let mut seen = HashSet::new();
    let mut features = Features::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut runs = 0u64;
    for s in seeds.into_iter().chain(std::iter::once(Vec::new())) {
        runs += 1;
        if let Err(m) = run_one(target, &s, &mut features) {
            return Err(crash(target, &s, m, opts));
        }
        seen.extend(features.iter());
        corpus.push(s);
    }
    corpus.truncate(MAX_CORPUS);
    let mutator = Mutator { dict: target.dict, max_len: target.max_len };
    let mut mutated = 0u64;
    let mut last_progress = Instant::now();
    loop {
        if opts.iterations.is_some_and(|n| mutated >= n) || opts.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let mut input = rng.pick(&corpus).clone();
        mutator.mutate(&mut rng, &mut input, &corpus);
        mutated += 1;
        runs += 1;
        if let Err(m) = run_one(target, &input, &mut features) {
            return Err(crash(target, &input, m, opts));
        }
        let before = seen.len();
        seen.extend(features.iter());
        if seen.len() > before {
            if corpus.len() < MAX_CORPUS {
                corpus.push(input);
            } else {
                let i = rng.below(corpus.len());
                corpus[i] = input;
            }
        }
        if opts.verbose && last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!("{}: {} runs, {} classes, corpus {}", target.name, runs, seen.len(), corpus.len());
        }
    }
    Ok(Report { target: target.name, runs, corpus: corpus.len(), classes: seen.len(), elapsed: start.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boom(data: &[u8], _: &mut Features) {
        assert!(!data.windows(3).any(|w| w == b"BAD"), "found it");
    }

    static BOOM: Target = Target { name: "boom", about: "", run: boom, dict: &[b"BAD"], max_len: 64 };

    #[test]
    fn a_panic_is_caught_made_smaller_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { seed: 3, duration: Some(Duration::from_secs(20)), iterations: None, artifacts: dir.path().to_path_buf(), verbose: false };
        let c = fuzz(&BOOM, vec![b"hello world, nothing here".to_vec()], &opts).unwrap_err();
        assert!(c.message.contains("found it"), "{}", c.message);
        assert_eq!(c.input, b"BAD");
        assert_eq!(std::fs::read(c.artifact.unwrap()).unwrap(), b"BAD");
    }

    #[test]
    fn the_same_seed_runs_the_same_inputs() {
        fn count(data: &[u8], f: &mut Features) {
            f.note(data.len() % 7);
        }
        static COUNT: Target = Target { name: "count", about: "", run: count, dict: &[], max_len: 64 };
        let opts = Options { seed: 9, duration: None, iterations: Some(500), artifacts: PathBuf::from("unused"), verbose: false };
        let a = fuzz(&COUNT, vec![b"abc".to_vec()], &opts).unwrap();
        let b = fuzz(&COUNT, vec![b"abc".to_vec()], &opts).unwrap();
        assert_eq!((a.runs, a.corpus, a.classes), (b.runs, b.corpus, b.classes));
        assert_eq!(a.runs, 502);
    }
}
