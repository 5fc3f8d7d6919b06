"""A script's arguments on the local backend: the script gets them as $1, $2... as given (no
shell ever parses them), as ``sbatch job.sh a b c`` would pass them."""

from __future__ import annotations

import os
from pathlib import Path

from bridgehead.domain.jobs import JobState
from tests.integration.test_local_backend import (  # noqa: F401 - the fixtures
    MakeBackend,
    make_backend,
    script,
    wait_for,
    workdir,
)


async def test_a_script_gets_its_args(make_backend: MakeBackend,  # noqa: F811
                                      workdir: Path) -> None:  # noqa: F811
    backend = make_backend()
    text = '#!/bin/sh\nprintf "%s|" "$#" "$@"\n'
    nasty = "$(touch PWNED); `id`"
    await backend.submit("withargs", script(text, workdir, args=("a", "b c", nasty)))
    await wait_for(backend, "withargs", [JobState.SUCCEEDED])
    out = (await backend.read_log("withargs", "stdout", 0, 1000)).decode()
    assert out == f"3|a|b c|{nasty}|"
    assert os.listdir(workdir) == []
