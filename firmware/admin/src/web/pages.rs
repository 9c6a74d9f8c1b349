//! The routes: login, the pages, and the forms, each of which runs one
//! command of the command set.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Form, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::auth::{self, Lookup, LOGIN_COOKIE, SESSION_COOKIE};
use super::html::{self, csrf_field, e, id_part, Msg};
use super::{multipart, App, ClientIp, MAX_BODY_BYTES};
use crate::commands::{self, Action, Command, Reply, Setting};

/// The Content-Security-Policy of every response: nothing but this
/// origin's style sheet and images inline as data; no scripts at all; no
/// framing; forms only to this origin.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";
/// Log lines the log page shows.
pub const LOG_PAGE_LINES: usize = 200;
/// Longest password taken at the login (longer ones are wrong anyway).
pub const MAX_PASSWORD_INPUT: usize = store::accounts::MAX_PASSWORD;
/// Longest node setting key taken from a form.
const MAX_KEY: usize = 64;
/// Longest service name taken from a form.
const MAX_SERVICE: usize = 64;
/// The value of a ticked confirmation box.
const CONFIRMED: &str = "yes";

type AppState = State<Arc<App>>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(dashboard))
        .route("/users", get(users))
        .route("/users/add", post(user_add))
        .route("/users/passwd", post(user_passwd))
        .route("/users/del", post(user_del))
        .route("/queue", get(queue))
        .route("/queue/show", get(queue_show))
        .route("/queue/retry", post(queue_retry))
        .route("/queue/del", post(queue_del))
        .route("/settings", get(settings))
        .route("/settings/node", post(node_set))
        .route("/settings/cluster", post(cluster_set))
        .route("/settings/admin-passwd", post(admin_passwd))
        .route("/cert", get(cert))
        .route("/cert/upload", post(cert_upload))
        .route("/cert/regenerate", post(cert_regenerate))
        .route("/log", get(log))
        .route("/actions", get(actions))
        .route("/actions/restart", post(restart))
        .route("/actions/reboot", post(reboot))
        .route("/actions/poweroff", post(poweroff))
        .route(html::STYLE_PATH, get(style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], html::STYLE).into_response()
}

async fn not_found() -> Response {
    html_response(StatusCode::NOT_FOUND, html::page("Not found", "", None, None, None, "<p>There is no such page. <a href=\"/\">Dashboard</a></p>\n"))
}

fn html_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// Whole seconds, rounded up, at least one (Retry-After, RFC 9110 10.2.3).
fn secs_up(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

// ---------------------------------------------------------------------------
// Sessions and CSRF

/// The answer to a request that goes no further (boxed: a Response is
/// large).
type Stop = Box<Response>;

/// A request of a logged-in person.
struct Authed {
    id: String,
    csrf: String,
}

/// Where a request whose session has ended goes.
fn session_ended() -> Response {
    (StatusCode::SEE_OTHER, AppendHeaders([(header::LOCATION, "/login?expired=1".to_string()), (header::SET_COOKIE, auth::clear_cookie(SESSION_COOKIE))])).into_response()
}

/// The session of the request; `touch`: it counts as activity.
fn session(app: &App, headers: &HeaderMap, touch: bool) -> Result<Authed, Stop> {
    let id = auth::cookie(headers, SESSION_COOKIE);
    match app.sessions.check(id.as_deref(), touch) {
        Lookup::Valid { csrf } => Ok(Authed { id: id.unwrap_or_default(), csrf }),
        Lookup::Ended => Err(Box::new(session_ended())),
        Lookup::None => Err(Box::new(redirect("/login"))),
    }
}

fn refused(why: &str) -> Response {
    let body = format!("<div id=\"result\" class=\"msg error\"><pre>{}</pre></div>\n<p>Nothing was changed. <a href=\"/\">Back to the dashboard</a></p>\n", e(why));
    html_response(StatusCode::FORBIDDEN, html::page("Refused", "", None, None, None, &body))
}

/// The first checks of a form post: from this site, within a session.
fn post_session(app: &App, headers: &HeaderMap) -> Result<Authed, Stop> {
    auth::same_origin(headers).map_err(|why| Box::new(refused(&format!("refused: {why}"))))?;
    session(app, headers, true)
}

/// The form's CSRF token must be the session's.
fn check_csrf(a: &Authed, csrf: &str) -> Result<(), Stop> {
    if auth::constant_time_eq(a.csrf.as_bytes(), csrf.as_bytes()) {
        Ok(())
    } else {
        Err(Box::new(refused("refused: the form's security token (csrf) is missing or wrong; reload the page and try again")))
    }
}

fn check_post(app: &App, headers: &HeaderMap, csrf: &str) -> Result<Authed, Stop> {
    let a = post_session(app, headers)?;
    check_csrf(&a, csrf)?;
    Ok(a)
}

/// Runs one command of the command set on the host. A reboot or poweroff
/// it answers with is handed to the host.
async fn run(app: &App, cmd: Command, password: Option<String>, text: Option<String>) -> Msg {
    let r = app
        .with_host(move |h| {
            let r = commands::execute(&cmd, h, password.as_deref(), text.as_deref());
            if !r.error && matches!(r.action, Action::Reboot | Action::Poweroff) {
                if let Err(e) = h.power(r.action) {
                    return Reply { text: format!("error: {e}"), action: Action::None, error: true };
                }
            }
            r
        })
        .await;
    Msg { error: r.error, text: r.text }
}

/// A page of a logged-in person; 400 when the message is an error.
fn page(a: &Authed, title: &str, active: &str, refresh: Option<&str>, msg: Option<Msg>, body: &str) -> Response {
    let status = if msg.as_ref().is_some_and(|m| m.error) { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html_response(status, html::page(title, active, Some(&a.csrf), refresh, msg.as_ref(), body))
}

fn with_status(mut r: Response, s: StatusCode) -> Response {
    *r.status_mut() = s;
    r
}

fn unavailable(what: &str, err: &dyn std::fmt::Display) -> String {
    format!("<div class=\"error box\" id=\"store-unavailable\"><strong>store not available</strong>: cannot read {}: {}</div>\n", e(what), e(&err.to_string()))
}

// ---------------------------------------------------------------------------
// Login

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginQuery {
    expired: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    csrf: String,
    password: String,
}

fn login_response(status: StatusCode, token: &str, has_password: bool, msg: Option<Msg>, retry_after: Option<Duration>) -> Response {
    let mut b = String::from("<div class=\"login box\">\n");
    if !has_password {
        b.push_str("<div class=\"note\" id=\"no-password\">No admin password is set yet, so nobody can log in here. Set one on the console: the first login on a box's serial console asks for it, or run <code>admin-passwd</code> in <code>mailfort console --store DIR</code>. It is kept in the store, so it is the same on every node.</div>\n");
    }
    let _ = writeln!(b, "<form id=\"login\" class=\"stack\" method=\"post\" action=\"/login\">{}<label>Admin password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required autofocus></label><button type=\"submit\">Log in</button></form>\n</div>", csrf_field(token));
    let mut r = html_response(status, html::page("Log in", "", None, None, msg.as_ref(), &b));
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(LOGIN_COOKIE, token)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    if let Some(d) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs_up(d)));
    }
    r
}

