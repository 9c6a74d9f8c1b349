//! The four-box layout under QEMU: three mail boxes and the storage box on
//! one virtual LAN, with BIND 9 as the DNS server and the host side (DNS
//! server, test clients) on the bridge's address, all inside a network
//! namespace of the layout's name.
//!
//! Everything the layout makes lives in its run directory
//! (`<target>/qemu/<name>/`): disk images, console sockets and logs, pid
//! files, BIND's configuration, zone and journal. `down` kills what the pid
//! files name (after checking that each is still the process started
//! here), deletes the namespace and removes the directory.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;

use crate::board::Role;
use crate::image::{self, Image};
use crate::netns::Netns;
use crate::{named, paths, wait};

pub const DEFAULT_NAME: &str = "mailfort";
pub const BOARD: &str = "qemu-x86_64";
pub const BRIDGE: &str = "br0";
/// The host side of the LAN: the DNS server and the clients.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PREFIX: u8 = 24;
pub const STORAGE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const DOMAIN: &str = "example.test";
pub const EXPORT: &str = "/store";
pub const KEY_NAME: &str = "mailfort-announcer.";
/// 128 MB suffice for either role; the margin costs nothing under TCG.
pub const GUEST_MEMORY_MB: u32 = 256;
/// How long the whole layout may take to serve. Four VMs on two loaded
/// cores reach network-up in 26-41 s; the storage box's NFS grace period
/// and the mail boxes' mounts come after.
pub const CLUSTER_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// The first mail boxes' names; their number is the rank.
pub const MAIL_BOXES: u8 = 3;
pub const SMTP_PORT: u16 = 25;
pub const POP3_PORT: u16 = 110;
pub const NFS_PORT: u16 = 2049;

/// One disk of a box: a raw sparse file, zeros until the box writes it.
#[derive(Clone, Debug)]
pub struct Disk {
    pub serial: &'static str,
    pub size: u64,
}

const MIB: u64 = 1 << 20;
const CONFIG_DISK: Disk = Disk { serial: "config", size: 8 * MIB };
pub const STORE_DISKS: [Disk; 2] = [Disk { serial: "store0", size: 1024 * MIB }, Disk { serial: "store1", size: 1024 * MIB }];

/// One box of the layout.
#[derive(Clone, Debug)]
pub struct BoxSpec {
    pub name: String,
    pub role: Role,
    pub ip: Ipv4Addr,
    pub rank: Option<u8>,
    pub disks: Vec<Disk>,
}

impl BoxSpec {
    pub fn mac(&self) -> String {
        let o = self.ip.octets();
        format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
    }

    pub fn tap(&self) -> String {
        format!("tap-{}", self.name)
    }
}

/// The boxes: the storage box, then node1..node3 at 10.0.0.11..13.
pub fn boxes() -> Vec<BoxSpec> {
    let mut v = vec![BoxSpec {
        name: "storage".into(),
        role: Role::Storage,
        ip: STORAGE_IP,
        rank: None,
        disks: vec![CONFIG_DISK, STORE_DISKS[0].clone(), STORE_DISKS[1].clone()],
    }];
    for n in 1..=MAIL_BOXES {
        v.push(BoxSpec { name: format!("node{n}"), role: Role::Mail, ip: Ipv4Addr::new(10, 0, 0, 10 + n), rank: Some(n), disks: vec![CONFIG_DISK] });
    }
    v
}

pub fn spec(name: &str) -> anyhow::Result<BoxSpec> {
    boxes().into_iter().find(|b| b.name == name).with_context(|| {
        let names: Vec<String> = boxes().into_iter().map(|b| b.name).collect();
        format!("no box '{name}' (boxes: {})", names.join(", "))
    })
}

/// How to start a box.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Disk serials to leave out (a box restarted without one of its disks).
    pub without: Vec<String>,
}

