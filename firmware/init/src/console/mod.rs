//! The console: a line-oriented shell over the command set in
//! [`commands`], for the serial line of a box (with a login) and for
//! `mailfort console` on a terminal (as a process, against a store
//! directory). Plain prompts and plain lines, so it works over 115200 baud
//! and through any terminal, and can be driven by a script.

pub mod commands;

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use store::{Address, Store};

use commands::{Action, Command, Host, LiveNode, NodeView, StoreReport};

/// Longest input line taken (longer ones are refused whole).
pub const MAX_INPUT: usize = 1024;
/// Commands kept for `history`.
pub const HISTORY_MAX: usize = 100;
/// After a wrong admin password the console waits this long, doubling
/// with each further failure up to the maximum, so that guessing over the
/// serial line is slow.
pub const LOGIN_DELAY_START: Duration = Duration::from_secs(1);
pub const LOGIN_DELAY_MAX: Duration = Duration::from_secs(16);
/// How long `status` waits for the store; past it the store is reported
/// as not answering (a hard NFS mount of a storage box that is down).
pub const STORE_STATUS_DEADLINE: Duration = Duration::from_secs(3);
/// How long an account change may take (argon2 hashing included, slow
/// under emulation).
pub const STORE_CHANGE_DEADLINE: Duration = Duration::from_secs(60);
/// The clock-file name administrative reads of the live set use.
const ADMIN_CLOCK: &str = "admin";

/// Hashes a password the way the store does (argon2id, PHC string).
pub fn hash_password(pw: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(pw.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

pub fn verify_password(hash: &str, pw: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
}

/// Checks a new password before it is hashed.
pub fn check_new_password(pw: &str) -> Result<(), String> {
    if pw.is_empty() {
        return Err("the password is empty".into());
    }
    if pw.len() > store::accounts::MAX_PASSWORD {
        return Err(format!("the password is longer than {} bytes", store::accounts::MAX_PASSWORD));
    }
    if pw.chars().any(|c| c.is_control()) {
        return Err("the password contains control characters".into());
    }
    Ok(())
}

/// The store as the console reaches it: every call runs in a helper
/// thread with a deadline, so a store that hangs (a hard NFS mount whose
/// server is down) never hangs the console. At most one call is stuck at a
/// time; further calls are refused until it returns.
#[derive(Clone)]
pub struct StoreAccess {
    root: PathBuf,
    busy: Arc<AtomicBool>,
}

impl StoreAccess {
    pub fn new(root: &Path) -> StoreAccess {
        StoreAccess { root: root.to_path_buf(), busy: Arc::new(AtomicBool::new(false)) }
    }

    fn call<T: Send + 'static>(&self, deadline: Duration, f: impl FnOnce(&Store) -> Result<T, String> + Send + 'static) -> Result<T, String> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err("the store has not answered an earlier request yet".into());
        }
        let (tx, rx) = mpsc::channel();
        let (root, busy) = (self.root.clone(), self.busy.clone());
        let spawned = std::thread::Builder::new().name("store-call".into()).spawn(move || {
            let r = Store::open(&root).map_err(|e| e.to_string()).and_then(|s| f(&s));
            busy.store(false, Ordering::Release);
            let _ = tx.send(r);
        });
        if let Err(e) = spawned {
            self.busy.store(false, Ordering::Release);
            return Err(format!("cannot start a thread: {e}"));
        }
        match rx.recv_timeout(deadline) {
            Ok(r) => r,
            Err(_) => Err(format!("the store at {} does not answer within {} s", self.root.display(), deadline.as_secs())),
        }
    }

    pub fn report(&self) -> Result<StoreReport, String> {
        let root = self.root.display().to_string();
        self.call(STORE_STATUS_DEADLINE, move |s| {
            s.probe().map_err(|e| e.to_string())?;
            let live = cluster::live::read_live_set(s, ADMIN_CLOCK).map_err(|e| e.to_string())?;
            let announcer = match s.lease_holder(cluster::announcer::ANNOUNCER_LEASE, ADMIN_CLOCK).map_err(|e| e.to_string())? {
                Some((h, age)) => format!("{} (refreshed {:.1}s ago{})", h.node, age.as_secs_f64(), if live.holder_alive(&h) && age <= cluster::announcer::LEASE_TTL { "" } else { ", stale" }),
                None => "nobody".into(),
            };
            let st = s.settings();
            let dns = match &st.dns {
                Some(d) => format!("zone {} on {} (TTL {} s)", d.zone, d.server, d.ttl),
                None => "not configured".into(),
            };
            Ok(StoreReport {
                root,
                store_id: st.store_id.clone(),
                domains: st.domains.clone(),
                hostname: st.hostname.clone(),
                accounts: s.accounts().list().map(|l| l.len()).unwrap_or(0),
                live: live
                    .nodes
                    .iter()
                    .map(|n| LiveNode {
                        node: n.info.node.clone(),
                        rank: n.info.rank,
                        state: (if n.live { "live" } else if n.info.state == cluster::live::STATE_STOPPED { "stop" } else { "dead" }).into(),
                        age: format!("{:.1}s", n.age.as_secs_f64()),
                        addresses: n.info.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
                    })
                    .collect(),
                announcer,
                dns,
            })
        })
    }

    pub fn user_list(&self) -> Result<Vec<Address>, String> {
        self.call(STORE_STATUS_DEADLINE, |s| s.accounts().list().map_err(|e| e.to_string()))
    }

    pub fn user_add(&self, a: &Address, pw: &str) -> Result<(), String> {
        let (a, pw) = (a.clone(), pw.to_string());
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            s.accounts().add(&a, &pw, &s.settings().domains).map_err(|e| e.to_string())?;
            s.ensure_maildir(&a).map(drop).map_err(|e| e.to_string())
        })
    }

    pub fn user_passwd(&self, a: &Address, pw: &str) -> Result<(), String> {
        let (a, pw) = (a.clone(), pw.to_string());
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            if !s.accounts().exists(&a).map_err(|e| e.to_string())? {
                return Err(format!("{a} does not exist"));
            }
            s.accounts().set_password(&a, &pw).map_err(|e| e.to_string())
        })
    }

    pub fn user_del(&self, a: &Address) -> Result<String, String> {
        let a = a.clone();
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            s.accounts().delete(&a).map_err(|e| e.to_string())?;
            Ok(s.maildir_path(&a).display().to_string())
        })
    }
}

