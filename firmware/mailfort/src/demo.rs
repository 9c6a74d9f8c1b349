//! `mailfort demo`: the patent's layout on one machine, with no setup.
//!
//! A store, the domain example.test, a demo user, three nodes as separate
//! processes on 127.0.0.1 with distinct ports, and an embedded
//! authoritative DNS server that accepts the announcer's TSIG-signed
//! updates. The demo prints the endpoints, then every change of the live
//! set and of the MX records as it happens; a person types `kill 1`,
//! `start 1`, `status` to try failover by hand.

use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use dns::{EmbeddedServer, TsigAlgorithm, TsigKey, ZoneData};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use cluster::live::read_live_set;
use store::{Address, DnsSettings, Store, TsigSettings};

const DOMAIN: &str = "example.test";
const DEMO_USER: &str = "demo@example.test";
const NODES: usize = 3;
/// Ports of node 1; node N adds (N-1) x NODE_PORT_STEP.
const BASE_PORTS: [(&str, u16); 8] = [("smtp", 2525), ("submission", 2587), ("submissions", 2465), ("pop3", 2110), ("pop3s", 2995), ("imap", 2143), ("imaps", 2993), ("admin", 2443)];
const NODE_PORT_STEP: u16 = 10_000;
/// How often the demo looks at the live set and the zone.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long nodes get to stop cleanly at the end.
const STOP_GRACE: Duration = Duration::from_secs(10);
const TSIG_KEY_NAME: &str = "mailfort-demo.";

#[derive(Args)]
pub struct DemoArgs {
    /// Where the demo keeps its store, logs and the demo password.
    #[arg(long, default_value = "mailfort-demo")]
    dir: PathBuf,
    /// Address of the embedded DNS server.
    #[arg(long, default_value = "127.0.0.1:5353")]
    dns: SocketAddr,
    /// Added to every node port, to run the demo beside other servers.
    #[arg(long, default_value_t = 0)]
    port_offset: u16,
}

struct DemoNode {
    index: usize,
    name: String,
    ports: Vec<(&'static str, SocketAddr)>,
    child: Option<Child>,
    log: PathBuf,
    /// The node's settings file (the admin page's node settings).
    config: PathBuf,
}

impl DemoNode {
    fn port(&self, svc: &str) -> SocketAddr {
        self.ports.iter().find(|(s, _)| *s == svc).map(|(_, a)| *a).expect("every service has a port")
    }

    /// Writes the node's settings file on the first run; later runs keep
    /// what was changed on the admin page, adding only the listeners of
    /// services the file does not name yet (a demo made before them would
    /// otherwise have every node on the same default port).
    fn write_config(&self, store: &Path) -> anyhow::Result<()> {
        if self.config.exists() {
            let text = std::fs::read_to_string(&self.config).with_context(|| format!("cannot read {}", self.config.display()))?;
            let mut t: toml::Table = text.parse().with_context(|| format!("cannot parse {}", self.config.display()))?;
            let mut added = false;
            for (svc, addr) in &self.ports {
                if *svc != "admin" && !t.contains_key(*svc) {
                    t.insert(svc.to_string(), toml::Value::Array(vec![addr.to_string().into()]));
                    added = true;
                }
            }
            if added {
                std::fs::write(&self.config, toml::to_string(&t)?).with_context(|| format!("cannot write {}", self.config.display()))?;
            }
            return Ok(());
        }
        let mut t = toml::Table::new();
        t.insert("node".into(), self.name.clone().into());
        t.insert("rank".into(), (self.index as i64).into());
        t.insert("store".into(), store.display().to_string().into());
        t.insert("allow_plaintext_auth".into(), true.into());
        for (svc, addr) in &self.ports {
            let list = toml::Value::Array(vec![addr.to_string().into()]);
            if *svc == "admin" {
                let mut a = toml::Table::new();
                a.insert("listen".into(), list);
                t.insert("admin".into(), a.into());
            } else {
                t.insert(svc.to_string(), list);
            }
        }
        std::fs::write(&self.config, toml::to_string(&t)?).with_context(|| format!("cannot write {}", self.config.display()))?;
        Ok(())
    }

