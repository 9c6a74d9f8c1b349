//! PID 1: brings the box up, runs its role, supervises its services, reaps
//! orphans, and takes it down cleanly on request.
//!
//! The main thread owns the services and every decision; other threads
//! (the console, the power button, the store mount, the storage bring-up)
//! only send it events. Signals are blocked everywhere and taken by the
//! main loop with sigtimedwait.

use std::fs::{self, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use admin::access::StoreAccess;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::reboot::RebootMode;
use nix::sys::signal::Signal;

use crate::cmdline::Cmdline;
use crate::configdisk::ConfigDisk;
use crate::console::{self, SCREEN_TTY};
use crate::host::{with, BoxHost, BoxState, Shared};
use crate::mailbox::{self, STORE_MOUNT};
use crate::modules::{self, ModuleIndex};
use crate::service::{Service, ServiceSpec};
use crate::settings::{Addressing, NodeSettings, Role, DEFAULT_IFACE};
use crate::{alarm, disks, net, say, storagebox, sys};

/// How often the main loop wakes without a signal (restarts are due).
const TICK: Duration = Duration::from_millis(200);
/// How long services get to stop after SIGTERM: `mailfort serve` lets SMTP
/// transactions finish for up to 30 s (its shutdown grace) and then leaves
/// the live set.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Other processes get this long after SIGTERM before SIGKILL.
const OTHERS_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long init waits for the config disk to appear.
const CONFIG_WAIT: Duration = Duration::from_secs(5);
/// What the image builder says about the image (`role=`, `kernel=`, ...).
const IMAGE_INFO: &str = "/etc/mailfort/image";
/// Standard ports (RFC 5321 4.5.4.2 / IANA; RFC 6409 3.1; RFC 8314 7.3;
/// RFC 1939 3; RFC 8314 7.3; RFC 3501 2.1; RFC 8314 7.3).
const PORT_SMTP: u16 = 25;
const PORT_SUBMISSION: u16 = 587;
const PORT_SUBMISSIONS: u16 = 465;
const PORT_POP3: u16 = 110;
const PORT_POP3S: u16 = 995;
const PORT_IMAP: u16 = 143;
const PORT_IMAPS: u16 = 993;
/// The admin page (HTTPS, RFC 9110 4.2.2).
const PORT_ADMIN_HTTPS: u16 = 443;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    Off,
    Reboot,
}

