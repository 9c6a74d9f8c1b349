//! IMAP4rev1 (RFC 3501) and its extensions against running nodes, as
//! users' programs use it: Python's imaplib for exact responses (bytes,
//! UIDs, flags, MODSEQs), two nodes on one store, and the Debian clients
//! mbsync, offlineimap, curl, getmail, fetchmail and neomutt.
//!
//! Each test starts its own node(s) on a temporary store and runs one
//! script from `tests/py`; the script prints "ok <step>" or "FAIL <step>"
//! and its reason for every step and goes on, so one failure shows every
//! other step's result too.

use testsupport::prelude::*;

fn cfg_arg(p: &std::path::Path) -> String {
    p.to_str().expect("utf8 path").to_string()
}

fn node(f: &Fixture, name: &str, plaintext: bool) -> Node {
    let cfg = cfg_arg(&f.fast_config(""));
    let mut args = vec!["--config", cfg.as_str()];
    if plaintext {
        args.push("--allow-plaintext-auth");
    }
    Node::start(f, name, &args)
}

/// Checks that every step passed; the script's output (with measured
/// latencies) is printed, shown with `--no-capture`.
fn assert_steps(out: &str, steps: &[&str]) {
    println!("{out}");
    for step in steps {
        assert!(out.lines().any(|l| l == format!("ok {step}")), "missing {step:?} in:\n{out}");
    }
    assert!(!out.lines().any(|l| l.starts_with("FAIL ")), "{out}");
}

#[test]
fn imap_session_with_imaplib() {
    let f = Fixture::new();
    let node = node(&f, "node1", true);
    let out = python("imap_session.py", &node, &f, &[]);
    assert_steps(
        &out,
        &[
            "CAPABILITY before and after login",
            "LOGIN with literals, synchronizing and LITERAL+",
            "AUTHENTICATE PLAIN with SASL-IR and with a continuation",
            "wrong password gives NO [AUTHENTICATIONFAILED] after a delay",
            "LIST shows INBOX and the special-use folders",
            "LIST-EXTENDED RETURN (SPECIAL-USE STATUS (...)) counts the messages",
            "CREATE with hierarchy",
            "SUBSCRIBE, LSUB and LIST (SUBSCRIBED RECURSIVEMATCH)",
            "LSUB with % lists the unsubscribed parent of a subscribed folder as \\Noselect",
            "UNSUBSCRIBE",
            "RENAME and DELETE with hierarchy",
            "a name deleted (or renamed away) and created again gets a new UIDVALIDITY",
            "a mailbox name in raw 8-bit is refused, or listed in valid IMAP4rev1 syntax",
            "APPEND with flags and an internal date, APPENDUID, then FETCH",
            "FETCH BODY[] byte for byte against the delivered files",
            "BODY.PEEK[HEADER.FIELDS (Subject)] and HEADER.FIELDS.NOT",
            "partial FETCH <origin.length> byte for byte",
            "BODYSTRUCTURE, BODY and the parts of a multipart message",
            "ENVELOPE",
            "FETCH BODY[] sets \\Seen, BODY.PEEK[] and EXAMINE do not",
            "SEARCH ALL UNSEEN FROM SUBJECT BODY SINCE LARGER UID OR NOT",
            "STORE +FLAGS -FLAGS FLAGS with keywords",
            "COPY and MOVE with COPYUID",
            "EXPUNGE, UID EXPUNGE and CLOSE",
            "CONDSTORE: MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ",
            "with CONDSTORE on, STORE and an implicit \\Seen give FETCH responses with UID and MODSEQ",
            "QRESYNC: SELECT (QRESYNC ...) gives VANISHED (EARLIER) and changed FLAGS",
            "IDLE: delivery, flags and expunge by others are told at once",
            "STARTTLS on the plain port, and IMAPS",
            "POP3 and IMAP on one INBOX: POP3 DELE is an EXPUNGE, IMAP flags keep the UIDLs",
            "RENAME INBOX moves its messages to the new folder",
            "ID, NAMESPACE, CHECK, errors and LOGOUT",
        ],
    );
}

#[test]
fn imap_logins_need_tls() {
    let f = Fixture::new();
    let node = node(&f, "node1", false);
    let out = python("imap_tls.py", &node, &f, &[]);
    assert_steps(
        &out,
        &[
            "LOGINDISABLED and no AUTH=PLAIN before STARTTLS",
            "LOGIN and AUTHENTICATE PLAIN refused without TLS",
            "STARTTLS, then the capabilities change and LOGIN works",
            "STARTTLS then AUTHENTICATE PLAIN",
            "commands pipelined after STARTTLS are not run inside TLS",
            "IMAPS with the cluster certificate",
        ],
    );
}

