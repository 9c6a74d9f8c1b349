//! TLS settings: a configured certificate, or the cluster certificate kept
//! in the store so that every node presents the same one.
//!
//! The cluster certificate is `<store>/tls/cluster.pem` when an operator
//! uploaded one, else `<store>/tls/self-signed.pem`, generated once by
//! whichever node needs it first. Each file holds the chain and the private
//! key together, so that they can never get out of step. A node serves
//! through a [`ClusterCertResolver`], which re-reads the file when it
//! changes: an upload on any node reaches every node within
//! [`RELOAD_INTERVAL`], without a restart.

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
}

fn parse_pem(text: &[u8], what: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(text)).collect::<Result<_, _>>().map_err(|e| TlsError::Read { path: what.into(), source: e })?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(text)).map_err(|e| TlsError::Read { path: what.into(), source: e })?;
    let key = key.ok_or_else(|| TlsError::NoKey(what.into()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(what.into()));
    }
    Ok((certs, key))
}

/// Loads the certificate chain and key from PEM files.
pub fn load_files(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let read = |p: &Path| fs::read(p).map_err(|e| TlsError::Read { path: p.display().to_string(), source: e });
    let mut both = read(cert)?;
    both.push(b'\n');
    both.extend(read(key)?);
    let (certs, key_der) = parse_pem(&both, &format!("{} / {}", cert.display(), key.display()))?;
    Ok((certs, key_der))
}

/// What a node started with --tls-cert/--tls-key presents.
pub fn configured_cert_info(cert: &Path, key: &Path) -> Result<CertInfo, TlsError> {
    let (certs, _) = load_files(cert, key)?;
    info_of(&certs[0], SOURCE_CONFIGURED, cert, now_secs())
}

/// A new self-signed certificate and key, in PEM, for the store's host
/// name, its domains and localhost.
fn generate_self_signed(store: &Store) -> Result<String, TlsError> {
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
    let key = rcgen::KeyPair::generate().map_err(gen)?;
    let cert = params.self_signed(&key).map_err(gen)?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}

/// The store's self-signed certificate for the cluster's host name,
/// created by whichever node needs it first. Creation is a link() of a
/// complete file, which fails if another node won the race; then that
/// node's certificate is used.
pub fn self_signed(store: &Store) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), TlsError> {
    let dir = store.tls_dir();
    let path = dir.join(SELF_SIGNED);
    if !path.exists() {
        let pem = generate_self_signed(store)?;
        let tmp = dir.join(format!(".{SELF_SIGNED}.{}.{:x}", std::process::id(), rand_suffix()));
        let write = || -> io::Result<()> {
            store::fsutil::create_dir_durable(&dir)?;
            restrict_dir(&dir);
            store::fsutil::write_atomic(&tmp, pem.as_bytes())?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(KEY_FILE_MODE))?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => store::fsutil::sync_dir(&dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        };
        let r = write();
        let _ = fs::remove_file(&tmp);
        r.map_err(|e| TlsError::Write { path: path.display().to_string(), source: e })?;
    }
    let text = fs::read(&path).map_err(|e| TlsError::Read { path: path.display().to_string(), source: e })?;
    let (certs, key) = parse_pem(&text, &path.display().to_string())?;
    Ok((certs, key, path.display().to_string()))
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
// Validation of a chain and key

/// Files holding a private key: owner only; the directory too.
const KEY_FILE_MODE: u32 = 0o600;
const KEY_DIR_MODE: u32 = 0o700;

/// A chain and key that belong together, the leaf first.
struct Bundle {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    certified: Arc<CertifiedKey>,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn parse_x509<'a>(der: &'a [u8], what: &str, index: usize) -> Result<X509Certificate<'a>, TlsError> {
    let bad = |reason: String| TlsError::BadCert { what: what.into(), index: index + 1, reason };
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(bad(format!("{} bytes after its end", rest.len()))),
        Ok((_, c)) => Ok(c),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Reads a PEM text (RFC 7468) holding a certificate chain and its private
/// key, in any order, and checks that they belong together. The leaf is
/// the certificate whose SubjectPublicKeyInfo (RFC 5280 4.1.2.7) is the
/// key's; it goes first, the others keep their order (RFC 8446 4.4.2: the
/// sender's certificate comes first). With `now`, the leaf must also be
/// valid at that time (RFC 5280 4.1.2.5).
fn parse_bundle(text: &[u8], what: &str, now: Option<i64>) -> Result<Bundle, TlsError> {
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
    let parsed = certs.iter().enumerate().map(|(i, c)| parse_x509(c, what, i)).collect::<Result<Vec<_>, _>>()?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey(e.to_string()))?;
    let spki = signing.public_key().ok_or_else(|| TlsError::BadKey("its public key cannot be derived".into()))?;
    let leaf = parsed.iter().position(|c| c.public_key().raw == spki.as_ref()).ok_or(TlsError::KeyMismatch)?;
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
    let certified = CertifiedKey::new(certs.clone(), signing);
    // The same comparison by rustls itself, as it will be used.
    certified.keys_match().map_err(|_| TlsError::KeyMismatch)?;
    Ok(Bundle { certs, key, certified: Arc::new(certified) })
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

impl Bundle {
    /// The chain (leaf first) and the key, nothing else.
    fn to_pem(&self) -> Result<String, TlsError> {
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
    })
}

