"""``bridgehead cost`` against a real ``bridgehead up`` whose config prices its local cluster:
the costs of jobs that ran, by cluster and by workflow, as JSON and as a table with a chart;
bad input is exit 2 with one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Proc, bh, eventually, start_up


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("cost")
    (home / "config.toml").write_text("[server.prices.local]\ncore_hour = 3600.0\n")
    proc: Proc = start_up(home, slots=2)
    try:
        eventually(lambda: json.loads(bh(home, "clusters", "--json").stdout), 15,
                   what="a cluster")
        yield home
    finally:
        proc.kill()


def test_cost_of_jobs_that_ran(priced: Path) -> None:
    home = priced
    done = [json.loads(bh(home, "submit", "--wait", "--json", "--cores", "2", "--label",
                          "workflow=nightly", "--", "sleep", "1").stdout) for _ in range(2)]
    assert [d["state"] for d in done] == ["succeeded", "succeeded"]
    answer = json.loads(bh(home, "cost", "--by", "cluster", "--since", "1h", "--json").stdout)
    [row] = answer["rows"]
    # 1 $/core-second: each job ran about a second on 2 cores
    assert row["group"] == "local" and row["attempts"] == 2 and 4.0 <= row["cost"] < 30.0
    assert answer["unpriced"] == [] and answer["waste"] == 0.0
    by_workflow = json.loads(bh(home, "cost", "--by", "workflow", "--json").stdout)
    assert [r["group"] for r in by_workflow["rows"]] == ["nightly"]
    table = bh(home, "cost", "--by", "workflow", "--bucket", "day")
    assert table.returncode == 0, table.stderr
    assert "nightly" in table.stdout and "█" in table.stdout and "total" in table.stdout


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--by", "colour"],
                                  ["--since", "1h", "--until", "2h"]])
def test_bad_cost_input_is_one_line_and_exit_2(priced: Path, args: list[str]) -> None:
    result = bh(priced, "cost", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("bridgehead: error: ") and result.stdout == ""
