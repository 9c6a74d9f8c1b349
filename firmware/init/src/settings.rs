//! A box's own settings: who it is, its address, where its store is.
//!
//! They live on the box's config partition (see [`crate::configdisk`]) as
//! TOML. On first boot the kernel command line seeds them; afterwards the
//! saved settings win, key by key, and a key the partition does not have
//! yet is taken from the command line (and saved). Settings are typed
//! here; a bad value on the command line is reported and skipped, never a
//! reason not to boot.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::cmdline::Cmdline;

/// Where the store is mounted on a mail box, and the default export path.
pub const DEFAULT_EXPORT: &str = "/store";
/// The interface the box's address goes on (no udev renames it).
pub const DEFAULT_IFACE: &str = "eth0";
/// Longest value we keep for a free-text setting.
const MAX_VALUE: usize = 512;

/// Why a setting (from `config set` or the command line) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("longer than {MAX_VALUE} characters")]
    TooLong,
    #[error("'{value}' is not {what}")]
    Invalid { value: String, what: &'static str },
    #[error("unknown setting '{0}' (see `config show`)")]
    Unknown(String),
    #[error("expected NAME:BASE64SECRET")]
    BadTsig,
}

/// Why the settings file on the config partition cannot be written or
/// read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsFileError {
    #[error("cannot write the settings: {0}")]
    Encode(#[from] toml::ser::Error),
    #[error("{0}")]
    Decode(#[from] toml::de::Error),
    #[error("{0}")]
    NotUtf8(#[from] std::str::Utf8Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// SMTP/POP3 node on the shared store (NFS client).
    Mail,
    /// The mirrored store and its NFS server.
    Storage,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "mail" => Some(Role::Mail),
            "storage" => Some(Role::Storage),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Mail => "mail",
            Role::Storage => "storage",
        })
    }
}

/// An IPv4 address with its prefix length, `192.0.2.11/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let prefix: u8 = p.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        Some(Cidr { addr: a.parse().ok()?, prefix })
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) })
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & u32::from(self.netmask()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How the box gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    Static(Cidr),
    Dhcp,
}

impl Addressing {
    pub fn parse(s: &str) -> Option<Addressing> {
        if s == "dhcp" {
            return Some(Addressing::Dhcp);
        }
        Cidr::parse(s).map(Addressing::Static)
    }
}

/// The RFC 2136 target the storage box writes into the store's
/// cluster.toml, so that the mail boxes' announcer keeps DNS in step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdnsSettings {
    /// The zone's primary server, IP:PORT.
    pub server: Option<String>,
    pub zone: Option<String>,
    /// TSIG key name and base64 secret (RFC 8945).
    pub key_name: Option<String>,
    pub key_secret: Option<String>,
    pub key_algorithm: Option<String>,
    /// The name clients use (default: the store's host name).
    pub client_host: Option<String>,
}

impl DdnsSettings {
    fn is_empty(&self) -> bool {
        *self == DdnsSettings::default()
    }
}

/// Everything a box knows about itself. Every field is optional so that
/// the saved settings and the command line can be merged key by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSettings {
    pub role: Option<Role>,
    /// The node name (also the host name and the NFSv4 client id).
    pub node: Option<String>,
    /// 1 = preferred MX.
    pub rank: Option<u32>,
    /// `192.0.2.11/24` or `dhcp`.
    pub ip: Option<String>,
    pub gw: Option<Ipv4Addr>,
    /// Resolvers for /etc/resolv.conf.
    pub dns: Option<Vec<IpAddr>>,
    /// Mail box: the storage box's address.
    pub storage: Option<IpAddr>,
    /// Mail box: the export path on the storage box.
    pub export: Option<String>,
    /// Mail box: the id of the store this box belongs to, learnt on first
    /// mount so that another store is never taken for it.
    pub store_id: Option<String>,
    /// Storage box: the mail domain of a new store.
    pub domain: Option<String>,
    /// Storage box: who may mount the store: `192.0.2.0/24`, addresses and
    /// ranges `192.0.2.11-192.0.2.13`, comma-separated.
    pub clients: Option<String>,
    /// The console's admin password, an argon2id PHC string.
    pub admin_hash: Option<String>,
    /// Storage box: DNS UPDATE target for cluster.toml.
    #[serde(skip_serializing_if = "DdnsSettings::is_empty")]
    pub ddns: DdnsSettings,
}

