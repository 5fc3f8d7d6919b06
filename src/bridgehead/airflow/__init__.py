"""Apache Airflow provider for Bridgehead (``pip install 'bridgehead[airflow]'``).

- ``hooks.bridgehead.BridgeheadHook``: the ``bridgehead`` connection type (server URL + token).
- ``operators.bridgehead.BridgeheadOperator`` / ``SlurmJobOperator``: submit a job and wait
  deferred (no worker slot held); a re-executed try reattaches to its job.
- ``operators.spark.SparkJobOperator``: a Spark application as a job, with the arguments of
  Airflow's ``SparkSubmitOperator`` (a DAG moves over by changing its import).
- ``triggers.bridgehead.BridgeheadJobTrigger``: waits on the server's long-poll and copies
  the job's log into the task log line by line.
- ``dags.load_dags``: Airflow DAGs from workflow YAML files.

This module imports nothing from Airflow: Airflow reads ``get_provider_info`` through the
``apache_airflow_provider`` entry point.
"""

from __future__ import annotations

from typing import Any

_HOOK = "bridgehead.airflow.hooks.bridgehead"
_OPERATORS = "bridgehead.airflow.operators.bridgehead"
_SPARK_OPERATORS = "bridgehead.airflow.operators.spark"
_TRIGGERS = "bridgehead.airflow.triggers.bridgehead"


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list|hooks|triggers`` show about this provider."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("bridgehead")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        ver = "0.0.0"
    return {
        "package-name": "bridgehead",
        "name": "Bridgehead",
        "description": "Run jobs on Slurm, Spark, EMR or local clusters through a Bridgehead "
                       "server: deferrable operators, exactly-once submission, one log.",
        "versions": [ver],
        "integrations": [{"integration-name": "Bridgehead", "tags": ["software"]}],
        "operators": [{"integration-name": "Bridgehead", "python-modules": [_OPERATORS,
                                                                          _SPARK_OPERATORS]}],
        "hooks": [{"integration-name": "Bridgehead", "python-modules": [_HOOK]}],
        "triggers": [{"integration-name": "Bridgehead", "python-modules": [_TRIGGERS]}],
        "connection-types": [
            {"connection-type": "bridgehead", "hook-class-name": f"{_HOOK}.BridgeheadHook"}
        ],
    }
