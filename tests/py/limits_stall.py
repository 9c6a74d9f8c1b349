"""Clients that stop reading: a POP3 client that sends RETR for a large
message and never reads it, and an SMTP client that pipelines commands and
never reads the replies. Once the node cannot write, the session must still
end after the idle timeout; otherwise such a client holds a connection slot
(and, in POP3, the maildrop lock) for ever.

The node runs with smtp/pop3 idle timeouts of 2 s and
max_connections_per_ip = 1."""
import os
import socket
import time

from mailtest import addr, deliver, ok

STORE = os.environ["STORE"]
LOCK = os.path.join(STORE, "cluster", "locks", "pop3.alice@example.test")
IDLE = 2
WAIT = 12  # idle timeout plus a generous margin


def slow_reader(name, source=None):
    """A connection with a tiny receive buffer (so the node's writes block
    soon) whose greeting has been read."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if source:
        s.bind((source, 0))
    s.connect(addr(name))
    s.settimeout(10)
    g = b""
    while b"\r\n" not in g:
        chunk = s.recv(1)
        assert chunk, "closed before the greeting"
        g += chunk
    return s, g


# An 8 MB message: far more than the socket buffers on both sides hold.
line = b"x" * 998 + b"\r\n"
deliver(b"Subject: big\r\n\r\n" + line * 8000)

# POP3: log in, RETR, never read. (From its own address: the slot of the
# delivery's connection is given back a moment after it closes.)
pop, g = slow_reader("POP3", source="127.0.0.4")
assert g.startswith(b"+OK"), g
pop.sendall(b"USER alice@example.test\r\n")
time.sleep(0.2)
pop.sendall(b"PASS secret\r\n")
got = b""
while got.count(b"\r\n") < 2:
    got += pop.recv(1)
assert b"+OK maildrop has 1 messages" in got, got
assert os.path.exists(LOCK)
pop.sendall(b"RETR 1\r\n")

# SMTP: pipeline HELOs without reading a reply until the node stops reading
# (HELO, not NOOP: a long run of NOOPs ends the session by itself).
smtp, g = slow_reader("SMTP", source="127.0.0.3")
assert g.startswith(b"220 "), g
smtp.setblocking(False)
blob = b"HELO client.example\r\n" * 10000
t0 = time.monotonic()
sent = 0
blocked_since = None
while time.monotonic() - t0 < 10:
    try:
        sent += smtp.send(blob)
        blocked_since = None
    except BlockingIOError:
        blocked_since = blocked_since or time.monotonic()
        if time.monotonic() - blocked_since > 0.5:
            break
        time.sleep(0.05)
assert blocked_since, "the node kept reading; nothing was stalled"
stalled = time.monotonic()


def smtp_slot_free():
    c = socket.create_connection(addr("SMTP"), timeout=5, source_address=("127.0.0.3", 0))
    l = c.recv(100)
    c.close()
    return l.startswith(b"220 ")


# Both sessions are now blocked writing. Give the idle timeout its time.
pop_done = smtp_done = None
while time.monotonic() - stalled < WAIT and (pop_done is None or smtp_done is None):
    time.sleep(0.25)
    if pop_done is None and not os.path.exists(LOCK):
        pop_done = time.monotonic() - stalled
    if smtp_done is None and smtp_slot_free():
        smtp_done = time.monotonic() - stalled
print("POP3 session ended after: %s; SMTP slot freed after: %s" % (pop_done, smtp_done), flush=True)
pop.close()
smtp.close()
assert pop_done is not None, (
    "a POP3 client that stopped reading in RETR still holds the maildrop lock %d s later "
    "(pop3_idle_timeout_secs = %d)" % (WAIT, IDLE))
ok("POP3 client that stops reading is dropped")
assert smtp_done is not None, (
    "an SMTP client that stopped reading replies still holds its connection slot %d s later "
    "(smtp_idle_timeout_secs = %d)" % (WAIT, IDLE))
ok("SMTP client that stops reading is dropped")
