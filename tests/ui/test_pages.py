"""Every page in real headless Chromium, as tenant a: no console error, no axe-core WCAG 2.1
A/AA violation at 1280 px and at 320 px, and the same content with JavaScript off."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.ui.conftest import Console, Site, axe_violations, fan_workflow


@pytest.fixture(scope="module")
def data(site: Site, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tenant a: a succeeded job with output, a failed one and a failed run; tenant b: one
    job (never shown to a)."""
    ok = site.submit("a", "a", "hello-a", "print('hello from a')", labels={"team": "red"})
    bad = site.submit("a", "a", "fails-a", "import sys; print('oops', file=sys.stderr); "
                      "sys.exit(3)")
    site.submit("b", "b", "secret-b", "print('b only')")
    marker = tmp_path_factory.mktemp("marker") / "never"
    run = site.start_run("a", "a", fan_workflow(marker))
    site.wait_state("a", ok, "succeeded")
    site.wait_state("a", bad, "failed")
    site.wait_run("a", run, "failed")
    rule = {"name": "on-upload", "description": "a job per uploaded file",
            "match": {"type": "file.created"},
            "actions": [{"submit_job": {"cluster": "local", "tenant": "a",
                                        "command": ["echo", "{{ data.path }}"]}}]}
    assert site.api("admin", "PUT", "/v1/rules", json={"rules": [rule]}).status_code == 200
    return {"ok": ok, "bad": bad, "run": run}


PAGES: list[tuple[str, Callable[[dict[str, str]], str], str]] = [
    ("overview", lambda d: "/ui", "Recent failures"),
    ("jobs", lambda d: "/ui/jobs", "hello-a"),
    ("jobs-filtered", lambda d: "/ui/jobs?state=failed&name=fails&label=", "fails-a"),
    ("job", lambda d: f"/ui/jobs/{d['ok']}", "hello from a"),
    ("failed-job", lambda d: f"/ui/jobs/{d['bad']}", "oops"),
    ("runs", lambda d: "/ui/runs", "wf-ui"),
    ("run", lambda d: f"/ui/runs/{d['run']}", "Retry failed"),
    ("run-log", lambda d: f"/ui/runs/{d['run']}/log", "prepared"),
    ("workflows", lambda d: "/ui/workflows", "wf-ui"),
    ("rules", lambda d: "/ui/rules", "on-upload"),
    ("clusters", lambda d: "/ui/clusters", "local"),
    ("events", lambda d: "/ui/events", "bridgehead.job.finished"),
    ("costs", lambda d: "/ui/costs?by=workflow", "Costs are not configured"),
]


@pytest.mark.parametrize(("name", "path", "text"), PAGES, ids=[p[0] for p in PAGES])
def test_page_is_clean_and_accessible(site: Site, browser: Browser, data: dict[str, str],
                                      name: str, path: Callable[[dict[str, str]], str],
                                      text: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = site.login(context, "a")
        console = Console(page)
        for width in (1280, 320):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"{site.url}{path(data)}")
            page.wait_for_load_state("load")
            assert text in page.content()
            assert "secret-b" not in page.content()
            assert axe_violations(page) == [], f"{name} at {width} px"
        assert console.errors == []
    finally:
        context.close()


def test_login_page_is_clean_and_accessible(site: Site, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        console = Console(page)
        for width in (1280, 320):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"{site.url}/ui")  # no session: the login page, which says where to go
            assert page.url.startswith(f"{site.url}/ui/login?next=")
            assert axe_violations(page) == [], f"login at {width} px"
        page.fill("#token", "bh_not-a-token")
        page.click("button[type=submit]")
        assert "unknown or revoked token" in page.content()
        assert axe_violations(page) == []
        assert [e for e in console.errors if "401" not in e] == []  # the refused login
    finally:
        context.close()


