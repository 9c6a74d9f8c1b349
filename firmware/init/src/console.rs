//! The box's consoles: the serial line (and the local screen when there
//! is one), each a login and the admin shell, again and again.

use std::fs::{self, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use admin::shell::{self as shell, SessionEnd, Terminal};
use nix::fcntl::OFlag;
use nix::sys::termios::{self, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg};

use crate::cmdline::Cmdline;
use crate::host::BoxHost;
use crate::pid1::{Event, PowerRequest};
use crate::say;

/// How long a console waits before it opens its device again after an
/// error or the end of a session's input (so it does not spin).
const REOPEN_WAIT: Duration = Duration::from_secs(5);
const SESSION_END_WAIT: Duration = Duration::from_millis(500);


/// The local screen's console (the first virtual terminal).
pub const SCREEN_TTY: &str = "/dev/tty1";

/// Whether the kernel runs virtual terminals (a screen and keyboard).
pub fn has_screen() -> bool {
    fs::read_to_string("/sys/class/tty/tty0/active").is_ok_and(|a| !a.trim().is_empty())
}

pub fn console_device(c: &Cmdline) -> PathBuf {
    if let Some(d) = c.get("console") {
        return Path::new("/dev").join(d);
    }
    // The last console= is /dev/console; prefer a serial line by name.
    match c.consoles.iter().rev().find(|x| x.starts_with("ttyS")) {
        Some(x) => Path::new("/dev").join(x.split(',').next().unwrap_or("ttyS0")),
        None => PathBuf::from("/dev/console"),
    }
}

/// The serial console: login, shell, again; forever.
pub fn console_loop(dev: &Path, host: &BoxHost, node: &str, tx: &Sender<Event>) {
    loop {
        let file = match OpenOptions::new().read(true).write(true).custom_flags(OFlag::O_NOCTTY.bits()).open(dev) {
            Ok(f) => f,
            Err(e) => {
                say!("console {}: {e}; retrying", dev.display());
                std::thread::sleep(REOPEN_WAIT);
                continue;
            }
        };
        sane_terminal(&file);
        let (Ok(out), Ok(echo)) = (file.try_clone(), file.try_clone()) else {
            std::thread::sleep(REOPEN_WAIT);
            continue;
        };
        let mut input = std::io::BufReader::new(file);
        let mut output = out;
        let mut term = Terminal { input: &mut input, output: &mut output, echo_fd: Some(echo.as_fd()), idle_logout: Some(shell::IDLE_LOGOUT) };
        let end = match shell::login(host, &mut term, node) {
            Ok(true) => shell::shell(host, &mut term, &format!("{node}> ")),
            Ok(false) => Ok(SessionEnd::Logout),
            Err(e) => Err(e),
        };
        match end {
            Ok(SessionEnd::Reboot) => {
                let _ = tx.send(Event::Power(PowerRequest::Reboot, "the console"));
            }
            Ok(SessionEnd::Poweroff) => {
                let _ = tx.send(Event::Power(PowerRequest::Off, "the console"));
            }
            Ok(SessionEnd::Logout) => {}
            Err(e) => say!("console: {e}"),
        }
        // End of input or an error: do not spin.
        std::thread::sleep(SESSION_END_WAIT);
    }
}


/// Puts a serial line into the state a person at a terminal expects:
/// line editing, echo, CR to NL on input and NL to CR NL on output, 8N1.
/// The speed is left as the kernel set it from `console=ttyS0,115200`.
/// Not a terminal: nothing to do.
pub fn sane_terminal(fd: impl AsFd) {
    let Ok(mut t) = termios::tcgetattr(&fd) else { return };
    t.input_flags |= InputFlags::ICRNL | InputFlags::IXON;
    t.input_flags &= !(InputFlags::INLCR | InputFlags::IGNCR);
    t.output_flags |= OutputFlags::OPOST | OutputFlags::ONLCR;
    t.local_flags |= LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ECHOE | LocalFlags::ECHOK;
    // No signals from the keyboard: a Ctrl-C on the console must not
    // reach init (which takes SIGINT as a power-off request).
    t.local_flags &= !LocalFlags::ISIG;
    t.control_flags |= ControlFlags::CS8 | ControlFlags::CREAD | ControlFlags::CLOCAL;
    let _ = termios::tcsetattr(&fd, SetArg::TCSANOW, &t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_device_choice() {
        assert_eq!(console_device(&Cmdline::parse("console=tty0 console=ttyS0,115200")), PathBuf::from("/dev/ttyS0"));
        assert_eq!(console_device(&Cmdline::parse("console=tty0")), PathBuf::from("/dev/console"));
        assert_eq!(console_device(&Cmdline::parse("console=ttyS0 mailfort.console=hvc0")), PathBuf::from("/dev/hvc0"));
    }

    #[test]
    fn a_serial_line_is_made_sane() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut t = termios::tcgetattr(&pty.slave).unwrap();
        t.local_flags |= LocalFlags::ISIG;
        t.local_flags &= !LocalFlags::ECHO;
        t.input_flags &= !InputFlags::ICRNL;
        termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
        sane_terminal(&pty.slave);
        let t = termios::tcgetattr(&pty.slave).unwrap();
        assert!(!t.local_flags.contains(LocalFlags::ISIG));
        assert!(t.local_flags.contains(LocalFlags::ECHO | LocalFlags::ICANON));
        assert!(t.input_flags.contains(InputFlags::ICRNL));
        // Not a terminal: left alone, no panic.
        sane_terminal(std::fs::File::open("/dev/null").unwrap());
    }
}
