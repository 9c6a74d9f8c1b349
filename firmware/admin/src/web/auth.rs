//! Sessions, CSRF tokens, cookies, the same-origin check for forms and the
//! delay after failed logins.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use rand::RngCore as _;
use store::login_failures::{LoginFailures, Policy};
use store::Verdict;

/// The session cookie.
pub const SESSION_COOKIE: &str = "mailfort_session";
/// The login form's pre-session CSRF token (double-submit cookie).
pub const LOGIN_COOKIE: &str = "mailfort_login";
/// Random bytes in a session id and a CSRF token.
pub const TOKEN_BYTES: usize = 32;
/// Sessions one node keeps at most; at the limit the oldest goes.
pub const MAX_SESSIONS: usize = 64;
/// The first failed login from a client delays its next attempt this
/// long; each further failure doubles the delay, up to the maximum.
pub const LOGIN_DELAY_START: Duration = Duration::from_secs(1);
pub const LOGIN_DELAY_MAX: Duration = Duration::from_secs(30);
/// Password checks (argon2id, a 19 MiB work buffer each) under way at once
/// in the process, this page's and the mail daemon's together; more wait
/// in the verifier's bounded queue, and beyond it a login gets 503.
pub const MAX_PASSWORD_CHECKS: usize = store::password::CHECK_WORKERS;

/// A new random token: [`TOKEN_BYTES`] from the OS, base64url.
pub fn new_token() -> String {
    let mut b = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Whether `s` has the form of a token this module makes.
pub fn looks_like_token(s: &str) -> bool {
    s.len() == (TOKEN_BYTES * 4).div_ceil(3) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compares without leaving the position of the first difference in the
/// time taken (only the lengths, which are public, may show).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A cookie's value from the request's Cookie headers (RFC 6265 5.4:
/// `name=value` pairs separated by `; `).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// A Set-Cookie value for a token: not readable by scripts, sent only over
/// TLS and only with requests from this site (RFC 6265 4.1.2.5, 4.1.2.6;
/// SameSite from RFC 6265bis). No Max-Age: it ends with the browser
/// session, and the server ends it earlier.
pub fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; HttpOnly; Secure; SameSite=Strict; Path=/")
}

/// A Set-Cookie value that removes the cookie (RFC 6265 4.1.2.2: Max-Age
/// of zero expires it at once).
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Max-Age=0; HttpOnly; Secure; SameSite=Strict; Path=/")
}

/// Refuses a form post a browser says comes from elsewhere. Browsers send
/// `Sec-Fetch-Site` (Fetch Metadata) and, on POST, `Origin` (RFC 6454 7);
/// under our `Referrer-Policy: no-referrer` a same-origin form's Origin is
/// `null`, so `null` and absence are let through (the CSRF token and the
/// SameSite cookies still hold).
pub fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err("the form was sent from another site");
        }
    }
    if let Some(origin) = get("origin") {
        if origin != "null" {
            let host = get("host").ok_or("the request names no host")?;
            if !origin.eq_ignore_ascii_case(&format!("https://{host}")) {
                return Err("the form was sent from another origin");
            }
        }
    }
    Ok(())
}

struct Session {
    created: Instant,
    last_seen: Instant,
    csrf: String,
}

/// What a request's session cookie stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No cookie at all.
    None,
    /// A cookie for a session that has ended (idle, too old, logged out,
    /// or this node restarted since).
    Ended,
    Valid { csrf: String },
}

/// The sessions of this node, in memory.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max: Duration,
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Sessions {
        Sessions { map: Mutex::new(HashMap::new()), idle, max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.max
    }

    /// A new session; returns its id and CSRF token.
    pub fn create(&self) -> (String, String) {
        self.create_at(Instant::now())
    }

    fn create_at(&self, now: Instant) -> (String, String) {
        let mut m = self.lock();
        m.retain(|_, s| self.alive(s, now));
        while m.len() >= MAX_SESSIONS {
            let Some(oldest) = m.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone()) else { break };
            m.remove(&oldest);
        }
        let (id, csrf) = (new_token(), new_token());
        m.insert(id.clone(), Session { created: now, last_seen: now, csrf: csrf.clone() });
        (id, csrf)
    }

    /// The session of `id`, if it still runs. `touch`: the request counts
    /// as activity (it resets the idle time).
    pub fn check(&self, id: Option<&str>, touch: bool) -> Lookup {
        self.check_at(id, touch, Instant::now())
    }

    fn check_at(&self, id: Option<&str>, touch: bool, now: Instant) -> Lookup {
        let Some(id) = id else { return Lookup::None };
        let mut m = self.lock();
        match m.get_mut(id) {
            Some(s) if self.alive(s, now) => {
                if touch {
                    s.last_seen = now;
                }
                Lookup::Valid { csrf: s.csrf.clone() }
            }
            Some(_) => {
                m.remove(id);
                Lookup::Ended
            }
            None => Lookup::Ended,
        }
    }

    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session but `keep` (after the admin password changed).
    pub fn end_others(&self, keep: &str) {
        self.lock().retain(|k, _| k == keep);
    }
}

