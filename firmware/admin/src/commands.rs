//! The administration command set: parse a line into a [`Command`], run it
//! against a [`Host`] and get text back. No I/O happens here; the host
//! does it. The serial console, `mailfort console` and the web page are
//! front ends over this one set, so every setting can be made either way
//! and the two never disagree.

use std::fmt::Write as _;

use store::{Address, AddressError, PasswordError};

use crate::access::{AccessError, CertView, QueueItem, StoreAccess, StoreReport};
use crate::password::NewPasswordError;
use crate::process::NodeSettingError;

/// Log lines `status` shows.
pub const STATUS_LOG_LINES: usize = 15;
pub const DEFAULT_LOG_LINES: usize = 50;
/// `log N` shows at most this many (the ring holds about as many).
pub const MAX_LOG_LINES: usize = crate::log::RING_LINES;
/// A pasted certificate (chain and key) ends at a line with only this.
pub const PEM_END_LINE: &str = ".";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Log(usize),
    History,
    UserAdd(Address),
    UserPasswd(Address),
    UserDel(Address),
    UserList,
    NodeShow,
    NodeSet(String, String),
    ClusterShow,
    ClusterSet(String, String),
    QueueList,
    QueueShow(String),
    QueueRetry(String),
    QueueDelete(String),
    CertShow,
    /// Replace the cluster's certificate with a pasted PEM chain and key.
    CertUpload,
    CertRegenerate,
    /// Change the admin password (console and web page, every node).
    AdminPasswd,
    Restart(String),
    Reboot,
    Poweroff,
    Logout,
}

/// One line of help per command, in the order `help` shows them.
pub const HELP: &[(&str, &str)] = &[
    ("status", "this node, its services, the store, the live set, DNS, recent log"),
    ("log [N]", "the last N log lines (default 50)"),
    ("user list", "the accounts"),
    ("user add ADDRESS", "add an account (asks for its password)"),
    ("user passwd ADDRESS", "set an account's password"),
    ("user del ADDRESS", "delete an account (its mailbox is kept)"),
    ("node show", "this node's settings"),
    ("node set KEY VALUE", "change one of this node's settings"),
    ("cluster show", "the settings every node shares (kept in the store)"),
    ("cluster set KEY VALUE", "change a shared setting; running nodes follow"),
    ("queue list", "mail waiting for delivery to other domains"),
    ("queue show ID", "one entry: envelope, state, headers"),
    ("queue retry ID", "make an entry due now"),
    ("queue del ID", "remove an entry without delivering it"),
    ("cert show", "the cluster's TLS certificate"),
    ("cert upload", "paste a PEM certificate chain and key, then a line with ."),
    ("cert regenerate", "go back to a new self-signed certificate"),
    ("admin-passwd", "change the admin password (console and web page)"),
    ("restart SERVICE", "restart a service of this box"),
    ("history", "the commands typed in this session (!N runs one again)"),
    ("reboot", "stop the services cleanly and restart the box"),
    ("poweroff", "stop the services cleanly and power off"),
    ("logout", "end this session"),
    ("help", "this list"),
];

/// Why a line is not a command.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{0}` takes no arguments")]
    NoArguments(String),
    #[error("usage: {0}")]
    Usage(String),
    #[error("{word}: {source}")]
    Address { word: String, source: AddressError },
    #[error("'{0}' is not a queue id (`queue list` shows them)")]
    QueueId(String),
    #[error("usage: log [N], N from 1 to {MAX_LOG_LINES}")]
    LogLines,
    #[error("unknown cluster setting '{0}'; `cluster show` lists them")]
    UnknownClusterSetting(String),
    #[error("unknown command '{0}'; type `help`")]
    Unknown(String),
}

/// Why a host could not do what a command asked.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Store(#[from] AccessError),
    #[error(transparent)]
    NodeSetting(#[from] NodeSettingError),
    #[error("not on an appliance: restart the process with your service manager")]
    NotAnAppliance,
    #[error("this host cannot reboot or power off from the web page")]
    CannotPower,
    /// The host refused, in its own words (a box's settings and services).
    #[error("{0}")]
    Refused(String),
}

