//! What an operator is shown about a certificate ([`CertInfo`]): names,
//! validity, fingerprint, and a warning when it needs a new one.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::GeneralName;

use crate::check::parse_x509;
use crate::{CertError, RENEW_BEFORE_DAYS, SECS_PER_DAY};

/// [`CertInfo::source`] of a certificate uploaded to the store.
pub const SOURCE_UPLOADED: &str = "uploaded";
/// [`CertInfo::source`] of the store's self-signed certificate.
pub const SOURCE_SELF_SIGNED: &str = "self-signed";
/// [`CertInfo::source`] of a node's --tls-cert/--tls-key files.
pub const SOURCE_CONFIGURED: &str = "configured file";

/// What the admin console shows about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// [`SOURCE_UPLOADED`], [`SOURCE_SELF_SIGNED`] or [`SOURCE_CONFIGURED`].
    pub source: String,
    /// The leaf's subject, e.g. `CN=mail.example.test`.
    pub subject: String,
    /// The leaf's DNS names (subjectAltName dNSName, RFC 5280 4.2.1.6).
    pub names: Vec<String>,
    /// The leaf's validity (RFC 5280 4.1.2.5) as RFC 3339 UTC times.
    pub not_before: String,
    pub not_after: String,
    /// Whole days until notAfter; negative once it has passed.
    pub expires_in_days: i64,
    /// SHA-256 of the leaf's DER, as colon-separated upper-case hex (the
    /// form `openssl x509 -fingerprint -sha256` prints).
    pub sha256: String,
    pub issuer: String,
    /// The file it came from.
    pub path: String,
    /// Set when the certificate needs an operator: an uploaded or
    /// configured one that expires within [`RENEW_BEFORE_DAYS`] (the
    /// self-signed one is renewed by the nodes themselves).
    pub warning: Option<String>,
}

pub(crate) fn info_of(leaf: &CertificateDer<'_>, source: &str, path: &Path, now: i64) -> Result<CertInfo, CertError> {
    let what = path.display().to_string();
    let c = parse_x509(leaf, &what, 0)?;
    let names = match c.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().filter_map(|n| if let GeneralName::DNSName(d) = n { Some(d.to_string()) } else { None }).collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(CertError::BadCert { what, index: 1, reason: e.to_string() }),
    };
    let v = c.validity();
    let not_after = v.not_after.timestamp();
    Ok(CertInfo {
        source: source.into(),
        subject: c.subject().to_string(),
        names,
        not_before: rfc3339(v.not_before.timestamp()),
        not_after: rfc3339(not_after),
        expires_in_days: expires_in_days(not_after, now),
        sha256: fingerprint(leaf),
        issuer: c.issuer().to_string(),
        path: what,
        warning: expiry_warning(source, not_after, now),
    })
}

pub(crate) fn expires_in_days(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(SECS_PER_DAY)
}

/// [`CertInfo::warning`] for a certificate of `source` that ends at `not_after`.
pub(crate) fn expiry_warning(source: &str, not_after: i64, now: i64) -> Option<String> {
    let days = expires_in_days(not_after, now);
    if source == SOURCE_SELF_SIGNED || days >= RENEW_BEFORE_DAYS {
        return None;
    }
    Some(if not_after < now {
        format!("the certificate expired on {}; clients refuse it: upload a new one", rfc3339(not_after))
    } else {
        format!("the certificate expires in {days} days, on {}; it is not renewed automatically: upload a new one", rfc3339(not_after))
    })
}

/// SHA-256 of a certificate's DER as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Seconds since the epoch as an RFC 3339 5.6 date-time in UTC, e.g.
/// `2026-11-29T23:44:08Z`.
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = proto::date::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", sod / 3600, sod / 60 % 60, sod % 60)
}



#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_days() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_995_848), "2026-11-29T23:44:08Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(expires_in_days(10 * SECS_PER_DAY, 0), 10);
        assert_eq!(expires_in_days(0, 1), -1);
    }
}