#[test]
fn imap_two_nodes_on_one_store() {
    let f = Fixture::new();
    let node1 = node(&f, "node1", true);
    let node2 = node(&f, "node2", true);
    let (i2, s2) = (node2.imap.to_string(), node2.smtp.to_string());
    let out = python("imap_two_nodes.py", &node1, &f, &[("IMAP_2", &i2), ("SMTP_2", &s2)]);
    assert_steps(
        &out,
        &[
            "same UIDs, UIDVALIDITY, flags and MODSEQs from both nodes",
            "a STORE on node1 is an untagged FETCH FLAGS on node2 after NOOP",
            "an APPEND on node2 is EXISTS on node1",
            "an EXPUNGE on one node is an EXPUNGE on the other",
            "a MOVE on node1 is an EXPUNGE on node2, the moved message the same on both",
            "IDLE on node2 sees mail delivered through node1's SMTP within a few seconds",
            "APPENDs on both nodes at once get distinct UIDs, the same on both",
            "+FLAGS from both nodes at once on the same messages lose nothing",
        ],
    );
}

#[test]
fn imap_mbsync_syncs_both_ways() {
    let f = Fixture::new();
    let node = node(&f, "node1", true);
    let out = python("imap_mbsync.py", &node, &f, &[]);
    assert_steps(
        &out,
        &[
            "mbsync pulls messages, folders and flags into a Maildir",
            "flags set locally are pushed back and seen over imaplib",
            "a message written locally is uploaded (APPEND) with its flags",
            "a message deleted locally is expunged on the server",
            "changes on the server arrive with the next run (over IMAPS)",
        ],
    );
}

#[test]
fn imap_offlineimap_syncs() {
    let f = Fixture::new();
    let node = node(&f, "node1", true);
    let out = python("imap_offlineimap.py", &node, &f, &[]);
    assert_steps(
        &out,
        &["offlineimap pulls messages, folders and flags", "offlineimap pushes a local flag and a local message", "offlineimap over IMAPS brings what changed on the server"],
    );
}

#[test]
fn imap_curl() {
    let f = Fixture::new();
    let node = node(&f, "node1", true);
    let out = python("imap_curl.py", &node, &f, &[]);
    assert_steps(
        &out,
        &[
            "curl imap:// lists the folders",
            "curl fetches a message by UID byte for byte (URL form)",
            "curl -X 'UID FETCH 1 BODY[]' gets the FETCH response with the message's size",
            "curl SEARCH through the URL query",
            "curl custom commands: STORE and EXAMINE",
            "curl -T uploads a message with APPEND",
            "curl imaps:// verified with the cluster certificate, and STARTTLS with --ssl-reqd",
            "curl logs in with AUTHENTICATE PLAIN and an initial response (SASL-IR)",
            "curl with a wrong password fails with a login error",
        ],
    );
}

#[test]
fn imap_getmail_retrieves() {
    let f = Fixture::new();
    let node = node(&f, "node1", true);
    let out = python("imap_getmail.py", &node, &f, &[]);
    assert_steps(
        &out,
        &[
            "getmail retrieves the messages byte for byte and leaves them unread on the server",
            "getmail does not fetch a message twice",
            "getmail with delete = true removes what it has retrieved (\\Deleted, EXPUNGE)",
            "getmail over IMAPS verified with the cluster certificate",
        ],
    );
}

#[test]
fn imap_fetchmail_retrieves() {
    let f = Fixture::new();
    let node = node(&f, "node1", true);
    let out = python("imap_fetchmail.py", &node, &f, &[]);
    assert_steps(
        &out,
        &[
            "fetchmail --keep retrieves the new messages and marks them \\Seen",
            "a second fetchmail --keep finds nothing new",
            "fetchmail without --keep deletes what it retrieved",
            "fetchmail --ssl over IMAPS with the certificate checked, --all takes the seen ones",
        ],
    );
}

#[test]
fn imap_neomutt_in_a_terminal() {
    let f = Fixture::new();
    let node = node(&f, "node1", true);
    let out = python("imap_neomutt.py", &node, &f, &[]);
    assert_steps(
        &out,
        &[
            "neomutt opens the IMAP inbox and lists the subjects",
            "opening a message in neomutt shows its body and marks it \\Seen",
            "a flag and a deletion made in neomutt reach the server on sync",
            "neomutt over IMAPS with the cluster certificate trusted",
        ],
    );
}
