//! TLS settings: a configured certificate, or the cluster's own
//! self-signed one, generated once and kept in the store so every node
//! presents the same certificate.

use std::fs;
use std::io::{self, BufReader};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{0} holds no PEM certificate")]
    NoCert(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The file in `<store>/tls/` that holds the self-signed key and
/// certificate together, so that they can never get out of step.
const SELF_SIGNED: &str = "self-signed.pem";

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

/// The store's self-signed certificate for the cluster's host name,
/// created by whichever node needs it first. Creation is a link() of a
/// complete file, which fails if another node won the race; then that
/// node's certificate is used.
pub fn self_signed(store: &Store) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), TlsError> {
    let dir = store.tls_dir();
    let path = dir.join(SELF_SIGNED);
    if !path.exists() {
        let host = store.settings().hostname.clone();
        let mut names = vec![host.clone(), "localhost".to_string()];
        names.extend(store.settings().domains.iter().cloned());
        let cert = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
        let pem = format!("{}{}", cert.key_pair.serialize_pem(), cert.cert.pem());
        let tmp = dir.join(format!(".{SELF_SIGNED}.{}.{:x}", std::process::id(), rand_suffix()));
        let write = || -> io::Result<()> {
            store::fsutil::write_atomic(&tmp, pem.as_bytes())?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => store::fsutil::sync_dir(&dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        };
        let r = write();
        let _ = fs::remove_file(&tmp);
        r.map_err(|e| TlsError::Read { path: path.display().to_string(), source: e })?;
    }
    let text = fs::read(&path).map_err(|e| TlsError::Read { path: path.display().to_string(), source: e })?;
    let (certs, key) = parse_pem(&text, &path.display().to_string())?;
    Ok((certs, key, path.display().to_string()))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

/// The acceptor for all TLS services of a node.
pub fn acceptor(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