/// Failed logins: counted in the store with the mail daemon's (one record
/// per client address and network for SMTP, POP3 and this page, on every
/// node: [`store::login_failures`]), and on this node at most one password
/// check at a time per client address.
pub struct Lockout {
    root: PathBuf,
    /// This node's name, asked for at the first login (it may take a store
    /// call).
    node: Box<dyn Fn() -> String + Send + Sync>,
    failures: OnceLock<LoginFailures>,
    checking: Mutex<HashSet<IpAddr>>,
}

/// While it lives, a password check for a client is under way; dropping
/// it without [`CheckGuard::failed`] or [`CheckGuard::succeeded`] counts
/// as neither.
pub struct CheckGuard {
    lockout: Arc<Lockout>,
    ip: IpAddr,
}

/// How this page turns failures into delays and refusals.
pub fn policy() -> Policy {
    Policy { delay_start: LOGIN_DELAY_START, delay_max: LOGIN_DELAY_MAX, ..Policy::default() }
}

impl Lockout {
    /// The lockout for the store at `root`; `node` names this node (the
    /// failures are written as `<node>-admin`).
    pub fn new(root: PathBuf, node: Box<dyn Fn() -> String + Send + Sync>) -> Lockout {
        Lockout { root, node, failures: OnceLock::new(), checking: Mutex::new(HashSet::new()) }
    }

    fn failures(&self) -> &LoginFailures {
        self.failures.get_or_init(|| LoginFailures::new(&self.root, &format!("{}-admin", (self.node)()), policy()))
    }

    fn checking(&self) -> std::sync::MutexGuard<'_, HashSet<IpAddr>> {
        self.checking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a password check for `ip`, or says how long it must wait
    /// (it is locked out, or a check of its is under way). Blocks up to
    /// the store's deadline: call it off the async threads.
    pub fn begin(self: &Arc<Self>, ip: IpAddr) -> Result<CheckGuard, Duration> {
        let ip = ip.to_canonical();
        if let Verdict::Refused { retry_after, .. } = self.failures().check(ip) {
            return Err(retry_after);
        }
        if !self.checking().insert(ip) {
            return Err(LOGIN_DELAY_START);
        }
        Ok(CheckGuard { lockout: self.clone(), ip })
    }
}

impl CheckGuard {
    /// The password was wrong: returns the delay before the next attempt.
    /// Blocks up to the store's deadline.
    pub fn failed(self) -> Duration {
        self.lockout.failures().failed(self.ip)
    }

    /// The password was right: this node forgets the address's failures.
    pub fn succeeded(self) {
        self.lockout.failures().succeeded(self.ip);
    }
}

impl Drop for CheckGuard {
    fn drop(&mut self) {
        self.lockout.checking().remove(&self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_recognised() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(looks_like_token(&a));
        assert!(!looks_like_token(&a[1..]));
        assert!(!looks_like_token(&format!("{}=", &a[1..])));
        assert!(constant_time_eq(a.as_bytes(), a.clone().as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), b.as_bytes()));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        assert_eq!(policy().delay_after(0), Duration::ZERO);
        assert_eq!(policy().delay_after(1), LOGIN_DELAY_START);
        assert_eq!(policy().delay_after(2), LOGIN_DELAY_START * 2);
        assert_eq!(policy().delay_after(3), LOGIN_DELAY_START * 4);
        assert_eq!(policy().delay_after(100), LOGIN_DELAY_MAX);
        assert_eq!(policy().delay_after(u32::MAX), LOGIN_DELAY_MAX);
        let mut last = Duration::ZERO;
        for n in 0..64 {
            let d = policy().delay_after(n);
            assert!(d >= last && d <= LOGIN_DELAY_MAX);
            last = d;
        }
    }

