//! The cluster-wide settings in `<store>/cluster.toml` ([`ClusterSettings`])
//! and, beside them, the one declaration of every key a person may set
//! ([`KEYS`]): its name, kind, bounds, help, and how it is shown and set.
//! The console's `cluster show|set`, the admin page's settings form and
//! the command line all go through [`KEYS`], [`set`] and [`describe`], so
//! a new setting is added here and nowhere else.

use serde::{Deserialize, Serialize};

use crate::address::valid_domain;

/// Why a setting was refused. Nothing changes when one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown cluster setting '{0}'")]
    Unknown(String),
    #[error("{0}: a value is needed")]
    Empty(&'static str),
    #[error("{key}: longer than {MAX_VALUE} characters")]
    TooLong { key: &'static str },
    #[error("{key}: '{value}' is not a number of {unit}")]
    NotANumber { key: &'static str, value: String, unit: &'static str },
    #[error("{key} must be {min} to {max} {unit}{}, not {found}", rfc.map(|r| format!(" ({r})")).unwrap_or_default())]
    OutOfBounds { key: &'static str, min: u64, max: u64, unit: &'static str, rfc: Option<&'static str>, found: u64 },
    #[error("'{value}' is not a valid {what}")]
    BadName { key: &'static str, value: String, what: &'static str },
    #[error("domains: give 1 to {MAX_DOMAINS} domain names")]
    DomainCount,
    #[error("{key}: at most {max} entries")]
    TooMany { key: &'static str, max: usize },
    #[error("{key}: {source}")]
    Network { key: &'static str, source: NetworkError },
    #[error("the DNS announcer is off: turn it on with `cluster set dns SERVER ZONE KEY-NAME ALGORITHM SECRET`")]
    DnsOff,
    #[error("dns: `off` or SERVER ZONE KEY-NAME ALGORITHM SECRET")]
    DnsUsage,
}

/// Why a host or network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("'{0}' is not an address or ADDRESS/PREFIX")]
    NotAnAddress(String),
    #[error("'{text}': the prefix length must be 0 to {max}")]
    Prefix { text: String, max: u8 },
}

/// Domains one store serves at most (a named bound on a list a person
/// types).
pub const MAX_DOMAINS: usize = 100;
/// Longest value taken for one setting.
pub const MAX_VALUE: usize = 1024;
/// What a secret is shown as.
pub const HIDDEN: &str = "(set, not shown)";
/// The largest TTL a record may have (RFC 2181 8: 2^31 - 1 seconds).
pub const MAX_DNS_TTL: u32 = 0x7FFF_FFFF;
/// The longest time between the announcer's checks of the server's
/// records: a day (a bound, so that no typo makes it never check, or
/// overflow a clock).
pub const MAX_DNS_RECHECK_SECS: u64 = 24 * 3600;

/// Cluster-wide settings kept in `<store>/cluster.toml`, the same for every
/// node. Unknown keys are kept by serde's default of ignoring them, so newer
/// settings do not stop older nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterSettings {
    /// Random id written at creation: a node checks it to be sure that a
    /// mounted tree is the store it expects, not an empty mountpoint.
    pub store_id: String,
    /// Domains whose mail is stored here.
    pub domains: Vec<String>,
    /// The name clients use for every node (the TLS certificate's name).
    pub hostname: String,
    /// The DNS failover announcer; without it DNS is left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSettings>,
    /// Limits for every node; each one set overrides the node's own.
    #[serde(default, skip_serializing_if = "ClusterLimits::is_empty")]
    pub limits: ClusterLimits,
    /// Who may send mail as the organisation's own domains from outside.
    #[serde(default, skip_serializing_if = "SenderSettings::is_empty")]
    pub senders: SenderSettings,
}

/// Networks listed as outside senders at most (a named bound on a list a
/// person types).
pub const MAX_OUTSIDE_SENDERS: usize = 256;

/// `[senders]` of `cluster.toml`. On port 25 a message whose envelope
/// sender is in one of our own domains is refused unless the sending host
/// passes the domain's SPF or is listed here (a newsletter service, a
/// partner's server sending as us).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SenderSettings {
    /// Hosts and networks, `192.0.2.10`, `192.0.2.0/24`, `2001:db8::/32`.
    #[serde(default)]
    pub outside: Vec<String>,
}

impl SenderSettings {
    pub fn is_empty(&self) -> bool {
        self.outside.is_empty()
    }

    pub fn validate(&self) -> Result<(), SettingError> {
        if self.outside.len() > MAX_OUTSIDE_SENDERS {
            return Err(SettingError::TooMany { key: "senders.outside", max: MAX_OUTSIDE_SENDERS });
        }
        for n in &self.outside {
            Network::parse(n).map_err(|e| SettingError::Network { key: "senders.outside", source: e })?;
        }
        Ok(())
    }

    /// Whether `ip` is in a listed network.
    pub fn is_outside_sender(&self, ip: std::net::IpAddr) -> bool {
        self.outside.iter().filter_map(|n| Network::parse(n).ok()).any(|n| n.contains(ip))
    }
}

/// An address and prefix length (RFC 4632 3.1 for IPv4, RFC 4291 2.3 for
/// IPv6); an address alone is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, NetworkError> {
        let t = text.trim();
        let (a, p) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: std::net::IpAddr = a.parse().map_err(|_| NetworkError::NotAnAddress(text.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(NetworkError::Prefix { text: text.to_string(), max }),
            },
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        // An IPv4 peer may come as an IPv4-mapped IPv6 address (RFC 4291 2.5.5.2).
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((n, nw), (h, hw)) = (bits(self.addr), bits(ip));
        if nw != hw {
            return false;
        }
        let shift = nw - u32::from(self.prefix);
        shift >= nw || (n >> shift) == (h >> shift)
    }
}

/// RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients per
/// message, so no cluster-wide recipient limit may be set below this.
pub const MIN_RECIPIENTS_LIMIT: usize = 100;
/// The largest recipient limit the settings may ask for: each recipient
/// costs memory and a link per message, so a typo must not make it
/// unbounded.
pub const MAX_RECIPIENTS_LIMIT: usize = 100_000;
/// The smallest message size limit the settings may ask for: below this,
/// ordinary mail (a few paragraphs and trace headers) would bounce.
pub const MIN_MESSAGE_SIZE_LIMIT: u64 = 64 * 1024;
/// The hard cap of the message size limit, whatever the settings say:
/// messages are spooled to disk, but every copy and check of a message
/// reads it whole, and past this that is no longer mail.
pub const MESSAGE_SIZE_HARD_CAP: u64 = 1 << 30;

/// Cluster-wide limits in `[limits]` of `cluster.toml`. Each limit that is
/// set replaces the node's own (`NodeConfig` limits) on every node.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterLimits {
    /// Largest message accepted, in bytes (advertised with SIZE, RFC 1870).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<u64>,
    /// Recipients per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recipients: Option<usize>,
}

impl ClusterLimits {
    /// Whether no limit is set (the nodes' own limits apply).
    pub fn is_empty(&self) -> bool {
        self.max_message_size.is_none() && self.max_recipients.is_none()
    }

    pub fn validate(&self) -> Result<(), SettingError> {
        if let Some(n) = self.max_recipients {
            check_bounds("limits.max_recipients", RECIPIENTS_BOUNDS, n as u64)?;
        }
        if let Some(n) = self.max_message_size {
            check_bounds("limits.max_message_size", MESSAGE_SIZE_BOUNDS, n)?;
        }
        Ok(())
    }
}

