"""Shared helpers of the IMAP scripts: steps that report "ok <step>" or
"FAIL <step>" and go on, exact responses read through imaplib's own
connection, a parser for IMAP response data, and delivery over SMTP that
does not look at the Maildir (an IMAP session may be moving files).

KEEP=1 in the environment keeps the client scripts' work directories (and
neomutt's debug log) for a look after a failure."""
import contextlib
import datetime
import imaplib
import os
import re
import smtplib
import sys
import time
import traceback

from mailtest import addr, insecure_tls, ok  # noqa: F401 (re-exported)

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORDS = {ALICE: "secret", BOB: "hunter2"}

_failed = []


@contextlib.contextmanager
def step(name):
    """One step: "ok NAME" when the block ends, "FAIL NAME" with the
    reason when an assertion (or anything else) fails in it; the script
    goes on with the next step and `finish` exits non-zero."""
    t0 = time.monotonic()
    try:
        yield
    except Exception:
        _failed.append(name)
        print("FAIL %s (after %.2fs):" % (name, time.monotonic() - t0), flush=True)
        for l in traceback.format_exc().rstrip().splitlines():
            print("    " + l, flush=True)
    else:
        ok(name)


def finish():
    if _failed:
        print("%d step(s) failed: %s" % (len(_failed), "; ".join(_failed)), flush=True)
        sys.exit(1)
    print("all steps passed", flush=True)


def send(msg, rcpts=(ALICE,), sender="carol@remote.test", via="SMTP"):
    """Delivers `msg` over SMTP (port from the environment variable
    `via`); the node has stored it when the reply to DATA comes."""
    s = smtplib.SMTP(*addr(via), timeout=20)
    refused = s.sendmail(sender, list(rcpts), msg)
    s.quit()
    assert not refused, refused


