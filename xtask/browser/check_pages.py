"""The server's browser pages in a real headless browser (Debian's chromium and chromedriver,
driven by Selenium from PyPI).

The playground (reached from the server's root), by keyboard: without a key it says 401; with one, "what is 2+3*4" shows the
calculator's call, its result and the streamed answer, in that order, with the turn's tokens; a
reload shows the session again; a second turn adds up the session's tokens; a reload during an
answer shows the rest of it (the turn runs in the background); a failing model
(5xx), a busy session (409) and a used-up quota (429) are readable messages; the page fits a
phone's width; a session is deleted; a wrong key is a 401 message. `/docs` renders this server's
OpenAPI document, "Try it out" runs `GET /health`, "Authorize" takes a key that then reaches a
keyed route. Throughout: no key in a URL or in localStorage (the playground keeps the entered key
in sessionStorage, Swagger UI nowhere), no console error but the failures provoked on purpose, no
request leaves the server's origin. Screenshots of each step go to SHOTS_DIR. Exits non-zero on
the first failure.

With CHECKS=proxy (the pages through a reverse proxy, where the model and the limits are not the
test's to set), the playground's checks stop after the reload; the docs' and the whole-run ones
all run.

Environment: AGENT_URL (the server), AGENT_KEY (a valid key), SHOTS_DIR, CHECKS (`all`, the
default, or `proxy`); for `all`, AGENT_LIMITED_KEY (a caller whose daily quota is one token) and
MODEL_URL (the fake model, for its fault switch).
"""

import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["AGENT_URL"].rstrip("/")
KEY = os.environ["AGENT_KEY"]
SHOTS = os.environ["SHOTS_DIR"]
FULL = os.environ.get("CHECKS", "all") == "all"
LIMITED_KEY = os.environ["AGENT_LIMITED_KEY"] if FULL else None
MODEL_URL = os.environ["MODEL_URL"].rstrip("/") if FULL else None


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def shot(driver, name):
    path = os.path.join(SHOTS, f"{name}.png")
    driver.save_screenshot(path)
    print(f"screenshot: {path}")


def operation(driver, method, path):
    """The expanded operation block of `method path`."""
    block = WebDriverWait(driver, 20).until(ready.presence_of_element_located((
        By.XPATH,
        f"//div[contains(@class, 'opblock-{method}')]"
        f"[.//*[@data-path='{path}']]",
    )))
    if "is-open" not in block.get_attribute("class"):
        block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    return block


