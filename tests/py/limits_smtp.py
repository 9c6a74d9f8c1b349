"""SMTP limits on a node with max_message_size = 10000 and
max_recipients = 2: SIZE (RFC 1870) declared and undeclared, the exact
boundary, and too many recipients (RFC 5321 4.5.3.1.10)."""
import os
import smtplib

from mailtest import Raw, addr, maildir_files, ok

STORE = os.environ["STORE"]
MAX = 10000


def message(size, dots=False):
    """A message of exactly `size` octets after un-stuffing, ending in CRLF."""
    head = b"Subject: size test\r\n\r\n"
    line = (b".dotted line " if dots else b"plain line ") + b"z" * 50 + b"\r\n"
    body = head
    while len(body) + len(line) <= size - 3:
        body += line
    body += b"y" * (size - len(body) - 2) + b"\r\n"
    assert len(body) == size
    return body


def stuffed(m):
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in m.split(b"\r\n")[:-1])


def everything():
    out = {}
    for root, _, names in os.walk(os.path.join(STORE, "mail")):
        for n in names:
            out[os.path.join(root, n)] = open(os.path.join(root, n), "rb").read()
    return out


s = smtplib.SMTP(*addr("SMTP"), timeout=20)
s.ehlo("client.example")
assert s.esmtp_features["size"] == str(MAX), s.esmtp_features
code, text = s.mail("carol@remote.test", ["SIZE=%d" % (MAX + 1)])
assert code == 552 and text.startswith(b"5.3.4"), (code, text)
code, text = s.mail("carol@remote.test", ["SIZE=%d" % MAX])
assert code == 250, (code, text)
s.rset()
s.quit()
ok("declared SIZE over the limit -> 552 at MAIL")

before = everything()
r = Raw("SMTP")
r.line()
r.cmd("EHLO client.example")
for size in (MAX + 1, 5 * MAX, 2 * 1024 * 1024):
    assert r.cmd("MAIL FROM:<carol@remote.test>")[0] == 250
    assert r.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(stuffed(message(size)) + b".\r\n")
    code, text = r.reply()
    assert code == 552 and text[0].startswith("5.3.4"), (size, code, text)
assert everything() == before, "a refused message was stored"
assert os.listdir(os.path.join(STORE, "spool", "node1")) == []
ok("undeclared size over the limit -> 552 after DATA, nothing stored")

# Exactly the limit is accepted, counted after un-stuffing.
m = message(MAX, dots=True)
assert len(stuffed(m)) > MAX
assert r.cmd("MAIL FROM:<carol@remote.test> SIZE=%d" % MAX)[0] == 250
assert r.cmd("RCPT TO:<alice@example.test>")[0] == 250
assert r.cmd("DATA")[0] == 354
r.send(stuffed(m) + b".\r\n")
code, text = r.reply()
assert code == 250, (code, text)
files = maildir_files("alice")
assert len(files) == 1 and open(files[0], "rb").read().endswith(m)
ok("exactly max_message_size accepted")

# Recipients over max_recipients: 452 4.5.3, the others still get it.
alice_before = len(maildir_files("alice"))
assert r.cmd("MAIL FROM:<carol@remote.test>")[0] == 250
for u in ("alice", "bob"):
    assert r.cmd("RCPT TO:<%s@example.test>" % u)[0] == 250
# The limit counts before anything else is looked at.
for u in ("carol", "bob", "nobody"):
    code, text = r.cmd("RCPT TO:<%s@example.test>" % u)
    assert code == 452 and text[0].startswith("4.5.3"), (u, code, text)
assert r.cmd("DATA")[0] == 354
code, text = r.cmd("Subject: many\r\n\r\nto two\r\n.")
assert code == 250, (code, text)
for u in ("alice", "bob"):
    assert [f for f in maildir_files(u) if open(f, "rb").read().endswith(b"to two\r\n")], u
assert len(maildir_files("alice")) == alice_before + 1
assert len(maildir_files("bob")) == 1
# The limit is per transaction.
assert r.cmd("MAIL FROM:<carol@remote.test>")[0] == 250
assert r.cmd("RCPT TO:<bob@example.test>")[0] == 250
assert r.cmd("RCPT TO:<alice@example.test>")[0] == 250
r.cmd("RSET")
r.cmd("QUIT")
ok("too many recipients -> 452 4.5.3")
