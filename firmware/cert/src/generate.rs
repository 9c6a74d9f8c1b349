//! The self-signed cluster certificate: made for the store's names, valid
//! for at most 398 days, with the extensions of a TLS server's certificate.

use std::time::Duration;

use store::Store;

use crate::{CertError, MAX_SELF_SIGNED_DAYS, NOT_BEFORE_SKEW_SECS, RENEW_BEFORE_DAYS, SECS_PER_DAY};

/// How long before its making the self-signed certificate is valid from,
/// for clients whose clocks are somewhat behind.
const SELF_SIGNED_BACKDATE_SECS: i64 = SECS_PER_DAY;
/// How long after its making the self-signed certificate is valid: with
/// the day before, an hour short of 398 days, the most the CA/Browser
/// Forum Baseline Requirements (6.3.2) allow and clients accept. (The
/// hour keeps the whole days left the same for the first hour after.)
pub(crate) const SELF_SIGNED_LIFETIME_SECS: i64 = 397 * SECS_PER_DAY - 3600;

/// A new self-signed certificate and key, in PEM, for the store's host
/// name, its domains and localhost, valid from a day before `now` for
/// [`MAX_SELF_SIGNED_DAYS`], with the extensions of a TLS server's
/// certificate (RFC 5280 4.2.1.3 keyUsage digitalSignature, 4.2.1.12
/// extKeyUsage id-kp-serverAuth, 4.2.1.9 basicConstraints cA FALSE).
pub(crate) fn generate_self_signed(store: &Store, now: i64) -> Result<String, CertError> {
    // Works whether settings() hands out a reference or an Arc.
    let s = store.settings();
    let host = s.hostname.clone();
    let mut names = vec![host.clone()];
    for n in s.domains.iter().map(String::as_str).chain(["localhost"]) {
        if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            names.push(n.to_string());
        }
    }
    let gen = |e: rcgen::Error| CertError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(gen)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, host);
    // rcgen takes the `time` crate's date-times; from the epoch, without
    // naming that crate.
    let at = |secs: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs.max(0) as u64);
    params.not_before = at(now - SELF_SIGNED_BACKDATE_SECS);
    params.not_after = at(now + SELF_SIGNED_LIFETIME_SECS);
    // The key is ECDSA (P-256): signing only, so no keyEncipherment, which
    // is for RSA key transport (RFC 5280 4.2.1.3).
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let key = rcgen::KeyPair::generate().map_err(gen)?;
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}

/// Whether a self-signed certificate valid from `not_before` to
/// `not_after` is to be replaced at `now`: fewer than [`RENEW_BEFORE_DAYS`]
/// left, valid longer than [`MAX_SELF_SIGNED_DAYS`] in all, or not valid
/// yet (made while the clock was ahead).
pub(crate) fn self_signed_due(not_before: i64, not_after: i64, now: i64) -> bool {
    not_after - now < RENEW_BEFORE_DAYS * SECS_PER_DAY || not_after - not_before > MAX_SELF_SIGNED_DAYS * SECS_PER_DAY || not_before > now + NOT_BEFORE_SKEW_SECS
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;

    use super::*;
    use crate::check::{check_pair, parse_x509};
    use crate::storage::{cert_info, SELF_SIGNED};
    use crate::testutil::*;
    use crate::now_secs;

    #[test]
    fn the_self_signed_certificate_is_one_clients_accept() {
        use x509_parser::extensions::ParsedExtension;
        let (_d, store) = new_store();
        let info = cert_info(&store).unwrap();
        let text = fs::read(store.tls_dir().join(SELF_SIGNED)).unwrap();
        let pair = check_pair(&text, b"").unwrap();
        let c = parse_x509(&pair.certs()[0], "test", 0).unwrap();
        let v = c.validity();
        let (nb, na, now) = (v.not_before.timestamp(), v.not_after.timestamp(), now_secs());
        // CA/Browser Forum Baseline Requirements 6.3.2: at most 398 days.
        assert!(na - nb <= 398 * SECS_PER_DAY, "{} days", (na - nb) / SECS_PER_DAY);
        assert!(nb <= now && now - nb <= SECS_PER_DAY + 60, "valid from {}", info.not_before);
        assert!(na - now >= 396 * SECS_PER_DAY, "valid to {}", info.not_after);
        let ku = c.key_usage().unwrap().expect("keyUsage");
        assert!(ku.value.digital_signature());
        assert!(!ku.value.key_cert_sign());
        let eku = c.extended_key_usage().unwrap().expect("extKeyUsage");
        assert!(eku.value.server_auth);
        let bc = c.basic_constraints().unwrap().expect("basicConstraints");
        assert!(!bc.value.ca);
        assert_eq!(info.names, vec!["mail.example.test", "example.test", "localhost"]);
        assert!(c.extensions().iter().all(|e| !matches!(e.parsed_extension(), ParsedExtension::UnsupportedExtension { .. })));
        // webpki, as rustls clients verify it: with itself as the trust
        // anchor, for the host name, as a server.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pair.certs()[0].clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider())).build().unwrap();
        let name = rustls::pki_types::ServerName::try_from("mail.example.test").unwrap();
        verifier.verify_server_cert(&pair.certs()[0], &[], &name, &[], rustls::pki_types::UnixTime::now()).unwrap();
        assert_eq!(info.warning, None);
    }
}
