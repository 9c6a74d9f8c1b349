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
