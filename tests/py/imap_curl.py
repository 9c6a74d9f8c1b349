"""curl as an IMAP client (imap:// and imaps://, RFC 5092 URLs): listing
folders, fetching messages and sections by UID byte for byte, SEARCH,
custom commands, uploads with APPEND, STARTTLS with --ssl-reqd, IMAPS
verified with the cluster certificate, SASL PLAIN with an initial
response, and a wrong password."""
import os
import re
import shutil
import subprocess
import tempfile

from mailtest import deliver
from imap_common import (ALICE, addr, expect_ok, fetch_items, finish, flagset, login, step, store_path)

CURL = shutil.which("curl")
assert CURL, "curl is not installed (Debian package curl)"
host, port = addr("IMAP")
shost, sport = addr("IMAPS")
BASE = "imap://%s:%d" % (host, port)
SBASE = "imaps://%s:%d" % (shost, sport)

m1 = b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: first for curl\r\n\r\nline one\r\nline two\r\n"
m2 = b"From: dan@other.test\r\nTo: alice@example.test\r\nSubject: second for curl\r\n\r\nanother body\r\n"
contents = [open(deliver(m), "rb").read() for m in (m1, m2)]


def curl(*args, user="%s:secret" % ALICE, check=True):
    cmd = [CURL, "-sS", "--max-time", "20"] + (["--user", user] if user else []) + list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if check:
        assert p.returncode == 0, ("curl failed", cmd, p.returncode, p.stderr.decode(errors="replace"))
    return p


with step("curl imap:// lists the folders"):
    out = curl(BASE + "/").stdout
    lines = out.split(b"\r\n")
    names = set()
    for l in lines:
        if l:
            m = re.match(rb'\* LIST \(([^)]*)\) "/" "?([^"]*)"?$', l)
            assert m, l
            names.add(m.group(2).decode())
    assert names == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}, out

with step("curl fetches a message by UID byte for byte (URL form)"):
    for uid in (1, 2):
        out = curl(BASE + "/INBOX;UID=%d" % uid).stdout
        assert out == contents[uid - 1], ("UID %d" % uid, out[-200:], contents[uid - 1][-200:])
    out = curl(BASE + "/INBOX;UID=1;SECTION=TEXT").stdout
    assert out == b"line one\r\nline two\r\n", out
    out = curl(BASE + "/INBOX;UID=2;SECTION=HEADER.FIELDS%20(SUBJECT)").stdout
    assert out == b"Subject: second for curl\r\n\r\n", out
    out = curl(SBASE + "/INBOX;UID=1;SECTION=1", "-k").stdout
    assert out == b"line one\r\nline two\r\n", out
    # A partial fetch (RFC 5092 ;PARTIAL=origin.length).
    out = curl(BASE + "/INBOX;UID=1;PARTIAL=0.20").stdout
    assert out == contents[0][:20], out

with step("curl -X 'UID FETCH 1 BODY[]' gets the FETCH response with the message's size"):
    # curl prints the untagged lines of a custom command, not the literal
    # data after them (lib/imap.c): the size announced must be exact.
    out = curl(BASE + "/INBOX", "-X", "UID FETCH 1 BODY[]", "-v")
    assert out.stdout == b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(contents[0]), out.stdout[:200]
    err = out.stderr.decode(errors="replace")
    assert re.search(r"< A\d+ OK", err.split("UID FETCH 1 BODY[]", 1)[1]), err[-1500:]
    out = curl(BASE + "/INBOX", "-X", "UID FETCH 1:* (UID FLAGS RFC822.SIZE)").stdout
    got = [l for l in out.split(b"\r\n") if l]
    assert len(got) == 2, out
    for i, l in enumerate(got, 1):
        f = fetch_items([l])[i]
        assert int(f["UID"]) == i and int(f["RFC822.SIZE"]) == len(contents[i - 1]), l

with step("curl SEARCH through the URL query"):
    out = curl(BASE + "/INBOX?SUBJECT%20second").stdout
    assert out == b"* SEARCH 2\r\n", out
    out = curl(BASE + "/INBOX?FROM%20carol").stdout
    assert out == b"* SEARCH 1\r\n", out

with step("curl custom commands: STORE and EXAMINE"):
    curl(BASE + "/INBOX", "-X", "STORE 2 +FLAGS (\\Flagged)")
    M = login()
    expect_ok(M, "SELECT INBOX")
    _, lines = expect_ok(M, "FETCH 2 (FLAGS)")
    assert "\\Flagged" in flagset(fetch_items(lines)[2]["FLAGS"]), lines
    M.logout()
    out = curl(BASE + "/", "-X", "EXAMINE INBOX").stdout
    assert b"* 2 EXISTS\r\n" in out and b"[UIDVALIDITY " in out, out

with step("curl -T uploads a message with APPEND"):
    upload = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: uploaded by curl\r\n\r\nsent copy\r\n"
    with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as f:
        f.write(upload)
    curl("-T", f.name, BASE + "/Sent")
    os.unlink(f.name)
    M = login()
    _, lines = expect_ok(M, "SELECT Sent")
    assert b"* 1 EXISTS" in lines, lines
    _, lines = expect_ok(M, "FETCH 1 (BODY.PEEK[] RFC822.SIZE)")
    f = fetch_items(lines)[1]
    assert f["BODY[]"] == upload and int(f["RFC822.SIZE"]) == len(upload), f
    M.logout()

with step("curl imaps:// verified with the cluster certificate, and STARTTLS with --ssl-reqd"):
    ca = store_path("tls", "self-signed.pem")
    out = curl("--cacert", ca, "--resolve", "mail.example.test:%d:%s" % (sport, shost), "imaps://mail.example.test:%d/INBOX;UID=2" % sport).stdout
    assert out == contents[1], out
    out = curl("--cacert", ca, "--resolve", "mail.example.test:%d:%s" % (port, host), "--ssl-reqd", "imap://mail.example.test:%d/INBOX;UID=1" % port, "-v")
    assert out.stdout == contents[0], out.stdout
    err = out.stderr.decode(errors="replace")
    assert "STARTTLS" in err and "SSL connection using" in err, err[-2000:]

with step("curl logs in with AUTHENTICATE PLAIN and an initial response (SASL-IR)"):
    p = curl("-v", "--sasl-ir", "--login-options", "AUTH=PLAIN", BASE + "/INBOX;UID=1")
    assert p.stdout == contents[0]
    err = p.stderr.decode(errors="replace")
    assert re.search(r"> A\d+ AUTHENTICATE PLAIN \S+", err), err[-2000:]
    p = curl("-v", "--login-options", "AUTH=PLAIN", BASE + "/INBOX;UID=2")
    assert p.stdout == contents[1]

with step("curl with a wrong password fails with a login error"):
    p = curl(BASE + "/", user="%s:wrong" % ALICE, check=False)
    assert p.returncode == 67, (p.returncode, p.stderr)  # CURLE_LOGIN_DENIED

finish()
