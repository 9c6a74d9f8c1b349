//! TLS settings: a configured certificate, or the cluster certificate kept
//! in the store so that every node presents the same one.
//!
//! The cluster certificate is `<store>/tls/cluster.pem` when an operator
//! uploaded one, else `<store>/tls/self-signed.pem`, generated once by
//! whichever node needs it first. Each file holds the chain and the private
//! key together, so that they can never get out of step: each file is
//! written whole under a temporary name and then renamed or linked into
//! place. A node serves through a [`ClusterCertResolver`], which re-reads
//! the file when it changes: an upload on any node reaches every node
//! within [`RELOAD_INTERVAL`], without a restart.
//!
//! Every chain and key, uploaded, generated, configured or read back from
//! the store, passes [`check_pair`] before it is saved or presented:
//! strict DER, signatures, and a TLS handshake over memory. The
//! self-signed certificate is valid for 398 days and the nodes renew it
//! [`RENEW_BEFORE_DAYS`] before its end ([`renew_if_due`]); an uploaded
//! one is never replaced, only warned about.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use store::Store;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
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

/// The file in `<store>/tls/` that holds the self-signed key and
/// certificate together.
const SELF_SIGNED: &str = "self-signed.pem";
/// The file in `<store>/tls/` that holds an uploaded chain and key; it
/// takes precedence over the self-signed one.
const UPLOADED: &str = "cluster.pem";

/// Largest PEM text accepted by [`upload`] (and read back from the store):
/// a chain of a few certificates and a key is well under this.
pub const MAX_PEM_BYTES: usize = 64 * 1024;
/// How often a running node looks whether the cluster certificate changed.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(3);
/// How far in the future an uploaded certificate's notBefore may be, for
/// clocks that differ a little between the issuer and this cluster.
pub const NOT_BEFORE_SKEW_SECS: i64 = 5 * 60;
const SECS_PER_DAY: i64 = 86_400;

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

/// Reads a PEM file a node is configured with, bounded.
fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |e| TlsError::Read { path: path.display().to_string(), source: e };
    let mut text = Vec::new();
    File::open(path).map_err(err)?.take(MAX_PEM_BYTES as u64 + 1).read_to_end(&mut text).map_err(err)?;
    Ok(text)
}

/// Loads the certificate chain and key from PEM files (a node's
/// --tls-cert/--tls-key), with the checks of an upload ([`check_pair`]):
/// a pair that clients could not use is refused with the reason, and the
/// node does not start with it.
pub fn load_files(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let mut both = read_pem_file(cert)?;
    both.push(b'\n');
    both.extend(read_pem_file(key)?);
    let pair = parse_bundle(&both, &format!("{} / {}", cert.display(), key.display()), None)?;
    Ok((pair.certs, pair.key))
}

/// What a node started with --tls-cert/--tls-key presents.
pub fn configured_cert_info(cert: &Path, key: &Path) -> Result<CertInfo, TlsError> {
    let (certs, _) = load_files(cert, key)?;
    info_of(&certs[0], SOURCE_CONFIGURED, cert, now_secs())
}

/// How long before its making the self-signed certificate is valid from,
/// for clients whose clocks are somewhat behind.
const SELF_SIGNED_BACKDATE_SECS: i64 = SECS_PER_DAY;
/// How long after its making the self-signed certificate is valid: with
/// the day before, an hour short of 398 days, the most the CA/Browser
/// Forum Baseline Requirements (6.3.2) allow and clients accept. (The
/// hour keeps the whole days left the same for the first hour after.)
const SELF_SIGNED_LIFETIME_SECS: i64 = 397 * SECS_PER_DAY - 3600;
/// The longest validity (notBefore to notAfter, RFC 5280 4.1.2.5) of a
/// self-signed cluster certificate: one valid longer (made by an earlier
/// version, for centuries) is renewed at once.
pub const MAX_SELF_SIGNED_DAYS: i64 = 398;
/// When fewer days than this remain, the self-signed cluster certificate
/// is renewed and an uploaded one is warned about: time for every node to
/// follow, and for an operator to get a new certificate from the CA.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// A new self-signed certificate and key, in PEM, for the store's host
/// name, its domains and localhost, valid from a day before `now` for
/// [`MAX_SELF_SIGNED_DAYS`], with the extensions of a TLS server's
/// certificate (RFC 5280 4.2.1.3 keyUsage digitalSignature, 4.2.1.12
/// extKeyUsage id-kp-serverAuth, 4.2.1.9 basicConstraints cA FALSE).
fn generate_self_signed(store: &Store, now: i64) -> Result<String, TlsError> {
    // Works whether settings() hands out a reference or an Arc.
    let s = store.settings();
    let host = s.hostname.clone();
    let mut names = vec![host.clone()];
    for n in s.domains.iter().map(String::as_str).chain(["localhost"]) {
        if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            names.push(n.to_string());
        }
    }
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
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

/// Makes the store's self-signed certificate if there is none, and returns
/// its path. Creation is a link() of a complete file, which fails if
/// another node won the race; then that node's certificate is used.
fn ensure_self_signed(store: &Store) -> Result<PathBuf, TlsError> {
    let dir = store.tls_dir();
    let path = dir.join(SELF_SIGNED);
    if !path.exists() {
        let pem = generate_self_signed(store, now_secs())?;
        parse_bundle(pem.as_bytes(), "the generated certificate", None)?;
        let werr = |e| TlsError::Write { path: path.display().to_string(), source: e };
        store::fsutil::create_dir_durable(&dir).map_err(werr)?;
        restrict_dir(&dir);
        link_new(&dir, &pem, &path).map_err(werr)?;
    }
    Ok(path)
}

