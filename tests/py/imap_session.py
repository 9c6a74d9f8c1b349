"""An IMAP4rev1 account used as mail clients use it (RFC 3501 and the
extensions the node offers), with Python's imaplib on a node that allows
plaintext logins: capabilities, logins, folders, APPEND, FETCH byte for
byte against the delivered files, BODYSTRUCTURE, SEARCH, STORE, COPY,
MOVE, EXPUNGE, CONDSTORE and QRESYNC, IDLE, STARTTLS and IMAPS, and POP3
on the same INBOX. Mail comes in over SMTP so its bytes are known.

Each step prints "ok <step>" or "FAIL <step>" with the reason and the
script goes on; it exits non-zero if any step failed."""
import base64
import datetime
import imaplib
import poplib
import re
import socket
import ssl
import time

from mailtest import deliver
from imap_common import (ALICE, BOB, addr, body_of, connect, expect_ok, fetch_items, finish, flagset, header_of, imap_date, insecure_tls, login,
                         parse, parse_internaldate, quiet_for, raw, read_until, search_result, send, step, store_path, today_utc, untagged, wrap)

FAIL_DELAY = 0.1  # auth_fail_delay_ms of the test configuration

# --- Mail with known bytes, delivered over SMTP before any IMAP session. ---
m1 = (b"From: Carol <carol@remote.test>\r\n"
      b"To: alice@example.test\r\n"
      b"Subject: hello one\r\n"
      b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
      b"Message-ID: <m1@remote.test>\r\n"
      b"\r\n"
      b"first body line\r\n"
      b"second line with needle-word\r\n")
m2 = (b"From: Carol <carol@remote.test>\r\n"
      b"To: alice@example.test\r\n"
      b"Subject: =?UTF-8?Q?Caf=C3=A9_menu?=\r\n"
      b"Date: Fri, 15 Mar 2024 12:00:00 +0100\r\n"
      b"Message-ID: <m2@remote.test>\r\n"
      b"MIME-Version: 1.0\r\n"
      b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
      b"\r\n"
      b"This is a multi-part message.\r\n"
      b"--b1\r\n"
      b"Content-Type: text/plain; charset=utf-8\r\n"
      b"\r\n"
      b"hello plain\r\n"
      b"\r\n"
      b"--b1\r\n"
      b"Content-Type: text/html; charset=utf-8\r\n"
      b"Content-Transfer-Encoding: quoted-printable\r\n"
      b"\r\n"
      b"<p>hi there</p>\r\n"
      b"\r\n"
      b"--b1\r\n"
      b"Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
      b"Content-Transfer-Encoding: base64\r\n"
      b"Content-Disposition: attachment; filename=\"a.bin\"\r\n"
      b"\r\n"
      b"AAECAwQ=\r\n"
      b"\r\n"
      b"--b1--\r\n")
m3 = (b"From: Dan <dan@other.test>\r\n"
      b"To: alice@example.test\r\n"
      b"Subject: big report\r\n"
      b"Date: Wed, 01 Jan 2025 08:00:00 +0000\r\n"
      b"Message-ID: <m3@other.test>\r\n"
      b"\r\n"
      + b"".join(b"line %03d of the big report %s\r\n" % (i, b"x" * 40) for i in range(100)))
assert len(m3) > 6000
sent = [m1, m2, m3]
files = [deliver(m) for m in sent]
contents = [open(f, "rb").read() for f in files]
for c, m in zip(contents, sent):
    assert c.endswith(m) and c.startswith(b"Return-Path: <carol@remote.test>\r\n"), c[:200]
delivered_at = datetime.datetime.now(datetime.timezone.utc)

BASE_CAPS = {"IMAP4REV1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"}
AUTH_CAPS = BASE_CAPS | {"NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC"}
SPECIAL = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk", "Archive": "\\Archive"}


def header_fields(message, names, exclude=False):
    """RFC 3501 6.4.5 HEADER.FIELDS / HEADER.FIELDS.NOT of a message:
    the fields (with their continuation lines) named or not named, and the
    blank line."""
    head = header_of(message)[:-2]
    fields = re.findall(rb"[^ \t\r\n][^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", head)
    assert b"".join(fields) == head, "unparsable header"
    low = {n.lower().encode() for n in names}
    keep = [f for f in fields if (f.split(b":", 1)[0].strip().lower() in low) != exclude]
    return b"".join(keep) + b"\r\n"


def caps_of(text):
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", text)
    assert m, text
    return set(m.group(1).decode().upper().split())


def b64(s):
    return base64.b64encode(s.encode()).decode()


def list_lines(lines, verb="LIST"):
    """{name: (set of attributes, delimiter)} from LIST/LSUB responses."""
    out = {}
    for l in untagged(lines, verb):
        v = parse(l[len(verb) + 1:])
        attrs, delim, name = v[0], v[1], v[2]
        name = name.decode() if isinstance(name, bytes) else str(name)
        assert name not in out, ("listed twice", name, lines)
        out[name] = (flagset(attrs), delim, v[3:])
    return out


def status_of(lines):
    out = {}
    for l in untagged(lines, "STATUS"):
        v = parse(l[len("STATUS "):])
        name = v[0].decode() if isinstance(v[0], bytes) else str(v[0])
        items = v[1]
        out[name] = {str(k).upper(): int(x) for k, x in zip(items[::2], items[1::2])}
    return out


def select(M, box, extra=""):
    status, lines = raw(M, "SELECT %s%s" % (box, extra))
    assert status.startswith(b"OK"), (box, status, lines)
    return status, lines


def code(lines, name):
    """The value of the response code [NAME value] in untagged OK lines."""
    for l in lines:
        m = re.match(rb"\* OK \[" + name.encode() + rb" ([^\]]*)\]", l)
        if m:
            return m.group(1).decode()
    raise AssertionError("no %s in %r" % (name, lines))


def exists(lines):
    e = [int(l.split()[0]) for l in untagged(lines, "EXISTS")]
    assert e, lines
    return e[-1]


def uids(M):
    _, lines = expect_ok(M, "FETCH 1:* (UID)")
    f = fetch_items(lines)
    return [int(f[i]["UID"]) for i in sorted(f)]


def mstatus(M, box, items):
    _, lines = expect_ok(M, "STATUS %s (%s)" % (box, items))
    s = status_of(lines)
    assert len(s) == 1, lines
    return list(s.values())[0]


# ---------------------------------------------------------------------------
with step("CAPABILITY before and after login"):
    M = connect()
    greet = M.welcome
    assert greet.startswith(b"* OK [CAPABILITY "), greet
    g = caps_of(greet)
    assert BASE_CAPS | {"STARTTLS", "AUTH=PLAIN"} <= g, g
    assert "LOGINDISABLED" not in g, g
    _, lines = expect_ok(M, "CAPABILITY")
    c = untagged(lines, "CAPABILITY")
    assert len(c) == 1 and set(c[0].decode().upper().split()[1:]) == g, (c, g)
    tagged, lines = expect_ok(M, "LOGIN alice@example.test secret")
    after = caps_of(tagged)
    assert AUTH_CAPS <= after, AUTH_CAPS - after
    assert "STARTTLS" not in after and not any(x.startswith("AUTH=") for x in after) and "LOGINDISABLED" not in after, after
    _, lines = expect_ok(M, "CAPABILITY")
    assert set(untagged(lines, "CAPABILITY")[0].decode().upper().split()[1:]) == after
    tagged, lines = raw(M, "LOGIN alice@example.test secret")
    assert tagged.startswith(b"BAD"), ("LOGIN twice", tagged)
    M.logout()

with step("LOGIN with literals, synchronizing and LITERAL+"):
    M = connect()
    status, lines = raw(M, "LOGIN alice@example.test {6}", literal=b"secret")
    assert status.startswith(b"OK"), (status, lines)
    assert lines and lines[0].startswith(b"+"), ("no continuation for a synchronizing literal", lines)
    M.logout()
    M = connect()
    status, lines = raw(M, b"LOGIN {18+}\r\nalice@example.test {6+}\r\nsecret")
    assert status.startswith(b"OK"), status
    assert not any(l.startswith(b"+") for l in lines), ("continuation for LITERAL+", lines)
    M.logout()

