//! The shared settings in the store's `cluster.toml` as the front ends
//! set them. Every key is declared once, in [`store::settings`] (name,
//! kind, bounds, help, how it is shown and set); this adds the checks that
//! need more than the settings: the DNS announcer's (server address and
//! TSIG key, RFC 8945) and the store's accounts. A bad value changes
//! nothing.

use store::settings::SettingError;
use store::{Address, ClusterSettings};

use crate::commands::Setting;

pub use store::settings::{key, shown, Kind, HIDDEN, KEYS, MAX_DOMAINS, MAX_VALUE};

/// Why a cluster setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterKeyError {
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// The DNS announcer would not take the settings; `reason` names the
    /// setting at fault itself.
    #[error("{reason}")]
    Dns { key: String, reason: cluster::announcer::TargetError },
    #[error("domains: {} account(s) would be left without their domain ({}); delete them first", .0.len(), .0.join(", "))]
    Orphans(Vec<String>),
}

/// Whether `name` is a cluster setting.
pub fn is_key(name: &str) -> bool {
    key(name).is_some()
}

/// Every key with its value as shown and its help.
pub fn describe(s: &ClusterSettings) -> Vec<Setting> {
    store::settings::describe(s).into_iter().map(|(k, value)| Setting { key: k.name.into(), value, help: k.help.into() }).collect()
}

/// Sets one key on `s`, checking the value and the settings as a whole.
pub fn set(s: &mut ClusterSettings, key: &str, value: &str) -> Result<(), ClusterKeyError> {
    let mut new = s.clone();
    store::settings::set(&mut new, key, value)?;
    if let Some(d) = &new.dns {
        // The announcer's own check: server address, key name, algorithm
        // and secret (RFC 8945).
        cluster::announcer::target(d).map_err(|reason| ClusterKeyError::Dns { key: key.to_string(), reason })?;
    }
    *s = new;
    Ok(())
}

/// Refuses settings that would leave accounts of a domain no longer
/// served (their mail would bounce and their logins fail).
pub fn check_accounts(s: &ClusterSettings, accounts: &[Address]) -> Result<(), ClusterKeyError> {
    let orphans: Vec<String> = accounts.iter().filter(|a| !s.domains.iter().any(|d| d.eq_ignore_ascii_case(a.domain()))).map(|a| a.to_string()).collect();
    if orphans.is_empty() {
        Ok(())
    } else {
        Err(ClusterKeyError::Orphans(orphans))
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
    fn the_announcer_checks_the_dns_settings() {
        let mut s = base();
        let before = s.clone();
        let e = set(&mut s, "dns", "not-an-address example.test key hmac-sha256 c2VjcmV0").unwrap_err();
        assert!(matches!(&e, ClusterKeyError::Dns { key, .. } if key == "dns"), "{e:?}");
        assert_eq!(s, before);
        assert!(matches!(set(&mut s, "bogus", "1"), Err(ClusterKeyError::Setting(SettingError::Unknown(_)))));
        set(&mut s, "dns", "127.0.0.1:5353 example.test cluster-key hmac-sha256 c2VjcmV0c2VjcmV0c2VjcmV0").unwrap();
        let on = s.clone();
        assert!(matches!(set(&mut s, "dns.tsig.algorithm", "hmac-md4"), Err(ClusterKeyError::Dns { .. })));
        assert_eq!(s, on);
        set(&mut s, "dns.ttl", "60").unwrap();
        let shown = describe(&s);
        let get = |k: &str| shown.iter().find(|x| x.key == k).unwrap().value.clone();
        assert_eq!((get("dns.server").as_str(), get("dns.tsig.secret").as_str(), get("dns.ttl").as_str()), ("127.0.0.1:5353", HIDDEN, "60"));
        assert!(shown.iter().all(|x| !x.help.is_empty()) && shown.len() == KEYS.len());
    }

    #[test]
    fn the_ttl_bound_is_the_dns_clients() {
        assert_eq!(store::settings::MAX_DNS_TTL, dns::MAX_TTL);
    }

    #[test]
    fn a_domain_with_accounts_stays() {
        let mut s = base();
        set(&mut s, "domains", "other.test").unwrap();
        let a = Address::parse("bob@example.test").unwrap();
        assert_eq!(check_accounts(&s, std::slice::from_ref(&a)), Err(ClusterKeyError::Orphans(vec!["bob@example.test".into()])));
        set(&mut s, "domains", "other.test, example.test").unwrap();
        check_accounts(&s, &[a]).unwrap();
    }
}
