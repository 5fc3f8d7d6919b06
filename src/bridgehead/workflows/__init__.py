"""Workflows: the YAML spec shared by the Airflow DAG factory and the native runner.

The graph itself (steps, needs, fan-out, templates) is pure domain, in
:mod:`bridgehead.domain.workflows`; this package reads and writes its files.
"""

from bridgehead.workflows.spec import (
    MAX_FILE_BYTES,
    load_workflow,
    load_workflows,
    parse_workflow,
    workflow_json_schema,
)

__all__ = [
    "MAX_FILE_BYTES",
    "load_workflow",
    "load_workflows",
    "parse_workflow",
    "workflow_json_schema",
]