/// Where the announcer keeps the cluster's DNS records (RFC 2136 UPDATE,
/// signed with TSIG, RFC 8945).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// The zone's primary server, IP:PORT.
    pub server: String,
    /// The zone the records live in, e.g. "example.test".
    pub zone: String,
    /// The name clients use (A/AAAA = the live nodes); default: `hostname`.
    #[serde(default)]
    pub client_host: Option<String>,
    /// TTL of the records, seconds.
    #[serde(default = "default_dns_ttl")]
    pub ttl: u32,
    /// How often the announcer compares the server's records with the
    /// live set even when nothing changed (a server restarted with old
    /// data is corrected within this time), seconds.
    #[serde(default = "default_recheck")]
    pub recheck_secs: u64,
    pub tsig: TsigSettings,
}

pub const DEFAULT_DNS_RECHECK_SECS: u64 = 30;

fn default_recheck() -> u64 {
    DEFAULT_DNS_RECHECK_SECS
}

/// Low enough that senders and clients follow a failover quickly.
pub const DEFAULT_DNS_TTL: u32 = 30;

fn default_dns_ttl() -> u32 {
    DEFAULT_DNS_TTL
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TsigSettings {
    pub name: String,
    /// "hmac-sha256" (RFC 8945 6).
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// The shared secret, base64.
    pub secret: String,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}


/// The bounds of a number setting: (min, max, unit, the RFC that sets one).
type Bounds = (u64, u64, &'static str, Option<&'static str>);

const RECIPIENTS_BOUNDS: Bounds = (MIN_RECIPIENTS_LIMIT as u64, MAX_RECIPIENTS_LIMIT as u64, "recipients", Some("RFC 5321 4.5.3.1.8"));
const MESSAGE_SIZE_BOUNDS: Bounds = (MIN_MESSAGE_SIZE_LIMIT, MESSAGE_SIZE_HARD_CAP, "bytes", None);
const DNS_TTL_BOUNDS: Bounds = (1, MAX_DNS_TTL as u64, "seconds", Some("RFC 2181 8"));
const DNS_RECHECK_BOUNDS: Bounds = (1, MAX_DNS_RECHECK_SECS, "seconds", None);

fn check_bounds(key: &'static str, (min, max, unit, rfc): Bounds, found: u64) -> Result<u64, SettingError> {
    if (min..=max).contains(&found) {
        Ok(found)
    } else {
        Err(SettingError::OutOfBounds { key, min, max, unit, rfc, found })
    }
}

/// What kind of value a setting takes, and so how a form asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A name or word.
    Text,
    /// Names or networks, comma-separated.
    List,
    /// A whole number within bounds (`rfc`: the rule that sets one).
    Number { min: u64, max: u64, unit: &'static str, rfc: Option<&'static str> },
    /// A secret: never shown, never put into a form.
    Secret,
    /// `off`, or the words that turn a section on (the words include a
    /// secret, so its value is not shown either).
    Switch,
}

impl Kind {
    /// Whether the value is never shown.
    pub fn is_secret(self) -> bool {
        matches!(self, Kind::Secret | Kind::Switch)
    }
}

/// A value as [`set`] hands it to a key, after the checks its kind makes.
enum Value<'a> {
    /// `default`: back to the node's own or the built-in value.
    Default,
    Text(&'a str),
    Number(u64),
}

/// One setting of `cluster.toml` a person may change.
pub struct Key {
    /// The name on the console and the form, e.g. `limits.max_recipients`.
    pub name: &'static str,
    pub kind: Kind,
    /// Whether `default` clears it.
    pub clears: bool,
    pub help: &'static str,
    get: fn(&ClusterSettings) -> String,
    put: fn(&mut ClusterSettings, Value) -> Result<(), SettingError>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

impl Key {
    /// The current value as shown (empty when unset; secrets hidden).
    pub fn get(&self, s: &ClusterSettings) -> String {
        (self.get)(s)
    }
}

const fn number((min, max, unit, rfc): Bounds) -> Kind {
    Kind::Number { min, max, unit, rfc }
}

fn dns(s: &mut ClusterSettings) -> Result<&mut DnsSettings, SettingError> {
    s.dns.as_mut().ok_or(SettingError::DnsOff)
}

fn dns_get(s: &ClusterSettings, f: fn(&DnsSettings) -> String) -> String {
    s.dns.as_ref().map(f).unwrap_or_default()
}

/// A domain or host name as stored: lower case, no final dot.
fn domain_name(key: &'static str, v: &str, what: &'static str) -> Result<String, SettingError> {
    let d = v.trim().trim_end_matches('.').to_ascii_lowercase();
    if valid_domain(&d) {
        Ok(d)
    } else {
        Err(SettingError::BadName { key, value: v.to_string(), what })
    }
}

fn text<'a>(v: &Value<'a>) -> &'a str {
    match v {
        Value::Text(t) => t,
        _ => "",
    }
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split([',', ' ']).filter(|x| !x.is_empty())
}

