"""The web UI in a real browser: Debian's Chromium (``/usr/bin/chromium``, installed by
scripts/test: ``playwright install`` cannot download browsers here) driven by Playwright,
against a real ``bridgehead server`` and local agent, one per test module.

Tenants: ``a`` and ``b`` each have a client token; the pages are read as tenant ``a`` unless
a test says otherwise. axe-core comes from the ``axe-playwright-python`` package (its
``axe.min.js``): nothing is fetched at test time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.cli.tokens import create_in_store
from tests.conftest import IN_CI
from tests.procs import Stack, eventually, stack

CHROMIUM = os.environ.get("BRIDGEHEAD_TEST_CHROMIUM", "/usr/bin/chromium")
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PY = json.dumps(sys.executable)
FAIL_ONCE = ("import os, sys; sys.exit(1 if sys.argv[1] == '1' and not "
             "os.path.exists(sys.argv[2]) else 0)")


def fan_workflow(marker: Path) -> str:
    """Three fan-out tasks after one step; task 1 fails until ``marker`` exists."""
    return ("name: wf-ui\n"
            "defaults: {cluster: local, resources: {cores: 1, walltime: 5m}}\n"
            "steps:\n"
            "  - id: prepare\n"
            f"    command: [{PY}, -c, \"print('prepared')\"]\n"
            "  - id: fan\n"
            "    needs: [prepare]\n"
            "    foreach: {range: [0, 3]}\n"
            f"    command: [{PY}, -c, {json.dumps(FAIL_ONCE)}, '{{{{ item }}}}', "
            f"{json.dumps(str(marker))}]\n")

try:
    import axe_playwright_python
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError as exc:  # pragma: no cover - the dev extra installs both
    _MISSING: str | None = f"the dev extra's playwright/axe-playwright-python: {exc}"
else:
    _MISSING = None if Path(CHROMIUM).exists() or shutil.which(CHROMIUM) else (
        f"{CHROMIUM} (apt-get install chromium; scripts/test does)")

pytestmark = pytest.mark.slow


def _require_browser() -> None:
    if _MISSING:
        if IN_CI:
            pytest.fail(f"the UI tests need {_MISSING}")
        pytest.skip(f"missing {_MISSING}")


_PLAYWRIGHT_LOOP: dict[str, Any] = {}
"""The event loop Playwright's sync API runs on the main thread while the browser lives."""


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for tests/ui, closed when its last test is done: Playwright's sync API
    runs an event loop on this thread while it lives, where the async tests that come after
    (tests/unit, in one pytest run) could not start theirs."""
    _require_browser()
    with sync_playwright() as pw:
        _PLAYWRIGHT_LOOP["loop"] = asyncio._get_running_loop()
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox", "--disable-background-networking",
                                            "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()
    _PLAYWRIGHT_LOOP.clear()


@pytest.fixture(autouse=True)
def _no_event_loop_left_running() -> Iterator[None]:
    """As the suite's check of that name, except for Playwright's own loop while the
    package's browser lives (``browser`` stops it with the package): any other loop left
    running in the main thread still fails the test that left it."""
    yield
    leaked = asyncio._get_running_loop()
    if leaked is not None and leaked is not _PLAYWRIGHT_LOOP.get("loop"):
        asyncio.events._set_running_loop(None)
        pytest.fail(f"this test left an event loop running in the main thread: {leaked!r}")


@dataclass
class Site:
    """A running server and agent, with the tokens of tenants a and b and an admin."""

    stack: Stack
    tokens: dict[str, dict[str, Any]]

    @property
    def url(self) -> str:
        return self.stack.server.url

    def api(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]['token']}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kw)

    def submit(self, who: str, tenant: str, name: str, code: str, **extra: Any) -> str:
        body = {"cluster": "local", "tenant": tenant, "name": name,
                "command": [sys.executable, "-c", code], **extra}
        r = self.api(who, "POST", "/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["job"]["id"])

    def job(self, who: str, job_id: str) -> dict[str, Any]:
        return dict(self.api(who, "GET", f"/v1/jobs/{job_id}").json())

    def start_run(self, who: str, tenant: str, spec: str) -> str:
        r = self.api(who, "POST", "/v1/workflows/runs", json={"spec": spec, "tenant": tenant})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def run(self, who: str, run_id: str) -> dict[str, Any]:
        return dict(self.api(who, "GET", f"/v1/workflows/runs/{run_id}").json())

    def wait_run(self, who: str, run_id: str, *states: str,
                 timeout: float = 90) -> dict[str, Any]:
        return eventually(lambda: (r := self.run(who, run_id))["state"] in states and r,
                          timeout, what=f"run {run_id} in {states}")

    def wait_state(self, who: str, job_id: str, *states: str,
                   timeout: float = 60) -> dict[str, Any]:
        return eventually(lambda: (j := self.job(who, job_id))["state"] in states and j,
                          timeout, what=f"job {job_id} in {states}")

    def login(self, context: BrowserContext, who: str) -> Page:
        """Log in through the login form, as a user does; the page is then on Overview."""
        page = context.new_page()
        page.goto(f"{self.url}/ui/login")
        page.fill("#token", self.tokens[who]["token"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.url}/ui")
        return page

    @contextmanager
    def http_login(self, who: str) -> Iterator[httpx.Client]:
        """An HTTP client holding a session of ``who`` (for checks a browser cannot make)."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            r = client.post("/ui/login", data={"token": self.tokens[who]["token"]},
                            headers={"Origin": self.url})
            assert r.status_code == 303 and "bh_session" in client.cookies, r.text
            yield client


def _in_thread(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on another thread: Playwright's sync API keeps an event loop running on
    this one, where ``asyncio.run`` (the token helpers) cannot start another."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _require_browser()
    with running_site(tmp_path_factory.mktemp("ui")) as running:
        yield running


@contextmanager
def running_site(home: Path) -> Iterator[Site]:
    """A server and agent of ``home`` (its config.toml, if any, configures the server)."""
    started = stack(home, slots=4)
    running: Stack = _in_thread(started.__enter__)
    try:
        tokens = {"admin": {"token": running.admin}}
        for name in ("a", "b"):
            tokens[name] = _in_thread(asyncio.run, create_in_store(
                running.dsn, f"client-{name}", "client", None, name))
        site = Site(stack=running, tokens=tokens)
        eventually(lambda: site.api("admin", "GET", "/v1/clusters").json(), 30,
                   what="the local cluster online")
        yield site
    finally:
        started.__exit__(None, None, None)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


class Console:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A and AA violations on the page as it is now."""
    script = Path(axe_playwright_python.__file__).with_name("axe.min.js").read_text()
    page.evaluate(script)  # through DevTools: the page's CSP (rightly) refuses a script tag
    found = page.evaluate("(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})"
                          ".then(r => r.violations.map(v => ({id: v.id, help: v.help, "
                          "nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))", WCAG)
    return list(found)

