//! Sessions, CSRF tokens, cookies, the same-origin check for forms and the
//! delay after failed logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use rand::RngCore as _;

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
/// A client's failures are forgotten this long after its delay ran out.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Clients whose failures are remembered at most (memory bound).
pub const MAX_TRACKED_CLIENTS: usize = 4096;
/// Password checks (argon2id, about 19 MiB each) under way at once.
pub const MAX_PASSWORD_CHECKS: usize = 2;
/// How long a login waits for a free password check before 503.
pub const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(5);
/// IPv6 clients are counted per /64 (one host usually has a whole /64).
const IPV6_CLIENT_PREFIX: u32 = 64;

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
        let now = Instant::now();
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
        let Some(id) = id else { return Lookup::None };
        let now = Instant::now();
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

#[derive(Debug, Clone, Copy)]
struct Client {
    failures: u32,
    /// No password check for this client before then.
    until: Instant,
    /// A check for this client is under way.
    checking: bool,
}

/// Failed logins per client address.
#[derive(Default)]
pub struct Lockout {
    map: Mutex<HashMap<IpAddr, Client>>,
}

/// While it lives, a password check for a client is under way; dropping
/// it without [`CheckGuard::failed`] or [`CheckGuard::succeeded`] counts
/// as neither.
pub struct CheckGuard<'a> {
    lockout: &'a Lockout,
    key: IpAddr,
}

/// The delay after `failures` failed logins in a row.
pub fn delay_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(u32::BITS - 1);
    LOGIN_DELAY_START.saturating_mul(1u32 << doublings.min(30)).min(LOGIN_DELAY_MAX)
}

/// The address failures are counted under.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - IPV6_CLIENT_PREFIX);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

impl Lockout {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Client>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a password check for `ip`, or says how long it must wait
    /// (it is locked out, or a check of its is under way).
    pub fn begin(&self, ip: IpAddr) -> Result<CheckGuard<'_>, Duration> {
        let key = client_key(ip);
        let now = Instant::now();
        let mut m = self.lock();
        if !m.contains_key(&key) && m.len() >= MAX_TRACKED_CLIENTS {
            m.retain(|_, c| c.checking || c.until + FAILURE_MEMORY > now);
            if m.len() >= MAX_TRACKED_CLIENTS {
                // Forget the one whose delay ran out first.
                if let Some(k) = m.iter().filter(|(_, c)| !c.checking).min_by_key(|(_, c)| c.until).map(|(k, _)| *k) {
                    m.remove(&k);
                }
            }
        }
        let c = m.entry(key).or_insert(Client { failures: 0, until: now, checking: false });
        if c.checking {
            return Err(LOGIN_DELAY_START);
        }
        if c.until > now {
            return Err(c.until - now);
        }
        if c.until + FAILURE_MEMORY <= now {
            c.failures = 0;
        }
        c.checking = true;
        Ok(CheckGuard { lockout: self, key })
    }
}

impl CheckGuard<'_> {
    /// The password was wrong: returns the delay before the next attempt.
    pub fn failed(self) -> Duration {
        let mut m = self.lockout.lock();
        let c = m.entry(self.key).or_insert(Client { failures: 0, until: Instant::now(), checking: false });
        c.failures = c.failures.saturating_add(1);
        let d = delay_after(c.failures);
        c.until = Instant::now() + d;
        d
    }

    /// The password was right: the client's failures are forgotten.
    pub fn succeeded(self) {
        self.lockout.lock().remove(&self.key);
    }
}

impl Drop for CheckGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.lockout.lock().get_mut(&self.key) {
            c.checking = false;
        }
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
    fn delay_doubles_up_to_the_maximum() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(1), LOGIN_DELAY_START);
        assert_eq!(delay_after(2), LOGIN_DELAY_START * 2);
        assert_eq!(delay_after(3), LOGIN_DELAY_START * 4);
        assert_eq!(delay_after(100), LOGIN_DELAY_MAX);
        assert_eq!(delay_after(u32::MAX), LOGIN_DELAY_MAX);
        let mut last = Duration::ZERO;
        for n in 0..64 {
            let d = delay_after(n);
            assert!(d >= last && d <= LOGIN_DELAY_MAX);
            last = d;
        }
    }

    #[test]
    fn lockout_per_client() {
        let l = Lockout::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g = l.begin(a).unwrap();
        // A second check from the same client while one runs: refused.
        assert!(l.begin(a).is_err());
        assert_eq!(g.failed(), LOGIN_DELAY_START);
        let wait = l.begin(a).err().unwrap();
        assert!(wait > Duration::ZERO && wait <= LOGIN_DELAY_START);
        // Another client is not affected.
        l.begin(b).unwrap().succeeded();
        // The same /64 is the same client.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        l.begin(v6a).unwrap().failed();
        assert!(l.begin(v6b).is_err());
        assert!(l.begin("2001:db8:1:3::1".parse().unwrap()).is_ok());
        // A v4-mapped address is the v4 client.
        assert!(l.begin("::ffff:192.0.2.1".parse().unwrap()).is_err());
    }

    #[test]
    fn sessions_end() {
        let s = Sessions::new(Duration::from_millis(100), Duration::from_millis(250));
        assert_eq!(s.check(None, true), Lookup::None);
        let (id, csrf) = s.create();
        assert_eq!(s.check(Some(&id), true), Lookup::Valid { csrf: csrf.clone() });
        assert_eq!(s.check(Some("nonsense"), true), Lookup::Ended);
        // Kept alive by requests, but not beyond the maximum.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(60));
            assert!(matches!(s.check(Some(&id), true), Lookup::Valid { .. }));
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(Some(&id), true), Lookup::Ended);
        // Idle: requests that do not touch do not keep it.
        let (id, _) = s.create();
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(s.check(Some(&id), false), Lookup::Valid { .. }));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(Some(&id), false), Lookup::Ended);
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
