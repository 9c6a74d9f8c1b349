//! The cluster certificate: the one certificate every node of a cluster
//! presents, kept in the store.
//!
//! It is `<store>/tls/cluster.pem` when an operator uploaded one
//! ([`upload`]), else `<store>/tls/self-signed.pem`, generated once by
//! whichever node needs it first ([`storage`]). A process serves through
//! one [`ClusterCertResolver`], which re-reads the file when it changes:
//! an upload on any node reaches every node within [`RELOAD_INTERVAL`],
//! without a restart ([`resolver`]).
//!
//! Every chain and key, uploaded, generated, configured ([`files`]) or read
//! back from the store, passes [`check_pair`] before it is saved or
//! presented: strict DER ([`der`]), signatures, and a TLS handshake over
//! memory ([`check`]). The self-signed certificate ([`generate`]) is valid
//! for 398 days and the nodes renew it [`RENEW_BEFORE_DAYS`] before its end
//! ([`renew_if_due`]); an uploaded one is never replaced, only warned
//! about.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod check;
pub mod der;
pub mod files;
pub mod generate;
mod handshake;
pub mod info;
pub mod renew;
pub mod resolver;
pub mod storage;
#[cfg(test)]
mod testutil;

pub use check::{check_pair, CheckedPair};
pub use files::{configured_cert_info, load_files};
pub use info::{fingerprint, CertInfo, SOURCE_CONFIGURED, SOURCE_SELF_SIGNED, SOURCE_UPLOADED};
pub use renew::{renew_if_due, Renewal};
pub use resolver::{server_config, spawn_reloader, ClusterCertResolver};
pub use storage::{cert_info, regenerate, upload};

/// Why a certificate or key is refused, or cannot be read, made or saved.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot save {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("{0} holds no PEM certificate")]
    NoCert(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("the text is empty: paste the certificate chain and the private key, in PEM")]
    Empty,
    #[error("the text is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("{what} is not valid PEM: {reason}")]
    BadPem { what: String, reason: String },
    #[error("the private key is encrypted; upload it without a passphrase (e.g. `openssl pkey -in key.pem`)")]
    EncryptedKey,
    #[error("{what} holds {count} private keys; exactly one is needed, the one of the certificate")]
    ManyKeys { what: String, count: usize },
    #[error("certificate {index} of {what} is not a valid X.509 certificate: {reason}")]
    BadCert { what: String, index: usize, reason: String },
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate (their public keys differ)")]
    KeyMismatch,
    #[error("the certificate expired on {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
    #[error("the signature of certificate {index} of {what} does not verify with the key of certificate {issuer}, its issuer: the certificate is damaged")]
    BadSignature { what: String, index: usize, issuer: usize },
    #[error("a test TLS handshake with the certificate and key failed ({version}): {reason}")]
    Handshake { version: &'static str, reason: String },
}

/// Largest PEM text accepted by [`upload`] (and read back from the store):
/// a chain of a few certificates and a key is well under this.
pub const MAX_PEM_BYTES: usize = 64 * 1024;
/// How often a running node looks whether the cluster certificate changed.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(3);
/// How far in the future an uploaded certificate's notBefore may be, for
/// clocks that differ a little between the issuer and this cluster.
pub const NOT_BEFORE_SKEW_SECS: i64 = 5 * 60;
pub(crate) const SECS_PER_DAY: i64 = 86_400;
/// The longest validity (notBefore to notAfter, RFC 5280 4.1.2.5) of a
/// self-signed cluster certificate: one valid longer (made by an earlier
/// version, for centuries) is renewed at once.
pub const MAX_SELF_SIGNED_DAYS: i64 = 398;
/// When fewer days than this remain, the self-signed cluster certificate
/// is renewed and an uploaded one is warned about: time for every node to
/// follow, and for an operator to get a new certificate from the CA.
pub const RENEW_BEFORE_DAYS: i64 = 30;

pub(crate) fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