    fn start(&mut self, exe: &Path, store: &Path) -> anyhow::Result<()> {
        self.write_config(store)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--config"]).arg(&self.config);
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Signals our own child.
    fn signal(&self, sig: Signal) -> bool {
        match self.pid() {
            Some(pid) => nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).is_ok(),
            None => false,
        }
    }

    /// Collects an exited child; returns how it ended.
    fn reap(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                use std::os::unix::process::ExitStatusExt;
                Some(match status.signal() {
                    Some(s) => format!("killed by signal {s}"),
                    None => format!("exited with {}", status.code().unwrap_or(-1)),
                })
            }
            _ => None,
        }
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    stamp();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_writer(std::io::stderr).init();
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    let store_dir = dir.join("store");
    let store = if store::layout::Layout::new(&store_dir).format().exists() { Store::open(&store_dir)? } else { Store::init(&store_dir, DOMAIN, None)? };
    if !store.is_local_domain(DOMAIN) {
        anyhow::bail!("{} holds a store that does not serve {DOMAIN}; use another --dir", store_dir.display());
    }
    let password = demo_password(&dir, &store)?;
    let admin_password = demo_admin_password(&dir, &store)?;
    let key = demo_dns(&store, a.dns)?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let server = EmbeddedServer::start(a.dns, DOMAIN, key, ZoneData { ttl: store::DEFAULT_DNS_TTL, ..Default::default() })
            .await
            .with_context(|| format!("cannot start the DNS server on {} (is another demo running? try --dns 127.0.0.1:PORT)", a.dns))?;
        let exe = std::env::current_exe()?;
        let mut nodes: Vec<DemoNode> = (1..=NODES)
            .map(|i| {
                let step = (i as u16 - 1) * NODE_PORT_STEP + a.port_offset;
                let ports = BASE_PORTS.iter().map(|(s, p)| (*s, SocketAddr::new(IpAddr::from([127, 0, 0, 1]), p + step))).collect();
                DemoNode { index: i, name: format!("node{i}"), ports, child: None, log: dir.join(format!("node{i}.log")), config: dir.join(format!("node{i}.toml")) }
            })
            .collect();
        for n in nodes.iter_mut() {
            n.start(&exe, &store_dir)?;
        }
        print_banner(&dir, &nodes, &password, &admin_password, a.dns);
        let store = Arc::new(store);
        let r = watch_loop(&exe, &store, &store_dir, &mut nodes, &server).await;
        say("stopping the nodes");
        for n in &nodes {
            n.signal(Signal::SIGTERM);
        }
        let start = Instant::now();
        while nodes.iter().any(|n| n.child.is_some()) && start.elapsed() < STOP_GRACE {
            for n in nodes.iter_mut() {
                n.reap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for n in nodes.iter_mut() {
            if let Some(c) = n.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        server.shutdown().await;
        say("stopped");
        r
    })
}

/// The demo user's password: made up once and kept beside the store.
fn demo_password(dir: &Path, store: &Store) -> anyhow::Result<String> {
    let file = dir.join("demo-password");
    let user = Address::parse(DEMO_USER)?;
    if let (Ok(pw), true) = (std::fs::read_to_string(&file), store.accounts().exists(&user)?) {
        return Ok(pw.trim().to_string());
    }
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let pw: String = (0..12).map(|_| ALPHABET[rand_index(ALPHABET.len())] as char).collect();
    if store.accounts().exists(&user)? {
        store.accounts().set_password(&user, &pw)?;
    } else {
        store.accounts().add(&user, &pw, &store.settings().domains)?;
    }
    store.ensure_maildir(&user)?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&file)?;
    writeln!(f, "{pw}")?;
    Ok(pw)
}

