"""EMR's estimated usage: a cluster's NormalizedInstanceHours shared out to the steps it ran by
runtime x cores (:func:`bridgehead.backends.emr_resolve.apportion`): a step is charged at its
end from the hours accrued by then, never for later ones, and the shares of all its steps sum
to the cluster's hours."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridgehead.backends.emr_resolve import apportion
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.testing.emr_sim import EmrSimulator
from tests.emr.conftest import backend, ended, until

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = 3600.0


def step(start_h: float | None, end_h: float | None) -> dict[str, Any]:
    timeline: dict[str, datetime] = {}
    if start_h is not None:
        timeline["StartDateTime"] = T0 + timedelta(hours=start_h)
    if end_h is not None:
        timeline["EndDateTime"] = T0 + timedelta(hours=end_h)
    return {"Id": "s", "Status": {"State": "COMPLETED", "Timeline": timeline}}


def test_each_step_takes_the_hours_of_its_time_and_the_shares_sum_to_the_clusters() -> None:
    """A runs 0-1 h, B 0-2 h, C 1-3 h, one core each, on a cluster accruing 10 hours an hour.
    Shared hour by hour among the steps running, A used 5, B 10, C 15. Shares of the FINAL 30
    hours by work (1:2:2) would charge A 6, for hours after it ended; the old rule (the hours
    so far against all the work done so far) gave A 5, B 10 and C 30 x 2/5 = 12: C missed 3
    hours it used (and within EMR's first hour, whose hours are counted whole at once, the
    shares summed above the cluster's)."""
    [a] = apportion([(step(0, 1), 1)], running_work=1 * HOUR, unclaimed_hours=10)  # B ran 1 h
    assert a is not None and a.instance_hours == 5
    charged = a.instance_hours
    [b] = apportion([(step(0, 2), 1)], running_work=1 * HOUR, unclaimed_hours=20 - charged)
    assert b is not None and b.instance_hours == 10  # C had run 1 h
    charged += b.instance_hours
    [c] = apportion([(step(1, 3), 1)], running_work=0, unclaimed_hours=30 - charged)
    assert c is not None and c.instance_hours == 15
    assert charged + c.instance_hours == 30
    assert (c.elapsed_s, c.cores, c.estimated) == (2 * HOUR, 1, True)


def test_steps_that_end_in_one_cycle_share_by_runtime_x_cores() -> None:
    out = apportion([(step(0, 1), 1), (step(0, 1), 3), (step(None, None), 2)], running_work=0,
                    unclaimed_hours=24)
    assert [u.instance_hours if u else None for u in out] == [6, 18, None]  # never started


async def test_several_steps_on_one_cluster_share_its_hours(sim: EmrSimulator,
                                                           tmp_path: Path) -> None:
    emr = backend(sim, tmp_path, step_concurrency=4)
    sleeps = {"u-short": ("0.2", 1), "u-mid": ("1.2", 2), "u-long": ("2.4", 4)}
    for tag, (seconds, cores) in sleeps.items():
        await emr.submit(tag, JobSpec(cluster="emr", command=("sleep", seconds),
                                      resources=Resources(cores=cores)))
    done = await until(emr, list(sleeps), ended(list(sleeps)))
    assert sim.calls["RunJobFlow"] == 1
    [cluster] = sim.clusters()
    hours = float(cluster.normalized_instance_hours)
    assert hours == 24  # 3 m5.xlarge (8 each), its first hour
    usages = {}
    for tag, status in done.items():
        assert status.state is JobState.SUCCEEDED, status
        usage = status.usage
        assert usage is not None and usage.estimated and usage.cores == sleeps[tag][1]
        assert usage.instance_hours is not None and usage.instance_hours > 0
        usages[tag] = usage
    assert math.isclose(sum(u.instance_hours or 0 for u in usages.values()), hours,
                        abs_tol=1e-5)
    # the first to end is charged from the hours by then, against the work done by then: at
    # least its share of all the work, never all of it (the others were running)
    work = {t: u.core_seconds for t, u in usages.items()}
    first = usages["u-short"].instance_hours or 0
    assert hours * work["u-short"] / sum(work.values()) <= first < hours
    assert usages["u-long"].instance_hours == max(u.instance_hours or 0
                                                  for u in usages.values())
    assert emr.record.charged[cluster.id] == sum(u.instance_hours or 0 for u in usages.values())
