//! DKIM keys in the store: generation, the active selector, and the TXT
//! record to publish.
//!
//! A key is generated once and never rewritten: rotation is a new selector
//! (RFC 6376 3.1: selectors exist so that a domain can have several keys),
//! published in DNS first and made active after that with [`activate`].

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::{io_err, Error};

/// RFC 1035 3.3.14: a TXT record is a sequence of character-strings of at
/// most 255 octets each; a longer DKIM record is split across several
/// (RFC 6376 3.6.2.2: a verifier joins them without anything between).
pub const MAX_TXT_STRING: usize = 255;
/// RFC 8301 3.2: signers MUST use RSA keys of at least 1024 bits and
/// SHOULD use at least 2048.
const RSA_BITS: usize = 2048;
/// The shortest RSA key accepted from the store. RFC 8301 3.2 lets
/// signers use 1024 bits but says they SHOULD use 2048, and ring signs
/// only with 2048 bits or more; a shorter key is refused when it is read,
/// not when the first message is signed.
const MIN_RSA_BITS: usize = 2048;
/// RFC 1035 2.3.4: labels are at most 63 octets.
const MAX_LABEL: usize = 63;
/// RFC 1035 2.3.4: names are at most 255 octets on the wire, which is 253
/// characters written out without the final dot.
const MAX_NAME: usize = 253;
/// A 4096-bit RSA key is about 3.3 KB in PEM; anything far larger is not a key.
const MAX_KEY_FILE: u64 = 16 * 1024;
/// The active-selector file holds one selector.
const MAX_SELECTOR_FILE: u64 = 512;

const DKIM_DIR: &str = store::layout::DKIM;
const ACTIVE_FILE: &str = "selector";
const KEY_SUFFIX: &str = ".pem";
/// RFC 7468 10: the PEM label of a PKCS#8 private key.
const PEM_LABEL: &str = "PRIVATE KEY";
/// RFC 7468 2: base64 lines of 64 characters.
const PEM_LINE: usize = 64;
/// Keys are secrets: only the owner may read them.
const KEY_MODE: u32 = 0o600;
/// Every file and directory in the store is its owner's alone (the store's
/// own rule, `store::fsutil::FILE_MODE` / `DIR_MODE`).
const DIR_MODE: u32 = 0o700;
const SELECTOR_MODE: u32 = 0o600;

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RFC 6376 3.3.1, with a 2048-bit key (RFC 8301 3.2).
    RsaSha256,
    /// RFC 8463 3.
    Ed25519Sha256,
}

impl Algorithm {
    /// The a= tag value (RFC 6376 3.5, RFC 8463 3).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The k= tag value of the key record (RFC 6376 3.6.1, RFC 8463 4).
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Accepts the a= names and the k= names: `rsa-sha256`, `rsa`,
    /// `ed25519-sha256`, `ed25519`.
    fn from_str(s: &str) -> Result<Algorithm, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rsa" | "rsa-sha256" => Ok(Algorithm::RsaSha256),
            "ed25519" | "ed25519-sha256" => Ok(Algorithm::Ed25519Sha256),
            _ => Err(Error::BadAlgorithm(s.to_string())),
        }
    }
}

/// A key's public half as it is published in DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKeyInfo {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// RFC 6376 3.6.2.1: `<selector>._domainkey.<domain>`, without the final dot.
    pub dns_name: String,
    /// The TXT record: `v=DKIM1; k=rsa; p=<base64>` (RFC 6376 3.6.1).
    pub dns_value: String,
    /// Whether this selector is the one that signs now.
    pub active: bool,
}

impl DkimKeyInfo {
    /// [`dns_value`](Self::dns_value) cut into character-strings of at most
    /// [`MAX_TXT_STRING`] octets, for a TXT record's RDATA.
    pub fn txt_strings(&self) -> Vec<&str> {
        // The value is ASCII (tags and base64), so any cut is on a char boundary.
        let mut rest = self.dns_value.as_str();
        let mut out = Vec::with_capacity(rest.len() / MAX_TXT_STRING + 1);
        while rest.len() > MAX_TXT_STRING {
            let (head, tail) = rest.split_at(MAX_TXT_STRING);
            out.push(head);
            rest = tail;
        }
        out.push(rest);
        out
    }

