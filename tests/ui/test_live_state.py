"""The live indicator in real Chromium, through a real outage: with the server stopped, the
overview and a run's page (EventSource on /v1/events/stream) and a job's log (long-poll) go
from "live" to "reconnecting…" to "offline — last update HH:MM:SS"; with it started again
they are "live" again, and the run's page then follows the run to its end without a reload.
The indicator is a polite live region; the page is axe-clean at 1280/320 px while offline.

This module stops its own server (its own ``site``): no other module's pages see it."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from playwright.sync_api import Browser, Page, expect

from tests.procs import eventually
from tests.ui.conftest import PY, Console, Site, axe_violations

OFFLINE = re.compile(r"^offline — last update (\d\d):(\d\d):(\d\d)Z$")
RECORD = """() => {  // every text the indicator shows, in order
    window.__states = [];
    const el = document.querySelector('[data-live-state]');
    new MutationObserver(() => window.__states.push(el.textContent))
        .observe(el, {childList: true, characterData: true, subtree: true});
}"""
OUTAGE_ERRORS = re.compile(r".*net::ERR_(CONNECTION_REFUSED|INCOMPLETE_CHUNKED_ENCODING|"
                           r"CONNECTION_RESET|EMPTY_RESPONSE|CONNECTION_CLOSED).*|"
                           r"Failed to load resource: net::ERR_.*")
"""What Chromium logs for a request cut or refused while the server is down."""


def gated(marker: str) -> str:
    wait = f"import os, time\\nwhile not os.path.exists({marker!r}): time.sleep(0.2)"
    return ("name: wf-live\n"
            "defaults: {cluster: local, resources: {cores: 1, walltime: 5m}}\n"
            "steps:\n"
            f"  - {{id: gate, command: [{PY}, -c, \"{wait}\"]}}\n"
            f"  - {{id: after, needs: [gate], command: [{PY}, -c, 'print(1)']}}\n")


def indicator(page: Page) -> str:
    return page.locator("[data-live-state]").first.inner_text()


def test_outage_shows_reconnecting_then_offline_then_live(site: Site, browser: Browser) -> None:
    marker = site.stack.home / "open-the-gate"
    run_id = site.start_run("a", "a", gated(str(marker)))

    def gate_job() -> str | None:
        return next((t["job_id"] for t in site.run("a", run_id)["tasks"]
                     if t["step"] == "gate" and t["job_id"]), None)

    job = eventually(gate_job, 60, what="the gate step's job")
    site.wait_state("a", job, "running")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        first = site.login(context, "a")
        pages = {"overview": first, "run": context.new_page(), "job": context.new_page()}
        consoles = {name: Console(page) for name, page in pages.items()}
        pages["run"].goto(f"{site.url}/ui/runs/{run_id}")
        pages["job"].goto(f"{site.url}/ui/jobs/{job}")
        for page in pages.values():
            state = page.locator("[data-live-state]").first
            expect(state).to_have_text("live", timeout=30_000)
            assert state.get_attribute("aria-live") == "polite"
            assert state.get_attribute("role") == "status"
            page.evaluate(RECORD)
        pages["run"].evaluate("window.__same_page = true")

        stopped_at = datetime.now(UTC)
        site.stack.server.kill()
        for name, page in pages.items():
            expect(page.locator("[data-live-state]").first).to_have_text(OFFLINE,
                                                                      timeout=60_000)
            seen = page.evaluate("window.__states")
            assert "reconnecting…" in seen, (name, seen)
            assert seen.index("reconnecting…") < max(i for i, s in enumerate(seen)
                                                     if OFFLINE.match(s)), (name, seen)
            shown_text = OFFLINE.match(indicator(page))
            assert shown_text is not None
            hh, mm, ss = map(int, shown_text.groups())
            shown = stopped_at.replace(hour=hh, minute=mm, second=ss, microsecond=0)
            assert abs((shown - stopped_at).total_seconds()) < 30, (name, indicator(page))
        run_page = pages["run"]
        for width in (1280, 320):  # offline, the page still reads and is accessible
            run_page.set_viewport_size({"width": width, "height": 900})
            assert axe_violations(run_page) == [], f"offline run page at {width} px"
        run_page.set_viewport_size({"width": 1280, "height": 900})
        time.sleep(2)
        assert all(OFFLINE.match(indicator(p)) for p in pages.values())  # stays offline

        site.stack.server.start()
        for page in pages.values():
            expect(page.locator("[data-live-state]").first).to_have_text("live",
                                                                      timeout=60_000)
        node = run_page.locator("svg.dag a.node[data-step=gate]")
        assert node.get_attribute("data-state") != "succeeded"
        marker.write_text("open")  # the run goes on: its page follows, without a reload
        expect(run_page.locator("svg.dag a.node[data-step=after]")).to_have_attribute(
            "data-state", "succeeded", timeout=60_000)
        expect(run_page.locator(".facts .state").first).to_have_text("succeeded",
                                                                     timeout=30_000)
        assert run_page.evaluate("window.__same_page") is True
        expect(pages["overview"].locator("#h-runs + ul")).to_have_text("No run is active.",
                                                                      timeout=30_000)
        expect(pages["job"].locator("[data-live-state]").first).to_have_text(
            "ended (succeeded)", timeout=30_000)
        for name, console in consoles.items():
            unexpected = [e for e in console.errors if not OUTAGE_ERRORS.fullmatch(e)]
            assert unexpected == [], name
    finally:
        context.close()
        if not site.stack.server.alive:
            site.stack.server.start()