/// The admin page's password: made up once, kept beside the store, and
/// its hash in the store (the same on every node).
fn demo_admin_password(dir: &Path, store: &Store) -> anyhow::Result<String> {
    let file = dir.join("admin-password");
    let stored = admin::access::read_admin_hash(store.root()).map_err(anyhow::Error::msg)?;
    if let (Ok(pw), Some(h)) = (std::fs::read_to_string(&file), &stored) {
        if admin::password::verify_password(h, pw.trim()) {
            return Ok(pw.trim().to_string());
        }
    }
    if stored.is_some() && !file.exists() {
        // Someone set their own; leave it.
        return Ok("(the one you set)".into());
    }
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let pw: String = (0..12).map(|_| ALPHABET[rand_index(ALPHABET.len())] as char).collect();
    let hash = admin::password::hash_password(&pw).map_err(anyhow::Error::msg)?;
    admin::access::write_admin_hash(store.root(), &hash).map_err(anyhow::Error::msg)?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&file)?;
    writeln!(f, "{pw}")?;
    Ok(pw)
}

fn rand_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    (u64::from_le_bytes(b) % n as u64) as usize
}

/// Points the cluster's announcer at the embedded server, with a TSIG key
/// made for the demo (kept across runs).
fn demo_dns(store: &Store, server: SocketAddr) -> anyhow::Result<TsigKey> {
    let mut settings = store.reload_settings()?;
    if let Some(d) = &settings.dns {
        if d.server == server.to_string() && d.tsig.name == TSIG_KEY_NAME {
            return Ok(TsigKey::from_base64(&d.tsig.name, &d.tsig.algorithm, &d.tsig.secret)?);
        }
    }
    let key = TsigKey::generate(TSIG_KEY_NAME, TsigAlgorithm::HmacSha256)?;
    settings.dns = Some(DnsSettings {
        server: server.to_string(),
        zone: DOMAIN.into(),
        client_host: None,
        ttl: store::DEFAULT_DNS_TTL,
        recheck_secs: store::DEFAULT_DNS_RECHECK_SECS,
        tsig: TsigSettings { name: TSIG_KEY_NAME.into(), algorithm: "hmac-sha256".into(), secret: key.secret_base64() },
    });
    store.write_settings(&settings)?;
    Ok(key)
}

fn stamp() -> String {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    format!("[{:7.1}s]", t.as_secs_f64())
}

fn say(msg: &str) {
    println!("{} {msg}", stamp());
    let _ = std::io::stdout().flush();
}

fn print_banner(dir: &Path, nodes: &[DemoNode], password: &str, admin_password: &str, dns: SocketAddr) {
    println!("mailfort demo: three mail nodes on one shared store, DNS following the live set\n");
    println!("  store        {}", dir.join("store").display());
    println!("  demo user    {DEMO_USER}   password {password}");
    println!("  DNS server   {dns}   (dig @{} -p {} MX {DOMAIN})", dns.ip(), dns.port());
    println!("  admin page   https://{}/   password {admin_password}   (self-signed certificate)\n", nodes[0].port("admin"));
    println!("  {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>7}  log", "node", "smtp", "subm", "subms", "pop3", "pop3s", "imap", "imaps", "admin", "pid");
    for n in nodes {
        let p = |s: &str| n.port(s).port();
        println!("  {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>7}  {}", n.name, p("smtp"), p("submission"), p("submissions"), p("pop3"), p("pop3s"), p("imap"), p("imaps"), p("admin"), n.pid().unwrap_or(0), n.log.display());
    }
    println!("\n  all on 127.0.0.1; logins without TLS are allowed in the demo.");
    println!("  try:  swaks --server {} --to {DEMO_USER}", nodes[0].port("smtp"));
    println!("  type: status | kill N | stop N | start N | dns | help | quit   (Ctrl-C stops everything)\n");
    let _ = std::io::stdout().flush();
}

fn help() {
    println!("  status    nodes, processes, live set, MX records");
    println!("  kill N    SIGKILL node N (a crash)");
    println!("  stop N    SIGTERM node N (a clean stop)");
    println!("  start N   start node N again");
    println!("  dns       the zone as the DNS server has it");
    println!("  quit      stop everything (also Ctrl-C)");
}

