//! The administration command set: parse a line into a [`Command`], run it
//! against a [`Host`] and get text back. No I/O happens here; the host
//! does it (the serial console, `mailfort console` and, later, the web
//! page are front ends over the same set).

use std::fmt::Write as _;

use store::Address;

use crate::service::ServiceView;
use crate::settings::NodeSettings;
use crate::storage::StorageStatus;

/// Log lines `status` shows, and `log` by default.
pub const STATUS_LOG_LINES: usize = 15;
pub const DEFAULT_LOG_LINES: usize = 50;
/// `log N` shows at most this many (the ring holds about as many).
pub const MAX_LOG_LINES: usize = crate::log::RING_LINES;

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
    ConfigShow,
    ConfigSet(String, String),
    /// Change the console's own admin password.
    AdminPasswd,
    Reboot,
    Poweroff,
    Logout,
}

/// One line of help per command, in the order `help` shows them.
pub const HELP: &[(&str, &str)] = &[
    ("status", "this box, its services, the store, the live set, recent log"),
    ("log [N]", "the last N log lines (default 50)"),
    ("user list", "the accounts"),
    ("user add ADDRESS", "add an account (asks for its password)"),
    ("user passwd ADDRESS", "set an account's password"),
    ("user del ADDRESS", "delete an account (its mailbox is kept)"),
    ("config show", "this box's settings (config partition)"),
    ("config set KEY VALUE", "change a setting; takes effect at the next boot"),
    ("admin-passwd", "change the console's admin password"),
    ("history", "the commands typed in this session (!N runs one again)"),
    ("reboot", "stop the services cleanly and restart the box"),
    ("poweroff", "stop the services cleanly and power off"),
    ("logout", "end this session"),
    ("help", "this list"),
];

/// Parses one line. `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(&first) = words.first() else { return Ok(None) };
    let args = &words[1..];
    let none = |c: Command| if args.is_empty() { Ok(Some(c)) } else { Err(format!("`{first}` takes no arguments")) };
    let address = |w: &[&str], usage: &str| -> Result<Address, String> {
        match w {
            [a] => Address::parse(a).map_err(|e| format!("{a}: {e}")),
            _ => Err(format!("usage: {usage}")),
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
        "log" => match args {
            [] => Ok(Some(Command::Log(DEFAULT_LOG_LINES))),
            [n] => n.parse::<usize>().ok().filter(|n| (1..=MAX_LOG_LINES).contains(n)).map(|n| Some(Command::Log(n))).ok_or_else(|| format!("usage: log [N], N from 1 to {MAX_LOG_LINES}")),
            _ => Err("usage: log [N]".into()),
        },
        "user" | "users" => match args.split_first() {
            Some((&"list", [])) | None => Ok(Some(Command::UserList)),
            Some((&"add", rest)) => Ok(Some(Command::UserAdd(address(rest, "user add ADDRESS")?))),
            Some((&"passwd", rest)) => Ok(Some(Command::UserPasswd(address(rest, "user passwd ADDRESS")?))),
            Some((&"del", rest)) | Some((&"delete", rest)) => Ok(Some(Command::UserDel(address(rest, "user del ADDRESS")?))),
            _ => Err("usage: user list | user add ADDRESS | user passwd ADDRESS | user del ADDRESS".into()),
        },
        "config" => match args {
            [] | ["show"] => Ok(Some(Command::ConfigShow)),
            ["set", key, value @ ..] if !value.is_empty() => {
                if !crate::settings::KEYS.iter().any(|(k, _)| k == key) {
                    return Err(format!("unknown setting '{key}'; `config show` lists them"));
                }
                Ok(Some(Command::ConfigSet(key.to_string(), value.join(" "))))
            }
            _ => Err("usage: config show | config set KEY VALUE".into()),
        },
        other => Err(format!("unknown command '{other}'; type `help`")),
    }
}

