"""A chain and a fan-out of Bridgehead jobs, each echoing a line the launcher tests look for;
``params.x`` (``--conf x=...``) is rendered into the first one."""

from __future__ import annotations

from airflow.sdk import DAG

from bridgehead.airflow.operators.bridgehead import BridgeheadOperator

with DAG("bh_launch_ok", schedule=None, params={"x": "unset"},
         default_args={"retries": 0}) as dag:
    prep = BridgeheadOperator(task_id="prep", cluster="local",
                              command=["echo", "LAUNCH-prep x={{ params.x }}"])
    fan = BridgeheadOperator.partial(task_id="fan", cluster="local",
                                     command=["echo", "LAUNCH-fan-{{ item }}"]).expand(
                                         item=[0, 1, 2])
    join = BridgeheadOperator(task_id="join", cluster="local", command=[
        "python3", "-c",
        "import sys; print('LAUNCH-join'); print('LAUNCH-join-err', file=sys.stderr)"])
    prep >> fan >> join
