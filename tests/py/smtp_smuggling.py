"""The SMTP smuggling family (CVE-2023-51764 and relatives): no end-of-data
other than <CRLF>.<CRLF> may end a message, so no second message can be
smuggled behind a sloppy line end; bare CR/LF and NUL are refused."""
import os

from mailtest import Raw, ok

STORE = os.environ["STORE"]
ALICE_NEW = os.path.join(STORE, "mail", "example.test", "alice", "new")
BOB_NEW = os.path.join(STORE, "mail", "example.test", "bob", "new")


def count(d):
    return len(os.listdir(d)) if os.path.isdir(d) else 0


SMUGGLED = (b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")

for name, end in [("LF.LF", b"\n.\n"), ("CR.CR", b"\r.\r"), ("LF.CRLF", b"\n.\r\n"),
                  ("CR.CRLF", b"\r.\r\n"), ("CRLF.LF", b"\r\n.\n"), ("CRLF.CR", b"\r\n.\r")]:
    a0, b0 = count(ALICE_NEW), count(BOB_NEW)
    r = Raw("SMTP")
    assert r.reply()[0] == 220
    assert r.cmd("EHLO attacker.example")[0] == 250
    assert r.cmd("MAIL FROM:<attacker@remote.test>")[0] == 250
    assert r.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: first\r\n\r\nhello" + end + SMUGGLED)
    # The smuggled commands are data; the real end is the final CRLF.CRLF
    # of the smuggled part, which ends the *one* message. It is refused.
    code, text = r.reply()
    assert code == 554 and text[0].startswith("5.6.0"), (name, code, text)
    # The session is still in step: a clean message goes through.
    assert r.cmd("RSET")[0] == 250
    assert r.cmd("QUIT")[0] == 221
    r.close()
    assert count(BOB_NEW) == b0, (name, "a smuggled message reached bob")
    assert count(ALICE_NEW) == a0, (name, "a message with bare line ends was stored")
    ok("smuggling pattern " + name)

# NUL in the data is refused too.
r = Raw("SMTP")
r.reply()
r.cmd("EHLO x.example")
r.cmd("MAIL FROM:<a@remote.test>")
r.cmd("RCPT TO:<alice@example.test>")
assert r.cmd("DATA")[0] == 354
a0 = count(ALICE_NEW)
r.send(b"Subject: nul\r\n\r\na\x00b\r\n.\r\n")
code, text = r.reply()
assert code == 554, (code, text)
assert count(ALICE_NEW) == a0
ok("NUL in data refused")

# Dot-stuffing is undone exactly: a line of "." alone inside the message
# is sent as "..", and lines starting with dots keep all but one.
r.cmd("MAIL FROM:<a@remote.test>")
r.cmd("RCPT TO:<alice@example.test>")
assert r.cmd("DATA")[0] == 354
before = set(os.listdir(ALICE_NEW))
r.send(b"Subject: dots\r\n\r\n..\r\n...\r\n.x\r\n..y\r\nend\r\n.\r\n")
assert r.reply()[0] == 250
new = sorted(set(os.listdir(ALICE_NEW)) - before)
assert len(new) == 1
data = open(os.path.join(ALICE_NEW, new[0]), "rb").read()
assert data.endswith(b"Subject: dots\r\n\r\n.\r\n..\r\nx\r\n.y\r\nend\r\n"), data
ok("dot-unstuffing exact")
r.cmd("QUIT")
