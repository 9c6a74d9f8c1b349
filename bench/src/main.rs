//! mailfort-bench: load generators for SMTP ingest, POP3 retrieval and IMAP.
//!
//! Meant for loopback targets on the machine under test; every loop ends by
//! count or time and every network step has a timeout.

mod fill;
mod imap;
mod imap_big;
mod imap_idle;
mod imapc;
mod limits;
mod logins;
mod maildir;
mod msg;
mod net;
mod pop3;
mod smtp;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mailfort-bench",
    version,
    about = "SMTP ingest, POP3 retrieval and IMAP load generator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send messages over concurrent SMTP connections and report throughput,
    /// latency and (optionally) server memory and Maildir integrity.
    Smtp(smtp::SmtpArgs),
    /// Retrieve whole mailboxes over POP3 and report throughput.
    Pop3(pop3::Pop3Args),
    /// Wrong passwords in parallel (submission and POP3) and the node's
    /// resident memory after them, over idle.
    Logins(logins::LoginsArgs),
    /// Many IMAP sessions on one or many mailboxes running a mix of SELECT,
    /// FETCH, STORE, APPEND and EXPUNGE: ops/s and latency per command.
    Imap(imap::ImapArgs),
    /// One session IDLEs on INBOX while messages are delivered (over SMTP
    /// or into the Maildir): time until `* n EXISTS`.
    ImapIdle(imap_idle::IdleArgs),
    /// Many sessions idling at once and the server's memory with them.
    ImapIdleMany(imap_idle::IdleManyArgs),
    /// SELECT and FETCH 1:* (FLAGS) of a folder of 100,000 messages.
    ImapSelectBig(imap_big::SelectBigArgs),
    /// Writes messages straight into a Maildir's new/ (fast test data).
    FillMaildir(fill::FillArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailfort-bench: runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let res = rt.block_on(async {
        match cli.cmd {
            Cmd::Smtp(a) => smtp::run(a).await,
            Cmd::Pop3(a) => pop3::run(a).await,
            Cmd::Logins(a) => logins::run(a).await,
            Cmd::Imap(a) => imap::run(a).await,
            Cmd::ImapIdle(a) => imap_idle::run_idle(a).await,
            Cmd::ImapIdleMany(a) => imap_idle::run_idle_many(a).await,
            Cmd::ImapSelectBig(a) => imap_big::run(a).await,
            Cmd::FillMaildir(a) => fill::run(a).await,
        }
    });
    match res {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("mailfort-bench: FAILED (see above)");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("mailfort-bench: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
