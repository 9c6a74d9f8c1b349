//! Tests of the IMAP command parser: every command of RFC 3501 6 and the
//! extensions of `types`, the error cases, and property tests.

use super::*;
use std::vec;

fn ok(input: &str) -> Command {
    match parse_command(input.as_bytes()) {
        Ok(t) => {
            assert_eq!(t.tag, "a1", "{input:?}");
            t.command
        }
        Err(e) => panic!("{input:?}: {e:?}"),
    }
}

#[test]
fn any_state_commands() {
    assert_eq!(ok("a1 CAPABILITY"), Command::Capability);
    assert_eq!(ok("a1 noop"), Command::Noop);
    assert_eq!(ok("a1 LogOut"), Command::Logout);
}
