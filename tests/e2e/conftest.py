"""What the CLI tests share: ``up``, one ``bridgehead up`` (server on SQLite + a local agent)
per test module, with its client config written and its local cluster online."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Proc, bh, eventually, start_up


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc]]:
    home = tmp_path_factory.mktemp("up")
    proc = start_up(home, slots=4)
    eventually(lambda: json.loads(bh(home, "clusters", "--json").stdout), 15, what="a cluster")
    yield home, proc
    proc.kill()
