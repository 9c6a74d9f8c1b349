"""Submission (RFC 6409) with STARTTLS and implicit TLS (RFC 8314), AUTH
PLAIN and LOGIN (RFC 4954)."""
import os
import smtplib
import subprocess
import time

from mailtest import Raw, addr, insecure_tls, ok

STORE = os.environ["STORE"]
MAILFORT = os.environ["MAILFORT"]
PLAINTEXT = os.environ.get("PLAINTEXT") == "1"

if not PLAINTEXT:
    # AUTH is not offered before TLS, and refused if tried.
    s = smtplib.SMTP(*addr("SUBMISSION"))
    s.ehlo()
    assert not s.has_extn("auth"), s.esmtp_features
    assert s.has_extn("starttls")
    code, msg = s.docmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=")
    assert code == 538, (code, msg)
    # MAIL needs authentication on the submission port.
    assert s.docmd("MAIL FROM:<alice@example.test>")[0] == 530
    s.starttls(context=insecure_tls())
    s.ehlo()
    assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
    assert not s.has_extn("starttls")
    s.login("alice@example.test", "secret")
    s.quit()
    ok("STARTTLS then AUTH")

    # STARTTLS command injection (CVE-2011-0411): plaintext pipelined after
    # STARTTLS must be discarded, not executed inside TLS.
    r = Raw("SUBMISSION")
    r.reply()
    r.cmd("EHLO inject.example")
    r.send(b"STARTTLS\r\nRSET\r\n")
    assert r.reply()[0] == 220
    import ssl
    tls = insecure_tls().wrap_socket(r.sock, server_hostname="mail.example.test")
    tls.sendall(b"NOOP\r\n")
    first = tls.recv(1000)
    assert first.startswith(b"250 2.0.0"), first
    tls.sendall(b"QUIT\r\n")
    assert tls.recv(1000).startswith(b"221")
    ok("STARTTLS injection discarded")

# Implicit TLS on the submissions port; AUTH LOGIN.
s = smtplib.SMTP_SSL(*addr("SUBMISSIONS"), context=insecure_tls())
s.ehlo()
s.esmtp_features["auth"] = "LOGIN"
s.login("alice@example.test", "secret")
alice_new = os.path.join(STORE, "mail", "example.test", "alice", "new")
bob_new = os.path.join(STORE, "mail", "example.test", "bob", "new")
b0 = len(os.listdir(bob_new)) if os.path.isdir(bob_new) else 0
refused = s.sendmail("alice@example.test", ["bob@example.test", "friend@remote.test"], b"Subject: from alice\r\n\r\nhi bob\r\n")
assert refused == {}, refused
assert len(os.listdir(bob_new)) == b0 + 1
ok("implicit TLS, AUTH LOGIN, local delivery")

# The foreign recipient is in the durable queue.
q = subprocess.run([MAILFORT, "queue", "list", "--store", STORE], capture_output=True, text=True, check=True).stdout
assert "friend@remote.test" in q and "alice@example.test" in q, q
ok("foreign recipient queued")

# A user sends as themselves only.
code, msg = s.docmd("MAIL FROM:<bob@example.test>")
assert code == 553 and msg.startswith(b"5.7.1"), (code, msg)
code, msg = s.docmd("MAIL FROM:<>")
assert code == 553, (code, msg)
s.quit()
ok("sender must be the authenticated user")

# Wrong password: 535 5.7.8, with a delay that grows.
s = smtplib.SMTP_SSL(*addr("SUBMISSIONS"), context=insecure_tls())
s.ehlo()
# One mechanism, so that each login() is one attempt.
s.esmtp_features["auth"] = "PLAIN"
delays = []
for i in range(2):
    t = time.time()
    try:
        s.login("alice@example.test", "wrong%d" % i)
        raise AssertionError("wrong password accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535 and e.smtp_error.startswith(b"5.7.8"), e
    delays.append(time.time() - t)
# The node's delays are 100 ms, then 200 ms (auth_fail_delay_ms = 100,
# doubling): each answer takes at least its delay. Comparing the two
# totals instead would measure the password check's own time, which a
# loaded machine varies by more than the 100 ms of growth.
assert delays[0] >= 0.09, delays
assert delays[1] >= 0.19, delays
ok("wrong password 535 5.7.8 with growing delay %s" % ["%.2f" % d for d in delays])
try:
    s.login("alice@example.test", "wrong3")
except smtplib.SMTPAuthenticationError:
    pass
# Third failure closes the session.
try:
    code = s.noop()[0]
    assert code == 421, code
except smtplib.SMTPServerDisconnected:
    pass
ok("too many failures close the session")

# Unknown user fails the same way.
s = smtplib.SMTP_SSL(*addr("SUBMISSIONS"), context=insecure_tls())
s.ehlo()
s.esmtp_features["auth"] = "PLAIN"
try:
    s.login("mallory@example.test", "secret")
    raise AssertionError("unknown user accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535
ok("unknown user 535")
