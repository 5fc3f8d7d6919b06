"""``bridgehead demo``: the main job on the embedded default, shown as a person sees it.

It runs the packaged workflow ``bridgehead/demo/crystallography.yaml`` (simulated serial
crystallography: peaks, indexing fanned out over bins, merging, figures of merit) in a fresh
work directory under ``$BRIDGEHEAD_HOME/demo/``, and follows it exactly like ``bridgehead
workflow run``: a progress row per step, each task's log as its job ends, then a summary.
"""

from __future__ import annotations

import secrets
import time
from importlib.resources import files
from typing import Any

from bridgehead import config
from bridgehead.cli import output
from bridgehead.cli.workflow import Follow, checked_params, launch
from bridgehead.domain.workflows import WorkflowSpec
from bridgehead.errors import InvalidSpec
from bridgehead.workflows import parse_workflow

DEMO_FILE = "crystallography.yaml"


def demo_workflow() -> tuple[str, WorkflowSpec]:
    """The packaged demo workflow: its text and its spec."""
    text = files("bridgehead.demo").joinpath(DEMO_FILE).read_text(encoding="utf-8")
    return text, parse_workflow(text, DEMO_FILE)


def demo_params(spec: WorkflowSpec, bins: int | None, cluster: str | None) -> dict[str, Any]:
    """A fresh workdir, ``bins`` when given, and ``cluster`` through the workflow's param of
    that name; a workflow without one runs where its file says (asking elsewhere: an error)."""
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    params: dict[str, Any] = {"workdir": str(config.home() / "demo" / name)}
    if bins is not None:
        params["bins"] = bins
    if cluster is not None and "cluster" in spec.params:
        params["cluster"] = cluster
    elif cluster is not None and any(step.cluster != cluster for step in spec.steps):
        where = sorted({step.cluster or "by labels" for step in spec.steps})
        raise InvalidSpec(f"the demo workflow runs on cluster {', '.join(where)} and has no "
                          f"'cluster' param to run it on {cluster!r}")
    checked_params(spec, params, DEMO_FILE)
    return params


def run_demo(bins: int | None, cluster: str | None, *, as_json: bool = False) -> int:
    """Run the demo workflow and follow it to its end: the exit code (0: it succeeded)."""
    text, spec = demo_workflow()
    params = demo_params(spec, bins, cluster)
    if not as_json:
        output.console.print(f"[bold]{spec.name}[/]: {spec.description}")
        output.console.print(f"work directory: {params['workdir']}")
    return launch(text, DEMO_FILE, params, key=None, how=Follow(as_json=as_json))
