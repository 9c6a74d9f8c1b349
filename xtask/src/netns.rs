//! The virtual LAN: a network namespace holding a bridge and one tap per
//! VM. QEMU, the DNS server and the test clients run inside it, so nothing
//! the layout does reaches any other network; deleting the namespace
//! removes the bridge and the taps with it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::wait;

const IP_TIMEOUT: Duration = Duration::from_secs(10);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    wait::run(Command::new("ip").args(args), IP_TIMEOUT).map(drop)
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        Netns { name: name.to_string() }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Creates the namespace with loopback up and a bridge (no STP, no
    /// forwarding delay: a tap forwards the moment it joins) holding `cidr`.
    pub fn create(&self, bridge: &str, cidr: &str) -> anyhow::Result<()> {
        if self.exists() {
            bail!("network namespace {} exists already", self.name);
        }
        ip(&["netns", "add", &self.name]).context("cannot create a network namespace (this needs root)")?;
        let n = self.name.as_str();
        let r = (|| {
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            ip(&["-n", n, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
            ip(&["-n", n, "addr", "add", cidr, "dev", bridge])?;
            ip(&["-n", n, "link", "set", bridge, "up"])
        })();
        if r.is_err() {
            let _ = self.delete();
        }
        r
    }

    /// A persistent tap on the bridge, for one VM.
    pub fn add_tap(&self, tap: &str, bridge: &str) -> anyhow::Result<()> {
        let n = self.name.as_str();
        ip(&["-n", n, "tuntap", "add", "dev", tap, "mode", "tap"])?;
        ip(&["-n", n, "link", "set", tap, "master", bridge])?;
        ip(&["-n", n, "link", "set", tap, "up"])
    }

    pub fn delete(&self) -> anyhow::Result<()> {
        if self.exists() {
            ip(&["netns", "del", &self.name])?;
        }
        Ok(())
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has joined the namespace: sockets it
    /// opens live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let file = File::open(self.path()).with_context(|| format!("no network namespace {}", self.name))?;
        let handle = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r.context("cannot enter the network namespace"),
            Err(_) => bail!("a thread in the network namespace panicked"),
        }
    }
}
