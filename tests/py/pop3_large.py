"""Large messages over POP3: streamed from the file in pieces, dot-stuffed
exactly even where a piece ends on a line's leading dot or between CR and
LF, and TOP cut across a piece boundary."""
import poplib

from mailtest import Raw, addr, deliver, ok, pop3_stuff

CHUNK = 64 * 1024  # the node's read size for streamed messages
LINE = b".a\r\n"  # every line starts with a dot that must be stuffed
LINES = 500000  # 2 MB: well past any whole-file fast path


def read_multi(r):
    status = r.line()
    assert status.startswith(b"+OK"), status
    while True:
        i = r.buf.find(b"\r\n.\r\n")
        if i >= 0:
            body, r.buf = r.buf[: i + 5], r.buf[i + 5:]
            return status, body
        chunk = r.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("closed inside a multi-line response")
        r.buf += chunk


# Four messages whose bodies start at each offset modulo the line length,
# so that the piece boundaries fall on every position within a line.
contents = []
residues = set()
for pad in range(4):
    body = LINE * LINES
    path = deliver(b"Subject: large " + b"X" * pad + b"\r\n\r\n" + body)
    data = open(path, "rb").read()
    assert data.endswith(body)
    start = len(data) - len(body)
    residues.add((CHUNK - start) % len(LINE))
    contents.append(data)
assert residues == {0, 1, 2, 3}, residues
ok("delivered 4 large messages")

r = Raw("POP3")
r.line()
r.send(b"USER alice@example.test\r\nPASS secret\r\n")
assert r.line().startswith(b"+OK")
assert r.line().startswith(b"+OK maildrop has 4 messages")
for i, c in enumerate(contents, 1):
    r.send(b"LIST %d\r\n" % i)
    assert r.line() == b"+OK %d %d" % (i, len(c))
    r.send(b"RETR %d\r\n" % i)
    status, wire = read_multi(r)
    assert status == b"+OK %d octets" % len(c), status
    assert len(wire) == len(pop3_stuff(c)), (i, len(wire), len(pop3_stuff(c)))
    assert wire == pop3_stuff(c), "RETR %d: wire bytes differ from the stuffed file" % i
    # TOP with a cut past the first piece boundary.
    n = (CHUNK // len(LINE)) + 1000
    r.send(b"TOP %d %d\r\n" % (i, n))
    status, wire = read_multi(r)
    head_end = c.index(b"\r\n\r\n") + 4
    assert wire == pop3_stuff(c[:head_end] + LINE * n), "TOP %d %d differs" % (i, n)
r.send(b"QUIT\r\n")
assert r.line().startswith(b"+OK")
r.close()
ok("large RETR and TOP exact on the wire")

p = poplib.POP3(*addr("POP3"), timeout=60)
p.user("alice@example.test")
p.pass_("secret")
resp, lines, _ = p.retr(2)
assert b"\r\n".join(lines) + b"\r\n" == contents[1]
p.quit()
ok("large RETR with poplib")
