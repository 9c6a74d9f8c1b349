//! Fills a Maildir fast by writing message files straight into its `new/`
//! (as a delivery agent would: tmp/ first, then a rename), for the tests
//! that need a big folder (IMAP SELECT of 100,000 messages, POP3 STAT of
//! thousands) without delivering each message over SMTP.

use crate::msg;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug, Clone)]
pub struct FillArgs {
    /// The Maildir (the directory holding new/, cur/ and tmp/; created if
    /// missing).
    #[arg(long)]
    pub maildir: PathBuf,
    /// Messages the Maildir should hold in new/ and cur/ together; only the
    /// missing ones are written.
    #[arg(long)]
    pub messages: u64,
    /// Approximate size of each message in bytes.
    #[arg(long, default_value_t = 2048)]
    pub size: usize,
    /// Owner of the written directories and files, UID:GID (numeric), for a
    /// server that runs as another user (Dovecot's vmail).
    #[arg(long)]
    pub owner: Option<String>,
}

/// Messages (not dot files) in `dir/new` and `dir/cur`.
pub fn count(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        match std::fs::read_dir(&d) {
            Ok(rd) => {
                for e in rd {
                    let e = e?;
                    if !e.file_name().to_string_lossy().starts_with('.') {
                        n += 1;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", d.display())),
        }
    }
    Ok(n)
}

fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let (u, g) = s.split_once(':').context("--owner: UID:GID")?;
    Ok((u.parse().context("--owner: numeric UID")?, g.parse().context("--owner: numeric GID")?))
}

fn chown(p: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(p, Some(u), Some(g)).with_context(|| format!("chown {}", p.display()))?;
    }
    Ok(())
}

/// Writes messages into `dir/new` until it holds `want`; returns how many
/// were written. Names are `<secs>.<micros>_<n>.bench`, unique within the
/// run (the counter) and across runs (the clock); the files are not
/// fsynced (the benchmarks read them, they need not survive a crash).
pub fn fill(dir: &Path, want: u64, size: usize, owner: Option<&str>) -> Result<u64> {
    let owner = owner.map(parse_owner).transpose()?;
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        chown(dir, owner)?;
    }
    for sub in ["new", "cur", "tmp"] {
        let d = dir.join(sub);
        if !d.is_dir() {
            std::fs::create_dir(&d).with_context(|| format!("create {}", d.display()))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            chown(&d, owner)?;
        }
    }
    let have = count(dir)?;
    if have >= want {
        return Ok(0);
    }
    let run = msg::new_run_id();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = (now.as_secs(), now.subsec_micros());
    let tmp = dir.join("tmp");
    let new = dir.join("new");
    let todo = want - have;
    for n in 0..todo {
        let body = msg::raw(&run, n, size, "bench@sender.test", "fill@example.test");
        let name = format!("{secs}.{micros:06}_{n}.bench");
        let t = tmp.join(&name);
        std::fs::write(&t, &body).with_context(|| format!("write {}", t.display()))?;
        chown(&t, owner)?;
        let dst = new.join(&name);
        if dst.exists() {
            bail!("{} exists already", dst.display());
        }
        std::fs::rename(&t, &dst).with_context(|| format!("rename to {}", dst.display()))?;
    }
    Ok(todo)
}

/// Writes every dirty page of the machine back (sync(2)), so that a timed
/// step after a fill (or after a server renamed many files) does not share
/// the disk with that write-back.
pub fn sync_all() {
    // SAFETY: sync() takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

pub async fn run(a: FillArgs) -> Result<bool> {
    let start = Instant::now();
    let (dir, want, size, owner) = (a.maildir.clone(), a.messages, a.size, a.owner.clone());
    let wrote = tokio::task::spawn_blocking(move || fill(&dir, want, size, owner.as_deref())).await??;
    let secs = start.elapsed().as_secs_f64();
    println!("fill: wrote {wrote} messages of ~{} bytes into {}/new in {secs:.2} s", a.size, a.maildir.display());
    println!("summary: proto=fill written={wrote} total={} elapsed_s={secs:.3}", count(&a.maildir)?);
    Ok(true)
}
