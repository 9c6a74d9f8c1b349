//! The admin page of a box: the same HTTPS page a node run as a process
//! serves ([`admin::web`]), here over the box's own host (its settings on
//! the config partition, its services, its log) and with the cluster's
//! certificate from the store, re-read when an administrator replaces it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use admin::commands::Host;

/// Serves the page on `listen` until the box stops. Blocks.
pub fn run(host: Arc<dyn Host>, store_root: &Path, listen: SocketAddr) -> Result<(), String> {
    let store = Arc::new(store::Store::open(store_root).map_err(|e| e.to_string())?);
    let resolver = maild::tls::cluster_resolver(&store).map_err(|e| e.to_string())?;
    let tls = maild::tls::server_config(resolver.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        // Picks up a certificate uploaded on any node (checks off the
        // runtime's thread: the store may hang on NFS).
        maild::tls::spawn_reloader(&resolver, store.clone());
        let l = tokio::net::TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
        crate::say!("admin page on https://{listen}/");
        admin::web::serve(vec![l], host, tls, admin::web::WebConfig::default(), std::future::pending()).await.map_err(|e| e.to_string())
    })
}
