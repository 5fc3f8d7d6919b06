"""What a ``bridgehead`` connection gives the SDK: its replicas' URLs (failover) and its CA
bundle (TLS), from an Airflow ``Connection`` as the UI or an ``AIRFLOW_CONN_*`` makes it."""

from __future__ import annotations

import json

from tests.airflow.requirements import require_airflow

require_airflow()

from airflow.models.connection import Connection  # noqa: E402

from bridgehead.airflow.hooks.bridgehead import ca_bundle_of, server_of  # noqa: E402


def test_hosts_list_replicas_each_as_a_url() -> None:
    conn = Connection(conn_id="bh", conn_type="bridgehead", schema="https", port=9000,
                      host="bh1, bh2:8765,http://bh3:1/", password="bh_secret",
                      extra=json.dumps({"ca_bundle": "/etc/ssl/bh-ca.pem"}))
    assert server_of(conn) == ("https://bh1:9000,https://bh2:8765,http://bh3:1", "bh_secret")
    assert ca_bundle_of(conn) == "/etc/ssl/bh-ca.pem"


def test_one_url_and_no_extra() -> None:
    conn = Connection(conn_id="bh", conn_type="bridgehead", host="https://bh.example:8765")
    assert server_of(conn) == ("https://bh.example:8765", None)
    assert ca_bundle_of(conn) is None