async fn watch_loop(exe: &Path, store: &Arc<Store>, store_dir: &Path, nodes: &mut [DemoNode], server: &EmbeddedServer) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin_open = true;
    let mut last_live: Option<Vec<String>> = None;
    let mut last_mx: Option<Vec<(u16, String)>> = None;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            line = rx.recv(), if stdin_open => match line {
                Some(l) => {
                    if !command(l.trim(), exe, store, store_dir, nodes, server).await? {
                        return Ok(());
                    }
                }
                None => stdin_open = false,
            },
            _ = tokio::time::sleep(WATCH_INTERVAL) => {
                for n in nodes.iter_mut() {
                    if let Some(how) = n.reap() {
                        say(&format!("{} process {how}", n.name));
                    }
                }
                let s = store.clone();
                if let Ok(Ok(live)) = tokio::task::spawn_blocking(move || read_live_set(&s, "demo")).await {
                    let names = live.live_names();
                    if last_live.as_ref() != Some(&names) {
                        say(&format!("live set: {}", if names.is_empty() { "(none)".into() } else { names.join(", ") }));
                        last_live = Some(names);
                    }
                }
                let mut mx = server.data().mx;
                mx.sort();
                if last_mx.as_ref() != Some(&mx) {
                    let text: Vec<String> = mx.iter().map(|(p, n)| format!("{p} {}", n.trim_end_matches('.'))).collect();
                    say(&format!("DNS MX {DOMAIN}: {}", if text.is_empty() { "(none)".into() } else { text.join(", ") }));
                    last_mx = Some(mx);
                }
            }
        }
    }
}

/// Runs one typed command; false means quit.
async fn command(line: &str, exe: &Path, store: &Arc<Store>, store_dir: &Path, nodes: &mut [DemoNode], server: &EmbeddedServer) -> anyhow::Result<bool> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("");
    let arg = words.next();
    let pick = |nodes: &mut [DemoNode], arg: Option<&str>| -> Option<usize> {
        let n: usize = arg?.trim_start_matches("node").parse().ok()?;
        (1..=nodes.len()).contains(&n).then_some(n - 1)
    };
    match verb {
        "" => {}
        "help" | "?" => help(),
        "quit" | "exit" => return Ok(false),
        "status" => {
            let s = store.clone();
            let live = tokio::task::spawn_blocking(move || read_live_set(&s, "demo")).await??;
            for n in nodes.iter() {
                let hb = live.nodes.iter().find(|x| x.info.node == n.name);
                let state = match hb {
                    Some(h) if h.live => format!("live (heartbeat {:.1}s ago)", h.age.as_secs_f64()),
                    Some(h) => format!("dead (heartbeat {:.1}s ago)", h.age.as_secs_f64()),
                    None => "never started".into(),
                };
                let proc_ = n.pid().map(|p| format!("pid {p}")).unwrap_or_else(|| "not running".into());
                println!("  {}  rank {}  {:<12}  {}  smtp {}  pop3 {}  imap {}", n.name, n.index, proc_, state, n.port("smtp"), n.port("pop3"), n.port("imap"));
            }
            let mut mx = server.data().mx;
            mx.sort();
            println!("  MX {DOMAIN}: {}", mx.iter().map(|(p, n)| format!("{p} {}", n.trim_end_matches('.'))).collect::<Vec<_>>().join(", "));
        }
        "dns" => print!("{}", server.zone_text()),
        "kill" | "stop" | "start" => match pick(nodes, arg) {
            None => println!("  which node? {verb} 1..{}", nodes.len()),
            Some(i) => {
                let n = &mut nodes[i];
                if verb == "start" {
                    if n.child.is_some() {
                        println!("  {} is running", n.name);
                    } else {
                        n.start(exe, store_dir)?;
                        say(&format!("started {} (pid {})", n.name, n.pid().unwrap_or(0)));
                    }
                } else if n.signal(if verb == "kill" { Signal::SIGKILL } else { Signal::SIGTERM }) {
                    say(&format!("sent {} to {}", if verb == "kill" { "SIGKILL" } else { "SIGTERM" }, n.name));
                } else {
                    println!("  {} is not running", n.name);
                }
            }
        },
        other => println!("  unknown command '{other}'; type help"),
    }
    let _ = std::io::stdout().flush();
    Ok(true)
}