with step("AUTHENTICATE PLAIN with SASL-IR and with a continuation"):
    M = connect()
    status, lines = raw(M, "AUTHENTICATE PLAIN " + b64("\0%s\0secret" % ALICE))
    assert status.startswith(b"OK [CAPABILITY "), (status, lines)
    assert AUTH_CAPS <= caps_of(status)
    assert not any(l.startswith(b"+") for l in lines), lines
    assert mstatus(M, "INBOX", "MESSAGES") == {"MESSAGES": 3}
    M.logout()
    # imaplib waits for the continuation and sends the response then.
    M = connect()
    typ, data = M.authenticate("PLAIN", lambda _: ("%s\0%s\0secret" % (ALICE, ALICE)).encode())
    assert typ == "OK", (typ, data)
    assert M.state == "AUTH"
    M.logout()
    # RFC 3501 6.2.2: "*" cancels with BAD; RFC 4959: "=" is an empty response.
    M = connect()
    tag = M._new_tag()
    M.send(tag + b" AUTHENTICATE PLAIN\r\n")
    l = M.readline()
    assert l.startswith(b"+"), l
    M.send(b"*\r\n")
    l = M.readline()
    assert l.startswith(tag + b" BAD"), l
    # A foreign authorization identity is refused (RFC 4616 2).
    status, _ = raw(M, "AUTHENTICATE PLAIN " + b64("%s\0%s\0secret" % (BOB, ALICE)))
    assert status.startswith(b"NO"), status
    status, _ = raw(M, "AUTHENTICATE CRAM-MD5")
    assert status.startswith(b"NO") or status.startswith(b"BAD"), status
    M.logout()

with step("wrong password gives NO [AUTHENTICATIONFAILED] after a delay"):
    M = connect()
    answers = []
    for i, cmd in enumerate(["LOGIN alice@example.test wrong",
                             "AUTHENTICATE PLAIN " + b64("\0%s\0nope" % ALICE),
                             "LOGIN nobody@example.test secret"]):
        t0 = time.monotonic()
        try:
            status, lines = raw(M, cmd)
        except EOFError as e:
            raise AssertionError("closed before failure %d was answered: %s" % (i + 1, e))
        took = time.monotonic() - t0
        assert status.startswith(b"NO [AUTHENTICATIONFAILED]"), (cmd, status)
        assert took >= FAIL_DELAY * 0.95, ("failure %d answered after %.3fs" % (i + 1, took))
        answers.append(status)
    assert len(set(answers)) == 1, ("an unknown user is told apart", answers)
    # max_auth_failures (3): the node hangs up.
    M.sock.settimeout(5)
    rest = M.sock.recv(1000)
    assert rest in (b"",) or rest.startswith(b"* BYE"), rest
    M.shutdown()
    # A good login still works afterwards.
    login().logout()

with step("LIST shows INBOX and the special-use folders"):
    M = login()
    _, lines = expect_ok(M, 'LIST "" "*"')
    ls = list_lines(lines)
    assert set(ls) == {"INBOX"} | set(SPECIAL), ls
    for name, (attrs, delim, _) in ls.items():
        assert delim == b"/", (name, delim)
        want = {"\\HASNOCHILDREN"} | ({SPECIAL[name].upper()} if name in SPECIAL else set())
        assert {a.upper() for a in attrs} == want, (name, attrs)
    _, lines = expect_ok(M, 'LIST "" "%"')
    assert set(list_lines(lines)) == set(ls)
    _, lines = expect_ok(M, 'LIST "" ""')
    assert lines == [b'* LIST (\\Noselect) "/" ""'], lines
    _, lines = expect_ok(M, 'LIST "" "inbox"')
    assert set(list_lines(lines)) == {"INBOX"}, lines
    _, lines = expect_ok(M, 'LIST "" "T*"')
    assert set(list_lines(lines)) == {"Trash"}, lines
    # RFC 6154 / 5258: the SPECIAL-USE selection option.
    _, lines = expect_ok(M, 'LIST (SPECIAL-USE) "" "*"')
    su = list_lines(lines)
    assert set(su) == set(SPECIAL), su
    for name, (attrs, _, _) in su.items():
        assert SPECIAL[name].upper() in {a.upper() for a in attrs}, (name, attrs)
    M.logout()

with step("LIST-EXTENDED RETURN (SPECIAL-USE STATUS (...)) counts the messages"):
    M = login()
    _, lines = expect_ok(M, 'LIST "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN UIDNEXT))')
    ls = list_lines(lines)
    assert set(ls) == {"INBOX"} | set(SPECIAL), ls
    for name in SPECIAL:
        assert SPECIAL[name].upper() in {a.upper() for a in ls[name][0]}, ls[name]
    st = status_of(lines)
    assert st["INBOX"] == {"MESSAGES": 3, "UNSEEN": 3, "UIDNEXT": 4}, st
    for name in SPECIAL:
        assert st[name] == {"MESSAGES": 0, "UNSEEN": 0, "UIDNEXT": 1}, (name, st)
    # RFC 5819 2: each STATUS after the LIST of its mailbox.
    seen_list = set()
    for l in lines:
        v = parse(l[2:])
        if v[0] == "LIST":
            seen_list.add(bytes(v[3]) if isinstance(v[3], bytes) else v[3].encode())
        elif v[0] == "STATUS":
            name = v[1] if isinstance(v[1], bytes) else v[1].encode()
            assert name in seen_list, ("STATUS before its LIST", name, lines)
    M.logout()

with step("CREATE with hierarchy"):
    M = login()
    expect_ok(M, "CREATE Work/2024/Q1")
    _, lines = expect_ok(M, 'LIST "" "Work*"')
    ls = list_lines(lines)
    # RFC 3501 6.3.3: the superior names are created as needed.
    assert set(ls) == {"Work", "Work/2024", "Work/2024/Q1"}, ls
    assert "\\HasChildren" in ls["Work"][0] and "\\HasChildren" in ls["Work/2024"][0] and "\\HasNoChildren" in ls["Work/2024/Q1"][0], ls
    _, lines = expect_ok(M, 'LIST "" "Work/%"')
    assert set(list_lines(lines)) == {"Work/2024"}, lines
    _, lines = expect_ok(M, 'LIST "Work/" "%"')
    assert set(list_lines(lines)) == {"Work/2024"}, lines
    _, lines = expect_ok(M, 'LIST "" "%"')
    assert "Work" in list_lines(lines) and "Work/2024" not in list_lines(lines)
    status_, _ = raw(M, "CREATE Work/2024")
    assert status_.startswith(b"NO"), status_
    status_, _ = raw(M, "CREATE INBOX")
    assert status_.startswith(b"NO"), status_
    expect_ok(M, "CREATE Projects/")  # a trailing delimiter: a name that will have children
    _, lines = expect_ok(M, 'LIST "" "Projects*"')
    assert set(list_lines(lines)) == {"Projects"}, lines
    assert mstatus(M, "Work/2024/Q1", "MESSAGES UIDNEXT UNSEEN") == {"MESSAGES": 0, "UIDNEXT": 1, "UNSEEN": 0}
    M.logout()

