"""The CLI's contract for bad input: exit code 2 and one clear line, nothing sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridgehead.cli.main import parse_memory, parse_walltime
from bridgehead.errors import InvalidSpec


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"BRIDGEHEAD_HOME": str(home), "BRIDGEHEAD_URL": "http://127.0.0.1:9",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, words", [
    (("submit",), "give a command"),
    (("submit", "--cores", "0", "--", "echo"), "cores"),
    (("submit", "--walltime", "soon", "--", "echo"), "walltime"),
    (("submit", "--memory", "lots", "--", "echo"), "memory"),
    (("submit", "--env", "NOEQUALS", "--", "echo"), "KEY=VALUE"),
    (("submit", "--option", "; rm -rf /", "--", "echo"), "--name"),
    (("submit", "--workdir", "relative", "--", "echo"), "absolute"),
    (("list", "--state", "bogus"), "bogus"),
    (("nosuchcommand",), "nosuchcommand"),
    (("token", "create", "--name", "x", "--role", "agent"), "--cluster"),
    (("server", "--store", "mysql://x/y"), "scheme"),
])
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], words: str,
                                         tmp_path: Path) -> None:
    result = run(*args, home=tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bridgehead: error:"), result.stderr
    assert words.lower() in lines[0].lower()


def test_unreachable_server_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run("list", home=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot reach" in result.stderr


def test_durations_and_sizes() -> None:
    assert [parse_walltime(t) for t in ("90", "30m", "2h", "1d", "01:30", "1:00:00",
                                        "1-00:00:00")] == [90, 1800, 7200, 86400, 90, 3600,
                                                           86400]
    assert [parse_memory(t) for t in ("512", "512M", "4G", "1T", "2048K")] == [
        512, 512, 4096, 1048576, 2]
    with pytest.raises(InvalidSpec):
        parse_walltime("1:2:3:4:5")
