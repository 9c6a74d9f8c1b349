//! `mailfort`: the one binary of the appliance. It parses arguments and
//! calls the library crates; the work happens there.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use maild::NodeConfig;
use store::{Address, Store};

mod cluster_cmd;
mod demo;
mod password;

#[derive(Parser)]
#[command(name = "mailfort", version, about = "A fault-tolerant mail appliance: identical SMTP/POP3/IMAP nodes on one shared store")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create or inspect a store.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Manage accounts (the same on every node).
    #[command(subcommand)]
    User(UserCmd),
    /// Run a mail node: SMTP, submission, POP3 and IMAP on the store.
    Serve(ServeArgs),
    /// Look at the outbound queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// DKIM keys for signing the organisation's outbound mail.
    #[command(subcommand)]
    Dkim(DkimCmd),
    /// The cluster: nodes, live set, DNS announcer.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCmd),
    /// Start a whole cluster on this machine: a store, three nodes and a
    /// DNS server that follows them. Try failover by hand.
    Demo(demo::DemoArgs),
    /// The administration shell of a box's serial console, on this
    /// terminal, against a store directory.
    Console {
        #[command(flatten)]
        store: StoreArg,
        /// The node's config file, for `node show` / `node set`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Create a new store in DIR (new or empty) for a mail domain.
    Init {
        dir: PathBuf,
        /// The mail domain, e.g. example.test.
        #[arg(long)]
        domain: String,
        /// The name clients use for every node (default: mail.<domain>).
        #[arg(long)]
        hostname: Option<String>,
    },
}

