"""The admin page in a real browser (headless Chromium through Selenium),
as an administrator uses it: log in, add a user (who then logs in over
POP3), change a shared setting (which a running node then follows), watch a
node die on the dashboard; and the refusals: a wrong password, a form
without its CSRF token, an expired session. Screenshots of the dashboard
and the users page go to $ARTIFACTS."""

import http.client
import os
import poplib
import signal
import smtplib
import ssl
import sys
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["ADMIN_URL"].rstrip("/")
ADMIN_PW = os.environ["ADMIN_PASSWORD"]
POP3_PORT = int(os.environ["POP3_PORT"])
SMTP_PORT = int(os.environ["SMTP_PORT"])
NODE2_PID = int(os.environ["NODE2_PID"])
ARTIFACTS = os.environ["ARTIFACTS"]
SESSION_IDLE = float(os.environ["SESSION_IDLE"])
# How long the dashboard may take to show a change of the live set
# (a dead node is declared after 2.5 s without a heartbeat).
LIVE_WAIT = 20
USER = "webuser@example.test"
USER_PW = "web-user-secret-1"


def step(msg):
    print(f"--- {msg}", flush=True)


def browser():
    opts = Options()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--ignore-certificate-errors", "--window-size=1280,1100", "--no-first-run"):
        opts.add_argument(a)
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


def submit(d, form_id, **fields):
    form = d.find_element(By.ID, form_id)
    for name, value in fields.items():
        el = form.find_element(By.NAME, name)
        if el.get_attribute("type") == "checkbox":
            if not el.is_selected():
                el.click()
        else:
            el.clear()
            el.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    # The click returns before the answer is loaded: wait for the page
    # with the form to go. Chromium reports a form of a page that is being
    # replaced either as stale or as "does not belong to the document":
    # both mean the old page is gone.
    def gone(_):
        try:
            form.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(d, 30).until(gone)


def result_text(d):
    try:
        return d.find_element(By.ID, "result").text
    except NoSuchElementException:
        return ""


def wait_row_state(d, node, state):
    deadline = time.time() + LIVE_WAIT
    while True:
        d.get(URL + "/")
        try:
            row = d.find_element(By.ID, f"node-{node}")
            if f"state-{state}" in row.get_attribute("class").split():
                return row
        except NoSuchElementException:
            pass
        if time.time() > deadline:
            raise AssertionError(f"{node} is not {state} on the dashboard:\n{d.page_source}")
        time.sleep(0.5)


def post_raw(path, fields, cookie):
    """A POST as a forged page would send it: the session cookie, but the
    form's token missing or wrong."""
    u = urllib.parse.urlsplit(URL)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    body = urllib.parse.urlencode(fields)
    c.request("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    r = c.getresponse()
    text = r.read().decode("utf-8", "replace")
    c.close()
    return r.status, text


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    d = browser()
    try:
        step("a wrong password is refused")
        d.get(URL + "/login")
        submit(d, "login", password="not-the-password")
        assert "wrong password" in d.page_source, d.page_source
        assert d.find_elements(By.ID, "login"), "the login form is gone after a wrong password"
        # The next attempt is possible after the delay the page names.
        time.sleep(2.5)

        step("log in")
        d.get(URL + "/login")
        submit(d, "login", password=ADMIN_PW)
        assert d.find_elements(By.ID, "live-set"), d.page_source
        cookie = d.get_cookie("mailfort_session")
        assert cookie and cookie.get("httpOnly") and cookie.get("secure"), cookie

        step("the dashboard shows both nodes live")
        wait_row_state(d, "node1", "live")
        wait_row_state(d, "node2", "live")
        assert d.find_elements(By.ID, "chart"), "no chart"
        d.save_screenshot(os.path.join(ARTIFACTS, "dashboard.png"))

        step("add a user")
        d.get(URL + "/users")
        submit(d, "user-add", address=USER, password=USER_PW, password2=USER_PW)
        assert "added " + USER in result_text(d), result_text(d) or d.page_source
        d.get(URL + "/users")
        assert USER in d.find_element(By.ID, "users").text
        d.save_screenshot(os.path.join(ARTIFACTS, "users.png"))

        step("the new user logs in over POP3")
        p = poplib.POP3("127.0.0.1", POP3_PORT, timeout=30)
        p.user(USER)
        p.pass_(USER_PW)
        count, _ = p.stat()
        assert count == 0, count
        p.quit()

        step("a bad value is refused and changes nothing")
        d.get(URL + "/settings")
        submit(d, "cluster-set-limits-max_recipients", value="5")
        assert "error" in result_text(d).lower(), result_text(d)

        step("change a shared setting; the running node follows")
        d.get(URL + "/settings")
        submit(d, "cluster-set-limits-max_message_size", value="2000000")
        assert "saved" in result_text(d), result_text(d)
        deadline = time.time() + LIVE_WAIT
        while True:
            s = smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=30)
            s.ehlo("browser-test.example")
            size = s.esmtp_features.get("size", "")
            s.quit()
            if size.strip() == "2000000":
                break
            assert time.time() < deadline, f"SIZE is still {size!r}"
            time.sleep(0.5)

        step("a form without its CSRF token is refused")
        jar = f"mailfort_session={cookie['value']}"
        status, body = post_raw("/users/add", {"address": "forged@example.test", "password": "x1", "password2": "x1"}, jar)
        assert status == 403, (status, body[:500])
        status, _ = post_raw("/users/add", {"address": "forged@example.test", "password": "x1", "password2": "x1", "csrf": "A" * 43}, jar)
        assert status == 403, status
        d.get(URL + "/users")
        assert "forged@example.test" not in d.find_element(By.ID, "users").text

        step("kill node2: the dashboard shows it dead")
        os.kill(NODE2_PID, signal.SIGKILL)
        wait_row_state(d, "node2", "dead")
        wait_row_state(d, "node1", "live")
        d.save_screenshot(os.path.join(ARTIFACTS, "dashboard-node2-dead.png"))

        step("an expired session is refused")
        time.sleep(SESSION_IDLE + 1.5)
        d.get(URL + "/users")
        assert "/login" in d.current_url, d.current_url
        assert "session expired" in d.page_source, d.page_source
        assert not d.find_elements(By.ID, "users")
    finally:
        d.quit()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
