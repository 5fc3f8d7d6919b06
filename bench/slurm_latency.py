"""The Slurm benchmark's (3) and (5): a job's end -> ``succeeded`` on the server, with the
hook's datagram, the hook's event through the server, and polling alone."""

from __future__ import annotations

import random
from typing import Any

from common import Tokens, console, latency_figures, read_stamp, until_online
from slurm_agents import (
    EventFollower,
    agent_log,
    check_all,
    event_cursor,
    hook_drop_in,
    slurm_agent,
    wake_ups,
)
from slurm_base import BenchConfig, Run

from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import JobSpec

LATENCY_SLEEP_S = (0.2, 0.8)
"""A latency job sleeps U(lo, hi) seconds before writing its end time."""


STAMP_SH = 'sleep "$1"; date +%s.%N > "$2"'
"""The latency job: sleeps, then writes the time as its last act (a shell: gamma's jobs run in
its chroot, without this interpreter)."""
LATENCY_MODES = ("hook", "hook_event", "polling")
"""hook: the agent's wake socket is in the wake dir, where the hook sends a datagram (an agent
on the controller's host); hook_event: no socket, the hook posts the job's event to the server,
which answers the agent's claim long-poll with "poll now" (an agent on another host);
polling: nothing wakes the agent but its polls."""


async def end_to_state(run: Run, url: str, tokens: Tokens, name: str, k: int, poll_s: float,
                       *, mode: str, backend: str) -> tuple[list[float], int]:
    """ms from each job's recorded end to the client's receipt of its terminal event, and the
    agent's push wake-ups (BenchError if a hook mode had none)."""
    stamps = run.scratch / f"stamps-{name}"
    stamps.mkdir()
    rng = random.Random(k)  # the same job durations for every agent
    specs = [JobSpec(cluster=name, name=f"{run.prefix}-lat-{name}-{i}", command=(
        "sh", "-c", STAMP_SH, "sh", f"{rng.uniform(*LATENCY_SLEEP_S):.3f}", str(stamps / str(i))))
        for i in range(k)]
    post = mode == "hook_event"
    with hook_drop_in(run, server=url if post else None, cluster=name,
                      token=tokens.agents[name]):
        async with AsyncClient(url, tokens.admin) as admin, slurm_agent(
                run, url, tokens.agents[name], name, poll_s=poll_s, hook=mode == "hook",
                backend=backend) as agent:
            await until_online(admin, name, agent, agent_log(run, name))
            async with EventFollower(url, tokens.admin, await event_cursor(admin)) as events:
                ids = [j.id for j in await admin.submit_many(specs)]
                await events.until_ended(ids, agent, agent_log(run, name))
            by = {"hook": "socket", "hook_event": "server"}.get(mode)
            # ends close together share one wake-up (the agent polls them all at once), so
            # a hook that fires gives far fewer wake-ups than events: a tenth is the floor
            wakes = await wake_ups(admin, name, by, max(1, k // 10)) if by else 0
    check_all(events.ended, ids, f"latency ({name})")
    return [(events.ended[i].received - read_stamp(stamps / str(n))) * 1000
            for n, i in enumerate(ids)], wakes


async def latency(cfg: BenchConfig, bench: Run, url: str, tokens: Tokens,
                  backend: str) -> dict[str, Any]:
    """Every latency mode with one backend: {mode: figures}."""
    out: dict[str, Any] = {}
    for mode in LATENCY_MODES:
        console.log(f"end -> succeeded on {bench.lab.name}, {backend}, {mode}: "
                    f"{cfg.latency_jobs} jobs, agent poll {cfg.poll_interval_s} s")
        samples, wakes = await end_to_state(
            bench, url, tokens, latency_cluster(bench, backend, mode), cfg.latency_jobs,
            cfg.poll_interval_s, mode=mode, backend=backend)
        out[mode] = latency_figures(samples, poll_interval_s=cfg.poll_interval_s,
                                    backend=backend, wake_ups=wakes)
    return out


def latency_cluster(bench: Run, backend: str, mode: str) -> str:
    """One Bridgehead cluster per latency agent, so that jobs of one run can never be claimed
    by another run's agent (nor woken by another run's events)."""
    return f"{bench.lab.name}-{backend.removeprefix('slurm_')}-{mode.replace('_', '-')}"