async fn login_page(State(app): AppState, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    if let Lookup::Valid { .. } = app.sessions.check(auth::cookie(&headers, SESSION_COOKIE).as_deref(), false) {
        return redirect("/");
    }
    let token = auth::cookie(&headers, LOGIN_COOKIE).filter(|t| auth::looks_like_token(t)).unwrap_or_else(auth::new_token);
    let has_password = app.with_host(|h| h.admin_hash().is_some()).await;
    let msg = q.expired.is_some().then(|| Msg::err("session expired: log in again"));
    login_response(StatusCode::OK, &token, has_password, msg, None)
}

/// Why a password check did not let a client in.
enum Refusal {
    /// Locked out after failures: wait this long (the password was not
    /// looked at).
    Locked(Duration),
    /// No admin password is set.
    NoPassword,
    /// Too many checks under way.
    Busy,
    /// Wrong: the next attempt after this long.
    Wrong(Duration),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::NoPassword | Refusal::Wrong(_) => StatusCode::FORBIDDEN,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Locked(d) | Refusal::Wrong(d) => Some(*d),
            Refusal::Busy => Some(auth::LOGIN_DELAY_START),
            Refusal::NoPassword => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Refusal::Locked(d) => format!("too many failed logins from your address or network: wait {} s before the next attempt (the password was not checked)", secs_up(*d)),
            Refusal::NoPassword => "no admin password is set yet: nobody can log in until one is set on the console (`admin-passwd`)".into(),
            Refusal::Busy => "too many logins at once: try again in a moment".into(),
            Refusal::Wrong(d) => format!("wrong password; the next attempt is possible in {} s", secs_up(*d)),
        }
    }
}

/// Checks `password` against the admin hash for a client, with the
/// lockout (failures counted in the store, the mail daemon's included) and
/// the process's bounded password verifier.
async fn check_admin_password(app: &App, ip: std::net::IpAddr, password: String) -> Result<(), Refusal> {
    let lockout = app.lockout.clone();
    let guard = tokio::task::spawn_blocking(move || lockout.begin(ip)).await.map_err(|_| Refusal::Busy)?.map_err(Refusal::Locked)?;
    let hash = app.with_host(|h| h.admin_hash()).await.ok_or(Refusal::NoPassword)?;
    let failed = |guard: auth::CheckGuard| async move { tokio::task::spawn_blocking(move || guard.failed()).await.unwrap_or(auth::LOGIN_DELAY_MAX) };
    if password.len() > MAX_PASSWORD_INPUT {
        return Err(Refusal::Wrong(failed(guard).await));
    }
    match tokio::task::spawn_blocking(move || crate::password::check_password(&hash, &password)).await {
        Ok(Ok(true)) => {
            guard.succeeded();
            Ok(())
        }
        Ok(Ok(false)) => {
            tracing::warn!(client = %ip, "admin page: wrong admin password");
            Err(Refusal::Wrong(failed(guard).await))
        }
        Ok(Err(store::PasswordError::Busy)) => Err(Refusal::Busy),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin page: cannot check the admin password");
            Err(Refusal::Busy)
        }
        Err(_) => Err(Refusal::Busy),
    }
}

async fn login(State(app): AppState, Extension(ClientIp(ip)): Extension<ClientIp>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if let Err(why) = auth::same_origin(&headers) {
        return refused(&format!("refused: {why}"));
    }
    // The pre-session CSRF token: the form's must be the cookie's.
    let cookie = auth::cookie(&headers, LOGIN_COOKIE).filter(|t| auth::looks_like_token(t));
    let Some(token) = cookie.clone().filter(|t| auth::constant_time_eq(t.as_bytes(), f.csrf.as_bytes())) else {
        let has_password = app.with_host(|h| h.admin_hash().is_some()).await;
        let token = cookie.unwrap_or_else(auth::new_token);
        return login_response(StatusCode::FORBIDDEN, &token, has_password, Some(Msg::err("refused: the login form's security token (csrf) is missing or wrong; try again on this page")), None);
    };
    if f.password.is_empty() {
        return login_response(StatusCode::BAD_REQUEST, &token, true, Some(Msg::err("enter the admin password")), None);
    }
    if let Err(r) = check_admin_password(&app, ip, f.password).await {
        let has_password = !matches!(r, Refusal::NoPassword);
        return login_response(r.status(), &token, has_password, Some(Msg::err(r.text())), r.retry_after());
    }
    let (id, _) = app.sessions.create();
    tracing::info!(client = %ip, "admin page: logged in");
    (StatusCode::SEE_OTHER, AppendHeaders([(header::LOCATION, "/".to_string()), (header::SET_COOKIE, auth::set_cookie(SESSION_COOKIE, &id)), (header::SET_COOKIE, auth::clear_cookie(LOGIN_COOKIE))])).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
    confirm: String,
}

