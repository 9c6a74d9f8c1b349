//! `cargo xtask qemu bench`: how fast the boxes boot under QEMU (TCG), and
//! how big the images are. A benchmark, not a test: it prints numbers.
//!
//! 1. The storage box alone: QEMU start to init running (the kernel's
//!    "Run /init" line on the console) and to NFS accepting connections.
//! 2. node1 alone, with the storage box up: to init running and to SMTP
//!    greeting with 220.
//! 3. The whole layout from cold (four VMs at once): until every box serves
//!    and the DNS server lists all three MX records.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::board::Role;
use crate::image::{self, mb, Image};
use crate::layout::{self, Layout, UpOptions, CLUSTER_UP_TIMEOUT, MAIL_BOXES};

/// The kernel's line just before it executes /init.
pub const INIT_MARKER: &str = "Run /init as init process";
/// init's first line (board/qemu-x86_64/CMDLINE.md).
pub const MAILFORT_INIT_MARKER: &str = "mailfort init";
/// The storage box's NFSv4 grace period: a mail box mounting during it
/// waits for its end, which is not the mail box's boot time.
const NFS_GRACE: Duration = Duration::from_secs(15);
const BENCH_LAYOUT: &str = "mailfort-bench";

pub fn run(build: bool, mailfort: Option<PathBuf>) -> anyhow::Result<()> {
    if build {
        image::build(&image::BuildOptions { board: layout::BOARD.into(), roles: Role::ALL.to_vec(), mailfort })?;
    }
    let l = Layout::new(BENCH_LAYOUT)?;
    if l.is_up() {
        l.down()?;
    }
    let result = measure(&l);
    let down = l.down();
    let rows = result?;
    down?;
    println!();
    println!("| what | seconds |");
    println!("|---|---|");
    for (what, secs) in rows {
        println!("| {what} | {secs} |");
    }
    for role in Role::ALL {
        let img = Image::existing(layout::BOARD, role)?;
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!(
            "| {role} image: bzImage + initramfs | {} + {} = {} |",
            mb(size(&img.bzimage)),
            mb(size(&img.initramfs)),
            mb(size(&img.bzimage) + size(&img.initramfs))
        );
    }
    Ok(())
}

fn secs(from: Instant, to: Instant) -> String {
    format!("{:.1}", (to - from).as_secs_f64())
}

fn measure(l: &Layout) -> anyhow::Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    let timeout = CLUSTER_UP_TIMEOUT;

    // 1 and 2: one box at a time on a quiet machine.
    l.up(&UpOptions { build: false, mailfort: None, wait: None, boxes: Some(vec!["storage".into()]) })?;
    let booted = Instant::now();
    let init = l.wait_console("storage", INIT_MARKER, timeout)?;
    let running = l.wait_console("storage", MAILFORT_INIT_MARKER, timeout)?;
    let serving = l.wait_serving("storage", timeout)?;
    rows.push(("storage box alone: QEMU start to the kernel running /init".into(), secs(booted, init)));
    rows.push(("storage box alone: QEMU start to init's first line".into(), secs(booted, running)));
    rows.push(("storage box alone: QEMU start to NFS accepting (first boot: mkfs.btrfs included)".into(), secs(booted, serving)));

    // A mail box's own boot, without the storage box's grace period in it.
    std::thread::sleep(NFS_GRACE + Duration::from_secs(5));
    let started = Instant::now();
    l.start("node1", &Default::default())?;
    let init = l.wait_console("node1", INIT_MARKER, timeout)?;
    let running = l.wait_console("node1", MAILFORT_INIT_MARKER, timeout)?;
    let serving = l.wait_serving("node1", timeout)?;
    rows.push(("mail box alone (storage up): QEMU start to the kernel running /init".into(), secs(started, init)));
    rows.push(("mail box alone (storage up): QEMU start to init's first line".into(), secs(started, running)));
    rows.push(("mail box alone (storage up): QEMU start to SMTP 220".into(), secs(started, serving)));
    l.down()?;

    // 3: the whole layout from cold.
    let started = Instant::now();
    l.up(&UpOptions { build: false, mailfort: None, wait: None, boxes: None })?;
    let mut last = started;
    for b in layout::boxes() {
        let t = l.wait_serving(&b.name, timeout.saturating_sub(started.elapsed()))?;
        rows.push((format!("whole layout: {} serving", b.name), secs(started, t)));
        last = last.max(t);
    }
    let dns = crate::wait::until("all MX records", timeout.saturating_sub(started.elapsed()), Duration::from_millis(250), || {
        l.mx().ok().filter(|mx| mx.len() == MAIL_BOXES as usize).map(|_| Instant::now())
    })?;
    rows.push(("whole layout: every box serving".into(), secs(started, last)));
    rows.push(("whole layout: every box serving and 3 MX in DNS".into(), secs(started, dns.max(last))));
    Ok(rows)
}
