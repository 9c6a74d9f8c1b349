//! The server side of the sessions' TLS: the acceptor behind implicit TLS
//! (RFC 8314 3.3) and STARTTLS (RFC 3207, RFC 2595), presenting either a
//! node's own --tls-cert/--tls-key files or the cluster certificate
//! ([`cert::ClusterCertResolver`]). The certificate itself (checks,
//! generation, the store's files, reloading) is the `cert` crate's.

use std::path::Path;
use std::sync::Arc;

use cert::{CertError, ClusterCertResolver};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The acceptor for a node's own certificate files (--tls-cert/--tls-key),
/// checked as an upload is ([`cert::load_files`]).
pub fn files_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = cert::load_files(cert, key)?;
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The acceptor presenting what `resolver` holds: the cluster certificate,
/// as it changes.
pub fn cluster_acceptor(resolver: Arc<ClusterCertResolver>) -> TlsAcceptor {
    TlsAcceptor::from(cert::server_config(resolver))
}