async fn logout(State(app): AppState, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    app.sessions.end(&a.id);
    (StatusCode::SEE_OTHER, AppendHeaders([(header::LOCATION, "/login".to_string()), (header::SET_COOKIE, auth::clear_cookie(SESSION_COOKIE))])).into_response()
}

// ---------------------------------------------------------------------------
// Dashboard

#[derive(Deserialize, Default)]
#[serde(default)]
struct DashQuery {
    /// Set by the page's own refresh: not activity of a person.
    auto: Option<String>,
}

/// The dashboard's reload URL.
const DASHBOARD_AUTO: &str = "/?auto=1";

async fn dashboard(State(app): AppState, headers: HeaderMap, Query(q): Query<DashQuery>) -> Response {
    let a = match session(&app, &headers, q.auto.is_none()) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (node, report, stats) = app.with_host(|h| (h.node(), h.store().report(), h.store().stats())).await;
    let mut b = String::new();
    b.push_str("<div class=\"grid2\">\n<section class=\"box\" id=\"this-node\"><h2>This node</h2><table>\n");
    let rank = node.rank.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
    for (k, v, id) in [("name", node.node.as_str(), "node-name"), ("role", &node.role, "node-role"), ("rank", &rank, "node-rank"), ("address", &node.address, "node-address"), ("uptime", &node.uptime, "node-uptime"), ("store", &node.store, "node-store")] {
        let _ = writeln!(b, "<tr><th>{k}</th><td id=\"{id}\">{}</td></tr>", e(v));
    }
    b.push_str("</table>\n");
    if !node.problems.is_empty() {
        b.push_str("<ul id=\"problems\">");
        for p in &node.problems {
            let _ = write!(b, "<li class=\"problem\">{}</li>", e(p));
        }
        b.push_str("</ul>\n");
    }
    b.push_str("</section>\n");
    match &report {
        Ok(r) => {
            b.push_str("<section class=\"box\" id=\"store\"><h2>Store</h2><table>\n");
            let _ = writeln!(b, "<tr><th>location</th><td>{}</td></tr><tr><th>store id</th><td>{}</td></tr><tr><th>domains</th><td id=\"domains\">{}</td></tr><tr><th>host name</th><td>{}</td></tr>", e(&r.root), e(&r.store_id), e(&r.domains.join(", ")), e(&r.hostname));
            let _ = writeln!(b, "<tr><th>accounts</th><td id=\"accounts\">{}</td></tr><tr><th>queue</th><td id=\"queued\">{} waiting</td></tr>", r.accounts, r.queued);
            match r.space {
                Some((free, total)) => {
                    let used_pct = if total == 0 { 0 } else { (u128::from(total - free.min(total)) * 100 / u128::from(total)) as u64 };
                    let _ = writeln!(b, "<tr><th>space</th><td id=\"space\">{} free of {} ({used_pct}% used)<svg class=\"meter\" viewBox=\"0 0 100 6\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{used_pct}% used\"><rect class=\"free\" x=\"0\" y=\"0\" width=\"100\" height=\"6\"/><rect class=\"used\" x=\"0\" y=\"0\" width=\"{used_pct}\" height=\"6\"/></svg></td></tr>", commands::human_bytes(free), commands::human_bytes(total));
                }
                None => b.push_str("<tr><th>space</th><td id=\"space\">unknown</td></tr>\n"),
            }
            b.push_str("</table></section>\n");
        }
        Err(err) => b.push_str(&unavailable("the store's state", &err)),
    }
    b.push_str("</div>\n");
    if !node.services.is_empty() {
        b.push_str("<section class=\"box\"><h2>Services of this box</h2><table id=\"services\"><tr><th>service</th><th>state</th><th>restarts</th><th>last exit</th></tr>\n");
        for s in &node.services {
            let _ = writeln!(b, "<tr id=\"service-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", id_part(&s.name), e(&s.name), e(&s.state), s.restarts, e(s.last_exit.as_deref().unwrap_or("-")));
        }
        b.push_str("</table></section>\n");
    }
    if let Some(st) = &node.storage {
        b.push_str("<section class=\"box\" id=\"storage\"><h2>Storage</h2><table>\n");
        let mirror = format!("{}{}", if st.mounted { "mounted" } else { "NOT mounted" }, if st.degraded { ", DEGRADED" } else { "" });
        let _ = writeln!(b, "<tr><th>mirror</th><td class=\"{}\">{}</td></tr>", if st.degraded || !st.mounted { "problem" } else { "" }, e(&mirror));
        for (d, s) in &st.disks {
            let _ = writeln!(b, "<tr><th>disk {}</th><td>{}</td></tr>", e(d), e(s));
        }
        let nfs = if st.nfs_serving { format!("serving the store to {} client address(es)", st.clients) } else { "not serving".into() };
        let _ = writeln!(b, "<tr><th>nfs</th><td>{}</td></tr></table></section>", e(&nfs));
    }
    if let Ok(r) = &report {
        b.push_str("<section class=\"box\"><h2>Live set</h2>\n");
        if r.live.is_empty() {
            b.push_str("<p id=\"live-set-empty\">No node has served from this store yet.</p>\n");
        } else {
            b.push_str("<table id=\"live-set\"><tr><th>node</th><th>rank</th><th>state</th><th>heartbeat</th><th>addresses</th></tr>\n");
            for l in &r.live {
                let announcer = r.announcer_node.as_deref() == Some(l.node.as_str());
                let _ = writeln!(
                    b,
                    "<tr id=\"node-{}\" class=\"state-{}{}\"><td>{}{}{}</td><td>{}</td><td class=\"state\">{}</td><td>{} ago</td><td>{}</td></tr>",
                    id_part(&l.node),
                    id_part(&l.state),
                    if announcer { " announcer" } else { "" },
                    e(&l.node),
                    if announcer { "<span class=\"badge\" title=\"holds the announcer lease\">announcer</span>" } else { "" },
                    if l.node == node.node { "<span class=\"badge\">this node</span>" } else { "" },
                    l.rank,
                    e(&l.state),
                    e(&l.age),
                    e(&l.addresses)
                );
            }
            b.push_str("</table>\n");
            // A protection that is off is never off silently.
            for l in r.live.iter().filter(|l| l.state == "live") {
                for p in &l.protections_off {
                    let _ = writeln!(b, "<p class=\"problem protection-off\" id=\"protection-off-{}\">{}: {}</p>", id_part(&l.node), e(&l.node), e(p));
                }
            }
        }
        let _ = writeln!(b, "<p>Announcer lease: <span id=\"announcer\">{}</span></p></section>", e(&r.announcer));
        let _ = write!(b, "<section class=\"box\" id=\"dns\"><h2>DNS</h2><p id=\"dns-state\">{}</p>", e(&r.dns));
        if !r.dns_records.is_empty() {
            b.push_str("<pre id=\"dns-records\">");
            for rec in &r.dns_records {
                let _ = writeln!(b, "{}", e(rec));
            }
            b.push_str("</pre>");
        }
        b.push_str("</section>\n");
    }
    b.push_str("<section class=\"box\"><h2>Messages in the last hour (all nodes)</h2>\n");
    match &stats {
        Ok(nodes) => {
            let mut inbound = [0u64; store::stats::STATS_MINUTES];
            let mut outbound = [0u64; store::stats::STATS_MINUTES];
            for n in nodes {
                for i in 0..store::stats::STATS_MINUTES {
                    inbound[i] = inbound[i].saturating_add(n.inbound[i]);
                    outbound[i] = outbound[i].saturating_add(n.outbound[i]);
                }
            }
            b.push_str(&html::chart(&inbound, &outbound));
        }
        Err(err) => {
            let _ = writeln!(b, "<p class=\"error\" id=\"chart\">cannot read the message counts: {}</p>", e(&err.to_string()));
        }
    }
    b.push_str("</section>\n");
    page(&a, "Dashboard", "/", Some(DASHBOARD_AUTO), None, &b)
}

