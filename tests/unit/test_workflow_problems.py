"""``validate_workflow``: every error of a workflow file at its line and field (what the web
UI's editor shows at each field), from the same checks as ``parse_workflow`` (whose one
error is always among them) and ``bridgehead workflow validate``."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from bridgehead.errors import InvalidSpec
from bridgehead.workflows.spec import parse_workflow, validate_workflow

ROOT = Path(__file__).resolve().parents[2]
HEAD = "name: w\ndefaults: {cluster: local}\nsteps:\n"


def problems(text: str) -> list[tuple[int, str, str]]:
    return [(p.line, p.loc, p.detail) for p in validate_workflow(text, "w.yaml")]


def test_schema_errors_all_at_their_fields() -> None:
    text = HEAD + dedent("""\
        - id: a
          command: [echo]
          resources: {cores: 0}
        - id: b
          command: [echo]
          timeout: soon
        - {id: c, comand: [echo]}
        """)
    assert problems(text) == [
        (6, "steps[0].resources.cores", "Input should be greater than or equal to 1"),
        (9, "steps[1].timeout", "'soon' is not a duration: use 90, 30m, 2h or HH:MM:SS"),
        (10, "steps[2].comand", "Extra inputs are not permitted"),
    ]


def test_template_and_graph_errors_of_every_step() -> None:
    text = HEAD + dedent("""\
        - id: a
          command: [echo, '{{ item }}']
        - id: b
          command: [echo, '{{ params.x }}']
        - {id: c, needs: [nope], command: [echo]}
        """)
    assert problems(text) == [
        (5, "steps[0].command[1]", "{{ item }} is only defined in a step with foreach"),
        (7, "steps[1].command[1]", "unknown param 'x' (declare it under params)"),
        (8, "steps[2].needs[0]", "unknown step 'nope'"),
    ]
    fixed = text.replace("'{{ item }}'", "x").replace("'{{ params.x }}'", "y")
    assert problems(fixed) == [(8, "steps[2].needs[0]", "unknown step 'nope'")]


def test_a_step_error_does_not_hide_the_graphs() -> None:
    text = HEAD + dedent("""\
        - {id: a, command: [echo], options: ['; rm -rf /']}
        - {id: b, needs: [nope], command: [echo]}
        """)
    assert [(line, loc) for line, loc, _ in problems(text)] == [
        (4, "steps[0]"), (5, "steps[1].needs[0]")]


def test_a_step_whose_fields_cannot_be_built_hides_the_workflow_wide_checks() -> None:
    """A step the schema passed but whose fields cannot make a step (a bad timeout unit is
    the schema's; a Spark app's size is the step's) is reported alone: the graph's checks
    need every step built."""
    text = HEAD + dedent("""\
        - id: a
          spark: {application: app.py, executor_memory: lots}
        - {id: b, needs: [nope], command: [echo]}
        """)
    found = problems(text)
    assert [loc for _, loc, _ in found] in (["steps[0].spark.executor_memory"],
                                            ["steps[0].spark"]), found


@pytest.mark.parametrize("text", [
    "name: w\nsteps:\n  - id: a\n    command: [echo\n",
    "- name: w\n",
    "# nothing\n",
    "name: 'bad name'\nsteps: [{id: a, cluster: x, command: [echo]}]\n",
    "name: w\nsteps: [{id: a, command: [echo]}]\n",
    HEAD + "- {command: [echo]}\n",
    HEAD + "- id: a\n  command: echo hello; rm -rf /\n",
    HEAD + "- id: a\n  command: [echo]\n  retries: {count: -1}\n",
    HEAD + "- id: a\n  command: [echo]\n  script: '#!/bin/sh'\n",
    HEAD + "- {id: a, command: [echo], options: ['; rm -rf /']}\n",
    HEAD + "- {id: a, command: [echo]}\n- {id: a, command: [echo]}\n",
    HEAD + "- {id: a, needs: [b], command: [echo]}\n- {id: b, needs: [a], command: [echo]}\n",
    HEAD + "- id: a\n  foreach: {param: m}\n  command: [echo]\n",
])
def test_parse_workflows_error_is_always_among_them(text: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_workflow(text, "w.yaml")
    found = [p.message("w.yaml") for p in validate_workflow(text, "w.yaml")]
    assert raised.value.message in found, found


def test_valid_files_have_none() -> None:
    for path in [*ROOT.glob("examples/workflows/*.yaml"),
                 ROOT / "src/bridgehead/demo/crystallography.yaml"]:
        assert validate_workflow(path.read_text(), path.name) == [], path


def test_cli_validate_prints_every_error_of_every_file(tmp_path: Path) -> None:
    from tests.unit.test_workflow_spec import bridgehead

    schema = tmp_path / "schema.yaml"
    schema.write_text(HEAD + dedent("""\
        - id: a
          command: [echo]
          resources: {cores: 0}
        - id: b
          command: [echo]
          timeout: soon
        """))
    needs = tmp_path / "needs.yaml"
    needs.write_text(HEAD + "- {id: a, command: [echo]}\n"
                            "- {id: b, needs: [nope], command: [echo]}\n")
    result = bridgehead("workflow", "validate", str(schema), str(needs), home=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        f"bridgehead: error: {schema}:6: steps[0].resources.cores: Input should be greater "
        "than or equal to 1",
        f"bridgehead: error: {schema}:9: steps[1].timeout: 'soon' is not a duration: use 90, "
        "30m, 2h or HH:MM:SS",
        f"bridgehead: error: {needs}:5: steps[1].needs[0]: unknown step 'nope'"]
    assert result.stdout == ""  # no steps table for a valid file when another is not
