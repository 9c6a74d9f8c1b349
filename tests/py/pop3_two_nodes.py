"""Two nodes on one store: the same UIDs on both, one maildrop lock for
the cluster, and deletions on one node seen by the other."""
import os
import poplib
import smtplib

from mailtest import addr, deliver, maildir_files, ok

ALICE = "alice@example.test"
NODE1 = addr("POP3")
NODE2 = addr("POP3_2")


def login(node, user=ALICE, pw="secret"):
    p = poplib.POP3(*node, timeout=20)
    p.user(user)
    p.pass_(pw)
    return p


def in_use(node):
    p = poplib.POP3(*node, timeout=20)
    p.user(ALICE)
    try:
        p.pass_("secret")
    except poplib.error_proto as e:
        assert e.args[0].startswith(b"-ERR [IN-USE]"), e.args[0]
        p.quit()
        return
    raise AssertionError("a second session got the maildrop")


# Mail through both nodes' SMTP ports.
files = [deliver(b"Subject: via node1 #%d\r\n\r\nbody %d\r\n" % (i, i)) for i in range(3)]
s = smtplib.SMTP(*addr("SMTP_2"), timeout=20)
s.sendmail("carol@remote.test", [ALICE], b"Subject: via node2\r\n\r\nfrom the other node\r\n")
s.quit()
files = maildir_files("alice")
assert len(files) == 4, files
assert any(f.endswith(".node2") for f in files), "the message names carry the receiving node"

p1 = login(NODE1)
u1 = p1.uidl()[1]
l1 = p1.list()[1]
p1.quit()
p2 = login(NODE2)
u2 = p2.uidl()[1]
l2 = p2.list()[1]
p2.quit()
assert u1 == u2, (u1, u2)
assert l1 == l2, (l1, l2)
assert sorted(l.split()[1].decode() for l in u1) == sorted(os.path.basename(f) for f in files)
assert len(set(l.split()[1] for l in u1)) == 4
ok("same UIDL on both nodes")

# One lock for the cluster.
a = login(NODE1)
in_use(NODE2)
in_use(NODE1)
a.quit()
b = login(NODE2)
in_use(NODE1)
# Delete on node2; node1 sees it gone.
gone = b.uidl(1).split()[2]
b.dele(1)
assert b.quit() == b"+OK bye (3 messages left)"
a = login(NODE1)
u = a.uidl()[1]
assert len(u) == 3 and all(l.split()[1] != gone for l in u), (u, gone)
assert [l.split()[1] for l in u] == [l.split()[1] for l in u1[1:]]
a.quit()
ok("one maildrop lock across nodes, deletions shared")
