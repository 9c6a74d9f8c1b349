"""mbsync (isync) syncing the account with a local Maildir both ways:
messages, folders and flags arrive; flags set, messages written and
messages deleted locally are pushed back and seen over imaplib; a second
run after changes on the server brings them; IMAPS with the cluster
certificate."""
import os
import re
import shutil
import subprocess
import tempfile

from mailtest import deliver
from imap_common import (ALICE, addr, expect_ok, fetch_items, finish, flagset, login, store_path, step, raw)

MBSYNC = shutil.which("mbsync")
assert MBSYNC, "mbsync is not installed (Debian package isync)"
work = tempfile.mkdtemp(prefix="mbsync-")
local = os.path.join(work, "mail")
os.makedirs(local)
host, port = addr("IMAP")
shost, sport = addr("IMAPS")


def rc(ssl):
    conn = ("SSLType IMAPS\nCertificateFile %s\n" % store_path("tls", "self-signed.pem")) if ssl else "SSLType None\n"
    text = ("IMAPAccount mf\nHost %s\nPort %d\nUser %s\nPass secret\n%sTimeout 20\n\n"
            "IMAPStore mf-remote\nAccount mf\n\n"
            "MaildirStore mf-local\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n"
            "Channel mf\nFar :mf-remote:\nNear :mf-local:\nPatterns *\nCreate Both\nRemove None\nExpunge Both\nSyncState *\nSync All\n"
            % (shost if ssl else host, sport if ssl else port, ALICE, conn, local, local))
    path = os.path.join(work, "mbsyncrc-%s" % ("ssl" if ssl else "plain"))
    with open(path, "w") as f:
        f.write(text)
    return path