/// `mailfort console --store DIR`: the command set against a store, as a
/// process on this machine (no box, no login: whoever runs it can already
/// read the store).
pub struct ProcessHost {
    pub store: StoreAccess,
}

impl Host for ProcessHost {
    fn node(&self) -> Option<NodeView> {
        None
    }
    fn store_report(&self) -> Result<StoreReport, String> {
        self.store.report()
    }
    fn user_list(&self) -> Result<Vec<Address>, String> {
        self.store.user_list()
    }
    fn user_add(&self, a: &Address, pw: &str) -> Result<(), String> {
        self.store.user_add(a, pw)
    }
    fn user_passwd(&self, a: &Address, pw: &str) -> Result<(), String> {
        self.store.user_passwd(a, pw)
    }
    fn user_del(&self, a: &Address) -> Result<String, String> {
        self.store.user_del(a)
    }
    fn log_tail(&self, n: usize) -> Vec<String> {
        crate::log::tail(n)
    }
    fn settings(&self) -> Option<crate::settings::NodeSettings> {
        None
    }
    fn set_setting(&self, _: &str, _: &str) -> Result<(), String> {
        Err("no box settings here (this is not an appliance console)".into())
    }
    fn set_admin_hash(&self, _: &str) -> Result<(), String> {
        Err("no console password here (this is not an appliance console)".into())
    }
    fn can_power(&self) -> bool {
        false
    }
}

/// A terminal: lines in, text out, and (for a real terminal) a descriptor
/// whose echo is turned off for passwords.
pub struct Terminal<'a> {
    pub input: &'a mut dyn BufRead,
    pub output: &'a mut dyn Write,
    pub echo_fd: Option<libc::c_int>,
    /// On the box's serial line: end the session after this long without
    /// input, so a console left logged in does not stay open.
    pub idle_logout: Option<Duration>,
}

/// A box's console session ends after this long without input.
pub const IDLE_LOGOUT: Duration = Duration::from_secs(15 * 60);

/// What ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `logout`, or the input ended.
    Logout,
    Reboot,
    Poweroff,
}