/// Keys `config set` may change, with what they mean; also the
/// `mailfort.<key>` command-line words.
pub const KEYS: &[(&str, &str)] = &[
    ("role", "mail or storage"),
    ("node", "node name: a-z, 0-9, '-' (also the host name)"),
    ("rank", "1 = preferred MX"),
    ("ip", "address/prefix, e.g. 192.0.2.11/24, or dhcp"),
    ("gw", "default gateway (IPv4)"),
    ("dns", "resolvers, comma-separated"),
    ("storage", "mail box: the storage box's address"),
    ("export", "mail box: export path on the storage box (default /store)"),
    ("store_id", "mail box: the store this box belongs to (learnt on first mount)"),
    ("domain", "storage box: mail domain of a new store"),
    ("clients", "storage box: who may mount the store: CIDR, addresses, ranges a-b"),
    ("ddns.server", "storage box: DNS server for RFC 2136 updates, IP:PORT"),
    ("ddns.zone", "storage box: zone of the cluster's records"),
    ("ddns.key_name", "storage box: TSIG key name"),
    ("ddns.key_secret", "storage box: TSIG secret, base64"),
    ("ddns.key_algorithm", "storage box: TSIG algorithm (default hmac-sha256)"),
    ("ddns.client_host", "storage box: name clients use (default: the store's host name)"),
];

impl NodeSettings {
    /// Reads our settings from the command line; bad values are reported
    /// in the second element and skipped.
    pub fn from_cmdline(c: &Cmdline) -> (NodeSettings, Vec<String>) {
        let mut s = NodeSettings::default();
        let mut problems = Vec::new();
        for (k, v) in &c.values {
            if v.is_empty() {
                continue;
            }
            let r = match k.as_str() {
                // The board's short forms (board/qemu-x86_64/CMDLINE.md):
                // `dnsupdate=IP:PORT` and `tsig=NAME:BASE64`.
                "dnsupdate" => s.set("ddns.server", v),
                "tsig" => match v.split_once(':') {
                    Some((name, secret)) => s.set("ddns.key_name", name).and_then(|()| s.set("ddns.key_secret", secret)),
                    None => Err(SettingError::BadTsig),
                },
                k if KEYS.iter().any(|(key, _)| *key == k) => s.set(k, v),
                _ => continue,
            };
            if let Err(e) = r {
                problems.push(format!("mailfort.{k}: {e}"));
            }
        }
        (s, problems)
    }