/// What the other threads tell the main loop.
pub enum Event {
    Power(PowerRequest, &'static str),
    /// Restart a service (from the console or the web page).
    Restart(String),
    /// The store is mounted and verified (mail box).
    StoreReady,
}

/// Runs the box. Never returns: PID 1 exiting panics the kernel.
pub fn run() -> ! {
    let boot = Instant::now();
    early_mounts();
    if let Ok(f) = OpenOptions::new().write(true).custom_flags(OFlag::O_NOCTTY.bits()).open("/dev/console") {
        crate::log::set_sink(f);
    }
    if let Err(e) = sys::block_signals() {
        say!("cannot block signals: {e}");
    }
    if let Err(e) = sys::ctrl_alt_del_to_signal() {
        say!("cannot route Ctrl-Alt-Del to init: {e}");
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say!("mailfort init {} starting on Linux {}", env!("CARGO_PKG_VERSION"), release.trim());
    let cmdline = Cmdline::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let (from_cmdline, mut problems) = NodeSettings::from_cmdline(&cmdline);
    for p in &problems {
        alarm!("kernel command line: {p}");
    }

    // The role the image was built for, when the command line names none.
    let image_role = fs::read_to_string(IMAGE_INFO).ok().and_then(|t| t.lines().find_map(|l| l.strip_prefix("role=").and_then(|r| Role::parse(r.trim()))));
    let boot_role = from_cmdline.role.or(image_role).unwrap_or(Role::Mail);
    let moddir = modules::modules_dir();
    // The image builder's load list when there is one; otherwise a plan
    // from modules.dep.
    let load_list = fs::read_to_string(moddir.join("modules.load")).ok().map(|t| modules::parse_load_list(&t));
    let index = if load_list.is_some() { None } else { ModuleIndex::read(&moddir).ok() };
    match (&load_list, &index) {
        (Some(steps), _) => load_steps(steps, &mut problems),
        (None, Some(ix)) => {
            let wanted: Vec<&str> = modules::BASE_MODULES.iter().chain(modules::role_modules(boot_role)).copied().collect();
            load_modules(ix, &wanted, &mut problems);
        }
        (None, None) => {
            alarm!("no modules.load or modules.dep in {}; relying on built-in drivers", moddir.display());
            problems.push(format!("no module list in {}", moddir.display()));
        }
    }

    // The config partition: saved settings win over the command line.
    let config_dev = match cmdline.get("config") {
        Some(d) => PathBuf::from(d),
        None => disks::wait_for_serials(&[disks::SERIAL_CONFIG], CONFIG_WAIT).into_iter().flatten().next().unwrap_or_else(|| PathBuf::from(if boot_role == Role::Storage { "/dev/vdc" } else { "/dev/vda" })),
    };
    let (settings, config) = open_config(&config_dev, &from_cmdline, &mut problems);
    let role = settings.role.unwrap_or(boot_role);
    if settings.role.is_none() && image_role.is_none() {
        problems.push("no role set (mailfort.role=mail|storage); running as a mail box".into());
    }
    let node = settings.node.clone().unwrap_or_else(|| role.to_string());
    if let Err(e) = sys::sethostname(&node) {
        say!("cannot set the host name: {e}");
    }
    say!("this is {node}, a {role} box");

    if let (Some(ix), true) = (&index, role != boot_role) {
        load_modules(ix, modules::role_modules(role), &mut problems);
    }
    if role == Role::Mail {
        // Identical boxes need distinct NFSv4 client identities (RFC 8881
        // 2.4: the co_ownerid must be unique per client), set before the
        // first mount; `nfs.nfs4_unique_id=` on the command line does not
        // reach modules init loads itself, and the name is known only now.
        match modules::set_param("nfs", "nfs4_unique_id", &node) {
            Ok(()) => say!("NFSv4 client id: {node}"),
            Err(e) => {
                alarm!("cannot set nfs.nfs4_unique_id: {e}");
                problems.push(format!("cannot set nfs.nfs4_unique_id: {e}"));
            }
        }
    }

    let address = bring_up_network(&cmdline, &settings, &node, &mut problems);

    let state: Shared = Arc::new(Mutex::new(BoxState {
        role,
        node: node.clone(),
        address: address.map(|a| a.to_string()).unwrap_or_else(|| "none".into()),
        boot,
        store_state: "starting".into(),
        store_path: None,
        services: Vec::new(),
        storage: None,
        problems: problems.clone(),
        settings: settings.clone(),
        booted_with: settings.clone(),
    }));
    let (tx, rx) = mpsc::channel::<Event>();
    let stopping = Arc::new(AtomicBool::new(false));

    let ptx = tx.clone();
    let watched = crate::power::watch(move || {
        let _ = ptx.send(Event::Power(PowerRequest::Off, "the power button"));
    });
    say!("watching {watched} input device(s) for the power button");

    let store_root = if role == Role::Mail { PathBuf::from(STORE_MOUNT) } else { PathBuf::from(storage::export::STORE_DIR) };
    let host = Arc::new(BoxHost { state: state.clone(), config: config.clone(), store: StoreAccess::new(&store_root), events: Mutex::new(tx.clone()) });
    // The serial line, and the local screen when the box has one.
    let serial = console::console_device(&cmdline);
    let mut consoles = vec![serial.clone()];
    if console::has_screen() && serial != Path::new(SCREEN_TTY) {
        consoles.push(PathBuf::from(SCREEN_TTY));
    }
    for dev in consoles {
        let ctx = tx.clone();
        let node_name = node.clone();
        let console_host = host.clone();
        let _ = std::thread::Builder::new().name("console".into()).spawn(move || console::console_loop(&dev, &console_host, &node_name, &ctx));
    }

    let mut services: Vec<Service> = Vec::new();
    match role {
        Role::Mail => mailbox::start(&settings, config.clone(), state.clone(), tx.clone(), stopping.clone()),
        Role::Storage => storagebox::start(&cmdline, &settings, state.clone(), tx.clone()),
    }
    let serve = (role == Role::Mail).then(|| serve_spec(&settings, &node, address));
    let web = Web { host, store: store_root, addr: address, started: false };
    main_loop(&rx, &state, &mut services, serve.as_ref(), web, &stopping)
}

fn early_mounts() {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (src, dir, fstype, flags, data) in [
        ("proc", "/proc", "proc", nosuid, None),
        ("sysfs", "/sys", "sysfs", nosuid, None),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
        ("devpts", "/dev/pts", "devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("gid=5,mode=620,ptmxmode=000")),
        ("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755")),
        ("tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777")),
    ] {
        let _ = fs::create_dir_all(dir);
        match nix::mount::mount(Some(src), dir, Some(fstype), flags, data) {
            // EBUSY: already mounted (the kernel may mount devtmpfs itself).
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => say!("mount {fstype} on {dir}: {e}"),
        }
    }
    let _ = fs::create_dir_all("/etc");
}

fn load_modules(ix: &ModuleIndex, wanted: &[&str], problems: &mut Vec<String>) {
    let plan = ix.plan(wanted);
    for m in &plan.missing {
        alarm!("module {m} is not in the image");
        problems.push(format!("module {m} is not in the image"));
    }
    load_steps(&plan.steps, problems);
}

fn load_steps(steps: &[modules::Step], problems: &mut Vec<String>) {
    let dir = modules::modules_dir();
    let t = Instant::now();
    let mut loaded = Vec::new();
    for step in steps {
        let path = dir.join(&step.path);
        if step.optional && !path.exists() {
            continue;
        }
        match modules::load(&path, "") {
            Ok(()) => loaded.push(step.name.as_str()),
            Err(e) if step.optional || modules::skippable(&e) => say!("module {} skipped: {e}", step.name),
            Err(e) => {
                alarm!("module {} failed to load: {e}", step.name);
                problems.push(format!("module {} failed to load: {e}", step.name));
            }
        }
    }
    say!("loaded {} module(s) in {} ms: {}", loaded.len(), t.elapsed().as_millis(), loaded.join(" "));
}

fn open_config(dev: &Path, from_cmdline: &NodeSettings, problems: &mut Vec<String>) -> (NodeSettings, Option<Arc<Mutex<ConfigDisk>>>) {
    disks::wait_for_devices(&[dev.to_path_buf()], CONFIG_WAIT);
    let disk = match ConfigDisk::open(dev) {
        Ok(d) => d,
        Err(e) => {
            alarm!("config partition: {e}; using the kernel command line only, nothing is saved");
            problems.push(format!("config partition: {e}"));
            return (from_cmdline.clone(), None);
        }
    };
    let saved = match disk.load() {
        Ok(Some(bytes)) => match NodeSettings::from_bytes(&bytes) {
            Ok(s) => s,
            Err(e) => {
                alarm!("config partition holds unreadable settings ({e}); starting from the command line");
                problems.push(format!("unreadable saved settings: {e}"));
                NodeSettings::default()
            }
        },
        Ok(None) => {
            say!("config partition {} is blank: first boot, seeding it from the kernel command line", dev.display());
            NodeSettings::default()
        }
        Err(e) => {
            alarm!("config partition: {e}");
            problems.push(format!("config partition: {e}"));
            NodeSettings::default()
        }
    };
    let merged = saved.merged_over(from_cmdline);
    let disk = Mutex::new(disk);
    if merged != saved {
        match crate::host::save_settings(&disk, &merged) {
            Ok(()) => say!("settings saved on {}", dev.display()),
            Err(e) => {
                alarm!("cannot save settings: {e}");
                problems.push(format!("cannot save settings: {e}"));
            }
        }
    } else {
        say!("settings read from {}", dev.display());
    }
    (merged, Some(Arc::new(disk)))
}

fn bring_up_network(cmdline: &Cmdline, s: &NodeSettings, node: &str, problems: &mut Vec<String>) -> Option<std::net::Ipv4Addr> {
    if let Err(e) = net::link_up("lo") {
        say!("lo: {e}");
    }
    let iface = cmdline.get("iface").unwrap_or(DEFAULT_IFACE).to_string();
    let mut addr = None;
    let mut dns: Vec<IpAddr> = s.dns.clone().unwrap_or_default();
    match s.addressing() {
        Some(Addressing::Static(c)) => {
            let r = net::set_address(&iface, c).and_then(|()| net::link_up(&iface));
            match r {
                Ok(()) => {
                    addr = Some(c.addr);
                    say!("{iface}: {c}");
                }
                Err(e) => {
                    alarm!("{iface}: cannot set {c}: {e}");
                    problems.push(format!("{iface}: cannot set {c}: {e}"));
                }
            }
            if let Some(gw) = s.gw {
                match net::add_default_route(gw) {
                    Ok(()) => say!("default route via {gw}"),
                    Err(e) => {
                        alarm!("default route via {gw}: {e}");
                        problems.push(format!("default route via {gw}: {e}"));
                    }
                }
            }
        }
        Some(Addressing::Dhcp) => {
            if let Err(e) = net::link_up(&iface) {
                say!("{iface}: {e}");
            }
            match crate::dhcp::configure(&iface, node) {
                Ok(lease) => {
                    say!("{iface}: {} by DHCP from {}, lease {} s", lease.cidr(), lease.server, lease.lease_secs);
                    addr = Some(lease.addr);
                    if dns.is_empty() {
                        dns = lease.dns.iter().map(|a| IpAddr::V4(*a)).collect();
                    }
                }
                Err(e) => {
                    alarm!("{iface}: DHCP failed: {e}");
                    problems.push(format!("{iface}: DHCP failed: {e}"));
                }
            }
        }
        None => {
            alarm!("no address configured (mailfort.ip=ADDR/PREFIX or dhcp)");
            problems.push("no address configured".into());
        }
    }
    let _ = fs::write("/etc/resolv.conf", net::resolv_conf(&dns));
    let _ = fs::write("/etc/hosts", net::hosts_file(node, addr));
    let _ = fs::write("/etc/hostname", format!("{node}\n"));
    addr
}

/// `mailfort serve` on this box's address and the standard ports.
fn serve_spec(s: &NodeSettings, node: &str, addr: Option<std::net::Ipv4Addr>) -> ServiceSpec {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/init"));
    let ip = addr.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into());
    let mut args: Vec<String> = vec!["serve".into(), "--store".into(), STORE_MOUNT.into(), "--node".into(), node.into(), "--rank".into(), s.rank.unwrap_or(1).to_string()];
    for (flag, port) in [("--smtp", PORT_SMTP), ("--submission", PORT_SUBMISSION), ("--submissions", PORT_SUBMISSIONS), ("--pop3", PORT_POP3), ("--pop3s", PORT_POP3S), ("--imap", PORT_IMAP), ("--imaps", PORT_IMAPS)] {
        args.push(flag.into());
        args.push(format!("{ip}:{port}"));
    }
    if let Some(a) = addr {
        args.push("--advertise".into());
        args.push(a.to_string());
    }
    ServiceSpec { name: "serve".into(), program, args }
}