    /// The record as a zone-file line (RFC 1035 5.1), for a person to paste.
    pub fn zone_line(&self) -> String {
        let strings: Vec<String> = self.txt_strings().iter().map(|s| format!("\"{s}\"")).collect();
        format!("{}. IN TXT ( {} )", self.dns_name, strings.join(" "))
    }
}

/// A private key read from the store, with what is derived from it.
pub(crate) struct StoredKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    pub path: PathBuf,
    pub private: PrivateKeyDer<'static>,
    /// RSA: the DER SubjectPublicKeyInfo (RFC 6376 3.6.1 with erratum 3017;
    /// what every verifier accepts). Ed25519: the raw 32-byte key (RFC 8463 4).
    pub public: Vec<u8>,
}

impl StoredKey {
    pub(crate) fn info(&self, active: bool) -> DkimKeyInfo {
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public);
        DkimKeyInfo {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            algorithm: self.algorithm,
            dns_name: dns_name(&self.selector, &self.domain),
            // RFC 6376 3.6.1: v= first; k= defaults to rsa but is written
            // out so that the record says what it is.
            dns_value: format!("v=DKIM1; k={}; p={p}", self.algorithm.key_type()),
            active,
        }
    }
}

/// Generates a key for `domain` under `selector`, writes it to
/// `<store>/dkim/<domain>/<selector>.pem` (mode 0600, atomically, never over
/// an existing key), and makes it the active selector if the domain has
/// none yet. Returns the TXT record to publish.
///
/// A domain that already signs keeps its active selector: the new key must
/// be in DNS before mail is signed with it, so the switch is a separate
/// step, [`activate`].
pub fn keygen(store_root: &Path, domain: &str, selector: &str, alg: Algorithm) -> Result<DkimKeyInfo, Error> {
    let domain = normalize_domain(domain)?;
    let selector = normalize_selector(selector, &domain)?;
    let dir = domain_dir(store_root, &domain);
    let path = key_path(&dir, &selector);
    if path.exists() {
        return Err(Error::KeyExists { domain, selector, path });
    }
    let pkcs8 = match alg {
        Algorithm::RsaSha256 => generate_rsa()?,
        Algorithm::Ed25519Sha256 => generate_ed25519()?,
    };
    let key = parse_key(&domain, &selector, &path, PrivateKeyDer::Pkcs8(pkcs8.clone().into()))?;

    create_private_dir(&store_root.join(DKIM_DIR))?;
    create_private_dir(&dir)?;
    match create_file_exclusive(&path, pem_encode(&pkcs8).as_bytes(), KEY_MODE) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(Error::KeyExists { domain, selector, path }),
        Err(e) => return Err(io_err(&path)(e)),
    }
    let active = match read_active(&dir)? {
        Some(current) => current == selector,
        None => {
            write_active(&dir, &selector)?;
            true
        }
    };
    tracing::info!(domain = %domain, selector = %selector, algorithm = %alg, active, "DKIM key generated");
    Ok(key.info(active))
}

/// Makes `selector` the one that signs `domain`'s mail. Its key must exist
/// (and should be published in DNS already).
pub fn activate(store_root: &Path, domain: &str, selector: &str) -> Result<DkimKeyInfo, Error> {
    let domain = normalize_domain(domain)?;
    let selector = normalize_selector(selector, &domain)?;
    let dir = domain_dir(store_root, &domain);
    let key = read_key(&dir, &domain, &selector)?;
    write_active(&dir, &selector)?;
    Ok(key.info(true))
}

/// The TXT record of `domain`'s active key, or None when the domain has no
/// DKIM key.
pub fn txt_record(store_root: &Path, domain: &str) -> Result<Option<DkimKeyInfo>, Error> {
    Ok(load_active(store_root, domain)?.map(|k| k.info(true)))
}

/// The active key of `domain`, or None when the domain has no DKIM key.
/// A selector file naming a missing or broken key is an error, not None:
/// mail would go out unsigned without anyone noticing.
pub(crate) fn load_active(store_root: &Path, domain: &str) -> Result<Option<StoredKey>, Error> {
    let domain = normalize_domain(domain)?;
    let dir = domain_dir(store_root, &domain);
    let Some(selector) = read_active(&dir)? else {
        return Ok(None);
    };
    read_key(&dir, &domain, &selector).map(Some)
}

