//! The command set's host for a node run as a plain process (`mailfort
//! serve`, `mailfort console`): the store by its directory, node settings
//! in the node's TOML config file, the log of this process.

use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::access::StoreAccess;
use crate::commands::{Host, HostError, NodeView, Setting};
use crate::shell::{self, Terminal};

/// Largest config file read (it is a handful of lines).
const MAX_CONFIG: u64 = 256 * 1024;

/// The node settings a process keeps in its config file (the keys of
/// `mailfort serve --config FILE`), and what each is.
pub const KEYS: &[(&str, &str)] = &[
    ("node", "node name: a-z, 0-9, '-'"),
    ("rank", "1 = preferred MX"),
    ("store", "the store directory (local or an NFS mount)"),
    ("advertise", "addresses published in DNS for this node, comma-separated"),
    ("smtp", "SMTP listen addresses, comma-separated, or off"),
    ("submission", "submission (STARTTLS) listen addresses, or off"),
    ("submissions", "submission over TLS listen addresses, or off"),
    ("pop3", "POP3 listen addresses, or off"),
    ("pop3s", "POP3 over TLS listen addresses, or off"),
    ("imap", "IMAP (STARTTLS) listen addresses, or off"),
    ("imaps", "IMAP over TLS listen addresses, or off"),
    ("admin.listen", "HTTPS admin page listen addresses, or off"),
    ("inbound.dns_server", "DNS resolver for SPF/DKIM/DMARC checks, IP:PORT (`default`: the system's)"),
    ("outbound.dns_server", "DNS resolver for MX lookups, IP:PORT (`default`: the system's)"),
];

/// Keys whose value is a list.
const LIST_KEYS: &[&str] = &["advertise", "smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "admin.listen"];

/// Why a node setting was refused or could not be saved. Nothing changes
/// when one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSettingError {
    #[error("unknown node setting '{0}'; `node show` lists them")]
    Unknown(String),
    #[error("rank: '{0}' is not a number")]
    RankNotANumber(String),
    #[error("rank: 1 or more (1 = preferred)")]
    Rank,
    #[error("node: '{0}' is not a node name (a-z, 0-9, '-', at most {max} characters)", max = config::MAX_NODE_NAME)]
    NodeName(String),
    #[error("{0} in the config file is not a table")]
    NotATable(String),
    /// The file would no longer be a node configuration.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("advertise: give the addresses clients reach, not 0.0.0.0 or multicast")]
    Advertise,
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("this node was started without --config FILE: its settings are its command line")]
    NoConfigFile,
    #[error("a settings change failed earlier")]
    Poisoned,
}

/// What a process knows of itself for `status`.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub node: String,
    pub rank: Option<u32>,
    /// The listen addresses, for people.
    pub address: String,
}

pub struct ProcessHost {
    store: StoreAccess,
    config: Option<PathBuf>,
    info: ProcessInfo,
    started: Instant,
    /// Config file changes one at a time.
    writing: Mutex<()>,
}

impl ProcessHost {
    pub fn new(store: &Path, config: Option<PathBuf>, info: ProcessInfo) -> ProcessHost {
        ProcessHost { store: StoreAccess::new(store), config, info, started: Instant::now(), writing: Mutex::new(()) }
    }

    fn read_table(path: &Path) -> Result<toml::Table, NodeSettingError> {
        use std::io::Read;
        let bad = |reason: String| NodeSettingError::File { path: path.to_path_buf(), reason };
        let mut text = String::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                f.take(MAX_CONFIG).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(toml::Table::new()),
            Err(e) => return Err(bad(e.to_string())),
        }
        text.parse::<toml::Table>().map_err(|e| bad(e.to_string()))
    }
}

fn get<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    match key.split_once('.') {
        Some((a, b)) => t.get(a)?.as_table()?.get(b),
        None => t.get(key),
    }
}