impl Command {
    /// Whether the front end must ask for a new password (twice, without
    /// echo) before running it.
    pub fn needs_new_password(&self) -> bool {
        matches!(self, Command::UserAdd(_) | Command::UserPasswd(_) | Command::AdminPasswd)
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
}

impl Reply {
    fn text(t: impl Into<String>) -> Reply {
        Reply { text: t.into(), action: Action::None }
    }
}

/// This box as `status` shows it.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub role: String,
    pub node: String,
    pub rank: Option<u32>,
    pub address: String,
    pub uptime: String,
    pub store: String,
    pub services: Vec<ServiceView>,
    pub storage: Option<StorageStatus>,
    /// Things a person must look at (bad settings, a degraded mirror).
    pub problems: Vec<String>,
}

/// One node of the live set.
#[derive(Debug, Clone)]
pub struct LiveNode {
    pub node: String,
    pub rank: u32,
    pub state: String,
    pub age: String,
    pub addresses: String,
}

/// The store as `status` shows it.
#[derive(Debug, Clone, Default)]
pub struct StoreReport {
    pub root: String,
    pub store_id: String,
    pub domains: Vec<String>,
    pub hostname: String,
    pub accounts: usize,
    pub live: Vec<LiveNode>,
    pub announcer: String,
    pub dns: String,
}

/// What the commands need from the box (or process) they run on. Every
/// method may block on the store; the host bounds that with deadlines.
pub trait Host {
    /// The box itself; None when running as a plain process.
    fn node(&self) -> Option<NodeView>;
    fn store_report(&self) -> Result<StoreReport, String>;
    fn user_list(&self) -> Result<Vec<Address>, String>;
    fn user_add(&self, addr: &Address, password: &str) -> Result<(), String>;
    fn user_passwd(&self, addr: &Address, password: &str) -> Result<(), String>;
    /// Returns where the kept mailbox is.
    fn user_del(&self, addr: &Address) -> Result<String, String>;
    fn log_tail(&self, n: usize) -> Vec<String>;
    /// The box's settings; None when there are none (a process).
    fn settings(&self) -> Option<NodeSettings>;
    fn set_setting(&self, key: &str, value: &str) -> Result<(), String>;
    /// Keeps the console's admin password (an argon2id PHC string).
    fn set_admin_hash(&self, hash: &str) -> Result<(), String>;
    /// Whether reboot and poweroff mean anything here.
    fn can_power(&self) -> bool;
}

/// Runs a command. `password` is the new password the front end asked
/// for when [`Command::needs_new_password`].
pub fn execute(cmd: &Command, host: &dyn Host, password: Option<&str>) -> Reply {
    let pw = || password.filter(|p| !p.is_empty()).ok_or_else(|| "no password given".to_string());
    let r: Result<Reply, String> = match cmd {
        Command::Help => Ok(Reply::text(help_text())),
        Command::Status => Ok(Reply::text(status_text(host))),
        Command::Log(n) => Ok(Reply::text(host.log_tail(*n).join("\n"))),
        // The front end keeps the history.
        Command::History => Ok(Reply::text(String::new())),
        Command::UserList => host.user_list().map(|l| Reply::text(if l.is_empty() { "no accounts".to_string() } else { l.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("\n") })),
        Command::UserAdd(a) => pw().and_then(|p| host.user_add(a, p)).map(|()| Reply::text(format!("added {a}"))),
        Command::UserPasswd(a) => pw().and_then(|p| host.user_passwd(a, p)).map(|()| Reply::text(format!("password of {a} changed"))),
        Command::UserDel(a) => host.user_del(a).map(|kept| Reply::text(format!("deleted {a} (its mailbox {kept} is kept)"))),
        Command::ConfigShow => Ok(Reply::text(match host.settings() {
            Some(s) => {
                let mut t = String::new();
                for (k, v) in s.describe() {
                    let _ = writeln!(t, "{k:<20} {}", if v.is_empty() { "-" } else { &v });
                }
                t.trim_end().to_string()
            }
            None => "no box settings here (this is not an appliance console)".into(),
        })),
        Command::ConfigSet(k, v) => host.set_setting(k, v).map(|()| Reply::text(format!("{k} = {v} saved; it takes effect at the next boot"))),
        Command::AdminPasswd => pw().and_then(super::hash_password).and_then(|h| host.set_admin_hash(&h)).map(|()| Reply::text("admin password changed")),
        Command::Reboot | Command::Poweroff if !host.can_power() => Err("not on an appliance: nothing to reboot or power off".into()),
        Command::Reboot => Ok(Reply { text: "rebooting: stopping services".into(), action: Action::Reboot }),
        Command::Poweroff => Ok(Reply { text: "powering off: stopping services".into(), action: Action::Poweroff }),
        Command::Logout => Ok(Reply { text: String::new(), action: Action::Logout }),
    };
    r.unwrap_or_else(|e| Reply::text(format!("error: {e}")))
}

