//! The console: a line-oriented shell over the command set in
//! [`crate::commands`], for the serial line of a box (with a login) and
//! for `mailfort console` on a terminal (as a process, against a store
//! directory). Plain prompts and plain lines, so it works over 115200 baud
//! and through any terminal, and can be driven by a script.

use std::io::{self, BufRead, Write};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::commands::{self, Action, Command, Host, HostError};
use crate::password::{check_new_password, check_password, hash_password, NewPasswordError};

/// Longest input line taken (longer ones are refused whole).
pub const MAX_INPUT: usize = 1024;
/// Commands kept for `history`.
pub const HISTORY_MAX: usize = 100;
/// After a wrong admin password the console waits this long, doubling
/// with each further failure up to the maximum, so that guessing over the
/// serial line is slow.
pub const LOGIN_DELAY_START: Duration = Duration::from_secs(1);
pub const LOGIN_DELAY_MAX: Duration = Duration::from_secs(16);
/// Lines a pasted certificate may have at most.
pub const MAX_PASTED_LINES: usize = 1000;

/// A terminal: lines in, text out, and (for a real terminal) a descriptor
/// whose echo is turned off for passwords.
pub struct Terminal<'a> {
    pub input: &'a mut dyn BufRead,
    pub output: &'a mut dyn Write,
    pub echo_fd: Option<BorrowedFd<'a>>,
    /// On the box's serial line: end the session after this long without
    /// input, so a console left logged in does not stay open.
    pub idle_logout: Option<Duration>,
}

/// A box's console session ends after this long without input.
pub const IDLE_LOGOUT: Duration = Duration::from_secs(15 * 60);

/// Why what was typed is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("line longer than {MAX_INPUT} characters ignored")]
    LineTooLong,
    #[error("more than {MAX_PASTED_LINES} lines")]
    TooManyLines,
    #[error(transparent)]
    Password(#[from] NewPasswordError),
    #[error("{0}: no such command in the history")]
    NoSuchHistory(String),
}

/// What ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `logout`, or the input ended.
    Logout,
    Reboot,
    Poweroff,
}

impl Terminal<'_> {
    pub fn say(&mut self, text: &str) -> io::Result<()> {
        if !text.is_empty() {
            writeln!(self.output, "{text}")?;
        }
        self.output.flush()
    }

    pub fn prompt(&mut self, p: &str) -> io::Result<()> {
        write!(self.output, "{p}")?;
        self.output.flush()
    }

    /// One line without its end; None at end of input. Over-long lines are
    /// read to their end and refused.
    fn read_line(&mut self) -> io::Result<Option<Result<String, InputError>>> {
        if let (Some(fd), Some(idle)) = (self.echo_fd, self.idle_logout) {
            // A terminal in canonical mode hands over one line per read,
            // so nothing is left buffered between lines: poll the
            // descriptor itself.
            let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
            if poll(&mut p, PollTimeout::try_from(idle).unwrap_or(PollTimeout::MAX)) == Ok(0) {
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
            return Ok(Some(Err(InputError::LineTooLong)));
        }
        let s = String::from_utf8_lossy(&buf);
        Ok(Some(Ok(s.trim_end_matches(['\n', '\r']).to_string())))
    }

    fn read_secret(&mut self, p: &str) -> io::Result<Option<String>> {
        // Echo off before the prompt: a person (or a script) answering the
        // prompt at once must never see the secret echoed.
        let _echo = self.echo_fd.map(crate::term::EchoOff::new);
        self.prompt(p)?;
        Ok(match self.read_line()? {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => Some(String::new()),
        })
    }

    /// Lines up to one holding only [`commands::PEM_END_LINE`].
    fn read_pasted(&mut self) -> io::Result<Option<Result<String, InputError>>> {
        let mut text = String::new();
        for _ in 0..MAX_PASTED_LINES {
            match self.read_line()? {
                None => return Ok(None),
                Some(Err(e)) => return Ok(Some(Err(e))),
                Some(Ok(l)) if l.trim() == commands::PEM_END_LINE => return Ok(Some(Ok(text))),
                Some(Ok(l)) => {
                    text.push_str(&l);
                    text.push('\n');
                }
            }
        }
        Ok(Some(Err(InputError::TooManyLines)))
    }

    /// Asks for a new password twice. Err(message) when they differ or the
    /// password is unacceptable; Ok(None) at end of input.
    fn new_password(&mut self) -> io::Result<Option<Result<String, NewPasswordError>>> {
        let Some(a) = self.read_secret("New password: ")? else { return Ok(None) };
        if let Err(e) = check_new_password(&a) {
            return Ok(Some(Err(e)));
        }
        let Some(b) = self.read_secret("Again: ")? else { return Ok(None) };
        if a != b {
            return Ok(Some(Err(NewPasswordError::Differ)));
        }
        Ok(Some(Ok(a)))
    }
}