#[derive(Args)]
struct StoreArg {
    /// The store directory.
    #[arg(long)]
    store: PathBuf,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add an account.
    Add {
        #[command(flatten)]
        store: StoreArg,
        address: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's password.
    Passwd {
        #[command(flatten)]
        store: StoreArg,
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account (its mailbox is kept).
    Del {
        #[command(flatten)]
        store: StoreArg,
        address: String,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// List the messages waiting for delivery to other domains.
    List {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Show one entry: envelope, state and the message's headers.
    Show {
        #[command(flatten)]
        store: StoreArg,
        id: String,
    },
    /// Make an entry due now (the next scan of any live node tries it).
    Retry {
        #[command(flatten)]
        store: StoreArg,
        id: String,
    },
    /// Remove an entry without delivering it (no notification is sent).
    Delete {
        #[command(flatten)]
        store: StoreArg,
        id: String,
    },
}

#[derive(Subcommand)]
enum DkimCmd {
    /// Make a signing key for a domain (kept in the store) and print the
    /// DNS TXT record to publish. The first key of a domain signs at once;
    /// later ones after `dkim activate`, once their record is published.
    Keygen {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        domain: String,
        /// The selector (RFC 6376 3.1), e.g. a date: 2026-11.
        #[arg(long, default_value = "mailfort")]
        selector: String,
        /// rsa-sha256 (2048 bits) or ed25519-sha256 (RFC 8463).
        #[arg(long, default_value = "rsa-sha256")]
        algorithm: String,
    },
    /// Print the TXT record of the domain's active key.
    Show {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        domain: String,
    },
    /// Sign with another selector's key from now on.
    Activate {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
    },
}

fn dkim(cmd: DkimCmd) -> anyhow::Result<()> {
    let print = |k: &mailauth::DkimKeyInfo| {
        println!("{}{}", k.zone_line(), if k.active { "" } else { "    ; not signing yet: publish, then `mailfort dkim activate`" });
    };
    match cmd {
        DkimCmd::Keygen { store, domain, selector, algorithm } => {
            let s = Store::open(&store.store)?;
            if !s.is_local_domain(&domain) {
                bail!("{domain} is not one of this store's domains ({})", s.settings().domains.join(", "));
            }
            let alg: mailauth::Algorithm = algorithm.parse()?;
            let k = mailauth::keygen(s.root(), &store::address::normalize_domain(&domain), &selector, alg)?;
            println!("publish this TXT record in the zone of {domain}:");
            print(&k);
        }
        DkimCmd::Show { store, domain } => {
            let s = Store::open(&store.store)?;
            match mailauth::txt_record(s.root(), &store::address::normalize_domain(&domain))? {
                Some(k) => print(&k),
                None => bail!("{domain} has no DKIM key; make one with `mailfort dkim keygen`"),
            }
        }
        DkimCmd::Activate { store, domain, selector } => {
            let s = Store::open(&store.store)?;
            let k = mailauth::activate(s.root(), &store::address::normalize_domain(&domain), &selector)?;
            println!("{} now signs with selector {}", k.domain, k.selector);
        }
    }
    Ok(())
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML file with node settings; flags given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The store directory (local or an NFS mount).
    #[arg(long)]
    store: Option<PathBuf>,
    /// This node's name (a-z, 0-9, '-'); default: the host name.
    #[arg(long)]
    node: Option<String>,
    /// This node's rank, 1 = preferred.
    #[arg(long)]
    rank: Option<u32>,
    /// SMTP listen address for mail from other servers (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    smtp: Vec<String>,
    /// Submission (STARTTLS) listen address (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    submission: Vec<String>,
    /// Submission over implicit TLS listen address (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    submissions: Vec<String>,
    /// POP3 (STLS) listen address (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    pop3: Vec<String>,
    /// POP3 over implicit TLS listen address (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    pop3s: Vec<String>,
    /// IMAP (STARTTLS) listen address (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    imap: Vec<String>,
    /// IMAP over implicit TLS listen address (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    imaps: Vec<String>,
    /// PEM certificate chain (default: the cluster's self-signed one).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Address published in DNS for this node (repeatable; default: the
    /// SMTP listen addresses unless they are wildcards).
    #[arg(long, value_name = "IP")]
    advertise: Vec<std::net::IpAddr>,
    /// HTTPS admin page listen address (repeatable; `off`).
    #[arg(long, value_name = "ADDR")]
    admin: Vec<String>,
    /// Allow AUTH and USER/PASS without TLS (tests on loopback only).
    #[arg(long)]
    allow_plaintext_auth: bool,
}

/// Allocations of this size and more get their own mapping from glibc's
/// malloc and go back to the kernel when freed.
const MALLOC_MMAP_THRESHOLD: i32 = 128 * 1024;
/// Heaps (arenas) glibc's malloc keeps at most: one per core of a box.
const MALLOC_ARENA_MAX: i32 = 2;

/// Tunes glibc's malloc for a long-running server on a small box.
///
/// By default glibc maps allocations of 128 KiB and more on their own,
/// but raises that threshold to the size of every such block freed (up to
/// 32 MiB), so after the first one large transient buffers (a TLS record
/// buffer, a message read for checking, an argon2 work area) come from
/// the heaps instead; and it makes up to 8 heaps per core, one for each
/// thread that allocates while the others are busy. Memory freed inside a
/// heap is rarely given back, so every burst left its peak resident for
/// good, per heap: 50 logins at once took a node from 10 to 890 MiB. A
/// fixed threshold (which also turns the raising off) sends every large
/// buffer back to the kernel when it is freed, and few heaps bound what
/// small allocations can leave behind.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; this runs first in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENA_MAX);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    // In a box image this binary is /init: the kernel starts it as PID 1.
    // It runs itself as `/init serve ...` for the services, so only a bare
    // `/init` (or PID 1) is the init.
    let argv0_init = std::env::args_os().next().is_some_and(|a| a.to_string_lossy().ends_with("/init")) && std::env::args_os().len() == 1;
    if std::process::id() == 1 {
        init::pid1::run();
    }
    if argv0_init {
        eprintln!("mailfort: init runs only as PID 1 (the first process of a box); see `mailfort --help`");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailfort: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Store(StoreCmd::Init { dir, domain, hostname }) => {
            let s = Store::init(&dir, &domain, hostname.as_deref())?;
            println!("created store {} for {} (host name {}, store id {})", dir.display(), s.settings().domains.join(", "), s.settings().hostname, s.settings().store_id);
            Ok(())
        }
        Cmd::User(cmd) => user(cmd),
        Cmd::Queue(cmd) => queue(cmd),
        Cmd::Serve(args) => serve(args),
        Cmd::Cluster(c) => cluster_cmd::run(c),
        Cmd::Dkim(c) => dkim(c),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Console { store, config } => Ok(admin::process::run_console(&store.store, config)?),
    }
}

/// The queue commands are the console's (one command set).
fn queue(cmd: QueueCmd) -> anyhow::Result<()> {
    use admin::commands::Command;
    let (store, c) = match cmd {
        QueueCmd::List { store } => (store, Command::QueueList),
        QueueCmd::Show { store, id } => (store, Command::QueueShow(id)),
        QueueCmd::Retry { store, id } => (store, Command::QueueRetry(id)),
        QueueCmd::Delete { store, id } => (store, Command::QueueDelete(id)),
    };
    let host = admin::process::ProcessHost::new(&store.store, None, admin::process::ProcessInfo::default());
    let reply = admin::commands::execute(&c, &host, None, None);
    if reply.error {
        bail!("{}", reply.text.trim_start_matches("error: "));
    }
    println!("{}", reply.text);
    Ok(())
}

fn open_store(p: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(p)?)
}

fn user(cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add { store, address, password_stdin } => {
            let s = open_store(&store.store)?;
            let addr = Address::parse(&address)?;
            let pw = password::obtain(password_stdin)?;
            s.accounts().add(&addr, &pw, &s.settings().domains)?;
            s.ensure_maildir(&addr)?;
            println!("added {addr}");
        }
        UserCmd::Passwd { store, address, password_stdin } => {
            let s = open_store(&store.store)?;
            let addr = Address::parse(&address)?;
            if !s.accounts().exists(&addr)? {
                bail!("{addr} does not exist");
            }
            let pw = password::obtain(password_stdin)?;
            s.accounts().set_password(&addr, &pw)?;
            println!("password of {addr} changed");
        }
        UserCmd::Del { store, address } => {
            let s = open_store(&store.store)?;
            let addr = Address::parse(&address)?;
            s.accounts().delete(&addr)?;
            println!("deleted {addr} (its mailbox {} is kept)", s.maildir_path(&addr).display());
        }
        UserCmd::List { store } => {
            let s = open_store(&store.store)?;
            for a in s.accounts().list()? {
                println!("{a}");
            }
        }
    }
    Ok(())
}

/// Parses a repeatable listen flag: addresses, or `off` for none.
fn listen_flag(flag: &str, values: &[String]) -> anyhow::Result<Option<Vec<SocketAddr>>> {
    if values.is_empty() {
        return Ok(None);
    }
    if values.iter().any(|v| v == "off") {
        if values.len() > 1 {
            bail!("--{flag} off cannot be combined with addresses");
        }
        return Ok(Some(Vec::new()));
    }
    let addrs = values.iter().map(|v| v.parse::<SocketAddr>().with_context(|| format!("--{flag} {v}: expected IP:PORT (for example 127.0.0.1:2525) or off"))).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(addrs))
}

