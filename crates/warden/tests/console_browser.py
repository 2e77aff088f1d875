"""Drives the web console of `warden serve` in headless Chromium (Debian's chromium and
chromium-driver, through selenium), as a person would. Run by tests/console.rs, which starts
the server, the git server and the scripted model, and passes:

  WARDEN_URL        the server, http://127.0.0.1:PORT
  WARDEN_TOKEN      its token
  CONSOLE_REPO      the repository a task is submitted for
  CONSOLE_ARTIFACTS where the screenshots go

Steps: the login view, an unauthenticated fetch (401), a wrong then the right token; a bad
submission and the API's message; a task submitted in the form, its events arriving live, its
first pending call denied with a reason and the second approved, its end; the agent's output
shown as text, never as markup; the task list filtered; a sandbox created, a terminal opened
on it, `echo console-$((6*7))` typed and `console-42` read from the terminal's buffer; a
resize reaching the TTY; the sandbox deleted under the terminal, which says so and offers to
reconnect; a schedule resumed and paused; a refused webhook delivery listed; the other views;
no CSP violation. With CONSOLE_MODE=no-auth (and WARDEN_DATA, the server's data directory):
no login view, a terminal without a token, `exit 3`, then the sandbox killed under a live
terminal. Exits non-zero at the first failed check; screenshots of each step either way.
"""

import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["WARDEN_URL"].rstrip("/")
TOKEN = os.environ["WARDEN_TOKEN"]
REPO = os.environ["CONSOLE_REPO"]
ARTIFACTS = os.environ["CONSOLE_ARTIFACTS"]
PASSED = []


def step(name):
    PASSED.append(name)
    print(f"console: ok: {name}", flush=True)


def shot(driver, name):
    path = os.path.join(ARTIFACTS, name + ".png")
    driver.save_screenshot(path)
    print(f"console: screenshot {path}", flush=True)


def wait(driver, what, cond, timeout=120):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: cond(d))
    except Exception as e:
        shot(driver, "failed-" + re.sub(r"[^a-z0-9]+", "-", what.lower()))
        logs = browser_log(driver)
        raise AssertionError(f"timed out waiting for {what}; browser log: {logs}") from e


def browser_log(driver):
    try:
        return [e["message"] for e in driver.get_log("browser")]
    except Exception:
        return []


