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
//! - Connections: slots are taken after accept, at most
//!   [`MAX_CONNECTIONS_PER_ADDRESS`] per address and
//!   [`MAX_CONNECTIONS_PER_NETWORK`] per /24 or /64 out of
//!   [`MAX_CONNECTIONS`]; a client at its cap replaces its own oldest
//!   connection, and a full pool gives up a connection of the network
//!   holding the most, or an idle one (see `conn`). Every phase has a
//!   deadline: the TLS handshake, the request head, the whole body, idle
//!   keep-alive, each write to the client, the connection's lifetime and
//!   its number of requests.
//! - Headers: a strict Content-Security-Policy, nosniff, no referrer, no
//!   caching of pages. Everything from the store or the host is escaped.
//!   No HSTS: the cluster certificate is self-signed until one is
//!   uploaded, and HSTS would forbid clicking through the warning.

mod auth;
pub mod box_page;
mod conn;
mod html;
mod multipart;
mod pages;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt as _;

use crate::commands::Host;
use conn::Phase;

pub use auth::{LOGIN_COOKIE, LOGIN_DELAY_MAX, LOGIN_DELAY_START, MAX_PASSWORD_CHECKS, SESSION_COOKIE};

/// The page's parsers as its handlers call them, for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::multipart::{is_multipart, parse as parse_multipart, Part, MAX_PARTS};
    pub use super::pages::decode_forms;
}

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);
/// A session ends this long after the login, whatever happens.
pub const SESSION_MAX: Duration = Duration::from_secs(8 * 60 * 60);
/// Connections served at once per node (each holds buffers and a TLS
/// state; a box has 256 MiB). Slots are taken after accept, by the rules
/// of [`MAX_CONNECTIONS_PER_ADDRESS`] and [`MAX_CONNECTIONS_PER_NETWORK`].
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one client address holds at most: a browser opens up to
/// six per host. One more replaces that address's oldest connection (an
/// idle one first), so one address can never take the pool.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
/// Connections one network (IPv4 /24, IPv6 /64) holds at most, far below
/// [`MAX_CONNECTIONS`]: a client owns a whole IPv6 /64, and often many
/// addresses of an IPv4 /24. One more replaces that network's oldest.
pub const MAX_CONNECTIONS_PER_NETWORK: usize = 16;
/// Largest request body taken: a certificate upload is up to
/// `cert::MAX_PEM_BYTES` (64 KiB) of PEM, which form encoding may
/// grow (up to three bytes per character in the worst case).
pub const MAX_BODY_BYTES: usize = 4 * cert::MAX_PEM_BYTES;
/// A TLS handshake not done by then is dropped (silent connections).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's header must arrive within this (slow-header clients).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without a request under way is closed after this long
/// (after the handshake, and after each answer: idle keep-alive). A
/// browser opens a new one when it needs one; Apache's default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request body must arrive within this: the largest,
/// [`MAX_BODY_BYTES`], at about 13 KB/s; a body trickled a byte at a time
/// cannot hold a slot longer.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// A write to a client that makes no progress for this long ends the
/// connection (a client that asks and does not read).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests answered on one connection; the last answer says
/// `Connection: close` (RFC 9112 9.6) and the connection ends.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// No connection is kept longer than this, whatever it does.
pub const CONNECTION_MAX_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// On shutdown, requests under way get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// After a failed accept (out of descriptors), wait this long.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The limits of the page's connections; [`Limits::default`] has the
/// constants above (tests shorten the deadlines).
#[derive(Debug, Clone)]
pub struct Limits {
    pub connections: usize,
    pub per_address: usize,
    pub per_network: usize,
    pub handshake: Duration,
    pub header: Duration,
    pub idle: Duration,
    pub body: Duration,
    pub write: Duration,
    pub requests_per_connection: usize,
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: MAX_CONNECTIONS,
            per_address: MAX_CONNECTIONS_PER_ADDRESS,
            per_network: MAX_CONNECTIONS_PER_NETWORK,
            handshake: HANDSHAKE_TIMEOUT,
            header: HEADER_READ_TIMEOUT,
            idle: IDLE_TIMEOUT,
            body: BODY_READ_TIMEOUT,
            write: WRITE_TIMEOUT,
            requests_per_connection: MAX_REQUESTS_PER_CONNECTION,
            lifetime: CONNECTION_MAX_LIFETIME,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub session_idle: Duration,
    pub session_max: Duration,
    pub limits: Limits,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { session_idle: SESSION_IDLE, session_max: SESSION_MAX, limits: Limits::default() }
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

/// What every connection task shares.
#[derive(Clone)]
struct Ctx {
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    pool: Arc<conn::Pool>,
    limits: Arc<Limits>,
    stop: watch::Receiver<bool>,
    /// Held by every connection task: the channel closes when all ended.
    live: mpsc::Sender<()>,
}

/// Serves the admin page on already-bound listeners until `shutdown` resolves.
pub async fn serve(listeners: Vec<TcpListener>, host: Arc<dyn Host>, tls: Arc<rustls::ServerConfig>, cfg: WebConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
    let app = Arc::new(App::new(host, &cfg));
    let limits = cfg.limits;
    let pool = conn::Pool::new(conn::Caps { total: limits.connections, per_address: limits.per_address, per_network: limits.per_network });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (live_tx, mut live_rx) = mpsc::channel::<()>(1);
    let ctx = Ctx { acceptor: tokio_rustls::TlsAcceptor::from(tls), router: pages::router(app), pool, limits: Arc::new(limits), stop: stop_rx, live: live_tx };
    let mut loops = tokio::task::JoinSet::new();
    for l in listeners {
        loops.spawn(accept_loop(l, ctx.clone()));
    }
    drop(ctx);
    shutdown.await;
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    // The channel closes when every connection has ended.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), live_rx.recv()).await;
    Ok(())
}

async fn accept_loop(l: TcpListener, ctx: Ctx) {
    let mut stop = ctx.stop.clone();
    loop {
        let accepted = tokio::select! {
            a = l.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => match ctx.pool.admit(peer.ip()) {
                Some(admitted) => {
                    tokio::spawn(connection(stream, peer, ctx.clone(), admitted));
                }
                // Dropped: closed at once.
                None => tracing::debug!(%peer, "admin page: no connection slot free"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "admin page: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, ctx: Ctx, admitted: conn::Admitted) {
    let conn::Admitted { slot, mut closed } = admitted;
    let Ctx { acceptor, router, limits, mut stop, live: _live, .. } = ctx;
    let ends = tokio::time::Instant::now() + limits.lifetime;
    let _ = stream.set_nodelay(true);
    let io = conn::WriteDeadline::new(stream, limits.write);
    // Not TLS (plain HTTP, a scanner) or too slow: dropped.
    let tls = tokio::select! {
        r = tokio::time::timeout(limits.handshake, acceptor.accept(io)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "admin page: TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
        _ = &mut closed => return,
        _ = stop.wait_for(|s| *s) => return,
    };
    let slot = Arc::new(slot);
    slot.set_phase(Phase::Idle);
    let ip = ClientIp(peer.ip().to_canonical());
    let svc = {
        let (slot, limits) = (slot.clone(), limits.clone());
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (router, slot, limits) = (router.clone(), slot.clone(), limits.clone());
            async move {
                slot.set_phase(Phase::Busy);
                let n = slot.count_request();
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(ip);
                let req = axum::extract::Request::from_parts(parts, axum::body::Body::new(conn::DeadlineBody::new(body, limits.body)));
                let (mut parts, body) = router.oneshot(req).await?.into_parts();
                if n >= limits.requests_per_connection {
                    // RFC 9112 9.6: the last response on the connection says so.
                    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(hyper::Response::from_parts(parts, conn::IdleWhenSent::new(body, slot)))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().timer(TokioTimer::new()).header_read_timeout(limits.header).serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let mut phase = slot.watch();
    loop {
        let (now, since) = *phase.borrow_and_update();
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "admin page: connection ended");
                }
                return;
            }
            _ = &mut closed => {
                tracing::debug!(%peer, "admin page: connection closed for another client");
                return;
            }
            _ = tokio::time::sleep_until(ends) => return,
            _ = tokio::time::sleep_until(since + limits.idle), if now == Phase::Idle => return,
            _ = phase.changed() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}
