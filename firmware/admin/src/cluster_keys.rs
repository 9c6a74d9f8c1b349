//! The shared settings in the store's `cluster.toml`, one key at a time:
//! how they are shown and how a new value is checked before it is saved.
//! A bad value changes nothing.

use store::address::valid_domain;
use store::{Address, ClusterSettings, DnsSettings, TsigSettings};

use crate::commands::Setting;

/// Domains one store serves at most (a named bound on a list a person
/// types).
pub const MAX_DOMAINS: usize = 100;
/// Longest value taken for one setting.
pub const MAX_VALUE: usize = 1024;
/// What a secret is shown as.
const HIDDEN: &str = "(set, not shown)";

pub const KEYS: &[(&str, &str)] = &[
    ("domains", "mail domains stored here, comma-separated (the first one is the main one)"),
    ("hostname", "the name clients use for every node (and the certificate's name)"),
    ("dns", "off, or SERVER ZONE KEY-NAME ALGORITHM SECRET to turn the DNS announcer on"),
    ("dns.server", "the zone's primary DNS server, IP:PORT (RFC 2136 updates)"),
    ("dns.zone", "the zone the cluster's records live in"),
    ("dns.client_host", "the name clients use (default: hostname); `default` clears it"),
    ("dns.ttl", "TTL of the records, seconds"),
    ("dns.recheck_secs", "seconds between checks of the server's records"),
    ("dns.tsig.name", "TSIG key name (RFC 8945)"),
    ("dns.tsig.algorithm", "TSIG algorithm, e.g. hmac-sha256"),
    ("dns.tsig.secret", "TSIG secret, base64"),
    ("limits.max_message_size", "largest message accepted, bytes (`default`: the node's own)"),
    ("limits.max_recipients", "recipients per message (`default`: the node's own)"),
    ("senders.outside", "hosts and networks that may send as our domains on port 25 without passing SPF, comma-separated (`none` clears)"),
];

fn help(key: &str) -> String {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, h)| h.to_string()).unwrap_or_default()
}

/// How a value is echoed back (secrets are not).
pub fn shown(key: &str, value: &str) -> String {
    if key == "dns.tsig.secret" || (key == "dns" && value.split_whitespace().count() == 5) {
        HIDDEN.into()
    } else {
        value.to_string()
    }
}

pub fn describe(s: &ClusterSettings) -> Vec<Setting> {
    let d = s.dns.as_ref();
    let dv = |f: &dyn Fn(&DnsSettings) -> String| d.map(f).unwrap_or_default();
    let rows: Vec<(&str, String)> = vec![
        ("domains", s.domains.join(", ")),
        ("hostname", s.hostname.clone()),
        ("dns", if d.is_some() { "on".into() } else { "off".into() }),
        ("dns.server", dv(&|d| d.server.clone())),
        ("dns.zone", dv(&|d| d.zone.clone())),
        ("dns.client_host", dv(&|d| d.client_host.clone().unwrap_or_default())),
        ("dns.ttl", dv(&|d| d.ttl.to_string())),
        ("dns.recheck_secs", dv(&|d| d.recheck_secs.to_string())),
        ("dns.tsig.name", dv(&|d| d.tsig.name.clone())),
        ("dns.tsig.algorithm", dv(&|d| d.tsig.algorithm.clone())),
        ("dns.tsig.secret", dv(&|_| HIDDEN.to_string())),
        ("limits.max_message_size", s.limits.max_message_size.map(|v| v.to_string()).unwrap_or_default()),
        ("limits.max_recipients", s.limits.max_recipients.map(|v| v.to_string()).unwrap_or_default()),
        ("senders.outside", s.senders.outside.join(", ")),
    ];
    rows.into_iter().map(|(k, v)| Setting { key: k.into(), value: v, help: help(k) }).collect()
}

fn dns(n: &mut ClusterSettings) -> Result<&mut DnsSettings, String> {
    n.dns.as_mut().ok_or_else(|| "the DNS announcer is off: turn it on with `cluster set dns SERVER ZONE KEY-NAME ALGORITHM SECRET`".to_string())
}

fn domain_name(v: &str, what: &str) -> Result<String, String> {
    let d = v.trim().trim_end_matches('.').to_ascii_lowercase();
    if valid_domain(&d) {
        Ok(d)
    } else {
        Err(format!("'{v}' is not a valid {what}"))
    }
}