/// Why a command failed; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no password given")]
    NoPassword,
    #[error(transparent)]
    NewPassword(#[from] NewPasswordError),
    #[error(transparent)]
    Hash(#[from] PasswordError),
    #[error(transparent)]
    Store(#[from] AccessError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("no certificate given")]
    NoCertificate,
    #[error("not on an appliance: nothing to reboot or power off")]
    NoPower,
}

/// Parses one line. `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(&first) = words.first() else { return Ok(None) };
    let args = &words[1..];
    let none = |c: Command| if args.is_empty() { Ok(Some(c)) } else { Err(ParseError::NoArguments(first.to_string())) };
    let usage = |u: &str| ParseError::Usage(u.to_string());
    let address = |w: &[&str], u: &str| -> Result<Address, ParseError> {
        match w {
            [a] => Address::parse(a).map_err(|source| ParseError::Address { word: a.to_string(), source }),
            _ => Err(usage(u)),
        }
    };
    let id = |w: &[&str], u: &str| -> Result<String, ParseError> {
        match w {
            [i] if crate::access::valid_queue_id(i) => Ok(i.to_string()),
            [i] => Err(ParseError::QueueId(i.to_string())),
            _ => Err(usage(u)),
        }
    };
    let set = |w: &[&str], what: &str| -> Result<(String, String), ParseError> {
        match w {
            ["set", key, value @ ..] if !value.is_empty() => Ok((key.to_string(), value.join(" "))),
            _ => Err(ParseError::Usage(format!("{what} show | {what} set KEY VALUE"))),
        }
    };
    match first {
        "help" | "?" => none(Command::Help),
        "status" => none(Command::Status),
        "history" => none(Command::History),
        "reboot" => none(Command::Reboot),
        "poweroff" | "halt" | "shutdown" => none(Command::Poweroff),
        "logout" | "exit" | "quit" => none(Command::Logout),
        "admin-passwd" => none(Command::AdminPasswd),
        "restart" => match args {
            [s] => Ok(Some(Command::Restart(s.to_string()))),
            _ => Err(usage("restart SERVICE")),
        },
        "log" => match args {
            [] => Ok(Some(Command::Log(DEFAULT_LOG_LINES))),
            [n] => n.parse::<usize>().ok().filter(|n| (1..=MAX_LOG_LINES).contains(n)).map(|n| Some(Command::Log(n))).ok_or(ParseError::LogLines),
            _ => Err(usage("log [N]")),
        },
        "user" | "users" => match args.split_first() {
            Some((&"list", [])) | None => Ok(Some(Command::UserList)),
            Some((&"add", rest)) => Ok(Some(Command::UserAdd(address(rest, "user add ADDRESS")?))),
            Some((&"passwd", rest)) => Ok(Some(Command::UserPasswd(address(rest, "user passwd ADDRESS")?))),
            Some((&"del", rest)) | Some((&"delete", rest)) => Ok(Some(Command::UserDel(address(rest, "user del ADDRESS")?))),
            _ => Err(usage("user list | user add ADDRESS | user passwd ADDRESS | user del ADDRESS")),
        },
        // `config` is the older name of `node`.
        "node" | "config" => match args {
            [] | ["show"] => Ok(Some(Command::NodeShow)),
            _ => set(args, "node").map(|(k, v)| Some(Command::NodeSet(k, v))),
        },
        "cluster" => match args {
            [] | ["show"] => Ok(Some(Command::ClusterShow)),
            _ => {
                let (k, v) = set(args, "cluster")?;
                if !crate::cluster_keys::is_key(&k) {
                    return Err(ParseError::UnknownClusterSetting(k));
                }
                Ok(Some(Command::ClusterSet(k, v)))
            }
        },
        "queue" => match args.split_first() {
            None | Some((&"list", [])) => Ok(Some(Command::QueueList)),
            Some((&"show", rest)) => Ok(Some(Command::QueueShow(id(rest, "queue show ID")?))),
            Some((&"retry", rest)) => Ok(Some(Command::QueueRetry(id(rest, "queue retry ID")?))),
            Some((&"del", rest)) | Some((&"delete", rest)) => Ok(Some(Command::QueueDelete(id(rest, "queue del ID")?))),
            _ => Err(usage("queue list | queue show ID | queue retry ID | queue del ID")),
        },
        "cert" | "certificate" => match args {
            [] | ["show"] => Ok(Some(Command::CertShow)),
            ["upload"] => Ok(Some(Command::CertUpload)),
            ["regenerate"] => Ok(Some(Command::CertRegenerate)),
            _ => Err(usage("cert show | cert upload | cert regenerate")),
        },
        other => Err(ParseError::Unknown(other.to_string())),
    }
}

impl Command {
    /// Whether the front end must ask for a new password (twice, without
    /// echo) before running it.
    pub fn needs_new_password(&self) -> bool {
        matches!(self, Command::UserAdd(_) | Command::UserPasswd(_) | Command::AdminPasswd)
    }

    /// Whether the front end must collect a pasted text (a PEM) first.
    pub fn needs_text(&self) -> bool {
        matches!(self, Command::CertUpload)
    }
}

/// What the front end must do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Logout,
    Reboot,
    Poweroff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub action: Action,
    /// Whether the command failed (the text says why; nothing changed).
    pub error: bool,
}

