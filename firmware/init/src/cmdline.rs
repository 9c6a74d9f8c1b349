//! The kernel command line: `mailfort.*` settings for this box.
//!
//! The kernel passes the words it does not understand itself to init, but
//! it also leaves the whole line in /proc/cmdline; we read that, so that
//! words the kernel did consume (`console=`) are visible too. Words are
//! separated by spaces; a value may be quoted with double quotes to hold
//! spaces (the kernel's own `next_arg` rule, lib/cmdline.c).

use std::collections::BTreeMap;

/// The prefix of every setting meant for us.
pub const PREFIX: &str = "mailfort.";
/// More than this many bytes is not a command line we wrote (the kernel's
/// own limit on x86 is COMMAND_LINE_SIZE = 2048).
pub const MAX_CMDLINE: usize = 4096;

/// The `mailfort.*` words of a command line, key without the prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub values: BTreeMap<String, String>,
    /// `console=` values, in order (the last one is /dev/console).
    pub consoles: Vec<String>,
}

impl Cmdline {
    pub fn parse(line: &str) -> Cmdline {
        let line = if line.len() > MAX_CMDLINE { &line[..floor_char_boundary(line, MAX_CMDLINE)] } else { line };
        let mut c = Cmdline::default();
        for word in split_words(line) {
            let (k, v) = match word.split_once('=') {
                Some((k, v)) => (k, v.to_string()),
                None => (word.as_str(), String::new()),
            };
            if let Some(key) = k.strip_prefix(PREFIX) {
                if !key.is_empty() {
                    c.values.insert(key.to_string(), v);
                }
            } else if k == "console" {
                c.consoles.push(v);
            }
        }
        c
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|s| s.as_str()).filter(|s| !s.is_empty())
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Splits like the kernel: spaces separate words, double quotes group
/// (and are removed).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_our_words() {
        let c = Cmdline::parse("console=tty0 console=ttyS0,115200 quiet mailfort.role=mail mailfort.node=mail1 mailfort.ip=192.0.2.11/24 panic=10\n");
        assert_eq!(c.get("role"), Some("mail"));
        assert_eq!(c.get("node"), Some("mail1"));
        assert_eq!(c.get("ip"), Some("192.0.2.11/24"));
        assert_eq!(c.get("gw"), None);
        assert_eq!(c.consoles, vec!["tty0", "ttyS0,115200"]);
        assert!(!c.values.contains_key("panic"));
    }

    #[test]
    fn quotes_and_equals_in_values() {
        let c = Cmdline::parse(r#"mailfort.ddns.key_secret=abc+/de== "mailfort.domain=example.test" mailfort.x="a b" mailfort.flag mailfort.="#);
        assert_eq!(c.get("ddns.key_secret"), Some("abc+/de=="));
        assert_eq!(c.get("domain"), Some("example.test"));
        assert_eq!(c.get("x"), Some("a b"));
        assert_eq!(c.values.get("flag").map(String::as_str), Some(""));
        assert_eq!(c.get("flag"), None);
        assert_eq!(c.values.len(), 4);
    }

    #[test]
    fn oversized_line_is_cut_not_refused() {
        let long = format!("mailfort.role=mail {}", "x".repeat(10_000));
        assert_eq!(Cmdline::parse(&long).get("role"), Some("mail"));
        let utf = "é".repeat(5000);
        let _ = Cmdline::parse(&utf);
    }
}