/// Sets one key on `s`, checking the value and the settings as a whole.
pub fn set(s: &mut ClusterSettings, key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(format!("{key}: a value is needed"));
    }
    if v.len() > MAX_VALUE {
        return Err(format!("{key}: longer than {MAX_VALUE} characters"));
    }
    let mut new = s.clone();
    let number = |what: &str| v.parse::<u64>().map_err(|_| format!("{key}: '{v}' is not a number of {what}"));
    match key {
        "domains" => {
            let mut list = Vec::new();
            for d in v.split([',', ' ']).filter(|d| !d.is_empty()) {
                let d = domain_name(d, "domain name")?;
                if !list.contains(&d) {
                    list.push(d);
                }
            }
            if list.is_empty() || list.len() > MAX_DOMAINS {
                return Err(format!("domains: give 1 to {MAX_DOMAINS} domain names"));
            }
            new.domains = list;
        }
        "hostname" => new.hostname = domain_name(v, "host name")?,
        "dns" => {
            let w: Vec<&str> = v.split_whitespace().collect();
            new.dns = match w.as_slice() {
                ["off"] => None,
                [server, zone, name, algorithm, secret] => Some(DnsSettings {
                    server: server.to_string(),
                    zone: domain_name(zone, "zone name")?,
                    client_host: None,
                    ttl: store::DEFAULT_DNS_TTL,
                    recheck_secs: store::DEFAULT_DNS_RECHECK_SECS,
                    tsig: TsigSettings { name: name.to_string(), algorithm: algorithm.to_string(), secret: secret.to_string() },
                }),
                _ => return Err("dns: `off` or SERVER ZONE KEY-NAME ALGORITHM SECRET".into()),
            };
        }
        "dns.server" => dns(&mut new)?.server = v.to_string(),
        "dns.zone" => dns(&mut new)?.zone = domain_name(v, "zone name")?,
        "dns.client_host" => dns(&mut new)?.client_host = if v == "default" { None } else { Some(domain_name(v, "host name")?) },
        "dns.ttl" => {
            let t = number("seconds")?;
            if t == 0 || t > u64::from(dns::MAX_TTL) {
                return Err(format!("dns.ttl: from 1 to {} seconds", dns::MAX_TTL));
            }
            dns(&mut new)?.ttl = t as u32;
        }
        "dns.recheck_secs" => {
            let t = number("seconds")?;
            if t == 0 {
                return Err("dns.recheck_secs: at least 1".into());
            }
            dns(&mut new)?.recheck_secs = t;
        }
        "dns.tsig.name" => dns(&mut new)?.tsig.name = v.to_string(),
        "dns.tsig.algorithm" => dns(&mut new)?.tsig.algorithm = v.to_string(),
        "dns.tsig.secret" => dns(&mut new)?.tsig.secret = v.to_string(),
        "limits.max_message_size" => new.limits.max_message_size = if v == "default" { None } else { Some(number("bytes")?) },
        "limits.max_recipients" => new.limits.max_recipients = if v == "default" { None } else { Some(number("recipients")? as usize) },
        "senders.outside" => {
            let mut list = Vec::new();
            if v != "none" {
                for n in v.split([',', ' ']).filter(|n| !n.is_empty()) {
                    let net = store::Network::parse(n).map_err(|e| format!("senders.outside: {e}"))?;
                    let n = format!("{}/{}", net.addr, net.prefix);
                    if !list.contains(&n) {
                        list.push(n);
                    }
                }
            }
            new.senders.outside = list;
        }
        _ => return Err(format!("unknown cluster setting '{key}'")),
    }
    if let Some(d) = &new.dns {
        // The announcer's own check: server address, key name, algorithm
        // and secret (RFC 8945). Its error names the setting at fault.
        cluster::announcer::target(d).map_err(|e| e.to_string())?;
    }
    new.limits.validate().map_err(|e| format!("{key}: {e}"))?;
    new.senders.validate().map_err(|e| format!("{key}: {e}"))?;
    *s = new;
    Ok(())
}

