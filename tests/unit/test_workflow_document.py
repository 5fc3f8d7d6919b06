"""A workflow file as a form's JSON data and back (``bridgehead.workflows.document``): the
YAML written from the data reads back to the same data and the same workflow; data a browser
cannot hold exactly is refused with the field named, never changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridgehead.errors import InvalidSpec
from bridgehead.workflows.document import document_of, yaml_of
from bridgehead.workflows.spec import parse_workflow

ROOT = Path(__file__).resolve().parents[2]
FILES = [*ROOT.glob("examples/workflows/*.yaml"), *ROOT.glob("src/bridgehead/demo/*.yaml")]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_files_read_back_the_same_through_json(path: Path) -> None:
    text = path.read_text()
    data = document_of(text)
    through_json = json.loads(json.dumps(data))  # what a browser sends back
    written = yaml_of(through_json)
    assert document_of(written) == data
    assert repr(parse_workflow(written)) == repr(parse_workflow(text))


def test_the_yaml_written_is_readable() -> None:
    data = {"name": "w", "params": {"when": "2026-12-05", "n": 1.0, "yes": "true"},
            "steps": [{"id": "a", "command": ["echo", "a b"], "script": "#!/bin/sh\necho\n"}]}
    written = yaml_of(data)
    assert "command: [echo, a b]" in written  # short lists of scalars on one line
    assert "script: |\n      #!/bin/sh\n      echo\n" in written  # text of lines as a block
    assert "  - id: a" in written  # lists indented under their key
    assert document_of(written) == data  # '2026-12-05' and 'true' stay text, 1.0 a float


@pytest.mark.parametrize("text, reason", [
    ("name: w\nenv: {1: x}\n", "env: the key 1 is not text"),
    ("name: w\nparams: {big: 12345678901234567890}\n", "params.big: 12345678901234567890 is too"),
    ("name: w\nparams: {x: .inf}\n", "params.x: inf is not a number"),
    ("name: w\nparams: {x: !!binary aGk=}\n", "params.x: a bytes value"),
    ("- a\n", "the top level must be a mapping"),
    ("name: [\n", "invalid YAML"),
])
def test_what_json_cannot_hold_is_refused_by_field(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        document_of(text, "w.yaml")
    assert reason in caught.value.message, caught.value.message