// ---------------------------------------------------------------------------
// Users

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserForm {
    csrf: String,
    address: String,
    password: String,
    password2: String,
    confirm: String,
}

async fn users_page(app: &App, a: &Authed, msg: Option<Msg>) -> Response {
    let list = app.with_host(|h| h.store().user_list()).await;
    let mut b = String::new();
    let csrf = csrf_field(&a.csrf);
    match list {
        Err(err) => b.push_str(&unavailable("the accounts", &err)),
        Ok(l) => {
            let _ = writeln!(b, "<section class=\"box\"><h2>Accounts ({})</h2><table id=\"users\"><tr><th>address</th><th>delete (the mailbox is kept)</th></tr>", l.len());
            for addr in &l {
                let s = addr.to_string();
                let id = id_part(&s);
                let _ = writeln!(b, "<tr id=\"user-{id}\"><td>{}</td><td><form class=\"inline\" id=\"user-del-{id}\" method=\"post\" action=\"/users/del\">{csrf}<input type=\"hidden\" name=\"address\" value=\"{}\"><label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"{CONFIRMED}\" required> confirm</label><button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>", e(&s), e(&s));
            }
            b.push_str("</table></section>\n");
        }
    }
    let _ = writeln!(b, "<div class=\"grid2\"><section class=\"box\"><h2>Add an account</h2><form id=\"user-add\" class=\"stack\" method=\"post\" action=\"/users/add\">{csrf}<label>Address <input type=\"text\" name=\"address\" autocomplete=\"off\" required></label><label>Password <input type=\"password\" name=\"password\" autocomplete=\"new-password\" required></label><label>Password again <input type=\"password\" name=\"password2\" autocomplete=\"new-password\" required></label><button type=\"submit\">Add</button></form></section>");
    let _ = writeln!(b, "<section class=\"box\"><h2>Set an account's password</h2><form id=\"user-passwd\" class=\"stack\" method=\"post\" action=\"/users/passwd\">{csrf}<label>Address <input type=\"text\" name=\"address\" autocomplete=\"off\" required></label><label>New password <input type=\"password\" name=\"password\" autocomplete=\"new-password\" required></label><label>New password again <input type=\"password\" name=\"password2\" autocomplete=\"new-password\" required></label><button type=\"submit\">Set password</button></form></section></div>");
    page(a, "Users", "/users", None, msg, &b)
}

async fn users(State(app): AppState, headers: HeaderMap) -> Response {
    match session(&app, &headers, true) {
        Ok(a) => users_page(&app, &a, None).await,
        Err(r) => *r,
    }
}

fn address(s: &str) -> Result<store::Address, Msg> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Msg::err("error: no address given; nothing changed"));
    }
    store::Address::parse(s).map_err(|err| Msg::err(format!("error: {s}: {err}; nothing changed")))
}

/// The new password from a form's two fields.
fn new_password(p: &str, p2: &str) -> Result<String, Msg> {
    if p != p2 {
        return Err(Msg::err("error: the two passwords differ; nothing changed"));
    }
    Ok(p.to_string())
}