def test_pages_read_without_javascript(site: Site, browser: Browser,
                                       data: dict[str, str]) -> None:
    """Log in, filter, page and read every page with JavaScript off."""
    context = browser.new_context(java_script_enabled=False)
    try:
        page = site.login(context, "a")
        for _name, path, text in PAGES:
            page.goto(f"{site.url}{path(data)}")
            assert text in page.content(), path(data)
        page.goto(f"{site.url}/ui/jobs")
        page.check("input[name=state][value=failed]")
        page.click("form.filters button[type=submit]")
        assert "state=failed" in page.url
        rows: Any = page.locator("tbody tr").all_inner_texts()
        assert rows and all("failed" in row for row in rows), rows
        page.goto(f"{site.url}/ui/jobs?label=team%3Dred")
        assert "hello-a" in page.content() and "fails-a" not in page.content()
    finally:
        context.close()


def test_screenshot(site: Site, browser: Browser, data: dict[str, str],
                    tmp_path_factory: pytest.TempPathFactory) -> None:
    """The README's picture: the failed run's page. ``BRIDGEHEAD_UI_SCREENSHOT=docs/ui.png``
    writes it there too."""
    import os
    import shutil

    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/runs/{data['run']}")
        shot = tmp_path_factory.mktemp("shot") / "ui.png"
        page.screenshot(path=str(shot), full_page=False)
    finally:
        context.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get("BRIDGEHEAD_UI_SCREENSHOT"):
        shutil.copy(shot, target)


def test_whole_run_log_in_step_order(site: Site, data: dict[str, str]) -> None:
    """``GET /v1/workflows/runs/{id}/log``: every task's stdout in the file's step order,
    then task order, each after its header; another tenant's run is not found."""
    r = site.api("a", "GET", f"/v1/workflows/runs/{data['run']}/log")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    headers = [line for line in r.text.splitlines() if line.startswith("==> ")]
    assert [h.split()[1] for h in headers] == ["prepare[0]", "fan[0]", "fan[1]", "fan[2]"]
    assert "(succeeded) <==\nprepared\n" in r.text and "fan[1] job" in r.text
    assert "(failed) <==" in headers[2]
    assert site.api("b", "GET", f"/v1/workflows/runs/{data['run']}/log").status_code == 404


def test_run_page_draws_its_tasks_in_time(site: Site, browser: Browser,
                                          data: dict[str, str]) -> None:
    """The Gantt chart: one bar per task that started, drawn by ui.js within the track
    (the page has no style attribute: the CSP forbids them), its times in text."""
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/runs/{data['run']}")
        bars = page.locator(".gantt .g-bar")
        assert bars.count() == 4  # prepare and the three fan-out tasks
        drawn = bars.evaluate_all("bs => bs.map(b => [parseFloat(b.style.left), "
                                  "parseFloat(b.style.width)])")
        assert all(0 <= left <= 100 and 0 <= width <= 100 - left + 0.01
                   for left, width in drawn), drawn
        assert max(left + width for left, width in drawn) > 99  # the last end spans it all
        labels = page.locator(".gantt .g-label").all_inner_texts()
        assert labels[0] == "prepare[0]" and sorted(labels[1:]) == ["fan[0]", "fan[1]",
                                                                    "fan[2]"]
        served = site.api("a", "GET", f"/ui/runs/{data['run']}").text
        assert "style=" not in served
    finally:
        context.close()


def test_costs_as_csv(site: Site, data: dict[str, str]) -> None:
    """The Costs table's rows as CSV, from GET /v1/costs: the run's attempts under its
    workflow (no prices here: cost 0, attempts and core-hours counted); tenant b sees none
    of a's."""
    import csv
    import io

    with site.http_login("a") as a:
        r = a.get("/ui/costs.csv", params={"by": "workflow", "bucket": "none", "days": "1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    [run] = [row for row in rows if row["workflow"] == "wf-ui"]
    assert int(run["attempts"]) >= 4 and float(run["cost"]) == 0
    with site.http_login("b") as b:
        theirs = b.get("/ui/costs.csv", params={"by": "workflow", "days": "1"}).text
    assert "wf-ui" not in theirs  # b ran no workflow here
    with site.http_login("a") as a:
        assert a.get("/ui/costs", params={"by": "nope"}).status_code == 400
