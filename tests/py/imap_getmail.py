"""getmail6 retrieving over IMAP into a Maildir: the messages as stored
(line ends and getmail's refolding of long header fields aside), left on
the server unread (getmail fetches with BODY.PEEK[]), not fetched twice,
deleted (\\Deleted and EXPUNGE) when told to, the ones it had left before
too; and over IMAPS verified with the cluster certificate."""
import os
import re
import shutil
import subprocess
import tempfile

from mailtest import deliver
from imap_common import (ALICE, addr, expect_ok, fetch_items, finish, flagset, login, raw, step, store_path)

GETMAIL = shutil.which("getmail")
assert GETMAIL, "getmail is not installed (Debian package getmail6)"
work = tempfile.mkdtemp(prefix="getmail-")
dest = os.path.join(work, "Maildir")
for sub in ("cur", "new", "tmp"):
    os.makedirs(os.path.join(dest, sub))
# getmail refuses to deliver as root; as root it is told to deliver as
# nobody, who must be able to write the Maildir.
as_user = ""
if os.geteuid() == 0:
    as_user = "user = nobody\n"
    os.chmod(work, 0o755)
    for d in [dest] + [os.path.join(dest, s) for s in ("cur", "new", "tmp")]:
        os.chmod(d, 0o777)
host, port = addr("IMAP")
shost, sport = addr("IMAPS")


def getmail(delete=False, tls=False):
    if tls:
        retr = "type = SimpleIMAPSSLRetriever\nserver = localhost\nport = %d\nca_certs = %s\n" % (sport, store_path("tls", "self-signed.pem"))
    else:
        retr = "type = SimpleIMAPRetriever\nserver = %s\nport = %d\n" % (host, port)
    rc = os.path.join(work, "getmailrc")
    with open(rc, "w") as f:
        f.write("[retriever]\n%susername = %s\npassword = secret\nmailboxes = (\"INBOX\",)\nrecord_mailbox = false\n\n"
                "[destination]\ntype = Maildir\npath = %s/\n%s\n"
                "[options]\nread_all = false\ndelete = %s\ndelivered_to = false\nreceived = false\nverbose = 2\n"
                % (retr, ALICE, dest, as_user, "true" if delete else "false"))
    p = subprocess.run([GETMAIL, "--rcfile", rc, "--getmaildir", work], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                       env=dict(os.environ, HOME=work))
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, ("getmail failed (exit %d)" % p.returncode, out[-3000:])
    m = re.search(r"(\d+) messages? \(\d+ bytes\) retrieved", out)
    assert m, out[-3000:]
    return int(m.group(1)), out


def local():
    out = {}
    for sub in ("new", "cur"):
        d = os.path.join(dest, sub)
        for n in os.listdir(d):
            data = open(os.path.join(d, n), "rb").read()
            m = re.search(rb"^Subject: (.*?)\r?$", data, re.M)
            out[m.group(1).decode()] = data
    return out


def server():
    M = login()
    status, lines = raw(M, "EXAMINE INBOX")
    assert status.startswith(b"OK"), status
    out = {}
    if b"* 0 EXISTS" not in lines:
        _, lines = expect_ok(M, "FETCH 1:* (FLAGS BODY.PEEK[])")
        for v in fetch_items(lines).values():
            m = re.search(rb"^Subject: (.*?)\r$", v["BODY[]"], re.M)
            out[m.group(1).decode()] = (flagset(v["FLAGS"]) - {"\\Recent"}, v["BODY[]"])
    M.logout()
    return out


def lf(b):
    """A message as getmail writes it: LF line ends, and header fields
    folded anew by Python's email package (so compared unfolded)."""
    b = b.replace(b"\r\n", b"\n")
    i = b.index(b"\n\n")
    return re.sub(rb"\n[ \t]+", b" ", b[:i]) + b[i:]


msgs = [b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: gm %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(2)]
contents = {"gm %d" % i: open(deliver(m), "rb").read() for i, m in enumerate(msgs)}

with step("getmail retrieves the messages byte for byte and leaves them unread on the server"):
    n, out = getmail()
    assert n == 2, out[-2000:]
    got = local()
    assert set(got) == set(contents), got.keys()
    for k, c in contents.items():
        assert lf(got[k]) == lf(c), (k, got[k][:400], c[:400])
    s = server()
    assert set(s) == set(contents) and all(f == set() for f, _ in s.values()), s

with step("getmail does not fetch a message twice"):
    n, out = getmail()
    assert n == 0, out[-2000:]
    assert len(local()) == 2

with step("getmail with delete = true removes what it has retrieved (\\Deleted, EXPUNGE)"):
    third = b"From: carol@remote.test\r\nSubject: gm 2\r\n\r\nthird\r\n"
    contents["gm 2"] = open(deliver(third), "rb").read()
    n, out = getmail(delete=True)
    assert n == 1, out[-2000:]
    assert lf(local()["gm 2"]) == lf(contents["gm 2"])
    # getmail deletes the messages it retrieved before as well.
    s = server()
    assert s == {}, s.keys()

with step("getmail over IMAPS verified with the cluster certificate"):
    fourth = b"From: carol@remote.test\r\nSubject: gm 3\r\n\r\nover tls\r\n"
    contents["gm 3"] = open(deliver(fourth), "rb").read()
    n, out = getmail(tls=True)
    assert n == 1, out[-2000:]
    assert lf(local()["gm 3"]) == lf(contents["gm 3"])

shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print("kept", work)
finish()
