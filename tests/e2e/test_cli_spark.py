"""`bridgehead submit --spark-app` as a user meets it (bridgehead up): the options make the
job's Spark part with relative paths made absolute, `status` shows it, the local cluster
refuses it naming its backend, and bad input is exit 2 with one line naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.procs import Proc, bh, bh_in

pytestmark = pytest.mark.slow


def test_a_spark_app_is_submitted_and_shown(up: tuple[Path, Proc], tmp_path: Path) -> None:
    home, _ = up
    run = bh_in(home, tmp_path, "submit", "--json", "--cluster", "sparky",
                "--spark-app", "jobs/etl.py", "--conf", "spark.sql.shuffle.partitions=8",
                "--executors", "4", "--executor-cores", "2", "--executor-memory", "2G",
                "--driver-memory", "512M", "--py-files", "lib.zip, s3://b/dep.py",
                "--files", "conf/a.json", "--", "--day", "2026-01-01", "$(id)")
    assert run.returncode == 0, run.stderr
    spec = json.loads(run.stdout)["spec"]
    app = spec["spark"]
    assert app["application"] == f"{tmp_path}/jobs/etl.py"
    assert app["py_files"] == [f"{tmp_path}/lib.zip", "s3://b/dep.py"]
    assert app["files"] == [f"{tmp_path}/conf/a.json"]
    assert app["arguments"] == ["--day", "2026-01-01", "$(id)"]
    assert app["conf"] == {"spark.sql.shuffle.partitions": "8"}
    assert (app["executors"], app["executor_cores"], app["executor_memory_mb"],
            app["driver_memory_mb"]) == (4, 2, 2048, 512)
    assert spec["command"] == [] and spec["resources"]["cores"] == 1 + 4 * 2
    assert spec["working_dir"] is None
    shown = bh(home, "status", json.loads(run.stdout)["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"{tmp_path}/jobs/etl.py" in shown.stdout and "(spark application)" in shown.stdout
    assert "4 executors x 2 cores 2048M = 9 cores" in shown.stdout
    assert "spark.sql.shuffle.partitions=8" in shown.stdout


def test_a_jar_needs_its_main_class_and_max_cores_clamps(up: tuple[Path, Proc]) -> None:
    home, _ = up
    run = bh(home, "submit", "--json", "--cluster", "sparky", "--spark-app",
             "hdfs://nn/apps/etl.jar", "--main-class", "com.example.Etl", "--executors", "10",
             "--max-cores", "5")
    assert run.returncode == 0, run.stderr
    spec = json.loads(run.stdout)["spec"]
    assert spec["spark"]["main_class"] == "com.example.Etl"
    assert spec["spark"]["executors"] == 4 and spec["resources"]["cores"] == 5


def test_the_local_cluster_refuses_a_spark_app(up: tuple[Path, Proc]) -> None:
    home, _ = up
    run = bh(home, "submit", "--spark-app", "/apps/pi.py")
    assert run.returncode == 2, run
    [line] = run.stderr.strip().splitlines()
    assert "spark: cluster 'local' runs jobs with the local backend" in line, line


@pytest.mark.parametrize(("args", "named"), [
    (("--executors", "3", "--", "true"), "--executors is a Spark option"),
    (("--spark-app", "/a/x.py", "--conf", "foo=1"), "spark.conf name 'foo'"),
    (("--spark-app", "/a/x.py", "--conf", "spark.x"), "--conf 'spark.x'"),
    (("--spark-app", "/a/x.py", "--executor-memory", "lots"), "--executor-memory 'lots'"),
    (("--spark-app", "/a/x.py", "--executors", "0"), "--executors must be >= 1"),
    (("--spark-app", "/a/x.py", "--cores", "4"), "--cores is not for --spark-app"),
    (("--spark-app", "/a/x.py", "--array", "0-3"), "--array is not for --spark-app"),
    (("--spark-app", "/a/x.jar"), "spark.main_class is required"),
])
def test_bad_spark_input_is_exit_2_naming_it(up: tuple[Path, Proc], args: tuple[str, ...],
                                             named: str) -> None:
    home, _ = up
    run = bh(home, "submit", "--cluster", "sparky", *args)
    assert run.returncode == 2, run
    [line] = run.stderr.strip().splitlines()
    assert named in line, line