/// Refuses settings that would leave accounts of a domain no longer
/// served (their mail would bounce and their logins fail).
pub fn check_accounts(s: &ClusterSettings, accounts: &[Address]) -> Result<(), String> {
    let orphans: Vec<String> = accounts.iter().filter(|a| !s.domains.iter().any(|d| d.eq_ignore_ascii_case(a.domain()))).map(|a| a.to_string()).collect();
    if orphans.is_empty() {
        Ok(())
    } else {
        Err(format!("domains: {} account(s) would be left without their domain ({}); delete them first", orphans.len(), orphans.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ClusterSettings {
        let dir = tempfile::tempdir().unwrap();
        let s = store::Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        (*s.settings()).clone()
    }

    #[test]
    fn values_are_checked_before_anything_changes() {
        let mut s = base();
        let before = s.clone();
        for (k, v) in [
            ("domains", ""),
            ("domains", "not a domain!"),
            ("domains", "-bad.test"),
            ("hostname", "host name with spaces"),
            ("dns.server", "127.0.0.1:53"),
            ("dns", "127.0.0.1:53 example.test"),
            ("dns", "not-an-address example.test key hmac-sha256 c2VjcmV0"),
            ("limits.max_recipients", "5"),
            ("limits.max_recipients", "lots"),
            ("limits.max_message_size", "-1"),
            ("senders.outside", "192.0.2.0/24, mail.example.test"),
            ("senders.outside", "192.0.2.0/40"),
            ("bogus", "1"),
        ] {
            assert!(set(&mut s, k, v).is_err(), "{k} = {v} should be refused");
            assert_eq!(s, before, "{k} = {v} changed something");
        }
    }

    #[test]
    fn values_are_set() {
        let mut s = base();
        set(&mut s, "domains", "Example.test, other.test,example.test").unwrap();
        assert_eq!(s.domains, vec!["example.test", "other.test"]);
        set(&mut s, "hostname", "MX.Example.test.").unwrap();
        assert_eq!(s.hostname, "mx.example.test");
        set(&mut s, "dns", "127.0.0.1:5353 example.test cluster-key hmac-sha256 c2VjcmV0c2VjcmV0c2VjcmV0").unwrap();
        set(&mut s, "dns.ttl", "60").unwrap();
        assert!(set(&mut s, "dns.ttl", "0").is_err());
        assert!(set(&mut s, "dns.tsig.algorithm", "hmac-md4").is_err());
        // The setting at fault is named once.
        assert_eq!(set(&mut s, "dns.server", "nowhere").unwrap_err(), "dns.server 'nowhere' is not IP:PORT");
        assert_eq!(s.dns.as_ref().unwrap().ttl, 60);
        let shown = describe(&s);
        let get = |k: &str| shown.iter().find(|x| x.key == k).unwrap().value.clone();
        assert_eq!(get("dns.server"), "127.0.0.1:5353");
        assert_eq!(get("dns.tsig.secret"), HIDDEN);
        set(&mut s, "limits.max_recipients", "150").unwrap();
        assert_eq!(s.limits.max_recipients, Some(150));
        set(&mut s, "limits.max_recipients", "default").unwrap();
        assert_eq!(s.limits.max_recipients, None);
        set(&mut s, "senders.outside", "192.0.2.0/24, 2001:db8::1 192.0.2.0/24").unwrap();
        assert_eq!(s.senders.outside, vec!["192.0.2.0/24", "2001:db8::1/128"]);
        assert_eq!(describe(&s).iter().find(|x| x.key == "senders.outside").unwrap().value, "192.0.2.0/24, 2001:db8::1/128");
        set(&mut s, "senders.outside", "none").unwrap();
        assert!(s.senders.outside.is_empty());
        set(&mut s, "dns", "off").unwrap();
        assert!(s.dns.is_none());
        assert!(set(&mut s, "dns.ttl", "60").unwrap_err().contains("announcer is off"));
    }

    #[test]
    fn a_domain_with_accounts_stays() {
        let mut s = base();
        set(&mut s, "domains", "other.test").unwrap();
        let a = Address::parse("bob@example.test").unwrap();
        assert!(check_accounts(&s, std::slice::from_ref(&a)).unwrap_err().contains("bob@example.test"));
        set(&mut s, "domains", "other.test, example.test").unwrap();
        check_accounts(&s, &[a]).unwrap();
    }
}