impl Reply {
    fn text(t: impl Into<String>) -> Reply {
        Reply { text: t.into(), action: Action::None, error: false }
    }
}

/// A service the box supervises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub name: String,
    pub state: String,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// The storage box's mirror and NFS server.
#[derive(Debug, Clone, Default)]
pub struct StorageView {
    pub disks: Vec<(String, String)>,
    pub mounted: bool,
    pub degraded: bool,
    pub nfs_serving: bool,
    pub clients: usize,
}

/// This node as `status` shows it.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// `mail`, `storage`, or `process` for a node run as a plain process.
    pub role: String,
    pub node: String,
    pub rank: Option<u32>,
    pub address: String,
    pub uptime: String,
    /// The store as this node has it (mounted, not answering, ...).
    pub store: String,
    pub services: Vec<ServiceView>,
    pub storage: Option<StorageView>,
    /// Things a person must look at (bad settings, a degraded mirror).
    pub problems: Vec<String>,
}

/// One setting as `node show` / `cluster show` list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub help: String,
}

/// What the commands need from the box (or process) they run on. Calls
/// that reach the store go through [`Host::store`], which bounds them with
/// deadlines (a hard NFS mount of a dead storage box must not hang a
/// console or a web page).
pub trait Host: Send + Sync {
    fn store(&self) -> &StoreAccess;
    /// This node.
    fn node(&self) -> NodeView;
    fn log_tail(&self, n: usize) -> Vec<String>;
    /// This node's settings (config partition on a box, config file in a
    /// process); None when there is nothing to set here.
    fn node_settings(&self) -> Option<Vec<Setting>>;
    /// Validates and saves one node setting; returns when it takes effect.
    fn set_node_setting(&self, key: &str, value: &str) -> Result<String, HostError>;
    /// On a brand-new box, the node settings the first console login asks
    /// for (with a suggested value, or empty); nothing once set up.
    fn first_setup(&self) -> Vec<Setting>;
    /// Whether the settings in effect are the saved ones (false on a box
    /// set up just now: they apply at the next boot).
    fn first_setup_done(&self) -> bool;
    /// The admin password's argon2id hash: the store's, or the copy this
    /// node keeps for when the store does not answer.
    fn admin_hash(&self) -> Option<String>;
    /// Saves a new admin hash (in the store and this node's copy).
    fn set_admin_hash(&self, hash: &str) -> Result<(), HostError>;
    /// Restarts a supervised service; returns what happened.
    fn restart_service(&self, name: &str) -> Result<String, HostError>;
    /// Whether reboot and poweroff mean anything here.
    fn can_power(&self) -> bool;
    /// Carries out the reboot or poweroff that [`execute`] answered with
    /// [`Action::Reboot`] / [`Action::Poweroff`], for front ends with no
    /// caller to hand the action to (the web page). A host that can power
    /// ([`Host::can_power`]) overrides it; it should return at once and
    /// stop the services in the background.
    fn power(&self, action: Action) -> Result<(), HostError> {
        let _ = action;
        Err(HostError::CannotPower)
    }
}

