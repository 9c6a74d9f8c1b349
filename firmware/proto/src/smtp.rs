//! SMTP command lines (RFC 5321 4.1) parsed into borrowed commands.

use core::str;

/// RFC 5321 4.5.3.1.1: the maximum total length of a local part.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2: the maximum total length of a domain.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3: the maximum length of a path, with the brackets.
pub const MAX_PATH: usize = 256;
/// RFC 5321 4.5.3.1.4: the minimum command line length a server must take,
/// CRLF included. Extensions (SIZE, SMTPUTF8, AUTH=) lengthen MAIL lines,
/// so the daemon's configured limit is larger; this is its floor.
pub const MIN_COMMAND_LINE: usize = 512;

/// An address `local@domain` as it appeared on the wire. `local` keeps its
/// quotes if it was a quoted string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox<'a> {
    pub local: &'a str,
    pub domain: &'a str,
}

/// The argument of RCPT TO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPath<'a> {
    Mailbox(Mailbox<'a>),
    /// RFC 5321 4.1.1.3: `<Postmaster>` with no domain must be accepted.
    Postmaster,
}

/// ESMTP parameters after the path (RFC 5321 4.1.2 Mail-parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a>(&'a str);

impl<'a> Params<'a> {
    /// Each parameter as (keyword, value).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        self.0.split(' ').filter(|s| !s.is_empty()).map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
    }

    /// The value of keyword `key` (case-insensitive), with `Some(None)` for
    /// a keyword given without a value.
    pub fn get(&self, key: &str) -> Option<Option<&'a str>> {
        self.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Helo(&'a str),
    Ehlo(&'a str),
    /// `from` is `None` for the null reverse-path `<>`.
    Mail { from: Option<Mailbox<'a>>, params: Params<'a> },
    Rcpt { to: ForwardPath<'a>, params: Params<'a> },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy(&'a str),
    Expn(&'a str),
    Help,
    StartTls,
    Auth { mechanism: &'a str, initial: Option<&'a str> },
}

/// Why a line is not a command we can run. The daemon maps these to reply
/// codes (RFC 5321 4.2.4): `Unknown` to 500, the rest to 501 (555 for bad
/// parameters, RFC 5321 4.1.1.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not a command verb we know.
    Unknown,
    /// The line is not UTF-8 (or has a NUL or a control character).
    BadBytes,
    /// Arguments are malformed; the text says which.
    Syntax(&'static str),
    /// An address exceeds an RFC 5321 4.5.3.1 limit.
    TooLong(&'static str),
    /// An ESMTP parameter is malformed.
    BadParam,
}

/// Parses one command line without its line end.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, Error> {
    // NUL and other controls never belong in a command (RFC 5321 4.1.1:
    // commands are printable characters, SP and CRLF).
    if line.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(Error::BadBytes);
    }
    let line = str::from_utf8(line).map_err(|_| Error::BadBytes)?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb_is = |v: &str| verb.eq_ignore_ascii_case(v);
    let no_args = |cmd: Command<'static>| -> Result<Command<'static>, Error> {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(Error::Syntax("this command takes no argument"))
        }
    };
    if verb_is("EHLO") || verb_is("HELO") {
        let domain = rest.trim();
        if domain.is_empty() || domain.contains(' ') {
            return Err(Error::Syntax("expected a domain or address literal"));
        }
        if domain.len() > MAX_DOMAIN {
            return Err(Error::TooLong("domain"));
        }
        return Ok(if verb_is("EHLO") { Command::Ehlo(domain) } else { Command::Helo(domain) });
    }
    if verb_is("MAIL") {
        let arg = strip_prefix_ci(rest, "FROM:").ok_or(Error::Syntax("expected FROM:<address>"))?;
        let (path, params) = split_path(arg)?;
        let from = if path == "<>" { None } else { Some(parse_path(path)?) };
        return Ok(Command::Mail { from, params: check_params(params)? });
    }
    if verb_is("RCPT") {
        let arg = strip_prefix_ci(rest, "TO:").ok_or(Error::Syntax("expected TO:<address>"))?;
        let (path, params) = split_path(arg)?;
        let to = if path.eq_ignore_ascii_case("<postmaster>") {
            ForwardPath::Postmaster
        } else {
            ForwardPath::Mailbox(parse_path(path)?)
        };
        return Ok(Command::Rcpt { to, params: check_params(params)? });
    }
    if verb_is("DATA") {
        return no_args(Command::Data);
    }
    if verb_is("RSET") {
        return no_args(Command::Rset);
    }
    if verb_is("QUIT") {
        return no_args(Command::Quit);
    }
    if verb_is("STARTTLS") {
        return no_args(Command::StartTls);
    }
    if verb_is("NOOP") {
        // RFC 5321 4.1.1.9: a parameter may be given and is ignored.
        return Ok(Command::Noop);
    }
    if verb_is("HELP") {
        return Ok(Command::Help);
    }
    if verb_is("VRFY") {
        if rest.trim().is_empty() {
            return Err(Error::Syntax("VRFY needs an argument"));
        }
        return Ok(Command::Vrfy(rest.trim()));
    }
    if verb_is("EXPN") {
        if rest.trim().is_empty() {
            return Err(Error::Syntax("EXPN needs an argument"));
        }
        return Ok(Command::Expn(rest.trim()));
    }
    if verb_is("AUTH") {
        // RFC 4954 4: AUTH mechanism [initial-response]
        let mut parts = rest.split(' ').filter(|s| !s.is_empty());
        let mechanism = parts.next().ok_or(Error::Syntax("AUTH needs a mechanism"))?;
        let initial = parts.next();
        if parts.next().is_some() {
            return Err(Error::Syntax("too many AUTH arguments"));
        }
        return Ok(Command::Auth { mechanism, initial });
    }
    Err(Error::Unknown)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Splits `<path> params` (tolerating one space after the colon, as most
/// servers do) into the bracketed path and the parameter string.
fn split_path(arg: &str) -> Result<(&str, &str), Error> {
    let arg = arg.strip_prefix(' ').unwrap_or(arg);
    if !arg.starts_with('<') {
        return Err(Error::Syntax("the address must be in angle brackets"));
    }
    // The path ends at the first '>' outside a quoted string.
    let bytes = arg.as_bytes();
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => {
                let path = &arg[..=i];
                let params = &arg[i + 1..];
                if !params.is_empty() && !params.starts_with(' ') {
                    return Err(Error::Syntax("expected a space after the address"));
                }
                if path.len() > MAX_PATH {
                    return Err(Error::TooLong("path"));
                }
                return Ok((path, params.trim_start_matches(' ')));
            }
            _ => {}
        }
    }
    Err(Error::Syntax("unterminated address"))
}

/// RFC 5321 4.1.2 Path = "<" [ A-d-l ":" ] Mailbox ">"
fn parse_path(path: &str) -> Result<Mailbox<'_>, Error> {
    let inner = &path[1..path.len() - 1];
    // RFC 5321 4.1.1.3 and C: source routes are accepted and ignored.
    let inner = if inner.starts_with('@') {
        match inner.find(':') {
            // A-d-l = At-domain *( "," At-domain ): domains, never a
            // quoted string, whose quotes would hide the end of the path
            // from split_path and give an address that cannot be written
            // back as the same path.
            Some(i) if inner[..i].contains('"') => return Err(Error::Syntax("bad source route")),
            Some(i) => &inner[i + 1..],
            None => return Err(Error::Syntax("bad source route")),
        }
    } else {
        inner
    };
    let at = inner.rfind('@').ok_or(Error::Syntax("the address has no domain"))?;
    let (local, domain) = (&inner[..at], &inner[at + 1..]);
    check_local_part(local)?;
    check_domain(domain)?;
    Ok(Mailbox { local, domain })
}

