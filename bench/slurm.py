"""Slurm benchmark: Bridgehead on a real Slurm cluster against driving Slurm by hand.

    python bench/slurm.py [--quick] [--jobs N] [--held-jobs H] [--latency-jobs K]
                          [--array-elements A]
                          [--poll-interval S] [--logs DIR] [--no-start-lab]
                          [--cluster alpha|gamma ...] [--backends slurm_cli,slurm_rest]

Runs on cluster ``alpha`` of ``scripts/slurm-lab`` (started if it is down; exit 2 if it cannot
start). Results go to ``bench/results/slurm.json``; ``bench/README.md`` explains each figure.
This file runs the parts: ``slurm_base`` (settings, the lab, Slurm commands), ``slurm_agents``
(agents, the hook drop-in, the event stream), ``slurm_throughput`` (1, 2), ``slurm_arrays``
(4), ``slurm_latency`` (3, 5) and ``slurm_report`` (aims, table).

1. Throughput. N trivial jobs (``true``) through Bridgehead: a real server process (SQLite in a
   temporary dir) and one real agent process (``--backend slurm_cli``, poll interval 1 s, wake
   socket in the cluster's wake dir, so the EpilogSlurmctld/PrologSlurmctld hook wakes it). The
   client submits them with ``submit_many`` and follows the server's event stream (SSE); the
   wall time runs from the first submit to the receipt of the last ``succeeded`` event. The
   baseline: a loop of ``sbatch --parsable --job-name=... --wrap true`` (argv lists, no shell,
   ``SLURM_CONF`` set), then ``squeue`` every second until none of them is pending or running,
   then ``sacct`` until it shows every one COMPLETED with exit code 0 (the clock stops there).
   The baseline runs first, so Bridgehead's run meets the N finished job records the baseline
   left in slurmctld.
2. Scheduler commands per poll cycle with H jobs in flight (held with ``--hold``: pending, and
   cheap). In-process, ``SlurmCliBackend.poll`` over the H native ids, counting its ``calls``
   (one ``squeue``; one ``sacct`` more only when some left the queue: a few are cancelled for
   that cycle), against a per-job poller that runs ``squeue -h -j ID -o %T`` for each job (the
   reference systems' way). Both timed per cycle. Every held job is cancelled at the end.
3. Job end -> ``succeeded`` on the server. Each job sleeps a moment and writes the time to a
   file as its last act; the client follows the event stream and takes the receipt time of
   the job's terminal event. Latency = receipt - recorded end. Three agents per backend
   (``--backends``: slurm_cli, slurm_rest), all with a long poll interval (5 s, the reference
   systems'): ``hook``, its wake socket in the wake dir, where the hook sends a datagram;
   ``hook_event`` (5: the hybrid event), no socket (an agent on another host): the hook posts
   the job's end to the server, which answers the agent's claim long-poll with "poll now";
   ``polling``, nothing but its polls. The K jobs go in ONE batch: a job submitted later would
   wake the agent (every submit starts a poll) and flatter the polling-only figure.
4. Arrays (``bench/slurm_arrays.py``). A fan-out of A held ``true`` elements as ONE array job
   through Bridgehead (one ``POST /v1/jobs`` with ``array``, one slurm_cli agent, one
   ``sbatch --array``) against A ``sbatch --hold job.sh`` calls in a loop: the submit's wall
   time and the time until ``squeue -r`` lists all A. The run fails unless the agent made
   exactly one sbatch call and squeue lists A elements of one Slurm job with the array's tag.

The hook is the bench's own: a drop-in of the cluster's hook.d running ``bridgehead
slurm-event`` with this interpreter. A run that relies on it fails unless the agent counted
the hook's wake-ups (its heartbeat's ``wakes``): never polling figures labelled as the hook's.
``--cluster`` (repeatable) picks the lab's clusters (alpha: Slurm 22.05, gamma: 24.11).

Sizes: N = H = 500, K = 30, A = 1,000; ``--quick``: N = 20, H = 100, K = 20, A = 100 (alpha
starts only 2-4 jobs a second, so N = 100 each way alone would take close to a minute).

Every process started here is stopped (TERM, then KILL) and every Slurm job of this run that
is still pending or running at the end is cancelled, also on failure. Jobs of other users of
the lab are left alone (and counted: they would skew the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import BenchError, console, make_tokens, publish, server
from rich.console import Console
from slurm_agents import hook_drop_in
from slurm_arrays import array_cluster, arrays
from slurm_base import (
    ROOT,
    BenchConfig,
    Lab,
    LabDown,
    Run,
    clean_up,
    foreign_jobs,
    load_lab,
    slurm_version,
)
from slurm_latency import LATENCY_MODES, latency, latency_cluster
from slurm_report import aims, combine, table
from slurm_throughput import (
    ENDED_IN_CYCLE,
    SQUEUE_EVERY_S,
    bridgehead_throughput,
    commands_per_cycle,
    direct_throughput,
    slurm_start_rate,
)

from bridgehead.domain.jobs import MAX_ARRAY_SIZE

RESULTS = ROOT / "bench" / "results" / "slurm.json"


# -- the run ---------------------------------------------------------------------------------
async def run(cfg: BenchConfig, lab: Lab) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bh-bench-slurm-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        os.environ["BRIDGEHEAD_HOME"] = str(work / "home")  # no user config.toml/client.toml
        bench = Run(lab=lab, work=work, prefix=f"bhbench-{secrets.token_hex(3)}")
        since = time.time()
        try:
            results = await measure(cfg, bench)
        finally:
            await clean_up(bench)
            if cfg.logs is not None:
                keep_logs(work, cfg.logs)
        foreign = await foreign_jobs(bench, since)
    if foreign:
        console.log(f"[yellow]warning:[/] {len(foreign)} jobs of others ran on {lab.name} during "
                    f"this run and competed for its {lab.cpus} CPUs: {', '.join(foreign[:5])}")
    version = await slurm_version(lab)
    results["slurm_version"] = version.split()[-1] if version else None
    results["machine"] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "slurm": version,
                          "cluster": lab.name, "cluster_cpus": lab.cpus,
                          "alpha_cpus": lab.cpus}
    results["run"] = {"quick": cfg.quick, "foreign_jobs": len(foreign),
                      "foreign_job_names": sorted(set(foreign))[:20],
                      "duration_s": round(time.perf_counter() - started, 1),
                      "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return results


def keep_logs(work: Path, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for log in work.glob("*.log"):
        shutil.copy(log, to / log.name)
    for error in work.glob("hook-spool-*/last-error"):  # what the hook met, if anything
        shutil.copy(error, to / f"{error.parent.name}.last-error")
    console.log(f"logs copied to {to}")


async def measure(cfg: BenchConfig, bench: Run) -> dict[str, Any]:
    since = time.time()
    console.log(f"direct: {cfg.jobs} x sbatch --wrap true, squeue every {SQUEUE_EVERY_S} s")
    with hook_drop_in(bench):  # the same hook work as Bridgehead's run below
        direct = await direct_throughput(bench, cfg.jobs)
    dsn = f"sqlite:///{bench.work / 'bridgehead.db'}"
    tokens = await make_tokens(dsn, [bench.lab.name, array_cluster(bench), *(
        latency_cluster(bench, b, m) for b in cfg.backends for m in LATENCY_MODES)])
    async with server(dsn, bench.work, "sqlite") as url:
        console.log(f"bridgehead: {cfg.jobs} jobs through {url} and one slurm_cli agent")
        with hook_drop_in(bench):
            bridgehead = await bridgehead_throughput(bench, url, tokens, cfg.jobs)
        console.log(f"poll cycles: {cfg.held_jobs} held jobs")
        cycles = await commands_per_cycle(bench, cfg.held_jobs)
        console.log(f"array: {cfg.array_elements} held elements as one array vs "
                    f"{cfg.array_elements} sbatch calls")
        array = await arrays(bench, url, tokens, cfg.array_elements)
        by_backend = {b: await latency(cfg, bench, url, tokens, b) for b in cfg.backends}
    direct["slurm_starts_per_s"] = await slurm_start_rate(bench, since, f"{bench.prefix}-direct")
    bridgehead["slurm_starts_per_s"] = await slurm_start_rate(bench, since, f"{bench.prefix}-bh-")
    ratio = bridgehead["wall_s"] / direct["wall_s"]
    results: dict[str, Any] = {
        "jobs": cfg.jobs,
        "bridgehead_wall_s": bridgehead["wall_s"], "direct_wall_s": direct["wall_s"],
        "ratio": round(ratio, 2),
        "throughput": {"bridgehead": bridgehead, "direct": direct},
        "commands_per_cycle": cycles["commands"],
        "poll_cycle": cycles["detail"],
        "end_to_state_ms": by_backend[cfg.backends[0]],
        "end_to_state_ms_by_backend": by_backend,
        "array": array,
    }
    results["aims"] = aims(results)
    return results



def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (under a minute)")
    parser.add_argument("--jobs", type=int,
                        help="jobs for the throughput runs, each way (500; quick 20), and "
                             "the default of --held-jobs")
    parser.add_argument("--held-jobs", type=int,
                        help="jobs in flight for the poll-cycle count (--jobs; quick 100)")
    parser.add_argument("--latency-jobs", type=int,
                        help="jobs per latency run (30; quick 20)")
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="the latency agents' poll interval in seconds (5)")
    parser.add_argument("--array-elements", type=int,
                        help="(4): elements of the one array, and sbatch calls of the baseline "
                             "(1000; quick 100; Slurm's MaxArraySize must allow them)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="copy the server and agent logs here")
    parser.add_argument("--no-start-lab", action="store_true",
                        help="exit 2 if the lab is down instead of starting it")
    parser.add_argument("--cluster", action="append", dest="clusters",
                        help="a cluster of the lab, repeatable (alpha)")
    parser.add_argument("--backends", default="slurm_cli,slurm_rest",
                        help="the latency agents' backends, comma-separated "
                             "(slurm_cli,slurm_rest)")
    args = parser.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    if not backends or set(backends) - {"slurm_cli", "slurm_rest"}:
        parser.error(f"--backends: slurm_cli and/or slurm_rest, not {args.backends!r}")
    jobs = args.jobs or (20 if args.quick else 500)
    held = args.held_jobs or (100 if args.quick and not args.jobs else jobs)
    latency_jobs = args.latency_jobs or (20 if args.quick else 30)
    array_elements = args.array_elements or (100 if args.quick else 1000)
    if jobs < 1 or held <= ENDED_IN_CYCLE or latency_jobs < 2 or args.poll_interval <= 0:
        parser.error(f"--jobs must be >= 1, --held-jobs > {ENDED_IN_CYCLE}, --latency-jobs >= 2,"
                     " --poll-interval > 0")
    if not 1 <= array_elements <= MAX_ARRAY_SIZE:
        parser.error(f"--array-elements must be 1 to {MAX_ARRAY_SIZE}, not {array_elements}")
    return BenchConfig(jobs=jobs, held_jobs=held, latency_jobs=latency_jobs,
                       poll_interval_s=args.poll_interval, array_elements=array_elements,
                       quick=args.quick, output=args.output,
                       logs=args.logs, start_lab=not args.no_start_lab,
                       clusters=tuple(args.clusters or ("alpha",)), backends=backends)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    by_cluster: dict[str, dict[str, Any]] = {}
    for name in cfg.clusters:
        try:
            by_cluster[name] = asyncio.run(run(cfg, load_lab(name, start=cfg.start_lab)))
        except LabDown as exc:
            console.print(f"[bold red]Slurm lab unavailable:[/] {exc}", soft_wrap=True)
            return 2
        except (BenchError, OSError) as exc:
            console.print(f"[bold red]benchmark failed on {name}:[/] {exc}", soft_wrap=True)
            return 1
        if name != cfg.clusters[-1]:
            Console(stderr=True, width=150).print(table(by_cluster[name]))
    results = combine(by_cluster)
    publish(results, cfg.output, table(by_cluster[cfg.clusters[-1]]), width=150)
    return 0


if __name__ == "__main__":
    sys.exit(main())
