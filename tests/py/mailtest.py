"""Shared helpers for the client scripts: addresses from the environment,
TLS contexts that accept the cluster's self-signed certificate, and a raw
line-based client for byte-exact protocol checks."""
import os
import socket
import ssl
import time


def addr(name):
    host, port = os.environ[name].rsplit(":", 1)
    return host, int(port)


def insecure_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Raw:
    """A raw client: send bytes, read reply lines, for what smtplib hides."""

    def __init__(self, name, timeout=20, source=None):
        self.sock = socket.create_connection(addr(name), timeout=timeout, source_address=source)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self):
        """One SMTP reply (all lines); returns (code, [texts])."""
        lines = []
        while True:
            l = self.line()
            lines.append(l[4:].decode())
            if l[3:4] != b"-":
                return int(l[:3]), lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def closed(self, timeout=10):
        """True when the server closes the connection within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def wait_for(cond, timeout=10, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def ok(name):
    print("ok", name, flush=True)


def maildir_files(user, domain="example.test"):
    """Paths of a user's messages in new/ and cur/, sorted."""
    md = os.path.join(os.environ["STORE"], "mail", domain, user)
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, n) for n in os.listdir(d)]
    return sorted(out)


def deliver(msg, rcpts=("alice@example.test",), sender="carol@remote.test"):
    """Delivers `msg` (bytes with CRLF line ends) over the SMTP port with
    smtplib; returns the path of the new file in the first recipient's
    Maildir."""
    import smtplib
    user = rcpts[0].split("@")[0]
    before = set(maildir_files(user))
    s = smtplib.SMTP(*addr("SMTP"), timeout=20)
    refused = s.sendmail(sender, list(rcpts), msg)
    s.quit()
    assert not refused, refused
    new = sorted(set(maildir_files(user)) - before)
    assert len(new) == 1, new
    return new[0]


def pop3_stuff(data):
    """RFC 1939 3: the multi-line form of `data` (ending in CRLF) as a server
    sends it, with the terminating line."""
    lines = data.split(b"\r\n")
    assert lines[-1] == b"", "data must end with CRLF"
    out = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines[:-1])
    return out + b".\r\n"