    /// Sets one key from text, validating it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        let v = value.trim();
        if v.len() > MAX_VALUE {
            return Err(SettingError::TooLong);
        }
        let invalid = |what: &'static str| SettingError::Invalid { value: v.to_string(), what };
        let text = |ok: bool, what: &'static str| if ok { Ok(Some(v.to_string())) } else { Err(invalid(what)) };
        match key {
            "role" => self.role = Some(Role::parse(v).ok_or_else(|| invalid("a role (mail or storage)"))?),
            "node" => self.node = text(valid_node_name(v), "a node name (a-z, 0-9, '-', at most 32)")?,
            "rank" => self.rank = Some(v.parse::<u32>().ok().filter(|r| *r >= 1).ok_or_else(|| invalid("a rank (1 or more)"))?),
            "ip" => self.ip = text(Addressing::parse(v).is_some(), "address/prefix or dhcp")?,
            "gw" => self.gw = Some(v.parse().map_err(|_| invalid("an IPv4 address"))?),
            "dns" => self.dns = Some(v.split(',').map(|x| x.trim().parse::<IpAddr>()).collect::<Result<Vec<_>, _>>().map_err(|_| invalid("a list of IP addresses"))?),
            "storage" => self.storage = Some(v.parse().map_err(|_| invalid("an IP address"))?),
            "export" => self.export = text(storage::client::valid_export(v), "an absolute export path")?,
            "store_id" => self.store_id = text(!v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit()), "a store id (hex)")?,
            "domain" => self.domain = text(store::address::valid_domain(&store::address::normalize_domain(v)), "a domain name")?.map(|d| store::address::normalize_domain(&d)),
            "clients" => self.clients = text(storage::export::expand_clients(v).is_ok(), "a client list (CIDR, addresses, ranges a-b)")?,
            "ddns.server" => self.ddns.server = text(v.parse::<std::net::SocketAddr>().is_ok(), "IP:PORT")?,
            "ddns.zone" => self.ddns.zone = text(store::address::valid_domain(v.trim_end_matches('.')), "a zone name")?,
            "ddns.key_name" => self.ddns.key_name = text(store::address::valid_domain(v.trim_end_matches('.')), "a key name")?,
            "ddns.key_secret" => self.ddns.key_secret = text(!v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)), "base64")?,
            "ddns.key_algorithm" => self.ddns.key_algorithm = text(v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "an algorithm name")?,
            "ddns.client_host" => self.ddns.client_host = text(store::address::valid_domain(v), "a host name")?,
            _ => return Err(SettingError::Unknown(key.to_string())),
        }
        Ok(())
    }

    /// The settings as `key value` pairs for people (secrets masked).
    pub fn describe(&self) -> Vec<(String, String)> {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut out = vec![
            ("role".to_string(), self.role.map(|r| r.to_string()).unwrap_or_default()),
            ("node".into(), o(&self.node)),
            ("rank".into(), self.rank.map(|r| r.to_string()).unwrap_or_default()),
            ("ip".into(), o(&self.ip)),
            ("gw".into(), self.gw.map(|g| g.to_string()).unwrap_or_default()),
            ("dns".into(), self.dns.as_ref().map(|d| d.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default()),
            ("storage".into(), self.storage.map(|s| s.to_string()).unwrap_or_default()),
            ("export".into(), o(&self.export)),
            ("store_id".into(), o(&self.store_id)),
            ("domain".into(), o(&self.domain)),
            ("clients".into(), o(&self.clients)),
            ("ddns.server".into(), o(&self.ddns.server)),
            ("ddns.zone".into(), o(&self.ddns.zone)),
            ("ddns.key_name".into(), o(&self.ddns.key_name)),
            ("ddns.key_secret".into(), if self.ddns.key_secret.is_some() { "(set)".into() } else { String::new() }),
            ("ddns.key_algorithm".into(), o(&self.ddns.key_algorithm)),
            ("ddns.client_host".into(), o(&self.ddns.client_host)),
        ];
        out.push(("admin password".into(), if self.admin_hash.is_some() { "(set)".into() } else { "(not set)".into() }));
        out
    }

    /// The saved settings (`self`) with every key they lack taken from
    /// `cmdline`: saved settings win.
    pub fn merged_over(&self, cmdline: &NodeSettings) -> NodeSettings {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        let (a, b) = (self, cmdline);
        NodeSettings {
            role: pick(&a.role, &b.role),
            node: pick(&a.node, &b.node),
            rank: pick(&a.rank, &b.rank),
            ip: pick(&a.ip, &b.ip),
            gw: pick(&a.gw, &b.gw),
            dns: pick(&a.dns, &b.dns),
            storage: pick(&a.storage, &b.storage),
            export: pick(&a.export, &b.export),
            store_id: pick(&a.store_id, &b.store_id),
            domain: pick(&a.domain, &b.domain),
            clients: pick(&a.clients, &b.clients),
            admin_hash: pick(&a.admin_hash, &b.admin_hash),
            ddns: DdnsSettings {
                server: pick(&a.ddns.server, &b.ddns.server),
                zone: pick(&a.ddns.zone, &b.ddns.zone),
                key_name: pick(&a.ddns.key_name, &b.ddns.key_name),
                key_secret: pick(&a.ddns.key_secret, &b.ddns.key_secret),
                key_algorithm: pick(&a.ddns.key_algorithm, &b.ddns.key_algorithm),
                client_host: pick(&a.ddns.client_host, &b.ddns.client_host),
            },
        }
    }

    pub fn to_toml(&self) -> Result<String, SettingsFileError> {
        Ok(toml::to_string(self)?)
    }

    pub fn from_toml(text: &str) -> Result<NodeSettings, SettingsFileError> {
        Ok(toml::from_str(text)?)
    }

    /// The settings file as the config partition holds it.
    pub fn from_bytes(bytes: &[u8]) -> Result<NodeSettings, SettingsFileError> {
        NodeSettings::from_toml(std::str::from_utf8(bytes)?)
    }

    pub fn addressing(&self) -> Option<Addressing> {
        self.ip.as_deref().and_then(Addressing::parse)
    }

    pub fn export_path(&self) -> &str {
        self.export.as_deref().unwrap_or(DEFAULT_EXPORT)
    }
}

