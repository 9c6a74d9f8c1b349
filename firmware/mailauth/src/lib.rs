//! Mail authentication: DKIM signatures on the organisation's outbound mail
//! (RFC 6376, RFC 8463), and SPF (RFC 7208), DKIM and DMARC (RFC 7489)
//! checks of mail received from other servers, reported in an
//! Authentication-Results header field (RFC 8601).
//!
//! The cryptography, the DNS record parsers and the SPF/DMARC evaluation
//! come from the `mail-auth` crate (ring backend); this crate owns where the
//! keys live, which headers are signed, the bounds on the work done for a
//! peer, and the wording of the verdict.
//!
//! Keys live in the store, so every node signs with the same key:
//!
//! ```text
//! <store>/dkim/<domain>/<selector>.pem   private key, PKCS#8 PEM, mode 0600
//! <store>/dkim/<domain>/selector         the selector that signs now
//! ```

mod auth_results;
mod keys;
mod sign;
mod source;
mod verify;

use std::io;
use std::path::PathBuf;

pub use auth_results::forged_fields;
pub use keys::{activate, keygen, txt_record, Algorithm, DkimKeyInfo, MAX_TXT_STRING};
pub use sign::{author_domain, Signer, SIGNED_HEADERS};
pub use source::{MessageSource, BODY_CHUNK, MAX_HEADER_SECTION};
pub use verify::{resolv_conf_servers, SenderSpf, Verdict, Verifier, CHECK_DEADLINE, DNS_ATTEMPTS, DNS_CACHE_ENTRIES, DNS_TIMEOUT, DOWN_AFTER, MAX_SIGNATURES, MAX_VERIFY_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("'{0}' is not a domain name a DKIM key can be kept for (letters, digits and hyphens in dot-separated labels)")]
    BadDomain(String),
    #[error("'{0}' is not a valid DKIM selector (RFC 6376 3.1: letters, digits and hyphens in dot-separated labels)")]
    BadSelector(String),
    #[error("unknown DKIM algorithm '{0}'; use rsa-sha256 or ed25519-sha256")]
    BadAlgorithm(String),
    #[error("a DKIM key for selector '{selector}' of {domain} already exists ({path}); pick a new selector to rotate keys")]
    KeyExists { domain: String, selector: String, path: PathBuf },
    #[error("no DKIM key for selector '{selector}' of {domain} ({path})")]
    NoSuchKey { domain: String, selector: String, path: PathBuf },
    #[error("the DKIM key {path} cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("DKIM key generation failed: {0}")]
    KeyGeneration(String),
    #[error("DKIM signing failed: {0}")]
    Sign(String),
    #[error("DNS resolver configuration: {0}")]
    Resolver(String),
    #[error("cannot read the message for its checks: {0}")]
    Read(io::Error),
    #[error("I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
