"""The Clusters page in real Chromium with a pool configured: the local cluster with its
active jobs counted (the store's exact counts), its queue and running jobs over the last day
(the tally's hourly samples: a bar chart and a table), and the pool with its node; clean
(zero console errors, axe) at 1280 and 320 px, and the same figures with JavaScript off."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.procs import eventually
from tests.ui.conftest import Console, Site, _require_browser, axe_violations, running_site

CONFIG = """
[server]
scale_interval_s = 0.5

[agent]
heartbeat_s = 0.5

[[server.pools]]
name = "burst"
cluster = "local"
provider = "sim"
shape = { cpus = 2, memory_mb = 1024 }
min_nodes = 1
max_nodes = 2
options = { boot_s = 0.2 }
"""
HOLD = "import time, pathlib, sys; [time.sleep(0.1) for _ in range(3000) if not pathlib.Path(sys.argv[1]).exists()]"  # noqa: E501


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _require_browser()
    home = tmp_path_factory.mktemp("ui")
    (home / "config.toml").write_text(CONFIG)
    with running_site(Path(home)) as running:
        yield running


def test_clusters_page_shows_counts_the_day_and_pools(site: Site, browser: Browser,
                                                      tmp_path: Path) -> None:
    release = tmp_path / "release"
    held = site.api("admin", "POST", "/v1/jobs", json={
        "cluster": "local", "tenant": "a", "name": "held",
        "command": [sys.executable, "-c", HOLD, str(release)]}).json()["job"]["id"]
    try:
        site.wait_state("admin", held, "running")
        eventually(lambda: [n["state"] for p in site.api("admin", "GET", "/v1/pools").json()
                            for n in p["nodes"]] == ["idle"], 60, what="the pool's node idle")

        def sampled() -> bool:
            with site.http_login("a") as c:
                return "running 1" in re.sub(r"<[^>]+>", "", c.get("/ui/clusters").text) \
                    and "Running, most" in c.get("/ui/clusters").text
        eventually(sampled, 60, what="the tally sampled the running job")
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            page = site.login(context, "a")
            console = Console(page)
            for width in (1280, 320):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(f"{site.url}/ui/clusters")
                page.wait_for_load_state("load")
                assert axe_violations(page) == [], f"clusters at {width} px"
            assert page.locator("ul[aria-label='Active jobs of local']").inner_text() \
                .split() == ["running", "1"]
            chart = page.locator("svg[role=img]")
            assert "running peak 1" in (chart.get_attribute("aria-label") or "")
            assert chart.locator("rect").count() >= 1
            page.click("summary >> text=Hourly figures of local")
            row = page.locator("[aria-label='Hourly figures of local'] tbody tr").first
            assert row.locator("td").nth(2).inner_text() == "1"  # running, most
            pools = page.locator("section[aria-labelledby=h-pools]")
            assert "burst" in pools.inner_text() and "2 CPUs, 1024 MB" in pools.inner_text()
            assert pools.locator("ul[aria-label='Live nodes of burst']").inner_text() \
                .split() == ["idle", "1"]
            assert console.errors == []
        finally:
            context.close()
        no_js = browser.new_context(java_script_enabled=False)
        try:
            page = site.login(no_js, "a")
            page.goto(f"{site.url}/ui/clusters")
            text = page.locator("main").inner_text()
            assert "Queue and running over the last day" in text and "burst" in text
        finally:
            no_js.close()
    finally:
        release.write_text("done")
        site.wait_state("admin", held, "succeeded")
