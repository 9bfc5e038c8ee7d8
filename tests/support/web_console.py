"""The web console in tests: an HTTP client that speaks its auth and CSRF, and headless Chromium driven by
Selenium through Debian's chromedriver (no download, no network)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import IN_CI

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Where the browser tests save their screenshots (docs/web.md shows them): set to docs/web to refresh them.
SCREENSHOTS = os.environ.get("WEB_CONSOLE_SCREENSHOTS")


def require_browser() -> None:
    """Skip without Debian's chromium and chromium-driver, unless CI=true: there it is a failure."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    message = f"{', '.join(missing)} missing (apt-get install -y chromium chromium-driver)"
    if IN_CI:
        pytest.fail(f"{message}; CI=true: a missing browser is a failure")
    pytest.skip(message)


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@dataclass
class ConsoleClient:
    """Requests to the console at ``base`` as ``credentials`` (``user:password``; None: no Authorization)."""

    base: str
    credentials: str | None = None

    def as_user(self, credentials: str | None) -> ConsoleClient:
        return ConsoleClient(self.base, credentials)

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self.credentials is not None:
            request.add_header("Authorization", basic(self.credentials))
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=10) as answer:
                return Response(int(answer.status), bytes(answer.read()), dict(answer.headers.items()))
        except urllib.error.HTTPError as error:
            return Response(int(error.code), bytes(error.read()), dict(error.headers.items()))

    def get(self, path: str, *, accept: str = "text/html") -> Response:
        return self.request("GET", path, headers={"Accept": accept})

    def csrf(self) -> str:
        answer = self.get("/api/session", accept="application/json")
        assert answer.status == 200, answer.text
        token: str = answer.json()["csrf_token"]
        return token

    def post_form(self, path: str, fields: dict[str, str]) -> Response:
        data = urllib.parse.urlencode(fields).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
        return self.request("POST", path, data=data, headers=headers)

    def post_json(self, path: str, body: dict[str, Any], *, token: str | None) -> Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-CSRF-Token"] = token
        return self.request("POST", path, data=json.dumps(body).encode(), headers=headers)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 303 is an answer to check, not to follow


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium session (Selenium WebDriver) for one test module."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,1000",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        yield driver
    finally:
        driver.quit()


def sign_in(driver: Any, credentials: str) -> None:
    """Send ``credentials`` as basic auth with every request of the browser (pages, forms, event streams)."""
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": basic(credentials)}})


def screenshot(driver: Any, name: str) -> None:
    """Save the page as ``<WEB_CONSOLE_SCREENSHOTS>/<name>.png`` when that variable is set."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
        page_height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(width, min(max(page_height + 120, 600), 2400))  # the whole page, within reason
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))
        driver.set_window_size(width, height)