impl Terminal<'_> {
    fn say(&mut self, text: &str) -> io::Result<()> {
        if !text.is_empty() {
            writeln!(self.output, "{text}")?;
        }
        self.output.flush()
    }

    fn prompt(&mut self, p: &str) -> io::Result<()> {
        write!(self.output, "{p}")?;
        self.output.flush()
    }

    /// One line without its end; None at end of input. Over-long lines are
    /// read to their end and refused.
    fn read_line(&mut self) -> io::Result<Option<Result<String, String>>> {
        if let (Some(fd), Some(idle)) = (self.echo_fd, self.idle_logout) {
            // A terminal in canonical mode hands over one line per read,
            // so nothing is left buffered between lines: poll the
            // descriptor itself.
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let ms = libc::c_int::try_from(idle.as_millis()).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd for the duration of the call.
            if unsafe { libc::poll(&mut p, 1, ms) } == 0 {
                self.say("\nidle for too long: logged out")?;
                return Ok(None);
            }
        }
        let mut buf = Vec::new();
        let n = io::Read::take(&mut *self.input, MAX_INPUT as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if !buf.ends_with(b"\n") && buf.len() > MAX_INPUT {
            // Swallow the rest of the line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = io::Read::take(&mut *self.input, MAX_INPUT as u64).read_until(b'\n', &mut rest)?;
                if m == 0 || rest.ends_with(b"\n") {
                    break;
                }
            }
            return Ok(Some(Err(format!("line longer than {MAX_INPUT} characters ignored"))));
        }
        let s = String::from_utf8_lossy(&buf);
        Ok(Some(Ok(s.trim_end_matches(['\n', '\r']).to_string())))
    }

    fn read_secret(&mut self, p: &str) -> io::Result<Option<String>> {
        // Echo off before the prompt: a person (or a script) answering the
        // prompt at once must never see the secret echoed.
        let _echo = self.echo_fd.map(crate::sys::EchoOff::new);
        self.prompt(p)?;
        Ok(match self.read_line()? {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => Some(String::new()),
        })
    }

    /// Asks for a new password twice. Err(message) when they differ or the
    /// password is unacceptable; Ok(None) at end of input.
    fn new_password(&mut self) -> io::Result<Option<Result<String, String>>> {
        let Some(a) = self.read_secret("New password: ")? else { return Ok(None) };
        if let Err(e) = check_new_password(&a) {
            return Ok(Some(Err(e)));
        }
        let Some(b) = self.read_secret("Again: ")? else { return Ok(None) };
        if a != b {
            return Ok(Some(Err("the passwords differ".into())));
        }
        Ok(Some(Ok(a)))
    }
}

/// Asks for the admin password until it is right (or, on first boot with
/// none set, walks through setting it). Returns false at end of input.
pub fn login(host: &dyn Host, term: &mut Terminal<'_>, node: &str) -> io::Result<bool> {
    let mut delay = LOGIN_DELAY_START;
    loop {
        let hash = host.settings().and_then(|s| s.admin_hash);
        match hash {
            None => {
                term.say(&format!("{node}: no admin password is set for this console yet. Choose one now."))?;
                match term.new_password()? {
                    None => return Ok(false),
                    Some(Err(e)) => term.say(&format!("{e}; try again"))?,
                    Some(Ok(pw)) => match hash_password(&pw).and_then(|h| host.set_admin_hash(&h)) {
                        Ok(()) => {
                            term.say("admin password set")?;
                            return Ok(true);
                        }
                        Err(e) => {
                            // Without a place to keep it (no config
                            // partition) the console still opens.
                            term.say(&format!("cannot save the admin password: {e}"))?;
                            return Ok(true);
                        }
                    },
                }
            }
            Some(h) => {
                term.say(&format!("mailfort {node} console"))?;
                let Some(pw) = term.read_secret("Password: ")? else { return Ok(false) };
                if verify_password(&h, &pw) {
                    return Ok(true);
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(LOGIN_DELAY_MAX);
                term.say("wrong password")?;
            }
        }
    }
}

/// The shell after login: prompt, read, run, until logout or the end of
/// input.
pub fn shell(host: &dyn Host, term: &mut Terminal<'_>, prompt: &str) -> io::Result<SessionEnd> {
    let mut history: Vec<String> = Vec::new();
    term.say("type `help` for the commands")?;
    loop {
        term.prompt(prompt)?;
        let line = match term.read_line()? {
            None => return Ok(SessionEnd::Logout),
            Some(Err(e)) => {
                term.say(&e)?;
                continue;
            }
            Some(Ok(l)) => l,
        };
        let line = match expand_history(&line, &history) {
            Ok(Some(l)) => {
                term.say(&l)?;
                l
            }
            Ok(None) => line,
            Err(e) => {
                term.say(&e)?;
                continue;
            }
        };
        let cmd = match commands::parse(&line) {
            Ok(None) => continue,
            Ok(Some(c)) => c,
            Err(e) => {
                term.say(&e)?;
                continue;
            }
        };
        if history.len() == HISTORY_MAX {
            history.remove(0);
        }
        history.push(line.trim().to_string());
        if cmd == Command::History {
            let text: Vec<String> = history.iter().enumerate().map(|(i, h)| format!("{:>4}  {h}", i + 1)).collect();
            term.say(&text.join("\n"))?;
            continue;
        }
        let password = if cmd.needs_new_password() {
            match term.new_password()? {
                None => return Ok(SessionEnd::Logout),
                Some(Err(e)) => {
                    term.say(&format!("error: {e}; nothing changed"))?;
                    continue;
                }
                Some(Ok(p)) => Some(p),
            }
        } else {
            None
        };
        let reply = commands::execute(&cmd, host, password.as_deref());
        term.say(&reply.text)?;
        match reply.action {
            Action::None => {}
            Action::Logout => return Ok(SessionEnd::Logout),
            Action::Reboot => return Ok(SessionEnd::Reboot),
            Action::Poweroff => return Ok(SessionEnd::Poweroff),
        }
    }
}

/// `!N` and `!!`: the command to run again, or None for a normal line.
fn expand_history(line: &str, history: &[String]) -> Result<Option<String>, String> {
    let l = line.trim();
    let Some(rest) = l.strip_prefix('!') else { return Ok(None) };
    let entry = if rest == "!" {
        history.last()
    } else {
        rest.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| history.get(i))
    };
    entry.cloned().map(Some).ok_or_else(|| format!("{l}: no such command in the history"))
}

