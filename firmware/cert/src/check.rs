//! The checks every chain and key pass before they are saved or
//! presented ([`check_pair`]): PEM, strict DER, X.509 structure,
//! signatures, the key's match, and a TLS handshake over memory.

use std::io::BufReader;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::handshake::prove_handshake;
use crate::info::{fingerprint, rfc3339};
use crate::{der, CertError, MAX_PEM_BYTES, NOT_BEFORE_SKEW_SECS};

/// A certificate chain and its private key that passed [`check_pair`]: the
/// leaf first, strictly valid DER, each signature verified where the
/// issuer is in the chain, and a TLS handshake completed with them.
#[derive(Debug)]
pub struct CheckedPair {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) certified: Arc<CertifiedKey>,
}

impl CheckedPair {
    /// The chain, the leaf first (RFC 8446 4.4.2).
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The leaf's SHA-256 fingerprint, as [`fingerprint`] gives it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.certs[0])
    }

    /// What a TLS server presents: the chain with its signing key.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// The chain (leaf first) and the key, in PEM, nothing else.
    pub fn to_pem(&self) -> Result<String, CertError> {
        let mut out = String::new();
        for c in &self.certs {
            out.push_str(&pem_section("CERTIFICATE", c));
        }
        let (label, der) = match &self.key {
            PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
            _ => return Err(CertError::BadKey("unsupported key format".into())),
        };
        out.push_str(&pem_section(label, der));
        Ok(out)
    }
}

/// Checks a certificate chain and its private key, both PEM (RFC 7468),
/// as a server would present them: the same checks as an upload, but no
/// clock (dates are not looked at). `cert_pem` and `key_pem` may also be
/// one text holding both. Never panics, whatever the bytes.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CheckedPair, CertError> {
    let mut both = Vec::with_capacity(cert_pem.len() + key_pem.len() + 1);
    both.extend_from_slice(cert_pem);
    both.push(b'\n');
    both.extend_from_slice(key_pem);
    parse_bundle(&both, "the certificate and key", None)
}

/// Parses one certificate for reading its fields; [`check_cert`] has the
/// strict checks.
pub(crate) fn parse_x509<'a>(der: &'a [u8], what: &str, index: usize) -> Result<X509Certificate<'a>, CertError> {
    let bad = |reason: String| CertError::BadCert { what: what.into(), index: index + 1, reason };
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(bad(format!("{} bytes after its end", rest.len()))),
        Ok((_, c)) => Ok(c),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Certificate `index` (from 0) of a chain, strictly: valid DER throughout
/// (X.690), the X.509 structure (RFC 5280 4.1), and every extension's
/// value valid DER too (RFC 5280 4.1: extnValue holds the DER encoding of
/// the extension).
fn check_cert<'a>(der: &'a [u8], what: &str, index: usize) -> Result<X509Certificate<'a>, CertError> {
    use x509_parser::validate::{Validator, VecLogger, X509StructureValidator};
    let bad = |reason: String| CertError::BadCert { what: what.into(), index: index + 1, reason };
    der::check(der).map_err(|e| bad(e.to_string()))?;
    let c = parse_x509(der, what, index)?;
    let mut log = VecLogger::default();
    if !X509StructureValidator.validate(&c, &mut log) {
        return Err(bad(log.errors().join("; ")));
    }
    for ext in c.extensions() {
        der::check(ext.value).map_err(|e| bad(format!("extension {}: {e}", ext.oid)))?;
    }
    Ok(c)
}

