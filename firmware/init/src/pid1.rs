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
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cmdline::Cmdline;
use crate::configdisk::ConfigDisk;
use admin::access::StoreAccess;
use admin::commands::{Host, HostError, NodeView, Setting, StorageView};
use admin::shell::{self as console, SessionEnd, Terminal};
use crate::modules::{self, ModuleIndex};
use crate::service::{Service, ServiceSpec};
use crate::settings::{Addressing, NodeSettings, Role, DEFAULT_IFACE};
use crate::storage::{self, StorageStatus};
use crate::{alarm, net, say, sys};

/// How often the main loop wakes without a signal (restarts are due).
const TICK: Duration = Duration::from_millis(200);
/// How long services get to stop after SIGTERM: `mailfort serve` lets SMTP
/// transactions finish for up to 30 s (its shutdown grace) and then leaves
/// the live set.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Other processes get this long after SIGTERM before SIGKILL.
const OTHERS_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// A plain unmount of the store may block on a dead server; after this it
/// is forced and detached.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long init waits for the config disk to appear.
const CONFIG_WAIT: Duration = Duration::from_secs(5);
/// Re-checks of a mounted tree that is not (yet) the store, e.g. a storage
/// box still creating it.
const VERIFY_RETRY: Duration = Duration::from_secs(5);
/// What the image builder says about the image (`role=`, `kernel=`, ...).
const IMAGE_INFO: &str = "/etc/mailfort/image";
/// Where a mail box mounts the store.
pub const STORE_MOUNT: &str = "/store";
/// Standard ports (RFC 5321 4.5.4.2 / IANA; RFC 6409 3.1; RFC 8314 7.3;
/// RFC 1939 3; RFC 8314 7.3).
const PORT_SMTP: u16 = 25;
const PORT_SUBMISSION: u16 = 587;
const PORT_SUBMISSIONS: u16 = 465;
const PORT_POP3: u16 = 110;
const PORT_POP3S: u16 = 995;
/// The admin page (HTTPS, RFC 9110 4.2.2).
const PORT_ADMIN_HTTPS: u16 = 443;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PowerRequest {
    Off,
    Reboot,
}

enum Event {
    Power(PowerRequest, &'static str),
    /// Restart a service (from the console or the web page).
    Restart(String),
    /// The store is mounted and verified (mail box).
    StoreReady,
}

/// What the console shows of the box; written by the main thread and the
/// bring-up threads.
struct BoxState {
    role: Role,
    node: String,
    address: String,
    boot: Instant,
    store_state: String,
    store_path: Option<PathBuf>,
    services: Vec<crate::service::ServiceView>,
    storage: Option<StorageStatus>,
    problems: Vec<String>,
    settings: NodeSettings,
    /// The settings this boot runs with.
    booted_with: NodeSettings,
}

type Shared = Arc<Mutex<BoxState>>;

fn with<T>(s: &Shared, f: impl FnOnce(&mut BoxState) -> T) -> Option<T> {
    s.lock().ok().map(|mut g| f(&mut g))
}

/// The box as the command set sees it (the console and the web page).
struct BoxHost {
    state: Shared,
    config: Option<Arc<Mutex<ConfigDisk>>>,
    store: StoreAccess,
    events: Mutex<Sender<Event>>,
}

/// The settings the first console login of a new box walks through.
const FIRST_SETUP_MAIL: &[&str] = &["node", "rank", "ip", "gw", "dns", "storage", "export"];
const FIRST_SETUP_STORAGE: &[&str] = &["node", "ip", "gw", "dns", "domain", "clients"];
/// Keys shown and set as node settings (the admin hash has its own
/// command).
fn setting_help(key: &str) -> String {
    crate::settings::KEYS.iter().find(|(k, _)| *k == key).map(|(_, h)| h.to_string()).unwrap_or_default()
}

impl BoxHost {
    fn store_ready(&self) -> Result<(), String> {
        with(&self.state, |s| if s.store_path.is_some() { Ok(()) } else { Err(format!("no store yet: {}", s.store_state)) }).unwrap_or(Err("state unavailable".into()))
    }