/// Runs a command. `password` is the new password the front end asked
/// for when [`Command::needs_new_password`]; `text` the pasted text for
/// [`Command::needs_text`].
pub fn execute(cmd: &Command, host: &dyn Host, password: Option<&str>, text: Option<&str>) -> Reply {
    let st = host.store();
    let pw = || {
        let p = password.ok_or(CommandError::NoPassword)?;
        crate::password::check_new_password(p)?;
        Ok::<_, CommandError>(p)
    };
    let r: Result<Reply, CommandError> = match cmd {
        Command::Help => Ok(Reply::text(help_text())),
        Command::Status => Ok(Reply::text(status_text(host))),
        Command::Log(n) => Ok(Reply::text(host.log_tail(*n).join("\n"))),
        // The front end keeps the history.
        Command::History => Ok(Reply::text(String::new())),
        Command::UserList => st.user_list().map_err(CommandError::from).map(|l| Reply::text(if l.is_empty() { "no accounts".to_string() } else { l.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("\n") })),
        Command::UserAdd(a) => pw().and_then(|p| Ok(st.user_add(a, p)?)).map(|()| Reply::text(format!("added {a}"))),
        Command::UserPasswd(a) => pw().and_then(|p| Ok(st.user_passwd(a, p)?)).map(|()| Reply::text(format!("password of {a} changed"))),
        Command::UserDel(a) => st.user_del(a).map_err(CommandError::from).map(|kept| Reply::text(format!("deleted {a} (its mailbox {kept} is kept)"))),
        Command::NodeShow => Ok(Reply::text(match host.node_settings() {
            Some(s) => settings_table(&s),
            None => "no node settings here".into(),
        })),
        Command::NodeSet(k, v) => host.set_node_setting(k, v).map_err(CommandError::from).map(|when| Reply::text(format!("{k} = {v} saved; {when}"))),
        Command::ClusterShow => st.cluster_settings().map_err(CommandError::from).map(|s| Reply::text(settings_table(&s))),
        Command::ClusterSet(k, v) => st.set_cluster_setting(k, v).map_err(CommandError::from).map(|()| Reply::text(format!("{k} = {} saved in the store; running nodes follow within seconds", crate::cluster_keys::shown(k, v)))),
        Command::QueueList => st.queue_list().map_err(CommandError::from).map(|l| Reply::text(queue_text(&l))),
        Command::QueueShow(id) => st.queue_show(id).map_err(CommandError::from).map(Reply::text),
        Command::QueueRetry(id) => st.queue_retry(id).map_err(CommandError::from).map(|()| Reply::text(format!("{id} is due now"))),
        Command::QueueDelete(id) => st.queue_delete(id).map_err(CommandError::from).map(|()| Reply::text(format!("deleted {id} (no notification is sent)"))),
        Command::CertShow => st.cert_show().map_err(CommandError::from).map(|c| Reply::text(cert_text(&c))),
        Command::CertUpload => match text {
            Some(pem) => st.cert_upload(pem).map_err(CommandError::from).map(|(c, warning)| Reply::text(format!("certificate saved; every node presents it within seconds\n{}{}", cert_text(&c), warning.map(|w| format!("\n{w}")).unwrap_or_default()))),
            None => Err(CommandError::NoCertificate),
        },
        Command::CertRegenerate => st.cert_regenerate().map_err(CommandError::from).map(|c| Reply::text(format!("new self-signed certificate; every node presents it within seconds\n{}", cert_text(&c)))),
        Command::AdminPasswd => pw().and_then(|p| Ok(crate::password::hash_password(p)?)).and_then(|h| Ok(host.set_admin_hash(&h)?)).map(|()| Reply::text("admin password changed")),
        Command::Restart(s) => host.restart_service(s).map_err(CommandError::from).map(Reply::text),
        Command::Reboot | Command::Poweroff if !host.can_power() => Err(CommandError::NoPower),
        Command::Reboot => Ok(Reply { text: "rebooting: stopping services".into(), action: Action::Reboot, error: false }),
        Command::Poweroff => Ok(Reply { text: "powering off: stopping services".into(), action: Action::Poweroff, error: false }),
        Command::Logout => Ok(Reply { text: String::new(), action: Action::Logout, error: false }),
    };
    r.unwrap_or_else(|e| Reply { text: format!("error: {e}"), action: Action::None, error: true })
}

