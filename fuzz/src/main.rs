//! `mailfort-fuzz`: runs the fuzz targets, or fuzzes a live node.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fuzz::engine::{self, Options};
use fuzz::net::{self, Account, Allowance, Budget, NetOptions};
use fuzz::targets::{self, TARGETS};

#[derive(Parser)]
#[command(name = "mailfort-fuzz", about = "Fuzz mailfort's parsers, or a live node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Seconds to run (each target, with `all`).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many mutated inputs instead (deterministic with --seed).
    #[arg(long)]
    iterations: Option<u64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed corpus directory (holding one directory per target).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where crashing inputs are saved.
    #[arg(long)]
    artifacts: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The targets.
    List,
    /// Fuzzes one target.
    Run {
        target: String,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Fuzzes every target in turn.
    All {
        #[command(flatten)]
        args: RunArgs,
    },
    /// Runs a target on the given inputs (a saved crash, say).
    Replay { target: String, files: Vec<PathBuf> },
    /// Fuzzes a live node with mutated sessions and prints its RSS.
    Net {
        /// The node's SMTP port (25).
        #[arg(long)]
        target_smtp: Option<SocketAddr>,
        /// The node's submission port, with plaintext AUTH allowed.
        #[arg(long)]
        target_submission: Option<SocketAddr>,
        #[arg(long)]
        target_pop3: Option<SocketAddr>,
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Seconds instead of minutes.
        #[arg(long)]
        seconds: Option<u64>,
        /// The node's process id, for its RSS.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Client addresses to connect from, comma-separated (e.g. several
        /// of 127.0.0.0/8).
        #[arg(long, value_delimiter = ',')]
        source: Vec<IpAddr>,
        #[arg(long, default_value = "alice@example.test")]
        user: String,
        #[arg(long, default_value = "secret")]
        password: String,
        /// A second local address to send mail to.
        #[arg(long, default_value = "bob@example.test")]
        other: String,
        /// Wrong passwords tried per minute, all connections together.
        #[arg(long, default_value_t = 30)]
        wrong_passwords_per_minute: u64,
        /// Logins with the right password per minute.
        #[arg(long, default_value_t = 60)]
        logins_per_minute: u64,
        /// Seconds between RSS lines.
        #[arg(long, default_value_t = 10)]
        every: u64,
        /// Milliseconds to wait for a reply before the next step.
        #[arg(long, default_value_t = 500)]
        reply_wait_ms: u64,
    },
}

fn options(a: &RunArgs) -> Options {
    Options { seed: a.seed, duration: Some(Duration::from_secs(a.seconds)), iterations: a.iterations, artifacts: a.artifacts.clone().unwrap_or_else(engine::default_artifacts_dir), verbose: true }
}

/// Fuzzes one target on a thread of its own (whose thread-local state, the
/// certificate target's temporary store, goes when it ends).
fn run_target(t: &'static targets::Target, a: &RunArgs) -> bool {
    let dir = a.corpus.clone().unwrap_or_else(engine::default_corpus_dir);
    let seeds = match engine::load_corpus(&dir, t.name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: no seed corpus in {}: {e}; starting from nothing", t.name, dir.join(t.name).display());
            Vec::new()
        }
    };
    let opts = options(a);
    let r = std::thread::spawn(move || engine::fuzz(t, seeds, &opts)).join().expect("the fuzzer thread");
    match r {
        Ok(report) => {
            println!("{report}");
            true
        }
        Err(crash) => {
            eprintln!("{crash}");
            false
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::List => {
            for t in TARGETS {
                println!("{:<10} {}", t.name, t.about);
            }
            ExitCode::SUCCESS
        }
        Cmd::Run { target, args } => match targets::find(&target) {
            Some(t) => {
                if run_target(t, &args) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            None => {
                eprintln!("no target {target}; `mailfort-fuzz list` names them");
                ExitCode::from(2)
            }
        },
        Cmd::All { args } => {
            let ok = TARGETS.iter().map(|t| run_target(t, &args)).fold(true, |a, b| a && b);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Replay { target, files } => {
            let Some(t) = targets::find(&target) else {
                eprintln!("no target {target}");
                return ExitCode::from(2);
            };
            let mut ok = true;
            for f in files {
                let data = match std::fs::read(&f) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        ok = false;
                        continue;
                    }
                };
                match engine::run_one(t, &data, &mut targets::Features::new()) {
                    Ok(()) => println!("{}: ok", f.display()),
                    Err(m) => {
                        println!("{}: {m}", f.display());
                        ok = false;
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Net { target_smtp, target_submission, target_pop3, minutes, seconds, pid, connections, seed, source, user, password, other, wrong_passwords_per_minute, logins_per_minute, every, reply_wait_ms } => {
            let duration = Duration::from_secs(seconds.unwrap_or(minutes * 60));
            let opts = NetOptions { smtp: target_smtp, submission: target_submission, pop3: target_pop3, connections, duration, seed, sources: source, account: Account { login: user, password, other }, reply_wait: Duration::from_millis(reply_wait_ms) };
            let budget = Budget::new(Allowance::new(1, wrong_passwords_per_minute), Allowance::new(1, logins_per_minute));
            let mib = |kib: u64| kib as f64 / 1024.0;
            let start = std::time::Instant::now();
            let rss = || pid.and_then(|p| net::rss_kib(p).ok());
            let before = rss();
            if let Some(k) = before {
                println!("t=0s rss={:.1} MiB", mib(k));
            }
            let mut peak = before.unwrap_or(0);
            let stats = net::fuzz_network(&opts, &budget, Duration::from_secs(every.max(1)), |s| {
                let r = rss();
                if let Some(k) = r {
                    peak = peak.max(k);
                }
                println!("t={}s rss={} {}", start.elapsed().as_secs(), r.map_or("?".into(), |k| format!("{:.1} MiB", mib(k))), s.summary());
            });
            println!("done after {}s: {}", start.elapsed().as_secs(), stats.summary());
            println!("password checks asked for: wrong={} right={}", budget.wrong.used(), budget.right.used());
            match (pid, rss()) {
                (Some(p), Some(k)) => {
                    peak = peak.max(k);
                    println!("rss at end: {:.1} MiB (start {:.1} MiB, peak {:.1} MiB); target: under 64 MiB after 10 minutes", mib(k), mib(before.unwrap_or(0)), mib(peak));
                    let _ = p;
                    ExitCode::SUCCESS
                }
                (Some(p), None) => {
                    println!("the node (pid {p}) is gone");
                    ExitCode::FAILURE
                }
                (None, _) => ExitCode::SUCCESS,
            }
        }
    }
}
