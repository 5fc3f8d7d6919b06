"""The built wheel serves the UI: its templates and static files are package data (Prefect
once shipped a wheel without its UI, #17176). The wheel is built with ``pip wheel`` (from a
copy of the checkout: pip builds in place), installed with ``--target`` into a temporary
directory put first on PYTHONPATH (so its ``bridgehead``, not the checkout's, is imported:
asserted), and a server started from it serves ``/ui/login`` and the static files. About 5 s
on 2 cores, most of it the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.procs import eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_installed_wheel_serves_the_ui(tmp_path: Path) -> None:
    dist, target, source = tmp_path / "dist", tmp_path / "site", tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            source.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(source)], check=True, timeout=300)
    [wheel] = dist.glob("bridgehead-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
    env.update(PYTHONPATH=str(target), BRIDGEHEAD_HOME=str(tmp_path / "home"))
    where = subprocess.run([sys.executable, "-c", "import bridgehead; print(bridgehead.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(target)), where.stdout
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "bridgehead", "server", "--port", str(port), "--store",
         f"sqlite:///{tmp_path / 'bh.db'}"], env=env, cwd=tmp_path, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(up, 60, what="the wheel's server")
        login = httpx.get(f"{url}/ui/login")
        assert login.status_code == 200 and 'name="token"' in login.text
        for asset, kind in (("ui.js", "javascript"), ("editor.js", "javascript"),
                            ("live.js", "javascript"), ("ui.css", "css"),
                            ("favicon.svg", "svg")):
            r = httpx.get(f"{url}/ui/static/{asset}")
            assert r.status_code == 200 and kind in r.headers["content-type"], asset
    finally:
        server.kill()
        server.wait(15)
        log.close()