fn default_node_name() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let n: String = h.trim().to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(maild::config::MAX_NODE_NAME).collect();
    if n.is_empty() {
        "node1".into()
    } else {
        n
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let config_file = a.config.clone();
    let mut cfg: NodeConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("bad config file {}", p.display()))?
        }
        None => NodeConfig::default(),
    };
    if let Some(s) = a.store {
        cfg.store = s;
    }
    if let Some(n) = a.node {
        cfg.node = n;
    }
    if cfg.node.is_empty() {
        cfg.node = default_node_name();
    }
    if let Some(r) = a.rank {
        cfg.rank = r;
    }
    for (flag, values, target) in [
        ("smtp", &a.smtp, &mut cfg.smtp),
        ("submission", &a.submission, &mut cfg.submission),
        ("submissions", &a.submissions, &mut cfg.submissions),
        ("pop3", &a.pop3, &mut cfg.pop3),
        ("pop3s", &a.pop3s, &mut cfg.pop3s),
        ("imap", &a.imap, &mut cfg.imap),
        ("imaps", &a.imaps, &mut cfg.imaps),
        ("admin", &a.admin, &mut cfg.admin.listen),
    ] {
        if let Some(v) = listen_flag(flag, values)? {
            *target = v;
        }
    }
    if a.tls_cert.is_some() {
        cfg.tls_cert = a.tls_cert;
    }
    if a.tls_key.is_some() {
        cfg.tls_key = a.tls_key;
    }
    if !a.advertise.is_empty() {
        cfg.advertise = a.advertise;
    }
    cfg.allow_plaintext_auth |= a.allow_plaintext_auth;
    cfg.validate().map_err(anyhow::Error::msg)?;

    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // Standard error, and the ring the admin page shows.
        .with_writer(|| admin::log::RingWriter::new("serve"))
        .with_ansi(false)
        .with_target(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // The process's one resolver of the cluster certificate: the node's
        // sessions present it (unless the node has files of its own), and
        // the admin page and its command set share it.
        let own_files = cfg.tls_cert.is_some() && cfg.tls_key.is_some();
        let cluster_cert = if !own_files || !cfg.admin.listen.is_empty() { Some(load_cluster_cert(&cfg.store).await?) } else { None };
        let node = maild::Node::bind(cfg.clone(), cluster_cert.clone()).await?;
        let mut addrs: Vec<String> = node.local_addrs().iter().map(|(s, a)| format!("{s}={a}")).collect();
        if let (false, Some(resolver)) = (cfg.admin.listen.is_empty(), cluster_cert) {
            for a in start_admin_page(&cfg, config_file, &addrs, resolver).await? {
                addrs.push(format!("admin={a}"));
            }
        }
        tracing::info!(node = %cfg.node, "serving {}", addrs.join(" "));
        // A machine-readable line for scripts and tests that start nodes on
        // port 0.
        println!("ready node={} {}", cfg.node, addrs.join(" "));
        let _ = io::stdout().flush();
        node.run(stop_signal()).await
    })
}

