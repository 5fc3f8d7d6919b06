"""``bridgehead demo``: the main job on the embedded default, shown as a person sees it."""

from __future__ import annotations

import asyncio
import sys

from bridgehead.cli import output
from bridgehead.client import AsyncClient
from bridgehead.domain.jobs import JobSpec, JobState, Resources

STEP = (
    "import os, time\n"
    "n = int(os.environ['STEP'])\n"
    "for i in range(3):\n"
    "    print(f'step {n}: chunk {i + 1}/3 processed', flush=True)\n"
    "    time.sleep(0.2 + 0.05 * n)\n"
    "print(f'step {n}: done')\n"
)


async def _run(n: int, cluster: str) -> bool:
    specs = [JobSpec(cluster=cluster, name=f"demo-{i}", command=(sys.executable, "-c", STEP),
                     env={"STEP": str(i)}, labels={"workflow": "demo"},
                     resources=Resources(cores=1, walltime_s=120))
             for i in range(n)]
    async with AsyncClient() as bh:
        jobs = await bh.submit_many(specs)
        output.console.print(f"submitted {len(jobs)} jobs to cluster [bold]{cluster}[/]")
        done = await output.wait_with_progress(bh, [j.id for j in jobs], timeout=600)
        output.show_jobs(done, None)
        first = done[0]
        data, _, _ = await bh.read_logs(first.id)
        output.console.rule(f"log of {first.spec.name} ({first.id})")
        output.console.print(data.decode(errors="replace"), end="", markup=False)
    return all(j.state is JobState.SUCCEEDED for j in done)


def run_demo(n: int, cluster: str) -> bool:
    return asyncio.run(_run(n, cluster))
