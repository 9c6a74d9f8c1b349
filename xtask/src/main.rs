//! `cargo xtask image|qemu`: see xtask's library for what each does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use xtask::board::Role;
use xtask::layout::{self, Layout, StartOptions, UpOptions};
use xtask::{bench, console, image};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build mailfort's appliance images and run them under QEMU")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a board's kernel + initramfs for a role (both roles by default).
    Image {
        #[arg(long, default_value = layout::BOARD)]
        board: String,
        /// mail or storage; repeat for both (the default).
        #[arg(long)]
        role: Vec<Role>,
        /// Use this statically linked mailfort instead of building one.
        #[arg(long)]
        mailfort: Option<PathBuf>,
    },
    /// The four-box layout under QEMU (needs root).
    #[command(subcommand)]
    Qemu(QemuCmd),
}

#[derive(Args)]
struct NameArg {
    /// The layout's name: its network namespace and run directory.
    #[arg(long, default_value = layout::DEFAULT_NAME)]
    name: String,
}

#[derive(Subcommand)]
enum QemuCmd {
    /// Build the images, make the LAN and BIND, boot the storage box and
    /// three mail boxes, and wait until they serve.
    Up {
        #[command(flatten)]
        name: NameArg,
        /// Use the images as they are.
        #[arg(long)]
        no_build: bool,
        /// Use this statically linked mailfort in the images.
        #[arg(long)]
        mailfort: Option<PathBuf>,
        /// Return once the boxes boot, without waiting for them to serve.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for every box to serve.
        #[arg(long, default_value_t = layout::CLUSTER_UP_TIMEOUT.as_secs())]
        timeout: u64,
    },
    /// Stop every box and BIND, delete the namespace and the run directory.
    Down {
        #[command(flatten)]
        name: NameArg,
    },
    /// Attach the terminal to a box's serial console (Ctrl-] leaves).
    Console {
        #[command(flatten)]
        name: NameArg,
        /// storage, node1, node2 or node3.
        r#box: String,
    },
    /// Each box's state and the DNS records.
    Status {
        #[command(flatten)]
        name: NameArg,
    },
    /// Boot a box that is stopped.
    Start {
        #[command(flatten)]
        name: NameArg,
        r#box: String,
        /// Leave out a disk (by serial: store0, store1, config).
        #[arg(long)]
        without: Vec<String>,
    },
    /// Press a box's power button and wait for it to shut down (killed
    /// after 60 s).
    Stop {
        #[command(flatten)]
        name: NameArg,
        r#box: String,
        /// Pull the cord instead: SIGKILL to the box's QEMU.
        #[arg(long)]
        kill: bool,
    },
    /// Run a command on the host side of the LAN (10.0.0.1), e.g.
    /// `cargo xtask qemu exec -- dig @10.0.0.1 MX example.test`.
    Exec {
        #[command(flatten)]
        name: NameArg,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Boot times per role and of the whole layout, and the image sizes.
    Bench {
        /// Use the images as they are.
        #[arg(long)]
        no_build: bool,
        #[arg(long)]
        mailfort: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Image { board, role, mailfort } => {
            let roles = if role.is_empty() { Role::ALL.to_vec() } else { role };
            image::build(&image::BuildOptions { board, roles, mailfort })?;
        }
        Cmd::Qemu(q) => match q {
            QemuCmd::Up { name, no_build, mailfort, no_wait, timeout } => {
                let l = Layout::new(&name.name)?;
                l.up(&UpOptions { build: !no_build, mailfort, wait: (!no_wait).then(|| Duration::from_secs(timeout)), boxes: None })?;
                print!("{}", l.status()?);
                println!("consoles: cargo xtask qemu console <box>; logs in {}", l.dir.display());
                println!("clients:  cargo xtask qemu exec -- <command>   (runs on {} in the LAN)", layout::HOST_IP);
            }
            QemuCmd::Down { name } => {
                let l = Layout::new(&name.name)?;
                l.down()?;
                println!("the layout '{}' is down", l.name);
            }
            QemuCmd::Console { name, r#box } => {
                let l = Layout::new(&name.name)?;
                layout::spec(&r#box)?;
                console::attach(&l.console_socket(&r#box), &r#box)?;
            }
            QemuCmd::Status { name } => print!("{}", Layout::new(&name.name)?.status()?),
            QemuCmd::Start { name, r#box, without } => {
                let l = Layout::new(&name.name)?;
                l.start(&r#box, &StartOptions { without })?;
                println!("{box} booting", box = r#box);
            }
            QemuCmd::Stop { name, r#box, kill } => {
                let l = Layout::new(&name.name)?;
                if kill {
                    l.kill(&r#box, libc::SIGKILL)?;
                } else {
                    l.powerdown(&r#box, Duration::from_secs(60))?;
                }
                println!("{box} stopped", box = r#box);
            }
            QemuCmd::Exec { name, command } => {
                let l = Layout::new(&name.name)?;
                if !l.is_up() {
                    bail!("the layout '{}' is not up", l.name);
                }
                let status = l.command(&command[0]).args(&command[1..]).status()?;
                if !status.success() {
                    bail!("{} exited with {status}", command[0]);
                }
            }
            QemuCmd::Bench { no_build, mailfort } => bench::run(!no_build, mailfort)?,
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
