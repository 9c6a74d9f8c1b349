//! A temporary store with users, made and changed with `mailfort`
//! commands as an administrator runs them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A command running the `mailfort` binary ([`crate::bin::mailfort_bin`]).
pub fn mailfort() -> Command {
    Command::new(crate::bin::mailfort_bin())
}

/// Runs `mailfort ARGS` with `stdin` and returns its output.
pub fn run(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut c = mailfort().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run mailfort");
    // The command may exit before reading (a bad address): ignore EPIPE.
    let _ = c.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    c.wait_with_output().expect("wait mailfort")
}

/// A command's stdout and stderr together, for messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl Fixture {
    /// A store for example.test with alice (password "secret") and bob
    /// (password "hunter2").
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let o = run(&["store", "init", store.to_str().expect("utf8 path"), "--domain", "example.test"], "");
        assert!(o.status.success(), "store init: {}", text(&o));
        let f = Fixture { dir, store };
        f.add_user("alice@example.test", "secret");
        f.add_user("bob@example.test", "hunter2");
        f
    }

    pub fn store_arg(&self) -> &str {
        self.store.to_str().expect("utf8 path")
    }

    pub fn add_user(&self, addr: &str, pw: &str) {
        let o = run(&["user", "add", "--store", self.store_arg(), addr, "--password-stdin"], &format!("{pw}\n"));
        assert!(o.status.success(), "user add: {}", text(&o));
    }

    /// A config file with short failure delays, so tests of wrong
    /// passwords stay quick.
    pub fn fast_config(&self, extra: &str) -> PathBuf {
        let p = self.dir.path().join(format!("node-{}.toml", rand_tag()));
        // Delivery to other domains is off unless a test sets it up: the
        // queue runner would otherwise try the tests' made-up domains.
        let outbound = if extra.contains("[outbound]") { "" } else { "[outbound]\nenabled = false\n" };
        std::fs::write(&p, format!("[limits]\nauth_fail_delay_ms = 100\nauth_fail_delay_max_ms = 400\n{extra}\n{outbound}")).expect("write config");
        p
    }

    /// Files in alice's (or anyone's) new/ and cur/.
    pub fn mailbox_files(&self, addr: &str) -> Vec<PathBuf> {
        let (local, domain) = addr.split_once('@').expect("address");
        let md = self.store.join("mail").join(domain).join(local);
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(md.join(sub)) {
                v.extend(rd.flatten().map(|e| e.path()));
            }
        }
        v.sort();
        v
    }
}

/// A number no other call in this process returns.
fn rand_tag() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}


/// Every entry under `dir` whose mode is not 0600 (files) or 0700
/// (directories), with its mode, added to `out` (the store's rule,
/// whatever the umask).
pub fn loose_modes(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let m = std::fs::symlink_metadata(e.path()).expect("stat");
        let mode = m.permissions().mode() & 0o777;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{} {:o}", e.path().display(), mode));
        }
        if m.is_dir() {
            loose_modes(&e.path(), out);
        }
    }
}
