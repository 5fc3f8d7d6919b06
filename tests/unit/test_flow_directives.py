"""#SBATCH directives of workflow steps and rule templates: what the step or template wrote
explicitly (even a default value) wins, a directive fills the rest; `workflow validate`
refuses a bad directive with one line naming the step and the script's line; the JSON of
a parsed workflow shows what each step gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridgehead.domain.events import Event
from bridgehead.domain.jobs import Resources
from bridgehead.domain.rules import rule_from_dict
from bridgehead.domain.workflows import StepSpec, WorkflowSpec
from bridgehead.errors import InvalidSpec
from bridgehead.workflows.spec import parse_workflow
from tests.unit.test_workflow_spec import bridgehead

SCRIPT = "#!/bin/sh\n#SBATCH -c 8 --mem=4G\n#SBATCH --partition=big\necho hi\n"


def flow(resources: str = "", defaults: str = "") -> WorkflowSpec:
    text = ("name: w\ndefaults: {cluster: c" + defaults + "}\nsteps:\n  - id: a\n"
            + (f"    resources: {resources}\n" if resources else "")
            + "    script: |\n" + "".join(f"      {line}\n" for line in SCRIPT.splitlines()))
    return parse_workflow(text, "w.yaml")


def test_what_the_step_writes_wins_even_at_its_default_value() -> None:
    [job] = flow("{cores: 1}").job_specs("a")
    assert (job.resources.cores, job.resources.memory_mb, job.resources.partition) == (
        1, 4096, "big")
    [job] = flow().job_specs("a")
    assert job.resources.cores == 8


def test_the_defaults_block_counts_as_written() -> None:
    spec = flow(defaults=", resources: {memory: 1G, partition: small}")
    assert spec.steps[0].given == ("memory_mb", "partition")
    [job] = spec.job_specs("a")
    assert (job.resources.cores, job.resources.memory_mb, job.resources.partition) == (
        8, 1024, "small")


def test_a_step_built_in_python_gives_what_differs_from_the_defaults() -> None:
    step = StepSpec(id="a", cluster="c", script=SCRIPT, resources=Resources(memory_mb=100))
    [job] = WorkflowSpec(name="w", steps=(step,)).job_specs("a")
    assert (job.resources.cores, job.resources.memory_mb) == (8, 100)


def test_validate_names_the_step_and_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: w\ndefaults: {cluster: c}\nsteps:\n  - id: prep\n    script: |\n"
                   "      #!/bin/sh\n      #SBATCH -n 2\n      #SBATCH --uid=0\n      run\n")
    result = bridgehead("workflow", "validate", str(bad), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"bridgehead: error: {bad}:5: steps[0].script: step 'prep': script line 3: #SBATCH "
        "--uid=0: not allowed: jobs run as the agent's user"]
    good = tmp_path / "good.yaml"
    good.write_text(bad.read_text().replace("--uid=0", "--mem=2G"))
    result = bridgehead("workflow", "validate", "--json", str(good), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"][0]["given"] == []


@pytest.mark.parametrize("script", [
    "#!/bin/sh\n#SBATCH --export=NONE\nrun\n",
    "#!/bin/sh\n#SBATCH -c {{ data.n }}\n#SBATCH --export=NONE\nrun {{ data.path }}\n",
])
def test_a_rules_refused_directive_is_refused_when_built(script: str) -> None:
    with pytest.raises(InvalidSpec, match=r"^actions\[0\]\.submit_job\.script: rule 'r': "
                                          r"script line \d: #SBATCH --export=NONE: not allowed"):
        rule_from_dict({"name": "r", "match": {"type": "x"},
                        "actions": [{"submit_job": {"cluster": "c", "script": script}}]})


def test_a_rules_template_resources_and_name_win() -> None:
    r = rule_from_dict({"name": "r", "match": {"type": "x"}, "actions": [{"submit_job": {
        "cluster": "c", "script": SCRIPT.replace("echo", "#SBATCH -J x\necho"), "name": "mine",
        "resources": {"memory": "1G", "cores": 1}}}]})
    job = r.actions[0].job_spec(Event(type="x", source="s", subject="y", data={}), "r", 0)
    assert (job.resources.cores, job.resources.memory_mb, job.resources.partition,
            job.name) == (1, 1024, "big", "mine")
