"""Connection limits: per client address (max_connections_per_ip) and in
total (max_connections). Connections over a limit are told so and closed at
once; other clients are not held up. MODE=per_ip or MODE=total."""
import os
import poplib
import time

from mailtest import Raw, addr, deliver, ok, wait_for

MODE = os.environ["MODE"]
LIMIT = int(os.environ["LIMIT"])


def open_idle(source_ip):
    """Opens a connection and reads the first line: (Raw, line)."""
    r = Raw("SMTP", timeout=10, source=(source_ip, 0))
    return r, r.line()


def greeted(source_ip):
    r, l = open_idle(source_ip)
    r.close()
    return l.startswith(b"220 ")


if MODE == "per_ip":
    held, refused = [], 0
    t0 = time.monotonic()
    for i in range(100):
        r, l = open_idle("127.0.0.2")
        if l.startswith(b"220 "):
            held.append(r)
        else:
            assert l == b"421 4.7.0 Too many connections, try again later", l
            assert r.closed(5), "an over-limit connection must be closed at once"
            r.close()
            refused += 1
    assert len(held) == LIMIT and refused == 100 - LIMIT, (len(held), refused)
    assert time.monotonic() - t0 < 30, "refusals must not wait"
    # POP3 connections count against the same limit.
    r = Raw("POP3", timeout=10, source=("127.0.0.2", 0))
    assert r.line().startswith(b"-ERR [SYS/TEMP]")
    assert r.closed(5)
    r.close()
    ok("per-IP limit: extra connections get 421 4.7.0")

    # Another address is served at once, and can deliver.
    t0 = time.monotonic()
    r = Raw("SMTP", timeout=5)
    assert r.line().startswith(b"220 ")
    assert time.monotonic() - t0 < 2, "the greeting to another address was held up"
    r.cmd("QUIT")
    r.close()
    path = deliver(b"Subject: not locked out\r\n\r\nhello\r\n")
    assert open(path, "rb").read().endswith(b"hello\r\n")
    p = poplib.POP3(*addr("POP3"), timeout=10)
    p.user("alice@example.test")
    p.pass_("secret")
    assert p.stat()[0] == 1
    p.quit()
    ok("another address still served")

    # A freed place can be taken again.
    for r in held[:5]:
        r.close()
    wait_for(lambda: greeted("127.0.0.2"), 10, "a freed place")
    for r in held[5:]:
        r.close()
    ok("freed places reused")

elif MODE == "total":
    held = []
    for i in range(LIMIT):
        r, l = open_idle("127.0.0.%d" % (10 + i))
        assert l.startswith(b"220 "), (i, l)
        held.append(r)
    for ip in ("127.0.0.1", "127.0.0.99"):
        r, l = open_idle(ip)
        assert l == b"421 4.7.0 Too many connections, try again later", (ip, l)
        assert r.closed(5)
        r.close()
    r = Raw("POP3", timeout=10)
    assert r.line().startswith(b"-ERR [SYS/TEMP]")
    assert r.closed(5)
    r.close()
    # Implicit TLS ports close without a word (no TLS yet to say it in).
    r = Raw("POP3S", timeout=10)
    assert r.closed(5), "an over-limit POP3S connection must be closed"
    r.close()
    ok("total limit: every address refused when full")
    held.pop().close()
    wait_for(lambda: greeted("127.0.0.1"), 10, "a freed place")
    for r in held:
        r.close()
    # Places are given back as the node sees the connections close.
    def all_free():
        rs = [open_idle("127.0.0.%d" % (30 + i)) for i in range(LIMIT)]
        for r, _ in rs:
            r.close()
        return all(l.startswith(b"220 ") for _, l in rs)

    wait_for(all_free, 10, "all places given back")
    ok("freed place reused")
else:
    raise SystemExit("unknown MODE " + MODE)