/// Every setting of `cluster.toml` a person may change, in the order they
/// are listed.
pub static KEYS: &[Key] = &[
    Key {
        name: "domains",
        kind: Kind::List,
        clears: false,
        help: "mail domains stored here, comma-separated (the first one is the main one)",
        get: |s| s.domains.join(", "),
        put: |s, v| {
            let mut list = Vec::new();
            for d in split_list(text(&v)) {
                let d = domain_name("domains", d, "domain name")?;
                if !list.contains(&d) {
                    list.push(d);
                }
            }
            if list.is_empty() || list.len() > MAX_DOMAINS {
                return Err(SettingError::DomainCount);
            }
            s.domains = list;
            Ok(())
        },
    },
    Key {
        name: "hostname",
        kind: Kind::Text,
        clears: false,
        help: "the name clients use for every node (and the certificate's name)",
        get: |s| s.hostname.clone(),
        put: |s, v| {
            s.hostname = domain_name("hostname", text(&v), "host name")?;
            Ok(())
        },
    },
    Key {
        name: "dns",
        kind: Kind::Switch,
        clears: false,
        help: "off, or SERVER ZONE KEY-NAME ALGORITHM SECRET to turn the DNS announcer on",
        get: |s| if s.dns.is_some() { "on".into() } else { "off".into() },
        put: |s, v| {
            let w: Vec<&str> = text(&v).split_whitespace().collect();
            s.dns = match w.as_slice() {
                ["off"] => None,
                [server, zone, name, algorithm, secret] => Some(DnsSettings {
                    server: server.to_string(),
                    zone: domain_name("dns", zone, "zone name")?,
                    client_host: None,
                    ttl: DEFAULT_DNS_TTL,
                    recheck_secs: DEFAULT_DNS_RECHECK_SECS,
                    tsig: TsigSettings { name: name.to_string(), algorithm: algorithm.to_string(), secret: secret.to_string() },
                }),
                _ => return Err(SettingError::DnsUsage),
            };
            Ok(())
        },
    },
    Key {
        name: "dns.server",
        kind: Kind::Text,
        clears: false,
        help: "the zone's primary DNS server, IP:PORT (RFC 2136 updates)",
        get: |s| dns_get(s, |d| d.server.clone()),
        put: |s, v| {
            dns(s)?.server = text(&v).to_string();
            Ok(())
        },
    },
    Key {
        name: "dns.zone",
        kind: Kind::Text,
        clears: false,
        help: "the zone the cluster's records live in",
        get: |s| dns_get(s, |d| d.zone.clone()),
        put: |s, v| {
            let z = domain_name("dns.zone", text(&v), "zone name")?;
            dns(s)?.zone = z;
            Ok(())
        },
    },
    Key {
        name: "dns.client_host",
        kind: Kind::Text,
        clears: true,
        help: "the name clients use (default: hostname); `default` clears it",
        get: |s| dns_get(s, |d| d.client_host.clone().unwrap_or_default()),
        put: |s, v| {
            let h = match v {
                Value::Default => None,
                v => Some(domain_name("dns.client_host", text(&v), "host name")?),
            };
            dns(s)?.client_host = h;
            Ok(())
        },
    },
    Key {
        name: "dns.ttl",
        kind: number(DNS_TTL_BOUNDS),
        clears: false,
        help: "TTL of the records, seconds",
        get: |s| dns_get(s, |d| d.ttl.to_string()),
        put: |s, v| {
            if let Value::Number(n) = v {
                // The bounds keep it within a u32.
                dns(s)?.ttl = u32::try_from(n).unwrap_or(MAX_DNS_TTL);
            }
            Ok(())
        },
    },
    Key {
        name: "dns.recheck_secs",
        kind: number(DNS_RECHECK_BOUNDS),
        clears: false,
        help: "seconds between checks of the server's records",
        get: |s| dns_get(s, |d| d.recheck_secs.to_string()),
        put: |s, v| {
            if let Value::Number(n) = v {
                dns(s)?.recheck_secs = n;
            }
            Ok(())
        },
    },
    Key {
        name: "dns.tsig.name",
        kind: Kind::Text,
        clears: false,
        help: "TSIG key name (RFC 8945)",
        get: |s| dns_get(s, |d| d.tsig.name.clone()),
        put: |s, v| {
            dns(s)?.tsig.name = text(&v).to_string();
            Ok(())
        },
    },
    Key {
        name: "dns.tsig.algorithm",
        kind: Kind::Text,
        clears: false,
        help: "TSIG algorithm, e.g. hmac-sha256",
        get: |s| dns_get(s, |d| d.tsig.algorithm.clone()),
        put: |s, v| {
            dns(s)?.tsig.algorithm = text(&v).to_string();
            Ok(())
        },
    },
    Key {
        name: "dns.tsig.secret",
        kind: Kind::Secret,
        clears: false,
        help: "TSIG secret, base64",
        get: |s| dns_get(s, |_| HIDDEN.to_string()),
        put: |s, v| {
            dns(s)?.tsig.secret = text(&v).to_string();
            Ok(())
        },
    },
    Key {
        name: "limits.max_message_size",
        kind: number(MESSAGE_SIZE_BOUNDS),
        clears: true,
        help: "largest message accepted, bytes (`default`: the node's own)",
        get: |s| s.limits.max_message_size.map(|v| v.to_string()).unwrap_or_default(),
        put: |s, v| {
            s.limits.max_message_size = match v {
                Value::Number(n) => Some(n),
                _ => None,
            };
            Ok(())
        },
    },
    Key {
        name: "limits.max_recipients",
        kind: number(RECIPIENTS_BOUNDS),
        clears: true,
        help: "recipients per message (`default`: the node's own)",
        get: |s| s.limits.max_recipients.map(|v| v.to_string()).unwrap_or_default(),
        put: |s, v| {
            s.limits.max_recipients = match v {
                // The bounds keep it far below usize::MAX.
                Value::Number(n) => Some(usize::try_from(n).unwrap_or(MAX_RECIPIENTS_LIMIT)),
                _ => None,
            };
            Ok(())
        },
    },
    Key {
        name: "senders.outside",
        kind: Kind::List,
        clears: false,
        help: "hosts and networks that may send as our domains on port 25 without passing SPF, comma-separated (`none` clears)",
        get: |s| s.senders.outside.join(", "),
        put: |s, v| {
            let mut list = Vec::new();
            let v = text(&v);
            if v != "none" {
                for n in split_list(v) {
                    let net = Network::parse(n).map_err(|e| SettingError::Network { key: "senders.outside", source: e })?;
                    let n = format!("{}/{}", net.addr, net.prefix);
                    if !list.contains(&n) {
                        list.push(n);
                    }
                }
            }
            s.senders.outside = list;
            Ok(())
        },
    },
];