pub fn help_text() -> String {
    let mut t = String::from("commands:\n");
    for (c, what) in HELP {
        let _ = writeln!(t, "  {c:<22} {what}");
    }
    t.trim_end().to_string()
}

fn status_text(host: &dyn Host) -> String {
    let mut t = String::new();
    if let Some(n) = host.node() {
        let rank = n.rank.map(|r| format!(", rank {r}")).unwrap_or_default();
        let _ = writeln!(t, "box       {} ({} box{rank}), address {}, up {}", n.node, n.role, n.address, n.uptime);
        let _ = writeln!(t, "store     {}", n.store);
        for s in &n.services {
            let last = s.last_exit.as_ref().map(|l| format!("; last {l}")).unwrap_or_default();
            let _ = writeln!(t, "service   {}: {}, {} restart(s){last}", s.name, s.state, s.restarts);
        }
        if let Some(st) = &n.storage {
            let disks: Vec<String> = st.disks.iter().map(|(d, s)| format!("{} {s}", d.display())).collect();
            let _ = writeln!(t, "mirror    {}{}; disks: {}", if st.mounted { "mounted" } else { "NOT mounted" }, if st.degraded { " DEGRADED" } else { "" }, disks.join(", "));
            let _ = writeln!(t, "nfs       {}", if st.nfs_serving { format!("serving the store to {} client address(es)", st.clients) } else { "not serving".into() });
        }
        for p in &n.problems {
            let _ = writeln!(t, "PROBLEM   {p}");
        }
    }
    match host.store_report() {
        Ok(r) => {
            let _ = writeln!(t, "store at  {}: id {}, domains {}, host name {}, {} account(s)", r.root, r.store_id, r.domains.join(","), r.hostname, r.accounts);
            if r.live.is_empty() {
                let _ = writeln!(t, "live set  no node has served from this store yet");
            } else {
                let _ = writeln!(t, "live set  {:<12} {:>4}  {:<5} {:>9}  ADDRESSES", "NODE", "RANK", "STATE", "HEARTBEAT");
                for l in &r.live {
                    let _ = writeln!(t, "          {:<12} {:>4}  {:<5} {:>9}  {}", l.node, l.rank, l.state, l.age, l.addresses);
                }
            }
            let _ = writeln!(t, "announcer {}", r.announcer);
            let _ = writeln!(t, "dns       {}", r.dns);
        }
        Err(e) => {
            let _ = writeln!(t, "store     NOT AVAILABLE: {e}");
        }
    }
    if host.node().is_some() {
        let _ = writeln!(t, "recent log:");
        for l in host.log_tail(STATUS_LOG_LINES) {
            let _ = writeln!(t, "  {l}");
        }
    }
    t.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn parsing() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(parse("status").unwrap(), Some(Command::Status));
        assert_eq!(parse("  user   add  Alice@Example.test ").unwrap(), Some(Command::UserAdd(Address::parse("alice@example.test").unwrap())));
        assert_eq!(parse("user").unwrap(), Some(Command::UserList));
        assert_eq!(parse("log 5").unwrap(), Some(Command::Log(5)));
        assert_eq!(parse("log").unwrap(), Some(Command::Log(DEFAULT_LOG_LINES)));
        assert_eq!(parse("config set ip 192.0.2.9/24").unwrap(), Some(Command::ConfigSet("ip".into(), "192.0.2.9/24".into())));
        assert_eq!(parse("exit").unwrap(), Some(Command::Logout));
        for bad in ["frobnicate", "status now", "user add", "user add a b", "user add not-an-address", "log 0", "log x", "log 999999", "config set", "config set ip", "config set bogus 1", "user rename a@b"] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
        assert!(parse("user add x@example.test").unwrap().unwrap().needs_new_password());
        assert!(!parse("user del x@example.test").unwrap().unwrap().needs_new_password());
    }

    #[derive(Default)]
    struct FakeHost {
        users: RefCell<Vec<Address>>,
        settings: RefCell<NodeSettings>,
        appliance: bool,
    }

    impl Host for FakeHost {
        fn node(&self) -> Option<NodeView> {
            self.appliance.then(|| NodeView { role: "mail".into(), node: "mail1".into(), rank: Some(1), address: "192.0.2.11/24".into(), uptime: "5s".into(), store: "mounted".into(), services: vec![ServiceView { name: "serve".into(), state: "running".into(), restarts: 0, last_exit: None }], storage: None, problems: vec!["something".into()] })
        }
        fn store_report(&self) -> Result<StoreReport, String> {
            Err("store does not answer".into())
        }
        fn user_list(&self) -> Result<Vec<Address>, String> {
            Ok(self.users.borrow().clone())
        }
        fn user_add(&self, a: &Address, _: &str) -> Result<(), String> {
            self.users.borrow_mut().push(a.clone());
            Ok(())
        }
        fn user_passwd(&self, _: &Address, _: &str) -> Result<(), String> {
            Ok(())
        }
        fn user_del(&self, a: &Address) -> Result<String, String> {
            self.users.borrow_mut().retain(|x| x != a);
            Ok("/store/mail/x".into())
        }
        fn log_tail(&self, n: usize) -> Vec<String> {
            (0..n).map(|i| format!("line {i}")).collect()
        }
        fn settings(&self) -> Option<NodeSettings> {
            self.appliance.then(|| self.settings.borrow().clone())
        }
        fn set_setting(&self, k: &str, v: &str) -> Result<(), String> {
            self.settings.borrow_mut().set(k, v)
        }
        fn set_admin_hash(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
        fn can_power(&self) -> bool {
            self.appliance
        }
    }

    #[test]
    fn executing() {
        let h = FakeHost { appliance: true, ..Default::default() };
        let run = |l: &str, pw: Option<&str>| execute(&parse(l).unwrap().unwrap(), &h, pw);
        assert_eq!(run("user list", None).text, "no accounts");
        assert_eq!(run("user add a@example.test", None).text, "error: no password given");
        assert_eq!(run("user add a@example.test", Some("pw")).text, "added a@example.test");
        assert_eq!(run("user list", None).text, "a@example.test");
        assert!(run("user del a@example.test", None).text.contains("is kept"));
        let st = run("status", None).text;
        assert!(st.contains("mail1 (mail box, rank 1)") && st.contains("NOT AVAILABLE") && st.contains("PROBLEM   something") && st.contains("line 0"), "{st}");
        assert_eq!(run("reboot", None).action, Action::Reboot);
        assert_eq!(run("poweroff", None).action, Action::Poweroff);
        assert_eq!(run("logout", None).action, Action::Logout);
        assert!(run("config set rank 0", None).text.starts_with("error:"));
        assert!(run("config set rank 2", None).text.contains("next boot"));
        assert!(run("config show", None).text.contains("rank                 2"));
        assert!(run("help", None).text.contains("user add ADDRESS"));
        let p = FakeHost::default();
        assert!(execute(&Command::Reboot, &p, None).text.starts_with("error: not on an appliance"));
        assert_eq!(execute(&Command::Reboot, &p, None).action, Action::None);
        assert!(!execute(&Command::Status, &p, None).text.contains("recent log"));
    }
}
