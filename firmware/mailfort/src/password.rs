//! Reading a new password from standard input or, on a terminal, from a
//! prompt without echo.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

pub fn obtain(from_stdin: bool) -> anyhow::Result<String> {
    let stdin = io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).context("cannot read the password from standard input")?;
        let pw = line.strip_suffix('\n').unwrap_or(&line);
        let pw = pw.strip_suffix('\r').unwrap_or(pw);
        if pw.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(pw.to_string());
    }
    let first = prompt("New password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    if first.is_empty() {
        bail!("the password is empty");
    }
    Ok(first)
}

fn prompt(text: &str) -> anyhow::Result<String> {
    // Echo off before the prompt appears, so a fast answer is not echoed.
    let echo = EchoOff::new();
    eprint!("{text}");
    io::stderr().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    drop(echo);
    eprintln!();
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Turns terminal echo off on standard input while alive.
struct EchoOff(Option<Termios>);

impl EchoOff {
    fn new() -> EchoOff {
        let Ok(saved) = termios::tcgetattr(io::stdin()) else { return EchoOff(None) };
        let mut t = saved.clone();
        t.local_flags &= !LocalFlags::ECHO;
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &t);
        EchoOff(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, t);
        }
    }
}