/// The declaration of `name`.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Every key with its value as shown (secrets hidden) and its help.
pub fn describe(s: &ClusterSettings) -> Vec<(&'static Key, String)> {
    KEYS.iter().map(|k| (k, k.get(s))).collect()
}

/// How a value given for `name` is echoed back (secrets are not).
pub fn shown(name: &str, value: &str) -> String {
    match key(name).map(|k| k.kind) {
        Some(Kind::Secret) => HIDDEN.into(),
        Some(Kind::Switch) if value.split_whitespace().count() > 1 => HIDDEN.into(),
        _ => value.to_string(),
    }
}

/// Sets one key on `s`, checking the value against its declaration and
/// the settings as a whole; on an error `s` is unchanged.
pub fn set(s: &mut ClusterSettings, name: &str, value: &str) -> Result<(), SettingError> {
    let k = key(name).ok_or_else(|| SettingError::Unknown(name.to_string()))?;
    let v = value.trim();
    if v.is_empty() {
        return Err(SettingError::Empty(k.name));
    }
    if v.len() > MAX_VALUE {
        return Err(SettingError::TooLong { key: k.name });
    }
    let value = match k.kind {
        _ if k.clears && v == "default" => Value::Default,
        Kind::Number { min, max, unit, rfc } => {
            let n = v.parse::<u64>().map_err(|_| SettingError::NotANumber { key: k.name, value: v.to_string(), unit })?;
            Value::Number(check_bounds(k.name, (min, max, unit, rfc), n)?)
        }
        _ => Value::Text(v),
    };
    let mut new = s.clone();
    (k.put)(&mut new, value)?;
    new.limits.validate()?;
    new.senders.validate()?;
    *s = new;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ClusterSettings {
        ClusterSettings { store_id: "x".into(), domains: vec!["example.test".into()], hostname: "mail.example.test".into(), dns: None, limits: ClusterLimits::default(), senders: SenderSettings::default() }
    }

    #[test]
    fn every_key_is_declared_once_with_help() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(!k.help.is_empty(), "{}", k.name);
            assert!(KEYS[i + 1..].iter().all(|o| o.name != k.name), "{} twice", k.name);
            assert!(k.name.len() <= MAX_VALUE);
        }
        assert_eq!(describe(&base()).len(), KEYS.len());
    }

    #[test]
    fn values_are_checked_before_anything_changes() {
        let mut s = base();
        let before = s.clone();
        for (k, v, want) in [
            ("domains", "", SettingError::Empty("domains")),
            ("domains", "not a domain!", SettingError::BadName { key: "domains", value: "domain!".into(), what: "domain name" }),
            ("domains", ",", SettingError::DomainCount),
            ("hostname", "host name with spaces", SettingError::BadName { key: "hostname", value: "host name with spaces".into(), what: "host name" }),
            ("dns.server", "127.0.0.1:53", SettingError::DnsOff),
            ("dns", "127.0.0.1:53 example.test", SettingError::DnsUsage),
            ("limits.max_recipients", "5", SettingError::OutOfBounds { key: "limits.max_recipients", min: 100, max: 100_000, unit: "recipients", rfc: Some("RFC 5321 4.5.3.1.8"), found: 5 }),
            ("limits.max_recipients", "lots", SettingError::NotANumber { key: "limits.max_recipients", value: "lots".into(), unit: "recipients" }),
            ("limits.max_message_size", "-1", SettingError::NotANumber { key: "limits.max_message_size", value: "-1".into(), unit: "bytes" }),
            ("senders.outside", "192.0.2.0/40", SettingError::Network { key: "senders.outside", source: NetworkError::Prefix { text: "192.0.2.0/40".into(), max: 32 } }),
            ("bogus", "1", SettingError::Unknown("bogus".into())),
            ("hostname", &"a".repeat(MAX_VALUE + 1), SettingError::TooLong { key: "hostname" }),
        ] {
            assert_eq!(set(&mut s, k, v), Err(want), "{k} = {v}");
            assert_eq!(s, before, "{k} = {v} changed something");
        }
        assert!(matches!(set(&mut s, "senders.outside", "192.0.2.0/24, mail.example.test"), Err(SettingError::Network { .. })));
        let e = set(&mut s, "limits.max_recipients", "99").unwrap_err().to_string();
        assert!(e.contains("RFC 5321 4.5.3.1.8") && e.contains("99"), "{e}");
    }

    #[test]
    fn values_are_set_and_shown() {
        let mut s = base();
        set(&mut s, "domains", "Example.test, other.test,example.test").unwrap();
        assert_eq!(s.domains, vec!["example.test", "other.test"]);
        set(&mut s, "hostname", "MX.Example.test.").unwrap();
        assert_eq!(s.hostname, "mx.example.test");
        set(&mut s, "dns", "127.0.0.1:5353 example.test cluster-key hmac-sha256 c2VjcmV0").unwrap();
        assert_eq!(shown("dns", "127.0.0.1:5353 example.test cluster-key hmac-sha256 c2VjcmV0"), HIDDEN);
        assert_eq!(shown("dns", "off"), "off");
        assert_eq!(shown("dns.tsig.secret", "c2VjcmV0"), HIDDEN);
        set(&mut s, "dns.ttl", "60").unwrap();
        assert_eq!(s.dns.as_ref().unwrap().ttl, 60);
        assert!(matches!(set(&mut s, "dns.ttl", "0"), Err(SettingError::OutOfBounds { found: 0, .. })));
        assert!(matches!(set(&mut s, "dns.ttl", &(u64::from(MAX_DNS_TTL) + 1).to_string()), Err(SettingError::OutOfBounds { .. })));
        assert!(matches!(set(&mut s, "dns.recheck_secs", &(MAX_DNS_RECHECK_SECS + 1).to_string()), Err(SettingError::OutOfBounds { .. })));
        set(&mut s, "dns.client_host", "Clients.Example.test").unwrap();
        assert_eq!(s.dns.as_ref().unwrap().client_host.as_deref(), Some("clients.example.test"));
        set(&mut s, "dns.client_host", "default").unwrap();
        assert_eq!(s.dns.as_ref().unwrap().client_host, None);
        let get = |s: &ClusterSettings, k: &str| key(k).unwrap().get(s);
        assert_eq!(get(&s, "dns.server"), "127.0.0.1:5353");
        assert_eq!(get(&s, "dns.tsig.secret"), HIDDEN);
        set(&mut s, "limits.max_recipients", "150").unwrap();
        assert_eq!(s.limits.max_recipients, Some(150));
        assert_eq!(get(&s, "limits.max_recipients"), "150");
        set(&mut s, "limits.max_recipients", "default").unwrap();
        assert_eq!((s.limits.max_recipients, get(&s, "limits.max_recipients")), (None, String::new()));
        assert_eq!(set(&mut s, "dns", "default"), Err(SettingError::DnsUsage), "`default` only clears keys that may be cleared");
        set(&mut s, "senders.outside", "192.0.2.0/24, 2001:db8::1 192.0.2.0/24").unwrap();
        assert_eq!(s.senders.outside, vec!["192.0.2.0/24", "2001:db8::1/128"]);
        assert_eq!(get(&s, "senders.outside"), "192.0.2.0/24, 2001:db8::1/128");
        set(&mut s, "senders.outside", "none").unwrap();
        assert!(s.senders.outside.is_empty());
        set(&mut s, "dns", "off").unwrap();
        assert!(s.dns.is_none());
        assert_eq!(set(&mut s, "dns.ttl", "60"), Err(SettingError::DnsOff));
    }

    #[test]
    fn number_keys_declare_the_bounds_the_file_is_checked_with() {
        for (name, lo, hi) in [("limits.max_recipients", MIN_RECIPIENTS_LIMIT as u64, MAX_RECIPIENTS_LIMIT as u64), ("limits.max_message_size", MIN_MESSAGE_SIZE_LIMIT, MESSAGE_SIZE_HARD_CAP)] {
            let Kind::Number { min, max, .. } = key(name).unwrap().kind else { panic!("{name} is not a number") };
            assert_eq!((min, max), (lo, hi), "{name}");
            let mut s = base();
            set(&mut s, name, &hi.to_string()).unwrap();
            assert!(s.limits.validate().is_ok());
            assert!(set(&mut s, name, &(hi + 1).to_string()).is_err() && set(&mut s, name, &(lo - 1).to_string()).is_err());
        }
    }
}
