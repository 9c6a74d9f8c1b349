"""Two nodes on one store, sessions on both on the same folder at once:
the same UIDs, UIDVALIDITY and MODSEQs from both; a change made through
one node is told by the other (after NOOP, and at once while idling);
APPENDs on both nodes at the same time get distinct UIDs."""
import re
import threading
import time

from imap_common import (expect_ok, fetch_items, finish, flagset, login, raw, read_until, send, step, untagged)

N1, N2 = "IMAP", "IMAP_2"

sent = [b"From: carol@remote.test\r\nSubject: via node1 #%d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3)]
for m in sent:
    send(m)
via2 = b"From: carol@remote.test\r\nSubject: via node2\r\n\r\nfrom the other node\r\n"
send(via2, via="SMTP_2")
sent.append(via2)


def select(M, box="INBOX", extra=""):
    status, lines = raw(M, "SELECT %s%s" % (box, extra))
    assert status.startswith(b"OK"), (status, lines)
    return lines


def view(M):
    _, lines = expect_ok(M, "UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ BODY.PEEK[])")
    f = fetch_items(lines)
    out = []
    for seq in sorted(f):
        v = f[seq]
        out.append((seq, int(v["UID"]), frozenset(flagset(v["FLAGS"]) - {"\\Recent"}), int(v["RFC822.SIZE"]), bytes(v["INTERNALDATE"]), int(v["MODSEQ"][0]), v["BODY[]"]))
    return out


def noop_until(M, pred, timeout=0.0):
    """NOOPs until an untagged line satisfies `pred` (once if timeout is
    0); returns (lines of the NOOP that had it, seconds waited)."""
    t0 = time.monotonic()
    seen = []
    while True:
        _, lines = expect_ok(M, "NOOP")
        seen += lines
        if any(pred(l) for l in lines):
            return lines, time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            raise AssertionError("not told after %.1fs of NOOPs; got %r" % (timeout, seen))
        time.sleep(0.1)


def code(lines, name):
    for l in lines:
        m = re.match(rb"\* OK \[" + name.encode() + rb" ([^\]]*)\]", l)
        if m:
            return m.group(1).decode()
    raise AssertionError("no %s in %r" % (name, lines))


A = login(name=N1)
B = login(name=N2)

with step("same UIDs, UIDVALIDITY, flags and MODSEQs from both nodes"):
    la = select(A, extra=" (CONDSTORE)")
    lb = select(B, extra=" (CONDSTORE)")
    for c in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"):
        assert code(la, c) == code(lb, c), (c, la, lb)
    assert b"* 4 EXISTS" in la and b"* 4 EXISTS" in lb, (la, lb)
    va, vb = view(A), view(B)
    assert va == vb, (va, vb)
    assert [v[1] for v in va] == [1, 2, 3, 4], va
    for v, m in zip(va, sent):
        assert v[6].endswith(m), v
    print("UIDVALIDITY %s on both nodes" % code(la, "UIDVALIDITY"), flush=True)

with step("a STORE on node1 is an untagged FETCH FLAGS on node2 after NOOP"):
    _, lines = expect_ok(A, "STORE 1 +FLAGS (\\Flagged $Shared)")
    lines, waited = noop_until(B, lambda l: l.startswith(b"* 1 FETCH "))
    f = fetch_items(lines)[1]
    assert {"\\Flagged", "$Shared"} <= flagset(f["FLAGS"]), lines
    # And the other way.
    expect_ok(B, "STORE 2 +FLAGS.SILENT (\\Seen)")
    lines, waited = noop_until(A, lambda l: l.startswith(b"* 2 FETCH "))
    assert "\\Seen" in flagset(fetch_items(lines)[2]["FLAGS"]), lines
    assert view(A) == view(B)

with step("an APPEND on node2 is EXISTS on node1"):
    new = b"From: alice@example.test\r\nSubject: appended on node2\r\n\r\nhello\r\n"
    status, lines = expect_ok(B, "APPEND INBOX (\\Seen) {%d}" % len(new), literal=new)
    uv = code(la, "UIDVALIDITY")
    assert status.startswith(b"OK [APPENDUID %s 5]" % uv.encode()), status
    lines, waited = noop_until(A, lambda l: l == b"* 5 EXISTS")
    _, lines = expect_ok(A, "UID FETCH 5 (FLAGS BODY.PEEK[])")
    f = fetch_items(lines)[5]
    assert f["BODY[]"] == new and "\\Seen" in flagset(f["FLAGS"]), f
    assert view(A) == view(B)

with step("an EXPUNGE on one node is an EXPUNGE on the other"):
    expect_ok(A, "STORE 2 +FLAGS.SILENT (\\Deleted)")
    _, lines = expect_ok(A, "EXPUNGE")
    assert untagged(lines, "EXPUNGE") == [b"2 EXPUNGE"], lines
    lines, _ = noop_until(B, lambda l: l == b"* 2 EXPUNGE")
    assert untagged(lines, "EXPUNGE") == [b"2 EXPUNGE"], lines
    # UID EXPUNGE on node2, seen on node1.
    expect_ok(B, "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    _, lines = expect_ok(B, "UID EXPUNGE 3")
    assert untagged(lines, "EXPUNGE") == [b"2 EXPUNGE"], lines
    lines, _ = noop_until(A, lambda l: l == b"* 2 EXPUNGE")
    va, vb = view(A), view(B)
    assert va == vb and [v[1] for v in va] == [1, 4, 5], (va, vb)

with step("a MOVE on node1 is an EXPUNGE on node2, the moved message the same on both"):
    status, lines = raw(A, "UID MOVE 4 Archive")
    assert status.startswith(b"OK") and untagged(lines, "EXPUNGE") == [b"2 EXPUNGE"], (status, lines)
    lines, _ = noop_until(B, lambda l: l == b"* 2 EXPUNGE")
    _, s1 = expect_ok(A, "STATUS Archive (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
    _, s2 = expect_ok(B, "STATUS Archive (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
    assert untagged(s1, "STATUS") == untagged(s2, "STATUS"), (s1, s2)
    assert b"MESSAGES 1" in untagged(s1, "STATUS")[0], s1

with step("IDLE on node2 sees mail delivered through node1's SMTP within a few seconds"):
    _, lines = expect_ok(B, "NOOP")
    n = len(view(B))
    tag = B._new_tag()
    B.send(tag + b" IDLE\r\n")
    read_until(B, lambda l: l.startswith(b"+"), 5)
    idle_msg = b"From: carol@remote.test\r\nSubject: to node1, seen on node2\r\n\r\nhi\r\n"
    t0 = time.monotonic()
    send(idle_msg)
    sent_at = time.monotonic()
    got, _ = read_until(B, lambda l: l == b"* %d EXISTS" % (n + 1), 10)
    print("IDLE on node2: EXISTS %.3fs after node1's SMTP accepted the message (%.3fs after the SMTP session began)"
          % (time.monotonic() - sent_at, time.monotonic() - t0), flush=True)
    # A flag change on node1 while node2 idles.
    expect_ok(A, "NOOP")
    t0 = time.monotonic()
    expect_ok(A, "STORE 1 -FLAGS.SILENT (\\Flagged)")
    got, _ = read_until(B, lambda l: l.startswith(b"* 1 FETCH "), 10)
    print("IDLE on node2: FETCH FLAGS %.3fs after node1's STORE" % (time.monotonic() - t0), flush=True)
    assert "\\Flagged" not in flagset(fetch_items([got[-1]])[1]["FLAGS"]), got
    t0 = time.monotonic()
    expect_ok(A, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    expect_ok(A, "EXPUNGE")
    got, _ = read_until(B, lambda l: l == b"* 1 EXPUNGE", 10)
    print("IDLE on node2: EXPUNGE %.3fs after node1's EXPUNGE" % (time.monotonic() - t0), flush=True)
    B.send(b"DONE\r\n")
    got, _ = read_until(B, lambda l: l.startswith(tag + b" "), 5)
    assert got[-1].startswith(tag + b" OK"), got
    _, lines = expect_ok(A, "NOOP")
    va, vb = view(A), view(B)
    assert va == vb, (va, vb)
    assert va[-1][6].endswith(idle_msg), va[-1]

with step("APPENDs on both nodes at once get distinct UIDs, the same on both"):
    per_node = 10
    results = {N1: [], N2: []}
    errors = []

    def appender(name):
        try:
            M = login(name=name)
            for i in range(per_node):
                m = b"Subject: race %s %d\r\n\r\nx\r\n" % (name.encode(), i)
                status, _ = expect_ok(M, "APPEND Junk {%d}" % len(m), literal=m)
                results[name].append((int(status.split()[3].rstrip(b"]")), m))
            M.logout()
        except Exception as e:  # reported below
            errors.append((name, repr(e)))

    threads = [threading.Thread(target=appender, args=(n,)) for n in (N1, N2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    got = sorted(results[N1] + results[N2])
    uids = [u for u, _ in got]
    assert uids == list(range(1, 2 * per_node + 1)), ("UIDs not distinct and contiguous", uids)
    select(A, "Junk")
    select(B, "Junk")
    va, vb = view(A), view(B)
    assert va == vb, "the nodes disagree on Junk"
    assert [(v[1], v[6]) for v in va] == got, ("APPENDUIDs do not match the stored messages", [(v[1], v[6]) for v in va], got)

with step("+FLAGS from both nodes at once on the same messages lose nothing"):
    errors = []

    def flagger(name, kw):
        try:
            M = login(name=name)
            select(M, "Junk")
            for uid in range(1, 21):
                expect_ok(M, "UID STORE %d +FLAGS.SILENT (%s)" % (uid, kw))
            M.logout()
        except Exception as e:  # reported below
            errors.append((name, repr(e)))

    threads = [threading.Thread(target=flagger, args=a) for a in ((N1, "$FromOne"), (N2, "$FromTwo"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    expect_ok(A, "NOOP")
    expect_ok(B, "NOOP")
    va, vb = view(A), view(B)
    assert va == vb, "the nodes disagree on Junk"
    lost = [(v[1], sorted(v[2])) for v in va if not {"$FromOne", "$FromTwo"} <= v[2]]
    assert not lost, ("flags lost by concurrent STOREs", lost)

A.logout()
B.logout()
finish()
