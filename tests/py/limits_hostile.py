"""Hostile input on the SMTP and POP3 ports: endless lines, NUL bytes,
binary garbage. Each gets an error and/or a disconnect, and the node goes
on serving other clients."""
import poplib
import random
import socket

from mailtest import Raw, addr, deliver, ok

rng = random.Random(1939)


def flood(name, greeting):
    """Sends a megabyte without a line end; returns what came back before
    the node closed the connection."""
    r = Raw(name)
    assert r.line().startswith(greeting)
    blob = b"A" * (1024 * 1024)
    try:
        r.sock.sendall(blob)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the node hung up before taking it all: fine
    got = r.buf
    r.sock.settimeout(10)
    try:
        while True:
            d = r.sock.recv(65536)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError("%s: connection still open after a megabyte without a line end" % name)
    r.close()
    return got


def garbage_line():
    # Never a line end, always something no command contains.
    n = rng.randrange(20, 200)
    body = bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(n))
    return b"\xff" + body + b"\r\n"


def replies_until_close(r):
    lines = []
    try:
        while True:
            lines.append(r.line())
    except (EOFError, ConnectionResetError):
        return lines


# --- SMTP -------------------------------------------------------------------
got = flood("SMTP", b"220 ")
assert got == b"" or got.startswith(b"500 5.5.2 Line too long\r\n"), got[:200]
# A line just over the limit (max_line 4096): the reply is certain to arrive.
r = Raw("SMTP")
r.line()
r.send(b"NOOP " + b"x" * 5000 + b"\r\n")
assert r.line() == b"500 5.5.2 Line too long"
assert r.closed(), "the node must close after an over-long line"
ok("SMTP endless line")

r = Raw("SMTP")
r.line()
for cmd in (b"NOOP\0\r\n", b"\0\r\n", b"MAIL FROM:<a\0b@remote.test>\r\n", b"EHLO a\0b\r\n"):
    r.send(cmd)
    code, text = r.reply()
    assert code == 500, (cmd, code, text)
    assert text[0].startswith("5.5.2"), text
assert r.cmd("NOOP")[0] == 250, "the session goes on after a few errors"
r.cmd("QUIT")
r.close()
ok("SMTP NUL -> 500")

r = Raw("SMTP")
r.line()
r.send(b"".join(garbage_line() for _ in range(30)))
lines = replies_until_close(r)
codes = [l[:3] for l in lines]
# MAX_BAD_COMMANDS: twenty errors, then 421 and the end of the session.
assert codes == [b"500"] * 20 + [b"421"], lines
assert lines[-1].startswith(b"421 4.7.0"), lines[-1]
ok("SMTP garbage -> 500s then 421 and disconnect")

# --- POP3 -------------------------------------------------------------------
got = flood("POP3", b"+OK")
assert got == b"" or got.startswith(b"-ERR line too long\r\n"), got[:200]
r = Raw("POP3")
r.line()
r.send(b"USER " + b"x" * 300 + b"\r\n")
assert r.line() == b"-ERR line too long"
assert r.closed()
ok("POP3 endless line")

r = Raw("POP3")
r.line()
for cmd in (b"USER ali\0ce@example.test\r\n", b"NOOP\0\r\n", b"\0\r\n"):
    r.send(cmd)
    l = r.line()
    assert l.startswith(b"-ERR"), (cmd, l)
r.send(b"CAPA\r\n")
assert r.line().startswith(b"+OK")
while r.line() != b".":
    pass
r.send(b"QUIT\r\n")
assert r.line().startswith(b"+OK")
r.close()
ok("POP3 NUL -> -ERR")

r = Raw("POP3")
r.line()
r.send(b"".join(garbage_line() for _ in range(30)))
lines = replies_until_close(r)
assert len(lines) == 21 and all(l.startswith(b"-ERR") for l in lines), lines
assert lines[-1] == b"-ERR too many errors", lines[-1]
ok("POP3 garbage -> -ERR then disconnect")

# --- The node still serves everyone else. ----------------------------------
path = deliver(b"Subject: after the storm\r\n\r\nstill here\r\n")
assert open(path, "rb").read().endswith(b"still here\r\n")
p = poplib.POP3(*addr("POP3"), timeout=20)
p.user("alice@example.test")
p.pass_("secret")
assert p.stat()[0] == 1
p.quit()
ok("node still serves")