    fn settings(&self) -> Option<NodeSettings> {
        with(&self.state, |s| s.settings.clone())
    }

    fn save(&self, settings: &NodeSettings) -> Result<(), String> {
        let Some(cfg) = &self.config else { return Err("this box has no config partition; the change holds until reboot only".into()) };
        let text = settings.to_toml()?;
        cfg.lock().map_err(|_| "config partition busy".to_string())?.save(text.as_bytes()).map_err(|e| e.to_string())
    }

    /// Keeps `hash` as this box's copy of the admin password (used when the
    /// store does not answer).
    fn cache_admin_hash(&self, hash: &str) -> Result<(), String> {
        let mut next = self.settings().ok_or("state unavailable")?;
        if next.admin_hash.as_deref() == Some(hash) {
            return Ok(());
        }
        next.admin_hash = Some(hash.to_string());
        let saved = self.save(&next);
        // Kept in memory even without a config partition, so the console
        // stays locked until the next boot.
        with(&self.state, |s| s.settings = next);
        saved
    }

    /// Once the store is there: the store's admin password wins; a box set
    /// up before it had a store gives the store its password.
    fn sync_admin_hash(&self) {
        match self.store.admin_hash() {
            Ok(Some(h)) => {
                if let Err(e) = self.cache_admin_hash(&h) {
                    say!("cannot keep a copy of the admin password: {e}");
                }
            }
            Ok(None) => {
                if let Some(local) = self.settings().and_then(|s| s.admin_hash) {
                    match self.store.set_admin_hash(&local) {
                        Ok(()) => say!("the store had no admin password: it now has this box's"),
                        Err(e) => say!("cannot save the admin password in the store: {e}"),
                    }
                }
            }
            Err(e) => say!("cannot read the admin password from the store: {e}"),
        }
    }
}

impl Host for BoxHost {
    fn store(&self) -> &StoreAccess {
        &self.store
    }
    fn node(&self) -> NodeView {
        with(&self.state, |s| NodeView {
            role: s.role.to_string(),
            node: s.node.clone(),
            rank: if s.role == Role::Mail { s.settings.rank.or(Some(1)) } else { None },
            address: s.address.clone(),
            uptime: crate::service::human(s.boot.elapsed()),
            store: s.store_state.clone(),
            services: s.services.clone(),
            storage: s.storage.as_ref().map(|st| StorageView {
                disks: st.disks.iter().map(|(d, x)| (d.display().to_string(), x.clone())).collect(),
                mounted: st.mounted,
                degraded: st.degraded,
                nfs_serving: st.nfs_serving,
                clients: st.clients,
            }),
            problems: s.problems.clone(),
        })
        .unwrap_or_default()
    }
    fn log_tail(&self, n: usize) -> Vec<String> {
        crate::log::tail(n)
    }
    fn node_settings(&self) -> Option<Vec<Setting>> {
        let s = self.settings()?;
        Some(s.describe().into_iter().map(|(k, v)| Setting { help: setting_help(&k), key: k, value: v }).collect())
    }
    fn set_node_setting(&self, key: &str, value: &str) -> Result<String, HostError> {
        let mut next = self.settings().ok_or_else(|| HostError::Refused("state unavailable".into()))?;
        next.set(key, value).map_err(HostError::Refused)?;
        self.save(&next).map_err(HostError::Refused)?;
        with(&self.state, |s| s.settings = next);
        say!("setting {key} changed by an administrator");
        Ok("it takes effect at the next boot".into())
    }
    fn first_setup(&self) -> Vec<Setting> {
        let Some(s) = self.settings() else { return Vec::new() };
        if s.admin_hash.is_some() {
            return Vec::new();
        }
        let keys = if s.role == Some(Role::Storage) || with(&self.state, |b| b.role == Role::Storage).unwrap_or(false) { FIRST_SETUP_STORAGE } else { FIRST_SETUP_MAIL };
        let shown = s.describe();
        keys.iter()
            .map(|k| Setting {
                key: k.to_string(),
                value: shown.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone()).unwrap_or_default(),
                help: setting_help(k),
            })
            .collect()
    }
    fn first_setup_done(&self) -> bool {
        // Values typed in the first setup are saved; the box runs with
        // what it booted with until the next boot.
        with(&self.state, |b| b.settings == b.booted_with).unwrap_or(true)
    }
    fn admin_hash(&self) -> Option<String> {
        let local = self.settings().and_then(|s| s.admin_hash);
        if self.store_ready().is_ok() {
            if let Ok(Some(h)) = self.store.admin_hash() {
                if local.as_deref() != Some(h.as_str()) {
                    let _ = self.cache_admin_hash(&h);
                }
                return Some(h);
            }
        }
        local
    }
    fn set_admin_hash(&self, hash: &str) -> Result<(), HostError> {
        let in_store = match self.store_ready() {
            Ok(()) => self.store.set_admin_hash(hash).map(|()| true),
            Err(_) => Ok(false),
        };
        let cached = self.cache_admin_hash(hash);
        say!("admin password set{}", if matches!(in_store, Ok(true)) { " (in the store, for every node)" } else { " on this box; the store gets it when it has none" });
        in_store.map(drop)?;
        cached.map_err(HostError::Refused)
    }
    fn restart_service(&self, name: &str) -> Result<String, HostError> {
        let known = with(&self.state, |s| s.services.iter().any(|x| x.name == name)).unwrap_or(false);
        if !known {
            let names = with(&self.state, |s| s.services.iter().map(|x| x.name.clone()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
            return Err(HostError::Refused(format!("no service '{name}' on this box (services: {})", if names.is_empty() { "none yet" } else { &names })));
        }
        self.events.lock().map_err(|_| HostError::Refused("init is busy".into()))?.send(Event::Restart(name.to_string())).map_err(|_| HostError::Refused("init does not listen".into()))?;
        Ok(format!("restarting {name}: it stops cleanly and starts again"))
    }
    fn can_power(&self) -> bool {
        true
    }
    fn power(&self, action: admin::commands::Action) -> Result<(), HostError> {
        let (req, why) = match action {
            admin::commands::Action::Reboot => (PowerRequest::Reboot, "the admin page"),
            admin::commands::Action::Poweroff => (PowerRequest::Off, "the admin page"),
            _ => return Err(HostError::Refused("not a power action".into())),
        };
        self.events.lock().map_err(|_| HostError::Refused("init is busy".into()))?.send(Event::Power(req, why)).map_err(|_| HostError::Refused("init does not listen".into()))
    }
}

/// Runs the box. Never returns: PID 1 exiting panics the kernel.
pub fn run() -> ! {
    let boot = Instant::now();
    early_mounts();
    if let Ok(f) = OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open("/dev/console") {
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
        None => storage::wait_for_serials(&[storage::SERIAL_CONFIG], CONFIG_WAIT).into_iter().flatten().next().unwrap_or_else(|| PathBuf::from(if boot_role == Role::Storage { "/dev/vdc" } else { "/dev/vda" })),
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

    let store_root = if role == Role::Mail { PathBuf::from(STORE_MOUNT) } else { PathBuf::from(storage::STORE_DIR) };
    let host = Arc::new(BoxHost { state: state.clone(), config: config.clone(), store: StoreAccess::new(&store_root), events: Mutex::new(tx.clone()) });
    // The serial line, and the local screen when the box has one.
    let serial = console_device(&cmdline);
    let mut consoles = vec![serial.clone()];
    if has_screen() && serial != Path::new(SCREEN_TTY) {
        consoles.push(PathBuf::from(SCREEN_TTY));
    }
    for dev in consoles {
        let ctx = tx.clone();
        let node_name = node.clone();
        let console_host = host.clone();
        let _ = std::thread::Builder::new().name("console".into()).spawn(move || console_loop(&dev, &console_host, &node_name, &ctx));
    }

    let mut services: Vec<Service> = Vec::new();
    match role {
        Role::Mail => start_store_mount(&settings, config.clone(), state.clone(), tx.clone(), stopping.clone()),
        Role::Storage => start_storage(&cmdline, &settings, state.clone(), tx.clone()),
    }
    let serve = (role == Role::Mail).then(|| serve_spec(&settings, &node, address));
    let web = Web { host, store: store_root, addr: address, started: false };
    main_loop(&rx, &state, &mut services, serve.as_ref(), web, &stopping)
}

fn early_mounts() {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (src, dir, fstype, flags, data) in [
        ("proc", "/proc", "proc", nosuid, ""),
        ("sysfs", "/sys", "sysfs", nosuid, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        ("devpts", "/dev/pts", "devpts", libc::MS_NOSUID | libc::MS_NOEXEC, "gid=5,mode=620,ptmxmode=000"),
        ("tmpfs", "/run", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=1777"),
    ] {
        let _ = fs::create_dir_all(dir);
        if let Err(e) = sys::mount(src, dir, fstype, flags, data) {
            // EBUSY: already mounted (the kernel may mount devtmpfs itself).
            if e.raw_os_error() != Some(libc::EBUSY) {
                say!("mount {fstype} on {dir}: {e}");
            }
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
    storage::wait_for_devices(&[dev.to_path_buf()], CONFIG_WAIT);
    let disk = match ConfigDisk::open(dev) {
        Ok(d) => d,
        Err(e) => {
            alarm!("config partition: {e}; using the kernel command line only, nothing is saved");
            problems.push(format!("config partition: {e}"));
            return (from_cmdline.clone(), None);
        }
    };
    let saved = match disk.load() {
        Ok(Some(bytes)) => match std::str::from_utf8(&bytes).map_err(|e| e.to_string()).and_then(NodeSettings::from_toml) {
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
    if merged != saved {
        match merged.to_toml().map_err(|e| e.to_string()).and_then(|t| disk.save(t.as_bytes()).map_err(|e| e.to_string())) {
            Ok(()) => say!("settings saved on {}", dev.display()),
            Err(e) => {
                alarm!("cannot save settings: {e}");
                problems.push(format!("cannot save settings: {e}"));
            }
        }
    } else {
        say!("settings read from {}", dev.display());
    }
    (merged, Some(Arc::new(Mutex::new(disk))))
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

/// The local screen's console (the first virtual terminal).
const SCREEN_TTY: &str = "/dev/tty1";

/// Whether the kernel runs virtual terminals (a screen and keyboard).
fn has_screen() -> bool {
    fs::read_to_string("/sys/class/tty/tty0/active").is_ok_and(|a| !a.trim().is_empty())
}

fn console_device(c: &Cmdline) -> PathBuf {
    if let Some(d) = c.get("console") {
        return Path::new("/dev").join(d);
    }
    // The last console= is /dev/console; prefer a serial line by name.
    match c.consoles.iter().rev().find(|x| x.starts_with("ttyS")) {
        Some(x) => Path::new("/dev").join(x.split(',').next().unwrap_or("ttyS0")),
        None => PathBuf::from("/dev/console"),
    }
}

/// The serial console: login, shell, again; forever.
fn console_loop(dev: &Path, host: &BoxHost, node: &str, tx: &Sender<Event>) {
    loop {
        let file = match OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(dev) {
            Ok(f) => f,
            Err(e) => {
                say!("console {}: {e}; retrying", dev.display());
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        let fd = file.as_raw_fd();
        sys::sane_terminal(fd);
        let Ok(out) = file.try_clone() else {
            std::thread::sleep(Duration::from_secs(5));
            continue;
        };
        let mut input = std::io::BufReader::new(file);
        let mut output = out;
        let mut term = Terminal { input: &mut input, output: &mut output, echo_fd: Some(fd), idle_logout: Some(console::IDLE_LOGOUT) };
        let end = match console::login(host, &mut term, node) {
            Ok(true) => console::shell(host, &mut term, &format!("{node}> ")),
            Ok(false) => Ok(SessionEnd::Logout),
            Err(e) => Err(e),
        };
        match end {
            Ok(SessionEnd::Reboot) => {
                let _ = tx.send(Event::Power(PowerRequest::Reboot, "the console"));
            }
            Ok(SessionEnd::Poweroff) => {
                let _ = tx.send(Event::Power(PowerRequest::Off, "the console"));
            }
            Ok(SessionEnd::Logout) => {}
            Err(e) => say!("console: {e}"),
        }
        // End of input or an error: do not spin.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Mail box: mount the store (retrying while the storage box is not up),
/// check it is ours, remember its id, then tell the main loop.
fn start_store_mount(s: &NodeSettings, config: Option<Arc<Mutex<ConfigDisk>>>, state: Shared, tx: Sender<Event>, stopping: Arc<AtomicBool>) {
    let Some(server) = s.storage else {
        alarm!("no storage box configured (mailfort.storage=IP); not serving");
        with(&state, |b| {
            b.store_state = "no storage box configured".into();
            b.problems.push("no storage box configured (mailfort.storage=IP)".into());
        });
        return;
    };
    let target = match nfs::StoreMount::new(server, s.export_path(), Path::new(STORE_MOUNT)) {
        Ok(t) => t,
        Err(e) => {
            alarm!("{e}");
            with(&state, |b| b.store_state = e.to_string());
            return;
        }
    };
    let expected = s.store_id.clone();
    let _ = std::thread::Builder::new().name("store-mount".into()).spawn(move || {
        with(&state, |b| b.store_state = format!("mounting {} (waiting for the storage box)", target.source()));
        say!("mounting the store {} on {STORE_MOUNT} ({})", target.source(), target.options());
        loop {
            let keep_going = || !stopping.load(Ordering::Relaxed);
            let mut report = |e: &nfs::NfsError, wait: Duration| {
                say!("store not mounted yet: {e}; retrying in {} s", wait.as_secs());
                with(&state, |b| b.store_state = format!("waiting for the storage box: {e}"));
            };
            if target.mount_with_retry(&keep_going, &mut report).is_err() {
                return;
            }
            let expected_now = with(&state, |b| b.settings.store_id.clone()).flatten().or_else(|| expected.clone());
            match nfs::verify_store(Path::new(STORE_MOUNT), expected_now.as_deref()) {
                Ok(id) => {
                    if expected_now.is_none() {
                        say!("first mount: this box now belongs to store {id}");
                        let next = with(&state, |b| {
                            b.settings.store_id = Some(id.clone());
                            b.settings.clone()
                        });
                        if let (Some(cfg), Some(next)) = (&config, next) {
                            let saved = next.to_toml().map_err(|e| e.to_string()).and_then(|t| cfg.lock().map_err(|_| "busy".to_string())?.save(t.as_bytes()).map_err(|e| e.to_string()));
                            if let Err(e) = saved {
                                alarm!("cannot save the store id: {e}");
                            }
                        }
                    }
                    say!("store {id} mounted on {STORE_MOUNT}");
                    with(&state, |b| {
                        b.store_state = format!("{} mounted on {STORE_MOUNT}, store {id}", target.source());
                        b.store_path = Some(PathBuf::from(STORE_MOUNT));
                    });
                    let _ = tx.send(Event::StoreReady);
                    return;
                }
                Err(e) => {
                    alarm!("{e}");
                    with(&state, |b| b.store_state = format!("not serving: {e}"));
                    if !keep_going() {
                        return;
                    }
                    // An empty export (a storage box still creating the
                    // store) or the wrong store: look again later.
                    std::thread::sleep(VERIFY_RETRY);
                }
            }
        }
    });
}

/// Storage box: the mirror, the store, the NFS server.
fn start_storage(cmdline: &Cmdline, s: &NodeSettings, state: Shared, tx: Sender<Event>) {
    let cmdline_disks: Option<Vec<PathBuf>> = cmdline.get("disks").map(|d| d.split(',').map(PathBuf::from).collect());
    let s = s.clone();
    let _ = std::thread::Builder::new().name("storage".into()).spawn(move || {
        let mut st = StorageStatus::default();
        // Named on the command line, else found by serial (a missing one
        // keeps a placeholder name so it is reported), else by position.
        let disks: Vec<PathBuf> = match cmdline_disks {
            Some(d) => {
                storage::wait_for_devices(&d, storage::DISK_WAIT);
                d
            }
            None => {
                let found = storage::wait_for_serials(storage::SERIAL_DATA, storage::DISK_WAIT);
                if found.iter().all(Option::is_none) {
                    let d: Vec<PathBuf> = storage::DEFAULT_DISKS.iter().map(PathBuf::from).collect();
                    storage::wait_for_devices(&d, storage::DISK_WAIT);
                    d
                } else {
                    found.into_iter().zip(storage::SERIAL_DATA).map(|(p, serial)| p.unwrap_or_else(|| Path::new("/dev/disk/by-serial").join(serial))).collect()
                }
            }
        };
        let publish = |st: &StorageStatus, msg: &str| {
            with(&state, |b| {
                b.storage = Some(st.clone());
                b.store_state = msg.to_string();
            });
        };
        publish(&st, "bringing up the mirror");
        if let Err(e) = storage::bring_up_volume(&disks, &mut st) {
            alarm!("{e}");
            st.problems.push(e.to_string());
            publish(&st, &format!("no mirror: {e}"));
            return;
        }
        publish(&st, "mirror mounted; preparing the store");
        if let Err(e) = storage::prepare_store(&s, &mut st) {
            alarm!("{e}");
            st.problems.push(e.to_string());
            publish(&st, &format!("no store: {e}"));
        } else {
            with(&state, |b| b.store_path = Some(PathBuf::from(storage::STORE_DIR)));
            let _ = tx.send(Event::StoreReady);
        }
        let clients = match s.clients.as_deref().map(storage::expand_clients) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                alarm!("clients: {e}; the store is not exported");
                st.problems.push(format!("clients: {e}"));
                publish(&st, "store not exported: bad client list");
                return;
            }
            None => {
                alarm!("no clients configured (mailfort.clients=CIDR); the store is not exported");
                st.problems.push("no clients configured".into());
                publish(&st, "store not exported: no clients configured");
                return;
            }
        };
        match storage::start_nfs_server(&clients, &mut st) {
            Ok(()) => {
                publish(&st, &format!("{} exported over NFSv4", storage::STORE_DIR));
                crate::log::line("mailfort", &format!("ready: the store is exported to {} client address(es)", clients.len()));
            }
            Err(e) => {
                alarm!("NFS server: {e}");
                st.problems.push(format!("NFS server: {e}"));
                publish(&st, &format!("NFS server not running: {e}"));
            }
        }
    });
}

/// `mailfort serve` on this box's address and the standard ports.
fn serve_spec(s: &NodeSettings, node: &str, addr: Option<std::net::Ipv4Addr>) -> ServiceSpec {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/init"));
    let ip = addr.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into());
    let mut args: Vec<String> = vec!["serve".into(), "--store".into(), STORE_MOUNT.into(), "--node".into(), node.into(), "--rank".into(), s.rank.unwrap_or(1).to_string()];
    for (flag, port) in [("--smtp", PORT_SMTP), ("--submission", PORT_SUBMISSION), ("--submissions", PORT_SUBMISSIONS), ("--pop3", PORT_POP3), ("--pop3s", PORT_POP3S)] {
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
                libc::SIGCHLD => reap(services),
                libc::SIGINT => shutdown(PowerRequest::Reboot, "Ctrl-Alt-Del (SIGINT)", services, state, stopping),
                libc::SIGTERM | libc::SIGUSR2 | libc::SIGPWR => shutdown(PowerRequest::Off, sys::signal_name(sig), services, state, stopping),
                libc::SIGUSR1 => shutdown(PowerRequest::Reboot, "SIGUSR1", services, state, stopping),
                other => say!("ignoring {}", sys::signal_name(other)),
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
        if sys::wait_signal(TICK) == Some(libc::SIGCHLD) {
            reap(services);
        }
    }
    for s in services.iter() {
        if let Some(pid) = s.pid() {
            say!("{} did not stop within {} s; killing it", s.spec.name, SERVICE_STOP_TIMEOUT.as_secs());
            sys::kill(pid, libc::SIGKILL);
        }
    }
    // Everyone else (helpers, orphans).
    sys::kill(-1, libc::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < OTHERS_STOP_TIMEOUT && sys::other_processes() > 0 {
        if sys::wait_signal(TICK) == Some(libc::SIGCHLD) {
            reap(services);
        }
    }
    sys::kill(-1, libc::SIGKILL);
    reap(services);
    let role = with(state, |b| b.role).unwrap_or(Role::Mail);
    match role {
        Role::Mail => unmount_store(),
        Role::Storage => storage::shut_down(),
    }
    sys::sync();
    say!("{}", if req == PowerRequest::Off { "powering off" } else { "rebooting" });
    let e = sys::reboot(if req == PowerRequest::Off { libc::RB_POWER_OFF } else { libc::RB_AUTOBOOT });
    alarm!("reboot(2) failed: {e}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn unmount_store() {
    if !nfs::is_mountpoint(Path::new(STORE_MOUNT)) {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new().name("unmount".into()).spawn(move || {
        let _ = tx.send(sys::umount(STORE_MOUNT));
    });
    match rx.recv_timeout(UNMOUNT_TIMEOUT) {
        Ok(Ok(())) => say!("store unmounted"),
        Ok(Err(e)) => {
            say!("unmounting the store: {e}; forcing");
            let _ = nfs::unmount(Path::new(STORE_MOUNT));
        }
        Err(_) => {
            say!("the store did not unmount within {} s (storage box gone?); forcing", UNMOUNT_TIMEOUT.as_secs());
            let _ = nfs::unmount(Path::new(STORE_MOUNT));
        }
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
        assert!(a.starts_with("serve --store /store --node mail2 --rank 2 --smtp 192.0.2.12:25 --submission 192.0.2.12:587 --submissions 192.0.2.12:465 --pop3 192.0.2.12:110 --pop3s 192.0.2.12:995 --advertise 192.0.2.12"), "{a}");
        let spec = serve_spec(&NodeSettings::default(), "m", None);
        assert!(spec.args.join(" ").contains("--smtp 0.0.0.0:25") && !spec.args.contains(&"--advertise".to_string()));
    }

    #[test]
    fn console_device_choice() {
        assert_eq!(console_device(&Cmdline::parse("console=tty0 console=ttyS0,115200")), PathBuf::from("/dev/ttyS0"));
        assert_eq!(console_device(&Cmdline::parse("console=tty0")), PathBuf::from("/dev/console"));
        assert_eq!(console_device(&Cmdline::parse("console=ttyS0 mailfort.console=hvc0")), PathBuf::from("/dev/hvc0"));
    }
}
