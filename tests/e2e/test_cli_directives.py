"""`bridgehead submit --script FILE -- ARGS...` as a user meets it (bridgehead up, local
cluster): the script gets its arguments, its #SBATCH directives give the job's request and
name unless an option gives them, and a refused directive is exit 2 naming its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.procs import Proc, bh

pytestmark = pytest.mark.slow

SCRIPT = '#!/bin/sh\n#SBATCH --job-name=from-script -c 2   # two threads\nprintf "%s|" "$@"\n'


def test_a_script_gets_its_args_and_its_directives(up: tuple[Path, Proc],
                                                   tmp_path: Path) -> None:
    home, _ = up
    job_sh = tmp_path / "job.sh"
    job_sh.write_text(SCRIPT)
    run = bh(home, "submit", "--wait", "--json", "--script", str(job_sh), "--", "a", "b c")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert job["spec"]["name"] == "from-script" and job["spec"]["resources"]["cores"] == 2
    assert bh(home, "logs", job["id"]).stdout.strip() == "a|b c|"
    mine = json.loads(bh(home, "submit", "--json", "--script", str(job_sh), "--name", "mine",
                         "--cores", "3").stdout)
    assert mine["spec"]["name"] == "mine" and mine["spec"]["resources"]["cores"] == 3


def test_a_refused_directive_is_exit_2_naming_its_line(up: tuple[Path, Proc],
                                                       tmp_path: Path) -> None:
    home, _ = up
    job_sh = tmp_path / "job.sh"
    job_sh.write_text("#!/bin/sh\n#SBATCH -n 1\n#SBATCH --export=NONE\ntrue\n")
    refused = bh(home, "submit", "--script", str(job_sh))
    assert refused.returncode == 2, refused
    [line] = refused.stderr.strip().splitlines()
    assert "script line 3: #SBATCH --export=NONE: not allowed" in line, line


def test_an_option_typed_at_its_default_value_still_wins(up: tuple[Path, Proc],
                                                          tmp_path: Path) -> None:
    """``--cores 1 --nodes 1`` typed beat ``#SBATCH -c 2 -N 2``; left out, the directive
    gives the value."""
    home, _ = up
    job_sh = tmp_path / "job.sh"
    job_sh.write_text("#!/bin/sh\n#SBATCH -c 2 -N 2\ntrue\n")
    typed = bh(home, "submit", "--json", "--script", str(job_sh), "--cores", "1",
               "--nodes", "1")
    assert typed.returncode == 0, typed.stderr
    resources = json.loads(typed.stdout)["spec"]["resources"]
    assert (resources["cores"], resources["nodes"]) == (1, 1)
    job_sh.write_text("#!/bin/sh\n#SBATCH -c 2\ntrue\n")
    left_out = bh(home, "submit", "--json", "--script", str(job_sh))
    assert left_out.returncode == 0, left_out.stderr
    assert json.loads(left_out.stdout)["spec"]["resources"]["cores"] == 2