fn show(v: Option<&toml::Value>) -> String {
    match v {
        None => String::new(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(toml::Value::Array(a)) if a.is_empty() => "off".into(),
        Some(toml::Value::Array(a)) => a.iter().map(|x| show(Some(x))).collect::<Vec<_>>().join(", "),
        Some(other) => other.to_string(),
    }
}

/// Sets `key` in the config table after checking the value; the table as
/// a whole must still be a valid node configuration.
pub fn set_in_table(t: &mut toml::Table, key: &str, value: &str) -> Result<(), NodeSettingError> {
    let v = value.trim();
    if !KEYS.iter().any(|(k, _)| *k == key) {
        return Err(NodeSettingError::Unknown(key.to_string()));
    }
    let mut new = t.clone();
    let (outer, inner) = match key.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (key, None),
    };
    let value: Option<toml::Value> = if LIST_KEYS.contains(&key) {
        let items: Vec<toml::Value> = if v == "off" { Vec::new() } else { v.split([',', ' ']).filter(|x| !x.is_empty()).map(|x| toml::Value::String(x.to_string())).collect() };
        Some(toml::Value::Array(items))
    } else if key == "rank" {
        let r: u32 = v.parse().map_err(|_| NodeSettingError::RankNotANumber(v.to_string()))?;
        if r == 0 {
            return Err(NodeSettingError::Rank);
        }
        Some(toml::Value::Integer(r.into()))
    } else if v == "default" && inner.is_some() {
        None
    } else {
        Some(toml::Value::String(v.to_string()))
    };
    if key == "node" && !config::valid_node_name(v) {
        return Err(NodeSettingError::NodeName(v.to_string()));
    }
    match inner {
        None => {
            if let Some(val) = value {
                new.insert(outer.to_string(), val);
            }
        }
        Some(i) => {
            let sub = new.entry(outer.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let sub = sub.as_table_mut().ok_or_else(|| NodeSettingError::NotATable(outer.to_string()))?;
            match value {
                Some(val) => {
                    sub.insert(i.to_string(), val);
                }
                None => {
                    sub.remove(i);
                }
            }
        }
    }
    // Every value must still make a node configuration (addresses parse,
    // types match).
    let invalid = |reason: String| NodeSettingError::Invalid { key: key.to_string(), reason };
    let cfg: config::NodeConfig = toml::from_str(&toml::to_string(&new).map_err(|e| invalid(e.to_string()))?).map_err(|e| invalid(e.message().to_string()))?;
    if cfg.advertise.iter().any(|a| a.is_unspecified() || a.is_multicast()) {
        return Err(NodeSettingError::Advertise);
    }
    *t = new;
    Ok(())
}

impl Host for ProcessHost {
    fn store(&self) -> &StoreAccess {
        &self.store
    }

    fn node(&self) -> NodeView {
        let store = match self.store.call(crate::access::STORE_READ_DEADLINE, |s| Ok(s.probe()?)) {
            Ok(()) => format!("{} answers", self.store.root().display()),
            Err(e) => format!("{}: {e}", self.store.root().display()),
        };
        NodeView {
            role: "process".into(),
            node: if self.info.node.is_empty() { "console".into() } else { self.info.node.clone() },
            rank: self.info.rank,
            address: if self.info.address.is_empty() { "-".into() } else { self.info.address.clone() },
            uptime: format!("{}s", self.started.elapsed().as_secs()),
            store,
            ..NodeView::default()
        }
    }

    fn log_tail(&self, n: usize) -> Vec<String> {
        crate::log::tail(n)
    }

    fn node_settings(&self) -> Option<Vec<Setting>> {
        let path = self.config.as_ref()?;
        let t = Self::read_table(path).unwrap_or_default();
        Some(KEYS.iter().map(|(k, h)| Setting { key: k.to_string(), value: show(get(&t, k)), help: h.to_string() }).collect())
    }

    fn set_node_setting(&self, key: &str, value: &str) -> Result<String, HostError> {
        let path = self.config.as_ref().ok_or(NodeSettingError::NoConfigFile)?;
        let _one = self.writing.lock().map_err(|_| NodeSettingError::Poisoned)?;
        let mut t = Self::read_table(path)?;
        set_in_table(&mut t, key, value)?;
        let file = |reason: String| NodeSettingError::File { path: path.clone(), reason };
        let text = toml::to_string(&t).map_err(|e| file(e.to_string()))?;
        store::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| file(e.to_string()))?;
        Ok(format!("written to {}; it takes effect when the node is started again", path.display()))
    }

    fn first_setup(&self) -> Vec<Setting> {
        Vec::new()
    }

    fn first_setup_done(&self) -> bool {
        true
    }

    fn admin_hash(&self) -> Option<String> {
        self.store.admin_hash().ok().flatten()
    }

    fn set_admin_hash(&self, hash: &str) -> Result<(), HostError> {
        Ok(self.store.set_admin_hash(hash)?)
    }

    fn restart_service(&self, _: &str) -> Result<String, HostError> {
        Err(HostError::NotAnAppliance)
    }

    fn can_power(&self) -> bool {
        false
    }
}