def try_it_out(driver, method, path):
    """Runs `method path` with "Try it out" and answers the status shown."""
    block = operation(driver, method, path)
    WebDriverWait(block, 10).until(
        lambda block: block.find_element(By.CSS_SELECTOR, "button.try-out__btn")).click()
    WebDriverWait(block, 10).until(
        lambda block: block.find_element(By.CSS_SELECTOR, "button.execute")).click()
    status = WebDriverWait(block, 20).until(lambda block: block.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", status)
    return status.text.strip()


def console_errors(driver, expected=()):
    """Fails on any console error since the last call but the failed loads `expected` lists as
    (path, status): the browser logs each non-2xx answer, also those provoked on purpose."""
    errors = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        provoked = any(f"{URL}{path}" in entry["message"] and f"status of {status}" in entry["message"]
                       for path, status in expected)
        if not provoked:
            errors.append(entry["message"])
    check(not errors, f"no console errors ({errors})")


def call_api(method, path, key, body=None):
    """The API from outside the browser: (status, JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{URL}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def model_fault(mode):
    request = urllib.request.Request(f"{MODEL_URL}/fault/{mode}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        check(response.status == 204, f"the fake model's fault is {mode}")


def transcript(driver):
    """The transcript as (kind, text) pairs, in order."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#transcript > li')].map(item => [
            item.className.replace('msg ', ''), item.querySelector('.text').textContent,
            (item.querySelector('.turn-tokens') || {}).textContent || '']);""")


def use_key(driver, key):
    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key, Keys.ENTER)
    WebDriverWait(driver, 10).until(lambda driver: "Key saved" in driver.find_element(
        By.ID, "status").text)


def say(driver, text):
    """Types `text` into the composer and sends it with Enter; waits for the turn to end."""
    field = WebDriverWait(driver, 10).until(ready.element_to_be_clickable((By.ID, "message")))
    field.send_keys(text, Keys.ENTER)
    WebDriverWait(driver, 30).until(
        lambda driver: not driver.find_element(By.ID, "send").get_attribute("disabled")
        and driver.find_element(By.ID, "stop").get_attribute("hidden") is not None)


def status_text(driver):
    status = driver.find_element(By.ID, "status")
    return "" if status.get_attribute("hidden") is not None else status.text


def session_in_url(driver):
    return parse_qs(urlsplit(driver.current_url).query).get("session", [None])[0]


def page_weight(driver, page):
    """Prints the bytes a first load of the page transferred (headers included) and its requests."""
    sizes = driver.execute_script("""
        return performance.getEntriesByType('navigation')
            .concat(performance.getEntriesByType('resource'))
            .map(entry => [entry.name, entry.transferSize]);""")
    total = sum(size for _, size in sizes)
    print(f"page weight: {page} first load transferred {total} bytes in {len(sizes)} requests")
    for name, size in sizes:
        print(f"  {size:>8} {name}")


def playground(driver):
    driver.get(f"{URL}/")
    WebDriverWait(driver, 10).until(lambda driver: "401" in driver.find_element(
        By.ID, "sessions-note").text)
    page_weight(driver, "/playground")
    check(urlsplit(driver.current_url).path == "/playground",
          f"the server's root leads to the playground ({driver.current_url})")
    shot(driver, "playground-1-no-key")
    check("needs an API key" in driver.find_element(By.ID, "sessions-note").text,
          "without a key the page says the server needs one")
    console_errors(driver, [("/sessions", 401), ("/agents", 401)])

    use_key(driver, KEY)
    WebDriverWait(driver, 10).until(lambda driver: "401" not in driver.find_element(
        By.ID, "sessions-note").text)
    # Every state of the transcript while the turn runs, to see the order things appeared in.
    driver.execute_script("""
        window.seen = [];
        new MutationObserver(() => window.seen.push([...document.querySelectorAll(
            '#transcript > li')].map(item => [item.className.replace('msg ', ''),
            item.querySelector('.text').textContent])))
          .observe(document.getElementById('transcript'),
                   {subtree: true, childList: true, characterData: true});""")
    say(driver, "what is 2+3*4")
    shot(driver, "playground-2-answered")
    shown = transcript(driver)
    kinds = [kind for kind, _, _ in shown]
    check(kinds == ["user", "tool-call", "tool-result", "assistant"],
          f"the turn shows the question, the tool call, its result and the answer ({kinds})")
    check(shown[1][1] == '{ "expression": "2+3*4" }' and shown[2][1] == "14",
          f"the calculator was called with 2+3*4 and said 14 ({shown[1][1]!r}, {shown[2][1]!r})")
    check(shown[3][1] == "2+3*4 = 14", f"the answer is {shown[3][1]!r}")
    check(shown[3][2] == "This turn: 30 tokens",
          f"the turn's tokens are shown ({shown[3][2]!r}: two model calls of 15)")
    seen = driver.execute_script("return window.seen")
    answers = [state[-1][1] for state in seen if state and state[-1][0].startswith("assistant")]
    partial = sorted({text for text in answers if text and text != "2+3*4 = 14"}, key=len)
    check(len(partial) >= 2 and all("2+3*4 = 14".startswith(text) for text in partial),
          f"the answer streamed in pieces ({partial})")
    first_answer = next(state for state in seen if any(kind.startswith("assistant")
                                                       for kind, _ in state))
    check([kind for kind, _ in first_answer][:3] == ["user", "tool-call", "tool-result"],
          "the tool call and its result were on the page before the answer began")
    session = session_in_url(driver)
    check(session, f"the page's URL names the new session ({driver.current_url})")
    check("1 turn · 30 tokens" in driver.find_element(By.ID, "session-tokens").text,
          "the session's tokens are shown")
    WebDriverWait(driver, 10).until(lambda driver: driver.find_elements(
        By.CSS_SELECTOR, f"#sessions button[data-id='{session}'][aria-current='true']"))
    check(True, "the new session is listed and marked as the open one")

    driver.refresh()
    WebDriverWait(driver, 10).until(lambda driver: len(transcript(driver)) == 4)
    shot(driver, "playground-3-reloaded")
    check(transcript(driver) == shown, "after a reload the session's history is shown again")
    check(session in driver.find_element(By.ID, "session-title").text,
          "the reloaded page has the session open")
    check(KEY not in driver.current_url, "the key is not in the page's URL")
    console_errors(driver)
    if not FULL:
        return

    say(driver, "hello there")
    check(transcript(driver)[-1][1:] == ["echo: hello there", "This turn: 15 tokens"],
          f"a second turn is answered ({transcript(driver)[-1]})")
    check("2 turns · 45 tokens" in driver.find_element(By.ID, "session-tokens").text,
          "the session's tokens add up over its turns")
    console_errors(driver)

    # A reload during an answer: the turn goes on (it is a background run) and the page shows
    # the rest of it, read again from the run's events.
    field = WebDriverWait(driver, 10).until(ready.element_to_be_clickable((By.ID, "message")))
    field.send_keys("pace 300 8 keep going", Keys.ENTER)
    WebDriverWait(driver, 10).until(lambda driver: (shown := transcript(driver))
                                    and shown[-1][0].startswith("assistant")
                                    and "word" in shown[-1][1])
    driver.refresh()
    WebDriverWait(driver, 20).until(
        lambda driver: (shown := transcript(driver)) and shown[-1][1].count("word") == 8
        and not driver.find_element(By.ID, "send").get_attribute("disabled"))
    shot(driver, "playground-3b-resumed")
    shown = transcript(driver)
    check(shown[-2][:2] == ["user", "pace 300 8 keep going"] and shown[-1][1] == "word " * 8,
          f"after a reload mid-answer the whole answer is shown ({shown[-2:]})")
    check("3 turns" in driver.find_element(By.ID, "session-tokens").text,
          "the resumed turn was stored once")
    check(call_api("GET", f"/sessions/{session}", KEY)[1]["turn_count"] == 3,
          "the server stored the turn the page resumed, once")
    console_errors(driver)

    # A tool that needs approval (this server's current_time): the run stops and the page asks,
    # showing the call's arguments; Approve runs it and the answer streams on.
    field = WebDriverWait(driver, 10).until(ready.element_to_be_clickable((By.ID, "message")))
    field.send_keys("use current_time {}", Keys.ENTER)
    approve = WebDriverWait(driver, 20).until(
        ready.element_to_be_clickable((By.CSS_SELECTOR, ".msg.approval button.approve")))
    shown = transcript(driver)
    check(shown[-1][0] == "approval" and shown[-1][1].startswith("current_time"),
          f"the waiting call is shown with its arguments ({shown[-1]})")
    check(driver.find_element(By.ID, "send").get_attribute("disabled") is not None,
          "nothing else is sent while the run waits")
    shot(driver, "playground-3c-approval")
    approve.click()
    WebDriverWait(driver, 20).until(
        lambda driver: (shown := transcript(driver)) and shown[-1][1].startswith("current_time said: ")
        and not driver.find_element(By.ID, "send").get_attribute("disabled"))
    shown = transcript(driver)
    check(any(kind == "tool-result" and "unix" in text for kind, text, _ in shown[-3:]),
          f"the approved call ran and its result is shown ({shown[-3:]})")
    check("4 turns" in driver.find_element(By.ID, "session-tokens").text,
          "the approved turn was stored once")
    console_errors(driver)

    model_fault(500)
    try:
        say(driver, "the model is down")
    finally:
        model_fault("none")
    shot(driver, "playground-4-model-failed")
    text = status_text(driver)
    check(text.startswith("5") and "could not complete" in text,
          f"a failing model is a readable 5xx message ({text!r})")
    check(transcript(driver)[-1][0] == "notice" and "Nothing of this turn was stored"
          in transcript(driver)[-1][1], "the failed turn is marked as not stored")
    console_errors(driver, [("/agent/stream", status) for status in (500, 502, 503, 504)])

    # Another client holds the session for three seconds; the page's turn waits a second (the
    # server's lock wait) and is told the session is busy.
    holder = threading.Thread(target=call_api, args=(
        "POST", "/agent", KEY, {"message": "sleep 3000 hold", "session_id": session}))
    holder.start()
    time.sleep(0.5)
    say(driver, "are you there?")
    holder.join()
    shot(driver, "playground-5-session-busy")
    text = status_text(driver)
    check(text.startswith("409 Session busy"), f"a busy session is a readable 409 ({text!r})")
    console_errors(driver, [("/agent/stream", 409)])

    driver.set_window_size(390, 844)
    driver.refresh()
    WebDriverWait(driver, 10).until(lambda driver: len(transcript(driver)) >= 4)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    check(overflow <= 0, f"at a phone's width nothing overflows sideways ({overflow} px)")
    composer = driver.find_element(By.ID, "message")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", composer)
    check(composer.is_displayed() and driver.find_element(By.ID, "send").is_displayed(),
          "at a phone's width the composer is there")
    shot(driver, "playground-6-phone")
    driver.set_window_size(1280, 1000)

    driver.find_element(By.ID, "delete-session").send_keys(Keys.ENTER)
    WebDriverWait(driver, 5).until(ready.alert_is_present()).accept()
    WebDriverWait(driver, 10).until(lambda driver: "was deleted" in status_text(driver))
    WebDriverWait(driver, 10).until(lambda driver: not driver.find_elements(
        By.CSS_SELECTOR, f"#sessions button[data-id='{session}']"))
    shot(driver, "playground-7-deleted")
    check(call_api("GET", f"/sessions/{session}", KEY)[0] == 404,
          "the deleted session is gone from the server")
    check(session_in_url(driver) is None and transcript(driver) == [],
          "after deleting, the page starts a new session")

    # Two agents: a new session's is picked from a list; an open session shows its own, which it
    # keeps (the fake model's "whoami" says which instructions and tools it was sent).
    select = driver.find_element(By.ID, "agent")
    check(driver.find_element(By.ID, "agent-pick").is_displayed(),
          "with two agents the page offers a choice")
    options = [option.get_attribute("value") for option in Select(select).options]
    check(options == ["agent", "support"] and select.get_attribute("value") == "agent",
          f"the agents are listed, the default one picked ({options})")
    Select(select).select_by_value("support")
    say(driver, "whoami")
    shot(driver, "playground-7b-agent-picked")
    answer = transcript(driver)[-1][1]
    check(answer == "system: You are support. | tools: calculator",
          f"the picked agent answered ({answer!r})")
    picked = session_in_url(driver)
    check(call_api("GET", f"/sessions/{picked}", KEY)[1]["agent"] == "support",
          "the new session belongs to the picked agent")
    check(select.get_attribute("disabled") is not None and select.get_attribute("value") == "support",
          "an open session shows its agent, and the list is not for changing it")
    driver.find_element(By.ID, "new-session").click()
    check(select.get_attribute("disabled") is None and select.get_attribute("value") == "agent",
          "a new session may pick again, from the default agent")
    console_errors(driver)

    use_key(driver, LIMITED_KEY)
    say(driver, "first of today")
    check(transcript(driver)[-1][1] == "echo: first of today",
          "a caller with a quota gets its first turn")
    say(driver, "one more")
    shot(driver, "playground-8-quota")
    text = status_text(driver)
    check(text.startswith("429 Daily token quota"), f"a used-up quota is a readable 429 ({text!r})")
    check(re.search(r"Try again in (\d+ s|\d+ min|\d+ h \d+ min)\.", text),
          f"the wait reads in seconds, minutes or hours ({text!r})")
    console_errors(driver, [("/agent/stream", 429)])

    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys("not-a-key", Keys.ENTER)
    say(driver, "hello")
    shot(driver, "playground-9-wrong-key")
    text = status_text(driver)
    check(text.startswith("401 Unauthorized: the server does not accept this API key"),
          f"a wrong key is a readable 401 ({text!r})")
    check(not driver.find_elements(By.CSS_SELECTOR, "#sessions button"),
          "with a wrong key no caller's sessions stay listed")
    console_errors(driver, [("/sessions", 401), ("/agents", 401), ("/agent/stream", 401)])

    stored = driver.execute_script("return JSON.stringify(Object.entries(localStorage))")
    check(KEY not in stored and LIMITED_KEY not in stored, "no key is in localStorage")
    kept = driver.execute_script("return JSON.stringify(Object.values(sessionStorage))")
    check(KEY not in kept and LIMITED_KEY not in kept,
          "sessionStorage holds only the key entered last")
    check("key" not in urlsplit(driver.current_url).query, "no key in the page's URL")


def docs(driver):
    driver.get(f"{URL}/docs")
    WebDriverWait(driver, 30).until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, ".opblock")))
    shot(driver, "docs-1-loaded")
    page_weight(driver, "/docs")
    title = driver.find_element(By.CSS_SELECTOR, ".info .title").text
    check("agent-server" in title, f"the page shows this server's document ({title!r})")
    paths = {element.get_attribute("data-path")
             for element in driver.find_elements(By.CSS_SELECTOR, "[data-path]")}
    for path in ("/agent", "/agent/stream", "/v1/chat/completions", "/v1/responses", "/health"):
        check(path in paths, f"{path} is documented on the page")

    status = try_it_out(driver, "get", "/health")
    shot(driver, "docs-2-health-tried")
    check(status == "200", f"Try it out on GET /health answered {status}")

    status = try_it_out(driver, "get", "/tools")
    check(status == "401", f"GET /tools without a key answered {status}")
    driver.find_element(By.CSS_SELECTOR, "button.authorize").click()
    field = WebDriverWait(driver, 10).until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, ".modal-ux .auth-container input")))
    field.send_keys(KEY)
    shot(driver, "docs-3-authorize")
    driver.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper button.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()
    execute = operation(driver, "get", "/tools").find_element(By.CSS_SELECTOR, "button.execute")
    execute.click()
    block = operation(driver, "get", "/tools")
    answered = WebDriverWait(block, 20).until(lambda block: next(
        (cell for cell in block.find_elements(
            By.CSS_SELECTOR, ".live-responses-table .response .response-col_status")
         if cell.text.strip() == "200"), None))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", answered)
    shot(driver, "docs-4-keyed-call")
    check(answered.text.strip() == "200", "with the key entered, GET /tools answered 200")

    driver.execute_script("sessionStorage.clear()")  # the playground's, same origin
    stored = driver.execute_script(
        "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
    check(KEY not in stored, "the key is in neither localStorage nor sessionStorage")
    check(KEY not in driver.current_url, "the key is not in the page's URL")
    # The 401 tried on purpose above is logged by the browser as a failed load.
    console_errors(driver, [("/tools", 401)])


def main():
    os.makedirs(SHOTS, exist_ok=True)
    driver = browser()
    try:
        playground(driver)
        docs(driver)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(URL))
        requests = []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                requests.append(message["params"]["request"]["url"])
        outside = [url for url in requests
                   if not url.startswith(origin + "/") and not url.startswith(("data:", "blob:"))]
        check(requests and not outside,
              f"all {len(requests)} requests went to {origin} (outside: {outside})")
    except Exception:
        shot(driver, "failure")
        raise
    finally:
        driver.quit()


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - any failure fails the check
        print(f"FAILED: {error!r}", file=sys.stderr)
        sys.exit(1)