/// Each certificate whose issuer is in the chain (itself, when self-issued:
/// RFC 5280 6.1) carries a signature that verifies with the issuer's key
/// (RFC 5280 4.1.1.3). A certificate whose issuer is not given (the top
/// of a chain that stops below its root, or a lone CA-issued leaf) cannot
/// be checked here; clients check it against their trust store. An
/// algorithm that cannot be verified here (RSA-PSS, P-521) is left to the
/// clients too.
fn check_signatures(parsed: &[X509Certificate<'_>], what: &str) -> Result<(), CertError> {
    for (index, c) in parsed.iter().enumerate() {
        let issuer = if c.issuer().as_raw() == c.subject().as_raw() { Some(index) } else { parsed.iter().position(|p| p.subject().as_raw() == c.issuer().as_raw()) };
        let Some(issuer) = issuer else { continue };
        // Any other error: an algorithm not verifiable here.
        if let Err(x509_parser::error::X509Error::SignatureVerificationError) = c.verify_signature(Some(parsed[issuer].public_key())) {
            return Err(CertError::BadSignature { what: what.into(), index: index + 1, issuer: issuer + 1 });
        }
    }
    Ok(())
}

/// Reads a PEM text (RFC 7468) holding a certificate chain and its private
/// key, in any order, and checks that they belong together. The leaf is
/// the certificate whose SubjectPublicKeyInfo (RFC 5280 4.1.2.7) is the
/// key's; it goes first, the others keep their order (RFC 8446 4.4.2: the
/// sender's certificate comes first). Every certificate must be strictly
/// valid ([`check_cert`], [`check_signatures`]), the leaf readable by
/// rustls (webpki), and a TLS handshake with the pair must complete
/// ([`prove_handshake`]). With `now`, the leaf must also be valid at that
/// time (RFC 5280 4.1.2.5).
pub(crate) fn parse_bundle(text: &[u8], what: &str, now: Option<i64>) -> Result<CheckedPair, CertError> {
    if text.len() > MAX_PEM_BYTES {
        return Err(CertError::TooLarge { size: text.len(), max: MAX_PEM_BYTES });
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(CertError::Empty);
    }
    // rustls-pemfile skips sections it does not know, so an encrypted key
    // (PKCS#8 EncryptedPrivateKeyInfo, RFC 5958 3, or OpenSSL's legacy
    // Proc-Type header) would otherwise read as "no key".
    let s = String::from_utf8_lossy(text);
    if s.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || s.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(CertError::EncryptedKey);
    }
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for item in rustls_pemfile::read_all(&mut BufReader::new(text)) {
        match item.map_err(|e| CertError::BadPem { what: what.into(), reason: e.to_string() })? {
            rustls_pemfile::Item::X509Certificate(c) => certs.push(c),
            // PKCS#8 (RFC 5208), PKCS#1 RSA (RFC 8017 A.1.2), SEC1 EC (RFC 5915).
            rustls_pemfile::Item::Pkcs8Key(k) => keys.push(PrivateKeyDer::Pkcs8(k)),
            rustls_pemfile::Item::Pkcs1Key(k) => keys.push(PrivateKeyDer::Pkcs1(k)),
            rustls_pemfile::Item::Sec1Key(k) => keys.push(PrivateKeyDer::Sec1(k)),
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(CertError::NoCert(what.into()));
    }
    let key = match keys.len() {
        0 => return Err(CertError::NoKey(what.into())),
        1 => keys.remove(0),
        count => return Err(CertError::ManyKeys { what: what.into(), count }),
    };
    let parsed = certs.iter().enumerate().map(|(i, c)| check_cert(c, what, i)).collect::<Result<Vec<_>, _>>()?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CertError::BadKey(e.to_string()))?;
    let spki = signing.public_key().ok_or_else(|| CertError::BadKey("its public key cannot be derived".into()))?;
    let leaf = parsed.iter().position(|c| c.public_key().raw == spki.as_ref()).ok_or(CertError::KeyMismatch)?;
    check_signatures(&parsed, what)?;
    if let Some(now) = now {
        let v = parsed[leaf].validity();
        let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
        if na < now {
            return Err(CertError::Expired(rfc3339(na)));
        }
        if nb > now + NOT_BEFORE_SKEW_SECS {
            return Err(CertError::NotYetValid(rfc3339(nb)));
        }
    }
    drop(parsed);
    let leaf_cert = certs.remove(leaf);
    certs.insert(0, leaf_cert);
    // rustls's own parser (webpki), as every rustls client reads it.
    rustls::server::ParsedCertificate::try_from(&certs[0]).map_err(|e| CertError::BadCert { what: what.into(), index: leaf + 1, reason: format!("rustls cannot read it: {e}") })?;
    let certified = CertifiedKey::new(certs.clone(), signing);
    // The same comparison by rustls itself, as it will be used.
    certified.keys_match().map_err(|_| CertError::KeyMismatch)?;
    let certified = Arc::new(certified);
    prove_handshake(&certified)?;
    Ok(CheckedPair { certs, key, certified })
}


/// RFC 7468 2: base64 lines of 64 characters between the labels.
pub(crate) fn pem_section(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    const PEM_LINE: usize = 64;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(PEM_LINE) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn check_pair_takes_the_certificate_and_key_apart_or_together_and_never_panics() {
        let (cert, key) = make(&["mail.example.test"]);
        let pair = check_pair(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        assert_eq!(pair.fingerprint(), fingerprint(cert.der()));
        assert_eq!(pair.certs().len(), 1);
        assert_eq!(pair.certified_key().cert, pair.certs());
        let together = format!("{}{}", key.serialize_pem(), cert.pem());
        assert_eq!(check_pair(together.as_bytes(), b"").unwrap().fingerprint(), pair.fingerprint());
        // A single-byte change anywhere in the DER (a sample of positions
        // and values) is refused, except within the text of the issuer's
        // or the subject's name: that makes a certificate no longer
        // self-issued, with an issuer not given, which clients judge. And
        // nothing panics.
        let der = cert.der().to_vec();
        let c = parse_x509(&der, "test", 0).unwrap();
        // Self-issued: the same bytes twice, the issuer first.
        assert_eq!(c.issuer().as_raw(), c.subject().as_raw());
        let span = |nth: usize| {
            let at = find(&der, c.issuer().as_raw(), nth);
            at..at + c.issuer().as_raw().len()
        };
        let names = [span(0), span(1)];
        let key_pem = key.serialize_pem();
        let mut changes = 0;
        for at in (0..der.len()).step_by(3) {
            for value in [0x00, 0x7f, 0x80, 0xff, der[at] ^ 1] {
                if value == der[at] {
                    continue;
                }
                changes += 1;
                let text = pem_section("CERTIFICATE", &patched(&der, at, value));
                if check_pair(text.as_bytes(), key_pem.as_bytes()).is_ok() {
                    assert!(names.iter().any(|n| n.contains(&at)), "byte {at} set to {value:#04x} passes");
                }
            }
        }
        assert!(changes > 500);
        for junk in [&b""[..], b"-----BEGIN CERTIFICATE-----\n", b"\xff\xfe\x00", &[0x30; 4096]] {
            assert!(check_pair(junk, junk).is_err());
        }
    }

    #[test]
    fn pem_sections_read_back() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = pem_section("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(pem.as_bytes())).collect::<Result<_, _>>().unwrap();
        assert_eq!(back[0].as_ref(), &der[..]);
    }
}
