#!/usr/bin/env python3
"""A mail user's client for the system test, run on the LAN (inside the
layout's network namespace) with Python's own smtplib and poplib.

    mailclient.py send HOST FROM TO TOKEN
        Delivers one message whose subject and body carry TOKEN; prints
        "250" when the server took it, else the SMTP reply code and text.
    mailclient.py pop3 HOST USER PASSWORD
        Logs in (after STLS) and prints the subject of every message in the
        maildrop, one a line; deletes nothing.
    mailclient.py auth-results HOST USER PASSWORD TOKEN
        Logs in like pop3 and prints the Authentication-Results header
        field(s) of the message whose subject is TOKEN, unfolded, one a
        line; nothing when it has none.
    mailclient.py imap-file HOST USER PASSWORD TOKEN FOLDER
        Logs in over IMAP (port 143, after STARTTLS), finds the message
        whose subject is TOKEN in INBOX, reads it whole (which sets \\Seen),
        flags it \\Flagged and MOVEs it into FOLDER; prints the UID it has
        there (from COPYUID) and its flags in FOLDER, as "UID FLAGS...".
    mailclient.py imap-show HOST USER PASSWORD TOKEN FOLDER
        Logs in over IMAP and prints "UID FLAGS..." of the message whose
        subject is TOKEN in FOLDER (flags sorted), or "missing".
    mailclient.py admin HOST PASSWORD
        Logs in to the box's HTTPS admin page (port 443) with the admin
        password and prints each node of the dashboard's live set as
        "NODE STATE"; prints "refused" when the login is refused.
    mailclient.py admin-restart HOST PASSWORD SERVICE
        Logs in to the admin page and restarts SERVICE from its actions
        page; prints the HTTP status and the page's answer.
    mailclient.py admin-poweroff HOST PASSWORD
        The same for the actions page's power-off button.

Every network operation has a timeout; exit status 0 means the exchange
completed, whatever the server answered.
"""
import email
import http.client
import imaplib
import poplib
import re
import urllib.parse
import smtplib
import ssl
import sys

TIMEOUT = 60


def send(host, sender, rcpt, token):
    msg = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {token}\r\n"
        f"Message-ID: <{token}@client.example.test>\r\n\r\n"
        f"This message is {token}.\r\n"
    )
    try:
        with smtplib.SMTP(host, 25, timeout=TIMEOUT) as s:
            s.ehlo("client.example.test")
            s.sendmail(sender, [rcpt], msg)
        print("250")
    except smtplib.SMTPResponseException as e:
        print(f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        print(f"{code} {text.decode(errors='replace')}")
    except (OSError, smtplib.SMTPException) as e:
        print(f"000 {type(e).__name__}: {e}")


def insecure_context():
    """The cluster's certificate is self-signed; the test checks mail, not PKI."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def messages(host, user, password):
    """Every message of the maildrop, read over POP3 with STLS."""
    ctx = insecure_context()
    p = poplib.POP3(host, 110, timeout=TIMEOUT)
    try:
        p.stls(context=ctx)
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        out = []
        for i in range(1, count + 1):
            _, lines, _ = p.retr(i)
            out.append(email.message_from_bytes(b"\r\n".join(lines)))
        return out
    finally:
        p.quit()


def pop3(host, user, password):
    for m in messages(host, user, password):
        print(m.get("Subject", ""))


def auth_results(host, user, password, token):
    for m in messages(host, user, password):
        if m.get("Subject", "") == token:
            for v in m.get_all("Authentication-Results", []):
                print(" ".join(str(v).split()))
            break


def imap_login(host, user, password):
    # HOST or HOST:PORT (a node on a development port).
    host, _, port = host.partition(":")
    m = imaplib.IMAP4(host, int(port or 143), timeout=TIMEOUT)
    m.starttls(ssl_context=insecure_context())
    m.login(user, password)
    return m


def imap_find(m, folder, token):
    typ, _ = m.select(folder)
    if typ != "OK":
        raise SystemExit(f"SELECT {folder}: {typ}")
    typ, data = m.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", token)
    uids = data[0].split() if typ == "OK" and data and data[0] else []
    return uids[0].decode() if uids else None


def imap_flags(m, uid):
    typ, data = m.uid("FETCH", uid, "(FLAGS)")
    text = b" ".join(d if isinstance(d, bytes) else d[0] for d in data if d).decode()
    flags = re.search(r"FLAGS \(([^)]*)\)", text)
    return sorted(flags.group(1).split()) if flags else []


def imap_file(host, user, password, token, folder):
    m = imap_login(host, user, password)
    uid = imap_find(m, "INBOX", token)
    if uid is None:
        raise SystemExit(f"{token} is not in INBOX")
    typ, data = m.uid("FETCH", uid, "(BODY[])")
    if typ != "OK" or token.encode() not in data[0][1]:
        raise SystemExit(f"FETCH BODY[] of {token}: {typ} {data!r}")
    m.uid("STORE", uid, "+FLAGS", "(\\Flagged)")
    typ, data = m.uid("MOVE", uid, folder)
    if typ != "OK":
        raise SystemExit(f"MOVE: {typ} {data!r}")
    copyuid = re.search(rb"COPYUID \d+ \d+ (\d+)", b" ".join(x for x in m.untagged_responses.get("OK", []) + data if isinstance(x, bytes)))
    m.select(folder)
    new_uid = copyuid.group(1).decode() if copyuid else imap_find(m, folder, token)
    print(" ".join([new_uid] + imap_flags(m, new_uid)))
    m.logout()


def imap_show(host, user, password, token, folder):
    m = imap_login(host, user, password)
    uid = imap_find(m, folder, token)
    print("missing" if uid is None else " ".join([uid] + imap_flags(m, uid)))
    m.logout()


def admin(host, password, restart=None, poweroff=False):
    ctx = insecure_context()

    def request(method, path, body=None, cookies=None):
        c = http.client.HTTPSConnection(host, 443, context=ctx, timeout=TIMEOUT)
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        jar = {}
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                jar[name] = rest.split(";")[0]
        c.close()
        return r.status, text, jar

    _, page, jar = request("GET", "/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, _, got = request("POST", "/login", urllib.parse.urlencode({"csrf": token, "password": password}), jar)
    if status != 303 or "mailfort_session" not in got:
        print("refused")
        return
    session = {"mailfort_session": got["mailfort_session"]}
    if restart or poweroff:
        _, page, _ = request("GET", "/actions", cookies=session)
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        if restart:
            status, page, _ = request("POST", "/actions/restart", urllib.parse.urlencode({"csrf": token, "service": restart}), session)
        else:
            status, page, _ = request("POST", "/actions/poweroff", urllib.parse.urlencode({"csrf": token, "confirm": "yes"}), session)
        m = re.search(r'id="result"[^>]*>(.*?)</', page, re.S)
        print(status, m.group(1).strip() if m else page[:300])
        return
    _, page, _ = request("GET", "/", cookies=session)
    for node, state in re.findall(r'<tr id="node-([a-z0-9-]+)" class="[^"]*state-(live|dead|stop)', page):
        print(node, state)


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "send":
        send(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "pop3":
        pop3(*sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == "auth-results":
        auth_results(*sys.argv[2:])
    elif len(sys.argv) == 7 and sys.argv[1] == "imap-file":
        imap_file(*sys.argv[2:])
    elif len(sys.argv) == 7 and sys.argv[1] == "imap-show":
        imap_show(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "admin":
        admin(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "admin-restart":
        admin(sys.argv[2], sys.argv[3], restart=sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "admin-poweroff":
        admin(sys.argv[2], sys.argv[3], poweroff=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
