"""The shipped examples work: the demo workflow's scripts and the event rules' scripts run
with the standard library alone (``python -S``: no site-packages) and produce their files."""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from bridgehead.domain.events import Event
from bridgehead.domain.jobs import Resources
from bridgehead.domain.workflows import Foreach, RetryPolicy, WorkflowSpec
from bridgehead.workflows import parse_workflow

ROOT = Path(__file__).parents[2]
EXAMPLE_LINK = ROOT / "examples" / "workflows" / "crystallography.yaml"
EVENTS = ROOT / "examples" / "events"


def demo() -> WorkflowSpec:
    text = (importlib.resources.files("bridgehead.demo") / "crystallography.yaml").read_text()
    return parse_workflow(text, "crystallography.yaml")


def run_script(script: str, path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``script`` with this Python, without site-packages: stdlib only."""
    path.write_text(script)
    return subprocess.Popen([sys.executable, "-S", str(path)], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


# -- the demo workflow -----------------------------------------------------------------------
def test_the_demo_workflow_is_the_example_and_has_the_expected_shape() -> None:
    assert os.readlink(EXAMPLE_LINK) == "../../src/bridgehead/demo/crystallography.yaml"
    wf = demo()
    assert wf == parse_workflow(EXAMPLE_LINK.read_text(), "crystallography.yaml")
    assert wf.name == "crystallography"
    assert wf.topological_order() == ["find_peaks", "index", "merge", "figures_of_merit"]
    assert wf.params == {"sample": "lysozyme", "bins": 6, "frames": 600, "resolution": "1.8",
                         "workdir": "/tmp/bridgehead-demo"}
    assert wf.step("index").foreach == Foreach(param="bins")
    assert len(wf.job_specs("index")) == 6
    for step in wf.steps:
        assert step.script is not None and step.script.startswith("#!/usr/bin/env python3\n")
        assert step.cluster == "local"
        assert step.resources == Resources(cores=1, memory_mb=256, walltime_s=600)
    assert wf.step("merge").retries == RetryPolicy(count=1, backoff_s=2.0)


def test_the_demo_workflow_scripts_run_in_order_and_write_their_files(tmp_path: Path) -> None:
    wf = demo()
    work = tmp_path / "work"
    params = {"workdir": str(work)}
    logs: dict[str, list[str]] = {}
    for step in wf.topological_order():
        jobs = wf.job_specs(step, params)  # the scripts and env, rendered with the params
        procs = [run_script(job.script or "", tmp_path / f"{step}-{i}.py", job.env)
                 for i, job in enumerate(jobs)]  # a fan-out's jobs run side by side
        logs[step] = [finish(proc) for proc in procs]
    assert sorted(p.name for p in work.iterdir()) == [
        "figures_of_merit.json", *(f"index-{b}.json" for b in range(6)), "merged.json",
        "peaks.json"]
    assert "frame 600/600" in logs["find_peaks"][0]
    assert all(f"bin {b}: indexed" in log and "cell a=79.1 b=79.1 c=37.9" in log
               for b, log in enumerate(logs["index"]))
    assert "multiplicity" in logs["merge"][0] and "CC1/2" in logs["figures_of_merit"][0]
    merged = json.loads((work / "merged.json").read_text())
    assert merged["sample"] == "lysozyme" and 9_000 < merged["unique"] < 12_000
    assert merged["indexed"] == sum(json.loads((work / f"index-{b}.json").read_text())["indexed"]
                                    for b in range(6))
    shells = json.loads((work / "figures_of_merit.json").read_text())["shells"]
    assert len(shells) == 8 and shells[-1]["d_min"] == pytest.approx(1.8)
    # seeded: the same params give the same numbers
    again = run_script(wf.job_specs("find_peaks", params)[0].script or "",
                       tmp_path / "again.py", wf.job_specs("find_peaks", params)[0].env)
    assert finish(again) == logs["find_peaks"][0]


# -- the event rules ------------------------------------------------------------------------
def rule_scripts() -> dict[str, dict[str, object]]:
    """Each rule's submit_job template, read as plain YAML (not through the rules parser)."""
    data = yaml.safe_load((EVENTS / "rules.yaml").read_text())
    return {rule["name"]: rule["actions"][0]["submit_job"] for rule in data["rules"]}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_the_reduce_and_plot_scripts_write_a_summary_and_a_valid_png(tmp_path: Path) -> None:
    jobs = rule_scripts()
    reduce, plot = jobs["reduce-new-data"], jobs["plot-reduced"]
    assert reduce["env"] == {"INPUT": "{{ data.path }}"}
    assert reduce["labels"] == {"pipeline": "reduce", "input": "{{ data.path }}"}
    assert plot["env"] == {"INPUT": "{{ data.labels.input }}"}
    data_dir = tmp_path / "incoming dir"  # a space in the path: env, no shell
    data_dir.mkdir()
    csv = data_dir / "sample.csv"
    shutil.copy(EVENTS / "sample.csv", csv)

    out = finish(run_script(str(reduce["script"]), tmp_path / "reduce.py", {"INPUT": str(csv)}))
    assert "sample.csv: 200 rows" in out
    summary = json.loads((data_dir / "sample.summary.json").read_text())
    assert summary["rows"] == 200 and summary["t_min"] == 0.0 and summary["t_max"] == 19.9
    assert -1 < summary["min"] < 0 < summary["max"] < 1 and summary["input"] == str(csv)

    finish(run_script(str(plot["script"]), tmp_path / "plot.py",
                      {"INPUT": str(csv)}))
    chunks = png_chunks((data_dir / "sample.png").read_bytes())
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour) == (640, 360, 8, 2)  # 8-bit RGB
    pixels = zlib.decompress(chunks[1][1])
    assert len(pixels) == height * (1 + 3 * width)
    rows = [pixels[y * (1 + 3 * width):(y + 1) * (1 + 3 * width)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)  # filter type None
    drawn = sum(row[1:].count(b"\x20\x60\xc0") for row in rows)
    assert drawn > 500  # the signal's line


def test_the_plot_script_refuses_an_input_that_is_not_a_csv_path(tmp_path: Path) -> None:
    plot = rule_scripts()["plot-reduced"]
    proc = run_script(str(plot["script"]), tmp_path / "plot.py", {"INPUT": "other"})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "not the path of a reduced CSV" in out


def test_the_rules_file_parses_and_chains_reduce_to_plot() -> None:
    try:
        from bridgehead.rules.spec import load_rules
    except ImportError:
        pytest.skip("rules parser not yet available")
    reduce, plot = load_rules(EVENTS / "rules.yaml")
    assert (reduce.name, plot.name) == ("reduce-new-data", "plot-reduced")
    data = {"path": "/data/in/run 1.csv", "name": "run 1.csv", "stem": "run 1",
            "suffix": ".csv", "dir": "/data/in", "size": 2612, "mtime": 1.0}
    created = Event(type="file.created", subject=data["path"], data=data,
                    source="bridgehead.watch/node1")
    assert reduce.matches(created) and not plot.matches(created)
    assert not reduce.matches(Event(type="file.created", subject="/x.txt", data={
        **data, "name": "x.txt"}, source="bridgehead.watch/node1"))
    assert not reduce.matches(Event(type="file.created", subject="/x.csv", data={
        **data, "size": 0}, source="bridgehead.watch/node1"))
    job = reduce.actions[0].job_spec(created, reduce.name, 0)  # type: ignore[union-attr]
    assert job.name == "reduce" and job.env == {"INPUT": data["path"]}
    assert job.labels["input"] == data["path"]  # label values are templates too
    assert job.cluster == "local" and job.labels["pipeline"] == "reduce"

    finished = Event(type="bridgehead.job.finished", subject="jobs/j1", data={
        "job_id": "j1", "cluster": "local", "state": "succeeded", "attempt": 1,
        "name": job.name, "labels": job.labels})
    assert plot.matches(finished) and not reduce.matches(finished)
    assert not plot.matches(Event(type="bridgehead.job.finished", subject="jobs/j1",
                                  data={**finished.data, "state": "failed"}))
    plotting = plot.actions[0].job_spec(finished, plot.name, 0)  # type: ignore[union-attr]
    assert plotting.env == {"INPUT": "/data/in/run 1.csv"}
    assert plotting.labels["pipeline"] == "plot"  # its own end does not start another plot
