"""A node whose store fails says 421 (SMTP) and -ERR [SYS/TEMP] (POP3),
never 250; it resumes by itself when the store answers again."""
import os
import poplib
import smtplib
import time

from mailtest import addr, ok, wait_for

PHASE = os.environ["PHASE"]


def greeting():
    try:
        s = smtplib.SMTP(*addr("SMTP"), timeout=10)
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error
    code, msg = s.noop()
    s.close()
    return 220, msg


if PHASE == "failed":
    wait_for(lambda: greeting()[0] == 421, timeout=20, what="421 from node2")
    code, msg = greeting()
    assert code == 421 and msg.startswith(b"4.3.0"), (code, msg)
    ok("node2 refuses mail with 421 4.3.0")
    p = poplib.POP3(*addr("POP3"), timeout=10)
    p.user("alice@example.test")
    try:
        p.pass_("secret")
        raise AssertionError("login accepted without a store")
    except poplib.error_proto as e:
        assert b"[SYS/TEMP]" in e.args[0], e
    ok("node2 POP3 says [SYS/TEMP]")
    # The other node, on the healthy store, still accepts.
    host, port = os.environ["OTHER_SMTP"].rsplit(":", 1)
    s = smtplib.SMTP(host, int(port), timeout=10)
    s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: via node1\r\n\r\nok\r\n")
    s.quit()
    ok("node1 still accepts")
elif PHASE == "recovered":
    wait_for(lambda: greeting()[0] == 220, timeout=20, what="node2 to accept again")
    s = smtplib.SMTP(*addr("SMTP"), timeout=10)
    s.sendmail("x@remote.test", ["alice@example.test"], b"Subject: via node2\r\n\r\nback\r\n")
    s.quit()
    p = poplib.POP3(*addr("POP3"), timeout=10)
    p.user("alice@example.test")
    p.pass_("secret")
    assert p.stat()[0] == 2, p.stat()
    p.quit()
    ok("node2 accepts mail again")
