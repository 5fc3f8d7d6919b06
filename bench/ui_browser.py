"""The UI benchmark's browser half: real headless Chromium (Debian's, as tests/ui) on a real
server. Log-follow lag: from just before an agent's report of a log line to that line painted
on the job page (the page stamps it from a MutationObserver, at the next animation frame);
beside it, a poller that asks every second (a log view that refetches on a timer) is timed on
the same lines. Big log: a 100 MB log's job page opened, and what the tab then holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from common import BenchError

from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import JobSpec, JobState, Transition
from bridgehead.store.base import LogChunk

CHROMIUM = os.environ.get("BRIDGEHEAD_TEST_CHROMIUM", "/usr/bin/chromium")
FOLLOW_CLUSTER = "follow"
AGENT_ID = "bench-ui-agent"
POLL_S = 1.0
"""The baseline follower's period (Armada Lookout refetches a log every second)."""
WATCH = """() => {
  window.__seen = {};
  const pre = document.querySelector('pre[data-log="stdout"]');
  new MutationObserver(() => {
    const found = pre.textContent.match(/mark-\\d+/g) || [];
    const fresh = found.filter((m) => !(m in window.__seen));
    if (fresh.length) requestAnimationFrame(() => {
      for (const m of fresh) if (!(m in window.__seen)) window.__seen[m] = Date.now();
    });
  }).observe(pre, {childList: true, characterData: true, subtree: true});
}"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before the browser starts
        raise BenchError(f"{CHROMIUM} is missing (apt-get install chromium; scripts/test does)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            await browser.close()


async def login(context: Any, url: str, token: str) -> Any:
    page = await context.new_page()
    await page.goto(f"{url}/ui/login")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{url}/ui")
    return page


async def running_job(admin: AsyncClient, agent: AsyncClient, name: str,
                      end: JobState | None = None) -> str:
    """A job of the follow cluster taken by the bench's agent to running (or to ``end``)."""
    job = await admin.submit(JobSpec(cluster=FOLLOW_CLUSTER, command=("true",), name=name,
                                     tenant="t00"))
    for _ in range(50):
        claimed, _ = await agent.claim(FOLLOW_CLUSTER, AGENT_ID, max_jobs=10, wait_s=1)
        if any(j.id == job.id for j in claimed):
            break
    else:
        raise BenchError(f"job {job.id} was never claimed")
    steps = [JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING, *([end] if end else [])]
    for state in steps:
        applied = await agent.report(FOLLOW_CLUSTER, AGENT_ID, transitions=[Transition(
            job_id=job.id, state=state, native_id="1" if state is JobState.SUBMITTED else None,
            exit_code=0 if state is JobState.SUCCEEDED else None)])
        if applied != [True]:
            raise BenchError(f"report {state} of {job.id} refused")
    return job.id