/// The same rule as the node names maild accepts.
pub fn valid_node_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 32 && !n.starts_with('-') && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_seeds_settings() {
        let c = Cmdline::parse("mailfort.role=mail mailfort.node=mail2 mailfort.rank=2 mailfort.ip=192.0.2.12/24 mailfort.gw=192.0.2.1 mailfort.dns=192.0.2.53,192.0.2.54 mailfort.storage=192.0.2.10 mailfort.export=/store mailfort.console=ttyS0");
        let (s, problems) = NodeSettings::from_cmdline(&c);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.role, Some(Role::Mail));
        assert_eq!(s.node.as_deref(), Some("mail2"));
        assert_eq!(s.rank, Some(2));
        assert_eq!(s.addressing(), Some(Addressing::Static(Cidr { addr: "192.0.2.12".parse().unwrap(), prefix: 24 })));
        assert_eq!(s.dns.as_ref().map(|d| d.len()), Some(2));
        assert_eq!(s.export_path(), "/store");
    }

    #[test]
    fn board_short_forms() {
        let c = Cmdline::parse("mailfort.role=storage mailfort.dnsupdate=10.0.0.1:53 mailfort.tsig=mailfort-announcer.:c2VjcmV0c2VjcmV0 mailfort.clients=10.0.0.0/24");
        let (s, problems) = NodeSettings::from_cmdline(&c);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.ddns.server.as_deref(), Some("10.0.0.1:53"));
        assert_eq!(s.ddns.key_name.as_deref(), Some("mailfort-announcer."));
        assert_eq!(s.ddns.key_secret.as_deref(), Some("c2VjcmV0c2VjcmV0"));
        let (_, problems) = NodeSettings::from_cmdline(&Cmdline::parse("mailfort.tsig=nocolon"));
        assert_eq!(problems, vec![format!("mailfort.tsig: {}", SettingError::BadTsig)]);
    }

    #[test]
    fn bad_values_are_reported_and_skipped() {
        let c = Cmdline::parse("mailfort.role=web mailfort.node=Mail_1 mailfort.rank=0 mailfort.ip=300.1.1.1/24 mailfort.gw=x mailfort.export=store mailfort.domain=example.test");
        let (s, problems) = NodeSettings::from_cmdline(&c);
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert_eq!(s.role, None);
        assert_eq!(s.domain.as_deref(), Some("example.test"));
    }

    #[test]
    fn saved_settings_win_and_gaps_fill_from_cmdline() {
        let saved = NodeSettings { node: Some("mail1".into()), rank: Some(3), admin_hash: Some("$argon2id$x".into()), ..Default::default() };
        let (cmd, _) = NodeSettings::from_cmdline(&Cmdline::parse("mailfort.node=other mailfort.rank=1 mailfort.ip=192.0.2.11/24 mailfort.ddns.zone=example.test"));
        let m = saved.merged_over(&cmd);
        assert_eq!(m.node.as_deref(), Some("mail1"));
        assert_eq!(m.rank, Some(3));
        assert_eq!(m.ip.as_deref(), Some("192.0.2.11/24"));
        assert_eq!(m.ddns.zone.as_deref(), Some("example.test"));
        assert_eq!(m.admin_hash.as_deref(), Some("$argon2id$x"));
    }

    #[test]
    fn toml_round_trip() {
        let mut s = NodeSettings::default();
        for (k, v) in [("role", "storage"), ("node", "storage"), ("ip", "dhcp"), ("clients", "192.0.2.0/24"), ("domain", "Example.TEST"), ("ddns.server", "192.0.2.53:53"), ("ddns.key_secret", "c2VjcmV0c2VjcmV0")] {
            s.set(k, v).unwrap();
        }
        assert_eq!(s.domain.as_deref(), Some("example.test"));
        let text = s.to_toml().unwrap();
        assert_eq!(NodeSettings::from_toml(&text).unwrap(), s);
        assert!(s.describe().iter().any(|(k, v)| k == "ddns.key_secret" && v == "(set)"));
        assert!(!s.describe().iter().any(|(_, v)| v.contains("c2Vj")));
        assert_eq!(s.set("nonsense", "1"), Err(SettingError::Unknown("nonsense".into())));
        assert_eq!(s.set("rank", "0"), Err(SettingError::Invalid { value: "0".into(), what: "a rank (1 or more)" }));
        assert_eq!(s.set("clients", "10.0.0.0/16"), Err(SettingError::Invalid { value: "10.0.0.0/16".into(), what: "a client list (CIDR, addresses, ranges a-b)" }));
        assert_eq!(s.set("node", &"a".repeat(MAX_VALUE + 1)), Err(SettingError::TooLong));
        assert!(matches!(NodeSettings::from_bytes(b"role = \"mail"), Err(SettingsFileError::Decode(_))));
        assert!(matches!(NodeSettings::from_bytes(b"\xff"), Err(SettingsFileError::NotUtf8(_))));
        // Unknown keys in a saved file (from a newer version) do not stop us.
        assert!(NodeSettings::from_toml("role = \"mail\"\nfuture = 1\n").is_ok());
    }

    #[test]
    fn cidr_math() {
        let c = Cidr::parse("192.0.2.77/24").unwrap();
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.network(), Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(Cidr::parse("10.0.0.1/0").unwrap().netmask(), Ipv4Addr::UNSPECIFIED);
        assert!(Cidr::parse("10.0.0.1/33").is_none());
        assert!(Cidr::parse("10.0.0.1").is_none());
    }
}
