"""The server's browser pages in a real headless browser (Debian's chromium and chromedriver,
driven by Selenium from PyPI): `/docs` renders this server's OpenAPI document, "Try it out" runs
`GET /health`, "Authorize" takes a key that then reaches a keyed route, the key stays out of the
URL and of storage, the console has no errors and no request leaves the server's origin.
Screenshots of each step go to SHOTS_DIR. Exits non-zero on the first failure.

Environment: AGENT_URL (the server), AGENT_KEY (a valid key), SHOTS_DIR.
"""

import json
import os
import sys
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["AGENT_URL"].rstrip("/")
KEY = os.environ["AGENT_KEY"]
SHOTS = os.environ["SHOTS_DIR"]


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


def main():
    os.makedirs(SHOTS, exist_ok=True)
    driver = browser()
    try:
        driver.get(f"{URL}/docs")
        WebDriverWait(driver, 30).until(ready.presence_of_element_located(
            (By.CSS_SELECTOR, ".opblock")))
        shot(driver, "docs-1-loaded")
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

        stored = driver.execute_script(
            "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
        check(KEY not in stored, "the key is in neither localStorage nor sessionStorage")
        check(KEY not in driver.current_url, "the key is not in the page's URL")

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
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
                  # The 401 tried on purpose above is logged by the browser as a failed load.
                  and not ("/tools" in entry["message"] and "401" in entry["message"])]
        check(not errors, f"no console errors ({errors})")
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
