"""A POP3 session (RFC 1939, RFC 2449, RFC 5034) on a node that allows
plaintext logins: exact octet counts against the Maildir files, UIDs,
TOP, dot-stuffing on the wire, the deletion rules, the maildrop lock and
failed logins. Mail is delivered over SMTP first so its content is known."""
import base64
import os
import poplib
import time

from mailtest import Raw, addr, deliver, maildir_files, ok, pop3_stuff

ALICE = "alice@example.test"
FAIL_DELAY = 0.1  # auth_fail_delay_ms of the test configuration


def pop():
    return poplib.POP3(*addr("POP3"), timeout=20)


def login(user=ALICE, pw="secret"):
    p = pop()
    p.user(user)
    p.pass_(pw)
    return p


def login_when_free(user=ALICE, pw="secret", timeout=10):
    """Logs in, waiting while an ended session still holds the lock."""
    end = time.time() + timeout
    while True:
        p = pop()
        try:
            p.user(user)
            p.pass_(pw)
            return p
        except poplib.error_proto as e:
            p.close()
            if not e.args[0].startswith(b"-ERR [IN-USE]") or time.time() > end:
                raise
            time.sleep(0.1)


def refused(fn, *args):
    try:
        r = fn(*args)
    except poplib.error_proto as e:
        return e.args[0]
    raise AssertionError("expected -ERR, got %r" % (r,))


def read_multi(r):
    """Status line and the exact bytes of a multi-line response, with its
    terminating line."""
    status = r.line()
    assert status.startswith(b"+OK"), status
    while True:
        if r.buf.startswith(b".\r\n"):
            r.buf = r.buf[3:]
            return status, b".\r\n"
        i = r.buf.find(b"\r\n.\r\n")
        if i >= 0:
            body, r.buf = r.buf[: i + 5], r.buf[i + 5:]
            return status, body
        chunk = r.sock.recv(65536)
        if not chunk:
            raise EOFError("closed inside a multi-line response")
        r.buf += chunk


def raw_login(user=ALICE, pw="secret"):
    r = Raw("POP3")
    assert r.line().startswith(b"+OK"), "greeting"
    r.send(("USER %s\r\n" % user).encode())
    assert r.line().startswith(b"+OK")
    r.send(("PASS %s\r\n" % pw).encode())
    l = r.line()
    assert l.startswith(b"+OK maildrop has "), l
    return r


def head(content):
    return content[: content.index(b"\r\n\r\n") + 4]


def top_of(content, n):
    h = head(content)
    body = content[len(h):].split(b"\r\n")[:-1]
    return h + b"".join(l + b"\r\n" for l in body[:n])


# --- Messages with known content, delivered over SMTP. --------------------
m1 = b"Subject: one\r\nFrom: carol@remote.test\r\n\r\nhello alice\r\n"
m2 = (b"Subject: dots\r\nFrom: carol@remote.test\r\n\r\n.leading dot\r\n..two dots\r\n"
      b".\r\nmiddle\r\n. space\r\nlast line\r\n")
m3 = b"Subject: three\r\n\r\n" + b"".join(b"body line %d caf\xc3\xa9\r\n" % i for i in range(1, 11))
# Larger than the node's read chunk, with stuffed lines throughout.
m4 = b"Subject: big\r\n\r\n" + b"".join(
    (b"." if i % 7 == 0 else b"") + (b"%05d " % i) + b"x" * 64 + b"\r\n" for i in range(3000))
sent = [m1, m2, m3, m4]
files = [deliver(m) for m in sent]
contents = [open(f, "rb").read() for f in files]
for c, m in zip(contents, sent):
    # The node puts Return-Path and Received in front (RFC 5321 4.4).
    assert c.startswith(b"Return-Path: <carol@remote.test>\r\n") and b"\r\nReceived: from " in c[:2000], c[:100]
    assert c.endswith(m)
sizes = [os.path.getsize(f) for f in files]
uids = [os.path.basename(f) for f in files]
total = sum(sizes)
ok("delivered 4 messages over SMTP")

# --- CAPA before login: plaintext is allowed here, TLS is not active. -----
p = pop()
assert p.getwelcome().startswith(b"+OK"), p.getwelcome()
caps = p.capa()
for c in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "STLS"):
    assert c in caps, (c, caps)
assert caps["SASL"] == ["PLAIN"], caps
assert "APOP" not in p.getwelcome().decode() and "<" not in p.getwelcome().decode()
p.quit()
ok("CAPA lists USER, SASL PLAIN and STLS")

# --- USER/PASS with exact counts. -----------------------------------------
p = pop()
p.user(ALICE)
resp = p.pass_("secret")
assert resp == b"+OK maildrop has 4 messages (%d octets)" % total, (resp, total)
assert p.stat() == (4, total), (p.stat(), total)
resp, listing, _ = p.list()
assert listing == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)], (listing, sizes)
for i, s in enumerate(sizes):
    assert p.list(i + 1) == b"+OK %d %d" % (i + 1, s)