/// How long a start waits for the store to hand out the cluster
/// certificate (opening the store, maybe making the self-signed one).
const CLUSTER_CERT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Loads the store's cluster certificate and keeps it following the store
/// (an upload or renewal on any node).
async fn load_cluster_cert(root: &Path) -> anyhow::Result<Arc<cert::ClusterCertResolver>> {
    let root = root.to_path_buf();
    let (store, resolver) = store::blocking::call(CLUSTER_CERT_DEADLINE, move || -> anyhow::Result<_> {
        let store = Store::open(&root)?;
        let resolver = cert::ClusterCertResolver::load(&store)?;
        Ok((Arc::new(store), resolver))
    })
    .await??;
    cert::spawn_reloader(&resolver, store);
    Ok(resolver)
}

/// The admin page of a node run as a process: the command set over this
/// node's config file and store, with the cluster's certificate.
async fn start_admin_page(cfg: &NodeConfig, config_file: Option<PathBuf>, services: &[String], resolver: Arc<cert::ClusterCertResolver>) -> anyhow::Result<Vec<SocketAddr>> {
    use admin::commands::Host;
    let tls = cert::server_config(resolver.clone());
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for a in &cfg.admin.listen {
        let l = tokio::net::TcpListener::bind(a).await.with_context(|| format!("admin page: cannot listen on {a}"))?;
        bound.push(l.local_addr()?);
        listeners.push(l);
    }
    let info = admin::process::ProcessInfo { node: cfg.node.clone(), rank: Some(cfg.rank), address: services.join(" ") };
    let host = Arc::new(admin::process::ProcessHost::new(&cfg.store, config_file, info));
    // `cert upload`/`cert regenerate` on this page: presented here at once.
    host.store().use_cert_resolver(resolver);
    let mut web = admin::web::WebConfig::default();
    if cfg.admin.session_idle_secs > 0 {
        web.session_idle = std::time::Duration::from_secs(cfg.admin.session_idle_secs);
    }
    tokio::spawn(async move {
        if let Err(e) = admin::web::serve(listeners, host, tls, web, std::future::pending()).await {
            tracing::error!("admin page: {e}");
        }
    });
    Ok(bound)
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