async fn user_add(State(app): AppState, headers: HeaderMap, Form(f): Form<UserForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = match address(&f.address).and_then(|ad| Ok((ad, new_password(&f.password, &f.password2)?))) {
        Ok((ad, pw)) => run(&app, Command::UserAdd(ad), Some(pw), None).await,
        Err(m) => m,
    };
    users_page(&app, &a, Some(msg)).await
}

async fn user_passwd(State(app): AppState, headers: HeaderMap, Form(f): Form<UserForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = match address(&f.address).and_then(|ad| Ok((ad, new_password(&f.password, &f.password2)?))) {
        Ok((ad, pw)) => run(&app, Command::UserPasswd(ad), Some(pw), None).await,
        Err(m) => m,
    };
    users_page(&app, &a, Some(msg)).await
}

async fn user_del(State(app): AppState, headers: HeaderMap, Form(f): Form<UserForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = match address(&f.address) {
        Ok(ad) if f.confirm == CONFIRMED => run(&app, Command::UserDel(ad), None, None).await,
        Ok(ad) => Msg::err(format!("error: tick the confirmation box to delete {ad}; nothing changed")),
        Err(m) => m,
    };
    users_page(&app, &a, Some(msg)).await
}

// ---------------------------------------------------------------------------
// Queue

#[derive(Deserialize, Default)]
#[serde(default)]
struct QueueForm {
    csrf: String,
    id: String,
    confirm: String,
}

fn queue_buttons(csrf: &str, id: &str) -> String {
    let (q, i) = (e(id), id_part(id));
    let csrf = csrf_field(csrf);
    format!(
        "<form class=\"inline\" id=\"queue-retry-{i}\" method=\"post\" action=\"/queue/retry\">{csrf}<input type=\"hidden\" name=\"id\" value=\"{q}\"><button type=\"submit\">Retry now</button></form>\
         <form class=\"inline\" id=\"queue-del-{i}\" method=\"post\" action=\"/queue/del\">{csrf}<input type=\"hidden\" name=\"id\" value=\"{q}\"><label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"{CONFIRMED}\" required> confirm</label><button type=\"submit\" class=\"danger\">Delete</button></form>"
    )
}

async fn queue_page(app: &App, a: &Authed, msg: Option<Msg>) -> Response {
    let list = app.with_host(|h| h.store().queue_list()).await;
    let mut b = String::new();
    match list {
        Err(err) => b.push_str(&unavailable("the queue", &err)),
        Ok(l) if l.is_empty() => b.push_str("<p id=\"queue-empty\">The queue is empty: no mail waits for delivery to other domains.</p>\n<table id=\"queue\"></table>\n"),
        Ok(l) => {
            b.push_str("<table id=\"queue\"><tr><th>id</th><th>size</th><th>from</th><th>to</th><th>attempts</th><th>state</th><th>last error</th><th>accepted</th><th></th></tr>\n");
            for q in &l {
                let link = if crate::access::valid_queue_id(&q.id) { format!("<a href=\"/queue/show?id={}\">{}</a>", e(&q.id), e(&q.id)) } else { e(&q.id).to_string() };
                let _ = writeln!(
                    b,
                    "<tr id=\"queue-{}\"><td class=\"key\">{link}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    id_part(&q.id),
                    e(&commands::human_bytes(q.size)),
                    e(&q.from),
                    e(&q.rcpts.join(", ")),
                    q.attempts,
                    e(&q.state),
                    e(q.last_error.as_deref().unwrap_or("")),
                    e(&q.created),
                    queue_buttons(&a.csrf, &q.id)
                );
            }
            b.push_str("</table>\n");
        }
    }
    page(a, "Queue", "/queue", None, msg, &b)
}