/// Writes `text` (a key and certificate) completely under a temporary
/// name, then links it to `name` if nothing has that name yet. True if
/// this call made `name`; false if it was there already (made by another
/// node). The link is what makes the file visible: a crash before it
/// leaves only the temporary file.
fn link_new(dir: &Path, text: &str, name: &Path) -> io::Result<bool> {
    let tmp = dir.join(format!(".{SELF_SIGNED}.{}.{:x}", std::process::id(), rand_suffix()));
    let r = (|| {
        store::fsutil::write_atomic(&tmp, text.as_bytes())?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(KEY_FILE_MODE))?;
        match fs::hard_link(&tmp, name) {
            Ok(()) => store::fsutil::sync_dir(dir).map(|()| true),
            // On NFS a retransmitted LINK may report EEXIST for a link it
            // made: the link count of the temporary file tells.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(fs::metadata(&tmp).map(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 1).unwrap_or(false)),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    r
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

/// The acceptor for a fixed certificate (a node's --tls-cert/--tls-key).
pub fn acceptor(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

// ---------------------------------------------------------------------------
// Strict DER

/// A certificate's encoding checked element by element against the
/// Distinguished Encoding Rules (X.690 8, 10 and 11). Parsers differ in
/// what they forgive; OpenSSL, the one most clients use, refuses a
/// certificate with a bad length or tag anywhere in it, so one is refused
/// here before it is saved or presented.
mod der {
    use std::fmt;

    /// Nesting depth at which an encoding is refused. A certificate nests
    /// about 8 deep (a name's attribute in its RDN in the name in the TBS
    /// in the certificate); the bound keeps this recursive check's stack
    /// small whatever the input.
    pub const MAX_DEPTH: usize = 32;

    const UNIVERSAL: u8 = 0;
    const BOOLEAN: u32 = 1;
    const INTEGER: u32 = 2;
    const BIT_STRING: u32 = 3;
    const NULL: u32 = 5;
    const OID: u32 = 6;
    const ENUMERATED: u32 = 10;
    const RELATIVE_OID: u32 = 13;
    const SEQUENCE: u32 = 16;
    const SET: u32 = 17;
    const UTC_TIME: u32 = 23;
    const GENERALIZED_TIME: u32 = 24;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Error {
        /// Where in the DER the fault is.
        pub offset: usize,
        pub reason: &'static str,
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "invalid DER at byte {}: {}", self.offset, self.reason)
        }
    }

    fn fail<T>(offset: usize, reason: &'static str) -> Result<T, Error> {
        Err(Error { offset, reason })
    }

    /// `der` is exactly one valid DER element, and so is every element in it.
    pub fn check(der: &[u8]) -> Result<(), Error> {
        let end = element(der, 0, der.len(), 0)?;
        if end != der.len() {
            return fail(end, "bytes after the end of the encoding");
        }
        Ok(())
    }

    /// Checks the element at `at`, which must end by `limit` (its parent's
    /// end); returns where it ends.
    fn element(buf: &[u8], at: usize, limit: usize, depth: usize) -> Result<usize, Error> {
        if depth > MAX_DEPTH {
            return fail(at, "nested too deeply");
        }
        let byte = |i: usize| if i < limit { Ok(buf[i]) } else { fail(i, "truncated") };
        // X.690 8.1.2: identifier octets.
        let first = byte(at)?;
        let class = first >> 6;
        let constructed = first & 0x20 != 0;
        let mut i = at + 1;
        let number = if first & 0x1f == 0x1f {
            // X.690 8.1.2.4: the high tag number form, base 128; 8.1.2.4.2 c:
            // the first subsequent octet is not 0x80 (DER 10: minimal).
            let mut n: u32 = 0;
            loop {
                let b = byte(i)?;
                if n == 0 && b == 0x80 {
                    return fail(i, "tag number not in its shortest form");
                }
                if n > (u32::MAX >> 7) {
                    return fail(i, "tag number too large");
                }
                n = n << 7 | u32::from(b & 0x7f);
                i += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            if n < 31 {
                return fail(at, "tag number below 31 in the long form (X.690 8.1.2.4)");
            }
            n
        } else {
            u32::from(first & 0x1f)
        };
        // X.690 8.1.3 and 10.1: the definite form, in the fewest octets.
        let l0 = byte(i)?;
        i += 1;
        let len = match l0 {
            0..=0x7f => usize::from(l0),
            0x80 => return fail(i - 1, "indefinite length (DER needs a definite one, X.690 10.1)"),
            0xff => return fail(i - 1, "reserved length octet (X.690 8.1.3.5)"),
            _ => {
                let n = usize::from(l0 & 0x7f);
                if n > 4 {
                    return fail(i - 1, "length of more than 4 octets");
                }
                let mut v: usize = 0;
                for k in 0..n {
                    let b = byte(i + k)?;
                    if k == 0 && b == 0 {
                        return fail(i, "length with a leading zero octet (X.690 10.1)");
                    }
                    v = v << 8 | usize::from(b);
                }
                if v < 0x80 {
                    return fail(i - 1, "long-form length below 128 (X.690 10.1)");
                }
                i += n;
                v
            }
        };
        let end = match i.checked_add(len) {
            Some(e) if e <= limit => e,
            _ => return fail(i, "length runs past the end of the enclosing element"),
        };
        if class == UNIVERSAL && (number == SEQUENCE || number == SET) != constructed {
            // X.690 8.9.1, 8.11.1: SEQUENCE and SET are constructed; 10.2:
            // in DER, strings and every other type are primitive.
            return fail(at, if constructed { "constructed encoding of a primitive type (X.690 10.2)" } else { "primitive SEQUENCE or SET (X.690 8.9.1)" });
        }
        if constructed {
            let mut p = i;
            while p < end {
                p = element(buf, p, end, depth + 1)?;
            }
        } else if class == UNIVERSAL {
            primitive(number, &buf[i..end], i)?;
        }
        Ok(end)
    }

    /// The rules for the contents of the universal primitive types a
    /// certificate uses.
    fn primitive(number: u32, c: &[u8], at: usize) -> Result<(), Error> {
        match number {
            // X.690 11.1: FALSE is 0x00, TRUE is 0xFF.
            BOOLEAN if c.len() != 1 || (c[0] != 0 && c[0] != 0xff) => fail(at, "BOOLEAN not one octet 00 or FF (X.690 11.1)"),
            // X.690 8.3.1, 8.3.2 (and 8.4 for ENUMERATED): at least one
            // octet, and no redundant leading 00 or FF.
            INTEGER | ENUMERATED if c.is_empty() => fail(at, "empty INTEGER (X.690 8.3.1)"),
            INTEGER | ENUMERATED if c.len() > 1 && ((c[0] == 0 && c[1] & 0x80 == 0) || (c[0] == 0xff && c[1] & 0x80 != 0)) => fail(at, "INTEGER not in its shortest form (X.690 8.3.2)"),
            // X.690 8.6.2: an initial octet of 0 to 7 unused bits, 0 when empty.
            BIT_STRING if c.is_empty() => fail(at, "BIT STRING without its initial octet (X.690 8.6.2)"),
            BIT_STRING if c[0] > 7 || (c.len() == 1 && c[0] != 0) => fail(at, "BIT STRING with a bad count of unused bits (X.690 8.6.2.2)"),
            // X.690 8.8.2: no contents.
            NULL if !c.is_empty() => fail(at, "NULL with contents (X.690 8.8.2)"),
            // X.690 8.19.2, 8.20.2: subidentifiers in base 128, each in its
            // fewest octets (never a leading 0x80), the last octet of each
            // with bit 8 clear.
            OID | RELATIVE_OID if c.is_empty() => fail(at, "empty OBJECT IDENTIFIER (X.690 8.19.2)"),
            OID | RELATIVE_OID if c[c.len() - 1] & 0x80 != 0 => fail(at, "OBJECT IDENTIFIER whose last subidentifier is cut off (X.690 8.19.2)"),
            OID | RELATIVE_OID if c.iter().enumerate().any(|(k, &b)| b == 0x80 && (k == 0 || c[k - 1] & 0x80 == 0)) => fail(at, "OBJECT IDENTIFIER subidentifier not in its shortest form (X.690 8.19.2)"),
            // RFC 5280 4.1.2.5.1: YYMMDDHHMMSSZ; X.690 11.8.
            UTC_TIME if !time_digits(c, 12) => fail(at, "UTCTime not in the form YYMMDDHHMMSSZ (RFC 5280 4.1.2.5.1)"),
            // RFC 5280 4.1.2.5.2: YYYYMMDDHHMMSSZ; X.690 11.7.
            GENERALIZED_TIME if !time_digits(c, 14) => fail(at, "GeneralizedTime not in the form YYYYMMDDHHMMSSZ (RFC 5280 4.1.2.5.2)"),
            _ => Ok(()),
        }
    }

    fn time_digits(c: &[u8], digits: usize) -> bool {
        c.len() == digits + 1 && c[..digits].iter().all(u8::is_ascii_digit) && c[digits] == b'Z'
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn good_encodings_pass() {
            // SEQUENCE { INTEGER 1, OID 1.2.840.113549, BOOLEAN TRUE, NULL, [0] { UTCTime } }
            let der = [0x30, 0x21, 0x02, 0x01, 0x01, 0x06, 0x06, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0xff, 0x05, 0x00, 0xa0, 0x0f, 0x17, 0x0d, b'2', b'6', b'0', b'1', b'0', b'1', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
            assert_eq!(check(&der), Ok(()));
            // A long-form length of 128.
            let mut long = vec![0x04, 0x81, 0x80];
            long.extend([0u8; 128]);
            assert_eq!(check(&long), Ok(()));
        }

        #[test]
        fn each_rule_is_enforced() {
            let cases: &[(&[u8], &str)] = &[
                (&[], "truncated"),
                (&[0x30, 0x03, 0x02, 0x01], "past the end"),
                (&[0x30, 0x03, 0x02, 0x02, 0x01, 0x01], "past the end"),
                (&[0x02, 0x01, 0x01, 0x00], "after the end"),
                (&[0x30, 0x80, 0x00, 0x00], "indefinite"),
                (&[0x04, 0x81, 0x01, 0x00], "below 128"),
                (&[0x04, 0x82, 0x00, 0x81], "leading zero"),
                (&[0x01, 0x01, 0x01], "BOOLEAN"),
                (&[0x02, 0x00], "empty INTEGER"),
                (&[0x02, 0x02, 0x00, 0x01], "shortest form"),
                (&[0x03, 0x01, 0x01], "unused bits"),
                (&[0x05, 0x01, 0x00], "NULL"),
                (&[0x06, 0x02, 0x2a, 0x86], "cut off"),
                (&[0x06, 0x02, 0x80, 0x01], "subidentifier"),
                (&[0x17, 0x03, b'2', b'6', b'Z'], "UTCTime"),
                (&[0x24, 0x03, 0x04, 0x01, 0x00], "constructed encoding"),
                (&[0x10, 0x00], "primitive SEQUENCE"),
                (&[0x1f, 0x01, 0x00], "below 31"),
            ];
            for (der, expected) in cases {
                let e = check(der).expect_err(&format!("{der:02x?} passed"));
                assert!(e.to_string().contains(expected), "{der:02x?}: {e}");
            }
            // Nesting beyond the bound, without a stack overflow.
            let mut deep = Vec::new();
            for _ in 0..1000 {
                deep.extend([0x30, 0x80]);
            }
            assert!(check(&deep).is_err());
            let mut nested = vec![0x05, 0x00];
            for _ in 0..=MAX_DEPTH {
                let len = nested.len();
                let mut outer = vec![0x30, 0x82, (len >> 8) as u8, len as u8];
                if len < 0x80 {
                    outer = vec![0x30, len as u8];
                } else if len < 0x100 {
                    outer = vec![0x30, 0x81, len as u8];
                }
                outer.extend(nested);
                nested = outer;
            }
            assert!(check(&nested).unwrap_err().to_string().contains("deeply"));
        }
    }
}

// ---------------------------------------------------------------------------
// Validation of a chain and key

/// Files holding a private key: owner only; the directory too.
const KEY_FILE_MODE: u32 = 0o600;
const KEY_DIR_MODE: u32 = 0o700;

/// A certificate chain and its private key that passed [`check_pair`]: the
/// leaf first, strictly valid DER, each signature verified where the
/// issuer is in the chain, and a TLS handshake completed with them.
#[derive(Debug)]
pub struct CheckedPair {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    certified: Arc<CertifiedKey>,
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
    pub fn to_pem(&self) -> Result<String, TlsError> {
        let mut out = String::new();
        for c in &self.certs {
            out.push_str(&pem_section("CERTIFICATE", c));
        }
        let (label, der) = match &self.key {
            PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
            _ => return Err(TlsError::BadKey("unsupported key format".into())),
        };
        out.push_str(&pem_section(label, der));
        Ok(out)
    }
}

/// Checks a certificate chain and its private key, both PEM (RFC 7468),
/// as a server would present them: the same checks as an upload, but no
/// clock (dates are not looked at). `cert_pem` and `key_pem` may also be
/// one text holding both. Never panics, whatever the bytes.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CheckedPair, TlsError> {
    let mut both = Vec::with_capacity(cert_pem.len() + key_pem.len() + 1);
    both.extend_from_slice(cert_pem);
    both.push(b'\n');
    both.extend_from_slice(key_pem);
    parse_bundle(&both, "the certificate and key", None)
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Parses one certificate for reading its fields; [`check_cert`] has the
/// strict checks.
fn parse_x509<'a>(der: &'a [u8], what: &str, index: usize) -> Result<X509Certificate<'a>, TlsError> {
    let bad = |reason: String| TlsError::BadCert { what: what.into(), index: index + 1, reason };
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
fn check_cert<'a>(der: &'a [u8], what: &str, index: usize) -> Result<X509Certificate<'a>, TlsError> {
    use x509_parser::validate::{Validator, VecLogger, X509StructureValidator};
    let bad = |reason: String| TlsError::BadCert { what: what.into(), index: index + 1, reason };
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
fn check_signatures(parsed: &[X509Certificate<'_>], what: &str) -> Result<(), TlsError> {
    for (index, c) in parsed.iter().enumerate() {
        let issuer = if c.issuer().as_raw() == c.subject().as_raw() { Some(index) } else { parsed.iter().position(|p| p.subject().as_raw() == c.issuer().as_raw()) };
        let Some(issuer) = issuer else { continue };
        // Any other error: an algorithm not verifiable here.
        if let Err(x509_parser::error::X509Error::SignatureVerificationError) = c.verify_signature(Some(parsed[issuer].public_key())) {
            return Err(TlsError::BadSignature { what: what.into(), index: index + 1, issuer: issuer + 1 });
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
fn parse_bundle(text: &[u8], what: &str, now: Option<i64>) -> Result<CheckedPair, TlsError> {
    if text.len() > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { size: text.len(), max: MAX_PEM_BYTES });
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(TlsError::Empty);
    }
    // rustls-pemfile skips sections it does not know, so an encrypted key
    // (PKCS#8 EncryptedPrivateKeyInfo, RFC 5958 3, or OpenSSL's legacy
    // Proc-Type header) would otherwise read as "no key".
    let s = String::from_utf8_lossy(text);
    if s.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || s.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::EncryptedKey);
    }
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for item in rustls_pemfile::read_all(&mut BufReader::new(text)) {
        match item.map_err(|e| TlsError::BadPem { what: what.into(), reason: e.to_string() })? {
            rustls_pemfile::Item::X509Certificate(c) => certs.push(c),
            // PKCS#8 (RFC 5208), PKCS#1 RSA (RFC 8017 A.1.2), SEC1 EC (RFC 5915).
            rustls_pemfile::Item::Pkcs8Key(k) => keys.push(PrivateKeyDer::Pkcs8(k)),
            rustls_pemfile::Item::Pkcs1Key(k) => keys.push(PrivateKeyDer::Pkcs1(k)),
            rustls_pemfile::Item::Sec1Key(k) => keys.push(PrivateKeyDer::Sec1(k)),
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(TlsError::NoCert(what.into()));
    }
    let key = match keys.len() {
        0 => return Err(TlsError::NoKey(what.into())),
        1 => keys.remove(0),
        count => return Err(TlsError::ManyKeys { what: what.into(), count }),
    };
    let parsed = certs.iter().enumerate().map(|(i, c)| check_cert(c, what, i)).collect::<Result<Vec<_>, _>>()?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey(e.to_string()))?;
    let spki = signing.public_key().ok_or_else(|| TlsError::BadKey("its public key cannot be derived".into()))?;
    let leaf = parsed.iter().position(|c| c.public_key().raw == spki.as_ref()).ok_or(TlsError::KeyMismatch)?;
    check_signatures(&parsed, what)?;
    if let Some(now) = now {
        let v = parsed[leaf].validity();
        let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
        if na < now {
            return Err(TlsError::Expired(rfc3339(na)));
        }
        if nb > now + NOT_BEFORE_SKEW_SECS {
            return Err(TlsError::NotYetValid(rfc3339(nb)));
        }
    }
    drop(parsed);
    let leaf_cert = certs.remove(leaf);
    certs.insert(0, leaf_cert);
    // rustls's own parser (webpki), as every rustls client reads it.
    rustls::server::ParsedCertificate::try_from(&certs[0]).map_err(|e| TlsError::BadCert { what: what.into(), index: leaf + 1, reason: format!("rustls cannot read it: {e}") })?;
    let certified = CertifiedKey::new(certs.clone(), signing);
    // The same comparison by rustls itself, as it will be used.
    certified.keys_match().map_err(|_| TlsError::KeyMismatch)?;
    let certified = Arc::new(certified);
    prove_handshake(&certified)?;
    Ok(CheckedPair { certs, key, certified })
}

/// Round trips at most in one in-memory handshake: TLS 1.3 needs 2 flights
/// each way and TLS 1.2 3; more means it is stuck.
const MAX_HANDSHAKE_ROUNDS: usize = 8;

/// Completes a TLS handshake in memory, TLS 1.3 (RFC 8446) and TLS 1.2
/// (RFC 5246), between a server presenting `key` and a client that takes
/// exactly that chain and checks the server's handshake signature with
/// the leaf's public key: the proof that clients can use the pair.
fn prove_handshake(key: &Arc<CertifiedKey>) -> Result<(), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (version, name) in [(&rustls::version::TLS13, "TLS 1.3"), (&rustls::version::TLS12, "TLS 1.2")] {
        let fail = |reason: String| TlsError::Handshake { version: name, reason };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[version]).map_err(|e| fail(e.to_string()))?.with_no_client_auth().with_cert_resolver(Arc::new(Fixed(key.clone())));
        let verifier = Arc::new(PresentedChain { chain: key.cert.clone(), provider: provider.clone() });
        let client = rustls::ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[version]).map_err(|e| fail(e.to_string()))?.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        let name_checked = rustls::pki_types::ServerName::try_from("certificate-check.invalid").map_err(|e| fail(e.to_string()))?;
        let mut server: rustls::Connection = rustls::ServerConnection::new(Arc::new(server)).map_err(|e| fail(e.to_string()))?.into();
        let mut client: rustls::Connection = rustls::ClientConnection::new(Arc::new(client), name_checked).map_err(|e| fail(e.to_string()))?.into();
        let mut rounds = 0;
        while client.is_handshaking() || server.is_handshaking() {
            rounds += 1;
            if rounds > MAX_HANDSHAKE_ROUNDS {
                return Err(fail("it did not complete".into()));
            }
            // The server's error says more than the alert the client gets.
            let to_server = pump(&mut client, &mut server);
            let to_client = pump(&mut server, &mut client);
            to_server.and(to_client).map_err(fail)?;
        }
    }
    Ok(())
}

