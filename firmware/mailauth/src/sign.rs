//! DKIM signatures on outbound mail (RFC 6376 5, RFC 8463).

use std::fmt;
use std::path::Path;

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_auth::AuthenticatedMessage;
use rustls_pki_types::PrivateKeyDer;

use crate::keys::{load_active, Algorithm, StoredKey};
use crate::Error;

/// The header fields signed (RFC 6376 5.4.1 lists those a signature should
/// cover). Each is signed as often as it appears; one that is absent is
/// signed once as empty, so it cannot be added in transit without breaking
/// the signature (RFC 6376 5.4.2). From appears twice so that even a second
/// From added above the first breaks it (RFC 6376 8.15).
///
/// Received, Return-Path and other trace fields are left out: relays add
/// them. List-* fields are left out so that a mailing list adding them does
/// not by that alone break the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Signs one domain's outbound mail with its active key.
pub struct Signer {
    domain: String,
    selector: String,
    algorithm: Algorithm,
    inner: DkimSigner<DkimKey, Done>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Signer").field("domain", &self.domain).field("selector", &self.selector).field("algorithm", &self.algorithm).finish()
    }
}

impl Signer {
    /// The signer for `domain`'s active key, or None when the domain has no
    /// DKIM key (its mail then goes out unsigned).
    pub fn load(store_root: &Path, domain: &str) -> Result<Option<Signer>, Error> {
        load_active(store_root, domain)?.map(Signer::from_key).transpose()
    }

    fn from_key(key: StoredKey) -> Result<Signer, Error> {
        let bad = |e: mail_auth::Error| Error::BadKey { path: key.path.clone(), reason: e.to_string() };
        let dkim_key = match (key.algorithm, &key.private) {
            (Algorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(der)) => {
                DkimKey::Ed25519(Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der()).map_err(bad)?)
            }
            (Algorithm::RsaSha256, private) => DkimKey::Rsa(RsaKey::<Sha256>::from_key_der(private.clone_key()).map_err(bad)?),
            (Algorithm::Ed25519Sha256, _) => {
                return Err(Error::BadKey { path: key.path.clone(), reason: "an Ed25519 key must be PKCS#8".into() })
            }
        };
        let inner = DkimSigner::from_key(dkim_key)
            .domain(key.domain.clone())
            .selector(key.selector.clone())
            .headers(SIGNED_HEADERS.iter().copied())
            // RFC 6376 3.4: relaxed/relaxed survives the header re-folding
            // and trailing-space changes that relays make.
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        Ok(Signer { domain: key.domain, selector: key.selector, algorithm: key.algorithm, inner })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `message` (header section, blank line, body; CRLF line ends,
    /// exactly as it will be sent) and returns the complete
    /// `DKIM-Signature:` header field, folded, ending in CRLF, to be put in
    /// front of the message (RFC 6376 3.5, 5.6). No l= tag: a body length
    /// would let anyone append to the body (RFC 6376 8.2).
    pub fn sign(&self, message: &[u8]) -> Result<String, Error> {
        let signature = self.inner.sign(message).map_err(|e| Error::Sign(e.to_string()))?;
        Ok(signature.to_header())
    }
}

/// The author domain of `message`: the domain of its From address (RFC 7489
/// 3.2 `RFC5322.From` domain), lower-cased, when it has exactly one. Mail
/// should be signed by that domain for DMARC to pass (RFC 7489 3.1).
pub fn author_domain(message: &[u8]) -> Option<String> {
    let headers = crate::source::header_section(message);
    let parsed = AuthenticatedMessage::parse(headers)?;
    let mut domains = parsed.from.iter().filter_map(|a| a.rsplit_once('@').map(|(_, d)| d));
    let first = domains.next()?;
    if domains.all(|d| d == first) {
        Some(first.to_string())
    } else {
        None
    }
}
