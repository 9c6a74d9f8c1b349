//! Terminal settings the console needs.

use std::os::fd::BorrowedFd;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

/// Turns terminal echo off on `fd` while alive (for password prompts);
/// does nothing when `fd` is not a terminal.
pub struct EchoOff<'a> {
    fd: BorrowedFd<'a>,
    saved: Option<Termios>,
}

impl<'a> EchoOff<'a> {
    pub fn new(fd: BorrowedFd<'a>) -> EchoOff<'a> {
        let Ok(saved) = termios::tcgetattr(fd) else { return EchoOff { fd, saved: None } };
        let mut t = saved.clone();
        t.local_flags &= !LocalFlags::ECHO;
        t.local_flags |= LocalFlags::ECHONL;
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &t);
        EchoOff { fd, saved: Some(saved) }
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn echo_is_off_while_alive_and_back_after() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let echo = |fd| termios::tcgetattr(fd).unwrap().local_flags.contains(LocalFlags::ECHO);
        assert!(echo(pty.slave.as_fd()));
        {
            let _off = EchoOff::new(pty.slave.as_fd());
            assert!(!echo(pty.slave.as_fd()));
        }
        assert!(echo(pty.slave.as_fd()));
        // Not a terminal: nothing to do, nothing to restore.
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(EchoOff::new(null.as_fd()).saved.is_none());
    }
}
