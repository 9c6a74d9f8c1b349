"""offlineimap3 one-shot syncs of the account with a local Maildir:
messages, folders and flags arrive byte for byte (line ends aside); a
flag set locally and a message written locally reach the server; IMAPS
verified with the cluster certificate."""
import os
import re
import shutil
import subprocess
import tempfile

from mailtest import deliver
from imap_common import (ALICE, addr, expect_ok, fetch_items, finish, flagset, login, raw, step, store_path)

OFFLINEIMAP = shutil.which("offlineimap")
assert OFFLINEIMAP, "offlineimap is not installed (Debian package offlineimap3)"
work = tempfile.mkdtemp(prefix="offlineimap-")
local = os.path.join(work, "mail")
host, port = addr("IMAP")
shost, sport = addr("IMAPS")


def conf(tls):
    if tls:
        # The cluster certificate names localhost too.
        remote = ("remotehost = localhost\nremoteport = %d\nssl = yes\nsslcacertfile = %s\n"
                  % (sport, store_path("tls", "self-signed.pem")))
    else:
        remote = "remotehost = %s\nremoteport = %d\nssl = no\nstarttls = no\n" % (host, port)
    text = ("[general]\naccounts = mf\nmetadata = %s/meta\n\n"
            "[Account mf]\nlocalrepository = local\nremoterepository = remote\n\n"
            "[Repository local]\ntype = Maildir\nlocalfolders = %s\nsep = /\n\n"
            "[Repository remote]\ntype = IMAP\n%sremoteuser = %s\nremotepass = secret\nmaxconnections = 1\n"
            % (work, local, remote, ALICE))
    path = os.path.join(work, "offlineimaprc-%s" % ("tls" if tls else "plain"))
    with open(path, "w") as f:
        f.write(text)
    return path


def offlineimap(tls=False):
    p = subprocess.run([OFFLINEIMAP, "-c", conf(tls), "-o", "-u", "basic"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120, env=dict(os.environ, HOME=work))
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and "ERROR" not in out, ("offlineimap failed (exit %d)" % p.returncode, out[-4000:])
    return out


def local_msgs(folder):
    out = {}
    for sub in ("new", "cur"):
        d = os.path.join(local, folder, sub)
        if not os.path.isdir(d):
            continue
        for n in os.listdir(d):
            p = os.path.join(d, n)
            data = open(p, "rb").read()
            m = re.search(rb"^Subject: (.*?)\r?$", data, re.M)
            assert m, (p, data[:300])
            out[m.group(1).decode()] = (p, n.split(":2,", 1)[1] if ":2," in n else "", data)
    return out


def norm(b):
    """Line ends and offlineimap's own header (X-OfflineIMAP) aside."""
    b = b.replace(b"\r\n", b"\n")
    return re.sub(rb"(?m)^X-OfflineIMAP: [^\n]*\n", b"", b)


def server(folder):
    M = login()
    status, lines = raw(M, "EXAMINE %s" % folder)
    assert status.startswith(b"OK"), status
    out = {}
    if b"* 0 EXISTS" not in lines:
        _, lines = expect_ok(M, "FETCH 1:* (UID FLAGS BODY.PEEK[])")
        for v in fetch_items(lines).values():
            m = re.search(rb"^Subject: (.*?)\r$", v["BODY[]"], re.M)
            out[m.group(1).decode()] = (int(v["UID"]), flagset(v["FLAGS"]) - {"\\Recent"}, v["BODY[]"])
    M.logout()
    return out


msgs = [b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: oi %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3)]
contents = [open(deliver(m), "rb").read() for m in msgs]
M = login()
expect_ok(M, "SELECT INBOX")
expect_ok(M, "STORE 1 +FLAGS (\\Seen)")
expect_ok(M, "STORE 2 +FLAGS (\\Flagged \\Answered)")
expect_ok(M, "CREATE Lists/rust")
listmail = b"From: list@remote.test\r\nSubject: list mail\r\n\r\nhi list\r\n"
expect_ok(M, "APPEND Lists/rust (\\Seen) {%d}" % len(listmail), literal=listmail)
M.logout()

with step("offlineimap pulls messages, folders and flags"):
    out = offlineimap()
    inbox = local_msgs("INBOX")
    assert set(inbox) == {"oi 0", "oi 1", "oi 2"}, (inbox.keys(), out[-3000:])
    for i, c in enumerate(contents):
        assert norm(inbox["oi %d" % i][2]) == norm(c), ("message %d differs" % i, inbox["oi %d" % i][2][:300])
    assert (inbox["oi 0"][1], inbox["oi 1"][1], inbox["oi 2"][1]) == ("S", "FR", ""), {k: v[1] for k, v in inbox.items()}
    lm = local_msgs("Lists/rust")
    assert set(lm) == {"list mail"} and lm["list mail"][1] == "S" and norm(lm["list mail"][2]) == norm(listmail), lm

with step("offlineimap pushes a local flag and a local message"):
    inbox = local_msgs("INBOX")
    p, _, _ = inbox["oi 2"]
    base = os.path.basename(p).split(":2,", 1)[0]
    os.rename(p, os.path.join(local, "INBOX", "cur", base + ":2,FS"))
    note = b"From: alice@example.test\nSubject: written offline\n\nnote to self\n"
    with open(os.path.join(local, "INBOX", "cur", "1700000000.offline.host:2,S"), "wb") as f:
        f.write(note)
    out = offlineimap()
    s = server("INBOX")
    assert set(s) == {"oi 0", "oi 1", "oi 2", "written offline"}, (s.keys(), out[-3000:])
    assert s["oi 2"][1] == {"\\Flagged", "\\Seen"}, s["oi 2"]
    assert s["written offline"][1] == {"\\Seen"}, s["written offline"]
    assert norm(s["written offline"][2]) == note, s["written offline"][2]

with step("offlineimap over IMAPS brings what changed on the server"):
    new = b"From: carol@remote.test\r\nSubject: oi later\r\n\r\nlater\r\n"
    newc = open(deliver(new), "rb").read()
    M = login()
    expect_ok(M, "SELECT INBOX")
    expect_ok(M, "STORE 1 -FLAGS (\\Seen)")
    M.logout()
    out = offlineimap(tls=True)
    inbox = local_msgs("INBOX")
    assert set(inbox) == {"oi 0", "oi 1", "oi 2", "written offline", "oi later"}, (inbox.keys(), out[-3000:])
    assert inbox["oi 0"][1] == "", inbox["oi 0"]
    assert norm(inbox["oi later"][2]) == norm(newc)

shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print("kept", work)
finish()
