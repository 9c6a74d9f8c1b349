//! The boxes' serial consoles. QEMU serves each one on a unix socket (one
//! client at a time) and copies everything the box writes into a log file.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Ctrl-] ends `cargo xtask qemu console`, as in telnet.
const ESCAPE: u8 = 0x1d;

/// Connects the terminal to a console until Ctrl-] or until the box goes
/// away.
pub fn attach(socket: &Path, name: &str) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket).with_context(|| format!("cannot connect to {name}'s console ({}); is the box running?", socket.display()))?;
    eprintln!("connected to {name}'s console; Ctrl-] leaves");
    let raw = RawTerminal::enter();
    let mut from_box = stream.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = io::stdout();
        loop {
            match from_box.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut to_box = stream;
    let mut buf = [0u8; 1024];
    let mut stdin = io::stdin();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(i) = buf[..n].iter().position(|b| *b == ESCAPE) {
            let _ = to_box.write_all(&buf[..i]);
            break;
        }
        // A terminal in raw mode sends CR for Enter; the box reads lines.
        if to_box.write_all(&buf[..n]).is_err() {
            break;
        }
        if reader.is_finished() {
            break;
        }
    }
    let _ = to_box.shutdown(std::net::Shutdown::Both);
    drop(raw);
    eprintln!("\r\nleft {name}'s console");
    Ok(())
}

/// Puts stdin into raw mode while alive (when it is a terminal).
struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios buffer.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut t) != 0 {
                return RawTerminal { saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawTerminal { saved: Some(saved) }
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restores the settings read in enter().
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

/// A scripted console session, as the system test drives it: send lines,
/// wait for text.
pub struct Session {
    stream: UnixStream,
    /// Everything read so far; `expect` consumes up to the match.
    buf: Vec<u8>,
    /// Everything read, for error messages.
    transcript: Vec<u8>,
}

impl Session {
    pub fn connect(socket: &Path, timeout: Duration) -> anyhow::Result<Session> {
        let stream = crate::wait::until(&format!("the console socket {}", socket.display()), timeout, Duration::from_millis(100), || UnixStream::connect(socket).ok())?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Session { stream, buf: Vec::new(), transcript: Vec::new() })
    }

    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        // The console is a tty in canonical mode: a line ends in \n.
        self.stream.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Waits until `needle` appears; returns the text before it (and drops
    /// it and the needle from the buffer).
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.expect_any(&[needle], timeout).map(|(_, before)| before)
    }

    /// Waits until one of `needles` appears; returns which (the earliest
    /// in the output) and the text before it.
    pub fn expect_any(&mut self, needles: &[&str], timeout: Duration) -> anyhow::Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        loop {
            let first = needles.iter().enumerate().filter_map(|(k, n)| find(&self.buf, n.as_bytes()).map(|i| (i, k))).min();
            if let Some((i, k)) = first {
                let before = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + needles[k].len());
                return Ok((k, before));
            }
            if Instant::now() >= deadline {
                let tail = String::from_utf8_lossy(&self.transcript[self.transcript.len().saturating_sub(2000)..]).into_owned();
                bail!("the console did not show any of {needles:?} within {:.0} s; it showed:\n{tail}", timeout.as_secs_f64());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("the console closed while waiting for {needles:?}"),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.transcript.extend_from_slice(&chunk[..n]);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Logs in on a box's console with the admin password, setting it
    /// first on a box that has none; returns at the prompt `<node>> `.
    pub fn login(&mut self, node: &str, password: &str, timeout: Duration) -> anyhow::Result<()> {
        let prompt = format!("{node}> ");
        let deadline = Instant::now() + timeout;
        // A fresh line makes whatever waits for input ask again.
        self.send_line("")?;
        for _ in 0..24 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.expect_any(&["New password: ", "Again: ", "Password: ", "]: ", &prompt], left)?.0 {
                0..=2 => self.send_line(password)?,
                // A new box's first login asks for its settings, each with
                // the value it booted with: keep them.
                3 => self.send_line("")?,
                _ => return Ok(()),
            }
        }
        bail!("no prompt after logging in on {node}'s console:\n{}", self.transcript())
    }

    /// Runs a console command and returns its output up to the next prompt.
    pub fn run(&mut self, node: &str, command: &str, timeout: Duration) -> anyhow::Result<String> {
        self.send_line(command)?;
        self.expect(&format!("{node}> "), timeout)
    }

    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.transcript).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
