"""COUNT messages over THREADS concurrent SMTP connections (smtplib), each
carrying a unique id and the sha256 of its payload; then every one is
checked in the Maildir files and again over POP3: all there, intact, once."""
import hashlib
import os
import poplib
import random
import re
import smtplib
import threading
import time

from mailtest import addr, maildir_files, ok

COUNT = int(os.environ.get("COUNT", "500"))
THREADS = int(os.environ.get("THREADS", "16"))
ALSO_BOB = 25  # every 25th message also goes to bob


def payload(i):
    rng = random.Random(i)
    lines = []
    size = rng.choice([200, 2000, 20000]) if i % 50 else 400000  # some over the node's memory buffer
    n = 0
    while n < size:
        kind = rng.random()
        if kind < 0.1:
            l = b"." * rng.randrange(1, 4) + b"dotted %d" % n
        elif kind < 0.12:
            l = b""
        else:
            l = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 120)))
        lines.append(l)
        n += len(l) + 2
    return b"\r\n".join(lines) + b"\r\n"


def message(i):
    mid = "load-%04d" % i
    p = payload(i)
    h = hashlib.sha256(p).hexdigest()
    head = ("Subject: load %s\r\nMessage-ID: <%s@load.test>\r\nX-Test-Id: %s\r\nX-Payload-SHA256: %s\r\n\r\n" % (mid, mid, mid, h)).encode()
    return mid, head + p


def check(data, where):
    """(id, ok) of a stored or retrieved message."""
    hdr_end = data.index(b"\r\n\r\n") + 4
    head = data[:hdr_end].decode("ascii")
    mid = re.search(r"\r\nX-Test-Id: (load-\d{4})\r\n", head).group(1)
    want = re.search(r"\r\nX-Payload-SHA256: ([0-9a-f]{64})\r\n", head).group(1)
    got = hashlib.sha256(data[hdr_end:]).hexdigest()
    assert got == want, "%s: %s is damaged" % (where, mid)
    assert data.startswith(b"Return-Path: <load@remote.test>\r\n") and b"\r\nReceived: from " in data[:2000], (where, mid)
    return mid


errors = []
sent = {}
lock = threading.Lock()


def worker(k):
    try:
        s = smtplib.SMTP(*addr("SMTP"), timeout=60)
        s.ehlo("load%d.example" % k)
        for i in range(k, COUNT, THREADS):
            mid, m = message(i)
            rcpts = ["alice@example.test"] + (["bob@example.test"] if i % ALSO_BOB == 0 else [])
            refused = s.sendmail("load@remote.test", rcpts, m)
            assert not refused, refused
            with lock:
                assert mid not in sent
                sent[mid] = m
        s.quit()
    except Exception as e:  # reported by the main thread
        errors.append("worker %d: %r" % (k, e))


t0 = time.monotonic()
threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join(240)
assert not any(t.is_alive() for t in threads), "senders hung"
assert not errors, errors
assert len(sent) == COUNT
print("sent %d messages over %d connections in %.1fs" % (COUNT, THREADS, time.monotonic() - t0), flush=True)

# The Maildir files.
files = maildir_files("alice")
assert len(files) == COUNT, len(files)
seen = {}
for f in files:
    data = open(f, "rb").read()
    mid = check(data, f)
    assert mid not in seen, "duplicate %s: %s and %s" % (mid, seen[mid], f)
    seen[mid] = f
    assert data.endswith(sent[mid]), "%s differs from what was sent" % mid
assert set(seen) == set(sent)
bob = maildir_files("bob")
assert len(bob) == len([i for i in range(COUNT) if i % ALSO_BOB == 0]), len(bob)
for f in bob:
    mid = check(open(f, "rb").read(), f)
    assert int(mid[5:]) % ALSO_BOB == 0
    # One copy on disk for both recipients.
    assert os.path.samefile(f, seen[mid]), mid
ok("%d messages in the Maildir, intact, no duplicates" % COUNT)

# The same over POP3.
p = poplib.POP3(*addr("POP3"), timeout=60)
p.user("alice@example.test")
p.pass_("secret")
n, total = p.stat()
assert n == COUNT, n
assert total == sum(os.path.getsize(f) for f in files)
uids = [l.split()[1].decode() for l in p.uidl()[1]]
assert len(set(uids)) == COUNT
assert sorted(uids) == sorted(os.path.basename(f) for f in files)
sizes = [int(l.split()[1]) for l in p.list()[1]]
got = set()
for i in range(1, COUNT + 1):
    resp, lines, _ = p.retr(i)
    data = b"\r\n".join(lines) + b"\r\n"
    assert len(data) == sizes[i - 1], i
    mid = check(data, "RETR %d" % i)
    assert mid not in got, "duplicate over POP3: " + mid
    got.add(mid)
    assert data.endswith(sent[mid])
p.quit()
assert got == set(sent)
ok("%d messages over POP3, intact, no duplicates" % COUNT)
