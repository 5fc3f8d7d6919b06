"""Workflow YAML files as Airflow DAGs: the two lines a user writes (plus a dag.test() entry
for tests/airflow/test_dag_test.py)."""

from pathlib import Path

from bridgehead.airflow.dags import load_dags

DAGS = load_dags(Path(__file__).parent / "workflows", globals())

if __name__ == "__main__":  # python bh_yaml_dags.py DAG_ID RUN_CONF_JSON RESULT_FILE
    import json
    import sys

    run = DAGS[sys.argv[1]].test(run_conf=json.loads(sys.argv[2]))
    states = {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id:
              str(ti.state) for ti in run.get_task_instances()}
    Path(sys.argv[3]).write_text(json.dumps({"run_id": run.run_id, "state": str(run.state),
                                             "tasks": states}))
