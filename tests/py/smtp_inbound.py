"""Port 25 behaviour with Python's smtplib and a raw client (RFC 5321)."""
import hashlib
import os
import smtplib

from mailtest import Raw, addr, ok

STORE = os.environ["STORE"]
ALICE = os.path.join(STORE, "mail", "example.test", "alice")


def alice_files():
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(ALICE, sub)
        out += [os.path.join(d, n) for n in os.listdir(d)]
    return sorted(out)


def body_of(path):
    data = open(path, "rb").read()
    # The node adds Return-Path and Received (RFC 5321 4.4) in front.
    assert data.startswith(b"Return-Path: <"), data[:80]
    assert b"\r\nReceived: from " in data[:600], data[:600]
    return data


# EHLO lists the extensions.
s = smtplib.SMTP(*addr("SMTP"))
code, msg = s.ehlo("client.example")
assert code == 250, (code, msg)
for ext in ("pipelining", "8bitmime", "size", "enhancedstatuscodes", "starttls", "smtputf8"):
    assert s.has_extn(ext), (ext, msg)
assert not s.has_extn("auth"), "AUTH must not be offered on port 25"
assert int(s.esmtp_features["size"]) > 10 * 1024 * 1024
ok("ehlo extensions")

# Delivery to a local user, with the trace headers and the exact body.
before = set(alice_files())
payload = b"Subject: hello\r\nFrom: carol@remote.test\r\n\r\nfirst line\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"
s.sendmail("carol@remote.test", ["alice@example.test"], payload)
new = sorted(set(alice_files()) - before)
assert len(new) == 1, new
data = body_of(new[0])
assert data.endswith(payload), data
assert b"Return-Path: <carol@remote.test>\r\n" in data
assert b"for <alice@example.test>" in data
ok("delivery with exact body and trace headers")

# Case-insensitive domain and local part.
before = set(alice_files())
s.sendmail("carol@remote.test", ["Alice@EXAMPLE.Test"], b"Subject: case\r\n\r\nx\r\n")
assert len(set(alice_files()) - before) == 1
ok("case-insensitive recipient")

# One copy on disk for several recipients (hard links).
bob_new = os.path.join(STORE, "mail", "example.test", "bob", "new")
before_a = set(alice_files())
before_b = set(os.listdir(bob_new)) if os.path.isdir(bob_new) else set()
s.sendmail("carol@remote.test", ["alice@example.test", "bob@example.test"], b"Subject: both\r\n\r\nboth\r\n")
na = sorted(set(alice_files()) - before_a)
nb = sorted(set(os.listdir(bob_new)) - before_b)
assert len(na) == 1 and len(nb) == 1
assert os.stat(na[0]).st_ino == os.stat(os.path.join(bob_new, nb[0])).st_ino
assert os.stat(na[0]).st_nlink == 2
ok("one copy, hard links")

# Unknown local user: 550 5.1.1 at RCPT.
code, msg = s.mail("carol@remote.test")
assert code == 250
code, msg = s.rcpt("nobody@example.test")
assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)
s.rset()
ok("unknown user 550 5.1.1")

# Relay denied without authentication.
try:
    s.sendmail("carol@remote.test", ["victim@elsewhere.test"], b"Subject: relay\r\n\r\nx\r\n")
    raise AssertionError("relayed!")
except smtplib.SMTPRecipientsRefused as e:
    code, msg = e.recipients["victim@elsewhere.test"]
    assert code == 554 and msg.startswith(b"5.7.1"), (code, msg)
ok("relay denied 554 5.7.1")

# VRFY 252, HELP 214, NOOP, RSET, unknown 500, syntax 501, sequence 503.
assert s.verify("alice@example.test")[0] == 252
assert s.docmd("HELP")[0] == 214
assert s.noop()[0] == 250
assert s.rset()[0] == 250
assert s.docmd("FROBNICATE")[0] == 500
assert s.docmd("MAIL", "TO:<x@y>")[0] == 501
code, _ = s.docmd("MAIL FROM:no-brackets@x")
assert code == 501, code
assert s.docmd("RCPT TO:<alice@example.test>")[0] == 503
assert s.docmd("DATA")[0] == 503
s.mail("carol@remote.test")
assert s.docmd("MAIL FROM:<x@y.test>")[0] == 503
assert s.docmd("DATA")[0] == 554  # no valid recipients (RFC 5321 3.3)
s.rset()
assert s.docmd("MAIL FROM:<a@b.test> FOO=BAR")[0] == 555
assert s.docmd("MAIL FROM:<a@b.test> BODY=BINARYMIME")[0] == 501
ok("reply codes 252 214 250 500 501 503 554 555")

# SIZE: declared too big -> 552 at MAIL (RFC 1870).
limit = int(s.esmtp_features["size"])
code, msg = s.docmd("MAIL FROM:<a@b.test> SIZE=%d" % (limit + 1))
assert code == 552 and msg.startswith(b"5.3.4"), (code, msg)
ok("SIZE declared over the limit 552")

# SMTPUTF8: a UTF-8 sender needs the parameter.
s.command_encoding = "utf-8"
code, msg = s.docmd("MAIL FROM:<jörg@bücher.test>")
assert code == 553, (code, msg)
code, _ = s.docmd("MAIL FROM:<jörg@bücher.test> SMTPUTF8")
assert code == 250
code, _ = s.docmd("RCPT TO:<alice@example.test>")
assert code == 250
code, _ = s.docmd("DATA")
assert code == 354
s.send("Subject: ümlaut\r\n\r\nGrüße\r\n.\r\n".encode())
code, _ = s.getreply()
assert code == 250, code
ok("SMTPUTF8 and 8-bit content")
s.quit()

# A 10 MiB message arrives byte for byte.
big = b"Subject: big\r\n\r\n" + b"".join(b"%08d ........................................................................\r\n" % i for i in range(10 * 1024 * 1024 // 82))
s = smtplib.SMTP(*addr("SMTP"))
before = set(alice_files())
s.sendmail("carol@remote.test", ["alice@example.test"], big)
s.quit()
new = sorted(set(alice_files()) - before)
assert len(new) == 1
data = open(new[0], "rb").read()
assert hashlib.sha256(data[-len(big):]).hexdigest() == hashlib.sha256(big).hexdigest()
assert len(big) > 10 * 1000 * 1000
ok("10 MiB message intact")

# Pipelining (RFC 2920): the whole transaction in one write.
r = Raw("SMTP")
assert r.reply()[0] == 220
r.send(b"EHLO pipe.example\r\nMAIL FROM:<p@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
codes = [r.reply()[0] for _ in range(6)]
assert codes == [250, 250, 250, 550, 250, 354], codes
r.send(b"Subject: piped\r\n\r\npiped\r\n.\r\nQUIT\r\n")
assert r.reply()[0] == 250
assert r.reply()[0] == 221
r.close()
ok("pipelining")

# HELO (not EHLO) works without extensions.
r = Raw("SMTP")
r.reply()
code, lines = r.cmd("HELO old.example")
assert code == 250 and len(lines) == 1
assert r.cmd("MAIL FROM:<o@remote.test> SIZE=10")[0] == 555
assert r.cmd("MAIL FROM:<o@remote.test>")[0] == 250
assert r.cmd("QUIT")[0] == 221
ok("HELO")

# Nothing before HELO.
r = Raw("SMTP")
r.reply()
assert r.cmd("MAIL FROM:<o@remote.test>")[0] == 503
r.close()
ok("MAIL before HELO 503")
