"""The admin port's status page, looked at as a person does: headless Chromium (Debian `chromium` and
`chromium-driver`, driven by Selenium) loads it from a real gateway that has served allowed and refused
requests; the refusal reasons and an explain result are read off the rendered page, and a screenshot
is written to `artifacts/status-page.png` for CI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.conftest import KEY_NATIVE, KEY_PUSH, KEY_READ, TOKEN_CI, Gateway

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
STRANGER = "pgw_stranger_" + "z" * 40


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: .ci/system-deps.sh installs chromium and chromium-driver")
    return found


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = _tool("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_tool("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _traffic(gw: Gateway) -> None:
    """Allowed, refused for an unknown token, refused for a Native API method not allowed."""
    with httpx.Client(base_url=gw.url, timeout=10, trust_env=False) as c:
        assert c.get("/__standin/echo", headers={"X-ApiKey": TOKEN_CI}).status_code == 200
        assert c.get("/nuget/internal/", headers={"X-ApiKey": STRANGER}).status_code == 401
        refused = c.post(
            "/api/json/Users_DeleteUser?API_Key_hint=1",
            headers={"X-ApiKey": TOKEN_CI, "Content-Type": "application/json"},
            content=b"{}",
        )
        assert refused.status_code == 403


def _submit(browser: webdriver.Chrome) -> str:
    """Submit the explain form and read the result off the page that replaces this one."""
    button = browser.find_element(By.ID, "explain-submit")
    button.click()

    def replaced(_: webdriver.Chrome) -> bool:
        """The old page is gone. Chromium says so with a stale reference, or mid-navigation with "Node
        with given id does not belong to the document" (a plain WebDriverException)."""
        try:
            button.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one too
            return True
        return False

    WebDriverWait(browser, 10).until(replaced)
    result: str = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "explain-result")).text
    return result


def test_a_person_sees_refusals_and_explains_a_request(gateway: Gateway, browser: webdriver.Chrome) -> None:
    _traffic(gateway)
    browser.get(gateway.admin_url + "/")
    refusals = browser.find_element(By.ID, "refusals").text
    assert "token_unknown" in refusals
    assert "native_method_not_allowed" in refusals
    assert "/api/json/Users_DeleteUser" in refusals
    clients = browser.find_element(By.ID, "clients").text
    assert "ci" in clients and "native_method_not_allowed" in clients
    assert "ProGet answers HTTP yes" in browser.find_element(By.ID, "facts").text

    # The explain form: what the proxy decided, exactly as `proget-gateway explain` says it.
    Select(browser.find_element(By.ID, "explain-client")).select_by_visible_text("ci")
    Select(browser.find_element(By.ID, "explain-method")).select_by_visible_text("POST")
    browser.find_element(By.ID, "explain-url").send_keys("/api/json/Users_DeleteUser")
    refused = _submit(browser)
    assert "refused:  403 native_method_not_allowed" in refused

    Select(browser.find_element(By.ID, "explain-method")).select_by_visible_text("GET")
    url = browser.find_element(By.ID, "explain-url")
    url.clear()
    url.send_keys("/__standin/echo")
    allowed = _submit(browser)
    assert "decision: allow" in allowed and "key:      read" in allowed

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "status-page.png"))
    page = browser.page_source
    for secret in (TOKEN_CI, STRANGER, KEY_READ, KEY_PUSH, KEY_NATIVE):
        assert secret not in page
