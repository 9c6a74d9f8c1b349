//! Mail addresses as the store uses them: normalised, and safe to turn into
//! directory names.

use std::fmt;

/// RFC 5321 4.5.3.1.1 local-part limit.
pub const MAX_LOCAL: usize = 64;
/// RFC 5321 4.5.3.1.2 domain limit.
pub const MAX_DOMAIN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    domain: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("'{0}' is not an address of the form name@domain")]
    Shape(String),
    #[error("the name part of '{0}' is not allowed (letters, digits and . _ + - only; no leading or double dots)")]
    Local(String),
    #[error("the domain of '{0}' is not a valid domain name")]
    Domain(String),
    #[error("'{0}' is too long (RFC 5321 4.5.3.1: 64 octets for the name, 255 for the domain)")]
    TooLong(String),
}

impl Address {
    /// Parses and normalises `local@domain` for use as an account and a
    /// mailbox directory, by [`normalize_local`] and [`normalize_domain`]:
    /// two addresses name the same mailbox exactly when their normalised
    /// forms are equal. Names that could escape the store or confuse a file
    /// system are refused.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| AddressError::Shape(s.to_string()))?;
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::Shape(s.to_string()));
        }
        if local.len() > MAX_LOCAL || domain.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong(s.to_string()));
        }
        let local = normalize_local(local);
        let domain = normalize_domain(domain);
        if !valid_local(&local) {
            return Err(AddressError::Local(s.to_string()));
        }
        if !valid_domain(&domain) {
            return Err(AddressError::Domain(s.to_string()));
        }
        Ok(Address { local, domain })
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
}

/// The local part as addresses are compared. RFC 5321 2.4: local parts are
/// case-sensitive in principle; ASCII letters are folded, as nearly every
/// server does for lookups, so that `Alice@` and `alice@` are one mailbox.
/// Nothing else is folded: Unicode case mapping would make other characters
/// aliases of ASCII names (U+212A KELVIN SIGN lower-cases to `k`, U+0130 to
/// `i` with a dot), so non-ASCII characters are compared as given.
pub fn normalize_local(local: &str) -> String {
    local.to_ascii_lowercase()
}

/// A domain as it is compared and stored: ASCII letters folded (domain
/// names are case-insensitive, RFC 5321 2.4, RFC 4343) and one trailing
/// dot dropped. Non-ASCII labels (U-labels) are kept as given, for the same
/// reason as in [`normalize_local`].
pub fn normalize_domain(domain: &str) -> String {
    let d = domain.to_ascii_lowercase();
    match d.strip_suffix('.') {
        Some(s) => s.to_string(),
        None => d,
    }
}

/// Whether `a` and `b` are the same domain by [`normalize_domain`].
pub fn same_domain(a: &str, b: &str) -> bool {
    let (a, b) = (a.strip_suffix('.').unwrap_or(a), b.strip_suffix('.').unwrap_or(b));
    a.eq_ignore_ascii_case(b)
}

/// A domain name usable as a directory: LDH labels or U-labels.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= MAX_DOMAIN
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()))
        })
}

fn valid_local(l: &str) -> bool {
    // No '/', NUL or control characters (they could escape the store or
    // break a file name); no empty atoms, so no "." or ".." names.
    l.split('.').all(|atom| {
        !atom.is_empty() && atom.chars().all(|c| c.is_ascii_alphanumeric() || "_+-=".contains(c) || (!c.is_ascii() && c.is_alphanumeric()))
    })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        let a = Address::parse("Alice@Example.TEST").unwrap();
        assert_eq!(a.to_string(), "alice@example.test");
        assert_eq!(Address::parse("a.b+c@example.test.").unwrap().domain(), "example.test");
    }

    #[test]
    fn only_ascii_case_is_folded() {
        let kim = Address::parse("kim@example.test").unwrap();
        // U+212A KELVIN SIGN: Unicode lower-cases it to an ASCII 'k'.
        let kelvin = Address::parse("\u{212A}im@example.test").unwrap();
        assert_ne!(kelvin, kim);
        assert_eq!(kelvin.local(), "\u{212A}im");
        assert_ne!(Address::parse("\u{130}vy@example.test").unwrap(), Address::parse("ivy@example.test").unwrap());
        assert_ne!(Address::parse("kim@\u{212A}.test").unwrap().domain(), "k.test");
        assert_eq!(Address::parse("KIM@EXAMPLE.Test.").unwrap(), kim);
        // Non-ASCII letters are kept as given, not case-mapped.
        assert_eq!(Address::parse("J\u{dc}rgen@example.test").unwrap().local(), "j\u{dc}rgen");
        assert!(same_domain("Example.TEST.", "example.test"));
        assert!(!same_domain("\u{212A}.test", "k.test"));
    }

    #[test]
    fn refuses_escapes() {
        for bad in ["../x@example.test", "a/b@example.test", "..@example.test", ".a@example.test", "a\0@example.test", "a\n@example.test", "a@../x", "a@ex/ample", "@example.test", "a@", "noat", "a..b@example.test", "\"a\"@example.test"] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(Address::parse(&format!("{}@x.test", "a".repeat(65))), Err(AddressError::TooLong(_))));
    }
}