/// RFC 5321 4.1.2 Local-part = Dot-string / Quoted-string, with UTF-8
/// allowed by RFC 6531 3.3.
fn check_local_part(local: &str) -> Result<(), Error> {
    if local.is_empty() {
        return Err(Error::Syntax("empty local part"));
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(Error::TooLong("local part"));
    }
    if let Some(q) = local.strip_prefix('"') {
        let q = q.strip_suffix('"').ok_or(Error::Syntax("bad quoted local part"))?;
        let mut escaped = false;
        for c in q.chars() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return Err(Error::Syntax("bad quoted local part"));
            }
        }
        return if escaped { Err(Error::Syntax("bad quoted local part")) } else { Ok(()) };
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err(Error::Syntax("empty atom in local part"));
        }
        if !atom.chars().all(is_atext) {
            return Err(Error::Syntax("bad character in local part"));
        }
    }
    Ok(())
}

/// RFC 5322 3.2.3 atext, extended with non-ASCII by RFC 6531 3.3.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// RFC 5321 4.1.2 Domain / address-literal (U-labels allowed, RFC 6531 3.3).
fn check_domain(domain: &str) -> Result<(), Error> {
    if domain.is_empty() {
        return Err(Error::Syntax("empty domain"));
    }
    if domain.len() > MAX_DOMAIN {
        return Err(Error::TooLong("domain"));
    }
    if domain.starts_with('[') {
        let lit = domain.strip_suffix(']').ok_or(Error::Syntax("bad address literal"))?;
        return if lit.len() > 1 && lit[1..].chars().all(|c| c.is_ascii_graphic() && c != '[' && c != ']' && c != '\\') {
            Ok(())
        } else {
            Err(Error::Syntax("bad address literal"))
        };
    }
    for label in domain.split('.') {
        // RFC 5321 4.1.2 sub-domain = Let-dig [Ldh-str]
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return Err(Error::Syntax("bad domain"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii()) {
            return Err(Error::Syntax("bad domain"));
        }
    }
    Ok(())
}

/// RFC 5321 4.1.2 esmtp-param = esmtp-keyword ["=" esmtp-value]
fn check_params(params: &str) -> Result<Params<'_>, Error> {
    let p = Params(params);
    for (k, v) in p.iter() {
        if k.is_empty() || !k.starts_with(|c: char| c.is_ascii_alphanumeric()) || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::BadParam);
        }
        if let Some(v) = v {
            // esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 by RFC 6531 3.3
            if v.is_empty() || v.chars().any(|c| c == '=' || (c.is_ascii() && !c.is_ascii_graphic())) {
                return Err(Error::BadParam);
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_commands() {
        assert_eq!(parse_command(b"EHLO client.example"), Ok(Command::Ehlo("client.example")));
        assert_eq!(parse_command(b"helo x"), Ok(Command::Helo("x")));
        assert_eq!(parse_command(b"DATA"), Ok(Command::Data));
        assert_eq!(parse_command(b"noop whatever"), Ok(Command::Noop));
        assert_eq!(parse_command(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse_command(b"QUIT now"), Err(Error::Syntax("this command takes no argument")));
        assert_eq!(parse_command(b"FOO"), Err(Error::Unknown));
        assert_eq!(parse_command(b"EHLO"), Err(Error::Syntax("expected a domain or address literal")));
        assert_eq!(parse_command(b"NOOP\0"), Err(Error::BadBytes));
        assert_eq!(parse_command(b"NOOP \xff"), Err(Error::BadBytes));
    }

    #[test]
    fn mail_from() {
        match parse_command(b"MAIL FROM:<a.b@example.test> SIZE=100 BODY=8BITMIME") {
            Ok(Command::Mail { from: Some(m), params }) => {
                assert_eq!(m, Mailbox { local: "a.b", domain: "example.test" });
                assert_eq!(params.get("size"), Some(Some("100")));
                assert_eq!(params.get("BODY"), Some(Some("8BITMIME")));
                assert_eq!(params.get("SMTPUTF8"), None);
            }
            other => panic!("{:?}", other),
        }
        assert!(matches!(parse_command(b"MAIL FROM:<>"), Ok(Command::Mail { from: None, .. })));
        assert!(matches!(parse_command(b"mail from: <x@y>"), Ok(Command::Mail { from: Some(_), .. })));
        assert!(parse_command(b"MAIL FROM:x@y").is_err());
        assert!(parse_command(b"MAIL FROM:<x@y>junk").is_err());
        assert!(parse_command(b"MAIL FROM:<x..y@z>").is_err());
        assert!(parse_command(b"MAIL FROM:<x@y> =bad").is_err());
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            parse_command(b"RCPT TO:<@relay.example:bob@example.test>"),
            Ok(Command::Rcpt { to: ForwardPath::Mailbox(Mailbox { local: "bob", domain: "example.test" }), params: Params("") })
        );
        assert!(matches!(parse_command(b"RCPT TO:<Postmaster>"), Ok(Command::Rcpt { to: ForwardPath::Postmaster, .. })));
        assert!(matches!(parse_command(b"RCPT TO:<\"a b\"@example.test>"), Ok(Command::Rcpt { .. })));
        assert!(matches!(parse_command("RCPT TO:<jörg@bücher.example>".as_bytes()), Ok(Command::Rcpt { .. })));
        assert!(parse_command(b"RCPT TO:<bob>").is_err());
        assert!(parse_command(b"RCPT TO:<bob@-bad.example>").is_err());
    }

    #[test]
    fn a_quote_in_a_source_route_is_refused() {
        // The quote made the first '>' part of the domain: an address
        // that reads differently once written back as <a@[x>"]>.
        assert_eq!(parse_command(b"MAIL FROM:<@\"r:a@[x>\"]>"), Err(Error::Syntax("bad source route")));
        assert!(parse_command(b"MAIL FROM:<a@[x>\"]>").is_err());
        assert!(matches!(parse_command(b"MAIL FROM:<@r.example,@s.example:\"a>b\"@example.test>"), Ok(Command::Mail { from: Some(Mailbox { local: "\"a>b\"", domain: "example.test" }), .. })));
    }

    #[test]
    fn limits() {
        let mut line = std::string::String::from("RCPT TO:<");
        line.push_str(&"a".repeat(65));
        line.push_str("@example.test>");
        assert_eq!(parse_command(line.as_bytes()), Err(Error::TooLong("local part")));
    }

    #[test]
    fn auth() {
        assert_eq!(parse_command(b"AUTH PLAIN AGFAYg=="), Ok(Command::Auth { mechanism: "PLAIN", initial: Some("AGFAYg==") }));
        assert_eq!(parse_command(b"AUTH LOGIN"), Ok(Command::Auth { mechanism: "LOGIN", initial: None }));
        assert!(parse_command(b"AUTH").is_err());
    }
}