resp, ul, _ = p.uidl()
assert ul == [b"%d %s" % (i + 1, u.encode()) for i, u in enumerate(uids)], (ul, uids)
assert p.uidl(2) == b"+OK 2 " + uids[1].encode()
for i, c in enumerate(contents):
    resp, lines, octets = p.retr(i + 1)
    assert resp == b"+OK %d octets" % sizes[i], resp
    got = b"\r\n".join(lines) + b"\r\n"
    assert got == c, "RETR %d differs from the file" % (i + 1)
    assert len(got) == sizes[i]
# TOP n 0: the header and the blank line; TOP n 2: two body lines more.
for i, c in enumerate(contents):
    for n in (0, 2):
        resp, lines, _ = p.top(i + 1, n)
        got = b"\r\n".join(lines) + b"\r\n"
        assert got == top_of(c, n), ("TOP", i + 1, n, got, top_of(c, n))
resp, lines, _ = p.top(3, 10000)
assert b"\r\n".join(lines) + b"\r\n" == contents[2]
assert p.noop() == b"+OK"
caps = p.capa()
assert "USER" not in caps and "SASL" not in caps and "STLS" not in caps, caps
assert refused(p.retr, 5).startswith(b"-ERR")
assert refused(p.retr, 0).startswith(b"-ERR")
assert refused(p.list, 9).startswith(b"-ERR")
assert refused(p.user, ALICE).startswith(b"-ERR")
assert p.quit() == b"+OK bye (4 messages left)"
ok("STAT LIST UIDL RETR TOP NOOP with exact octet counts")

# --- The same bytes on the wire, dot-stuffed (RFC 1939 3). ----------------
r = raw_login()
r.send(b"LIST\r\n")
status, body = read_multi(r)
assert body == b"".join(b"%d %d\r\n" % (i + 1, s) for i, s in enumerate(sizes)) + b".\r\n", body
for n in (2, 4):
    r.send(b"RETR %d\r\n" % n)
    status, body = read_multi(r)
    assert status == b"+OK %d octets" % sizes[n - 1], status
    assert body == pop3_stuff(contents[n - 1]), "RETR %d: wire bytes are not the stuffed file" % n
assert b"\r\n..leading dot\r\n...two dots\r\n..\r\nmiddle\r\n.. space\r\n" in pop3_stuff(contents[1])
r.send(b"TOP 2 0\r\n")
status, body = read_multi(r)
assert body == pop3_stuff(head(contents[1])), body
r.send(b"TOP 2 2\r\n")
status, body = read_multi(r)
assert body == pop3_stuff(top_of(contents[1], 2)), body
assert body.endswith(b"\r\n..leading dot\r\n...two dots\r\n.\r\n"), body
# Pipelined commands (RFC 2449 6.6) are answered in order.
r.send(b"NOOP\r\nSTAT\r\nLIST 1\r\n")
assert r.line() == b"+OK"
assert r.line() == b"+OK 4 %d" % total
assert r.line() == b"+OK 1 %d" % sizes[0]
r.send(b"RETR x\r\n")
assert r.line().startswith(b"-ERR")
r.send(b"QUIT\r\n")
assert r.line().startswith(b"+OK")
assert r.closed(), "the node must close after QUIT"
ok("dot-stuffing exact on the wire")

# --- UIDs are stable across sessions. --------------------------------------
p = login()
assert p.uidl()[1] == ul
p.quit()
ok("UIDs stable across sessions")

# --- AUTH PLAIN (RFC 5034), with and without an initial response. ---------
def b64(s):
    return base64.b64encode(s.encode()).decode()


r = Raw("POP3")
r.line()
r.send(b"AUTH\r\n")
assert r.line() == b"+OK"
assert r.line() == b"PLAIN"
assert r.line() == b"."
r.send(("AUTH PLAIN %s\r\n" % b64("\0%s\0secret" % ALICE)).encode())
assert r.line() == b"+OK maildrop has 4 messages (%d octets)" % total
r.send(b"STAT\r\n")
assert r.line() == b"+OK 4 %d" % total
r.send(b"QUIT\r\n")
assert r.line().startswith(b"+OK")
r.close()

r = Raw("POP3")
r.line()
# Cancelled exchange.
r.send(b"AUTH PLAIN\r\n")
assert r.line().startswith(b"+"), "continuation expected"
r.send(b"*\r\n")
assert r.line().startswith(b"-ERR")
r.send(b"AUTH PLAIN\r\n")
assert r.line() in (b"+ ", b"+"), "continuation expected"
r.send(("%s\r\n" % b64("%s\0%s\0secret" % (ALICE, ALICE))).encode())
assert r.line() == b"+OK maildrop has 4 messages (%d octets)" % total
r.send(b"QUIT\r\n")
assert r.line().startswith(b"+OK")
r.close()
ok("AUTH PLAIN with and without initial response")

