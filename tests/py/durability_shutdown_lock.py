"""A POP3 session that a node finishes during its shutdown grace period
keeps its maildrop lock until it ends: another node must not take the
maildrop meanwhile, and the session's QUIT still applies its deletions.

NODE1_PID is the node behind POP3/SMTP; POP3_2 is a second node."""
import os
import poplib
import signal
import socket
import time

from mailtest import addr, deliver, maildir_files, ok

ALICE = "alice@example.test"
NODE1_PID = int(os.environ["NODE1_PID"])
line = b"y" * 998 + b"\r\n"
big = deliver(b"Subject: big\r\n\r\n" + line * 8000)
small = deliver(b"Subject: small\r\n\r\nsmall\r\n")

# A client with a tiny receive buffer: node1 cannot finish the RETR until
# the client reads, so the session is busy when the node is told to stop.
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(addr("POP3"))
s.settimeout(20)
buf = b""


def line_():
    global buf
    while b"\r\n" not in buf:
        d = s.recv(65536)
        assert d, "closed; got %r" % buf[-200:]
        buf += d
    l, buf = buf.split(b"\r\n", 1)
    return l


assert line_().startswith(b"+OK")
s.sendall(b"USER %s\r\n" % ALICE.encode())
assert line_().startswith(b"+OK")
s.sendall(b"PASS secret\r\n")
assert line_().startswith(b"+OK maildrop has 2 messages")
# RETR the big one, then delete the small one and QUIT, all pipelined.
s.sendall(b"RETR 1\r\nDELE 2\r\nQUIT\r\n")
assert line_().startswith(b"+OK")

os.kill(NODE1_PID, signal.SIGTERM)
# Longer than a node takes to be declared dead once it stops heartbeating.
time.sleep(4)

p = poplib.POP3(*addr("POP3_2"), timeout=20)
p.user(ALICE)
try:
    p.pass_("secret")
    taken = True
except poplib.error_proto as e:
    assert e.args[0].startswith(b"-ERR [IN-USE]"), e.args[0]
    taken = False
p.quit()

# Read the rest: the RETR, the DELE and the QUIT.
s.settimeout(20)
rest = buf
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    rest += d
s.close()
assert not taken, "node2 took the maildrop while node1 was still finishing a session on it"
ok("the lock holds through the grace period")
assert rest.count(line) == 8000, "RETR incomplete"
tail = rest[rest.index(b"\r\n.\r\n") + 5:]
assert tail.startswith(b"+OK message 2 deleted\r\n"), tail[:200]
assert b"+OK bye (1 messages left)\r\n" in tail, tail[:200]
assert maildir_files("alice") == [big], maildir_files("alice")
ok("QUIT during the grace period applies deletions")