fn domain_dir(store_root: &Path, domain: &str) -> PathBuf {
    store_root.join(DKIM_DIR).join(domain)
}

fn key_path(dir: &Path, selector: &str) -> PathBuf {
    dir.join(format!("{selector}{KEY_SUFFIX}"))
}

fn dns_name(selector: &str, domain: &str) -> String {
    // RFC 6376 3.6.2.1
    format!("{selector}._domainkey.{domain}")
}

/// A domain name made of LDH labels (RFC 1035 2.3.1, RFC 5321 4.1.2
/// `Domain`), lower-cased, without a final dot. Anything else (a '/', "..",
/// an empty label, non-ASCII) is refused, which also keeps the name safe as
/// a directory name. Internationalised domains are given as A-labels.
pub(crate) fn normalize_domain(domain: &str) -> Result<String, Error> {
    let d = domain.trim().to_ascii_lowercase();
    let d = d.strip_suffix('.').unwrap_or(&d).to_string();
    if d.len() > MAX_NAME || !valid_ldh_name(&d) {
        return Err(Error::BadDomain(domain.to_string()));
    }
    Ok(d)
}

/// RFC 6376 3.1: `selector = sub-domain *( "." sub-domain )`, where
/// sub-domain is an LDH label (RFC 5321 4.1.2). Lower-cased: DNS names
/// compare case-insensitively (RFC 4343), and the selector is a file name.
pub(crate) fn normalize_selector(selector: &str, domain: &str) -> Result<String, Error> {
    let s = selector.trim().to_ascii_lowercase();
    if !valid_ldh_name(&s) || dns_name(&s, domain).len() > MAX_NAME {
        return Err(Error::BadSelector(selector.to_string()));
    }
    Ok(s)
}

fn valid_ldh_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= MAX_LABEL
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first() != Some(&b'-')
                && b.last() != Some(&b'-')
        })
}

fn generate_rsa() -> Result<Vec<u8>, Error> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS).map_err(|e| Error::KeyGeneration(e.to_string()))?;
    let der = key.to_pkcs8_der().map_err(|e| Error::KeyGeneration(e.to_string()))?;
    Ok(der.as_bytes().to_vec())
}

fn generate_ed25519() -> Result<Vec<u8>, Error> {
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| Error::KeyGeneration(e.to_string()))?;
    Ok(doc.as_ref().to_vec())
}

/// Recognises the key's algorithm and derives its public half. PKCS#8 of
/// either kind, and the PKCS#1 "RSA PRIVATE KEY" that older tools such as
/// opendkim-genkey write, so existing keys can be moved in.
fn parse_key(domain: &str, selector: &str, path: &Path, private: PrivateKeyDer<'static>) -> Result<StoredKey, Error> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use rsa::traits::PublicKeyParts;

    let bad = |reason: String| Error::BadKey { path: path.to_path_buf(), reason };
    let (algorithm, public) = match &private {
        PrivateKeyDer::Pkcs8(der) => {
            let der = der.secret_pkcs8_der();
            if let Ok(pair) = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                use ring::signature::KeyPair;
                (Algorithm::Ed25519Sha256, pair.public_key().as_ref().to_vec())
            } else {
                let rsa = rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|_| bad("not an RSA or Ed25519 PKCS#8 private key".into()))?;
                (Algorithm::RsaSha256, rsa_public(&rsa).map_err(bad)?)
            }
        }
        PrivateKeyDer::Pkcs1(der) => {
            let rsa = rsa::RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der()).map_err(|e| bad(format!("bad PKCS#1 RSA key: {e}")))?;
            (Algorithm::RsaSha256, rsa_public(&rsa).map_err(bad)?)
        }
        _ => return Err(bad("only RSA and Ed25519 keys are used for DKIM".into())),
    };

    fn rsa_public(key: &rsa::RsaPrivateKey) -> Result<Vec<u8>, String> {
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(format!("a {bits}-bit RSA key is too short (at least {MIN_RSA_BITS} bits, RFC 8301 3.2)"));
        }
        let spki = key.to_public_key().to_public_key_der().map_err(|e| e.to_string())?;
        Ok(spki.as_bytes().to_vec())
    }

    Ok(StoredKey { domain: domain.to_string(), selector: selector.to_string(), algorithm, path: path.to_path_buf(), private, public })
}

