//! The `mailfort` binary the process tests run.
//!
//! `env!("CARGO_BIN_EXE_mailfort")` exists only in the mailfort package's
//! own tests; its one integration test makes `cargo test --workspace` and
//! `cargo nextest run --workspace` build the binary with everything else.
//! The binary is looked for where Cargo puts it, `target/<profile>/mailfort`
//! beside the test executable's `deps/`. If it is missing, or older than a
//! source file of the crates under `firmware/` (tests run with `-p`), it is built
//! once per test run with `cargo build -p mailfort --bin mailfort`: a
//! stale binary would test the wrong code. `MAILFORT_BIN=PATH` runs a given
//! binary instead and builds nothing.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The environment variable that names a prebuilt binary.
pub const BIN_ENV: &str = "MAILFORT_BIN";

/// The path of an up-to-date `mailfort` binary; builds it on the first
/// call of a test run. Panics with the reason if it cannot.
pub fn mailfort_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os(BIN_ENV) {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "{BIN_ENV}={} is not a file", p.display());
            return p;
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()));
        let bin = profile_dir.join("mailfort");
        if let Some(why) = needs_build(&bin) {
            build(&exe, profile_dir, &why);
        }
        assert!(bin.is_file(), "cargo build did not leave {}", bin.display());
        bin
    })
}

/// Runs `cargo build -p mailfort --bin mailfort` for `profile_dir`'s
/// profile unless this run (same parent process, same test executable)
/// did already; tests in other processes wait on a lock meanwhile.
fn build(exe: &Path, profile_dir: &Path, why: &str) {
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(profile_dir.join(".mailfort-bin.lock")).expect("open the build lock");
    // SAFETY: flock on a descriptor this function owns; released on close.
    let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
    let stamp = profile_dir.join(".mailfort-bin.run");
    let run = run_key(exe);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == run) && profile_dir.join("mailfort").is_file() {
        return;
    }
    eprintln!("building the mailfort binary: {why}");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("no profile in {}", profile_dir.display()),
    };
    let target_dir = profile_dir.parent().expect("target dir");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "mailfort", "--bin", "mailfort", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the mailfort binary ({e}); build it with `cargo build -p mailfort` or set {BIN_ENV}"));
    assert!(
        out.status.success(),
        "`cargo build -p mailfort --bin mailfort --profile {profile}` failed; the process tests need the binary:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut f = std::fs::File::create(&stamp).expect("write the build stamp");
    f.write_all(run.as_bytes()).expect("write the build stamp");
}

/// What one test run has in common across its test processes: the parent
/// (nextest, or cargo for `cargo test`) with its start time, and the test
/// executable's build time.
fn run_key(exe: &Path) -> String {
    let ppid = std::os::unix::process::parent_id();
    // Field 22 of /proc/PID/stat, after the parenthesised command name.
    let started = std::fs::read_to_string(format!("/proc/{ppid}/stat")).ok().and_then(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().nth(19).map(str::to_string))).unwrap_or_default();
    let built = std::fs::metadata(exe).and_then(|m| m.modified()).map(|t| format!("{t:?}")).unwrap_or_default();
    format!("{ppid} {started} {built}")
}

/// The crates the binary is built from: every one under `firmware/` but
/// this one.
const NOT_IN_THE_BINARY: &[&str] = &["testsupport"];

/// Why the binary must be built: missing, or a source newer than it.
fn needs_build(bin: &Path) -> Option<String> {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return Some(format!("{} is missing", bin.display()));
    };
    // Sources only: Cargo rebuilds on a newer source file, but not on
    // every change of a manifest or the lock file, so those would make a
    // fresh binary look stale.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut inputs = Vec::new();
    for krate in std::fs::read_dir(root.join("firmware")).into_iter().flatten().flatten() {
        if NOT_IN_THE_BINARY.iter().any(|n| krate.file_name() == *n) {
            continue;
        }
        collect_files(&krate.path().join("src"), &mut inputs);
    }
    inputs.into_iter().find(|p| std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t > built)).map(|p| format!("{} is newer than {}", p.display(), bin.display()))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}
