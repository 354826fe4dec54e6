"""The dashboard in a real headless Chromium against a real `rota serve`.

Run by crates/rota-cli/tests/dashboard_browser.rs, which starts the server (with an admin
and a read token) and passes ROTA_URL, ROTA_ADMIN_TOKEN, ROTA_READ_TOKEN and ROTA_SHOTS
(where screenshots go). Every step asserts; the first failure exits non-zero with what
the page showed.
"""

import json
import os
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["ROTA_URL"]
ADMIN = os.environ["ROTA_ADMIN_TOKEN"]
READ = os.environ["ROTA_READ_TOKEN"]
SHOTS = os.environ["ROTA_SHOTS"]
XSS = "<img src=x onerror=alert(1)>"


def api(method, path, body=None, token=ADMIN):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: {e.code} {e.read()[:500]!r}")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("ROTA_CHROMIUM", "/usr/bin/chromium")
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        "--user-data-dir=" + tempfile.mkdtemp(prefix="rota-chromium-"),
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("ROTA_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def wait(driver, condition, what, timeout=20):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except TimeoutException:
        shot(driver, "failed-" + what.replace(" ", "-")[:40])
        raise AssertionError(f"timed out waiting for {what} on {driver.current_url}:\n"
                             + driver.find_element(By.TAG_NAME, "body").text[:2000])


def shot(driver, name):
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def login(driver, token):
    driver.get(URL + "/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait(driver, lambda d: "/login" not in d.current_url, "logging in")


def csp_violations(driver):
    logs = driver.get_log("browser")
    return [l["message"] for l in logs
            if "Content Security Policy" in l["message"] or "Refused to" in l["message"]]


def submit(driver, css):
    driver.find_element(By.CSS_SELECTOR, css).click()


def flash(driver):
    return wait(driver, lambda d: d.find_elements(By.ID, "flash"), "the action's message")[0].text


def fail_jobs(queue, kind, n, message, max_attempts=1):
    ids = []
    for i in range(n):
        job = api("POST", "/v1/jobs", {"queue": queue, "kind": kind, "args": {"to": f"user{i}@example.com", "x": XSS},
                                        "tags": [XSS], "max_attempts": max_attempts})
        ids.append(job["job"]["id"])
    fetched = api("POST", "/v1/fetch", {"worker": "browser-test", "queues": [queue], "max": n})["jobs"]
    assert {j["id"] for j in fetched} == set(ids), fetched
    api("POST", "/v1/fail", {"failures": [
        {"job": j["id"], "token": j["lease_token"], "message": message,
         "backtrace": f"Traceback:\n  at send_mail (mailer.py:42)\n  {XSS}"} for j in fetched]})
    return ids


def listeners():
    """Pages listening to the live stream, as the server's metrics count them."""
    with urllib.request.urlopen(URL + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("rota_dashboard_listeners "):
                return int(float(line.split()[1]))
    return None


def state_count(driver, state):
    cells = driver.find_elements(By.CSS_SELECTOR, f"[data-count='{state}']")
    return int(cells[0].text) if cells else None


def main():
    os.makedirs(SHOTS, exist_ok=True)
    api("PUT", "/v1/queues/mail", {})
    api("PUT", "/v1/queues/reports", {})
    api("POST", "/v1/schedules", {"name": "nightly-digest", "cron": "0 3 * * *", "timezone": "Europe/Paris",
                                   "queue": "reports", "kind": "digest"})

    admin = browser()
    try:
        login(admin, ADMIN)
        # The overview loads, with its charts, and goes live.
        admin.get(URL + "/")
        assert admin.find_element(By.TAG_NAME, "h1").text.startswith("Overview")
        assert len(admin.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3
        wait(admin, lambda d: d.find_element(By.ID, "live-status").text == "live", "the live stream")

        # Failing jobs: their error group appears on the open errors page without a reload.
        admin.get(URL + "/errors")
        wait(admin, lambda d: d.find_element(By.ID, "live-status").text == "live", "the live stream on errors")
        marker = admin.find_element(By.TAG_NAME, "h1")
        fail_jobs("mail", "send_mail", 3, f"SMTP 550 mailbox unavailable {XSS}")
        row = wait(admin, lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "[data-group]") if "SMTP 550" in r.text],
                   "the error group to appear live")[0]
        assert marker.is_displayed(), "the page was not reloaded (the same h1 element is still there)"
        assert XSS in row.text, "the payload is shown as text"
        assert not admin.find_elements(By.CSS_SELECTOR, "img[src=x]"), "the payload never became an element"
        assert "3" in row.text

        # Open the group, then a dead job, and see its backtrace.
        row.find_element(By.TAG_NAME, "a").click()
        wait(admin, lambda d: d.find_elements(By.ID, "group-detail"), "the group's page")
        shot(admin, "errors")
        admin.find_element(By.CSS_SELECTOR, "#group-detail tbody a").click()
        wait(admin, lambda d: d.find_elements(By.ID, "job-state"), "the job's page")
        assert admin.find_element(By.ID, "job-state").text == "dead"
        timeline = admin.find_element(By.ID, "timeline").text
        assert "→ running" in timeline and "running → dead" in timeline, timeline
        assert "worker browser-test" in timeline and "SMTP 550" in timeline, timeline
        admin.find_element(By.CSS_SELECTOR, "details.backtrace summary").click()
        backtrace = admin.find_element(By.CSS_SELECTOR, "details.backtrace pre")
        wait(admin, lambda d: backtrace.is_displayed(), "the backtrace to open")
        assert "at send_mail (mailer.py:42)" in backtrace.text
        assert XSS in backtrace.text
        shot(admin, "job")

        # Retry the whole group and see the counts change.
        admin.back()
        wait(admin, lambda d: d.find_elements(By.ID, "retry-group"), "the group's retry button")
        submit(admin, "#retry-group")
        assert "retried 3 jobs" in flash(admin), flash(admin)
        admin.get(URL + "/")
        wait(admin, lambda d: state_count(d, "dead") == 0 and state_count(d, "available") >= 3,
             "the counts to show the retried jobs")
        assert api("GET", "/v1/queues/mail")["counts"].get("dead", 0) == 0
        # The fixed mail goes out: the retried jobs complete, and the overview shows it.
        retried = api("POST", "/v1/fetch", {"worker": "browser-test", "queues": ["mail"], "max": 3})["jobs"]
        api("POST", "/v1/complete", {"completions": [{"job": j["id"], "token": j["lease_token"]} for j in retried]})
        wait(admin, lambda d: state_count(d, "completed") == 3, "the completions to show live")
        shot(admin, "overview")

        # A running job's progress moves on its page by itself.
        api("POST", "/v1/jobs", {"queue": "reports", "kind": "build_report", "args": {}})
        running = api("POST", "/v1/fetch", {"worker": "browser-test", "queues": ["reports"], "max": 1})["jobs"][0]
        admin.get(URL + "/jobs/" + running["id"])
        assert admin.find_element(By.ID, "job-state").text == "running"
        api("POST", f"/v1/jobs/{running['id']}/progress", {"token": running["lease_token"], "percent": 40,
                                                            "message": "page 4 of 10"})
        wait(admin, lambda d: d.find_elements(By.ID, "job-progress")
             and d.find_element(By.ID, "job-progress").get_attribute("value") == "40", "the progress bar to move")

        # Pause a queue.
        admin.get(URL + "/queues")
        submit(admin, "tr[data-queue='mail'] form button")
        assert "queue mail paused" in flash(admin)
        assert "paused" in admin.find_element(By.CSS_SELECTOR, "tr[data-queue='mail'] .queue-state").text
        assert api("GET", "/v1/queues/mail")["paused"] is True
        shot(admin, "queues")

        # Trigger a schedule.
        admin.get(URL + "/schedules")
        section = admin.find_element(By.CSS_SELECTOR, "[data-schedule='nightly-digest']")
        assert "Europe/Paris" in section.text and "At" in section.text, section.text
        assert len(section.find_elements(By.CSS_SELECTOR, "ol li")) == 5, "the next five slots"
        section.find_element(By.CSS_SELECTOR, "form[action$='/trigger'] button").click()
        assert "schedule nightly-digest triggered" in flash(admin)
        digests = api("GET", "/v1/jobs?queue=reports&kind=digest")["jobs"]
        assert len(digests) == 1, digests
        runs = admin.find_elements(By.CSS_SELECTOR, "[data-schedule='nightly-digest'] ul.runs li")
        assert len(runs) == 1 and digests[0]["id"] in runs[0].find_element(By.TAG_NAME, "a").get_attribute("href"), \
            "the triggered run is among the recent runs"
        shot(admin, "schedules")

        admin.get(URL + "/workers")
        assert "browser-test" in admin.find_element(By.TAG_NAME, "main").text
        admin.get(URL + "/jobs?state=available")
        assert admin.find_elements(By.CSS_SELECTOR, "input[name=ids]"), "an admin can select jobs"
        shot(admin, "jobs")

        # A hidden tab closes its stream (the server counts no listener), and reopens it when
        # shown again.
        admin.get(URL + "/")
        wait(admin, lambda d: d.find_element(By.ID, "live-status").text == "live", "the stream")
        wait(admin, lambda d: listeners() == 1, "the server to count one listening page")
        first = admin.current_window_handle
        admin.switch_to.new_window("tab")
        admin.get(URL + "/login")
        wait(admin, lambda d: listeners() == 0, "the hidden page to close its stream")
        admin.close()
        admin.switch_to.window(first)
        wait(admin, lambda d: listeners() == 1, "the shown page to listen again")

        # Keyboard: the first Tab reaches the navigation, and Enter follows the link.
        admin.get(URL + "/")
        admin.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        focused = admin.switch_to.active_element
        assert focused.tag_name == "a", focused.tag_name
        focused.send_keys(Keys.ENTER)
        wait(admin, lambda d: d.current_url.rstrip("/") == URL, "the keyboard to follow the first link")

        # Phone width: nothing wider than the screen but the tables' own scrolling boxes.
        admin.set_window_size(390, 844)
        for path in ["/", "/jobs", "/errors", "/schedules"]:
            admin.get(URL + path)
            overflow = admin.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
        shot(admin, "phone-jobs")
        admin.set_window_size(1280, 1000)

        # Dark mode: the page follows the system's preference.
        admin.execute_cdp_cmd("Emulation.setEmulatedMedia",
                              {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        admin.get(URL + "/")
        background = admin.execute_script("return getComputedStyle(document.body).backgroundColor")
        channels = [int(c) for c in background[background.index("(") + 1:background.index(")")].split(",")[:3]]
        assert sum(channels) < 150, f"dark mode background is {background}"
        shot(admin, "overview-dark")

        violations = csp_violations(admin)
        assert not violations, violations
    finally:
        admin.quit()

    reader = browser()
    try:
        login(reader, READ)
        reader.get(URL + "/")
        assert "(read-only)" in reader.find_element(By.TAG_NAME, "header").text
        for path, css in [
            ("/queues", "form[action^='/queues/'] button"),
            ("/schedules", "form[action^='/schedules/'] button"),
            ("/jobs?state=available", "input[name=ids]"),
            ("/jobs?state=available", "form[action='/jobs/bulk'] button"),
        ]:
            reader.get(URL + path)
            assert not reader.find_elements(By.CSS_SELECTOR, css), f"{path} offers {css} to a read-only user"
        api("PUT", "/v1/queues/alerts", {})
        fail_jobs("alerts", "page_oncall", 1, "timeout talking to the pager")
        group = api("GET", "/v1/dead/groups")["groups"][0]["group"]
        reader.get(URL + "/errors?group=" + group)
        wait(reader, lambda d: d.find_elements(By.ID, "group-detail"), "the group's page for a reader")
        assert not reader.find_elements(By.ID, "retry-group") and not reader.find_elements(By.ID, "purge-group")
        # Even a hand-made same-origin POST from the page, with the session's own CSRF token,
        # is refused: the token is not an admin's.
        reader.get(URL + "/jobs")
        status = reader.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const csrf = document.querySelector('input[name=csrf]').value;
            fetch('/queues/mail/resume', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                  body: 'csrf=' + csrf}).then(r => done(r.status));
        """)
        assert status == 403, status
        assert api("GET", "/v1/queues/mail")["paused"] is True, "the refused action changed nothing"
        shot(reader, "read-only")
        violations = csp_violations(reader)
        assert not violations, violations
    finally:
        reader.quit()
    print("dashboard browser scenario: ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError:
        traceback.print_exc()
        print("FAILED", file=sys.stderr)
        sys.exit(1)