async fn queue(State(app): AppState, headers: HeaderMap) -> Response {
    match session(&app, &headers, true) {
        Ok(a) => queue_page(&app, &a, None).await,
        Err(r) => *r,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IdQuery {
    id: String,
}

async fn queue_show(State(app): AppState, headers: HeaderMap, Query(q): Query<IdQuery>) -> Response {
    let a = match session(&app, &headers, true) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if !crate::access::valid_queue_id(&q.id) {
        return queue_page(&app, &a, Some(Msg::err(format!("error: '{}' is not a queue id", q.id)))).await;
    }
    let m = run(&app, Command::QueueShow(q.id.clone()), None, None).await;
    if m.error {
        return queue_page(&app, &a, Some(m)).await;
    }
    let b = format!("<pre id=\"queue-entry\">{}</pre>\n<p>{}</p>\n<p><a href=\"/queue\">Back to the queue</a></p>\n", e(&m.text), queue_buttons(&a.csrf, &q.id));
    page(&a, &format!("Queue entry {}", q.id), "/queue", None, None, &b)
}

fn queue_id(id: &str) -> Result<String, Msg> {
    let id = id.trim();
    if crate::access::valid_queue_id(id) {
        Ok(id.to_string())
    } else {
        Err(Msg::err(format!("error: '{id}' is not a queue id; nothing changed")))
    }
}

async fn queue_retry(State(app): AppState, headers: HeaderMap, Form(f): Form<QueueForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = match queue_id(&f.id) {
        Ok(id) => run(&app, Command::QueueRetry(id), None, None).await,
        Err(m) => m,
    };
    queue_page(&app, &a, Some(msg)).await
}

async fn queue_del(State(app): AppState, headers: HeaderMap, Form(f): Form<QueueForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = match queue_id(&f.id) {
        Ok(id) if f.confirm == CONFIRMED => run(&app, Command::QueueDelete(id), None, None).await,
        Ok(id) => Msg::err(format!("error: tick the confirmation box to delete {id}; nothing changed")),
        Err(m) => m,
    };
    queue_page(&app, &a, Some(msg)).await
}

// ---------------------------------------------------------------------------
// Settings

#[derive(Deserialize, Default)]
#[serde(default)]
struct SetForm {
    csrf: String,
    key: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AdminPasswdForm {
    csrf: String,
    current: String,
    password: String,
    password2: String,
}

fn settings_table(b: &mut String, csrf: &str, which: &str, settings: &[Setting]) {
    let _ = writeln!(b, "<table id=\"{which}-settings\"><tr><th>setting</th><th>value</th><th>change</th><th>what it is</th></tr>");
    for s in settings {
        // A cluster setting's declaration says how to ask for it: a secret's
        // value is never put into the edit field.
        let declared = if which == "cluster" { crate::cluster_keys::key(&s.key).map(|k| k.kind) } else { None };
        let (kind, prefill) = match declared {
            Some(k) if k.is_secret() => ("password", String::new()),
            _ => ("text", s.value.clone()),
        };
        let _ = writeln!(
            b,
            "<tr id=\"{which}-{}\"><td class=\"key\">{}</td><td class=\"value\">{}</td><td><form class=\"inline\" id=\"{which}-set-{}\" method=\"post\" action=\"/settings/{which}\">{}<input type=\"hidden\" name=\"key\" value=\"{}\"><input type=\"{kind}\" name=\"value\" value=\"{}\" autocomplete=\"off\"><button type=\"submit\">Save</button></form></td><td class=\"help\">{}</td></tr>",
            id_part(&s.key),
            e(&s.key),
            e(if s.value.is_empty() { "-" } else { &s.value }),
            id_part(&s.key),
            csrf_field(csrf),
            e(&s.key),
            e(&prefill),
            e(&s.help)
        );
    }
    b.push_str("</table>\n");
}

async fn settings_page(app: &App, a: &Authed, msg: Option<Msg>) -> Response {
    let (node, cluster) = app.with_host(|h| (h.node_settings(), h.store().cluster_settings())).await;
    let mut b = String::from("<section class=\"box\"><h2>This node</h2>\n");
    match node {
        Some(s) => settings_table(&mut b, &a.csrf, "node", &s),
        None => b.push_str("<p id=\"node-settings-none\">No node settings here (this node was started without a config file: its settings are its command line).</p>\n"),
    }
    b.push_str("</section>\n<section class=\"box\"><h2>The cluster (every node, kept in the store)</h2>\n");
    match cluster {
        Ok(s) => settings_table(&mut b, &a.csrf, "cluster", &s),
        Err(err) => b.push_str(&unavailable("the cluster settings", &err)),
    }
    let _ = writeln!(b, "</section>\n<section class=\"box\"><h2>Admin password (console and web page, every node)</h2><form id=\"admin-passwd\" class=\"stack\" method=\"post\" action=\"/settings/admin-passwd\">{}<label>Current password <input type=\"password\" name=\"current\" autocomplete=\"current-password\" required></label><label>New password <input type=\"password\" name=\"password\" autocomplete=\"new-password\" required></label><label>New password again <input type=\"password\" name=\"password2\" autocomplete=\"new-password\" required></label><button type=\"submit\">Change the admin password</button></form></section>", csrf_field(&a.csrf));
    page(a, "Settings", "/settings", None, msg, &b)
}

async fn settings(State(app): AppState, headers: HeaderMap) -> Response {
    match session(&app, &headers, true) {
        Ok(a) => settings_page(&app, &a, None).await,
        Err(r) => *r,
    }
}

/// A key and value from a settings form, the way the console takes them
/// (`node set KEY VALUE`: one word, then the rest with single spaces).
fn key_value(key: &str, value: &str) -> Result<(String, String), Msg> {
    let key = key.trim();
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
        return Err(Msg::err(format!("error: '{key}' is not a setting; nothing changed")));
    }
    let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if value.is_empty() {
        return Err(Msg::err(format!("error: {key}: a value is needed; nothing changed")));
    }
    if value.len() > crate::cluster_keys::MAX_VALUE || value.chars().any(char::is_control) {
        return Err(Msg::err(format!("error: {key}: the value is too long or has control characters; nothing changed")));
    }
    Ok((key.to_string(), value))
}

async fn node_set(State(app): AppState, headers: HeaderMap, Form(f): Form<SetForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = match key_value(&f.key, &f.value) {
        Ok((k, v)) => run(&app, Command::NodeSet(k, v), None, None).await,
        Err(m) => m,
    };
    settings_page(&app, &a, Some(msg)).await
}

async fn cluster_set(State(app): AppState, headers: HeaderMap, Form(f): Form<SetForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = match key_value(&f.key, &f.value) {
        Ok((k, _)) if !crate::cluster_keys::is_key(&k) => Msg::err(format!("error: unknown cluster setting '{k}'; nothing changed")),
        Ok((k, v)) => run(&app, Command::ClusterSet(k, v), None, None).await,
        Err(m) => m,
    };
    settings_page(&app, &a, Some(msg)).await
}

async fn admin_passwd(State(app): AppState, Extension(ClientIp(ip)): Extension<ClientIp>, headers: HeaderMap, Form(f): Form<AdminPasswdForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let new = match new_password(&f.password, &f.password2) {
        Ok(p) => p,
        Err(m) => return settings_page(&app, &a, Some(m)).await,
    };
    // The current password too: a session left open is not enough to
    // take the password over. Failures count like failed logins.
    if let Err(r) = check_admin_password(&app, ip, f.current).await {
        let text = match r {
            Refusal::Wrong(_) => format!("error: the current password is wrong; nothing changed ({})", r.text()),
            _ => format!("error: {}; nothing changed", r.text()),
        };
        return with_status(settings_page(&app, &a, Some(Msg::err(text))).await, r.status());
    }
    let msg = run(&app, Command::AdminPasswd, Some(new), None).await;
    if !msg.error {
        // Sessions that logged in with the old password end.
        app.sessions.end_others(&a.id);
    }
    settings_page(&app, &a, Some(msg)).await
}

// ---------------------------------------------------------------------------
// Certificate

#[derive(Deserialize, Default)]
#[serde(default)]
struct CertForm {
    csrf: String,
    pem: String,
}

async fn cert_page(app: &App, a: &Authed, msg: Option<Msg>) -> Response {
    let info = app.with_host(|h| h.store().cert_show()).await;
    let mut b = String::new();
    match info {
        Ok(c) => {
            b.push_str("<section class=\"box\"><h2>The cluster's certificate (every node presents it)</h2><table id=\"cert\">\n");
            let valid = format!("{} to {}", c.not_before, c.not_after);
            let days = c.expires_in_days.to_string();
            let names = c.names.join(", ");
            for (k, v, id) in [("source", &c.source, "cert-source"), ("subject", &c.subject, "cert-subject"), ("names", &names, "cert-names"), ("issuer", &c.issuer, "cert-issuer"), ("valid", &valid, "cert-valid"), ("days left", &days, "cert-days"), ("sha256", &c.sha256, "cert-sha256"), ("file", &c.path, "cert-path")] {
                let _ = writeln!(b, "<tr><th>{k}</th><td id=\"{id}\">{}</td></tr>", e(v));
            }
            if let Some(w) = &c.warning {
                let _ = writeln!(b, "<tr><th>warning</th><td id=\"cert-warning\">{}</td></tr>", e(w));
            }
            b.push_str("</table></section>\n");
        }
        Err(err) => b.push_str(&unavailable("the certificate", &err)),
    }
    let csrf = csrf_field(&a.csrf);
    let _ = writeln!(b, "<section class=\"box\"><h2>Upload a certificate</h2><p>The PEM certificate chain (leaf first) and its private key, pasted or as a file (at most {} KiB).</p><form id=\"cert-upload\" class=\"stack\" method=\"post\" action=\"/cert/upload\" enctype=\"multipart/form-data\">{csrf}<label>PEM <textarea name=\"pem\" spellcheck=\"false\"></textarea></label><label>or a file <input type=\"file\" name=\"pem_file\" accept=\".pem,.crt,.key,.txt\"></label><button type=\"submit\">Upload</button></form></section>", cert::MAX_PEM_BYTES / 1024);
    let _ = writeln!(b, "<section class=\"box\"><h2>Self-signed certificate</h2><form id=\"cert-regenerate\" class=\"inline\" method=\"post\" action=\"/cert/regenerate\">{csrf}<label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"{CONFIRMED}\" required> replace the certificate with a new self-signed one</label><button type=\"submit\" class=\"danger\">Regenerate</button></form></section>");
    page(a, "Certificate", "/cert", None, msg, &b)
}

async fn cert(State(app): AppState, headers: HeaderMap) -> Response {
    match session(&app, &headers, true) {
        Ok(a) => cert_page(&app, &a, None).await,
        Err(r) => *r,
    }
}

/// The upload form comes as multipart/form-data (with the file input) or
/// as a plain form (the textarea only).
async fn cert_upload(State(app): AppState, headers: HeaderMap, req: Request) -> Response {
    let a = match post_session(&app, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (csrf, pem) = if multipart::is_multipart(&ct) {
        let body = match Bytes::from_request(req, &()).await {
            Ok(b) => b,
            Err(rej) => return rej.into_response(),
        };
        let parts = match multipart::parse(&ct, &body) {
            Ok(p) => p,
            Err(err) => return refused(&format!("refused: {err}")),
        };
        let field = |n: &str| parts.iter().find(|p| p.name == n).map(|p| p.data.as_slice());
        let csrf = String::from_utf8_lossy(field("csrf").unwrap_or_default()).into_owned();
        let file = field("pem_file").filter(|d| !d.iter().all(u8::is_ascii_whitespace));
        let pem = match file.or(field("pem")).map(|d| String::from_utf8(d.to_vec())) {
            Some(Ok(t)) => Ok(t),
            Some(Err(_)) => Err(Msg::err("error: the certificate file is not text (PEM); nothing changed")),
            None => Ok(String::new()),
        };
        (csrf, pem)
    } else {
        match Form::<CertForm>::from_request(req, &()).await {
            Ok(Form(f)) => (f.csrf, Ok(f.pem)),
            Err(rej) => return rej.into_response(),
        }
    };
    if let Err(r) = check_csrf(&a, &csrf) {
        return *r;
    }
    let msg = match pem {
        Ok(p) if p.trim().is_empty() => Msg::err("error: paste the certificate chain and key, or choose a file; nothing changed"),
        Ok(p) => run(&app, Command::CertUpload, None, Some(p)).await,
        Err(m) => m,
    };
    cert_page(&app, &a, Some(msg)).await
}

async fn cert_regenerate(State(app): AppState, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = if f.confirm == CONFIRMED { run(&app, Command::CertRegenerate, None, None).await } else { Msg::err("error: tick the confirmation box to replace the certificate; nothing changed") };
    cert_page(&app, &a, Some(msg)).await
}

// ---------------------------------------------------------------------------
// Log

async fn log(State(app): AppState, headers: HeaderMap) -> Response {
    let a = match session(&app, &headers, true) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let lines = app.with_host(|h| h.log_tail(LOG_PAGE_LINES)).await;
    let mut b = format!("<p>The last {LOG_PAGE_LINES} lines of this node's log, oldest first.</p>\n<pre id=\"log\">");
    for l in &lines {
        let _ = writeln!(b, "{}", e(l));
    }
    b.push_str("</pre>\n");
    page(&a, "Log", "/log", None, None, &b)
}

// ---------------------------------------------------------------------------
// Actions: restart a service, reboot, power off

#[derive(Deserialize, Default)]
#[serde(default)]
struct ServiceForm {
    csrf: String,
    service: String,
}

async fn actions_page(app: &App, a: &Authed, msg: Option<Msg>) -> Response {
    let (services, can_power) = app.with_host(|h| (h.node().services, h.can_power())).await;
    let csrf = csrf_field(&a.csrf);
    let mut b = String::new();
    if !services.is_empty() {
        let _ = write!(b, "<section class=\"box\"><h2>Restart a service</h2><form id=\"restart\" class=\"inline\" method=\"post\" action=\"/actions/restart\">{csrf}<select name=\"service\">");
        for s in &services {
            let _ = write!(b, "<option value=\"{}\">{} ({})</option>", e(&s.name), e(&s.name), e(&s.state));
        }
        b.push_str("</select><button type=\"submit\">Restart</button></form></section>\n");
    }
    if can_power {
        for (id, what, label) in [("reboot", "stop the services cleanly and restart the box", "Reboot"), ("poweroff", "stop the services cleanly and power the box off", "Power off")] {
            let _ = writeln!(b, "<section class=\"box\"><h2>{label}</h2><form id=\"{id}\" class=\"inline\" method=\"post\" action=\"/actions/{id}\">{csrf}<label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"{CONFIRMED}\" required> {what}</label><button type=\"submit\" class=\"danger\">{label}</button></form></section>");
        }
    }
    if services.is_empty() && !can_power {
        b.push_str("<p id=\"no-actions\">Nothing to restart, reboot or power off here: this node runs as a process (use the system's service manager).</p>\n");
    }
    page(a, "Actions", "/actions", None, msg, &b)
}

async fn actions(State(app): AppState, headers: HeaderMap) -> Response {
    match session(&app, &headers, true) {
        Ok(a) => actions_page(&app, &a, None).await,
        Err(r) => *r,
    }
}

async fn restart(State(app): AppState, headers: HeaderMap, Form(f): Form<ServiceForm>) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let s = f.service.trim();
    let msg = if s.is_empty() || s.len() > MAX_SERVICE || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Msg::err(format!("error: '{s}' is not a service; nothing done"))
    } else {
        run(&app, Command::Restart(s.to_string()), None, None).await
    };
    actions_page(&app, &a, Some(msg)).await
}

async fn power(app: Arc<App>, headers: HeaderMap, f: CsrfForm, cmd: Command) -> Response {
    let a = match check_post(&app, &headers, &f.csrf) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let msg = if f.confirm == CONFIRMED { run(&app, cmd, None, None).await } else { Msg::err("error: tick the confirmation box; nothing done") };
    actions_page(&app, &a, Some(msg)).await
}

async fn reboot(State(app): AppState, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    power(app, headers, f, Command::Reboot).await
}

async fn poweroff(State(app): AppState, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    power(app, headers, f, Command::Poweroff).await
}

// ---------------------------------------------------------------------------
// Fuzz targets

/// Decodes a urlencoded body as each form and query the page takes, with
/// the extractors its handlers use, and runs the checks the handlers make
/// on the fields. For each: its name, and its fields (name and value;
/// `None` for an optional field the body did not give) or `None` when the
/// extractor refuses the body.
#[doc(hidden)]
pub async fn decode_forms(body: &[u8]) -> Vec<(&'static str, Option<Vec<(&'static str, Option<String>)>>)> {
    trait Value {
        fn value(self) -> Option<String>;
    }
    impl Value for String {
        fn value(self) -> Option<String> {
            Some(self)
        }
    }
    impl Value for Option<String> {
        fn value(self) -> Option<String> {
            self
        }
    }
    async fn form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
        let req = axum::http::Request::builder().method("POST").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(axum::body::Body::from(body.to_vec())).ok()?;
        Form::<T>::from_request(req, &()).await.ok().map(|Form(f)| f)
    }
    fn query<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
        let uri = axum::http::Uri::try_from([&b"/?"[..], body].concat()).ok()?;
        Query::<T>::try_from_uri(&uri).ok().map(|Query(q)| q)
    }
    macro_rules! fields {
        ($name:literal, $v:expr, $($f:ident),*) => {
            ($name, $v.map(|v| vec![$((stringify!($f), Value::value(v.$f))),*]))
        };
    }
    let user = form::<UserForm>(body).await;
    if let Some(f) = &user {
        let _ = address(&f.address);
        let _ = new_password(&f.password, &f.password2);
    }
    let queue = form::<QueueForm>(body).await;
    if let Some(f) = &queue {
        let _ = queue_id(&f.id);
    }
    let set = form::<SetForm>(body).await;
    if let Some(f) = &set {
        let _ = key_value(&f.key, &f.value);
    }
    let id = query::<IdQuery>(body);
    if let Some(q) = &id {
        let _ = queue_id(&q.id);
    }
    vec![
        fields!("login", form::<LoginForm>(body).await, csrf, password),
        fields!("csrf", form::<CsrfForm>(body).await, csrf, confirm),
        fields!("user", user, csrf, address, password, password2, confirm),
        fields!("queue", queue, csrf, id, confirm),
        fields!("set", set, csrf, key, value),
        fields!("admin-passwd", form::<AdminPasswdForm>(body).await, csrf, current, password, password2),
        fields!("cert", form::<CertForm>(body).await, csrf, pem),
        fields!("service", form::<ServiceForm>(body).await, csrf, service),
        fields!("login-query", query::<LoginQuery>(body), expired),
        fields!("dashboard-query", query::<DashQuery>(body), auto),
        fields!("id-query", id, id),
    ]
}
