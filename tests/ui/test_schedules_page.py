"""The Workflows page's schedules in real Chromium: each of the tenant's schedules with its
next runs (read from a fake clock), pause and resume buttons that work, a clean console and
no axe violations at desktop and 320 px; another tenant's schedule is not shown, readable
with JavaScript off, and a cookie write without the CSRF token is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.procs import eventually
from tests.ui.conftest import Console, Site, _require_browser, axe_violations, running_site

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z
WORKFLOW = """\
name: {name}
defaults: {{cluster: local}}
steps:
  - id: a
    command: [echo, hi]
schedule: {schedule}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _require_browser()
    home, folder = tmp_path_factory.mktemp("ui"), tmp_path_factory.mktemp("workflows")
    clock = home / "clock"
    clock.write_text(str(T0))
    (folder / "nightly.yaml").write_text(WORKFLOW.format(
        name="nightly", schedule='{cron: "0 2 * * *", timezone: Europe/Paris, tenant: a}'))
    (folder / "other.yaml").write_text(WORKFLOW.format(
        name="other-b", schedule="{every: 15m, tenant: b}"))
    (home / "config.toml").write_text(
        f'[server]\nworkflows_dir = "{folder}"\nschedule_clock_file = "{clock}"\n'
        "schedule_pass_s = 0.3\n")
    with running_site(Path(home)) as running:
        eventually(lambda: len(running.api("admin", "GET", "/v1/schedules").json()) == 2, 30,
                   what="the schedules synced")
        yield running


def test_schedules_show_next_runs_and_pause_resume(site: Site, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = site.login(context, "a")
        console = Console(page)
        page.click("nav >> text=Workflows")
        row = page.locator("tr.schedule")
        expect(row).to_have_count(1)  # tenant b's schedule is not shown to tenant a
        assert row.get_attribute("data-workflow") == "nightly"
        assert row.locator(".next-runs time").all_inner_texts() == [
            "2027-01-16T01:00:00Z", "2027-01-17T01:00:00Z", "2027-01-18T01:00:00Z"]
        for width in (1280, 320):
            page.set_viewport_size({"width": width, "height": 900})
            assert axe_violations(page) == [], f"workflows at {width} px"
        page.click("text=Pause nightly")
        expect(page.locator("tr.schedule .state")).to_have_text("paused")
        assert [s["paused"] for s in site.api("a", "GET", "/v1/schedules").json()] == [True]
        expect(row.locator(".next-runs")).to_have_count(0)
        assert axe_violations(page) == []
        page.click("text=Resume nightly")
        expect(page.locator("tr.schedule .state")).to_have_text("active")
        assert [s["paused"] for s in site.api("a", "GET", "/v1/schedules").json()] == [False]
        assert console.errors == []
    finally:
        context.close()


def test_reads_without_javascript_and_refuses_a_write_without_csrf(site: Site,
                                                                   browser: Browser) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/workflows")
        expect(page.locator("tr.schedule th")).to_have_text("nightly")
    finally:
        context.close()
    with site.http_login("a") as client:
        refused = client.post("/ui/schedules/nightly/pause", headers={"Origin": site.url})
        assert refused.status_code == 403, refused.text
        other = client.post("/ui/schedules/other-b/pause", headers={"Origin": site.url})
        assert other.status_code in (403, 404)
    assert [s["paused"] for s in site.api("admin", "GET", "/v1/schedules").json()] == [
        False, False]
    gone = site.api("a", "POST", "/v1/schedules/other-b/pause")
    assert gone.status_code == 404  # another tenant's schedule does not exist for a