pub fn help_text() -> String {
    let mut t = String::from("commands:\n");
    for (c, what) in HELP {
        let _ = writeln!(t, "  {c:<24} {what}");
    }
    t.trim_end().to_string()
}

fn settings_table(s: &[Setting]) -> String {
    let mut t = String::new();
    for x in s {
        let _ = writeln!(t, "{:<26} {:<30} {}", x.key, if x.value.is_empty() { "-" } else { &x.value }, x.help);
    }
    t.trim_end().to_string()
}

fn queue_text(l: &[QueueItem]) -> String {
    if l.is_empty() {
        return "the queue is empty".into();
    }
    let mut t = String::new();
    for e in l {
        let _ = writeln!(t, "{}  {} bytes  from {}  to {}  attempts {}  {}{}", e.id, e.size, e.from, e.rcpts.join(", "), e.attempts, e.state, e.last_error.as_ref().map(|x| format!("  last error: {x}")).unwrap_or_default());
    }
    t.trim_end().to_string()
}

pub fn cert_text(c: &CertView) -> String {
    format!(
        "source       {}\nsubject      {}\nnames        {}\nissuer       {}\nvalid        {} to {} ({} days left)\nsha256       {}{}",
        c.source,
        c.subject,
        c.names.join(", "),
        c.issuer,
        c.not_before,
        c.not_after,
        c.expires_in_days,
        c.sha256,
        c.warning.as_ref().map(|w| format!("\nWARNING: {w}")).unwrap_or_default()
    )
}

fn status_text(host: &dyn Host) -> String {
    let mut t = String::new();
    let n = host.node();
    let rank = n.rank.map(|r| format!(", rank {r}")).unwrap_or_default();
    let _ = writeln!(t, "node      {} ({}{rank}), address {}, up {}", n.node, n.role, n.address, n.uptime);
    let _ = writeln!(t, "store     {}", n.store);
    for s in &n.services {
        let last = s.last_exit.as_ref().map(|l| format!("; last {l}")).unwrap_or_default();
        let _ = writeln!(t, "service   {}: {}, {} restart(s){last}", s.name, s.state, s.restarts);
    }
    if let Some(st) = &n.storage {
        let disks: Vec<String> = st.disks.iter().map(|(d, s)| format!("{d} {s}")).collect();
        let _ = writeln!(t, "mirror    {}{}; disks: {}", if st.mounted { "mounted" } else { "NOT mounted" }, if st.degraded { " DEGRADED" } else { "" }, disks.join(", "));
        let _ = writeln!(t, "nfs       {}", if st.nfs_serving { format!("serving the store to {} client address(es)", st.clients) } else { "not serving".into() });
    }
    for p in &n.problems {
        let _ = writeln!(t, "PROBLEM   {p}");
    }
    match host.store().report() {
        Ok(r) => store_report_text(&mut t, &r),
        Err(e) => {
            let _ = writeln!(t, "store     NOT AVAILABLE: {e}");
        }
    }
    let _ = writeln!(t, "recent log:");
    for l in host.log_tail(STATUS_LOG_LINES) {
        let _ = writeln!(t, "  {l}");
    }
    t.trim_end().to_string()
}