    #[test]
    fn lockout_per_client() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cluster")).unwrap();
        let l = Arc::new(Lockout::new(dir.path().to_path_buf(), Box::new(|| "n1".into())));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g = l.begin(a).unwrap();
        // A second check from the same client while one runs: refused.
        assert!(l.begin(a).is_err());
        let failed_at = Instant::now();
        assert_eq!(g.failed(), LOGIN_DELAY_START);
        // The delay refuses the client until it has run out. A loaded
        // machine may take longer than the delay between these steps, so
        // each refusal is asserted only while the delay surely still runs.
        let running = || failed_at.elapsed() < LOGIN_DELAY_START / 2;
        let (in_time, r) = (running(), l.begin(a));
        if in_time {
            let wait = r.err().expect("refused during the delay");
            assert!(wait > Duration::ZERO && wait <= LOGIN_DELAY_START);
        }
        // A v4-mapped address is the v4 client.
        let (in_time, r) = (running(), l.begin("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!in_time || r.is_err());
        drop(r);
        // Another client is not affected.
        l.begin(b).unwrap().succeeded();
        // The failure is in the store, for the mail daemon and other nodes.
        let mail = store::LoginFailures::new(dir.path(), "n2-mail", policy());
        let (in_time, v) = (running(), mail.check(a));
        assert!(!in_time || matches!(v, Verdict::Refused { .. }), "{v:?}");
        assert_eq!(mail.counts(a), (1, 1));
        assert!(std::fs::metadata(dir.path().join(store::login_failures::FAILURES_DIR).join("n1-admin")).is_ok());
    }

    #[test]
    fn sessions_end() {
        // The clock is the test's: 60 ms steps against 100 ms idle and 250
        // ms in all, however slowly the machine runs the test.
        let s = Sessions::new(Duration::from_millis(100), Duration::from_millis(250));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(s.check_at(None, true, t0), Lookup::None);
        let (id, csrf) = s.create_at(t0);
        assert_eq!(s.check_at(Some(&id), true, t0), Lookup::Valid { csrf: csrf.clone() });
        assert_eq!(s.check_at(Some("nonsense"), true, t0), Lookup::Ended);
        // Kept alive by requests, but not beyond the maximum.
        for step in 1..=4 {
            assert!(matches!(s.check_at(Some(&id), true, at(60 * step)), Lookup::Valid { .. }), "step {step}");
        }
        assert_eq!(s.check_at(Some(&id), true, at(300)), Lookup::Ended);
        // Idle: requests that do not touch do not keep it.
        let (id, _) = s.create_at(at(300));
        assert!(matches!(s.check_at(Some(&id), false, at(360)), Lookup::Valid { .. }));
        assert_eq!(s.check_at(Some(&id), false, at(420)), Lookup::Ended);
        let (a, _) = s.create();
        let (b, _) = s.create();
        s.end_others(&a);
        assert!(matches!(s.check(Some(&a), true), Lookup::Valid { .. }));
        assert_eq!(s.check(Some(&b), true), Lookup::Ended);
        s.end(&a);
        assert_eq!(s.check(Some(&a), true), Lookup::Ended);
    }

    #[test]
    fn session_count_is_bounded() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let first = s.create().0;
        for _ in 0..MAX_SESSIONS {
            s.create();
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        assert_eq!(s.check(Some(&first), true), Lookup::Ended);
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; mailfort_session=xyz".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "mailfort"), None);
        let c = set_cookie(SESSION_COOKIE, "t");
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        let mut h = HeaderMap::new();
        h.insert("host", "mail.example.test:8443".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert("origin", "null".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert("origin", "https://mail.example.test:8443".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert("origin", "https://evil.test".parse().unwrap());
        assert!(same_origin(&h).is_err());
        h.insert("origin", "http://mail.example.test:8443".parse().unwrap());
        assert!(same_origin(&h).is_err());
        h.remove("origin");
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(same_origin(&h).is_err());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(same_origin(&h).is_ok());
    }
}