/// Moves what `from` has to send into `to` and has `to` process it.
fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) -> Result<(), String> {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).map_err(|e| e.to_string())?;
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).map_err(|e| e.to_string())?;
        to.process_new_packets().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The server side of [`prove_handshake`].
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The client side of [`prove_handshake`]: the server must present the
/// chain given, readable by rustls (webpki), and sign the handshake with
/// the leaf's key (RFC 8446 4.4.3, RFC 5246 7.4.3).
#[derive(Debug)]
struct PresentedChain {
    chain: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PresentedChain {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], _: &rustls::pki_types::ServerName<'_>, _: &[u8], _: rustls::pki_types::UnixTime) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let same = self.chain.first() == Some(end_entity) && self.chain.len() == intermediates.len() + 1 && self.chain[1..].iter().zip(intermediates).all(|(a, b)| a == b);
        if !same {
            return Err(rustls::Error::General("the server presented another chain".into()));
        }
        rustls::server::ParsedCertificate::try_from(end_entity)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// RFC 7468 2: base64 lines of 64 characters between the labels.
fn pem_section(label: &str, der: &[u8]) -> String {
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

fn info_of(leaf: &CertificateDer<'_>, source: &str, path: &Path, now: i64) -> Result<CertInfo, TlsError> {
    let what = path.display().to_string();
    let c = parse_x509(leaf, &what, 0)?;
    let names = match c.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().filter_map(|n| if let GeneralName::DNSName(d) = n { Some(d.to_string()) } else { None }).collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(TlsError::BadCert { what, index: 1, reason: e.to_string() }),
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

fn expires_in_days(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(SECS_PER_DAY)
}

/// [`CertInfo::warning`] for a certificate of `source` that ends at `not_after`.
fn expiry_warning(source: &str, not_after: i64, now: i64) -> Option<String> {
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

/// Whether a self-signed certificate valid from `not_before` to
/// `not_after` is to be replaced at `now`: fewer than [`RENEW_BEFORE_DAYS`]
/// left, valid longer than [`MAX_SELF_SIGNED_DAYS`] in all, or not valid
/// yet (made while the clock was ahead).
fn self_signed_due(not_before: i64, not_after: i64, now: i64) -> bool {
    not_after - now < RENEW_BEFORE_DAYS * SECS_PER_DAY || not_after - not_before > MAX_SELF_SIGNED_DAYS * SECS_PER_DAY || not_before > now + NOT_BEFORE_SKEW_SECS
}

/// SHA-256 of a certificate's DER as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Seconds since the epoch as an RFC 3339 5.6 date-time in UTC, e.g.
/// `2026-11-29T23:44:08Z`.
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = crate::date::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", sod / 3600, sod / 60 % 60, sod % 60)
}


// ---------------------------------------------------------------------------
// The store's cluster certificate

/// One version of a certificate file: which file, and its identity, size
/// and times. Uploads replace the file by rename, so the inode changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    uploaded: bool,
    file: store::fsutil::FileStamp,
}

/// The certificate file in effect, opened, with its stamp and text.
struct Effective {
    path: PathBuf,
    source: &'static str,
    stamp: Stamp,
    text: Vec<u8>,
}

/// Opens the uploaded file, or else the self-signed one; None if neither
/// exists. The stamp is taken from the open file (on NFS, open revalidates
/// the name and attributes: close-to-open consistency), and the text is
/// read from the same file, so the two always agree.
fn read_effective(dir: &Path) -> Result<Option<Effective>, TlsError> {
    for (name, source) in [(UPLOADED, SOURCE_UPLOADED), (SELF_SIGNED, SOURCE_SELF_SIGNED)] {
        if let Some(e) = read_cert_file(&dir.join(name), source)? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// One certificate file, None if it does not exist.
fn read_cert_file(path: &Path, source: &'static str) -> Result<Option<Effective>, TlsError> {
    let err = |e| TlsError::Read { path: path.display().to_string(), source: e };
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let m = f.metadata().map_err(err)?;
    let stamp = Stamp { uploaded: source == SOURCE_UPLOADED, file: store::fsutil::FileStamp::of(&m) };
    let mut text = Vec::new();
    f.take(MAX_PEM_BYTES as u64 + 1).read_to_end(&mut text).map_err(err)?;
    Ok(Some(Effective { path: path.to_path_buf(), source, stamp, text }))
}

/// Like [`read_effective`], but makes the self-signed certificate when
/// neither file exists.
fn read_or_create(store: &Store) -> Result<Effective, TlsError> {
    let dir = store.tls_dir();
    if let Some(e) = read_effective(&dir)? {
        return Ok(e);
    }
    ensure_self_signed(store)?;
    read_effective(&dir)?.ok_or_else(|| TlsError::NoCert(dir.join(SELF_SIGNED).display().to_string()))
}

/// The cluster certificate currently in effect in the store (the uploaded
/// one if any, else the self-signed one, made now if there is none yet).
pub fn cert_info(store: &Store) -> Result<CertInfo, TlsError> {
    let e = read_or_create(store)?;
    let what = e.path.display().to_string();
    let b = parse_bundle(&e.text, &what, None)?;
    info_of(&b.certs[0], e.source, &e.path, now_secs())
}

/// What [`renew_if_due`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The certificate in effect has time left.
    NotDue,
    /// The self-signed certificate in effect was due and has been
    /// replaced by this one (by this call, or by another node just before).
    Renewed(CertInfo),
    /// The certificate in effect is an uploaded one and expires within
    /// [`RENEW_BEFORE_DAYS`]: only an operator can replace it.
    UploadedExpiring(CertInfo),
}

/// The leaf's validity (RFC 5280 4.1.2.5) in a PEM text, without the
/// other checks: for deciding whether it is due.
fn leaf_validity(text: &[u8], what: &str) -> Result<(i64, i64, String), TlsError> {
    let p = parse_bundle(text, what, None)?;
    let v = parse_x509(&p.certs[0], what, 0)?.validity().clone();
    Ok((v.not_before.timestamp(), v.not_after.timestamp(), p.fingerprint()))
}

/// Renews the self-signed cluster certificate if it is in effect and due
/// at `now` (see [`RENEW_BEFORE_DAYS`]); every node calls this from its
/// reloader, and the others follow the new file. An uploaded certificate
/// is never replaced; near its end it is reported instead.
///
/// Nodes do not race: the successor of a certificate is first linked to a
/// name derived from the old one's fingerprint (`self-signed.pem.next-…`),
/// which only the first node manages to create, and then every node that
/// finds the old certificate still in place moves that same successor in
/// (link to a temporary name, then rename over `self-signed.pem`). Each
/// file is complete before it gets a name, chain and key in one file, so
/// a crash at any step leaves either the old pair or the new one, and the
/// next call finishes the switch.
pub fn renew_if_due(store: &Store, now: i64) -> Result<Renewal, TlsError> {
    let dir = store.tls_dir();
    let e = read_or_create(store)?;
    if e.source == SOURCE_UPLOADED {
        // A broken upload is not in effect: the self-signed one is.
        if let Ok((_, not_after, _)) = leaf_validity(&e.text, &e.path.display().to_string()) {
            if not_after - now < RENEW_BEFORE_DAYS * SECS_PER_DAY {
                let b = parse_bundle(&e.text, &e.path.display().to_string(), None)?;
                return Ok(Renewal::UploadedExpiring(info_of(&b.certs[0], SOURCE_UPLOADED, &e.path, now)?));
            }
            return Ok(Renewal::NotDue);
        }
    }
    let path = dir.join(SELF_SIGNED);
    let what = path.display().to_string();
    let current = read_cert_file(&path, SOURCE_SELF_SIGNED)?.ok_or_else(|| TlsError::NoCert(what.clone()))?;
    // A self-signed file that cannot be used is replaced as well.
    let old_id = match leaf_validity(&current.text, &what) {
        Ok((nb, na, _)) if !self_signed_due(nb, na, now) => return Ok(Renewal::NotDue),
        Ok((_, _, fp)) => fp,
        Err(_) => fingerprint(&current.text),
    };
    let next = dir.join(format!("{SELF_SIGNED}.next-{}", old_id.replace(':', "").get(..32).unwrap_or_default()));
    let werr = |p: &Path| {
        let p = p.display().to_string();
        move |e| TlsError::Write { path: p, source: e }
    };
    if !next.exists() {
        let pem = generate_self_signed(store, now)?;
        parse_bundle(pem.as_bytes(), "the generated certificate", None)?;
        if !link_new(&dir, &pem, &next).map_err(werr(&next))? {
            tracing::info!("another node renews the self-signed certificate; following it");
        }
    }
    let successor = read_cert_file(&next, SOURCE_SELF_SIGNED)?.ok_or_else(|| TlsError::NoCert(next.display().to_string()))?;
    let checked = match parse_bundle(&successor.text, &next.display().to_string(), None) {
        Ok(c) => c,
        Err(err) => {
            // Not made by this program: out of the way, for the next try.
            let _ = fs::remove_file(&next);
            return Err(err);
        }
    };
    // Still the old certificate (another node may have finished already)?
    let again = read_cert_file(&path, SOURCE_SELF_SIGNED)?.map(|f| f.text);
    if again.as_deref() == Some(&current.text[..]) {
        let tmp = dir.join(format!(".{SELF_SIGNED}.{}.{:x}", std::process::id(), rand_suffix()));
        let install = || -> io::Result<()> {
            fs::hard_link(&next, &tmp)?;
            fs::rename(&tmp, &path)?;
            store::fsutil::sync_dir(&dir)
        };
        let r = install();
        let _ = fs::remove_file(&tmp);
        r.map_err(werr(&path))?;
        tracing::info!(sha256 = %checked.fingerprint(), "self-signed cluster certificate renewed");
    }
    // The successors of earlier certificates are done with.
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{SELF_SIGNED}.next-")) && entry.path() != next {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    refresh_registered(store);
    Ok(Renewal::Renewed(info_of(&checked.certs[0], SOURCE_SELF_SIGNED, &path, now)?))
}

/// Makes the store's TLS directory private (it holds private keys); best
/// effort, since another node may own it.
fn restrict_dir(dir: &Path) {
    if let Ok(m) = fs::metadata(dir) {
        if m.permissions().mode() & 0o077 != 0 {
            if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(KEY_DIR_MODE)) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot restrict the TLS directory to its owner");
            }
        }
    }
}

/// Writes a file holding a private key atomically (store::fsutil) and
/// restricts it to its owner.
fn save_key_file(path: &Path, text: &str) -> Result<(), TlsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let werr = |e| TlsError::Write { path: path.display().to_string(), source: e };
    store::fsutil::create_dir_durable(dir).map_err(werr)?;
    restrict_dir(dir);
    store::fsutil::write_atomic(path, text.as_bytes()).map_err(werr)?;
    fs::set_permissions(path, fs::Permissions::from_mode(KEY_FILE_MODE)).map_err(werr)
}

