//! SASL mechanisms' message formats (no crypto, no I/O).

/// RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain<'a> {
    pub authzid: &'a str,
    pub authcid: &'a str,
    pub password: &'a str,
}

impl<'a> Plain<'a> {
    /// The login name and password, when the client asks to act as itself
    /// (RFC 4616 2: an authorization identity other than the user's own
    /// is not granted here).
    pub fn login(&self) -> Option<(&'a str, &'a str)> {
        (self.authzid.is_empty() || self.authzid == self.authcid).then_some((self.authcid, self.password))
    }
}

/// RFC 4616 2: each part is at most 255 octets.
pub const MAX_PLAIN_PART: usize = 255;

pub fn parse_plain(msg: &[u8]) -> Option<Plain<'_>> {
    let msg = core::str::from_utf8(msg).ok()?;
    let mut parts = msg.split('\0');
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let password = parts.next()?;
    if parts.next().is_some() || authcid.is_empty() || password.is_empty() {
        return None;
    }
    if [authzid, authcid, password].iter().any(|p| p.len() > MAX_PLAIN_PART) {
        return None;
    }
    Some(Plain { authzid, authcid, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        assert_eq!(parse_plain(b"\0alice\0secret"), Some(Plain { authzid: "", authcid: "alice", password: "secret" }));
        assert_eq!(parse_plain(b"a\0b\0c").map(|p| p.authzid), Some("a"));
        assert_eq!(parse_plain(b"alice\0secret"), None);
        assert_eq!(parse_plain(b"\0alice\0pw").and_then(|p| p.login()), Some(("alice", "pw")));
        assert_eq!(parse_plain(b"bob\0alice\0pw").and_then(|p| p.login()), None);
        assert_eq!(parse_plain(b"\0\0secret"), None);
        assert_eq!(parse_plain(b"\0a\0b\0c"), None);
    }
}