/// Asks for the admin password until it is right. On a brand-new box
/// (no admin password anywhere) it first walks through the minimum setup:
/// the node settings [`Host::first_setup`] names, then the admin password.
/// Returns false at end of input.
pub fn login(host: &dyn Host, term: &mut Terminal<'_>, node: &str) -> io::Result<bool> {
    let mut delay = LOGIN_DELAY_START;
    loop {
        match host.admin_hash() {
            None => return first_setup(host, term, node),
            Some(h) => {
                term.say(&format!("mailfort {node} console"))?;
                let Some(pw) = term.read_secret("Password: ")? else { return Ok(false) };
                match check_password(&h, &pw) {
                    Ok(true) => return Ok(true),
                    Ok(false) => {
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(LOGIN_DELAY_MAX);
                        term.say("wrong password")?;
                    }
                    // The process's password checks are all taken (a flood
                    // of logins on the network): not a failure of this one.
                    Err(store::PasswordError::Busy) => term.say("too many password checks under way: try again in a moment")?,
                    Err(e) => {
                        std::thread::sleep(delay);
                        term.say(&format!("cannot check the password: {e}"))?;
                    }
                }
            }
        }
    }
}

/// The first login of a new box: each missing setting, checked as it is
/// typed (a bad value is asked again), then the admin password.
fn first_setup(host: &dyn Host, term: &mut Terminal<'_>, node: &str) -> io::Result<bool> {
    let missing = host.first_setup();
    if !missing.is_empty() {
        term.say(&format!("{node}: a new box. Answer a few questions to set it up (they can be changed later with `node set`)."))?;
    }
    for s in missing {
        loop {
            let current = if s.value.is_empty() { "unset" } else { &s.value };
            term.prompt(&format!("{} ({}) [{current}]: ", s.key, s.help))?;
            let line = match term.read_line()? {
                None => return Ok(false),
                Some(Err(e)) => {
                    term.say(&e.to_string())?;
                    continue;
                }
                Some(Ok(l)) => l,
            };
            // Enter keeps what the box booted with.
            let v = line.trim().to_string();
            if v.is_empty() {
                break;
            }
            match host.set_node_setting(&s.key, &v) {
                Ok(_) => break,
                Err(e) => term.say(&format!("error: {e}"))?,
            }
        }
    }
    term.say(&format!("{node}: no admin password is set yet. Choose one now; it is the password of this console and of the web page."))?;
    loop {
        match term.new_password()? {
            None => return Ok(false),
            Some(Err(e)) => term.say(&format!("{e}; try again"))?,
            Some(Ok(_)) if host.admin_hash().is_some() => {
                // Another console (the serial line and the screen both
                // offer the first login) was quicker: its password holds.
                term.say("an admin password was set meanwhile on another console; log in with it")?;
                return Ok(false);
            }
            Some(Ok(pw)) => match hash_password(&pw).map_err(|e| HostError::Refused(e.to_string())).and_then(|h| host.set_admin_hash(&h)) {
                Ok(()) => {
                    term.say("admin password set")?;
                    if !host.first_setup_done() {
                        term.say("settings saved; they take effect at the next boot (`reboot`)")?;
                    }
                    return Ok(true);
                }
                Err(e) => {
                    // Without a place to keep it the console still opens.
                    term.say(&format!("cannot save the admin password: {e}"))?;
                    return Ok(true);
                }
            },
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
                term.say(&e.to_string())?;
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
                term.say(&e.to_string())?;
                continue;
            }
        };
        let cmd = match commands::parse(&line) {
            Ok(None) => continue,
            Ok(Some(c)) => c,
            Err(e) => {
                term.say(&e.to_string())?;
                continue;
            }
        };
        if history.len() == HISTORY_MAX {
            history.remove(0);
        }
        // A secret typed on the line is not kept where `history` shows it.
        history.push(match &cmd {
            Command::ClusterSet(k, v) if crate::cluster_keys::shown(k, v) != *v => format!("cluster set {k} {}", crate::cluster_keys::shown(k, v)),
            _ => line.trim().to_string(),
        });
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
        let text = if cmd.needs_text() {
            term.say(&format!("paste the PEM text (certificate chain and private key), then a line with only {}", commands::PEM_END_LINE))?;
            match term.read_pasted()? {
                None => return Ok(SessionEnd::Logout),
                Some(Err(e)) => {
                    term.say(&format!("error: {e}; nothing changed"))?;
                    continue;
                }
                Some(Ok(t)) => Some(t),
            }
        } else {
            None
        };
        let reply = commands::execute(&cmd, host, password.as_deref(), text.as_deref());
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
fn expand_history(line: &str, history: &[String]) -> Result<Option<String>, InputError> {
    let l = line.trim();
    let Some(rest) = l.strip_prefix('!') else { return Ok(None) };
    let entry = if rest == "!" {
        history.last()
    } else {
        rest.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| history.get(i))
    };
    entry.cloned().map(Some).ok_or_else(|| InputError::NoSuchHistory(l.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{ProcessHost, ProcessInfo};
    use crate::password::verify_password;
    use store::Store;

    #[test]
    fn passwords() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "other"));
        assert!(!verify_password("garbage", "s3cret"));
        assert_eq!(check_new_password(""), Err(NewPasswordError::Empty));
        assert_eq!(check_new_password("a\u{7}b"), Err(NewPasswordError::Control));
        assert_eq!(check_new_password(&"x".repeat(5000)), Err(NewPasswordError::TooLong));
    }

    #[test]
    fn history_expansion() {
        let h = vec!["status".to_string(), "user list".to_string()];
        assert_eq!(expand_history("!1", &h).unwrap().as_deref(), Some("status"));
        assert_eq!(expand_history("!!", &h).unwrap().as_deref(), Some("user list"));
        assert_eq!(expand_history("!3", &h), Err(InputError::NoSuchHistory("!3".into())));
        assert_eq!(expand_history("!0", &h), Err(InputError::NoSuchHistory("!0".into())));
        assert_eq!(expand_history("status", &h).unwrap(), None);
    }

    #[test]
    fn an_idle_terminal_session_ends() {
        use std::os::fd::AsFd;
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = std::fs::File::from(pty.slave);
        let fd = slave.as_fd();
        let mut out = Vec::new();
        let mut input = io::BufReader::new(slave.try_clone().unwrap());
        let mut term = Terminal { input: &mut input, output: &mut out, echo_fd: Some(fd), idle_logout: Some(Duration::from_millis(200)) };
        let host = ProcessHost::new(std::path::Path::new("/nonexistent"), None, ProcessInfo::default());
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
        let host = ProcessHost::new(&root, None, ProcessInfo::default());
        let script = "help\nuser add bob@example.test\npw1\npw1\nuser list\nuser add eve@example.test\na\nb\nbogus\n!3\ncluster set dns.tsig.secret c2VjcmV0LXZhbHVl\nhistory\nreboot\nlogout\nstatus\n";
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
        // The secret was refused (no DNS announcer) and is not in the
        // history either way.
        assert!(text.contains("cluster set dns.tsig.secret (set, not shown)") && !text.contains("c2VjcmV0"), "{text}");
        assert!(text.contains("error: not on an appliance"), "{text}");
        // `status` after logout never ran.
        assert!(!text.contains("recent log:"), "{text}");
        assert_eq!(host.store().user_list().unwrap().len(), 1);
    }

    /// A new box as the console sees it: settings in memory, no admin
    /// password yet.
    struct NewBox {
        store: crate::access::StoreAccess,
        settings: std::sync::Mutex<Vec<crate::commands::Setting>>,
        hash: std::sync::Mutex<Option<String>>,
    }

    impl Host for NewBox {
        fn store(&self) -> &crate::access::StoreAccess {
            &self.store
        }
        fn node(&self) -> crate::commands::NodeView {
            crate::commands::NodeView::default()
        }
        fn log_tail(&self, _: usize) -> Vec<String> {
            Vec::new()
        }
        fn node_settings(&self) -> Option<Vec<crate::commands::Setting>> {
            Some(self.settings.lock().unwrap().clone())
        }
        fn set_node_setting(&self, key: &str, value: &str) -> Result<String, HostError> {
            if key == "rank" && value.parse::<u32>().map_or(true, |r| r == 0) {
                return Err(HostError::Refused(format!("'{value}' is not a rank (1 or more)")));
            }
            let mut s = self.settings.lock().unwrap();
            s.iter_mut().find(|x| x.key == key).ok_or_else(|| HostError::Refused("unknown".into()))?.value = value.to_string();
            Ok("at the next boot".into())
        }
        fn first_setup(&self) -> Vec<crate::commands::Setting> {
            if self.hash.lock().unwrap().is_some() {
                Vec::new()
            } else {
                self.settings.lock().unwrap().clone()
            }
        }
        fn first_setup_done(&self) -> bool {
            false
        }
        fn admin_hash(&self) -> Option<String> {
            self.hash.lock().unwrap().clone()
        }
        fn set_admin_hash(&self, h: &str) -> Result<(), HostError> {
            *self.hash.lock().unwrap() = Some(h.to_string());
            Ok(())
        }
        fn restart_service(&self, _: &str) -> Result<String, HostError> {
            Err(HostError::Refused("none".into()))
        }
        fn can_power(&self) -> bool {
            true
        }
    }

    #[test]
    fn the_first_login_walks_through_the_setup() {
        let set = |k: &str, v: &str| crate::commands::Setting { key: k.into(), value: v.into(), help: format!("the {k}") };
        let host = NewBox {
            store: crate::access::StoreAccess::new(std::path::Path::new("/nonexistent")),
            settings: std::sync::Mutex::new(vec![set("node", "mail"), set("rank", ""), set("ip", "dhcp")]),
            hash: std::sync::Mutex::new(None),
        };
        // node: typed; rank: a bad value, then a good one; ip: Enter keeps
        // dhcp; then the admin password twice (first a mismatch).
        let script = "mail7\n0\n3\n\nadm1\nadm2\nadm1\nadm1\n";
        let mut input = io::Cursor::new(script.as_bytes().to_vec());
        let mut out = Vec::new();
        let mut term = Terminal { input: &mut input, output: &mut out, echo_fd: None, idle_logout: None };
        assert!(login(&host, &mut term, "mail").unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("node (the node) [mail]: ") && text.contains("rank (the rank) [unset]: "), "{text}");
        assert!(text.contains("error: '0' is not a rank"), "{text}");
        assert!(text.contains("the passwords differ; try again") && text.contains("admin password set"), "{text}");
        let got: Vec<(String, String)> = host.settings.lock().unwrap().iter().map(|s| (s.key.clone(), s.value.clone())).collect();
        assert_eq!(got, vec![("node".into(), "mail7".into()), ("rank".into(), "3".into()), ("ip".into(), "dhcp".into())]);
        let h = host.admin_hash().unwrap();
        assert!(verify_password(&h, "adm1"));
        // The next login asks for the password only.
        let mut input = io::Cursor::new(b"wrong\nadm1\n".to_vec());
        let mut out = Vec::new();
        let mut term = Terminal { input: &mut input, output: &mut out, echo_fd: None, idle_logout: None };
        assert!(login(&host, &mut term, "mail7").unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("wrong password") && !text.contains("[mail7]"), "{text}");
    }
}
