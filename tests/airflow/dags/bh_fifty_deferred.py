"""50 mapped Bridgehead tasks whose jobs wait for a release file (``params.release``): used
to show that waiting tasks hold no worker slot (parallelism is 4)."""

from __future__ import annotations

from airflow.sdk import DAG

from bridgehead.airflow.operators.bridgehead import BridgeheadOperator

WAIT = ("import os, sys, time\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    time.sleep(0.2)\n"
        "print('released', sys.argv[2])")

with DAG("bh_fifty_deferred", schedule=None, params={"release": "/nonexistent"},
         max_active_tasks=64, default_args={"retries": 0}) as dag:
    BridgeheadOperator.partial(
        task_id="wait", cluster="local",
        command=["python3", "-c", WAIT, "{{ params.release }}", "{{ item }}"],
    ).expand(item=list(range(50)))