/// The admin web page, started once the store (and with it the cluster's
/// certificate and admin password) is there.
struct Web {
    host: Arc<BoxHost>,
    store: PathBuf,
    addr: Option<std::net::Ipv4Addr>,
    started: bool,
}

impl Web {
    fn store_ready(&mut self) {
        let host = self.host.clone();
        let _ = std::thread::Builder::new().name("admin-sync".into()).spawn(move || host.sync_admin_hash());
        if self.started {
            return;
        }
        self.started = true;
        let (host, store, addr) = (self.host.clone(), self.store.clone(), self.addr);
        let _ = std::thread::Builder::new().name("web".into()).spawn(move || {
            let listen = std::net::SocketAddr::from((addr.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), PORT_ADMIN_HTTPS));
            match admin::web::box_page::run(host, &store, listen, |at| say!("admin page on https://{at}/")) {
                Ok(()) => say!("admin page stopped"),
                Err(e) => alarm!("admin page on {listen}: {e}"),
            }
        });
    }
}

fn main_loop(rx: &Receiver<Event>, state: &Shared, services: &mut Vec<Service>, serve: Option<&ServiceSpec>, mut web: Web, stopping: &AtomicBool) -> ! {
    loop {
        if let Some(sig) = sys::wait_signal(TICK) {
            match sig {
                Signal::SIGCHLD => reap(services),
                Signal::SIGINT => shutdown(PowerRequest::Reboot, "Ctrl-Alt-Del (SIGINT)", services, state, stopping),
                Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR => shutdown(PowerRequest::Off, sig.as_str(), services, state, stopping),
                Signal::SIGUSR1 => shutdown(PowerRequest::Reboot, "SIGUSR1", services, state, stopping),
                other => say!("ignoring {}", other.as_str()),
            }
        }
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Power(req, why) => shutdown(req, why, services, state, stopping),
                Event::StoreReady => {
                    if let Some(serve) = serve {
                        if !services.iter().any(|s| s.spec.name == serve.name) {
                            services.push(Service::new(serve.clone()));
                        }
                    }
                    web.store_ready();
                }
                Event::Restart(name) => {
                    if let Some(s) = services.iter_mut().find(|s| s.spec.name == name) {
                        say!("restarting {name} on an administrator's request");
                        s.restart();
                    }
                }
            }
        }
        let now = Instant::now();
        for s in services.iter_mut() {
            if s.due(now) {
                s.start(now);
            }
        }
        with(state, |b| b.services = services.iter().map(|s| s.view(now)).collect());
    }
}

