"""Sessions that fail part way (the connection drops in DATA, or a message
is refused) store nothing, leave the mail already there untouched, and
leave nothing in the node's spool."""
import os
import time

from mailtest import Raw, deliver, ok, wait_for

STORE = os.environ["STORE"]
SPOOL = os.path.join(STORE, "spool", os.environ.get("NODE", "node1"))


def everything():
    out = {}
    for root, _, names in os.walk(os.path.join(STORE, "mail")):
        for n in names:
            out[os.path.join(root, n)] = open(os.path.join(root, n), "rb").read()
    return out


def spool():
    return os.listdir(SPOOL) if os.path.isdir(SPOOL) else []


deliver(b"Subject: kept\r\n\r\nalready here\r\n")
deliver(b"Subject: kept too\r\n\r\n.also here\r\n", rcpts=("alice@example.test", "bob@example.test"))
before = everything()
assert len(before) == 3, before.keys()
assert spool() == []


def start_data():
    r = Raw("SMTP")
    r.line()
    assert r.cmd("EHLO client.example")[0] == 250
    assert r.cmd("MAIL FROM:<carol@remote.test>")[0] == 250
    assert r.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert r.cmd("RCPT TO:<bob@example.test>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    return r


# Dropped after a large part of the data (more than the node keeps in
# memory, so the spool file has content).
r = start_data()
r.send(b"Subject: cut off\r\n\r\n")
chunk = b"".join(b"line %06d of a message that will never end\r\n" % i for i in range(8000))
r.send(chunk)
wait_for(lambda: any(os.path.getsize(os.path.join(SPOOL, n)) > 0 for n in spool()), 10, "data in the spool")
r.sock.close()
wait_for(lambda: spool() == [], 10, "the spool to be cleaned after the drop")
assert everything() == before
ok("dropped mid-DATA: nothing stored")

# Dropped in the middle of a line, and right after 354.
r = start_data()
r.send(b"Subject: half\r\n\r\nhalf a li")
time.sleep(0.2)
r.sock.close()
r = start_data()
r.sock.close()
# Dropped after the final line but before the end-of-data mark's CRLF.
r = start_data()
r.send(b"Subject: almost\r\n\r\nbody\r\n.")
time.sleep(0.2)
r.sock.close()
wait_for(lambda: spool() == [], 10, "the spool to be cleaned")
time.sleep(0.3)
assert spool() == []
assert everything() == before
ok("dropped at other points: nothing stored")

# A refused message (bare LF, RFC 5321 2.3.8) in an otherwise good session.
r = start_data()
r.send(b"Subject: bare\r\n\r\nline\nline\r\n.\r\n")
code, text = r.reply()
assert code == 554, (code, text)
assert r.cmd("NOOP")[0] == 250
r.cmd("QUIT")
r.close()
assert spool() == []
assert everything() == before
ok("refused message: nothing stored")