/// `mailfort console --store DIR` on standard input and output. Whoever
/// runs it can read the store already, so there is no login.
pub fn run_console(store: &Path, config: Option<PathBuf>) -> io::Result<()> {
    let host = ProcessHost::new(store, config, ProcessInfo::default());
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut output = io::stdout();
    let echo_fd = stdin.is_terminal().then(|| stdin.as_fd());
    let mut term = Terminal { input: &mut input, output: &mut output, echo_fd, idle_logout: None };
    term.say(&format!("mailfort console on the store {}", store.display()))?;
    shell::shell(&host, &mut term, "mailfort> ")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_settings_are_checked_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        store::Store::init(&root, "example.test", None).unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(&cfg, "node = \"n1\"\nrank = 1\n[limits]\nmax_recipients = 200\n").unwrap();
        let h = ProcessHost::new(&root, Some(cfg.clone()), ProcessInfo::default());
        let before = std::fs::read_to_string(&cfg).unwrap();
        let invalid = |e: &NodeSettingError, k: &str| matches!(e, NodeSettingError::Invalid { key, .. } if key == k);
        let refused: [(&str, &str, fn(&NodeSettingError) -> bool); 8] = [
            ("rank", "0", |e| *e == NodeSettingError::Rank),
            ("rank", "x", |e| *e == NodeSettingError::RankNotANumber("x".into())),
            ("node", "Bad Name", |e| *e == NodeSettingError::NodeName("Bad Name".into())),
            ("smtp", "not-an-address", |_| false),
            ("admin.listen", "127.0.0.1", |_| false),
            ("advertise", "0.0.0.0", |e| *e == NodeSettingError::Advertise),
            ("bogus", "1", |e| *e == NodeSettingError::Unknown("bogus".into())),
            ("outbound.dns_server", "nowhere", |_| false),
        ];
        for (k, v, want) in refused {
            match h.set_node_setting(k, v) {
                // Values that do not make a node configuration are refused
                // by the configuration's own parser, for this key.
                Err(HostError::NodeSetting(e)) => assert!(want(&e) || invalid(&e, k), "{k} = {v}: {e:?}"),
                other => panic!("{k} = {v}: {other:?}"),
            }
        }
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before, "a refused value changed the file");
        h.set_node_setting("rank", "2").unwrap();
        h.set_node_setting("smtp", "127.0.0.1:2525, [::1]:2525").unwrap();
        h.set_node_setting("pop3", "off").unwrap();
        h.set_node_setting("outbound.dns_server", "127.0.0.1:53").unwrap();
        // Kept: a new host reading the same file sees the values, and the
        // file is still a node configuration with the other keys intact.
        let h2 = ProcessHost::new(&root, Some(cfg.clone()), ProcessInfo::default());
        let s = h2.node_settings().unwrap();
        let get = |k: &str| s.iter().find(|x| x.key == k).unwrap().value.clone();
        assert_eq!(get("rank"), "2");
        assert_eq!(get("smtp"), "127.0.0.1:2525, [::1]:2525");
        assert_eq!(get("pop3"), "off");
        assert_eq!(get("outbound.dns_server"), "127.0.0.1:53");
        let c: config::NodeConfig = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        assert_eq!((c.rank, c.node.as_str(), c.limits.max_recipients, c.pop3.len()), (2, "n1", 200, 0));
        h.set_node_setting("outbound.dns_server", "default").unwrap();
        let c: config::NodeConfig = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        assert_eq!(c.outbound.dns_server, None);
        let none = ProcessHost::new(&root, None, ProcessInfo::default());
        assert!(none.node_settings().is_none());
        assert!(matches!(none.set_node_setting("rank", "2"), Err(HostError::NodeSetting(NodeSettingError::NoConfigFile))));
    }
}