fn reap(services: &mut [Service]) {
    let now = Instant::now();
    for (pid, code) in sys::reap_all() {
        if !services.iter_mut().any(|s| s.exited(pid, code, now)) {
            // An orphan re-parented to init, or a helper (mkfs) whose
            // status its waiter collects through sys::wait_pid.
        }
    }
}

fn shutdown(req: PowerRequest, why: &str, services: &mut [Service], state: &Shared, stopping: &AtomicBool) -> ! {
    say!("{} requested by {why}: stopping services", if req == PowerRequest::Off { "power-off" } else { "reboot" });
    stopping.store(true, Ordering::Relaxed);
    for s in services.iter_mut() {
        s.stop();
    }
    let start = Instant::now();
    while services.iter().any(|s| s.pid().is_some()) && start.elapsed() < SERVICE_STOP_TIMEOUT {
        if sys::wait_signal(TICK) == Some(Signal::SIGCHLD) {
            reap(services);
        }
    }
    for s in services.iter() {
        if let Some(pid) = s.pid() {
            say!("{} did not stop within {} s; killing it", s.spec.name, SERVICE_STOP_TIMEOUT.as_secs());
            sys::kill(pid, Signal::SIGKILL);
        }
    }
    // Everyone else (helpers, orphans).
    sys::kill(-1, Signal::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < OTHERS_STOP_TIMEOUT && sys::other_processes() > 0 {
        if sys::wait_signal(TICK) == Some(Signal::SIGCHLD) {
            reap(services);
        }
    }
    sys::kill(-1, Signal::SIGKILL);
    reap(services);
    let role = with(state, |b| b.role).unwrap_or(Role::Mail);
    match role {
        Role::Mail => mailbox::unmount_store(),
        Role::Storage => storagebox::shut_down(),
    }
    sys::sync();
    say!("{}", if req == PowerRequest::Off { "powering off" } else { "rebooting" });
    let e = sys::reboot(if req == PowerRequest::Off { RebootMode::RB_POWER_OFF } else { RebootMode::RB_AUTOBOOT });
    alarm!("reboot(2) failed: {e}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_arguments() {
        let mut s = NodeSettings::default();
        s.set("rank", "2").unwrap();
        let spec = serve_spec(&s, "mail2", Some("192.0.2.12".parse().unwrap()));
        let a = spec.args.join(" ");
        assert!(a.starts_with("serve --store /store --node mail2 --rank 2 --smtp 192.0.2.12:25 --submission 192.0.2.12:587 --submissions 192.0.2.12:465 --pop3 192.0.2.12:110 --pop3s 192.0.2.12:995 --imap 192.0.2.12:143 --imaps 192.0.2.12:993 --advertise 192.0.2.12"), "{a}");
        let spec = serve_spec(&NodeSettings::default(), "m", None);
        assert!(spec.args.join(" ").contains("--smtp 0.0.0.0:25") && !spec.args.contains(&"--advertise".to_string()));
    }
}