pub struct UpOptions {
    /// Build the images first (the build is quick when nothing changed).
    pub build: bool,
    /// A prebuilt static mailfort for the images.
    pub mailfort: Option<PathBuf>,
    /// Wait this long for every box to serve; None returns once they boot.
    pub wait: Option<Duration>,
    /// The boxes to boot (None: all); the others can be started later.
    pub boxes: Option<Vec<String>>,
}

/// A layout by name: its namespace and run directory.
pub struct Layout {
    pub name: String,
    pub dir: PathBuf,
    pub netns: Netns,
}

impl Layout {
    pub fn new(name: &str) -> anyhow::Result<Layout> {
        // Names become a namespace, a directory and parts of socket paths.
        if name.is_empty() || name.len() > 24 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("'{name}' is not a layout name (letters, digits and '-', at most 24)");
        }
        Ok(Layout { name: name.to_string(), dir: paths::run_dir(name), netns: Netns::new(name) })
    }

    pub fn is_up(&self) -> bool {
        self.netns.exists()
    }

    pub fn console_socket(&self, b: &str) -> PathBuf {
        self.dir.join(format!("{b}.sock"))
    }

    pub fn console_log(&self, b: &str) -> PathBuf {
        self.dir.join(format!("{b}.log"))
    }

    fn qmp_socket(&self, b: &str) -> PathBuf {
        self.dir.join(format!("{b}.qmp"))
    }

    fn pid_file(&self, b: &str) -> PathBuf {
        self.dir.join(format!("{b}.pid"))
    }

    fn disk(&self, b: &str, serial: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{b}-{serial}.img"))
    }

    /// The TSIG key the DNS server accepts updates with: (name, secret).
    pub fn tsig(&self) -> anyhow::Result<(String, String)> {
        let secret = fs::read_to_string(self.dir.join("tsig.secret")).context("the layout has no TSIG key: is it up?")?;
        Ok((KEY_NAME.to_string(), secret.trim().to_string()))
    }

    /// The kernel command line of a box (board/qemu-x86_64/CMDLINE.md).
    pub fn cmdline(&self, base: &str, b: &BoxSpec) -> anyhow::Result<String> {
        let mut c = vec![base.to_string(), format!("mailfort.role={}", b.role), format!("mailfort.node={}", b.name)];
        if let Some(r) = b.rank {
            c.push(format!("mailfort.rank={r}"));
        }
        c.push(format!("mailfort.ip={}/{PREFIX}", b.ip));
        c.push(format!("mailfort.dns={HOST_IP}"));
        match b.role {
            Role::Mail => {
                c.push(format!("mailfort.storage={STORAGE_IP}"));
                c.push(format!("mailfort.export={EXPORT}"));
            }
            Role::Storage => {
                let (key, secret) = self.tsig()?;
                c.push(format!("mailfort.clients={}/{PREFIX}", Ipv4Addr::from(u32::from(HOST_IP) & !((1u32 << (32 - PREFIX)) - 1))));
                c.push(format!("mailfort.domain={DOMAIN}"));
                c.push(format!("mailfort.dnsupdate={HOST_IP}:53"));
                c.push(format!("mailfort.tsig={key}:{secret}"));
            }
        }
        Ok(c.join(" "))
    }

    /// A command run inside the layout's namespace (a client on the LAN).
    pub fn command(&self, program: &str) -> Command {
        self.netns.command(program)
    }

    /// Creates the namespace, the LAN, the disks and the DNS server, and
    /// boots every box.
    pub fn up(&self, opts: &UpOptions) -> anyhow::Result<()> {
        if self.is_up() {
            bail!("the layout '{}' is up already (`cargo xtask qemu down` takes it down)", self.name);
        }
        check_tools()?;
        let images = if opts.build {
            image::build(&image::BuildOptions { board: BOARD.into(), roles: Role::ALL.to_vec(), mailfort: opts.mailfort.clone() })?
        } else {
            Role::ALL.iter().map(|r| Image::existing(BOARD, *r)).collect::<anyhow::Result<_>>()?
        };
        // Leftovers of a run that did not end with `down`.
        self.remove_run_dir()?;
        fs::create_dir_all(self.dir.join("disks")).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let r = self.up_inner(&images, opts);
        if r.is_err() {
            eprintln!("the layout did not come up; its logs stay in {} until `cargo xtask qemu down --name {}`", self.dir.display(), self.name);
        }
        r
    }

    fn up_inner(&self, images: &[Image], opts: &UpOptions) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut secret = [0u8; 32];
        fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        fs::write(self.dir.join("tsig.secret"), base64::engine::general_purpose::STANDARD.encode(secret))?;
        for b in boxes() {
            for d in &b.disks {
                let f = fs::File::create(self.disk(&b.name, d.serial))?;
                f.set_len(d.size)?;
            }
        }
        self.netns.create(BRIDGE, &format!("{HOST_IP}/{PREFIX}"))?;
        for b in boxes() {
            self.netns.add_tap(&b.tap(), BRIDGE)?;
        }
        self.start_named()?;
        eprintln!("LAN {HOST_IP}/{PREFIX} in network namespace {}; BIND 9 on {HOST_IP}:53 for {DOMAIN}", self.name);
        let chosen: Vec<BoxSpec> = boxes().into_iter().filter(|b| opts.boxes.as_ref().is_none_or(|only| only.contains(&b.name))).collect();
        for b in &chosen {
            let img = images.iter().find(|i| i.role == b.role).context("no image for a role")?;
            self.start_with(b, img, &StartOptions::default())?;
            eprintln!("  {:<8} {:<9} booting (console: cargo xtask qemu console {})", b.name, b.ip, b.name);
        }
        if let Some(timeout) = opts.wait {
            let deadline = started + timeout;
            for b in &chosen {
                let t = self.wait_serving(&b.name, deadline.saturating_duration_since(Instant::now()))?;
                eprintln!("  {:<8} serving {:.1} s after `up` started", b.name, (t - started).as_secs_f64());
            }
            // The cluster is up when DNS says so too: an MX per mail box.
            let mail = chosen.iter().filter(|b| b.role == Role::Mail).count();
            if mail > 0 && chosen.iter().any(|b| b.role == Role::Storage) {
                wait::until("an MX record for every mail box", deadline.saturating_duration_since(Instant::now()), Duration::from_millis(250), || {
                    self.mx().ok().filter(|mx| mx.len() == mail)
                })?;
                eprintln!("  DNS lists {mail} MX {:.1} s after `up` started", started.elapsed().as_secs_f64());
            }
        }
        Ok(())
    }

    fn start_named(&self) -> anyhow::Result<()> {
        let (key, secret) = self.tsig()?;
        let conf = named::write_config(&named::NamedConfig {
            dir: &self.dir,
            listen: &HOST_IP.to_string(),
            zone: DOMAIN,
            key_name: &key,
            key_secret: &secret,
        })?;
        let log = fs::File::create(self.dir.join("named.log"))?;
        let child = self
            .command("named")
            .arg("-g")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot run named (Debian's bind9)")?;
        fs::write(self.pid_file("named"), child.id().to_string())?;
        wait::until("BIND to answer for the zone", Duration::from_secs(30), Duration::from_millis(200), || {
            self.dig(&["SOA", DOMAIN]).ok().filter(|s| s.contains("SOA") || s.contains("ns1"))
        })
        .with_context(|| format!("named log:\n{}", fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()))?;
        Ok(())
    }

    /// `dig +short @10.0.0.1 ARGS` from the host side of the LAN.
    pub fn dig(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = self.command("dig");
        c.arg(format!("@{HOST_IP}")).args(["+short", "+time=1", "+tries=1"]).args(args);
        wait::run(&mut c, Duration::from_secs(5))
    }

    /// The MX records of the domain, sorted by preference: (pref, host).
    pub fn mx(&self) -> anyhow::Result<Vec<(u16, String)>> {
        let out = self.dig(&["MX", DOMAIN])?;
        let mut v: Vec<(u16, String)> = out
            .lines()
            .filter_map(|l| {
                let (p, h) = l.trim().split_once(' ')?;
                Some((p.parse().ok()?, h.trim_end_matches('.').to_string()))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// The addresses of a name in the zone.
    pub fn a(&self, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
        let out = self.dig(&["A", name])?;
        let mut v: Vec<Ipv4Addr> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        v.sort();
        Ok(v)
    }

    /// Boots one box (it must not be running).
    pub fn start(&self, name: &str, opts: &StartOptions) -> anyhow::Result<()> {
        if !self.is_up() {
            bail!("the layout '{}' is not up", self.name);
        }
        let b = spec(name)?;
        let img = Image::existing(BOARD, b.role)?;
        self.start_with(&b, &img, opts)
    }

    fn start_with(&self, b: &BoxSpec, img: &Image, opts: &StartOptions) -> anyhow::Result<()> {
        if let Some(pid) = self.pid(&b.name) {
            bail!("{} is running already (pid {pid})", b.name);
        }
        for w in &opts.without {
            if !b.disks.iter().any(|d| d.serial == w) {
                bail!("{} has no disk '{w}'", b.name);
            }
        }
        let sock = self.console_socket(&b.name);
        if sock.as_os_str().len() > 100 {
            bail!("the console socket path {} is too long for a unix socket; use a shorter target directory", sock.display());
        }
        let _ = fs::remove_file(&sock);
        let mut args: Vec<String> = vec![
            "-name".into(),
            format!("{},process=mailfort-{}", b.name, b.name),
            "-M".into(),
            "q35".into(),
            "-accel".into(),
            "tcg".into(),
            "-cpu".into(),
            "max".into(),
            "-smp".into(),
            "1".into(),
            "-m".into(),
            GUEST_MEMORY_MB.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            img.vmlinux.display().to_string(),
            "-initrd".into(),
            img.initramfs.display().to_string(),
            "-append".into(),
            self.cmdline(&img.cmdline, b)?,
            "-chardev".into(),
            format!("socket,id=console,path={},server=on,wait=off,logfile={},logappend=on", sock.display(), self.console_log(&b.name).display()),
            "-serial".into(),
            "chardev:console".into(),
            "-netdev".into(),
            format!("tap,id=lan,ifname={},script=no,downscript=no", b.tap()),
            "-device".into(),
            format!("virtio-net-pci,netdev=lan,mac={},romfile=", b.mac()),
            "-device".into(),
            "virtio-rng-pci".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", self.qmp_socket(&b.name).display()),
        ];
        for d in &b.disks {
            if opts.without.iter().any(|w| w == d.serial) {
                continue;
            }
            args.push("-drive".into());
            args.push(format!("file={},if=none,id={},format=raw", self.disk(&b.name, d.serial).display(), d.serial));
            args.push("-device".into());
            args.push(format!("virtio-blk-pci,drive={},serial={}", d.serial, d.serial));
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{}.qemu.log", b.name)))?;
        writeln!(&log, "--- qemu-system-x86_64 {}", args.join(" "))?;
        let child = self
            .command("qemu-system-x86_64")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for cargo does not reach it.
            .process_group(0)
            .spawn()
            .context("cannot run qemu-system-x86_64 (Debian's qemu-system-x86)")?;
        // `ip netns exec` execs QEMU: the child's pid is QEMU's.
        let pid = child.id();
        fs::write(self.pid_file(&b.name), pid.to_string())?;
        wait::until(&format!("{}'s QEMU to open its console", b.name), Duration::from_secs(20), Duration::from_millis(50), || {
            if sock.exists() || !alive(pid) {
                Some(())
            } else {
                None
            }
        })?;
        if !alive(pid) {
            let _ = fs::remove_file(self.pid_file(&b.name));
            bail!("QEMU for {} exited at once:\n{}", b.name, fs::read_to_string(self.dir.join(format!("{}.qemu.log", b.name))).unwrap_or_default());
        }
        Ok(())
    }

    /// The pid of a box's QEMU (or "named"), if it is running and is still
    /// the process this layout started.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file(name)).ok()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy());
        (ours && alive(pid)).then_some(pid)
    }

    /// Ends a box's QEMU with `signal` (SIGKILL: the power cord) and waits
    /// until it is gone.
    pub fn kill(&self, name: &str, signal: i32) -> anyhow::Result<()> {
        let Some(pid) = self.pid(name) else {
            bail!("{name} is not running");
        };
        // SAFETY: kill(2) on a pid just checked to be ours.
        unsafe {
            libc::kill(pid as i32, signal);
        }
        let gone = wait::until(&format!("{name} to stop"), Duration::from_secs(10), Duration::from_millis(50), || (!alive(pid)).then_some(()));
        if gone.is_err() {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            wait::until(&format!("{name} to die"), Duration::from_secs(10), Duration::from_millis(50), || (!alive(pid)).then_some(()))?;
        }
        let _ = fs::remove_file(self.pid_file(name));
        Ok(())
    }

    /// Presses the box's power button (QMP `system_powerdown`) and waits up
    /// to `timeout` for it to shut down; pulls the cord after that.
    pub fn powerdown(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let Some(pid) = self.pid(name) else {
            bail!("{name} is not running");
        };
        if let Err(e) = qmp(&self.qmp_socket(name), "system_powerdown") {
            eprintln!("{name}: cannot press the power button ({e:#}); killing it");
        } else if wait::until(&format!("{name} to power off"), timeout, Duration::from_millis(100), || (!alive(pid)).then_some(())).is_ok() {
            let _ = fs::remove_file(self.pid_file(name));
            return Ok(());
        } else {
            eprintln!("{name} did not power off within {} s; killing it", timeout.as_secs());
        }
        self.kill(name, libc::SIGKILL)
    }

    /// Waits until a box serves: a mail box greets with 220 on port 25, the
    /// storage box accepts NFS connections. Returns when it did.
    pub fn wait_serving(&self, name: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let b = spec(name)?;
        wait::until(&format!("{name} to serve"), timeout, Duration::from_millis(250), || {
            if self.pid(name).is_none() {
                return Some(Err(()));
            }
            self.probe(&b).ok().filter(|ok| *ok).map(|_| Ok(Instant::now()))
        })
        .and_then(|r| r.map_err(|_| anyhow::anyhow!("{name}'s QEMU exited")))
        .with_context(|| format!("{name}'s console ends with:\n{}", self.console_tail(name, 30)))
    }

    /// One readiness check of a box from the host side of the LAN.
    pub fn probe(&self, b: &BoxSpec) -> anyhow::Result<bool> {
        let (ip, role) = (b.ip, b.role);
        self.netns.run(move || match role {
            Role::Mail => smtp_greeting(SocketAddr::from((ip, SMTP_PORT))).is_some_and(|g| g.starts_with("220")),
            Role::Storage => TcpStream::connect_timeout(&SocketAddr::from((ip, NFS_PORT)), Duration::from_secs(1)).is_ok(),
        })
    }

    /// The greeting line of a box's SMTP service, if it answers.
    pub fn smtp_greeting(&self, name: &str) -> anyhow::Result<Option<String>> {
        let ip = spec(name)?.ip;
        self.netns.run(move || smtp_greeting(SocketAddr::from((ip, SMTP_PORT))))
    }

    /// Waits until a box's console log shows `needle`; returns when it was
    /// first seen (polled every 50 ms).
    pub fn wait_console(&self, name: &str, needle: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let log = self.console_log(name);
        wait::until(&format!("{name}'s console to show {needle:?}"), timeout, Duration::from_millis(50), || {
            let text = fs::read(&log).ok()?;
            String::from_utf8_lossy(&text).contains(needle).then(Instant::now)
        })
        .with_context(|| format!("{name}'s console ends with:\n{}", self.console_tail(name, 30)))
    }

    /// The last lines of a box's console log.
    pub fn console_tail(&self, name: &str, lines: usize) -> String {
        let text = fs::read(self.console_log(name)).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops every VM and the DNS server, deletes the namespace and the run
    /// directory.
    pub fn down(&self) -> anyhow::Result<()> {
        for b in boxes() {
            if self.pid(&b.name).is_some() {
                self.kill(&b.name, libc::SIGKILL)?;
            }
        }
        if self.pid("named").is_some() {
            self.kill("named", libc::SIGTERM)?;
        }
        self.netns.delete()?;
        self.remove_run_dir()
    }

    fn remove_run_dir(&self) -> anyhow::Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        for b in boxes().iter().map(|b| b.name.as_str()).chain(["named"]) {
            if let Some(pid) = self.pid(b) {
                bail!("{b} (pid {pid}) still runs from {}", self.dir.display());
            }
        }
        fs::remove_dir_all(&self.dir).with_context(|| format!("cannot remove {}", self.dir.display()))
    }

    /// One line per box, and the DNS records.
    pub fn status(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        if !self.is_up() {
            return Ok(format!("the layout '{}' is down\n", self.name));
        }
        for b in boxes() {
            let state = match self.pid(&b.name) {
                None => "stopped".to_string(),
                Some(pid) => {
                    let serving = self.probe(&b).unwrap_or(false);
                    format!("running (pid {pid}){}", if serving { ", serving" } else { "" })
                }
            };
            out.push_str(&format!("{:<8} {:<10} {:<8} {state}\n", b.name, b.ip, b.role));
        }
        let named = if self.pid("named").is_some() { "running" } else { "stopped" };
        out.push_str(&format!("named    {:<10} dns      {named}\n", HOST_IP));
        if let Ok(mx) = self.mx() {
            let mx: Vec<String> = mx.iter().map(|(p, h)| format!("{p} {h}")).collect();
            out.push_str(&format!("MX {DOMAIN}: {}\n", if mx.is_empty() { "none".into() } else { mx.join(", ") }));
        }
        if let Ok(a) = self.a(&format!("mail.{DOMAIN}")) {
            let a: Vec<String> = a.iter().map(|a| a.to_string()).collect();
            out.push_str(&format!("A mail.{DOMAIN}: {}\n", if a.is_empty() { "none".into() } else { a.join(", ") }));
        }
        Ok(out)
    }
}

/// True while the process exists and is not a zombie (a zombie child of
/// this process is reaped).
fn alive(pid: u32) -> bool {
    // SAFETY: waitpid with WNOHANG only reaps a child that already exited;
    // for a pid that is not our child it fails with ECHILD.
    unsafe {
        let mut status = 0;
        libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Runs one QMP command without arguments on a QEMU monitor socket.
fn qmp(socket: &Path, command: &str) -> anyhow::Result<()> {
    let s = std::os::unix::net::UnixStream::connect(socket).with_context(|| format!("cannot connect to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(&s);
    let mut line = String::new();
    r.read_line(&mut line)?; // the greeting
    for cmd in ["qmp_capabilities", command] {
        (&s).write_all(format!("{{\"execute\": \"{cmd}\"}}\n").as_bytes())?;
        // Skip asynchronous events until the command's reply.
        for _ in 0..16 {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("QEMU closed the monitor");
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                bail!("{cmd}: {}", line.trim());
            }
        }
    }
    Ok(())
}

fn smtp_greeting(addr: SocketAddr) -> Option<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    let _ = (&s).write_all(b"QUIT\r\n");
    Some(line.trim_end().to_string())
}

fn check_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("qemu-system-x86_64", "qemu-system-x86"), ("named", "bind9"), ("dig", "bind9-dnsutils"), ("ip", "iproute2")]
        .into_iter()
        .filter(|(tool, _)| !in_path(tool))
        .map(|(_, pkg)| pkg)
        .collect();
    if !missing.is_empty() {
        bail!("the layout needs Debian packages that are missing: apt-get install {}", missing.join(" "));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the layout needs root (network namespaces, taps)");
    }
    Ok(())
}

fn in_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]).any(|d| is_executable(&d.join(tool)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
