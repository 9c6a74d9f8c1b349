"""POP3 where plaintext logins need TLS (RFC 2595): CAPA before and after
STLS, refusals without TLS, STLS command injection, and POP3S with the
cluster's certificate."""
import base64
import os
import poplib
import socket
import ssl

from mailtest import Raw, addr, deliver, insecure_tls, ok

STORE = os.environ["STORE"]
ALICE = "alice@example.test"

msg = b"Subject: over tls\r\n\r\nsecret content\r\n.dotted\r\n"
path = deliver(msg)
content = open(path, "rb").read()
uid = os.path.basename(path).encode()


def refused(fn, *args):
    try:
        r = fn(*args)
    except poplib.error_proto as e:
        return e.args[0]
    raise AssertionError("expected -ERR, got %r" % (r,))


# Without TLS: STLS offered, USER and SASL not (RFC 2595 2, RFC 2449 6.8).
p = poplib.POP3(*addr("POP3"), timeout=20)
caps = p.capa()
assert "STLS" in caps, caps
assert "USER" not in caps and "SASL" not in caps, caps
assert "TOP" in caps and "UIDL" in caps and "RESP-CODES" in caps
e = refused(p.user, ALICE)
assert e.startswith(b"-ERR [AUTH]"), e
assert refused(p.pass_, "secret").startswith(b"-ERR")
assert refused(p.stat).startswith(b"-ERR")
p.quit()

r = Raw("POP3")
r.line()
r.send(b"AUTH\r\n")
assert r.line() == b"+OK"
assert r.line() == b".", "no mechanism may be listed without TLS"
b64 = base64.b64encode(("\0%s\0secret" % ALICE).encode())
r.send(b"AUTH PLAIN " + b64 + b"\r\n")
assert r.line().startswith(b"-ERR [AUTH]")
r.send(b"AUTH PLAIN\r\n")
assert r.line().startswith(b"-ERR [AUTH]"), "no continuation without TLS"
r.send(b"QUIT\r\n")
assert r.line().startswith(b"+OK")
r.close()
ok("plaintext login refused without TLS")

# STLS, then USER/PASS and SASL are offered and STLS is not.
p = poplib.POP3(*addr("POP3"), timeout=20)
p.stls(context=insecure_tls())
caps = p.capa()
assert "STLS" not in caps, caps
assert "USER" in caps and caps["SASL"] == ["PLAIN"], caps
assert refused(p._shortcmd, "STLS").startswith(b"-ERR")
p.user(ALICE)
assert p.pass_("secret") == b"+OK maildrop has 1 messages (%d octets)" % len(content)
assert p.uidl()[1] == [b"1 " + uid]
resp, lines, _ = p.retr(1)
assert b"\r\n".join(lines) + b"\r\n" == content
assert refused(p._shortcmd, "STLS").startswith(b"-ERR")
p.quit()
ok("STLS then USER/PASS")

# AUTH PLAIN under STLS.
p = poplib.POP3(*addr("POP3"), timeout=20)
p.stls(context=insecure_tls())
assert p._shortcmd("AUTH PLAIN " + b64.decode()).startswith(b"+OK maildrop has 1 messages")
p.quit()
ok("STLS then AUTH PLAIN")

# Commands pipelined after STLS in plaintext are discarded, not run inside
# TLS (the POP3 form of CVE-2011-0411).
r = Raw("POP3")
r.line()
r.send(b"STLS\r\nUSER " + ALICE.encode() + b"\r\n")
assert r.line().startswith(b"+OK")
tls = insecure_tls().wrap_socket(r.sock, server_hostname="mail.example.test")
tls.settimeout(20)
tls.sendall(b"PASS secret\r\n")
reply = b""
while b"\r\n" not in reply:
    chunk = tls.recv(4096)
    assert chunk, "closed"
    reply += chunk
assert reply.startswith(b"-ERR"), "a USER sent before the handshake was acted on: %r" % reply
tls.close()
ok("plaintext after STLS discarded")

# POP3S (RFC 8314): the certificate verifies against the cluster's own
# certificate for the cluster's host name.
ctx = ssl.create_default_context(cafile=os.path.join(STORE, "tls", "self-signed.pem"))
host, port = addr("POP3S")
v = ctx.wrap_socket(socket.create_connection((host, port), timeout=20), server_hostname="mail.example.test")
greeting = b""
while b"\r\n" not in greeting:
    chunk = v.recv(4096)
    assert chunk, "closed before the greeting"
    greeting += chunk
assert greeting.startswith(b"+OK"), greeting
v.sendall(b"QUIT\r\n")
v.close()
p = poplib.POP3_SSL(host, port, context=insecure_tls(), timeout=20)
caps = p.capa()
assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN"], caps
p.user(ALICE)
assert p.pass_("secret").startswith(b"+OK maildrop has 1 messages")
assert p.uidl()[1] == [b"1 " + uid]
resp, lines, _ = p.retr(1)
assert b"\r\n".join(lines) + b"\r\n" == content
assert p.quit().startswith(b"+OK")
ok("POP3S with the cluster certificate")