with step("SUBSCRIBE, LSUB and LIST (SUBSCRIBED RECURSIVEMATCH)"):
    M = login()
    expect_ok(M, "SUBSCRIBE Work/2024/Q1")
    _, lines = expect_ok(M, 'LSUB "" "Work*"')
    assert set(list_lines(lines, "LSUB")) == {"Work/2024/Q1"}, lines
    _, lines = expect_ok(M, 'LIST (SUBSCRIBED) "" "Work*"')
    ls = list_lines(lines)
    assert set(ls) == {"Work/2024/Q1"} and "\\Subscribed" in ls["Work/2024/Q1"][0], lines
    _, lines = expect_ok(M, 'LIST "" "Work*" RETURN (SUBSCRIBED)')
    ls = list_lines(lines)
    assert set(ls) == {"Work", "Work/2024", "Work/2024/Q1"} and "\\Subscribed" in ls["Work/2024/Q1"][0] and "\\Subscribed" not in ls["Work"][0], lines
    # RFC 5258 3.5: CHILDINFO for a parent of a subscribed folder.
    _, lines = expect_ok(M, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "Work/%"')
    ls = list_lines(lines)
    assert set(ls) == {"Work/2024"}, lines
    assert [x for x in ls["Work/2024"][2]] == [[b"CHILDINFO", [b"SUBSCRIBED"]]], lines
    M.logout()

with step("LSUB with % lists the unsubscribed parent of a subscribed folder as \\Noselect"):
    M = login()
    # RFC 3501 6.3.9: "foo/bar" subscribed, "foo" not: LSUB "%" must
    # return foo, flagged \Noselect.
    _, lines = expect_ok(M, 'LSUB "" "Work/%"')
    ls = list_lines(lines, "LSUB")
    assert set(ls) == {"Work/2024"} and "\\Noselect" in ls["Work/2024"][0], lines
    M.logout()

with step("UNSUBSCRIBE"):
    M = login()
    expect_ok(M, "UNSUBSCRIBE Work/2024/Q1")
    _, lines = expect_ok(M, 'LSUB "" "*"')
    assert "Work/2024/Q1" not in list_lines(lines, "LSUB"), lines
    M.logout()

with step("RENAME and DELETE with hierarchy"):
    M = login()
    # RENAME moves the inferior names too (RFC 3501 6.3.5).
    expect_ok(M, 'APPEND Work/2024/Q1 {%d}' % len(m1), literal=m1)
    expect_ok(M, "RENAME Work/2024 Work/2025")
    _, lines = expect_ok(M, 'LIST "" "Work*"')
    assert set(list_lines(lines)) == {"Work", "Work/2025", "Work/2025/Q1"}, lines
    assert mstatus(M, "Work/2025/Q1", "MESSAGES") == {"MESSAGES": 1}
    status_, _ = raw(M, "STATUS Work/2024/Q1 (MESSAGES)")
    assert status_.startswith(b"NO"), status_
    status_, _ = raw(M, "RENAME Work/2025 Trash")
    assert status_.startswith(b"NO"), ("RENAME onto an existing folder", status_)
    status_, _ = raw(M, "RENAME Nowhere Elsewhere")
    assert status_.startswith(b"NO"), status_
    # DELETE of a folder with children: refused or made \Noselect (RFC 3501 6.3.4).
    status_, _ = raw(M, "DELETE Work/2025")
    _, lines = expect_ok(M, 'LIST "" "Work*"')
    ls = list_lines(lines)
    if status_.startswith(b"OK"):
        assert "\\Noselect" in ls["Work/2025"][0] and "Work/2025/Q1" in ls, lines
    else:
        assert status_.startswith(b"NO") and set(ls) == {"Work", "Work/2025", "Work/2025/Q1"}, (status_, lines)
    for name in ["Work/2025/Q1", "Work/2025", "Work", "Projects"]:
        status_, _ = raw(M, "DELETE " + name)
        if name == "Work/2025" and status_.startswith(b"NO") and b"NONEXISTENT" in status_:
            continue  # already a \Noselect name that went with its child
        assert status_.startswith(b"OK"), (name, status_)
    _, lines = expect_ok(M, 'LIST "" "*"')
    assert set(list_lines(lines)) == {"INBOX"} | set(SPECIAL), lines
    status_, _ = raw(M, "DELETE INBOX")
    assert status_.startswith(b"NO"), status_
    status_, _ = raw(M, "SELECT Work")
    assert status_.startswith(b"NO"), status_
    M.logout()

with step("a name deleted (or renamed away) and created again gets a new UIDVALIDITY"):
    # RFC 3501 2.3.1.1: mailbox name, UIDVALIDITY and UID name one message
    # forever; a new mailbox under an old name needs a new UIDVALIDITY
    # unless its UIDs go on from the old ones. Done within a second, as a
    # client emptying a folder by DELETE and CREATE does.
    M = login()
    wrong = []
    # Three tries each: one try may straddle a second.
    for how in ("DELETE", "RENAME"):
        for n in range(3):
            name = "Reborn%s%d" % (how.title(), n)
            expect_ok(M, "CREATE " + name)
            m = b"Subject: first life\r\n\r\nx\r\n"
            status_, _ = expect_ok(M, "APPEND %s {%d}" % (name, len(m)), literal=m)
            old_uv, old_uid = [int(x) for x in re.match(rb"OK \[APPENDUID (\d+) (\d+)\]", status_).groups()]
            expect_ok(M, "DELETE " + name if how == "DELETE" else "RENAME %s %sAway" % (name, name))
            expect_ok(M, "CREATE " + name)
            m2 = b"Subject: second life\r\n\r\ny\r\n"
            status_, _ = expect_ok(M, "APPEND %s {%d}" % (name, len(m2)), literal=m2)
            new_uv, new_uid = [int(x) for x in re.match(rb"OK \[APPENDUID (\d+) (\d+)\]", status_).groups()]
            if new_uv == old_uv and new_uid <= old_uid:
                wrong.append("after %s and CREATE %s: UIDVALIDITY %d UID %d names both %r and %r" % (how, name, new_uv, new_uid, m, m2))
            for x in (name, name + "Away"):
                raw(M, "DELETE " + x)
    M.logout()
    assert not wrong, wrong

with step("a mailbox name in raw 8-bit is refused, or listed in valid IMAP4rev1 syntax"):
    # RFC 3501 5.1.3: international names are modified UTF-7; a quoted
    # string holds 7-bit characters only (RFC 3501 9: QUOTED-CHAR, CHAR).
    M = login()
    status_, _ = raw(M, b'CREATE "Caf\xc3\xa9"')
    if status_.startswith(b"OK"):
        _, lines = expect_ok(M, 'LIST "" "Caf*"')
        raw(M, b'DELETE "Caf\xc3\xa9"')
        bad = [l for l in lines if re.search(rb'"[^"]*[\x80-\xff][^"]*"', l)]
        assert not bad, ("an 8-bit name in a quoted string", lines)
    else:
        assert status_.startswith(b"NO") or status_.startswith(b"BAD"), status_
    expect_ok(M, 'CREATE "Entw&APw-rfe"')
    _, lines = expect_ok(M, 'LIST "" "Entw*"')
    assert set(list_lines(lines)) == {"Entw&APw-rfe"}, lines
    expect_ok(M, 'DELETE "Entw&APw-rfe"')
    M.logout()

drafts_uv = None
with step("APPEND with flags and an internal date, APPENDUID, then FETCH"):
    M = login()
    draft = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: draft\r\n\r\nnot finished\r\n"
    status_, lines = expect_ok(M, 'APPEND Drafts (\\Draft \\Seen $Label1) "05-Mar-2021 14:30:00 +0200" {%d}' % len(draft), literal=draft)
    m = re.match(rb"OK \[APPENDUID (\d+) (\d+)\]", status_)
    assert m, status_
    drafts_uv, uid = int(m.group(1)), int(m.group(2))
    assert uid == 1, status_
    st = mstatus(M, "Drafts", "MESSAGES UIDNEXT UIDVALIDITY UNSEEN")
    assert st == {"MESSAGES": 1, "UIDNEXT": 2, "UIDVALIDITY": drafts_uv, "UNSEEN": 0}, st
    _, lines = select(M, "Drafts")
    assert exists(lines) == 1 and int(code(lines, "UIDVALIDITY")) == drafts_uv and int(code(lines, "UIDNEXT")) == 2, lines
    _, lines = expect_ok(M, "FETCH 1 (UID INTERNALDATE FLAGS RFC822.SIZE BODY.PEEK[])")
    f = fetch_items(lines)[1]
    assert int(f["UID"]) == 1, f
    assert f["BODY[]"] == draft, f["BODY[]"]
    assert int(f["RFC822.SIZE"]) == len(draft), f
    assert flagset(f["FLAGS"]) - {"\\Recent"} == {"\\Draft", "\\Seen", "$Label1"}, f["FLAGS"]
    when = parse_internaldate(f["INTERNALDATE"])
    assert when == datetime.datetime(2021, 3, 5, 12, 30, tzinfo=datetime.timezone.utc), f["INTERNALDATE"]
    if f["INTERNALDATE"] != b"05-Mar-2021 14:30:00 +0200":
        print("note: INTERNALDATE given as %r (the same instant)" % f["INTERNALDATE"])
    # An APPEND to the selected folder is told as EXISTS; LITERAL+ APPEND.
    draft2 = b"Subject: second draft\r\n\r\nmore\r\n"
    status_, lines = raw(M, b"APPEND Drafts () {%d+}\r\n" % len(draft2) + draft2)
    assert status_.startswith(b"OK [APPENDUID %d 2]" % drafts_uv), status_
    assert b"* 2 EXISTS" in lines, lines
    _, lines = expect_ok(M, "UID FETCH 2 (FLAGS INTERNALDATE BODY.PEEK[])")
    f = fetch_items(lines)[2]
    assert f["BODY[]"] == draft2 and flagset(f["FLAGS"]) - {"\\Recent"} == set(), f
    assert abs(parse_internaldate(f["INTERNALDATE"]) - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=5), f
    # RFC 3501 6.3.11: TRYCREATE for a folder that does not exist.
    status_, lines = raw(M, "APPEND Nowhere {%d}" % len(draft2), literal=draft2)
    assert status_.startswith(b"NO [TRYCREATE]"), (status_, lines)
    M.logout()

with step("FETCH BODY[] byte for byte against the delivered files"):
    M = login()
    _, lines = select(M, "INBOX")
    assert exists(lines) == 3, lines
    assert b"* 3 RECENT" in lines, ("the first SELECT sees the new mail as \\Recent", lines)
    inbox_uv = int(code(lines, "UIDVALIDITY"))
    assert int(code(lines, "UIDNEXT")) == 4, lines
    assert code(lines, "UNSEEN") == "1", lines
    _, lines = expect_ok(M, "UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE BODY.PEEK[] BODY.PEEK[TEXT] BODY.PEEK[HEADER])")
    f = fetch_items(lines)
    assert sorted(f) == [1, 2, 3], f.keys()
    for i in range(3):
        it = f[i + 1]
        assert int(it["UID"]) == i + 1, it
        assert it["BODY[]"] == contents[i], ("BODY[] of %d differs from the file" % (i + 1))
        assert it["BODY[]"].endswith(sent[i])
        assert int(it["RFC822.SIZE"]) == len(contents[i]), (it["RFC822.SIZE"], len(contents[i]))
        assert it["BODY[TEXT]"] == body_of(sent[i]), it["BODY[TEXT]"][:100]
        assert it["BODY[HEADER]"] == header_of(contents[i]), it["BODY[HEADER]"]
        assert abs(parse_internaldate(it["INTERNALDATE"]) - delivered_at) < datetime.timedelta(minutes=5), it["INTERNALDATE"]
    # The same with the RFC 822 names.
    _, lines = expect_ok(M, "FETCH 1 (RFC822.HEADER RFC822.SIZE)")
    assert fetch_items(lines)[1]["RFC822.HEADER"] == header_of(contents[0])
    # Nothing above was more than a peek.
    _, lines = expect_ok(M, "FETCH 1:3 (FLAGS)")
    assert all(flagset(v["FLAGS"]) == {"\\Recent"} for v in fetch_items(lines).values()), lines
    # A second session does not see them as \Recent.
    M2 = login()
    _, lines = select(M2, "INBOX")
    assert b"* 0 RECENT" in lines, lines
    assert int(code(lines, "UIDVALIDITY")) == inbox_uv
    M2.logout()
    M.logout()

with step("BODY.PEEK[HEADER.FIELDS (Subject)] and HEADER.FIELDS.NOT"):
    M = login()
    select(M, "INBOX")
    _, lines = expect_ok(M, "FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (Subject)])")
    f = fetch_items(lines)
    keys = [k for k in f[1]]
    assert keys == ["BODY[HEADER.FIELDS (SUBJECT)]"], (keys, lines[0][:80])
    assert f[1][keys[0]] == b"Subject: hello one\r\n\r\n", f[1]
    assert f[2][keys[0]] == b"Subject: =?UTF-8?Q?Caf=C3=A9_menu?=\r\n\r\n", f[2]
    _, lines = expect_ok(M, "FETCH 1 (BODY.PEEK[HEADER.FIELDS (From Message-ID X-None)])")
    v = list(fetch_items(lines)[1].values())[0]
    assert v == b"From: Carol <carol@remote.test>\r\nMessage-ID: <m1@remote.test>\r\n\r\n", v
    _, lines = expect_ok(M, "FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Return-Path Received Message-ID Date)])")
    v = list(fetch_items(lines)[1].values())[0]
    assert v == header_fields(contents[0], ["Return-Path", "Received", "Message-ID", "Date"], exclude=True), v
    assert v.endswith(b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: hello one\r\n\r\n"), v
    M.logout()

with step("partial FETCH <origin.length> byte for byte"):
    M = login()
    select(M, "INBOX")
    c = contents[2]
    for origin, length in [(0, 20), (7, 100), (len(c) - 10, 50), (len(c), 10), (len(c) + 100, 10)]:
        _, lines = expect_ok(M, "FETCH 3 (BODY.PEEK[]<%d.%d>)" % (origin, length))
        f = fetch_items(lines)[3]
        # RFC 3501 7.4.2: the response names the origin only.
        assert list(f) == ["BODY[]<%d>" % origin], (list(f), lines[0][:60])
        assert f["BODY[]<%d>" % origin] == c[origin:origin + length], (origin, length, f)
    _, lines = expect_ok(M, "FETCH 1 (BODY.PEEK[TEXT]<6.10>)")
    assert fetch_items(lines)[1]["BODY[TEXT]<6>"] == body_of(m1)[6:16], lines
    _, lines = expect_ok(M, "FETCH 2 (BODY.PEEK[1]<2.5>)")
    assert fetch_items(lines)[2]["BODY[1]<2>"] == b"llo p", lines
    M.logout()

with step("BODYSTRUCTURE, BODY and the parts of a multipart message"):
    M = login()
    select(M, "INBOX")
    _, lines = expect_ok(M, "FETCH 2 (BODYSTRUCTURE BODY BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[3] BODY.PEEK[2.MIME] BODY.PEEK[3.MIME])")
    f = fetch_items(lines)[2]
    assert f["BODY[1]"] == b"hello plain\r\n", f["BODY[1]"]
    assert f["BODY[2]"] == b"<p>hi there</p>\r\n", f["BODY[2]"]
    assert f["BODY[3]"] == b"AAECAwQ=\r\n", f["BODY[3]"]
    assert f["BODY[2.MIME]"] == b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n", f["BODY[2.MIME]"]
    assert f["BODY[3.MIME]"] == (b"Content-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n"
                                 b"Content-Disposition: attachment; filename=\"a.bin\"\r\n\r\n"), f["BODY[3.MIME]"]

    def norm(v):
        """Upper-cases what RFC 3501 says is case-insensitive in a body
        structure (types, parameter names, encodings, disposition)."""
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, bytes):
            return v
        return v

    def up(s):
        return s.upper() if isinstance(s, bytes) else s

    def params(p):
        return None if p is None else [up(x) if i % 2 == 0 else x for i, x in enumerate(p)]

    def check_part(got, want, ext, what):
        # body-type-basic/text: type subtype params id desc enc octets [lines]
        basic = [up(got[0]), up(got[1]), params(got[2]), got[3], got[4], up(got[5]), int(got[6])]
        n = 7
        if want[0] == b"TEXT":
            basic.append(int(got[7]))
            n = 8
        assert basic == want, (what, basic, want, got)
        rest = got[n:]
        if not ext:
            assert rest == [], ("BODY has no extension data", what, got)
            return
        # Extension data (body-ext-1part): md5 disposition language location.
        assert len(rest) <= 4, (what, rest)
        want_ext = [None, [b"ATTACHMENT", [b"FILENAME", b"a.bin"]] if want[1] == b"OCTET-STREAM" else None, None, None]
        got_ext = list(rest)
        if len(got_ext) >= 2 and got_ext[1] is not None:
            got_ext[1] = [up(got_ext[1][0]), params(got_ext[1][1])]
        assert got_ext == want_ext[:len(got_ext)], (what, got_ext, want_ext)
        if want[1] == b"OCTET-STREAM":
            assert len(got_ext) >= 2, ("the attachment's disposition is missing from BODYSTRUCTURE", got)

    want_parts = [
        [b"TEXT", b"PLAIN", [b"CHARSET", b"utf-8"], None, None, b"7BIT", 13, 1],
        [b"TEXT", b"HTML", [b"CHARSET", b"utf-8"], None, None, b"QUOTED-PRINTABLE", 17, 1],
        [b"APPLICATION", b"OCTET-STREAM", [b"NAME", b"a.bin"], None, None, b"BASE64", 10],
    ]
    for key, ext in (("BODYSTRUCTURE", True), ("BODY", False)):
        bs = f[key]
        assert isinstance(bs, list) and len(bs) >= 4, (key, bs)
        parts = [p for p in bs if isinstance(p, list) and p and isinstance(p[0], (bytes, list))][:3]
        assert len(parts) == 3 and all(isinstance(bs[i], list) for i in range(3)), (key, bs)
        for i in range(3):
            check_part(bs[i], want_parts[i], ext, "%s part %d" % (key, i + 1))
        assert up(bs[3]) == b"MIXED", (key, bs[3:])
        if ext:
            # body-ext-mpart: parameters, disposition, language, location.
            assert params(bs[4]) == [b"BOUNDARY", b"b1"], (key, bs[4:])
            assert all(x is None for x in bs[5:]), (key, bs[5:])
        else:
            assert len(bs) == 4, ("BODY has no extension data", bs)
    # A single-part message: its whole body is part 1.
    _, lines = expect_ok(M, "FETCH 1 (BODYSTRUCTURE BODY.PEEK[1])")
    f = fetch_items(lines)[1]
    check_part(f["BODYSTRUCTURE"], [b"TEXT", b"PLAIN", [b"CHARSET", b"us-ascii"], None, None, b"7BIT", len(body_of(m1)), 2], True, "single part")
    assert f["BODY[1]"] == body_of(m1), f
    M.logout()

with step("ENVELOPE"):
    M = login()
    select(M, "INBOX")
    _, lines = expect_ok(M, "FETCH 1:2 (ENVELOPE)")
    f = fetch_items(lines)
    carol = [[b"Carol", None, b"carol", b"remote.test"]]
    alice = [[None, None, b"alice", b"example.test"]]
    assert f[1]["ENVELOPE"] == [b"Mon, 01 Jan 2024 10:00:00 +0000", b"hello one", carol, carol, carol, alice, None, None, None, b"<m1@remote.test>"], f[1]
    # The subject as in the header, encoded words and all (RFC 3501 7.4.2).
    assert f[2]["ENVELOPE"][1] == b"=?UTF-8?Q?Caf=C3=A9_menu?=", f[2]
    M.logout()

with step("FETCH BODY[] sets \\Seen, BODY.PEEK[] and EXAMINE do not"):
    M = login()
    select(M, "INBOX")
    _, lines = expect_ok(M, "FETCH 1 (BODY[TEXT])")
    f = fetch_items(lines)[1]
    assert f["BODY[TEXT]"] == body_of(m1)
    # RFC 3501 6.4.5: the \Seen flag set as a side effect is told.
    assert "\\Seen" in flagset(f.get("FLAGS", [])), ("FLAGS not sent with the \\Seen change", lines)
    _, lines = expect_ok(M, "FETCH 2 (RFC822)")
    f = fetch_items(lines)[2]
    assert f["RFC822"] == contents[1] and "\\Seen" in flagset(f.get("FLAGS", [])), lines
    _, lines = expect_ok(M, "FETCH 1:3 (FLAGS)")
    assert {k: flagset(v["FLAGS"]) - {"\\Recent"} for k, v in fetch_items(lines).items()} == {1: {"\\Seen"}, 2: {"\\Seen"}, 3: set()}, lines
    M.logout()
    M = login()
    status_, lines = raw(M, "EXAMINE INBOX")
    assert status_.startswith(b"OK [READ-ONLY]"), status_
    assert code(lines, "PERMANENTFLAGS") == "()", lines
    _, lines = expect_ok(M, "FETCH 3 (BODY[])")
    assert fetch_items(lines)[3]["BODY[]"] == contents[2]
    status_, _ = raw(M, "STORE 3 +FLAGS (\\Flagged)")
    assert status_.startswith(b"NO"), status_
    status_, _ = raw(M, "EXPUNGE")
    assert status_.startswith(b"NO"), status_
    M.logout()
    M = login()
    select(M, "INBOX")
    _, lines = expect_ok(M, "FETCH 3 (FLAGS)")
    assert flagset(fetch_items(lines)[3]["FLAGS"]) == set(), ("EXAMINE changed the flags", lines)
    M.logout()

with step("SEARCH ALL UNSEEN FROM SUBJECT BODY SINCE LARGER UID OR NOT"):
    M = login()
    select(M, "INBOX")
    expect_ok(M, "STORE 1:3 -FLAGS.SILENT (\\Seen \\Flagged)")
    expect_ok(M, "STORE 2 +FLAGS.SILENT (\\Seen)")
    expect_ok(M, "STORE 3 +FLAGS.SILENT (\\Flagged)")
    expect_ok(M, "STORE 1 +FLAGS.SILENT ($Work)")
    today = today_utc()
    day = datetime.timedelta(days=1)
    cases = [
        ("ALL", [1, 2, 3]),
        ("UNSEEN", [1, 3]),
        ("SEEN", [2]),
        ("FLAGGED", [3]),
        ("UNFLAGGED", [1, 2]),
        ("UNSEEN FLAGGED", [3]),
        ("OR SEEN FLAGGED", [2, 3]),
        ("NOT OR SEEN FLAGGED", [1]),
        ("KEYWORD $Work", [1]),
        ("UNKEYWORD $Work", [2, 3]),
        ("DELETED", []),
        ("FROM carol", [1, 2]),
        ('FROM "dan@other.test"', [3]),
        ("FROM CAROL@REMOTE", [1, 2]),
        ("TO alice", [1, 2, 3]),
        ("SUBJECT hello", [1]),
        ("SUBJECT HELLO", [1]),
        ('SUBJECT "big report"', [3]),
        ("BODY needle-word", [1]),
        ('BODY "hi there"', [2]),
        ("BODY Dan", []),
        ("TEXT Dan", [3]),
        ('HEADER Message-ID "<m1@remote.test>"', [1]),
        ("HEADER X-Nothing \"\"", []),
        ("SINCE %s" % imap_date(today - day), [1, 2, 3]),
        ("SINCE %s" % imap_date(today + day), []),
        ("BEFORE %s" % imap_date(today + 2 * day), [1, 2, 3]),
        ("BEFORE %s" % imap_date(today - day), []),
        ("SENTON 1-Jan-2024", [1]),
        ("SENTSINCE 1-Feb-2024", [2, 3]),
        ("SENTBEFORE 1-Feb-2024", [1]),
        ("LARGER 5000", [3]),
        ("SMALLER 5000", [1, 2]),
        ("2:3", [2, 3]),
        ("2,*", [2, 3]),
        ("UID 1,3", [1, 3]),
        ("UID 2:*", [2, 3]),
        ("NOT FROM carol", [3]),
        ("OR FROM dan SUBJECT hello", [1, 3]),
        ("(FROM carol UNSEEN)", [1]),
        ("NOT (FROM carol UNSEEN)", [2, 3]),
        ("CHARSET UTF-8 FROM carol", [1, 2]),
    ]
    wrong = []
    for q, want in cases:
        _, lines = expect_ok(M, "SEARCH " + q)
        got = search_result(lines)
        if got != want:
            wrong.append((q, got, want))
    _, lines = expect_ok(M, "UID SEARCH UID 2:*")
    if search_result(lines) != [2, 3]:
        wrong.append(("UID SEARCH UID 2:*", search_result(lines), [2, 3]))
    _, lines = expect_ok(M, "UID SEARCH 3")
    if search_result(lines) != [3]:
        wrong.append(("UID SEARCH 3", search_result(lines), [3]))
    # A UTF-8 string in a literal against a MIME-encoded subject.
    status_, lines = raw(M, b"SEARCH CHARSET UTF-8 SUBJECT {%d}" % len("café".encode()), literal="café".encode())
    got = search_result(lines) if status_.startswith(b"OK") else status_
    if got != [2]:
        wrong.append(("SEARCH CHARSET UTF-8 SUBJECT café", got, [2]))
    status_, _ = raw(M, "SEARCH CHARSET KOI8-Q ALL")
    if not status_.startswith(b"NO [BADCHARSET"):
        wrong.append(("SEARCH CHARSET KOI8-Q ALL", status_, "NO [BADCHARSET ...]"))
    assert not wrong, "\n".join("SEARCH %s -> %r, expected %r" % w for w in wrong)
    M.logout()

with step("STORE +FLAGS -FLAGS FLAGS with keywords"):
    M = login()
    select(M, "INBOX")
    expect_ok(M, "STORE 1:3 FLAGS.SILENT ()")

    def fl(lines):
        return {k: flagset(v["FLAGS"]) - {"\\Recent"} for k, v in fetch_items(lines).items()}

    _, lines = expect_ok(M, "STORE 1 +FLAGS (\\Flagged $Work Later)")
    assert fl(lines) == {1: {"\\Flagged", "$Work", "Later"}}, lines
    _, lines = expect_ok(M, "STORE 1 -FLAGS (\\Flagged)")
    assert fl(lines) == {1: {"$Work", "Later"}}, lines
    _, lines = expect_ok(M, "STORE 1 FLAGS (\\Answered)")
    assert fl(lines) == {1: {"\\Answered"}}, lines
    _, lines = expect_ok(M, "STORE 2:3 +FLAGS ($Forwarded \\Seen)")
    assert fl(lines) == {2: {"$Forwarded", "\\Seen"}, 3: {"$Forwarded", "\\Seen"}}, lines
    _, lines = expect_ok(M, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert untagged(lines, "FETCH") == [], ("FETCH after .SILENT", lines)
    _, lines = expect_ok(M, "UID STORE 3 -FLAGS ($Forwarded)")
    f = fetch_items(lines)
    assert list(f) == [3] and int(f[3]["UID"]) == 3 and flagset(f[3]["FLAGS"]) - {"\\Recent"} == {"\\Seen"}, lines
    _, lines = expect_ok(M, "FETCH 1:3 (FLAGS)")
    assert fl(lines) == {1: {"\\Answered", "\\Deleted"}, 2: {"$Forwarded", "\\Seen"}, 3: {"\\Seen"}}, lines
    status_, _ = raw(M, "STORE 1 +FLAGS (\\Bogus)")
    assert status_.startswith(b"BAD") or status_.startswith(b"NO"), status_
    status_, _ = raw(M, "STORE 9 +FLAGS (\\Seen)")
    assert status_.startswith(b"BAD") or status_.startswith(b"NO"), status_
    # Another session sees the same flags, and the keywords in FLAGS.
    M2 = login()
    _, lines = select(M2, "INBOX")
    folder_flags = flagset(parse(untagged(lines, "FLAGS")[0][len("FLAGS "):])[0])
    assert {"$Work", "Later", "\\Seen", "\\Deleted"} <= folder_flags, folder_flags
    _, lines = expect_ok(M2, "FETCH 1:3 (FLAGS)")
    assert fl(lines) == {1: {"\\Answered", "\\Deleted"}, 2: {"$Forwarded", "\\Seen"}, 3: {"\\Seen"}}, lines
    M2.logout()
    expect_ok(M, "STORE 1 -FLAGS.SILENT (\\Deleted \\Answered)")
    M.logout()

with step("COPY and MOVE with COPYUID"):
    M = login()
    _, lines = select(M, "INBOX")
    inbox_uv = int(code(lines, "UIDVALIDITY"))
    _, lines = expect_ok(M, "FETCH 1:3 (FLAGS INTERNALDATE)")
    before = fetch_items(lines)
    status_, lines = expect_ok(M, "COPY 1:2 Archive")
    m = re.match(rb"OK \[COPYUID (\d+) 1:2 1:2\]", status_)
    assert m, status_
    archive_uv = int(m.group(1))
    assert mstatus(M, "Archive", "MESSAGES UIDNEXT UIDVALIDITY") == {"MESSAGES": 2, "UIDNEXT": 3, "UIDVALIDITY": archive_uv}
    _, lines = expect_ok(M, "FETCH 1:3 (UID)")
    assert len(fetch_items(lines)) == 3, "COPY removed something"
    status_, lines = raw(M, "UID MOVE 3 Junk")
    assert status_.startswith(b"OK"), (status_, lines)
    # RFC 6851 4.3: COPYUID in an untagged OK, then the EXPUNGE.
    cu = [l for l in lines if l.startswith(b"* OK [COPYUID ")]
    assert len(cu) == 1 and re.match(rb"\* OK \[COPYUID \d+ 3 1\]", cu[0]), lines
    junk_uv = int(cu[0].split()[3])
    assert untagged(lines, "EXPUNGE") == [b"3 EXPUNGE"], lines
    assert uids(M) == [1, 2]
    status_, _ = raw(M, "COPY 1 Nowhere")
    assert status_.startswith(b"NO [TRYCREATE]"), status_
    status_, _ = raw(M, "MOVE 1 Nowhere")
    assert status_.startswith(b"NO [TRYCREATE]"), status_
    assert uids(M) == [1, 2]
    # The copies: same bytes, flags and internal date (RFC 3501 6.4.7).
    _, lines = select(M, "Archive")
    assert int(code(lines, "UIDVALIDITY")) == archive_uv
    _, lines = expect_ok(M, "UID FETCH 1:2 (FLAGS INTERNALDATE BODY.PEEK[])")
    f = fetch_items(lines)
    for i in (1, 2):
        assert f[i]["BODY[]"] == contents[i - 1], i
        assert flagset(f[i]["FLAGS"]) - {"\\Recent"} == flagset(before[i]["FLAGS"]) - {"\\Recent"}, (f[i]["FLAGS"], before[i]["FLAGS"])
        assert f[i]["INTERNALDATE"] == before[i]["INTERNALDATE"], (f[i]["INTERNALDATE"], before[i]["INTERNALDATE"])
    _, lines = select(M, "Junk")
    assert exists(lines) == 1 and int(code(lines, "UIDVALIDITY")) == junk_uv
    _, lines = expect_ok(M, "UID FETCH 1 (FLAGS INTERNALDATE BODY.PEEK[])")
    f = fetch_items(lines)[1]
    assert f["BODY[]"] == contents[2] and f["INTERNALDATE"] == before[3]["INTERNALDATE"], f.get("INTERNALDATE")
    assert flagset(f["FLAGS"]) - {"\\Recent"} == flagset(before[3]["FLAGS"]) - {"\\Recent"}, f["FLAGS"]
    # And back to INBOX: a new UID there.
    status_, lines = raw(M, "MOVE 1 INBOX")
    cu = [l for l in lines if l.startswith(b"* OK [COPYUID ")]
    assert status_.startswith(b"OK") and cu == [b"* OK [COPYUID %d 1 4] moved" % inbox_uv] or (cu and cu[0].startswith(b"* OK [COPYUID %d 1 4]" % inbox_uv)), (status_, lines)
    assert untagged(lines, "EXPUNGE") == [b"1 EXPUNGE"], lines
    _, lines = select(M, "INBOX")
    assert uids(M) == [1, 2, 4]
    _, lines = expect_ok(M, "UID FETCH 4 (BODY.PEEK[])")
    assert fetch_items(lines)[3]["BODY[]"] == contents[2]
    M.logout()

with step("EXPUNGE, UID EXPUNGE and CLOSE"):
    M = login()
    extra = b"Subject: third in archive\r\n\r\nx\r\n"
    status_, _ = expect_ok(M, "APPEND Archive {%d}" % len(extra), literal=extra)
    assert re.match(rb"OK \[APPENDUID \d+ 3\]", status_), status_
    select(M, "Archive")
    assert uids(M) == [1, 2, 3]
    expect_ok(M, "STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    _, lines = expect_ok(M, "UID EXPUNGE 2")
    assert untagged(lines, "EXPUNGE") == [b"2 EXPUNGE"], lines
    assert uids(M) == [1, 3]
    _, lines = expect_ok(M, "EXPUNGE")
    seqs = [1, 3]
    for l in untagged(lines, "EXPUNGE"):
        n = int(l.split()[0])
        assert 1 <= n <= len(seqs), lines
        del seqs[n - 1]
    assert seqs == [], ("EXPUNGE responses do not remove every message", lines)
    _, lines = expect_ok(M, "NOOP")
    assert untagged(lines, "EXPUNGE") == [], lines
    status_, lines = raw(M, "FETCH 1 (UID)")
    assert status_.startswith(b"BAD") or status_.startswith(b"NO"), ("FETCH in an empty folder", status_, lines)
    assert mstatus(M, "Archive", "MESSAGES UIDNEXT") == {"MESSAGES": 0, "UIDNEXT": 4}
    # CLOSE expunges silently; UNSELECT does not expunge (RFC 3691).
    for n, flags in ((1, "(\\Deleted)"), (2, "()")):
        t = b"Subject: trash %d\r\n\r\nx\r\n" % n
        expect_ok(M, "APPEND Trash %s {%d}" % (flags, len(t)), literal=t)
    select(M, "Trash")
    _, lines = expect_ok(M, "CLOSE")
    assert lines == [], ("CLOSE sends nothing untagged", lines)
    assert mstatus(M, "Trash", "MESSAGES") == {"MESSAGES": 1}
    select(M, "Trash")
    expect_ok(M, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    _, lines = expect_ok(M, "UNSELECT")
    assert lines == [], lines
    assert mstatus(M, "Trash", "MESSAGES") == {"MESSAGES": 1}
    status_, _ = raw(M, "FETCH 1 (UID)")
    assert status_.startswith(b"BAD"), ("FETCH after UNSELECT", status_)
    M.logout()

inbox_uv = None
with step("CONDSTORE: MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ"):
    M = login()
    _, lines = select(M, "INBOX", " (CONDSTORE)")
    inbox_uv = int(code(lines, "UIDVALIDITY"))
    h0 = int(code(lines, "HIGHESTMODSEQ"))
    _, lines = expect_ok(M, "FETCH 1:* (UID MODSEQ)")
    f = fetch_items(lines)
    mods = {int(v["UID"]): int(v["MODSEQ"][0]) for v in f.values()}
    assert set(mods) == {1, 2, 4} and max(mods.values()) == h0, (mods, h0)
    _, lines = expect_ok(M, "UID STORE 1 +FLAGS (\\Answered)")
    f = fetch_items(lines)
    m1mod = int(f[1]["MODSEQ"][0])
    assert m1mod > h0 and "\\Answered" in flagset(f[1]["FLAGS"]), lines
    assert mstatus(M, "INBOX", "HIGHESTMODSEQ") == {"HIGHESTMODSEQ": m1mod}
    _, lines = expect_ok(M, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % h0)
    f = fetch_items(lines)
    assert [int(v["UID"]) for v in f.values()] == [1] and int(f[1]["MODSEQ"][0]) == m1mod, lines
    _, lines = expect_ok(M, "UID STORE 2 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % mods[2])
    f = fetch_items(lines)
    m2mod = int(f[2]["MODSEQ"][0])
    assert m2mod > m1mod and "\\Flagged" in flagset(f[2]["FLAGS"]), lines
    # A conditional STORE on a message changed since: MODIFIED, no change.
    status_, lines = raw(M, "UID STORE 2 (UNCHANGEDSINCE %d) -FLAGS (\\Flagged)" % mods[2])
    assert status_.startswith(b"OK [MODIFIED 2]"), (status_, lines)
    _, lines = expect_ok(M, "UID FETCH 2 (FLAGS MODSEQ)")
    f = fetch_items(lines)[2]
    assert "\\Flagged" in flagset(f["FLAGS"]) and int(f["MODSEQ"][0]) == m2mod, f
    _, lines = expect_ok(M, "UID SEARCH MODSEQ %d" % (h0 + 1))
    s = untagged(lines, "SEARCH")
    expect_ok(M, "UID STORE 1:2 -FLAGS.SILENT (\\Answered \\Flagged)")
    M.logout()
    assert s == [b"SEARCH 1 2 (MODSEQ %d)" % m2mod], lines

with step("with CONDSTORE on, STORE and an implicit \\Seen give FETCH responses with UID and MODSEQ"):
    # RFC 7162 3.2.4: once a CONDSTORE enabling command was issued, every
    # untagged FETCH caused by STORE, by a FETCH that sets \Seen or by
    # another client carries UID and MODSEQ.
    M = login()
    expect_ok(M, "ENABLE CONDSTORE")
    select(M, "INBOX")
    wrong = []
    _, lines = expect_ok(M, "STORE 1 +FLAGS ($CondTest)")
    f = fetch_items(lines).get(1, {})
    if "UID" not in f or "MODSEQ" not in f:
        wrong.append(("STORE", lines))
    _, lines = expect_ok(M, "STORE 1 -FLAGS ($CondTest)")
    expect_ok(M, "STORE 1 -FLAGS.SILENT (\\Seen)")
    _, lines = expect_ok(M, "FETCH 1 (BODY[TEXT])")
    f = fetch_items(lines).get(1, {})
    if "UID" not in f or "MODSEQ" not in f or "\\Seen" not in flagset(f.get("FLAGS", [])):
        wrong.append(("FETCH BODY[TEXT] setting \\Seen", [l[:120] for l in lines]))
    M.logout()
    assert not wrong, wrong

with step("QRESYNC: SELECT (QRESYNC ...) gives VANISHED (EARLIER) and changed FLAGS"):
    Q = login()
    _, lines = expect_ok(Q, "ENABLE QRESYNC")
    assert untagged(lines, "ENABLED") == [b"ENABLED QRESYNC"], lines
    _, lines = select(Q, "INBOX")
    uv = int(code(lines, "UIDVALIDITY"))
    h1 = int(code(lines, "HIGHESTMODSEQ"))
    select(Q, "Sent")
    # Meanwhile another client: a flag on UID 2, a new message, UID 4 expunged.
    B = login()
    select(B, "INBOX")
    expect_ok(B, "UID STORE 2 +FLAGS.SILENT ($QRtest)")
    new = b"Subject: while away\r\n\r\nnew one\r\n"
    status_, _ = expect_ok(B, "APPEND INBOX {%d}" % len(new), literal=new)
    assert status_.startswith(b"OK [APPENDUID %d 5]" % uv), status_
    expect_ok(B, "UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    expect_ok(B, "UID EXPUNGE 4")
    B.logout()
    _, lines = select(Q, "INBOX", " (QRESYNC (%d %d))" % (uv, h1))
    # RFC 7162 3.2.11: the previous mailbox is closed with [CLOSED].
    assert lines[0].startswith(b"* OK [CLOSED]"), lines
    assert exists(lines) == 3, lines
    assert untagged(lines, "VANISHED") == [b"VANISHED (EARLIER) 4"], lines
    f = fetch_items(lines)
    changed = {int(v["UID"]): v for v in f.values()}
    assert set(changed) == {2, 5}, lines
    assert "$QRtest" in flagset(changed[2]["FLAGS"]) and all("MODSEQ" in v for v in changed.values()), lines
    assert int(code(lines, "HIGHESTMODSEQ")) > h1
    # Known UIDs limit what is reported (RFC 7162 3.2.5).
    _, lines = select(Q, "INBOX", " (QRESYNC (%d %d 1:3))" % (uv, h1))
    assert untagged(lines, "VANISHED") == [], lines
    # Another UIDVALIDITY: nothing but the usual responses.
    _, lines = select(Q, "INBOX", " (QRESYNC (%d %d))" % (uv + 1, h1))
    assert untagged(lines, "VANISHED") == [] and untagged(lines, "FETCH") == [], lines
    _, lines = expect_ok(Q, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % h1)
    assert untagged(lines, "VANISHED") == [b"VANISHED (EARLIER) 4"], lines
    assert sorted(int(v["UID"]) for v in fetch_items(lines).values()) == [2, 5], lines
    # With QRESYNC on, EXPUNGE is told as VANISHED (RFC 7162 3.2.10).
    expect_ok(Q, "UID STORE 5 +FLAGS.SILENT (\\Deleted)")
    _, lines = expect_ok(Q, "EXPUNGE")
    assert lines == [b"* VANISHED 5"], lines
    status_, lines = raw(Q, "ENABLE CONDSTORE")
    assert status_.startswith(b"OK"), status_
    Q.logout()
    # SELECT (QRESYNC ...) without ENABLE QRESYNC is an error.
    M = login()
    status_, _ = raw(M, "SELECT INBOX (QRESYNC (%d %d))" % (uv, h1))
    assert status_.startswith(b"BAD"), status_
    M.logout()

with step("IDLE: delivery, flags and expunge by others are told at once"):
    I = login()
    _, lines = select(I, "INBOX")
    uidnext = int(code(lines, "UIDNEXT"))
    before = uids(I)
    n = len(before)
    assert n >= 2, before
    tag = I._new_tag()
    I.send(tag + b" IDLE\r\n")
    got, _ = read_until(I, lambda l: l.startswith(b"+"), 5)
    assert got[-1].startswith(b"+ "), got
    quiet = quiet_for(I, 0.3)
    assert quiet == [], ("IDLE sent something unasked", quiet)
    idle_msg = b"From: Carol <carol@remote.test>\r\nSubject: during idle\r\n\r\nhello while idling\r\n"
    t0 = time.monotonic()
    send(idle_msg)
    got, took = read_until(I, lambda l: l == b"* %d EXISTS" % (n + 1), 10)
    print("IDLE latency (SMTP reply to EXISTS) %.3fs, from the start of the SMTP session %.3fs" % (took, time.monotonic() - t0), flush=True)
    B = login()
    select(B, "INBOX")
    expect_ok(B, "STORE 1 +FLAGS.SILENT ($IdleSeen)")
    got, took = read_until(I, lambda l: l.startswith(b"* 1 FETCH "), 10)
    f = fetch_items([got[-1]])[1]
    assert "$IdleSeen" in flagset(f["FLAGS"]), got
    print("IDLE saw the flag change after %.3fs" % took, flush=True)
    expect_ok(B, "STORE 2 +FLAGS.SILENT (\\Deleted)")
    expect_ok(B, "UID EXPUNGE %d" % before[1])
    B.logout()
    got, took = read_until(I, lambda l: l == b"* 2 EXPUNGE", 10)
    print("IDLE saw the expunge after %.3fs" % took, flush=True)
    I.send(b"DONE\r\n")
    got, _ = read_until(I, lambda l: l.startswith(tag + b" "), 5)
    assert got[-1].startswith(tag + b" OK"), got
    _, lines = expect_ok(I, "FETCH 1:* (UID FLAGS BODY.PEEK[])")
    f = fetch_items(lines)
    assert [int(f[i]["UID"]) for i in sorted(f)] == [before[0]] + before[2:] + [uidnext], (lines, before, uidnext)
    assert f[n]["BODY[]"].endswith(idle_msg), f[n]
    assert "\\Recent" in flagset(f[n]["FLAGS"]), ("the idling session saw it first", f[n]["FLAGS"])
    # IDLE ended by anything but DONE: BAD (RFC 2177 3).
    tag = I._new_tag()
    I.send(tag + b" IDLE\r\n")
    read_until(I, lambda l: l.startswith(b"+"), 5)
    I.send(b"NOOP\r\n")
    got, _ = read_until(I, lambda l: l.startswith(tag + b" "), 5)
    assert got[-1].startswith(tag + b" BAD"), got
    I.logout()

with step("STARTTLS on the plain port, and IMAPS"):
    M = connect()
    typ, data = M.starttls(ssl_context=insecure_tls())
    assert typ == "OK", (typ, data)
    wrap(M)
    caps = set(c.upper() for c in M.capabilities)
    assert "STARTTLS" not in caps and "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps, caps
    status_, _ = raw(M, "STARTTLS")
    assert status_.startswith(b"BAD"), status_
    typ, _ = M.login(ALICE, "secret")
    assert typ == "OK"
    _, lines = select(M, "INBOX")
    n = exists(lines)
    _, lines = expect_ok(M, "FETCH %d (BODY.PEEK[])" % n)
    last = fetch_items(lines)[n]["BODY[]"]
    M.logout()
    P = login()
    _, lines = select(P, "INBOX")
    assert exists(lines) == n
    _, lines = expect_ok(P, "FETCH %d (BODY.PEEK[])" % n)
    assert fetch_items(lines)[n]["BODY[]"] == last
    P.logout()
    # IMAPS (RFC 8314): the certificate verifies for the cluster's name.
    ctx = ssl.create_default_context(cafile=store_path("tls", "self-signed.pem"))
    v = ctx.wrap_socket(socket.create_connection(addr("IMAPS"), timeout=20), server_hostname="mail.example.test")
    greeting = b""
    while b"\r\n" not in greeting:
        chunk = v.recv(4096)
        assert chunk, "closed before the greeting"
        greeting += chunk
    assert greeting.startswith(b"* OK [CAPABILITY "), greeting
    v.sendall(b"a LOGOUT\r\n")
    v.close()
    S = wrap(imaplib.IMAP4_SSL(*addr("IMAPS"), ssl_context=insecure_tls(), timeout=20))
    caps = set(c.upper() for c in S.capabilities)
    assert "STARTTLS" not in caps and "AUTH=PLAIN" in caps, caps
    assert S.welcome.startswith(b"* OK"), S.welcome
    S.login(ALICE, "secret")
    _, lines = select(S, "INBOX")
    assert exists(lines) == n
    _, lines = expect_ok(S, "FETCH %d (BODY.PEEK[])" % n)
    assert fetch_items(lines)[n]["BODY[]"] == last
    S.logout()

with step("POP3 and IMAP on one INBOX: POP3 DELE is an EXPUNGE, IMAP flags keep the UIDLs"):
    bob_msgs = [b"From: carol@remote.test\r\nSubject: for bob %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3)]
    for m in bob_msgs:
        send(m, rcpts=(BOB,))

    def pop():
        p = poplib.POP3(*addr("POP3"), timeout=20)
        p.user(BOB)
        p.pass_("hunter2")
        return p

    p = pop()
    uidl0 = p.uidl()[1]
    list0 = p.list()[1]
    retr0 = [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in (1, 2, 3)]
    p.quit()
    assert len(uidl0) == 3
    I = login(BOB)
    _, lines = select(I, "INBOX")
    assert exists(lines) == 3
    expect_ok(I, "STORE 1 +FLAGS (\\Flagged)")
    expect_ok(I, "STORE 2 +FLAGS (\\Seen $Work)")
    expect_ok(I, "STORE 3 +FLAGS (\\Answered)")
    _, lines = expect_ok(I, "FETCH 1:3 (BODY.PEEK[] RFC822.SIZE)")
    f = fetch_items(lines)
    for i in (1, 2, 3):
        assert f[i]["BODY[]"] == retr0[i - 1] and int(f[i]["RFC822.SIZE"]) == len(retr0[i - 1]), i
    p = pop()
    uidl1 = p.uidl()[1]
    list1 = p.list()[1]
    assert uidl1 == uidl0, ("IMAP flags changed the POP3 UIDLs", uidl0, uidl1)
    assert list1 == list0, (list0, list1)
    p.dele(1)
    p.quit()
    _, lines = expect_ok(I, "NOOP")
    assert untagged(lines, "EXPUNGE") == [b"1 EXPUNGE"], lines
    _, lines = expect_ok(I, "FETCH 1:* (UID FLAGS)")
    f = fetch_items(lines)
    assert {int(v["UID"]): flagset(v["FLAGS"]) - {"\\Recent"} for v in f.values()} == {2: {"\\Seen", "$Work"}, 3: {"\\Answered"}}, lines
    # POP3 deletes while the IMAP session idles.
    tag = I._new_tag()
    I.send(tag + b" IDLE\r\n")
    read_until(I, lambda l: l.startswith(b"+"), 5)
    p = pop()
    assert p.uidl()[1] == [b"1 " + uidl0[1].split()[1], b"2 " + uidl0[2].split()[1]], p.uidl()[1]
    p.dele(1)
    p.quit()
    got, took = read_until(I, lambda l: l == b"* 1 EXPUNGE", 10)
    print("IDLE saw the POP3 deletion after %.3fs" % took, flush=True)
    I.send(b"DONE\r\n")
    read_until(I, lambda l: l.startswith(tag + b" "), 5)
    assert uids(I) == [3]
    I.logout()

with step("RENAME INBOX moves its messages to the new folder"):
    M = login(BOB)
    expect_ok(M, 'RENAME INBOX "Old Mail"')
    _, lines = expect_ok(M, 'LIST "" "*"')
    assert {"INBOX", "Old Mail"} <= set(list_lines(lines)), lines
    assert mstatus(M, '"Old Mail"', "MESSAGES") == {"MESSAGES": 1}
    assert mstatus(M, "INBOX", "MESSAGES") == {"MESSAGES": 0}
    select(M, '"Old Mail"')
    _, lines = expect_ok(M, "FETCH 1 (BODY.PEEK[])")
    assert fetch_items(lines)[1]["BODY[]"].endswith(bob_msgs[2])
    M.logout()

with step("ID, NAMESPACE, CHECK, errors and LOGOUT"):
    M = connect()
    _, lines = expect_ok(M, 'ID ("name" "imap_session.py")')
    i = untagged(lines, "ID")
    assert len(i) == 1 and b'"name" "mailfort"' in i[0], lines
    status_, _ = raw(M, "SELECT INBOX")
    assert status_.startswith(b"BAD") or status_.startswith(b"NO"), ("SELECT before login", status_)
    M.login(ALICE, "secret")
    _, lines = expect_ok(M, "NAMESPACE")
    assert lines == [b'* NAMESPACE (("" "/")) NIL NIL'], lines
    status_, _ = raw(M, "FETCH 1 (UID)")
    assert status_.startswith(b"BAD"), ("FETCH with nothing selected", status_)
    status_, _ = raw(M, "FROBNICATE")
    assert status_.startswith(b"BAD"), status_
    select(M, "INBOX")
    expect_ok(M, "CHECK")
    tag = M._new_tag()
    M.send(tag + b" LOGOUT\r\n")
    got, _ = read_until(M, lambda l: l.startswith(tag + b" "), 5)
    assert got[0].startswith(b"* BYE") and got[-1].startswith(tag + b" OK"), got
    M.sock.settimeout(5)
    assert M.sock.recv(100) == b"", "the node must close after LOGOUT"
    M.shutdown()

finish()
