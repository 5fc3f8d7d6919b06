"""What the pages do while things run, in real Chromium: a running job's log follows live
(no reload) with a visible state; cancel from the job page; retry-failed from the run page
re-runs exactly the task its preview listed."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.ui.conftest import Console, Site, fan_workflow

TICKS = ("import time\n"
         "for i in range(40):\n"
         "    print(f'tick {i}', flush=True)\n"
         "    time.sleep(0.25)\n")


def test_running_job_log_follows_live(site: Site, browser: Browser) -> None:
    job = site.submit("a", "a", "ticker", TICKS)
    site.wait_state("a", job, "running")
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/jobs/{job}")
        log = page.locator("pre[data-log=stdout]")
        expect(page.locator("[data-live-state]").first).to_have_text("live", timeout=30_000)
        expect(log).to_contain_text("tick 39", timeout=60_000)  # arrived after the page
        expect(page.locator("[data-live-state]").first).to_have_text("ended (succeeded)",
                                                                   timeout=30_000)
        expect(page.locator("#job-state .state")).to_have_text("succeeded")
        text = log.inner_text()
        assert [f"tick {i}" for i in range(40)] == text.splitlines(), text  # none lost, none twice
    finally:
        context.close()


def test_cancel_from_the_job_page(site: Site, browser: Browser) -> None:
    job = site.submit("a", "a", "long-sleep", "import time; time.sleep(300)")
    site.wait_state("a", job, "running")
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/jobs/{job}")
        page.click("text=Cancel job")
        site.wait_state("a", job, "cancelled")
        page.goto(f"{site.url}/ui/jobs/{job}")
        expect(page.locator("#job-state .state")).to_have_text("cancelled")
    finally:
        context.close()


def test_retry_failed_reruns_only_what_failed(site: Site, browser: Browser,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    marker = tmp_path_factory.mktemp("retry") / "fixed"
    run_id = site.start_run("a", "a", fan_workflow(marker))
    before = site.wait_run("a", run_id, "failed")
    jobs_before = {(t["step"], t["index"]): t["job_id"] for t in before["tasks"]}
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/runs/{run_id}")
        preview = page.locator("#retry-preview li").all_inner_texts()
        assert preview == ["fan[1] (failed)"], preview
        marker.write_text("fixed")
        page.click("text=Retry 1 task")
        after = site.wait_run("a", run_id, "succeeded")
    finally:
        context.close()
    jobs_after = {(t["step"], t["index"]): t["job_id"] for t in after["tasks"]}
    changed = {key for key in jobs_after if jobs_after[key] != jobs_before[key]}
    assert changed == {("fan", 1)}, (jobs_before, jobs_after)


def test_retry_refused_when_the_run_changed_since_the_preview(site: Site) -> None:
    marker_dir = site.stack.home / "stale"
    marker_dir.mkdir(exist_ok=True)
    run_id = site.start_run("a", "a", fan_workflow(marker_dir / "never"))
    run = site.wait_run("a", run_id, "failed")
    with site.http_login("a") as c:
        page = c.get(f"/ui/runs/{run_id}").text
        csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        r = c.post(f"/ui/runs/{run_id}/retry", headers={"Origin": site.url},
                   data={"csrf": csrf, "version": str(run["version"] - 1)})
        assert r.status_code == 409 and "changed since" in r.text


def test_connection_state_shows_offline_and_recovers(site: Site, browser: Browser) -> None:
    job = site.submit("a", "a", "slow-ticker", "import time\nfor i in range(600):\n"
                      "    print(i, flush=True)\n    time.sleep(0.2)\n")
    site.wait_state("a", job, "running")
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/jobs/{job}")
        state = page.locator("[data-live-state]").first
        expect(state).to_have_text("live", timeout=30_000)
        context.set_offline(True)
        expect(state).to_contain_text("offline", timeout=60_000)
        context.set_offline(False)
        expect(state).to_have_text("live", timeout=60_000)
        shown = len(page.locator("pre[data-log=stdout]").inner_text())
        page.wait_for_function(
            "n => document.querySelector('pre[data-log=stdout]').textContent.length > n",
            arg=shown, timeout=30_000)  # it goes on following after the outage
    finally:
        context.close()
        site.api("a", "POST", f"/v1/jobs/{job}/cancel")


BIG = ("import sys\n"
       "for i in range(12000):\n"
       "    sys.stdout.write(f'line {i:06d} ' + 'x' * 48 + '\\n')\n")
"""About 732 KB of numbered 61-byte lines."""


def consecutive(text: str) -> list[int]:
    """The line numbers of ``text``'s whole lines (its first may be cut), checked to have no
    gap and no repeat."""
    numbers = [int(line.split()[1]) for line in text.splitlines()[1:]]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "lines out of order"
    return numbers


def test_big_log_tail_first_earlier_by_offset_and_a_bounded_page(site: Site,
                                                                 browser: Browser) -> None:
    job = site.submit("a", "a", "big-log", BIG)
    site.wait_state("a", job, "succeeded")
    size = int(site.api("a", "GET", f"/v1/jobs/{job}/logs",
                        params={"offset": 0, "limit": 4 << 20}).headers["X-Next-Offset"])
    assert size == 12000 * 61
    for js in (False, True):
        context = browser.new_context(java_script_enabled=js)
        try:
            page = site.login(context, "a")
            page.goto(f"{site.url}/ui/jobs/{job}")
            log = page.locator("pre[data-log=stdout]")
            text = log.inner_text()
            assert len(text) <= 64 * 1024 and text.rstrip().endswith("line 011999 " + "x" * 48)
            if not js:
                page.click("a[data-earlier=stdout]")  # a page of the 64 KB before them
                earlier = page.locator("pre[data-log=stdout]").inner_text()
                assert len(earlier) == 64 * 1024
                assert consecutive(earlier + text)[-1] == 11999  # the two meet, byte for byte
                continue
            console = Console(page)
            for _ in range(12):
                if page.locator("a[data-earlier=stdout]").is_hidden():
                    break
                before = log.get_attribute("data-start")
                page.click("a[data-earlier=stdout]")
                page.wait_for_function(
                    "b => document.querySelector('pre[data-log=stdout]').dataset.start != b",
                    arg=before)
            assert console.errors == []
            kept = log.inner_text()
            assert 480 * 1024 <= len(kept) <= 512 * 1024  # the page keeps a bounded log
            assert len(consecutive(kept)) > 7000
        finally:
            context.close()