# An authorization identity other than the user is refused (RFC 4616 2).
r = Raw("POP3")
r.line()
r.send(("AUTH PLAIN %s\r\n" % b64("bob@example.test\0%s\0secret" % ALICE)).encode())
assert r.line().startswith(b"-ERR [AUTH]")
r.send(b"AUTH CRAM-MD5\r\n")
assert r.line().startswith(b"-ERR")
# The bare name means the store's only domain.
r.send(b"USER alice\r\nPASS secret\r\n")
assert r.line().startswith(b"+OK")
assert r.line() == b"+OK maildrop has 4 messages (%d octets)" % total
r.send(b"QUIT\r\n")
r.line()
r.close()
ok("foreign authzid refused, bare name accepted")

# --- Wrong passwords: [AUTH] (RFC 3206), a delay, closed after three. -----
r = Raw("POP3")
r.line()
texts = []
for i in range(3):
    r.send(b"USER " + ALICE.encode() + b"\r\n")
    assert r.line().startswith(b"+OK")
    t0 = time.monotonic()
    r.send(b"PASS wrong%d\r\n" % i)
    l = r.line()
    took = time.monotonic() - t0
    assert l.startswith(b"-ERR [AUTH]"), l
    texts.append(l)
    # The delay doubles with each failure from the same address.
    assert took >= FAIL_DELAY * (2 ** i) * 0.95, ("failure %d answered after %.3fs" % (i + 1, took))
assert r.closed(), "the session must be closed after max_auth_failures"
# An unknown user gets the very same answer.
r = Raw("POP3")
r.line()
r.send(b"USER nobody@example.test\r\nPASS secret\r\n")
assert r.line().startswith(b"+OK")
l = r.line()
assert l == texts[0], (l, texts[0])
r.send(b"QUIT\r\n")
r.close()
ok("wrong password -ERR [AUTH] after a delay")

# --- One session at a time per maildrop (RFC 1939 8, RFC 2449 8.1.1). -----
a = login()
b = pop()
b.user(ALICE)
e = refused(b.pass_, "secret")
assert e.startswith(b"-ERR [IN-USE]"), e
# bob's maildrop is a different lock.
c = login("bob@example.test", "hunter2")
assert c.stat() == (0, 0)
c.quit()
a.quit()
b.user(ALICE)
assert b.pass_("secret").startswith(b"+OK maildrop has 4")
b.quit()
ok("second session -ERR [IN-USE] until the first QUITs")

# --- DELE takes effect only at QUIT (RFC 1939 6). -------------------------
# DELE, then the connection drops: nothing is deleted.
p = login()
assert p.dele(1) == b"+OK message 1 deleted"
assert p.stat() == (3, total - sizes[0])
assert [l.split()[0] for l in p.list()[1]] == [b"2", b"3", b"4"]
assert [l.split()[0] for l in p.uidl()[1]] == [b"2", b"3", b"4"]
assert refused(p.retr, 1).startswith(b"-ERR")
assert refused(p.top, 1, 0).startswith(b"-ERR")
assert refused(p.dele, 1).startswith(b"-ERR")
assert refused(p.list, 1).startswith(b"-ERR")
p.close()  # no QUIT
p = login_when_free()
assert p.stat() == (4, total), p.stat()
assert all(os.path.exists(f) for f in files)
ok("DELE then a dropped connection deletes nothing")

# DELE, RSET, QUIT: nothing is deleted.
assert p.dele(1).startswith(b"+OK")
assert p.dele(2).startswith(b"+OK")
assert p.rset() == b"+OK maildrop has 4 messages"
assert p.stat() == (4, total)
assert p.quit() == b"+OK bye (4 messages left)"
assert all(os.path.exists(f) for f in files)
ok("DELE RSET QUIT deletes nothing")

# DELE, QUIT: gone, and the others keep their UIDs.
p = login_when_free()
p.dele(1)
p.dele(3)
assert p.quit() == b"+OK bye (2 messages left)"
assert not os.path.exists(files[0]) and not os.path.exists(files[2])
assert maildir_files("alice") == sorted([files[1], files[3]])
p = login_when_free()
assert p.stat() == (2, sizes[1] + sizes[3])
assert p.uidl()[1] == [b"1 " + uids[1].encode(), b"2 " + uids[3].encode()]
resp, lines, _ = p.retr(1)
assert b"\r\n".join(lines) + b"\r\n" == contents[1]
p.quit()
ok("DELE QUIT deletes, UIDs of the rest unchanged")