/// Checks a PEM text holding a certificate chain and its private key
/// (PKCS#8, PKCS#1 RSA or SEC1 EC; any order) and makes it the cluster
/// certificate (`<store>/tls/cluster.pem`). Bad input changes nothing.
/// Every node presents it within [`RELOAD_INTERVAL`]; a resolver of this
/// process at once.
pub fn upload(store: &Store, pem: &str) -> Result<CertInfo, TlsError> {
    let now = now_secs();
    let bundle = parse_bundle(pem.as_bytes(), "the uploaded text", Some(now))?;
    // The saved text is the checked one, re-encoded: what nodes read back
    // is exactly what passed.
    let path = store.tls_dir().join(UPLOADED);
    save_key_file(&path, &bundle.to_pem()?)?;
    tracing::info!(path = %path.display(), sha256 = %fingerprint(&bundle.certs[0]), "cluster certificate uploaded");
    refresh_registered(store);
    info_of(&bundle.certs[0], SOURCE_UPLOADED, &path, now)
}

/// Replaces the self-signed certificate with a new one for the store's
/// host name and domains (and localhost), and removes an uploaded one, so
/// that the new self-signed certificate is in effect.
pub fn regenerate(store: &Store) -> Result<CertInfo, TlsError> {
    let dir = store.tls_dir();
    let path = dir.join(SELF_SIGNED);
    let pem = generate_self_signed(store, now_secs())?;
    let bundle = parse_bundle(pem.as_bytes(), "the generated certificate", None)?;
    // The new self-signed file first, then the uploaded one goes: at every
    // moment one of them is there for the nodes to read.
    save_key_file(&path, &pem)?;
    let uploaded = dir.join(UPLOADED);
    match fs::remove_file(&uploaded) {
        Ok(()) => store::fsutil::sync_dir(&dir).map_err(|e| TlsError::Write { path: dir.display().to_string(), source: e })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(TlsError::Write { path: uploaded.display().to_string(), source: e }),
    }
    tracing::info!(path = %path.display(), sha256 = %fingerprint(&bundle.certs[0]), "new self-signed cluster certificate");
    refresh_registered(store);
    info_of(&bundle.certs[0], SOURCE_SELF_SIGNED, &path, now_secs())
}

