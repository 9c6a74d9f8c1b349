//! POP3 command lines (RFC 1939, RFC 2449, RFC 2595, RFC 5034).

use core::str;

/// RFC 2449 4: a command line is at most 255 octets, CRLF included.
pub const MAX_COMMAND_LINE: usize = 255;
/// RFC 1939 3 lets arguments be up to 40 characters; RFC 2449 4 (CAPA)
/// raises the bound to the whole 255-octet line, which long addresses given
/// to USER need, so only the line length is enforced.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    User(&'a str),
    /// RFC 1939 7: the password is the rest of the line, spaces included.
    Pass(&'a str),
    Auth { mechanism: Option<&'a str>, initial: Option<&'a str> },
    Capa,
    Stls,
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Dele(u32),
    Top { msg: u32, lines: u32 },
    Rset,
    Noop,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Unknown,
    BadBytes,
    Syntax(&'static str),
}

pub fn parse_command(line: &[u8]) -> Result<Command<'_>, Error> {
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Error::BadBytes);
    }
    let line = str::from_utf8(line).map_err(|_| Error::BadBytes)?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    // RFC 1939 3: keywords are case-insensitive, 3 or 4 characters.
    let v = |k: &str| verb.eq_ignore_ascii_case(k);
    let mut args = rest.split(' ').filter(|s| !s.is_empty());
    let a1 = args.next();
    let a2 = args.next();
    let extra = args.next().is_some();
    let none = |c: Command<'static>| if a1.is_none() { Ok(c) } else { Err(Error::Syntax("no argument expected")) };
    let num = |s: &str| -> Result<u32, Error> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Syntax("expected a number"));
        }
        s.parse().map_err(|_| Error::Syntax("number out of range"))
    };
    let opt_num = |a: Option<&str>| -> Result<Option<u32>, Error> {
        if a2.is_some() {
            return Err(Error::Syntax("too many arguments"));
        }
        a.map(num).transpose()
    };
    match () {
        _ if v("USER") => match (a1, a2) {
            (Some(u), None) => Ok(Command::User(u)),
            _ => Err(Error::Syntax("USER takes one name")),
        },
        _ if v("PASS") => {
            if rest.is_empty() {
                Err(Error::Syntax("PASS needs a password"))
            } else {
                Ok(Command::Pass(rest))
            }
        }
        _ if v("AUTH") => {
            if extra {
                return Err(Error::Syntax("too many arguments"));
            }
            Ok(Command::Auth { mechanism: a1, initial: a2 })
        }
        _ if v("CAPA") => none(Command::Capa),
        _ if v("STLS") => none(Command::Stls),
        _ if v("STAT") => none(Command::Stat),
        _ if v("RSET") => none(Command::Rset),
        _ if v("NOOP") => none(Command::Noop),
        _ if v("QUIT") => none(Command::Quit),
        _ if v("LIST") => Ok(Command::List(opt_num(a1)?)),
        _ if v("UIDL") => Ok(Command::Uidl(opt_num(a1)?)),
        _ if v("RETR") => Ok(Command::Retr(opt_num(a1)?.ok_or(Error::Syntax("RETR needs a message number"))?)),
        _ if v("DELE") => Ok(Command::Dele(opt_num(a1)?.ok_or(Error::Syntax("DELE needs a message number"))?)),
        _ if v("TOP") => match (a1, a2, extra) {
            (Some(m), Some(n), false) => Ok(Command::Top { msg: num(m)?, lines: num(n)? }),
            _ => Err(Error::Syntax("TOP needs a message number and a line count")),
        },
        _ => Err(Error::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command(b"USER alice@example.test"), Ok(Command::User("alice@example.test")));
        assert_eq!(parse_command(b"PASS two words"), Ok(Command::Pass("two words")));
        assert_eq!(parse_command(b"stat"), Ok(Command::Stat));
        assert_eq!(parse_command(b"LIST"), Ok(Command::List(None)));
        assert_eq!(parse_command(b"LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse_command(b"TOP 1 10"), Ok(Command::Top { msg: 1, lines: 10 }));
        assert_eq!(parse_command(b"AUTH PLAIN AGE="), Ok(Command::Auth { mechanism: Some("PLAIN"), initial: Some("AGE=") }));
        assert_eq!(parse_command(b"AUTH"), Ok(Command::Auth { mechanism: None, initial: None }));
        assert!(parse_command(b"RETR").is_err());
        assert!(parse_command(b"RETR x").is_err());
        assert!(parse_command(b"RETR -1").is_err());
        assert!(parse_command(b"RETR 99999999999").is_err());
        assert!(parse_command(b"LIST 1 2").is_err());
        assert!(parse_command(b"QUIT x").is_err());
        assert_eq!(parse_command(b"XYZZY"), Err(Error::Unknown));
        assert_eq!(parse_command(b"USER a\0b"), Err(Error::BadBytes));
    }
}