fn store_report_text(t: &mut String, r: &StoreReport) {
    let _ = writeln!(t, "store at  {}: id {}, domains {}, host name {}, {} account(s), {} queued", r.root, r.store_id, r.domains.join(","), r.hostname, r.accounts, r.queued);
    if let Some((free, total)) = r.space {
        let _ = writeln!(t, "space     {} free of {}", human_bytes(free), human_bytes(total));
    }
    if r.live.is_empty() {
        let _ = writeln!(t, "live set  no node has served from this store yet");
    } else {
        let _ = writeln!(t, "live set  {:<12} {:>4}  {:<5} {:>9}  ADDRESSES", "NODE", "RANK", "STATE", "HEARTBEAT");
        for l in &r.live {
            let _ = writeln!(t, "          {:<12} {:>4}  {:<5} {:>9}  {}", l.node, l.rank, l.state, l.age, l.addresses);
        }
        // A protection that is off is never off silently.
        for l in r.live.iter().filter(|l| l.state == "live") {
            for p in &l.protections_off {
                let _ = writeln!(t, "PROBLEM   {}: {p}", l.node);
            }
        }
    }
    let _ = writeln!(t, "announcer {}", r.announcer);
    let _ = writeln!(t, "dns       {}", r.dns);
    for rec in &r.dns_records {
        let _ = writeln!(t, "          {rec}");
    }
}

/// `1.5 GiB`, for people.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(parse("status").unwrap(), Some(Command::Status));
        assert_eq!(parse("  user   add  Alice@Example.test ").unwrap(), Some(Command::UserAdd(Address::parse("alice@example.test").unwrap())));
        assert_eq!(parse("user").unwrap(), Some(Command::UserList));
        assert_eq!(parse("log 5").unwrap(), Some(Command::Log(5)));
        assert_eq!(parse("log").unwrap(), Some(Command::Log(DEFAULT_LOG_LINES)));
        assert_eq!(parse("config set ip 192.0.2.9/24").unwrap(), Some(Command::NodeSet("ip".into(), "192.0.2.9/24".into())));
        assert_eq!(parse("node set rank 2").unwrap(), Some(Command::NodeSet("rank".into(), "2".into())));
        assert_eq!(parse("cluster set domains a.test, b.test").unwrap(), Some(Command::ClusterSet("domains".into(), "a.test, b.test".into())));
        assert_eq!(parse("queue retry 1700000000.abc-1").unwrap(), Some(Command::QueueRetry("1700000000.abc-1".into())));
        assert_eq!(parse("cert upload").unwrap(), Some(Command::CertUpload));
        assert_eq!(parse("restart serve").unwrap(), Some(Command::Restart("serve".into())));
        assert_eq!(parse("exit").unwrap(), Some(Command::Logout));
        for bad in [
            "frobnicate",
            "status now",
            "user add",
            "user add a b",
            "user add not-an-address",
            "log 0",
            "log x",
            "log 999999",
            "config set",
            "config set ip",
            "cluster set bogus 1",
            "cluster set domains",
            "user rename a@b",
            "queue show ../../etc/passwd",
            "queue show",
            "cert burn",
            "restart",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
        assert_eq!(parse("status now"), Err(ParseError::NoArguments("status".into())));
        assert_eq!(parse("frobnicate"), Err(ParseError::Unknown("frobnicate".into())));
        assert_eq!(parse("cluster set bogus 1"), Err(ParseError::UnknownClusterSetting("bogus".into())));
        assert_eq!(parse("queue show ../x"), Err(ParseError::QueueId("../x".into())));
        assert_eq!(parse("log 0"), Err(ParseError::LogLines));
        assert!(matches!(parse("user add not-an-address"), Err(ParseError::Address { .. })));
        assert!(matches!(parse("restart"), Err(ParseError::Usage(_))));
        assert!(parse("user add x@example.test").unwrap().unwrap().needs_new_password());
        assert!(!parse("user del x@example.test").unwrap().unwrap().needs_new_password());
        assert!(parse("cert upload").unwrap().unwrap().needs_text());
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