async def _poller(url: str, token: str, job_id: str, seen: dict[str, float],
                  stop: asyncio.Event) -> int:
    """The baseline: GET the log from the last offset every POLL_S (no wait); stamps each
    mark when a poll brings it. Returns the polls made."""
    offset, polls = 0, 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=30) as http:
        while not stop.is_set():
            r = await http.get(f"/v1/jobs/{job_id}/logs", params={"offset": offset})
            polls += 1
            at = time.time() * 1000
            for line in r.content.decode().splitlines():
                seen.setdefault(line.split()[0], at)
            offset = int(r.headers["X-Next-Offset"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
    return polls


async def follow_lag(browser: Any, url: str, admin_token: str, agent_token: str,
                     samples: int) -> dict[str, Any]:
    """Lags (ms) of the page and of the 1 s poller for ``samples`` lines, each reported at
    a random moment; and the page's requests that brought them (long-polls, counted)."""
    admin, agent = AsyncClient(url, admin_token), AsyncClient(url, agent_token)
    context = await browser.new_context()
    try:
        await agent.heartbeat(FOLLOW_CLUSTER, AGENT_ID, backend="local")
        job_id = await running_job(admin, agent, "follow-me")
        page = await login(context, url, admin_token)
        polls: list[str] = []
        navigations: list[str] = []

        def on_request(r: Any) -> None:
            if f"/v1/jobs/{job_id}/logs" in r.url and "wait=" in r.url:
                polls.append(r.url)

        def on_navigated(frame: Any) -> None:
            if frame == page.main_frame:
                navigations.append(frame.url)

        page.on("request", on_request)
        page.on("framenavigated", on_navigated)
        await page.goto(f"{url}/ui/jobs/{job_id}")
        await page.wait_for_function(
            "() => document.querySelector('[data-live-state]').textContent === 'live'")
        await page.evaluate(WATCH)
        baseline: dict[str, float] = {}
        stop = asyncio.Event()
        poller = asyncio.create_task(_poller(url, admin_token, job_id, baseline, stop))
        rng, pos, sent = random.Random(3), 0, {}
        for i in range(samples + 1):
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            data = f"mark-{i} {'x' * rng.randrange(20, 200)}\n".encode()
            sent[f"mark-{i}"] = time.time() * 1000
            await agent.report(FOLLOW_CLUSTER, AGENT_ID, logs=[
                LogChunk(job_id=job_id, stream="stdout", pos=pos, data=data)])
            pos += len(data)
            await page.wait_for_function(f"() => window.__seen['mark-{i}'] !== undefined",
                                         timeout=30_000)
        await asyncio.sleep(POLL_S * 1.5)
        stop.set()
        baseline_polls = await poller
        seen = await page.evaluate("() => window.__seen")
        text = await page.locator('pre[data-log="stdout"]').inner_text()
    finally:
        await context.close()
        await admin.aclose()
        await agent.aclose()
    marks = [f"mark-{i}" for i in range(1, samples + 1)]  # mark-0 is a warm-up
    if [line.split()[0] for line in text.splitlines()] != [f"mark-{i}" for i in
                                                            range(samples + 1)]:
        raise BenchError("the followed log is not every reported line once, in order")
    missing = [m for m in marks if m not in baseline]
    if missing:
        raise BenchError(f"the 1 s poller never saw {missing[:3]}")
    return {"lags": [seen[m] - sent[m] for m in marks],
            "baseline_lags": [baseline[m] - sent[m] for m in marks],
            "long_polls": len(polls), "navigations": len(navigations),
            "baseline_polls": baseline_polls}


def _renderers() -> dict[int, int]:
    """pid -> RSS (bytes) of each Chromium renderer process under this process."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    mine, out = {os.getpid()}, {}
    for _ in range(8):
        mine |= {pid for pid, ppid in parents.items() if ppid in mine}
    for pid in mine:
        with contextlib.suppress(OSError):
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                status = Path(f"/proc/{pid}/status").read_text()
                rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
                out[pid] = int(rss.split()[1]) * 1024
    return out


async def big_log_open(browser: Any, url: str, admin_token: str, job_id: str,
                       size: int) -> dict[str, Any]:
    """Open the job page of a ``size``-byte log: the time to its load event with the log's
    tail shown, the tab's renderer RSS and JS heap, and what the page holds of the log."""
    context = await browser.new_context()
    try:
        page = await login(context, url, admin_token)
        before = set(_renderers())
        started = time.perf_counter()
        response = await page.goto(f"{url}/ui/jobs/{job_id}", wait_until="load")
        await page.locator('pre[data-log="stdout"]').wait_for()
        elapsed = (time.perf_counter() - started) * 1000
        html = await response.body() if response else b""
        shown = await page.evaluate(
            "() => { const p = document.querySelector('pre[data-log=\"stdout\"]');"
            " return {start: Number(p.dataset.start), end: Number(p.dataset.end),"
            " chars: p.textContent.length,"
            " earlier: !!document.querySelector('a[data-earlier=\"stdout\"]')}; }")
        cdp = await context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        metrics = {m["name"]: m["value"] for m in
                   (await cdp.send("Performance.getMetrics"))["metrics"]}
        renderers = _renderers()
        fresh = [rss for pid, rss in renderers.items() if pid not in before]
        rss = max(fresh or renderers.values() or [0])
    finally:
        await context.close()
    if shown["end"] != size or shown["start"] <= 0 or not shown["earlier"]:
        raise BenchError(f"the big log's page is not its tail with 'load earlier': {shown}")
    return {"ms": elapsed, "html_bytes": len(html), "tail_start": shown["start"],
            "tail_end": shown["end"], "chars_shown": shown["chars"],
            "tab_rss_mb": round(rss / 2**20, 1),
            "js_heap_mb": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1),
            "rss_of_new_renderer": bool(fresh)}


async def whole_log_fetch_ms(url: str, token: str, job_id: str, size: int) -> float:
    """The baseline: the whole log through GET /v1/jobs/{id}/logs, 4 MiB a call (what a view
    that loads all of a log before showing it does)."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=120) as http:
        started, offset = time.perf_counter(), 0
        while offset < size:
            r = await http.get(f"/v1/jobs/{job_id}/logs",
                               params={"offset": offset, "limit": 4 << 20})
            offset = int(r.headers["X-Next-Offset"])
            if not r.content:
                raise BenchError(f"the whole-log read stopped at {offset} of {size}")
        return (time.perf_counter() - started) * 1000