class SockReader:
    """What imaplib reads through (its `file`): unlike socket.makefile(),
    a read that times out leaves the reader usable, so that a script can
    wait for an untagged response with a timeout and go on reading."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def readline(self, limit=-1):
        while b"\n" not in self.buf:
            if 0 < limit <= len(self.buf) or not self._fill():
                break
        i = self.buf.find(b"\n")
        n = len(self.buf) if i < 0 else i + 1
        if limit > 0:
            n = min(n, limit)
        line, self.buf = self.buf[:n], self.buf[n:]
        return line

    def read(self, n):
        while len(self.buf) < n and self._fill():
            pass
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def close(self):
        pass


def wrap(M):
    """Makes imaplib read through a SockReader (again after STARTTLS)."""
    M.file = SockReader(M.sock)
    return M


def connect(name="IMAP", **kw):
    M = imaplib.IMAP4(*addr(name), timeout=kw.get("timeout", 20))
    return wrap(M)


def login(user=ALICE, name="IMAP"):
    M = connect(name)
    typ, data = M.login(user, PASSWORDS[user])
    assert typ == "OK", (typ, data)
    return M


# --- Exact responses. -----------------------------------------------------

_LITERAL = re.compile(rb"\{(\d+)\}$")


def read_response_line(M):
    """One response line with its literals, as bytes without the final
    CRLF (literal data inline, each literal announcement kept)."""
    out = b""
    while True:
        line = M.readline()
        if not line:
            raise EOFError("connection closed; so far %r" % out)
        assert line.endswith(b"\r\n"), "line not ended by CRLF: %r" % line
        line = line[:-2]
        out += line
        m = _LITERAL.search(line)
        if not m:
            return out
        n = int(m.group(1))
        data = M.read(n)
        assert len(data) == n, (n, len(data))
        out += b"\r\n" + data


def raw(M, command, literal=None):
    """Sends `command` (str or bytes) with a new tag, and reads up to its
    tagged response. Returns (tagged line without the tag, [untagged and
    continuation lines]). Untagged lines are as sent, literals inline.
    A `literal` (bytes) is sent after the command line, which must end in
    a synchronizing `{n}` (sent after the continuation) or `{n+}`."""
    tag = M._new_tag()
    if isinstance(command, str):
        command = command.encode()
    M.send(tag + b" " + command + b"\r\n")
    lines = []
    sent_literal = literal is None
    if literal is not None and command.endswith(b"+}"):
        M.send(literal + b"\r\n")
        sent_literal = True
    while True:
        l = read_response_line(M)
        if l.startswith(tag + b" "):
            return l[len(tag) + 1:], lines
        if l.startswith(b"+") and not sent_literal:
            M.send(literal + b"\r\n")
            sent_literal = True
        lines.append(l)


def expect_ok(M, command, literal=None):
    status, lines = raw(M, command, literal)
    assert status.startswith(b"OK"), (command, status, lines)
    return status, lines


def untagged(lines, kind):
    """The untagged lines `* KIND ...` (KIND after an optional number),
    without the `* ` prefix."""
    out = []
    for l in lines:
        if not l.startswith(b"* "):
            continue
        parts = l[2:].split(b" ", 2)
        if parts[0].upper() == kind.encode().upper():
            out.append(l[2:])
        elif len(parts) > 1 and parts[0].isdigit() and parts[1].upper() == kind.encode().upper():
            out.append(l[2:])
    return out


def read_until(M, pred, timeout):
    """Reads response lines until one satisfies `pred`; returns (the lines
    read, the time taken). Raises on a timeout."""
    sock = M.sock
    old = sock.gettimeout()
    t0 = time.monotonic()
    got = []
    try:
        while True:
            left = timeout - (time.monotonic() - t0)
            assert left > 0, "timed out after %.1fs waiting; got %r" % (timeout, got)
            sock.settimeout(left)
            try:
                l = read_response_line(M)
            except (TimeoutError, OSError) as e:
                raise AssertionError("timed out after %.1fs (%s); got %r" % (timeout, e, got))
            got.append(l)
            if pred(l):
                return got, time.monotonic() - t0
    finally:
        sock.settimeout(old)


def quiet_for(M, seconds):
    """The lines the server sends within `seconds` (none expected, usually)."""
    sock = M.sock
    old = sock.gettimeout()
    got = []
    end = time.monotonic() + seconds
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return got
            sock.settimeout(left)
            try:
                got.append(read_response_line(M))
            except (TimeoutError, OSError):
                return got
    finally:
        sock.settimeout(old)


# --- IMAP data (RFC 3501 9). ----------------------------------------------

class Atom(str):
    """An atom (or number, or flag) as opposed to a string."""


def parse(data):
    """Parses IMAP response data into Python values: lists for
    parenthesised lists, bytes for quoted strings and literals, Atom for
    atoms and numbers (a section `BODY[...]<n>` is one atom), None for
    NIL. Returns a list of the top-level values."""
    pos = 0
    n = len(data)

    def value():
        nonlocal pos
        c = data[pos:pos + 1]
        if c == b"(":
            pos += 1
            items = []
            while True:
                skip()
                if data[pos:pos + 1] == b")":
                    pos += 1
                    return items
                items.append(value())
        if c == b'"':
            pos += 1
            out = bytearray()
            while data[pos:pos + 1] != b'"':
                if data[pos:pos + 1] == b"\\":
                    pos += 1
                out += data[pos:pos + 1]
                pos += 1
                assert pos < n, "unterminated string"
            pos += 1
            return bytes(out)
        if c == b"{":
            end = data.index(b"}", pos)
            size = int(data[pos + 1:end].rstrip(b"+"))
            assert data[end + 1:end + 3] == b"\r\n", "literal without CRLF"
            start = end + 3
            pos = start + size
            return data[start:pos]
        start = pos
        depth = 0
        while pos < n:
            ch = data[pos:pos + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in (b" ", b")", b"("):
                break
            pos += 1
        word = data[start:pos].decode("latin-1")
        assert word, "empty atom at %d in %r" % (start, data[:200])
        return None if word.upper() == "NIL" else Atom(word)

    def skip():
        nonlocal pos
        while data[pos:pos + 1] == b" ":
            pos += 1

    out = []
    while True:
        skip()
        if pos >= n:
            return out
        out.append(value())


def fetch_items(lines):
    """{seq: {ITEM-NAME (upper case): value}} from untagged FETCH lines
    (several FETCH responses for one message are merged)."""
    res = {}
    for l in lines:
        m = re.match(rb"\* (\d+) FETCH ", l)
        if not m:
            continue
        vals = parse(l[m.end():])
        assert len(vals) == 1 and isinstance(vals[0], list), l[:200]
        kv = vals[0]
        assert len(kv) % 2 == 0, kv
        d = res.setdefault(int(m.group(1)), {})
        for k, v in zip(kv[::2], kv[1::2]):
            d[k.upper()] = v
    return res


def search_result(lines):
    s = untagged(lines, "SEARCH")
    assert len(s) == 1, lines
    return [int(x) for x in s[0].split()[1:] if x.isdigit()]


def flagset(v):
    return set(str(x) for x in v)


def imap_date(d):
    """An RFC 3501 date (SEARCH SINCE etc.)."""
    return "%d-%s-%d" % (d.day, ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][d.month - 1], d.year)


def today_utc():
    return datetime.datetime.now(datetime.timezone.utc).date()


def parse_internaldate(s):
    """INTERNALDATE "dd-Mon-yyyy hh:mm:ss +zzzz" as an aware datetime."""
    if isinstance(s, bytes):
        s = s.decode()
    return datetime.datetime.strptime(s.strip(), "%d-%b-%Y %H:%M:%S %z")


def message_of(path):
    with open(path, "rb") as f:
        return f.read()


def body_of(message):
    return message[message.index(b"\r\n\r\n") + 4:]


def header_of(message):
    return message[:message.index(b"\r\n\r\n") + 4]


def store_path(*parts):
    return os.path.join(os.environ["STORE"], *parts)