def text_of(driver, css):
    """The text of the first element matching css ("" when none); the views redraw as
    they poll, so this asks the page rather than holding an element."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
    )


def click(driver, css, within=None):
    """Clicks the first element matching css, finding it again if a redraw replaced it."""
    for _ in range(20):
        try:
            (within or driver).find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{css} kept going stale")


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-extensions",
    ]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=opts)


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver = browser()
    try:
        if os.environ.get("CONSOLE_MODE") == "no-auth":
            run_no_auth(driver)
        else:
            run(driver)
    finally:
        driver.quit()
    print(f"console: all {len(PASSED)} steps passed", flush=True)


def run(driver):
    # --- Sign in --------------------------------------------------------------------
    driver.get(URL + "/")
    wait(driver, "the login form", lambda d: d.find_elements(By.ID, "token"))
    assert driver.current_url.endswith("/console/"), driver.current_url
    assert not driver.find_element(By.ID, "nav").is_displayed()
    shot(driver, "01-login")
    status = driver.execute_async_script(
        "const done = arguments[0];"
        "fetch('/v1/tasks').then(r => done(r.status), e => done(String(e)));"
    )
    assert status == 401, f"an unauthenticated fetch of /v1/tasks got {status}"
    step("the console asks for the token, and the API refuses a request without it (401)")

    driver.find_element(By.ID, "token").send_keys("0" * 64)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, "the refusal", lambda d: "refused" in text_of(d, "#login-error"))
    assert driver.execute_script("return sessionStorage.getItem('warden.token')") is None
    box = driver.find_element(By.ID, "token")
    box.clear()
    box.send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, "the navigation", lambda d: d.find_element(By.ID, "nav").is_displayed())
    assert driver.execute_script("return sessionStorage.getItem('warden.token')") == TOKEN
    step("a wrong token is refused, the right one signs in (kept in sessionStorage)")

    # --- A task: submit, watch, approve -------------------------------------------
    wait(driver, "the task form", lambda d: d.find_elements(By.ID, "submit-task"))
    form = driver.find_element(By.ID, "submit-task")
    # A bad submission: the API's message, naming the field, is shown; nothing is queued.
    form.find_element(By.NAME, "repo").send_keys("ftp://example.com/app.git")
    form.find_element(By.NAME, "task").send_keys("Touch approved.txt from the console")
    driver.find_element(By.ID, "submit-task-button").click()
    wait(driver, "the API's error", lambda d: "repo:" in text_of(d, "#flash"))
    assert "Submit failed" in text_of(driver, "#flash"), text_of(driver, "#flash")
    assert "#/task/" not in driver.current_url
    shot(driver, "02a-bad-submission")
    step(f"a bad submission shows the API's message: {text_of(driver, '#flash')}")
    form.find_element(By.NAME, "repo").clear()
    form.find_element(By.NAME, "task").clear()
    form.find_element(By.NAME, "repo").send_keys(REPO)
    form.find_element(By.NAME, "base_branch").send_keys("main")
    form.find_element(By.NAME, "task").send_keys("Touch approved.txt from the console")
    shot(driver, "02-submit-form")
    driver.find_element(By.ID, "submit-task-button").click()
    wait(driver, "the task page", lambda d: "#/task/task-" in d.current_url)
    task_id = driver.find_element(By.ID, "task-id").text
    assert task_id.startswith("task-"), task_id
    wait(driver, "the first events", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#events .ev")) >= 2)
    step(f"a task submitted in the form ({task_id}) shows its events as they come")

    # The first call it asks about is denied, with a reason.
    wait(driver, "the first pending call", lambda d: "touch denied.txt" in text_of(d, "#task-approvals .approval"))
    assert "WAITING_APPROVAL" in text_of(driver, "#task-status")
    driver.find_element(By.CSS_SELECTOR, "#task-approvals .approval input.reason").send_keys("not from the console")
    shot(driver, "03a-deny-with-reason")
    click(driver, "#task-approvals .approval button.deny")
    step("its first pending call denied in the console, with a reason")

    # The second is approved.
    wait(driver, "the second pending call", lambda d: "touch approved.txt" in text_of(d, "#task-approvals .approval"))
    assert "WAITING_APPROVAL" in text_of(driver, "#task-status")
    before = len(driver.find_elements(By.CSS_SELECTOR, "#events .ev"))
    shot(driver, "03-waiting-for-approval")
    click(driver, "#task-approvals .approval button.approve")
    wait(driver, "the task to succeed", lambda d: "SUCCEEDED" in text_of(d, "#task-status"), 180)
    wait(
        driver,
        "the SUCCEEDED event",
        lambda d: any(
            "SUCCEEDED" in e.text for e in d.find_elements(By.CSS_SELECTOR, "#events .ev.ev-status")
        ),
    )
    after = len(driver.find_elements(By.CSS_SELECTOR, "#events .ev"))
    assert after > before, f"no new events after the approval ({before} -> {after})"
    # The page was never reloaded: the events arrived over the open stream.
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1
    shot(driver, "04-task-succeeded")
    step(f"its pending call approved in the console, it ran on to SUCCEEDED ({before} -> {after} events, live)")

    # The agent's output held markup: shown as text, never run.
    shown = text_of(driver, "body")
    assert "<img src=x onerror=window.pwned=1>" in shown, shown[-3000:]
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    assert driver.execute_script("return window.pwned === undefined")
    step("agent output holding <img src=x onerror=...> is shown as text")

    # The task list, filtered by status.
    driver.find_element(By.CSS_SELECTOR, "#nav a[data-view=tasks]").click()
    wait(driver, "the task in the list", lambda d: task_id in text_of(d, "#task-list"))
    Select(driver.find_element(By.ID, "task-filter")).select_by_value("FAILED")
    wait(driver, "the FAILED filter", lambda d: "No FAILED tasks." in text_of(d, "#task-list"))
    Select(driver.find_element(By.ID, "task-filter")).select_by_value("SUCCEEDED")
    wait(driver, "the SUCCEEDED filter", lambda d: task_id in text_of(d, "#task-list"))
    shot(driver, "04a-task-list")
    step("the task list, filtered by status")

    # --- A terminal ------------------------------------------------------------------
    driver.find_element(By.CSS_SELECTOR, "#nav a[data-view=sandboxes]").click()
    wait(driver, "the template list", lambda d: d.find_elements(By.CSS_SELECTOR, "#new-sandbox-template option"))
    Select(driver.find_element(By.ID, "new-sandbox-template")).select_by_value("default")
    driver.find_element(By.CSS_SELECTOR, "#new-sandbox button[type=submit]").click()
    wait(driver, "the new sandbox", lambda d: d.find_elements(By.CSS_SELECTOR, "a.open-terminal"))
    sandbox = driver.execute_script("return document.querySelector('a.open-terminal').dataset.id")
    shot(driver, "05-sandboxes")
    click(driver, "a.open-terminal")
    wait(driver, "the shell", lambda d: "Connected" in text_of(d, "#term-status"), 60)
    step(f"a sandbox created from a template ({sandbox}) and a terminal opened on it")

    type_line(driver, "echo console-$((6*7))")
    wait(driver, "console-42 in the terminal", lambda d: "console-42" in terminal_text(d), 30)
    lines = [l for l in terminal_text(driver).splitlines() if "console-42" in l]
    assert any(l.strip() == "console-42" for l in lines), lines
    shot(driver, "06-terminal")
    step("typed `echo console-$((6*7))` and read console-42 from the terminal's buffer")

    wide = driver.execute_script("return window.wardenTerminalSize()[1]")
    driver.set_window_size(900, 700)
    wait(
        driver,
        "the terminal to fit the smaller window",
        lambda d: d.execute_script("return window.wardenTerminalSize()[1]") < wide,
        10,
    )
    time.sleep(0.5)
    rows, cols = driver.execute_script("return window.wardenTerminalSize()")
    type_line(driver, "echo size-$(stty size | tr ' ' x)")
    want = f"size-{rows}x{cols}"
    wait(driver, f"{want} in the terminal", lambda d: want in terminal_text(d), 30)
    step(f"a window resize reaches the TTY ({want})")

    # The sandbox dies under the terminal.
    api("DELETE", f"/v1/sandboxes/{sandbox}")
    wait(driver, "the terminal to say it ended", lambda d: d.find_element(By.ID, "reconnect").is_displayed(), 60)
    said = text_of(driver, "#term-status")
    assert "gone" in said and sandbox in said, said
    assert driver.find_element(By.ID, "reconnect").is_displayed()
    shot(driver, "07-sandbox-gone")
    driver.find_element(By.ID, "reconnect").click()
    wait(driver, "the reconnect to fail", lambda d: "NOT_FOUND" in text_of(d, "#term-status"), 30)
    said_again = text_of(driver, "#term-status")
    shot(driver, "08-reconnect-refused")
    step(f"the sandbox deleted: the terminal says `{said}`, and a reconnect says `{said_again}`")

    # --- A schedule, paused and resumed ----------------------------------------------
    schedules = True
    try:
        api("PUT", "/v1/schedules/nightly", {
            "cron": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "enabled": False,
            "task": {"repo": REPO, "task": "Nightly <b>tidy</b>"},
        })
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        schedules = False
    if schedules:
        driver.find_element(By.CSS_SELECTOR, "#nav a[data-view=schedules]").click()
        wait(driver, "the schedule", lambda d: "nightly" in text_of(d, "#schedule-list"))
        row = text_of(driver, "#schedule-list")
        assert "Europe/Berlin" in row and "paused" in row and "Nightly <b>tidy</b>" in row, row
        click(driver, "#schedule-list button.resume")
        wait(driver, "the schedule to resume", lambda d: "yes" == text_of(d, "#schedule-list .enabled"))
        wait(driver, "its next run", lambda d: "03:00:00" in text_of(d, "#schedule-list .next-run"))
        shot(driver, "12a-schedule-resumed")
        click(driver, "#schedule-list button.pause")
        wait(driver, "the schedule to pause", lambda d: "paused" in text_of(d, "#schedule-list .enabled"))
        step("a schedule shown (its task as text), resumed with its next run, and paused again")

    # A GitHub delivery with a bad signature: refused, and logged with the reason.
    req = urllib.request.Request(
        URL + "/webhooks/github",
        data=b'{"zen": "<script>window.pwned=1</script>"}',
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "console-delivery-1",
            "X-Hub-Signature-256": "sha256=" + "0" * 64,
        },
    )
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError as e:
        print(f"console: the bad delivery got {e.code}", flush=True)
    try:
        deliveries = api("GET", "/v1/webhooks/deliveries")["deliveries"]
    except urllib.error.HTTPError:
        deliveries = []

    # --- The other views -------------------------------------------------------------
    for view, region, shot_name in [
        ("approvals", "#approval-list", "09-approvals"),
        ("templates", "#template-list", "10-templates"),
        ("pools", "#pool-list", "11-pools"),
        ("schedules", "#schedule-list", "12-schedules"),
        ("webhooks", "#delivery-list", "13-webhooks"),
    ]:
        driver.find_element(By.CSS_SELECTOR, f"#nav a[data-view={view}]").click()
        wait(driver, f"the {view} view", lambda d: d.find_elements(By.CSS_SELECTOR, region + " > *"))
        shot(driver, shot_name)
        if view == "templates":
            assert "default" in text_of(driver, region), text_of(driver, region)
        if view == "webhooks" and deliveries:
            d = deliveries[0]
            wait(driver, "the delivery", lambda dr: d["outcome"] in text_of(dr, region))
            shown = text_of(driver, region)
            assert (d.get("reason") or "") in shown, shown
            shot(driver, "13a-webhook-delivery")
            step(f"a refused webhook delivery is listed with its reason: {d.get('reason')}")
    step("the approvals, templates, pools, schedules and webhooks views render")

    # The page's strict CSP held everything: no violation in the browser's log.
    violations = [m for m in browser_log(driver) if "Content Security Policy" in m]
    assert not violations, violations
    step("no Content-Security-Policy violation")


def run_no_auth(driver):
    """A server started with --no-auth: no login view, and the terminal's WebSocket offers
    only the protocol, no token."""
    driver.get(URL + "/console/")
    wait(driver, "the navigation", lambda d: d.find_element(By.ID, "nav").is_displayed())
    assert not driver.find_elements(By.ID, "token"), "a login form on a --no-auth server"
    assert "no auth" in text_of(driver, "#who"), text_of(driver, "#who")
    assert not driver.find_element(By.ID, "sign-out").is_displayed()
    wait(driver, "the task list", lambda d: d.find_elements(By.CSS_SELECTOR, "#task-list > *"))
    shot(driver, "no-auth-01-tasks")
    step("a --no-auth server: no login view, the views load")
    driver.get(URL + "/console/#/sandboxes")
    wait(driver, "the template list", lambda d: d.find_elements(By.CSS_SELECTOR, "#new-sandbox-template option"))
    driver.find_element(By.CSS_SELECTOR, "#new-sandbox button[type=submit]").click()
    wait(driver, "the new sandbox", lambda d: d.find_elements(By.CSS_SELECTOR, "a.open-terminal"))
    click(driver, "a.open-terminal")
    wait(driver, "the shell", lambda d: "Connected" in text_of(d, "#term-status"), 60)
    type_line(driver, "echo no-auth-$((40+2))")
    wait(driver, "no-auth-42", lambda d: "no-auth-42" in terminal_text(d), 30)
    shot(driver, "no-auth-02-terminal")
    # The shell exits: the terminal says how, and that the sandbox lives on.
    type_line(driver, "exit 3")
    wait(driver, "the end of the session", lambda d: d.find_element(By.ID, "reconnect").is_displayed(), 30)
    said = text_of(driver, "#term-status")
    assert "exited with code 3" in said and "ready" in said, said
    shot(driver, "no-auth-03-exited")
    step(f"a terminal without a token; `exit 3` says `{said}`")

    # The sandbox dies under a live terminal: its supervisor is killed, as a crash would.
    click(driver, "#reconnect")
    wait(driver, "the shell again", lambda d: "Connected" in text_of(d, "#term-status"), 60)
    sandbox = driver.current_url.rsplit("/", 1)[1]
    state = os.path.join(os.environ["WARDEN_DATA"], "sandboxes", sandbox, "state.json")
    with open(state) as f:
        os.kill(json.load(f)["pid"], 9)
    wait(driver, "the terminal to say the sandbox died", lambda d: d.find_element(By.ID, "reconnect").is_displayed(), 60)
    said = text_of(driver, "#term-status")
    shot(driver, "no-auth-04-sandbox-died")
    assert "The sandbox is failed" in said and "SIGKILL" in said, said
    step(f"the sandbox killed under the terminal: `{said}`")


def terminal_text(driver):
    return driver.execute_script("return window.wardenTerminalText ? window.wardenTerminalText() : ''")


def type_line(driver, line):
    """Types into the terminal as a person would: click it, then keys (xterm.js reads them
    from its hidden textarea, which has the focus)."""
    driver.find_element(By.ID, "terminal").click()
    wait(
        driver,
        "the terminal to have the focus",
        lambda d: d.execute_script(
            "return document.activeElement && document.activeElement.classList.contains('xterm-helper-textarea')"
        ),
        10,
    )
    ActionChains(driver).send_keys(line).send_keys(Keys.ENTER).perform()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        traceback.print_exc()
        print(f"console: FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
