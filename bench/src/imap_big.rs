//! SELECT and FETCH 1:* (FLAGS) of a big folder: the folder is filled by
//! writing files into its Maildir (`fill`), then a fresh session times
//! SELECT INBOX and FETCH 1:* (FLAGS), K times: the first (the server
//! meets 100,000 new files) and the warm ones. Before each session all
//! dirty pages are written back (sync), so that no session pays for the
//! write-back of the files written or renamed before it.

use crate::fill;
use crate::imap::Mbox;
use crate::imapc::{item, Tok};
use crate::stats::median_ms;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct SelectBigArgs {
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub password: String,
    /// The user's INBOX on disk (a Maildir): filled up to --messages
    /// (skip the fill with --no-fill).
    #[arg(long)]
    pub maildir: Option<PathBuf>,
    /// Messages the folder should hold.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Size of the written messages.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Owner UID:GID of the written files.
    #[arg(long)]
    pub owner: Option<String>,
    /// Sessions, one after another, each timing SELECT and FETCH.
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
    /// Seconds between sessions. Both servers look at a folder again when
    /// its directories changed very recently (mailfort: within 2 s, it
    /// then re-reads its UID record and the directories for every command),
    /// so a pause past that measures the settled folder.
    #[arg(long, default_value_t = 3.0)]
    pub pause: f64,
    /// Timeout in seconds for each connect, write and response.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

pub async fn run(a: SelectBigArgs) -> Result<bool> {
    if a.repeat == 0 {
        bail!("--repeat: at least 1");
    }
    if let Some(dir) = a.maildir.clone() {
        let t0 = Instant::now();
        let (want, size, owner) = (a.messages, a.size, a.owner.clone());
        let d2 = dir.clone();
        let wrote = tokio::task::spawn_blocking(move || fill::fill(&d2, want, size, owner.as_deref())).await??;
        println!("fill: wrote {wrote} messages of ~{} bytes into {}/new in {:.1} s", a.size, dir.display(), t0.elapsed().as_secs_f64());
    }
    let t = Duration::from_secs(a.timeout);
    let mut selects = Vec::new();
    let mut fetches = Vec::new();
    let mut ok = true;
    println!("{:<6} {:>10} {:>12} {:>14} {:>10}", "run", "EXISTS", "SELECT ms", "FETCH 1:* ms", "FETCHes");
    for k in 0..a.repeat {
        // Not timed: the write-back of the fill, or of the renames the
        // last session made the server do, finishes first.
        if k > 0 {
            tokio::time::sleep(Duration::from_secs_f64(a.pause)).await;
        }
        tokio::task::spawn_blocking(fill::sync_all).await?;
        let (mut c, _, _) = crate::imap::connect_login(&a.target, None, t, &a.user, &a.password).await?;
        let mut mb = Mbox::default();
        let t0 = Instant::now();
        c.command_ok("SELECT INBOX", &mut |r| mb.on(r)).await?;
        let sel = t0.elapsed();
        let exists = mb.exists();
        let mut n = 0u64;
        let mut flagless = 0u64;
        let t1 = Instant::now();
        if exists > 0 {
            c.command_ok("FETCH 1:* (FLAGS)", &mut |r| {
                if let Some((_, items)) = r.fetch() {
                    if matches!(item(&items, "FLAGS"), Some(Tok::List(_))) {
                        n += 1;
                    } else {
                        flagless += 1;
                    }
                }
            })
            .await?;
        }
        let fetch = t1.elapsed();
        c.logout().await;
        println!("{:<6} {:>10} {:>12.1} {:>14.1} {:>10}", k + 1, exists, sel.as_secs_f64() * 1000.0, fetch.as_secs_f64() * 1000.0, n);
        if (exists as u64) < a.messages || n != exists as u64 || flagless > 0 {
            println!("error: run {}: EXISTS {exists} (want {} at least), {n} FETCH responses with FLAGS, {flagless} without", k + 1, a.messages);
            ok = false;
        }
        selects.push(sel);
        fetches.push(fetch);
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let (sw, fw) = if selects.len() > 1 { (median_ms(&selects[1..]), median_ms(&fetches[1..])) } else { (0.0, 0.0) };
    println!("SELECT: first {:.1} ms, warm median {:.1} ms; FETCH 1:* (FLAGS): first {:.1} ms, warm median {:.1} ms", ms(&selects[0]), sw, ms(&fetches[0]), fw);
    println!(
        "summary: proto=imap-select-big messages={} repeat={} select_first_ms={:.1} select_warm_ms={sw:.1} fetch_first_ms={:.1} fetch_warm_ms={fw:.1}",
        a.messages,
        a.repeat,
        ms(&selects[0]),
        ms(&fetches[0])
    );
    Ok(ok)
}