// ---------------------------------------------------------------------------
// Hot reload

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    not_before: i64,
    not_after: i64,
    /// The version of the file last looked at (loaded, or found broken).
    stamp: Stamp,
    /// The version of the uploaded file last found unusable: while it is
    /// there, the self-signed file underneath is followed, if that is what
    /// is presented.
    broken_upload: Option<Stamp>,
}

/// Presents the store's cluster certificate and follows its changes.
/// Handshakes only take the current key from memory; the files are read by
/// [`ClusterCertResolver::check`], off the handshake path.
#[derive(Debug)]
pub struct ClusterCertResolver {
    current: RwLock<Loaded>,
    reloading: AtomicBool,
    /// The days left when an expiring upload was last warned about: one
    /// warning a day in the log.
    expiry_warned: Mutex<Option<i64>>,
}

impl ClusterCertResolver {
    /// Loads the cluster certificate, making the self-signed one if there
    /// is none. A broken uploaded file does not stop a node: it falls back
    /// to the self-signed certificate and says so.
    fn load(store: &Store) -> Result<Self, TlsError> {
        let e = read_or_create(store)?;
        let loaded = match Self::parse(&e) {
            Ok(l) => l,
            Err(err) if e.source == SOURCE_UPLOADED => {
                tracing::error!(path = %e.path.display(), error = %err, "the uploaded certificate is unusable; presenting the self-signed one");
                let path = ensure_self_signed(store)?;
                let f = read_cert_file(&path, SOURCE_SELF_SIGNED)?.ok_or_else(|| TlsError::NoCert(path.display().to_string()))?;
                Loaded { broken_upload: Some(e.stamp), ..Self::parse(&f)? }
            }
            Err(err) => return Err(err),
        };
        Ok(ClusterCertResolver { current: RwLock::new(loaded), reloading: AtomicBool::new(false), expiry_warned: Mutex::new(None) })
    }

    fn parse(e: &Effective) -> Result<Loaded, TlsError> {
        let what = e.path.display().to_string();
        let b = parse_bundle(&e.text, &what, None)?;
        let info = info_of(&b.certs[0], e.source, &e.path, now_secs())?;
        let v = parse_x509(&b.certs[0], &what, 0)?.validity().clone();
        Ok(Loaded { key: b.certified, info, not_before: v.not_before.timestamp(), not_after: v.not_after.timestamp(), stamp: e.stamp, broken_upload: None })
    }

    /// Re-reads the cluster certificate if its file changed since the last
    /// look (the uploaded file if present, else the self-signed one). True
    /// when a new certificate is now presented. A file that cannot be used
    /// leaves the current certificate in place; its error is returned once
    /// per version of the file. Blocking file I/O: call it off the async
    /// threads (spawn_blocking).
    pub fn check(&self, store: &Store) -> Result<bool, TlsError> {
        let dir = store.tls_dir();
        let mut e = match read_effective(&dir)? {
            Some(e) => e,
            // Both files deleted by hand: make a self-signed one, as at start.
            None => read_or_create(store)?,
        };
        let (stamp, broken_upload, presents_self_signed) = {
            let l = self.read();
            (l.stamp, l.broken_upload, l.info.source == SOURCE_SELF_SIGNED)
        };
        if e.source == SOURCE_UPLOADED && broken_upload == Some(e.stamp) {
            // The same unusable upload: keep presenting what we present,
            // following the self-signed file if that is it (it is renewed).
            match read_cert_file(&dir.join(SELF_SIGNED), SOURCE_SELF_SIGNED)? {
                Some(s) if presents_self_signed => e = s,
                _ => return Ok(false),
            }
        }
        if stamp == e.stamp {
            return Ok(false);
        }
        match Self::parse(&e) {
            Ok(l) => {
                let mut w = self.current.write().unwrap_or_else(|p| p.into_inner());
                let changed = l.info.sha256 != w.info.sha256;
                if changed {
                    tracing::info!(source = l.info.source, sha256 = %l.info.sha256, not_after = %l.info.not_after, "TLS certificate reloaded");
                }
                let broken_upload = if e.source == SOURCE_UPLOADED { None } else { w.broken_upload };
                *w = Loaded { broken_upload, ..l };
                Ok(changed)
            }
            Err(err) => {
                let mut w = self.current.write().unwrap_or_else(|p| p.into_inner());
                if e.source == SOURCE_UPLOADED {
                    w.broken_upload = Some(e.stamp);
                } else {
                    w.stamp = e.stamp;
                }
                Err(err)
            }
        }
    }

