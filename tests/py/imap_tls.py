"""IMAP where plaintext logins need TLS (RFC 3501 6.2.1, 6.2.3, 7.2.1;
RFC 8314): LOGINDISABLED and no AUTH=PLAIN before STARTTLS, refusals,
STARTTLS and the capabilities after it, commands pipelined after
STARTTLS discarded, and IMAPS with the cluster's certificate."""
import base64
import imaplib
import socket
import ssl

from imap_common import (ALICE, addr, connect, expect_ok, fetch_items, finish, insecure_tls, raw, read_until, send, step, store_path,
                         untagged, wrap)

msg = b"From: carol@remote.test\r\nSubject: over tls\r\n\r\nsecret content\r\n"
send(msg)


def caps(M):
    _, lines = expect_ok(M, "CAPABILITY")
    c = untagged(lines, "CAPABILITY")
    assert len(c) == 1, lines
    return set(c[0].decode().upper().split()[1:])


with step("LOGINDISABLED and no AUTH=PLAIN before STARTTLS"):
    M = connect()
    assert M.welcome.startswith(b"* OK [CAPABILITY "), M.welcome
    c = caps(M)
    assert {"IMAP4REV1", "STARTTLS", "LOGINDISABLED"} <= c, c
    assert not any(x.startswith("AUTH=") for x in c), c
    M.logout()

with step("LOGIN and AUTHENTICATE PLAIN refused without TLS"):
    M = connect()
    status, _ = raw(M, "LOGIN alice@example.test secret")
    assert status.startswith(b"NO") or status.startswith(b"BAD"), status
    status, lines = raw(M, "AUTHENTICATE PLAIN " + base64.b64encode(("\0%s\0secret" % ALICE).encode()).decode())
    assert status.startswith(b"NO") or status.startswith(b"BAD"), status
    # No continuation is offered for a mechanism that is not available.
    tag = M._new_tag()
    M.send(tag + b" AUTHENTICATE PLAIN\r\n")
    got, _ = read_until(M, lambda l: l.startswith(tag + b" ") or l.startswith(b"+"), 5)
    assert got[-1].startswith(tag + b" NO") or got[-1].startswith(tag + b" BAD"), got
    status, _ = raw(M, "SELECT INBOX")
    assert status.startswith(b"BAD") or status.startswith(b"NO"), status
    M.logout()

with step("STARTTLS, then the capabilities change and LOGIN works"):
    M = connect()
    typ, data = M.starttls(ssl_context=insecure_tls())
    assert typ == "OK", (typ, data)
    wrap(M)
    c = caps(M)
    assert "STARTTLS" not in c and "LOGINDISABLED" not in c and "AUTH=PLAIN" in c, c
    status, _ = raw(M, "STARTTLS")
    assert status.startswith(b"BAD") or status.startswith(b"NO"), status
    typ, data = M.login(ALICE, "secret")
    assert typ == "OK", (typ, data)
    _, lines = expect_ok(M, "SELECT INBOX")
    assert b"* 1 EXISTS" in lines, lines
    _, lines = expect_ok(M, "FETCH 1 (BODY.PEEK[TEXT])")
    assert fetch_items(lines)[1]["BODY[TEXT]"] == b"secret content\r\n"
    M.logout()

with step("STARTTLS then AUTHENTICATE PLAIN"):
    M = connect()
    M.starttls(ssl_context=insecure_tls())
    wrap(M)
    status, _ = raw(M, "AUTHENTICATE PLAIN " + base64.b64encode(("\0%s\0secret" % ALICE).encode()).decode())
    assert status.startswith(b"OK"), status
    M.logout()

with step("commands pipelined after STARTTLS are not run inside TLS"):
    # The IMAP form of CVE-2011-0411: a command sent in plaintext behind
    # STARTTLS must be discarded, not read from the buffer after the
    # handshake.
    s = socket.create_connection(addr("IMAP"), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    s.sendall(b"a STARTTLS\r\nb LOGIN alice@example.test secret\r\n")
    l = f.readline()
    assert l.startswith(b"a OK"), l
    t = insecure_tls().wrap_socket(s, server_hostname="mail.example.test")
    t.settimeout(10)
    t.sendall(b"c CAPABILITY\r\n")
    got = b""
    while b"\r\nc " not in b"\r\n" + got or not got.endswith(b"\r\n"):
        chunk = t.recv(4096)
        assert chunk, ("closed", got)
        got += chunk
    assert not got.startswith(b"b ") and b"\r\nb " not in got, ("the LOGIN sent before the handshake was run", got)
    assert b"LOGINDISABLED" not in got and b"AUTH=PLAIN" in got, got
    t.sendall(b"d SELECT INBOX\r\n")
    got = b""
    while b"\r\nd " not in b"\r\n" + got or not got.endswith(b"\r\n"):
        chunk = t.recv(4096)
        assert chunk, ("closed", got)
        got += chunk
    assert b"d BAD" in got or b"d NO" in got, ("not logged in: the pipelined LOGIN must have been dropped", got)
    t.close()

with step("IMAPS with the cluster certificate"):
    ctx = ssl.create_default_context(cafile=store_path("tls", "self-signed.pem"))
    v = ctx.wrap_socket(socket.create_connection(addr("IMAPS"), timeout=20), server_hostname="mail.example.test")
    greeting = b""
    while b"\r\n" not in greeting:
        chunk = v.recv(4096)
        assert chunk, "closed before the greeting"
        greeting += chunk
    assert greeting.startswith(b"* OK [CAPABILITY ") and b"AUTH=PLAIN" in greeting and b"STARTTLS" not in greeting and b"LOGINDISABLED" not in greeting, greeting
    v.sendall(b"a LOGOUT\r\n")
    v.close()
    S = wrap(imaplib.IMAP4_SSL(*addr("IMAPS"), ssl_context=insecure_tls(), timeout=20))
    typ, _ = S.login(ALICE, "secret")
    assert typ == "OK"
    _, lines = expect_ok(S, "SELECT INBOX")
    assert b"* 1 EXISTS" in lines, lines
    _, lines = expect_ok(S, "FETCH 1 (BODY.PEEK[TEXT])")
    assert fetch_items(lines)[1]["BODY[TEXT]"] == b"secret content\r\n"
    S.logout()

finish()
