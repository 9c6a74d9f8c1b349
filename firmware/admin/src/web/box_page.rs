//! The admin page of a box: the same HTTPS page a node run as a process
//! serves ([`crate::web::serve`]), here over the box's own host (its
//! settings on the config partition, its services, its log), in a runtime
//! of its own, with the cluster's certificate from the store: one resolver
//! for the page and the host's command set, following changes made on any
//! node.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use cert::ClusterCertResolver;

use crate::commands::Host;
use crate::web::{serve, WebConfig};

/// Why the page does not run.
#[derive(Debug, thiserror::Error)]
pub enum BoxPageError {
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("the cluster certificate: {0}")]
    Cert(#[from] cert::CertError),
    #[error("cannot start the page's runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Serve(io::Error),
}

/// Serves the page on `listen` until the box stops; calls `listening`
/// once the port is bound. Blocks: run it on a thread of its own, once the
/// store is there.
pub fn run(host: Arc<dyn Host>, store_root: &Path, listen: SocketAddr, listening: impl FnOnce(SocketAddr)) -> Result<(), BoxPageError> {
    let store = Arc::new(store::Store::open(store_root)?);
    let resolver = ClusterCertResolver::load(&store)?;
    // `cert upload` and `cert regenerate`, from the page or the console,
    // are presented here at once.
    host.store().use_cert_resolver(resolver.clone());
    let tls = cert::server_config(resolver.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(BoxPageError::Runtime)?;
    rt.block_on(async move {
        // Picks up a certificate uploaded on any node (checks off the
        // runtime's thread: the store may hang on NFS).
        cert::spawn_reloader(&resolver, store);
        let l = tokio::net::TcpListener::bind(listen).await.map_err(|source| BoxPageError::Listen { addr: listen, source })?;
        listening(listen);
        serve(vec![l], host, tls, WebConfig::default(), std::future::pending()).await.map_err(BoxPageError::Serve)
    })
}