    /// Keeps the certificate in effect from running out, after a
    /// [`check`](Self::check): the self-signed one, when due, is renewed
    /// ([`renew_if_due`]) and presented; an uploaded one that expires
    /// within [`RENEW_BEFORE_DAYS`] is warned about in the log once a day.
    /// True when a renewed certificate is now presented. Blocking file I/O.
    pub fn maintain(&self, store: &Store, now: i64) -> Result<bool, TlsError> {
        let (source, not_before, not_after) = {
            let l = self.read();
            (l.info.source.clone(), l.not_before, l.not_after)
        };
        if source == SOURCE_SELF_SIGNED && self_signed_due(not_before, not_after, now) {
            let before = self.read().info.sha256.clone();
            if let Renewal::Renewed(_) = renew_if_due(store, now)? {
                // renew_if_due has had this process's resolver re-read it
                // already; this is for one outside the registry.
                self.check(store)?;
                return Ok(self.read().info.sha256 != before);
            }
        } else if source != SOURCE_SELF_SIGNED {
            if let Some(w) = expiry_warning(&source, not_after, now) {
                let days = expires_in_days(not_after, now);
                let mut warned = self.expiry_warned.lock().unwrap_or_else(|p| p.into_inner());
                if *warned != Some(days) {
                    tracing::warn!(not_after = %rfc3339(not_after), days, "{w}");
                    *warned = Some(days);
                }
            }
        }
        Ok(false)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The certificate and key presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }

    /// What is presented now.
    pub fn info(&self) -> CertInfo {
        let l = self.read();
        let mut info = l.info.clone();
        let now = now_secs();
        info.expires_in_days = expires_in_days(l.not_after, now);
        info.warning = expiry_warning(&info.source, l.not_after, now);
        info
    }
}

impl ResolvesServerCert for ClusterCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server side of every TLS service, presenting what `resolver` holds.
pub fn server_config(resolver: Arc<ClusterCertResolver>) -> Arc<rustls::ServerConfig> {
    Arc::new(rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver))
}

/// The resolvers of this process, one per store TLS directory, so that the
/// node and an admin page in the same process present the same certificate
/// and an upload through either takes effect at once in both.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<ClusterCertResolver>>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Weak<ClusterCertResolver>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The resolver of the store's cluster certificate, shared within the
/// process (created and loaded on first use). It follows changes of the
/// files once [`spawn_reloader`] runs for it (a serving node starts one).
pub fn cluster_resolver(store: &Store) -> Result<Arc<ClusterCertResolver>, TlsError> {
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let dir = store.tls_dir();
    if let Some(r) = reg.get(&dir).and_then(Weak::upgrade) {
        return Ok(r);
    }
    reg.retain(|_, w| w.strong_count() > 0);
    let r = Arc::new(ClusterCertResolver::load(store)?);
    reg.insert(dir, Arc::downgrade(&r));
    Ok(r)
}

/// After an upload or regeneration: the resolver of this process, if any,
/// presents the new certificate at once rather than at its next check.
fn refresh_registered(store: &Store) {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner()).get(&store.tls_dir()).and_then(Weak::upgrade);
    if let Some(r) = r {
        if let Err(e) = r.check(store) {
            tracing::warn!(error = %e, "the new cluster certificate is not in effect in this process");
        }
    }
}

