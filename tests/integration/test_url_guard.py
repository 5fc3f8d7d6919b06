"""NUL in a URL's path or query is refused at the edge (400 naming where), on every route and
method: PostgreSQL text cannot hold it, so a lookup or a filter by it failed in the store (503
on PostgreSQL). Real stores."""

from __future__ import annotations

import pytest

from tests.integration.test_api import Api, api  # noqa: F401 - the fixture


@pytest.mark.parametrize(("method", "url", "named"), [
    ("GET", "/v1/jobs/a%00b", "path"),
    ("GET", "/v1/jobs/a%00b/logs", "path"),
    ("POST", "/v1/jobs/a%00b/cancel", "path"),
    ("GET", "/v1/workflows/runs/r%00", "path"),
    ("DELETE", "/v1/tokens/t%00", "path"),
    ("DELETE", "/v1/rules/r%00", "path"),
    ("GET", "/v1/jobs?cluster=a%00b", "'cluster'"),
    ("GET", "/v1/jobs?limit=5&after=x%00", "'after'"),
    ("GET", "/v1/jobs?label=a%3Db%00", "'label'"),
    ("GET", "/v1/workflows/runs?state=a%00", "'state'"),
    ("GET", "/v1/workflows/runs?workflow=%00", "'workflow'"),
    ("GET", "/health?x=%00", "'x'"),
])
async def test_nul_in_a_url_is_400_naming_where(api: Api, method: str, url: str,  # noqa: F811
                                               named: str) -> None:
    r = await api.http.request(method, url, headers=api.admin)
    assert r.status_code == 400, r.text
    assert "NUL" in r.json()["detail"] and named in r.json()["detail"]


async def test_a_url_without_nul_still_reaches_the_store(api: Api) -> None:  # noqa: F811
    r = await api.http.get("/v1/jobs/a%01b", headers=api.admin)
    assert r.status_code == 404
    r = await api.http.get("/v1/jobs?cluster=a%2500", headers=api.admin)  # a literal '%00'
    assert r.status_code == 200 and r.json()["jobs"] == []
