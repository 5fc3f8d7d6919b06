"""``/v1/workflows/files`` (the workflow files the server keeps: the editor's Save) and the
form's side of ``/v1/workflows/validate`` (a file's data in, its YAML out), on SQLite and
PostgreSQL: admins only write, a name is a name and never a path, nothing is overwritten
without ``overwrite``, a session cookie's write needs its CSRF token and its own Origin."""

from __future__ import annotations

import glob
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.server.app import create_app
from bridgehead.store import create_store
from bridgehead.workflows.spec import parse_workflow

GOOD = "name: saved\ndefaults: {cluster: local}\nsteps:\n  - {id: a, command: [echo, hi]}\n"


class Api:
    def __init__(self, client: httpx.AsyncClient, tokens: dict[str, str], folder: Path) -> None:
        self.client, self.tokens, self.folder = client, tokens, folder

    async def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.client.request(
            method, path, headers={"Authorization": f"Bearer {self.tokens[who]}"}, **kw)

    async def save(self, who: str, name: str, spec: str = GOOD, **kw: Any) -> httpx.Response:
        return await self.call(who, "POST", "/v1/workflows/files",
                               json={"name": name, "spec": spec, **kw})


@pytest.fixture
async def api(store_dsn: str, tmp_path: Path) -> AsyncIterator[Api]:
    store = create_store(store_dsn)
    await store.open()
    folder = tmp_path / "workflows"
    app = create_app(ServerSettings.load(store=store_dsn, workflows_dir=folder), store)
    tokens = {}
    for name, role, tenant in (("admin", Role.ADMIN, None), ("a", Role.CLIENT, "a")):
        _, tokens[name] = await store.create_token(name=name, role=role, cluster=None,
                                                   tenant=tenant)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bh") as client:
        yield Api(client, tokens, folder)
    await store.close()


async def test_an_admin_saves_and_anyone_reads(api: Api) -> None:
    r = await api.save("admin", "saved-1")
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "saved-1", "file": "saved-1.yaml", "workflow": "saved"}
    assert (api.folder / "saved-1.yaml").read_text() == GOOD
    listed = await api.call("a", "GET", "/v1/workflows/files")
    assert listed.json() == [{"name": "saved-1", "file": "saved-1.yaml", "workflow": "saved"}]
    one = await api.call("a", "GET", "/v1/workflows/files/saved-1")
    assert one.json()["spec"] == GOOD
    assert (await api.call("a", "GET", "/v1/workflows/files/nope")).status_code == 404


async def test_a_client_cannot_save(api: Api) -> None:
    r = await api.save("a", "mine")
    assert r.status_code == 403, r.text
    assert not api.folder.exists() or not list(api.folder.iterdir())


@pytest.mark.parametrize("name", [
    "../escape", "a/b", "a\\b", "..", ".", ".hidden", "a.yaml", "", "x" * 101, "sp ace",
    "nul\x00", "/etc/passwd", "é",
])
async def test_a_hostile_name_is_refused_naming_the_field(api: Api, name: str,
                                                          tmp_path: Path) -> None:
    r = await api.save("admin", name)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(("name: ", "request body: name ")), r.text
    assert glob.glob(f"{tmp_path}/**/*.yaml", recursive=True) == []
    if name and "/" not in name and name.strip(".") and "\x00" not in name:
        assert (await api.call("a", "GET", f"/v1/workflows/files/{name}")).status_code == 400


async def test_never_overwrites_without_the_flag(api: Api) -> None:
    assert (await api.save("admin", "w")).status_code == 201
    changed = GOOD.replace("hi", "again")
    r = await api.save("admin", "w", changed)
    assert r.status_code == 409 and "overwrite" in r.json()["detail"], r.text
    assert (api.folder / "w.yaml").read_text() == GOOD
    r = await api.save("admin", "w", changed, overwrite=True)
    assert r.status_code == 201, r.text
    assert (api.folder / "w.yaml").read_text() == changed
    assert sorted(p.name for p in api.folder.iterdir()) == ["w.yaml"]  # no temporary left


async def test_an_invalid_workflow_or_a_second_file_of_one_name_is_refused(api: Api) -> None:
    r = await api.save("admin", "bad", GOOD.replace("[echo, hi]", "echo hi"))
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("spec: bad.yaml:4: steps[0].command: "), r.text
    assert (await api.save("admin", "first")).status_code == 201
    r = await api.save("admin", "second")  # the same workflow name: the folder would not load
    assert r.status_code == 409 and "first.yaml" in r.json()["detail"], r.text
    assert not (api.folder / "bad.yaml").exists() and not (api.folder / "second.yaml").exists()


async def test_a_session_write_needs_csrf_and_its_own_origin(api: Api) -> None:
    client = api.client
    r = await client.post("/ui/login", data={"token": api.tokens["admin"]},
                          headers={"Origin": "http://bh"})
    assert r.status_code == 303, r.text
    page = (await client.get("/ui/workflows/edit")).text
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found
    body = {"name": "by-cookie", "spec": GOOD}
    for headers in ({"Origin": "http://bh"}, {"Origin": "http://evil", "X-CSRF-Token": found[1]},
                    {"X-CSRF-Token": found[1]}):
        r = await client.post("/v1/workflows/files", json=body, headers=headers)
        assert r.status_code == 403, (headers, r.text)
    assert not (api.folder / "by-cookie.yaml").exists()
    r = await client.post("/v1/workflows/files", json=body,
                          headers={"Origin": "http://bh", "X-CSRF-Token": found[1]})
    assert r.status_code == 201, r.text


async def test_validate_gives_a_forms_data_and_takes_it_back(api: Api) -> None:
    text = GOOD.replace("steps:", "params: {when: 2026-12-05, n: 1.5}\nsteps:")
    r = await api.call("a", "POST", "/v1/workflows/validate", json={"spec": text})
    body = r.json()
    assert body["valid"] and body["document"]["params"] == {"when": "2026-12-05", "n": 1.5}
    back = await api.call("a", "POST", "/v1/workflows/validate",
                          json={"document": body["document"]})
    assert back.json()["valid"], back.text
    assert parse_workflow(back.json()["yaml"]) == parse_workflow(text)
    bad = dict(body["document"], steps=[{"id": "a", "comand": ["echo"]}])
    r = await api.call("a", "POST", "/v1/workflows/validate", json={"document": bad})
    assert [e["loc"] for e in r.json()["errors"]] == ["steps[0].comand"]
    r = await api.call("a", "POST", "/v1/workflows/validate",
                       json={"spec": "name: w\nenv: {1: x}\n"})
    assert r.json()["document"] is None and "not text" in r.json()["form_error"]
    r = await api.call("a", "POST", "/v1/workflows/validate",
                       json={"spec": GOOD, "document": {}})
    assert r.status_code == 422 and "exactly one" in r.text
