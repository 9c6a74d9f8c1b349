//! The HTTPS admin page: every node serves it, with the cluster's
//! certificate, behind the admin password (whose argon2id hash is in the
//! store, so it is the same on every node).
//!
//! It is a front end over the one command set, like the console: every
//! change builds a [`crate::commands::Command`] and runs it with
//! [`crate::commands::execute`], and the page shows the reply. Pages are
//! rendered on the server; everything served is in the binary (one small
//! style sheet, no JavaScript at all: the dashboard refreshes itself with
//! `<meta http-equiv="refresh">`).
//!
//! Security:
//! - TLS only (tokio-rustls with the given server config); plain HTTP on
//!   the port fails the handshake.
//! - Login with the admin password; sessions in memory (per node), a
//!   random 32-byte id in the cookie `mailfort_session` (`HttpOnly; Secure;
//!   SameSite=Strict; Path=/`, RFC 6265 4.1.2), ending after
//!   [`WebConfig::session_idle`] without requests and after
//!   [`WebConfig::session_max`] in all. The dashboard's own refreshes do
//!   not count as requests for the idle limit (a dashboard left open does
//!   not keep a session alive).
//! - CSRF: every change is a POST form with a hidden `csrf` field holding
//!   the session's random token, compared in constant time; the login form
//!   carries a pre-session token checked against a cookie
//!   (`mailfort_login`, double-submit). In addition every POST is refused
//!   when the browser says it comes from another site (`Sec-Fetch-Site`)
//!   or names another origin (`Origin`; `null`, which browsers send under
//!   `Referrer-Policy: no-referrer`, and absence are allowed).
//! - Failed logins: counted per client address and network in the store,
//!   together with SMTP's and POP3's on every node
//!   ([`store::login_failures`]); a delay doubling from
//!   [`auth::LOGIN_DELAY_START`] to [`auth::LOGIN_DELAY_MAX`], and a
//!   refusal after too many, during which logins are answered 429 without
//!   looking at the password; argon2 checks in the process's one verifier
//!   (at most [`auth::MAX_PASSWORD_CHECKS`] at a time, a bounded queue,
//!   then 503).
//! - Headers: a strict Content-Security-Policy, nosniff, no referrer, no
//!   caching of pages. Everything from the store or the host is escaped.
//!   No HSTS: the cluster certificate is self-signed until one is
//!   uploaded, and HSTS would forbid clicking through the warning.

mod auth;
mod html;
mod multipart;
mod pages;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::commands::Host;

pub use auth::{LOGIN_COOKIE, LOGIN_DELAY_MAX, LOGIN_DELAY_START, MAX_PASSWORD_CHECKS, SESSION_COOKIE};

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);
/// A session ends this long after the login, whatever happens.
pub const SESSION_MAX: Duration = Duration::from_secs(8 * 60 * 60);
/// Connections served at once per node; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request body taken: a certificate upload is up to
/// `maild::tls::MAX_PEM_BYTES` (64 KiB) of PEM, which form encoding may
/// grow (up to three bytes per character in the worst case).
pub const MAX_BODY_BYTES: usize = 4 * maild::tls::MAX_PEM_BYTES;
/// A TLS handshake not done by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's header must arrive within this (slow-header clients).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection is kept longer than this (slow bodies, idle keep-alive).
pub const CONNECTION_MAX_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// On shutdown, requests under way get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// After a failed accept (out of descriptors), wait this long.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub session_idle: Duration,
    pub session_max: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { session_idle: SESSION_IDLE, session_max: SESSION_MAX }
    }
}

/// The client's address, as the connection came (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub IpAddr);

/// What every request handler shares.
pub(crate) struct App {
    host: Arc<dyn Host>,
    sessions: auth::Sessions,
    lockout: Arc<auth::Lockout>,
    /// One host call at a time: the host's store access refuses a second
    /// call while one is under way.
    host_lock: Arc<tokio::sync::Mutex<()>>,
}

impl App {
    fn new(host: Arc<dyn Host>, cfg: &WebConfig) -> App {
        let named = host.clone();
        let lockout = Arc::new(auth::Lockout::new(host.store().root().to_path_buf(), Box::new(move || named.node().node)));
        App {
            host,
            sessions: auth::Sessions::new(cfg.session_idle, cfg.session_max),
            lockout,
            host_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Runs `f` on the host in a blocking thread (host calls block: store
    /// calls with deadlines, argon2 hashing), one at a time. The turn is
    /// held until `f` returns, even if the request is dropped meanwhile.
    async fn with_host<T: Send + 'static>(&self, f: impl FnOnce(&dyn Host) -> T + Send + 'static) -> T {
        let turn = self.host_lock.clone().lock_owned().await;
        let host = self.host.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            f(&*host)
        })
        .await;
        match r {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("host call cancelled: {e}"),
        }
    }
}

/// Serves the admin page on already-bound listeners until `shutdown` resolves.
pub async fn serve(listeners: Vec<TcpListener>, host: Arc<dyn Host>, tls: Arc<rustls::ServerConfig>, cfg: WebConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
    let app = Arc::new(App::new(host, &cfg));
    let router = pages::router(app);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    for l in listeners {
        loops.spawn(accept_loop(l, acceptor.clone(), router.clone(), slots.clone(), stop_rx.clone()));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    // Every slot free again means every connection has ended.
    let max = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), slots.acquire_many(max)).await;
    Ok(())
}

async fn accept_loop(l: TcpListener, acceptor: tokio_rustls::TlsAcceptor, router: axum::Router, slots: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            a = l.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, acceptor.clone(), router.clone(), stop.clone(), slot));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin page: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, acceptor: tokio_rustls::TlsAcceptor, router: axum::Router, mut stop: watch::Receiver<bool>, _slot: OwnedSemaphorePermit) {
    let _ = stream.set_nodelay(true);
    // Not TLS (plain HTTP, a scanner) or too slow: dropped.
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "admin page: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let ip = ClientIp(peer.ip().to_canonical());
    let svc = router.map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ip);
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), hyper_util::service::TowerToHyperService::new(svc));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "admin page: connection ended");
            }
            return;
        }
        _ = tokio::time::sleep(CONNECTION_MAX_LIFETIME) => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}