fn read_key(dir: &Path, domain: &str, selector: &str) -> Result<StoredKey, Error> {
    let path = key_path(dir, selector);
    let pem = match read_bounded(&path, MAX_KEY_FILE) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(Error::BadKey { path, reason: format!("larger than {MAX_KEY_FILE} bytes") }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NoSuchKey { domain: domain.to_string(), selector: selector.to_string(), path })
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    if let Ok(meta) = fs::metadata(&path) {
        if meta.mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777), "DKIM private key is readable by others; chmod 600 it");
        }
    }
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| Error::BadKey { path: path.clone(), reason: format!("no PEM private key: {e}") })?;
    parse_key(domain, selector, &path, private)
}

/// The active selector, or None when there is none (no file, or no
/// directory for the domain at all).
fn read_active(dir: &Path) -> Result<Option<String>, Error> {
    let path = dir.join(ACTIVE_FILE);
    let bytes = match read_bounded(&path, MAX_SELECTOR_FILE) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(Error::BadKey { path, reason: "the selector file is too large".into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let text = String::from_utf8_lossy(&bytes);
    let name = text.trim();
    if name.is_empty() {
        return Ok(None);
    }
    // The file names a file beside it: only a valid selector may be used.
    if !valid_ldh_name(name) {
        return Err(Error::BadSelector(name.to_string()));
    }
    Ok(Some(name.to_string()))
}

fn write_active(dir: &Path, selector: &str) -> Result<(), Error> {
    let path = dir.join(ACTIVE_FILE);
    replace_file(&path, format!("{selector}\n").as_bytes(), SELECTOR_MODE).map_err(io_err(&path))
}

/// Reads at most `max` bytes; Ok(None) when the file is larger.
fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut buf)?;
    Ok(if buf.len() as u64 > max { None } else { Some(buf) })
}

/// RFC 7468 2: PEM with base64 lines of 64 characters.
fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    // base64 is ASCII, so chunks of bytes are valid strings.
    for line in b64.as_bytes().chunks(PEM_LINE) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

/// Creates a directory with `DIR_MODE` if it is missing (its parent must
/// exist: a mistyped store path is an error, not a new tree) and fsyncs the
/// parent so the entry is durable.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    // The mode is masked by the umask: set again exactly.
    match DirBuilder::new().mode(DIR_MODE).create(dir).and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    }
    let parent = parent_of(dir);
    sync_dir(parent).map_err(io_err(parent))
}

/// Writes `contents` to `path` with `mode`, only if `path` does not exist.
/// The data goes to a temporary file first, fsynced, and is then hard-linked
/// into place: link(2) fails if the name exists, so two writers cannot
/// overwrite each other, and a reader never sees a half-written key.
fn create_file_exclusive(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, contents, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_dir(parent_of(path))
}

/// Replaces `path` with `contents` atomically (temporary file, fsync,
/// rename, fsync of the directory).
fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, contents, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_of(path))
}

