"""One Bridgehead job succeeds, the next prints ``boom`` and exits 3: the run fails."""

from __future__ import annotations

from airflow.sdk import DAG

from bridgehead.airflow.operators.bridgehead import BridgeheadOperator

with DAG("bh_launch_fail", schedule=None, default_args={"retries": 0}) as dag:
    ok = BridgeheadOperator(task_id="ok", cluster="local", command=["echo", "LAUNCH-ok"])
    boom = BridgeheadOperator(task_id="boom", cluster="local", command=[
        "python3", "-c", "import sys; print('boom'); sys.exit(3)"])
    ok >> boom
