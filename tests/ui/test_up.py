"""``bridgehead up`` ends by printing the web UI's URL and where its admin token is; that
token logs in (its client.toml is the user's own, mode 600)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.procs import eventually, start_up

pytestmark = pytest.mark.slow


def test_up_prints_the_ui_and_how_to_log_in(tmp_path: Path) -> None:
    proc = start_up(tmp_path, slots=1)
    try:
        said = eventually(lambda: re.search(r"Web UI: (http://\S+/ui) \(log in with the admin "
                                            r"token: 'token' under \[client\] in (\S+)\)",
                                            proc.output()), 30, what="the UI line")
        url, where = said.group(1), Path(said.group(2))
        assert where == tmp_path / "client.toml"
        token = tomllib.loads(where.read_text())["client"]["token"]
        with httpx.Client(timeout=30) as browser_like:
            r = browser_like.post(f"{url}/login", data={"token": token},
                                  headers={"Origin": url.removesuffix("/ui")})
            assert r.status_code == 303
            page = browser_like.get(url)
            assert page.status_code == 200 and "Overview" in page.text
            assert token not in page.text
    finally:
        proc.kill()