/// A new file beside `path`, created with `mode` from the start (no moment
/// at which a key is readable by others), written and fsynced.
fn write_temp(path: &Path, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent_of(path).join(format!(".{name}.tmp.{}.{:016x}", std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The umask may have taken bits off: exactly `mode`, before the
        // file is linked or renamed into view.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_or_refused() {
        assert_eq!(normalize_domain("Example.TEST.").unwrap(), "example.test");
        assert_eq!(normalize_domain(" mail-1.example.test ").unwrap(), "mail-1.example.test");
        for bad in [
            "", ".", "..", "a..b", "../etc", "a/b", "/abs", "example.test/..", "a b.test", "-a.test", "a-.test",
            "exa_mple.test", "bücher.test", "a\0b", "a\\b", &"x".repeat(64), &format!("{}.test", "a.".repeat(130)),
        ] {
            assert!(matches!(normalize_domain(bad), Err(Error::BadDomain(_))), "{bad:?} must be refused");
        }
    }

    #[test]
    fn selectors_are_normalised_or_refused() {
        assert_eq!(normalize_selector("Sel2026", "example.test").unwrap(), "sel2026");
        assert_eq!(normalize_selector("mail.2026", "example.test").unwrap(), "mail.2026");
        for bad in ["", "..", "../x", "a/b", "x.", ".x", "sel ector", "s_el", &"a".repeat(64)] {
            assert!(matches!(normalize_selector(bad, "example.test"), Err(Error::BadSelector(_))), "{bad:?} must be refused");
        }
        // The whole record name must fit in a DNS name.
        let long_domain = format!("{}.test", vec!["a".repeat(60); 3].join("."));
        assert!(normalize_selector(&"s".repeat(63), &long_domain).is_err());
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("rsa".parse::<Algorithm>().unwrap(), Algorithm::RsaSha256);
        assert_eq!("RSA-SHA256".parse::<Algorithm>().unwrap(), Algorithm::RsaSha256);
        assert_eq!("ed25519".parse::<Algorithm>().unwrap(), Algorithm::Ed25519Sha256);
        assert_eq!("ed25519-sha256".parse::<Algorithm>().unwrap(), Algorithm::Ed25519Sha256);
        assert!(matches!("rsa-sha1".parse::<Algorithm>(), Err(Error::BadAlgorithm(_))));
    }

    #[test]
    fn keygen_writes_a_private_key_and_activates_the_first() {
        let store = tempfile::tempdir().unwrap();
        let info = keygen(store.path(), "Example.Test", "ed1", Algorithm::Ed25519Sha256).unwrap();
        assert_eq!(info.domain, "example.test");
        assert_eq!(info.dns_name, "ed1._domainkey.example.test");
        assert!(info.dns_value.starts_with("v=DKIM1; k=ed25519; p="), "{}", info.dns_value);
        assert!(info.active);

        let dir = store.path().join("dkim/example.test");
        let key = dir.join("ed1.pem");
        let meta = fs::metadata(&key).unwrap();
        assert_eq!(meta.mode() & 0o777, KEY_MODE, "the key is readable by its owner only");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, DIR_MODE);
        assert_eq!(fs::metadata(store.path().join("dkim")).unwrap().mode() & 0o777, DIR_MODE);
        assert!(fs::read_to_string(&key).unwrap().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(fs::read_to_string(dir.join("selector")).unwrap(), "ed1\n");
        // Nothing but the key and the selector: no temporary files left.
        let mut names: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["ed1.pem", "selector"]);

        assert_eq!(txt_record(store.path(), "example.test").unwrap(), Some(info.clone()));
        assert_eq!(txt_record(store.path(), "other.test").unwrap(), None);
    }

    #[test]
    fn an_existing_key_is_never_overwritten() {
        let store = tempfile::tempdir().unwrap();
        keygen(store.path(), "example.test", "s1", Algorithm::Ed25519Sha256).unwrap();
        let before = fs::read(store.path().join("dkim/example.test/s1.pem")).unwrap();
        let again = keygen(store.path(), "example.test", "S1", Algorithm::Ed25519Sha256);
        assert!(matches!(again, Err(Error::KeyExists { .. })), "{again:?}");
        assert_eq!(fs::read(store.path().join("dkim/example.test/s1.pem")).unwrap(), before);

        // The exclusive create itself refuses an existing name, and leaves no
        // temporary file behind.
        let path = store.path().join("dkim/example.test/s1.pem");
        let e = create_file_exclusive(&path, b"other", KEY_MODE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::read_dir(store.path().join("dkim/example.test")).unwrap().count(), 2);
    }

    #[test]
    fn a_second_key_waits_for_activate() {
        let store = tempfile::tempdir().unwrap();
        keygen(store.path(), "example.test", "old", Algorithm::Ed25519Sha256).unwrap();
        let new = keygen(store.path(), "example.test", "new", Algorithm::Ed25519Sha256).unwrap();
        assert!(!new.active, "a new key must be published before it signs");
        assert_eq!(txt_record(store.path(), "example.test").unwrap().unwrap().selector, "old");

        let now = activate(store.path(), "example.test", "new").unwrap();
        assert!(now.active);
        assert_eq!(now.dns_value, new.dns_value);
        assert_eq!(txt_record(store.path(), "example.test").unwrap().unwrap().selector, "new");

        let missing = activate(store.path(), "example.test", "nokey");
        assert!(matches!(missing, Err(Error::NoSuchKey { .. })), "{missing:?}");
    }

    #[test]
    fn bad_names_never_touch_the_file_system() {
        let store = tempfile::tempdir().unwrap();
        for (domain, selector) in [("../evil", "s"), ("a/b", "s"), ("example.test", "../s"), ("example.test", "a/b"), ("..", "s")] {
            let r = keygen(store.path(), domain, selector, Algorithm::Ed25519Sha256);
            assert!(matches!(r, Err(Error::BadDomain(_) | Error::BadSelector(_))), "{domain} {selector}: {r:?}");
            assert!(txt_record(store.path(), domain).is_err() || domain == "example.test");
        }
        assert_eq!(fs::read_dir(store.path()).unwrap().count(), 0, "nothing was created");
    }

    #[test]
    fn keygen_needs_an_existing_store() {
        let store = tempfile::tempdir().unwrap();
        let missing = store.path().join("no-such-store");
        let r = keygen(&missing, "example.test", "s", Algorithm::Ed25519Sha256);
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        assert!(!missing.exists());
    }

    #[test]
    fn a_selector_file_naming_a_missing_key_is_an_error() {
        let store = tempfile::tempdir().unwrap();
        let dir = store.path().join("dkim/example.test");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("selector"), "gone\n").unwrap();
        assert!(matches!(txt_record(store.path(), "example.test"), Err(Error::NoSuchKey { .. })));
        fs::write(dir.join("selector"), "../../etc/passwd\n").unwrap();
        assert!(matches!(txt_record(store.path(), "example.test"), Err(Error::BadSelector(_))));
        fs::write(dir.join("selector"), "\n").unwrap();
        assert_eq!(txt_record(store.path(), "example.test").unwrap(), None);
    }

    #[test]
    fn broken_or_foreign_key_files_are_refused() {
        let store = tempfile::tempdir().unwrap();
        let dir = store.path().join("dkim/example.test");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("selector"), "s\n").unwrap();
        fs::write(dir.join("s.pem"), "not a key").unwrap();
        assert!(matches!(txt_record(store.path(), "example.test"), Err(Error::BadKey { .. })));
        fs::write(dir.join("s.pem"), vec![b'A'; MAX_KEY_FILE as usize + 1]).unwrap();
        assert!(matches!(txt_record(store.path(), "example.test"), Err(Error::BadKey { .. })));
        // A P-256 key parses as PEM but is no DKIM key.
        let p256 = ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &ring::rand::SystemRandom::new()).unwrap();
        fs::write(dir.join("s.pem"), pem_encode(p256.as_ref())).unwrap();
        assert!(matches!(txt_record(store.path(), "example.test"), Err(Error::BadKey { .. })));
        // A 1024-bit RSA key is too short to sign with.
        use rsa::pkcs8::EncodePrivateKey;
        let short = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap().to_pkcs8_der().unwrap();
        fs::write(dir.join("s.pem"), pem_encode(short.as_bytes())).unwrap();
        let r = txt_record(store.path(), "example.test");
        assert!(matches!(&r, Err(Error::BadKey { reason, .. }) if reason.contains("too short")), "{r:?}");
    }

    #[test]
    fn txt_strings_respect_the_character_string_limit() {
        let info = DkimKeyInfo {
            domain: "example.test".into(),
            selector: "s".into(),
            algorithm: Algorithm::RsaSha256,
            dns_name: "s._domainkey.example.test".into(),
            dns_value: format!("v=DKIM1; k=rsa; p={}", "A".repeat(600)),
            active: true,
        };
        let parts = info.txt_strings();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= MAX_TXT_STRING));
        assert_eq!(parts.concat(), info.dns_value);
        assert!(info.zone_line().starts_with("s._domainkey.example.test. IN TXT ( \"v=DKIM1; k=rsa; p=AAA"));
    }
}