/// `mailfort console --store DIR` on standard input and output.
pub fn run_process(store: &Path) -> io::Result<()> {
    let host = ProcessHost { store: StoreAccess::new(store) };
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut output = io::stdout();
    use std::io::IsTerminal;
    let echo_fd = io::stdin().is_terminal().then_some(0);
    let mut term = Terminal { input: &mut input, output: &mut output, echo_fd, idle_logout: None };
    term.say(&format!("mailfort console on the store {}", store.display()))?;
    shell(&host, &mut term, "mailfort> ")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "other"));
        assert!(!verify_password("garbage", "s3cret"));
        assert!(check_new_password("").is_err());
        assert!(check_new_password("a\u{7}b").is_err());
        assert!(check_new_password(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn history_expansion() {
        let h = vec!["status".to_string(), "user list".to_string()];
        assert_eq!(expand_history("!1", &h).unwrap().as_deref(), Some("status"));
        assert_eq!(expand_history("!!", &h).unwrap().as_deref(), Some("user list"));
        assert!(expand_history("!3", &h).is_err());
        assert!(expand_history("!0", &h).is_err());
        assert_eq!(expand_history("status", &h).unwrap(), None);
    }

    #[test]
    fn store_calls_have_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        Store::init(&root, "example.test", None).unwrap();
        let a = StoreAccess::new(&root);
        let r = a.call(Duration::from_millis(100), |_| {
            std::thread::sleep(Duration::from_millis(600));
            Ok(())
        });
        assert!(r.unwrap_err().contains("does not answer"));
        // While the stuck call lasts, others are refused at once.
        assert!(a.user_list().unwrap_err().contains("earlier request"));
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(a.user_list().unwrap(), vec![]);
        assert!(a.report().unwrap().store_id.len() >= 16);
    }

    #[test]
    fn an_idle_terminal_session_ends() {
        use std::os::fd::{AsRawFd, FromRawFd};
        let (mut m, mut sl) = (0, 0);
        // SAFETY: openpty fills two new descriptors; the rest may be null.
        assert_eq!(unsafe { libc::openpty(&mut m, &mut sl, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) }, 0);
        // SAFETY: both are ours from here on.
        let (_master, slave) = unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(sl)) };
        let fd = slave.as_raw_fd();
        let mut out = Vec::new();
        let mut input = io::BufReader::new(slave.try_clone().unwrap());
        let mut term = Terminal { input: &mut input, output: &mut out, echo_fd: Some(fd), idle_logout: Some(Duration::from_millis(200)) };
        let host = ProcessHost { store: StoreAccess::new(Path::new("/nonexistent")) };
        let t = std::time::Instant::now();
        assert_eq!(shell(&host, &mut term, "> ").unwrap(), SessionEnd::Logout);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(String::from_utf8_lossy(&out).contains("idle for too long"));
    }

    #[test]
    fn a_session_over_pipes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        Store::init(&root, "example.test", None).unwrap();
        let host = ProcessHost { store: StoreAccess::new(&root) };
        let script = "help\nuser add bob@example.test\npw1\npw1\nuser list\nuser add eve@example.test\na\nb\nbogus\n!3\nhistory\nreboot\nlogout\nstatus\n";
        let mut input = io::Cursor::new(script.as_bytes().to_vec());
        let mut out = Vec::new();
        let mut term = Terminal { input: &mut input, output: &mut out, echo_fd: None, idle_logout: None };
        let end = shell(&host, &mut term, "> ").unwrap();
        assert_eq!(end, SessionEnd::Logout);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("added bob@example.test"), "{text}");
        assert!(text.contains("the passwords differ; nothing changed"), "{text}");
        assert!(text.contains("unknown command 'bogus'"), "{text}");
        assert!(text.contains("   3  user list"), "{text}");
        assert!(text.contains("error: not on an appliance"), "{text}");
        // `status` after logout never ran.
        assert!(!text.contains("announcer"), "{text}");
        assert_eq!(host.store.user_list().unwrap().len(), 1);
    }
}