def mbsync(ssl=False):
    p = subprocess.run([MBSYNC, "-c", rc(ssl), "-V", "-a"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                       env=dict(os.environ, HOME=work))
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, ("mbsync failed (exit %d)" % p.returncode, out[-4000:])
    return out


def local_msgs(folder):
    """{Subject: (path, flag letters, bytes)} of a local Maildir folder."""
    out = {}
    d = os.path.join(local, folder)
    for sub in ("new", "cur"):
        sd = os.path.join(d, sub)
        if not os.path.isdir(sd):
            continue
        for n in os.listdir(sd):
            p = os.path.join(sd, n)
            data = open(p, "rb").read()
            m = re.search(rb"^Subject: (.*?)\r?$", data, re.M)
            assert m, (p, data[:300])
            flags = n.split(":2,", 1)[1] if ":2," in n else ""
            out[m.group(1).decode()] = (p, flags, data)
    return out


def set_local_flags(path, flags):
    d, n = os.path.split(path)
    base = n.split(":2,", 1)[0]
    new = os.path.join(os.path.dirname(d), "cur", base + ":2," + "".join(sorted(flags)))
    os.rename(path, new)
    return new


def lf(b):
    """A message as mbsync keeps it locally: LF line ends, and without the
    X-TUID header mbsync adds to the messages it copies."""
    return re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", b.replace(b"\r\n", b"\n"), count=1)


def server(folder):
    """{Subject: (uid, flags, body)} of a server folder, over imaplib."""
    M = login()
    status, lines = raw(M, "EXAMINE %s" % folder)
    assert status.startswith(b"OK"), status
    out = {}
    if not any(l.endswith(b" 0 EXISTS") or l == b"* 0 EXISTS" for l in lines):
        _, lines = expect_ok(M, "FETCH 1:* (UID FLAGS BODY.PEEK[])")
        for v in fetch_items(lines).values():
            m = re.search(rb"^Subject: (.*?)\r$", v["BODY[]"], re.M)
            out[m.group(1).decode()] = (int(v["UID"]), flagset(v["FLAGS"]) - {"\\Recent"}, v["BODY[]"])
    M.logout()
    return out


# On the server: three messages in INBOX with flags, one in Archive, a subfolder.
msgs = [b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: sync %d\r\n\r\nbody of %d\r\n.dot line\r\n" % (i, i) for i in range(3)]
files = [deliver(m) for m in msgs]
contents = [open(f, "rb").read() for f in files]
M = login()
expect_ok(M, "SELECT INBOX")
expect_ok(M, "STORE 1 +FLAGS (\\Seen)")
expect_ok(M, "STORE 2 +FLAGS (\\Flagged \\Seen)")
archived = b"From: alice@example.test\r\nSubject: archived\r\n\r\nold\r\n"
expect_ok(M, "APPEND Archive (\\Seen) {%d}" % len(archived), literal=archived)
expect_ok(M, "CREATE Work/Sub")
sub = b"From: alice@example.test\r\nSubject: in a subfolder\r\n\r\ndeep\r\n"
expect_ok(M, "APPEND Work/Sub {%d}" % len(sub), literal=sub)
M.logout()

with step("mbsync pulls messages, folders and flags into a Maildir"):
    out = mbsync()
    inbox = local_msgs("INBOX")
    assert set(inbox) == {"sync 0", "sync 1", "sync 2"}, (inbox.keys(), out[-3000:])
    for i, c in enumerate(contents):
        _, flags, data = inbox["sync %d" % i]
        assert lf(data) == lf(c), ("message %d differs" % i, data[:300], c[:300])
    assert inbox["sync 0"][1] == "S", inbox["sync 0"][1]
    assert inbox["sync 1"][1] == "FS", inbox["sync 1"][1]
    assert inbox["sync 2"][1] == "", inbox["sync 2"][1]
    a = local_msgs("Archive")
    assert set(a) == {"archived"} and a["archived"][1] == "S" and lf(a["archived"][2]) == lf(archived), a
    w = local_msgs("Work/Sub")
    assert set(w) == {"in a subfolder"} and lf(w["in a subfolder"][2]) == lf(sub), w
    for f in ("Sent", "Drafts", "Trash", "Junk"):
        assert os.path.isdir(os.path.join(local, f, "cur")), (f, os.listdir(local))

with step("flags set locally are pushed back and seen over imaplib"):
    inbox = local_msgs("INBOX")
    set_local_flags(inbox["sync 2"][0], "RS")   # replied and seen
    set_local_flags(inbox["sync 1"][0], "S")    # unflagged
    mbsync()
    s = server("INBOX")
    assert s["sync 2"][1] == {"\\Answered", "\\Seen"}, s["sync 2"]
    assert s["sync 1"][1] == {"\\Seen"}, s["sync 1"]
    assert s["sync 0"][1] == {"\\Seen"}, s["sync 0"]

with step("a message written locally is uploaded (APPEND) with its flags"):
    draft = b"From: alice@example.test\nTo: bob@example.test\nSubject: local draft\n\nwritten offline\n"
    d = os.path.join(local, "Drafts", "cur")
    with open(os.path.join(d, "1700000000.local.host:2,DS"), "wb") as f:
        f.write(draft)
    out = mbsync()
    s = server("Drafts")
    assert set(s) == {"local draft"}, (s.keys(), out[-3000:])
    uid, flags, body = s["local draft"]
    assert flags == {"\\Draft", "\\Seen"}, flags
    assert lf(body) == draft, body
    assert b"\r\n" in body and b"\n" not in body.replace(b"\r\n", b""), ("bare LF stored on the server", body)

with step("a message deleted locally is expunged on the server"):
    inbox = local_msgs("INBOX")
    set_local_flags(inbox["sync 0"][0], "ST")
    mbsync()
    s = server("INBOX")
    assert set(s) == {"sync 1", "sync 2"}, s.keys()
    assert set(local_msgs("INBOX")) == {"sync 1", "sync 2"}

with step("changes on the server arrive with the next run (over IMAPS)"):
    new = b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: arrived later\r\n\r\nnew\r\n"
    newc = open(deliver(new), "rb").read()
    M = login()
    expect_ok(M, "SELECT INBOX")
    expect_ok(M, "STORE 1 +FLAGS (\\Flagged)")      # sync 1
    expect_ok(M, "STORE 2 +FLAGS.SILENT (\\Deleted)")  # sync 2
    expect_ok(M, "EXPUNGE")
    M.logout()
    out = mbsync(ssl=True)
    inbox = local_msgs("INBOX")
    assert set(inbox) == {"sync 1", "arrived later"}, (inbox.keys(), out[-3000:])
    assert inbox["sync 1"][1] == "FS", inbox["sync 1"][1]
    assert lf(inbox["arrived later"][2]) == lf(newc)
    # Nothing left to do: a third run changes nothing.
    before = {k: (v[1], v[2]) for k, v in inbox.items()}
    mbsync()
    assert {k: (v[1], v[2]) for k, v in local_msgs("INBOX").items()} == before
    assert set(server("INBOX")) == {"sync 1", "arrived later"}

shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print("kept", work)
finish()
