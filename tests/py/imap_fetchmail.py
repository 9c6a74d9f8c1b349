"""fetchmail retrieving over IMAP into an MDA: the new (unseen) messages
byte for byte (line ends aside), marked \\Seen on the server with --keep
and not fetched again; deleted (\\Deleted, EXPUNGE) without --keep;
--all takes the seen ones too; and over IMAPS (--ssl) with the cluster
certificate checked."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from mailtest import deliver
from imap_common import (ALICE, addr, expect_ok, fetch_items, finish, flagset, login, raw, step, store_path)

FETCHMAIL = shutil.which("fetchmail")
assert FETCHMAIL, "fetchmail is not installed (Debian package fetchmail)"
work = tempfile.mkdtemp(prefix="fetchmail-")
outdir = os.path.join(work, "out")
os.makedirs(outdir)
host, port = addr("IMAP")
shost, sport = addr("IMAPS")

saver = os.path.join(work, "save.py")
with open(saver, "w") as f:
    f.write("import os, sys, time\n"
            "d = sys.argv[1]\n"
            "n = len(os.listdir(d))\n"
            "open(os.path.join(d, '%04d' % n), 'wb').write(sys.stdin.buffer.read())\n")
rc = os.path.join(work, "fetchmailrc")
with open(rc, "w") as f:
    f.write('set no syslog\nset no bouncemail\n'
            'poll 127.0.0.1 with proto IMAP user "%s" there with password "secret"\n'
            'poll localhost with proto IMAP user "%s" there with password "secret"\n' % (ALICE, ALICE))
os.chmod(rc, 0o600)


def fetchmail(*opts, tls=False):
    if tls:
        where = ["--ssl", "--sslcertck", "--sslcertfile", store_path("tls", "self-signed.pem"), "--service", str(sport), "localhost"]
    else:
        where = ["--sslproto", "", "--service", str(port), host]
    cmd = [FETCHMAIL, "-f", rc, "--nodetach", "--pidfile", os.path.join(work, "pid"), "--idfile", os.path.join(work, "ids"),
           "--protocol", "IMAP", "--user", ALICE, "--invisible", "--norewrite", "--mda", "%s %s %s" % (sys.executable, saver, outdir),
           "-v"] + list(opts) + where
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, env=dict(os.environ, HOME=work))
    return p.returncode, p.stdout.decode(errors="replace")


_taken = set()


def got():
    """The messages the MDA received since the last call."""
    names = sorted(set(os.listdir(outdir)) - _taken)
    _taken.update(names)
    return [open(os.path.join(outdir, n), "rb").read() for n in names]


def server():
    M = login()
    status, lines = raw(M, "EXAMINE INBOX")
    assert status.startswith(b"OK"), status
    out = {}
    if b"* 0 EXISTS" not in lines:
        _, lines = expect_ok(M, "FETCH 1:* (FLAGS BODY.PEEK[])")
        for v in fetch_items(lines).values():
            m = re.search(rb"^Subject: (.*?)\r$", v["BODY[]"], re.M)
            out[m.group(1).decode()] = flagset(v["FLAGS"]) - {"\\Recent"}
    M.logout()
    return out


def lf(b):
    return b.replace(b"\r\n", b"\n")


msgs = [b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: fm %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(2)]
contents = [open(deliver(m), "rb").read() for m in msgs]

with step("fetchmail --keep retrieves the new messages and marks them \\Seen"):
    code, out = fetchmail("--keep")
    assert code == 0, (code, out[-3000:])
    g = got()
    assert len(g) == 2, (len(g), out[-3000:])
    assert sorted(lf(x) for x in g) == sorted(lf(c) for c in contents), (g, out[-2000:])
    assert server() == {"fm 0": {"\\Seen"}, "fm 1": {"\\Seen"}}, server()

with step("a second fetchmail --keep finds nothing new"):
    code, out = fetchmail("--keep")
    g = got()
    assert code == 1 and g == [], ("exit 1 means no mail", code, len(g), out[-3000:])

with step("fetchmail without --keep deletes what it retrieved"):
    third = b"From: carol@remote.test\r\nSubject: fm 2\r\n\r\nthird\r\n"
    contents.append(open(deliver(third), "rb").read())
    code, out = fetchmail()
    assert code == 0, (code, out[-3000:])
    g = got()
    assert [lf(x) for x in g] == [lf(contents[2])], (len(g), out[-3000:])
    assert server() == {"fm 0": {"\\Seen"}, "fm 1": {"\\Seen"}}, server()

with step("fetchmail --ssl over IMAPS with the certificate checked, --all takes the seen ones"):
    code, out = fetchmail("--all", tls=True)
    assert code == 0, (code, out[-3000:])
    g = got()
    assert sorted(lf(x) for x in g) == sorted(lf(c) for c in contents[:2]), (len(g), out[-3000:])
    assert server() == {}, server()

shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print("kept", work)
finish()