fn expires_in_days(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(SECS_PER_DAY)
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
    self_signed(store)?;
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
    let pem = generate_self_signed(store)?;
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
    not_after: i64,
    /// The version of the file last looked at (loaded, or found broken).
    stamp: Stamp,
}

/// Presents the store's cluster certificate and follows its changes.
/// Handshakes only take the current key from memory; the files are read by
/// [`ClusterCertResolver::check`], off the handshake path.
#[derive(Debug)]
pub struct ClusterCertResolver {
    current: RwLock<Loaded>,
    reloading: AtomicBool,
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
                let path = self_signed(store)?.2;
                let f = read_cert_file(Path::new(&path), SOURCE_SELF_SIGNED)?.ok_or_else(|| TlsError::NoCert(path.clone()))?;
                Self::parse(&f)?
            }
            Err(err) => return Err(err),
        };
        Ok(ClusterCertResolver { current: RwLock::new(loaded), reloading: AtomicBool::new(false) })
    }

    fn parse(e: &Effective) -> Result<Loaded, TlsError> {
        let what = e.path.display().to_string();
        let b = parse_bundle(&e.text, &what, None)?;
        let info = info_of(&b.certs[0], e.source, &e.path, now_secs())?;
        let not_after = parse_x509(&b.certs[0], &what, 0)?.validity().not_after.timestamp();
        Ok(Loaded { key: b.certified, info, not_after, stamp: e.stamp })
    }

    /// Re-reads the cluster certificate if its file changed since the last
    /// look (the uploaded file if present, else the self-signed one). True
    /// when a new certificate is now presented. A file that cannot be used
    /// leaves the current certificate in place; its error is returned once
    /// per version of the file. Blocking file I/O: call it off the async
    /// threads (spawn_blocking).
    pub fn check(&self, store: &Store) -> Result<bool, TlsError> {
        let e = match read_effective(&store.tls_dir())? {
            Some(e) => e,
            // Both files deleted by hand: make a self-signed one, as at start.
            None => read_or_create(store)?,
        };
        if self.read().stamp == e.stamp {
            return Ok(false);
        }
        match Self::parse(&e) {
            Ok(l) => {
                let changed = l.info.sha256 != self.read().info.sha256;
                if changed {
                    tracing::info!(source = l.info.source, sha256 = %l.info.sha256, not_after = %l.info.not_after, "TLS certificate reloaded");
                }
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = l;
                Ok(changed)
            }
            Err(err) => {
                self.current.write().unwrap_or_else(|p| p.into_inner()).stamp = e.stamp;
                Err(err)
            }
        }
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
        info.expires_in_days = expires_in_days(l.not_after, now_secs());
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

/// Starts the task that calls [`ClusterCertResolver::check`] every
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
            match tokio::task::spawn_blocking(move || r.check(&s)).await {
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
