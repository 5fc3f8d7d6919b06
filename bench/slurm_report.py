"""The Slurm benchmark's report: the aims of the issue, the table, one file for every
cluster."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def aims(r: dict[str, Any]) -> dict[str, bool]:
    """The aims of the issue, for reference (never asserted)."""
    return {"bridgehead_wall <= 1.2 x direct": r["ratio"] <= 1.2,
            "commands_per_cycle <= 2": r["commands_per_cycle"]["bridgehead"] <= 2,
            "hook p50 < 1000 ms": r["end_to_state_ms"]["hook"]["p50"] < 1000,
            "hook_event p50 < 1000 ms": r["end_to_state_ms"]["hook_event"]["p50"] < 1000}


def _met(flag: bool) -> str:
    return "[green]met[/]" if flag else "[red]not met[/]"


def _rate(per_s: float | None) -> str:
    return "-" if per_s is None else f"{per_s:.1f}"


def _latency(figures: dict[str, Any]) -> str:
    return f"p50 {figures['p50']:,.0f} / p99 {figures['p99']:,.0f}"


def table(r: dict[str, Any]) -> Table:
    a, t1, c = r["aims"], r["throughput"], r["poll_cycle"]
    t = Table(title=f"Bridgehead on Slurm (cluster {r['machine']['cluster']}, "
                    f"{r['machine']['cluster_cpus']} CPUs; "
                    f"Slurm {r['machine']['slurm'].split()[-1]}; {r['machine']['nproc']} CPUs "
                    "on the machine)")
    for column in ("Measurement", "Bridgehead", "Baseline", "Ratio", "Aim", ""):
        t.add_column(column, justify="left" if column in ("Measurement", "Aim") else "right")
    t.add_row(f"{r['jobs']:,} x `true`: first submit -> all succeeded (s)",
              f"{r['bridgehead_wall_s']:.1f}", f"{r['direct_wall_s']:.1f}",
              f"{r['ratio']:.2f}x", "<= 1.2x sbatch + squeue",
              _met(a["bridgehead_wall <= 1.2 x direct"]))
    t.add_row("  of which: until all are in Slurm (s)",
              f"{t1['bridgehead']['all_in_slurm_s']:.1f}",
              f"{t1['direct']['all_in_slurm_s']:.1f}", "", "", "")
    t.add_row("  Slurm's job starts per second meanwhile",
              *(_rate(t1[side]["slurm_starts_per_s"]) for side in ("bridgehead", "direct")),
              "", "", "")
    t.add_row(f"Scheduler commands per poll cycle ({c['jobs_in_flight']:,} in flight)",
              f"{r['commands_per_cycle']['bridgehead']}",
              f"{r['commands_per_cycle']['per_job_baseline']:,}", "", "<= 2 (squeue + sacct)",
              _met(a["commands_per_cycle <= 2"]))
    bh_ms, per_job_ms = (c[key]["median"] for key in ("bridgehead_cycle_ms",
                                                       "per_job_baseline_cycle_ms"))
    t.add_row("Poll cycle time, median (ms)", f"{bh_ms:,.0f}", f"{per_job_ms:,.0f}",
              f"{bh_ms / per_job_ms:.3f}x", "", "")
    array_rows(t, r["array"])
    for backend, figures in r["end_to_state_ms_by_backend"].items():
        polling = figures["polling"]
        for mode, what in (("hook", "hook's socket"), ("hook_event", "hook's event via server")):
            hook = figures[mode]
            aim = a[f"{mode} p50 < 1000 ms"] if backend == next(
                iter(r["end_to_state_ms_by_backend"])) else hook["p50"] < 1000
            t.add_row(f"Job end -> `succeeded` (ms), {backend}, {what} vs polling every "
                      f"{hook['poll_interval_s']:g} s", _latency(hook), _latency(polling),
                      f"{hook['p50'] / polling['p50']:.2f}x", "p50 < 1 s", _met(aim))
    return t


def array_rows(t: Table, a: dict[str, Any]) -> None:
    """(4): one array through Bridgehead (left) against a user's sbatch loop (right)."""
    b, n = a["baseline"], a["elements"]
    t.add_row(f"{n:,} held `true` as ONE array vs {n:,} sbatch calls: submit returned (s)",
              f"{a['submit_s']:.2f}", f"{b['submit_s']:.2f}", f"{a['submit_ratio']:.3f}x",
              "", "")
    t.add_row(f"  until all {n:,} are in squeue (s)", f"{a['all_in_slurm_s']:.2f}",
              f"{b['all_in_slurm_s']:.2f}", f"{a['all_in_slurm_ratio']:.3f}x", "", "")
    t.add_row("  the server knows every element's Slurm id (s)", f"{a['native_ids_s']:.2f}",
              "", "", "", "")
    t.add_row("  sbatch calls (counted)", f"{a['sbatch_calls']:,}", f"{b['sbatch_calls']:,}",
              "", "", "")


def combine(by_cluster: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One results file: alpha's figures at the top level (as before), every cluster's under
    ``clusters``."""
    first = by_cluster.get("alpha") or next(iter(by_cluster.values()))
    return {**first, "clusters": by_cluster}