/// Starts the task that calls [`ClusterCertResolver::check`] and
/// [`ClusterCertResolver::maintain`] every
/// [`RELOAD_INTERVAL`], on a blocking thread (the store may hang on NFS; a
/// check that hangs delays the next one, nothing else). At most one task
/// per resolver: false if one runs already, or if there is no tokio
/// runtime. The task ends when the resolver is dropped.
pub fn spawn_reloader(resolver: &Arc<ClusterCertResolver>, store: Arc<Store>) -> bool {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return false };
    if resolver.reloading.swap(true, Ordering::AcqRel) {
        return false;
    }
    let weak = Arc::downgrade(resolver);
    rt.spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let Some(r) = weak.upgrade() else { return };
            let s = store.clone();
            match tokio::task::spawn_blocking(move || r.check(&s).and_then(|changed| Ok(r.maintain(&s, now_secs())? || changed))).await {
                Ok(Err(e)) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!(error = %msg, "cannot reload the cluster certificate; presenting the previous one");
                        last_error = msg;
                    }
                }
                Ok(Ok(_)) => last_error.clear(),
                Err(e) => tracing::warn!(error = %e, "certificate check failed"),
            }
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("store"), "example.test", None).unwrap();
        (dir, store)
    }

    /// A certificate for `names`, issued by itself, and its key (P-256, PKCS#8).
    fn make(names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        make_with(names, |_| {})
    }

    fn make_with(names: &[&str], f: impl FnOnce(&mut rcgen::CertificateParams)) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        f(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, key)
    }

    fn uploaded_path(store: &Store) -> PathBuf {
        store.tls_dir().join(UPLOADED)
    }

    #[test]
    fn upload_valid_certificate_shows_its_names() {
        let (_d, store) = new_store();
        let before = cert_info(&store).unwrap();
        assert_eq!(before.source, SOURCE_SELF_SIGNED);
        let (cert, key) = make(&["mail.example.test", "mx.example.test"]);
        // Key first: any order is accepted.
        let info = upload(&store, &format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        assert_eq!(info.source, SOURCE_UPLOADED);
        assert_eq!(info.names, vec!["mail.example.test", "mx.example.test"]);
        assert_eq!(info.sha256, fingerprint(cert.der()));
        assert_eq!(info.sha256.len(), 32 * 3 - 1);
        assert!(info.expires_in_days > 365, "{info:?}");
        assert!(info.path.ends_with("tls/cluster.pem"), "{}", info.path);
        // The store now reports it, and it takes precedence over the self-signed one.
        assert_eq!(cert_info(&store).unwrap(), info);
        assert_ne!(info.sha256, before.sha256);
        let mode = fs::metadata(uploaded_path(&store)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, KEY_FILE_MODE);
    }

    #[test]
    fn text_from_a_web_form_with_crlf_and_extra_sections_is_accepted() {
        let (_d, store) = new_store();
        let (cert, key) = make(&["mail.example.test"]);
        // Browsers submit a textarea with CRLF line ends (the HTML standard,
        // textarea element); OpenSSL may add EC PARAMETERS and text around.
        let text = format!("subject=CN = mail.example.test\n{}-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}", cert.pem(), key.serialize_pem()).replace('\n', "\r\n");
        let info = upload(&store, &text).unwrap();
        assert_eq!(info.sha256, fingerprint(cert.der()));
    }

    #[test]
    fn the_leaf_is_the_certificate_of_the_key_whatever_the_order() {
        let (_d, store) = new_store();
        let (ca, _) = make(&["ca.example.test"]);
        let (leaf, key) = make(&["mail.example.test"]);
        let info = upload(&store, &format!("{}{}{}", ca.pem(), key.serialize_pem(), leaf.pem())).unwrap();
        assert_eq!(info.sha256, fingerprint(leaf.der()));
        // Saved leaf first (RFC 8446 4.4.2), then the rest of the chain.
        let saved = fs::read(uploaded_path(&store)).unwrap();
        let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(&saved[..])).collect::<Result<_, _>>().unwrap();
        assert_eq!(certs, vec![leaf.der().clone(), ca.der().clone()]);
    }

    #[test]
    fn rsa_pkcs1_and_pkcs8_keys_are_accepted() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        let (_d, store) = new_store();
        let rsa_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pkcs8 = rsa_key.to_pkcs8_der().unwrap();
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_bytes().into(), &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap().self_signed(&kp).unwrap();
        let pkcs1 = pem_section("RSA PRIVATE KEY", rsa_key.to_pkcs1_der().unwrap().as_bytes());
        let info = upload(&store, &format!("{}{pkcs1}", cert.pem())).unwrap();
        assert_eq!(info.sha256, fingerprint(cert.der()));
        let saved = String::from_utf8(fs::read(uploaded_path(&store)).unwrap()).unwrap();
        assert!(saved.contains("-----BEGIN RSA PRIVATE KEY-----"));
        let info = upload(&store, &format!("{}{}", pem_section("PRIVATE KEY", pkcs8.as_bytes()), cert.pem())).unwrap();
        assert_eq!(info.sha256, fingerprint(cert.der()));
    }

    #[test]
    fn a_key_that_does_not_match_is_refused_and_the_old_certificate_stays() {
        let (_d, store) = new_store();
        let (good, good_key) = make(&["mail.example.test"]);
        upload(&store, &format!("{}{}", good.pem(), good_key.serialize_pem())).unwrap();
        let saved = fs::read(uploaded_path(&store)).unwrap();
        let (other, _) = make(&["mail.example.test"]);
        let (_, wrong_key) = make(&["mail.example.test"]);
        let err = upload(&store, &format!("{}{}", other.pem(), wrong_key.serialize_pem())).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch), "{err}");
        assert_eq!(cert_info(&store).unwrap().sha256, fingerprint(good.der()));
        assert_eq!(fs::read(uploaded_path(&store)).unwrap(), saved);
    }

    #[test]
    fn bad_texts_are_refused_and_change_nothing() {
        let (_d, store) = new_store();
        let before = cert_info(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        let (expired, expired_key) = make_with(&["mail.example.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        });
        let (future, future_key) = make_with(&["mail.example.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2999, 1, 1);
            p.not_after = rcgen::date_time_ymd(3000, 1, 1);
        });
        let (_, key2) = make(&["x.test"]);
        let not_base64 = "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n";
        let not_x509 = pem_section("CERTIFICATE", b"this is not DER at all");
        let big = format!("{}{}{}", cert.pem(), key.serialize_pem(), "#".repeat(MAX_PEM_BYTES));
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        type Expect = fn(&TlsError) -> bool;
        let cases: Vec<(String, Expect)> = vec![
            (String::new(), |e| matches!(e, TlsError::Empty)),
            (" \r\n\t\n".into(), |e| matches!(e, TlsError::Empty)),
            ("hello, this is no certificate".into(), |e| matches!(e, TlsError::NoCert(_))),
            (key.serialize_pem(), |e| matches!(e, TlsError::NoCert(_))),
            (cert.pem(), |e| matches!(e, TlsError::NoKey(_))),
            (format!("{}{}{}", cert.pem(), key.serialize_pem(), key2.serialize_pem()), |e| matches!(e, TlsError::ManyKeys { count: 2, .. })),
            (format!("{not_base64}{}", key.serialize_pem()), |e| matches!(e, TlsError::BadPem { .. })),
            (format!("{not_x509}{}", key.serialize_pem()), |e| matches!(e, TlsError::BadCert { index: 1, .. })),
            (format!("{}{}", expired.pem(), expired_key.serialize_pem()), |e| matches!(e, TlsError::Expired(d) if d == "2001-01-01T00:00:00Z")),
            (format!("{}{}", future.pem(), future_key.serialize_pem()), |e| matches!(e, TlsError::NotYetValid(_))),
            (format!("{}{encrypted}", cert.pem()), |e| matches!(e, TlsError::EncryptedKey)),
            (big, |e| matches!(e, TlsError::TooLarge { max: MAX_PEM_BYTES, .. })),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let err = upload(&store, text).expect_err(&format!("case {i} was accepted"));
            assert!(expected(&err), "case {i}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
        assert!(!uploaded_path(&store).exists());
        assert_eq!(cert_info(&store).unwrap(), before);
    }

    #[test]
    fn regenerate_makes_a_new_self_signed_certificate_and_drops_the_upload() {
        let (_d, store) = new_store();
        let first = cert_info(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        upload(&store, &format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let info = regenerate(&store).unwrap();
        assert_eq!(info.source, SOURCE_SELF_SIGNED);
        assert_ne!(info.sha256, first.sha256);
        assert_ne!(info.sha256, fingerprint(cert.der()));
        assert_eq!(info.names, vec!["mail.example.test", "example.test", "localhost"]);
        assert_eq!(info.subject, "CN=mail.example.test");
        assert!(!uploaded_path(&store).exists());
        assert_eq!(cert_info(&store).unwrap(), info);
        let again = regenerate(&store).unwrap();
        assert_ne!(again.sha256, info.sha256);
    }

    /// `der` with the byte at `at` set to `value`.
    fn patched(der: &[u8], at: usize, value: u8) -> Vec<u8> {
        let mut d = der.to_vec();
        d[at] = value;
        d
    }

    /// Where `pattern` occurs in `der` for the `nth` time (from 0).
    fn find(der: &[u8], pattern: &[u8], nth: usize) -> usize {
        der.windows(pattern.len()).enumerate().filter(|(_, w)| *w == pattern).nth(nth).map(|(i, _)| i).expect("pattern in the certificate")
    }

    /// The OID of id-at-commonName (2.5.4.3, RFC 5280 A.1) with its tag and
    /// length; its first occurrence in a certificate is in the issuer (RFC
    /// 5280 4.1: the issuer comes before the subject).
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];

    fn pem_of(der: &[u8], key: &rcgen::KeyPair) -> String {
        format!("{}{}", pem_section("CERTIFICATE", der), key.serialize_pem())
    }

    #[test]
    fn damaged_certificates_are_refused_with_the_reason_and_change_nothing() {
        let (_d, store) = new_store();
        let before = cert_info(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        let der = cert.der().to_vec();
        let issuer_oid_len = find(&der, &CN_OID, 0) + 1;
        // A leaf issued by a CA, uploaded without the CA: its signature
        // cannot be checked here, only its encoding.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec!["ca.example.test".to_string()]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap().signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        let leaf_der = leaf.der().to_vec();
        // The CA-issued leaf itself is fine, alone or with its CA.
        assert_eq!(check_pair(leaf.pem().as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap().fingerprint(), fingerprint(&leaf_der));
        check_pair(format!("{}{}", leaf.pem(), ca_cert.pem()).as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap();
        let leaf_issuer_oid_len = find(&leaf_der, &CN_OID, 0) + 1;
        let mut bad_signature = der.clone();
        *bad_signature.last_mut().unwrap() ^= 1;
        // A letter of the subjectAltName's dNSName (RFC 5280 4.2.1.6).
        let bad_name = patched(&der, find(&der, b"mail.example.test", 0), b'n');
        let mut trailing = der.clone();
        trailing.extend_from_slice(b"\0\0garbage");
        let mut tampered_leaf_with_ca = pem_of(&patched(&leaf_der, find(&leaf_der, b"mail.example.test", 0), b'n'), &leaf_key);
        tampered_leaf_with_ca.push_str(&ca_cert.pem());
        let is_der = |e: &TlsError| matches!(e, TlsError::BadCert { index: 1, reason, .. } if reason.starts_with("invalid DER at byte"));
        type Expect = Box<dyn Fn(&TlsError) -> bool>;
        let cases: Vec<(&str, String, Expect)> = vec![
            ("the issuer OID's length 3 -> 2", pem_of(&patched(&der, issuer_oid_len, 2), &key), Box::new(is_der)),
            ("the issuer OID's length 3 -> 4", pem_of(&patched(&der, issuer_oid_len, 4), &key), Box::new(is_der)),
            ("the issuer OID's length 3 -> 0x83", pem_of(&patched(&der, issuer_oid_len, 0x83), &key), Box::new(is_der)),
            ("a CA-issued leaf's issuer OID length", pem_of(&patched(&leaf_der, leaf_issuer_oid_len, 2), &leaf_key), Box::new(is_der)),
            ("truncated", pem_of(&der[..der.len() - 10], &key), Box::new(is_der)),
            ("trailing garbage", pem_of(&trailing, &key), Box::new(is_der)),
            ("a damaged signature", pem_of(&bad_signature, &key), Box::new(|e| matches!(e, TlsError::BadSignature { index: 1, issuer: 1, .. }))),
            ("a changed name", pem_of(&bad_name, &key), Box::new(|e| matches!(e, TlsError::BadSignature { index: 1, issuer: 1, .. }))),
            ("a changed CA-issued leaf", tampered_leaf_with_ca, Box::new(|e| matches!(e, TlsError::BadSignature { index: 1, issuer: 2, .. }))),
            ("the key of another certificate", pem_of(&der, &leaf_key), Box::new(|e| matches!(e, TlsError::KeyMismatch))),
        ];
        for (what, text, expected) in &cases {
            let err = upload(&store, text).expect_err(&format!("{what}: accepted"));
            assert!(expected(&err), "{what}: unexpected error {err:?}");
            // The same from the pure check, with the key in its own text.
            assert!(check_pair(text.as_bytes(), b"").is_err(), "{what}");
            eprintln!("{what}: {err}");
        }
        assert!(!uploaded_path(&store).exists());
        assert_eq!(cert_info(&store).unwrap(), before);
    }

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

    /// Makes the store's self-signed certificate as if it had been made
    /// `age` seconds ago.
    fn age_self_signed(store: &Store, age: i64) -> String {
        let pem = generate_self_signed(store, now_secs() - age).unwrap();
        save_key_file(&store.tls_dir().join(SELF_SIGNED), &pem).unwrap();
        check_pair(pem.as_bytes(), b"").unwrap().fingerprint()
    }

    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn a_self_signed_certificate_near_its_end_is_renewed_and_presented() {
        let (_d, store) = new_store();
        let r = cluster_resolver(&store).unwrap();
        let fresh = presented(&r);
        let now = now_secs();
        assert_eq!(renew_if_due(&store, now).unwrap(), Renewal::NotDue);
        assert!(!r.maintain(&store, now).unwrap());
        // 20 days before the end: less than RENEW_BEFORE_DAYS left.
        let old = age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - 20 * SECS_PER_DAY);
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), old);
        assert_ne!(old, fresh);
        assert!(r.maintain(&store, now).unwrap(), "renewed");
        let renewed = presented(&r);
        assert_ne!(renewed, old);
        let info = r.info();
        assert_eq!(info, cert_info(&store).unwrap());
        assert!(info.expires_in_days >= 396, "{info:?}");
        // Done: nothing more to do, for this node or another.
        assert_eq!(renew_if_due(&store, now).unwrap(), Renewal::NotDue);
        assert!(!r.maintain(&store, now).unwrap());
        assert_eq!(presented(&r), renewed);
        let successors: Vec<_> = fs::read_dir(store.tls_dir()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".next-")).collect();
        assert_eq!(successors.len(), 1, "{successors:?}");

        // A certificate of an earlier version, valid for centuries, is
        // replaced at once; the successor of the previous renewal goes.
        let pem = {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap();
            p.not_before = rcgen::date_time_ymd(1975, 1, 1);
            p.not_after = rcgen::date_time_ymd(4096, 1, 1);
            format!("{}{}", key.serialize_pem(), p.self_signed(&key).unwrap().pem())
        };
        save_key_file(&store.tls_dir().join(SELF_SIGNED), &pem).unwrap();
        assert!(matches!(renew_if_due(&store, now).unwrap(), Renewal::Renewed(i) if i.expires_in_days >= 396));
        let successors: Vec<_> = fs::read_dir(store.tls_dir()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".next-")).collect();
        assert_eq!(successors.len(), 1);
    }

    #[test]
    fn nodes_renewing_at_once_agree_on_one_certificate() {
        let (_d, store) = new_store();
        age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - 5 * SECS_PER_DAY);
        let now = now_secs();
        // Two nodes (threads) at once, and a third later: all end with the same certificate.
        let results: Vec<_> = std::thread::scope(|s| {
            let a = s.spawn(|| renew_if_due(&store, now).unwrap());
            let b = s.spawn(|| renew_if_due(&store, now).unwrap());
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let mut fps = Vec::new();
        for r in results {
            match r {
                Renewal::Renewed(i) => fps.push(i.sha256),
                Renewal::NotDue => {}
                other => panic!("{other:?}"),
            }
        }
        let now_in_effect = cert_info(&store).unwrap().sha256;
        assert!(!fps.is_empty());
        assert!(fps.iter().all(|f| *f == now_in_effect), "{fps:?} vs {now_in_effect}");
        assert_eq!(renew_if_due(&store, now).unwrap(), Renewal::NotDue);

        // A crash between deciding the successor and moving it in: the
        // next call finishes the switch with the same successor.
        let old = age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - 5 * SECS_PER_DAY);
        let next = store.tls_dir().join(format!("{SELF_SIGNED}.next-{}", &old.replace(':', "")[..32]));
        let successor = generate_self_signed(&store, now).unwrap();
        save_key_file(&next, &successor).unwrap();
        let Renewal::Renewed(info) = renew_if_due(&store, now).unwrap() else { panic!("not renewed") };
        assert_eq!(info.sha256, check_pair(successor.as_bytes(), b"").unwrap().fingerprint());
        assert_eq!(cert_info(&store).unwrap().sha256, info.sha256);
    }

    #[test]
    fn an_uploaded_certificate_near_its_end_is_reported_not_replaced() {
        let (_d, store) = new_store();
        let (cert, key) = make_with(&["mail.example.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2999, 1, 1);
        });
        let uploaded = upload(&store, &format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        assert_eq!(uploaded.warning, None);
        let r = cluster_resolver(&store).unwrap();
        // 10 days before its end.
        let na = parse_x509(cert.der(), "test", 0).unwrap().validity().not_after.timestamp();
        let late = na - 10 * SECS_PER_DAY;
        let Renewal::UploadedExpiring(info) = renew_if_due(&store, late).unwrap() else { panic!("not reported") };
        assert_eq!(info.expires_in_days, 10);
        assert!(info.warning.as_deref().unwrap_or_default().contains("expires in 10 days"), "{info:?}");
        assert!(!r.maintain(&store, late).unwrap());
        assert_eq!(presented(&r), fingerprint(cert.der()));
        assert_eq!(cert_info(&store).unwrap().sha256, fingerprint(cert.der()));
        assert!(expiry_warning(SOURCE_UPLOADED, na, na + 1).unwrap().contains("expired"));
        assert_eq!(expiry_warning(SOURCE_SELF_SIGNED, na, late), None);
    }

    #[test]
    fn a_damaged_file_on_disk_is_not_presented_and_the_node_keeps_the_old_one() {
        let (_d, store) = new_store();
        let r = cluster_resolver(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        upload(&store, &format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        assert_eq!(presented(&r), fingerprint(cert.der()));
        // Another node (or a hand) writes a damaged pair into the store.
        let (other, other_key) = make(&["mail.example.test"]);
        let der = other.der().to_vec();
        let damaged = pem_of(&patched(&der, find(&der, &CN_OID, 0) + 1, 2), &other_key);
        store::fsutil::write_atomic(&uploaded_path(&store), damaged.as_bytes()).unwrap();
        let err = r.check(&store).unwrap_err();
        assert!(err.to_string().contains("invalid DER"), "{err}");
        assert_eq!(presented(&r), fingerprint(cert.der()));
        assert!(!r.check(&store).unwrap());
        // A node starting now presents the self-signed certificate, and
        // follows its renewal while the damaged upload stays.
        registry().lock().unwrap().clear();
        drop(r);
        let r = cluster_resolver(&store).unwrap();
        assert_eq!(r.info().source, SOURCE_SELF_SIGNED);
        let aged = age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - SECS_PER_DAY);
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), aged);
        assert!(r.maintain(&store, now_secs()).unwrap());
        assert_ne!(presented(&r), aged);
        assert_eq!(r.info().source, SOURCE_SELF_SIGNED);
    }

    #[test]
    fn configured_files_with_a_damaged_certificate_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        fs::write(&k, key.serialize_pem()).unwrap();
        fs::write(&c, cert.pem()).unwrap();
        let (certs, _) = load_files(&c, &k).unwrap();
        assert_eq!(fingerprint(&certs[0]), fingerprint(cert.der()));
        let der = cert.der().to_vec();
        fs::write(&c, pem_section("CERTIFICATE", &patched(&der, find(&der, &CN_OID, 0) + 1, 2))).unwrap();
        let err = load_files(&c, &k).unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
        assert!(matches!(err, TlsError::BadCert { .. }), "{err}");
    }

    fn presented(r: &ClusterCertResolver) -> String {
        fingerprint(r.current().end_entity_cert().unwrap())
    }

    #[test]
    fn the_resolver_follows_changes_of_the_files() {
        let (_d, store) = new_store();
        let r = cluster_resolver(&store).unwrap();
        assert!(Arc::ptr_eq(&r, &cluster_resolver(&store).unwrap()), "one resolver per store in a process");
        let self_signed_fp = cert_info(&store).unwrap().sha256;
        assert_eq!(presented(&r), self_signed_fp);
        assert!(!r.check(&store).unwrap(), "nothing changed yet");

        // Another node uploads: the file changes under us.
        let (cert, key) = make(&["mail.example.test"]);
        store::fsutil::write_atomic(&uploaded_path(&store), format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).unwrap();
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), fingerprint(cert.der()));
        assert_eq!(r.info().source, SOURCE_UPLOADED);
        assert!(!r.check(&store).unwrap());

        // A broken file: the error once, the previous certificate stays.
        store::fsutil::write_atomic(&uploaded_path(&store), b"garbage").unwrap();
        assert!(r.check(&store).is_err());
        assert!(!r.check(&store).unwrap(), "the same broken file is reported once");
        assert_eq!(presented(&r), fingerprint(cert.der()));

        // The uploaded file removed: back to the self-signed one.
        fs::remove_file(uploaded_path(&store)).unwrap();
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), self_signed_fp);

        // An upload and a regeneration in this process take effect at once.
        let (cert2, key2) = make(&["mail.example.test"]);
        upload(&store, &format!("{}{}", cert2.pem(), key2.serialize_pem())).unwrap();
        assert_eq!(presented(&r), fingerprint(cert2.der()));
        let fresh = regenerate(&store).unwrap();
        assert_eq!(presented(&r), fresh.sha256);
        assert_eq!(r.info(), cert_info(&store).unwrap());
    }

    #[test]
    fn a_broken_upload_on_disk_falls_back_to_the_self_signed_certificate() {
        let (_d, store) = new_store();
        let self_signed_fp = cert_info(&store).unwrap().sha256;
        store::fsutil::write_atomic(&uploaded_path(&store), b"garbage").unwrap();
        assert!(cert_info(&store).is_err(), "cert_info tells the truth about the store");
        let r = cluster_resolver(&store).unwrap();
        assert_eq!(presented(&r), self_signed_fp);
    }

    #[test]
    fn dates_and_days() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_995_848), "2026-11-29T23:44:08Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(expires_in_days(10 * SECS_PER_DAY, 0), 10);
        assert_eq!(expires_in_days(0, 1), -1);
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
