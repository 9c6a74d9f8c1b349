//! Terminal settings the console needs.

/// Turns terminal echo off on `fd` while alive (for password prompts);
/// does nothing when `fd` is not a terminal.
pub struct EchoOff {
    fd: libc::c_int,
    saved: Option<libc::termios>,
}

impl EchoOff {
    pub fn new(fd: libc::c_int) -> EchoOff {
        // SAFETY: termios is plain data that tcgetattr fills.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return EchoOff { fd, saved: None };
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            EchoOff { fd, saved: Some(saved) }
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restores what new() read.
            unsafe {
                libc::tcsetattr(self.fd, libc::TCSANOW, &t);
            }
        }
    }
}
