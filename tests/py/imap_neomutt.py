"""neomutt in a pseudo-terminal as a user drives it: the IMAP inbox's
index shows the subjects; opening a message shows its body and marks it
\\Seen on the server; a flag and a deletion made in neomutt reach the
server when the mailbox is synced; and the inbox over IMAPS with the
cluster certificate trusted."""
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import termios
import tempfile
import time

from mailtest import deliver
from imap_common import (ALICE, addr, expect_ok, fetch_items, finish, flagset, login, raw, step, store_path)

NEOMUTT = shutil.which("neomutt")
assert NEOMUTT, "neomutt is not installed (Debian package neomutt)"
work = tempfile.mkdtemp(prefix="neomutt-")
host, port = addr("IMAP")
shost, sport = addr("IMAPS")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>78]|[\x0e\x0f]")


def muttrc(tls):
    certs = os.path.join(work, "certificates")
    shutil.copy(store_path("tls", "self-signed.pem"), certs)
    url = ("imaps://%s:%d/" % (shost, sport)) if tls else ("imap://%s:%d/" % (host, port))
    text = ('set folder="%s"\nset spoolfile="+INBOX"\nset imap_user="%s"\nset imap_pass="secret"\n'
            'set ssl_starttls=no\nset ssl_force_tls=no\nset certificate_file="%s"\nset ssl_verify_host=no\n'
            'set header_cache=""\nset message_cachedir=""\nset tmpdir="%s"\nset mail_check=1\nset timeout=1\n'
            'set sort=date-sent\nset index_format="[%%s]"\nset pager_stop=yes\nset quit=yes\nset move=no\nset delete=yes\n'
            'set mark_old=no\nset confirmappend=no\nset wait_key=no\nset beep=no\nset imap_check_subscribed=no\n'
            'set help=no\nset status_on_top=no\nset record=""\n'
            % (url, ALICE, certs, work))
    path = os.path.join(work, "muttrc-%s" % ("tls" if tls else "plain"))
    with open(path, "w") as f:
        f.write(text)
    return path


class Term:
    """neomutt on a pty of 120x30; `screen` is all it printed, without the
    terminal's control sequences."""

    def __init__(self, rc):
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.update(TERM="xterm", HOME=work, LANG="C.UTF-8", LC_ALL="C.UTF-8", COLUMNS="120", LINES="30")
            os.execv(NEOMUTT, [NEOMUTT, "-n", "-F", rc] + (["-d", "5", "-l", os.path.join(work, "debug.log")] if os.environ.get("KEEP") else []))
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self.raw = b""

    def read(self, t=0.2):
        end = time.monotonic() + t
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                return
            try:
                d = os.read(self.fd, 65536)
            except OSError:
                return
            if not d:
                return
            self.raw += d

    def screen(self):
        return ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    def wait_for(self, text, timeout=15):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.read(0.2)
            if text in self.screen():
                return
        raise AssertionError("neomutt did not show %r within %ss; screen so far:\n%s" % (text, timeout, self.screen()[-3000:]))

    def mark(self):
        """Forget the output so far (to wait for what comes next)."""
        self.read(0.3)
        self.raw = b""

    def key(self, k):
        os.write(self.fd, k.encode() if isinstance(k, str) else k)

    def quit(self, timeout=15):
        self.key("q")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.read(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("neomutt did not quit; screen:\n%s" % self.screen()[-2000:])


def server():
    M = login()
    status, lines = raw(M, "EXAMINE INBOX")
    assert status.startswith(b"OK"), status
    out = {}
    if b"* 0 EXISTS" not in lines:
        _, lines = expect_ok(M, "FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])")
        for v in fetch_items(lines).values():
            subj = list(x for k, x in v.items() if k.startswith("BODY["))[0]
            out[subj.decode().strip()[len("Subject: "):]] = flagset(v["FLAGS"]) - {"\\Recent"}
    M.logout()
    return out


subjects = ["neomutt alpha", "neomutt beta", "neomutt gamma"]
for i, s in enumerate(subjects):
    deliver(b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: %s\r\nDate: Mon, 0%d Jan 2024 10:00:00 +0000\r\n\r\n"
            b"body of %s\r\n" % (s.encode(), i + 1, s.encode()))

with step("neomutt opens the IMAP inbox and lists the subjects"):
    t = Term(muttrc(False))
    try:
        for s in subjects:
            t.wait_for("[%s]" % s)
    finally:
        code = t.quit()
    assert code == 0, (code, t.screen()[-2000:])
    assert server() == {s: set() for s in subjects}, ("neomutt changed flags just by looking", server())

with step("opening a message in neomutt shows its body and marks it \\Seen"):
    t = Term(muttrc(False))
    try:
        t.wait_for("[neomutt gamma]")
        t.mark()
        t.key("=\r")  # the first message of the index (sorted by date: alpha)
        t.wait_for("body of neomutt alpha")
        t.key("q")   # back to the index
        t.read(0.5)
    finally:
        code = t.quit()
    assert code == 0, code
    s = server()
    assert s == {"neomutt alpha": {"\\Seen"}, "neomutt beta": set(), "neomutt gamma": set()}, s

with step("a flag and a deletion made in neomutt reach the server on sync"):
    t = Term(muttrc(False))
    try:
        t.wait_for("[neomutt gamma]")
        # The index opens on the first unread message; "=" goes to the first.
        t.key("=j")  # to beta
        t.key("F")   # flag it
        t.key("=jj") # to gamma
        t.key("d")   # delete it
        t.mark()
        t.key("$")   # sync the mailbox: flags stored, deleted ones expunged
        t.read(1.5)
    finally:
        code = t.quit()
    assert code == 0, code
    s = server()
    assert s == {"neomutt alpha": {"\\Seen"}, "neomutt beta": {"\\Flagged"}}, s

with step("neomutt over IMAPS with the cluster certificate trusted"):
    t = Term(muttrc(True))
    try:
        t.wait_for("[neomutt beta]")
        assert "neomutt gamma" not in t.screen()
    finally:
        code = t.quit()
    assert code == 0, code

shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print("kept", work)
finish()
