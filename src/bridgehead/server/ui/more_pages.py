"""Workflows (each with its last runs x steps, and an editor that checks, runs and downloads
a file), Rules (enable/disable for admins) and Tokens (admins: create, revoke). Reads and
writes go through the API's own route functions, so the masking of rule secrets, rule
validation, run creation and the last-admin guard are the API's."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2.utils import htmlsafe_json_dumps

from bridgehead.domain.clusters import Principal, Role
from bridgehead.domain.runs import step_summary
from bridgehead.errors import InvalidSpec, NotFound
from bridgehead.server import admin, rules
from bridgehead.server import workflows as workflow_files
from bridgehead.server.auth import Admin, ClientOrAdmin
from bridgehead.server.runs import _visible as visible_run
from bridgehead.server.runs import start_run
from bridgehead.server.schemas import RulesIn, RunIn, TokenIn
from bridgehead.server.sessions import ui_store
from bridgehead.server.ui.schedules_page import schedules_of
from bridgehead.server.ui.views import render
from bridgehead.workflows.launch import spec_of
from bridgehead.workflows.spec import (
    Problem,
    parse_workflow,
    validate_workflow,
    workflow_json_schema,
)

router = APIRouter(prefix="/ui", include_in_schema=False)
LAST_RUNS = 5
"""Runs per workflow in its grid."""


@router.get("/workflows", response_class=HTMLResponse)
async def workflows(request: Request, p: ClientOrAdmin) -> HTMLResponse:
    """Each workflow that has run (as the token sees runs), with a grid of its last runs by
    step: the state of each step in each run."""
    store = ui_store(request)
    names = await store.workflow_names(tenant=p.tenant)
    grids = []
    for name in names:
        runs = await store.list_runs(workflow=name, tenant=p.tenant, limit=LAST_RUNS)
        steps: list[str] = []
        cells: list[dict[str, str]] = []
        for run in runs:
            summary = step_summary(spec_of(run.spec_text, run.filename),
                                   await store.run_tasks(run.id), run.idle)
            steps += [s["id"] for s in summary if s["id"] not in steps]
            cells.append({s["id"]: s["state"] for s in summary})
        grids.append({"name": name, "runs": list(zip(runs, cells, strict=True)),
                      "steps": steps})
    return render(request, "workflows.html", title="Workflows", grids=grids,
                  schedules=await schedules_of(request, p))


@router.get("/rules", response_class=HTMLResponse)
async def rules_page(request: Request, p: ClientOrAdmin) -> HTMLResponse:
    shown = await rules.list_rules(request, p)
    return render(request, "rules.html", title="Rules", rules=shown,
                  admin=p.role is Role.ADMIN)


@router.post("/rules/{name}/enabled")
async def set_enabled(request: Request, name: str, p: Admin) -> Response:
    """Enable or disable a rule (the form's ``enabled``: ``true`` or ``false``)."""
    wanted = str((await request.form()).get("enabled") or "")
    if wanted not in ("true", "false"):
        raise InvalidSpec(f"enabled: {wanted!r} is neither true nor false")
    stored = {r["name"]: r for r in await ui_store(request).list_rules()}
    if name not in stored:
        raise NotFound(f"rule {name!r} not found")
    data: dict[str, Any] = {k: v for k, v in stored[name].items()
                            if k not in ("created_at", "updated_at")}
    data["enabled"] = wanted == "true"
    await rules.put_rules(RulesIn(rules=[data]), request, p)
    return RedirectResponse("/ui/rules", 303)


@router.get("/tokens", response_class=HTMLResponse)
async def tokens(request: Request, p: Admin) -> HTMLResponse:
    return render(request, "tokens.html", title="Tokens",
                  tokens=await admin.list_tokens(request, p), created=None, roles=list(Role))


@router.post("/tokens", response_class=HTMLResponse)
async def create_token(request: Request, p: Admin) -> HTMLResponse:
    """Create a token; its secret is shown on this answer only (not cached: no-store)."""
    form = await request.form()
    fields = {k: str(form.get(k) or "").strip() or None
              for k in ("name", "role", "cluster", "tenant")}
    try:
        body = TokenIn.model_validate(fields)
    except ValueError as exc:
        raise InvalidSpec(f"token: {str(exc).splitlines()[-1].strip()}") from exc
    created = await admin.create_token(body, request, p)
    return render(request, "tokens.html", 201, title="Tokens", created=created,
                  tokens=await admin.list_tokens(request, p), roles=list(Role))


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str, p: Admin) -> Response:
    await admin.revoke_token(token_id, request, p)
    return RedirectResponse("/ui/tokens", 303)


EXAMPLE = """\
name: hello
params: {who: world}
defaults: {cluster: local, resources: {cores: 1, walltime: 10m}}
steps:
  - id: greet
    command: [echo, "hello {{ params.who }}"]
  - id: fan
    needs: [greet]
    foreach: {range: [0, 3]}
    command: [echo, "part {{ item }}"]
"""
"""What the editor starts from when it is given no run to copy."""


@router.get("/workflows/edit", response_class=HTMLResponse)
async def editor(request: Request, p: ClientOrAdmin, from_run: str | None = None,
                 file: str | None = None) -> HTMLResponse:
    """The workflow editor: YAML, or a form generated from the workflow schema, checked by
    the same parser as ``bridgehead workflow validate`` with every error at its field; run
    it, download it, or (admins) save it in the server's workflows directory. It starts from
    a run's file (``from_run``), a saved file (``file``) or an example."""
    text, filename, save_name = EXAMPLE, "workflow.yaml", ""
    if from_run:
        run = await visible_run(request, p, from_run)
        text, filename = run.spec_text, run.filename
    elif file:
        saved = await workflow_files.get_file(file, request, p)
        text, filename, save_name = saved.spec or "", saved.file, saved.name
    return render(request, "editor.html", **await _editor_page(request, p), text=text,
                  filename=filename, params="", problems=None, tenant=p.tenant or "default",
                  save_name=save_name)


async def _editor_page(request: Request, p: Principal) -> dict[str, Any]:
    """What every editor page shows besides the file: the schema its form is generated
    from (as JSON safe in HTML, its fields in the models' order: the form's order), the saved
    files, and Save for an admin (a session's or a bearer token's)."""
    return {"title": "Workflow editor", "schema": htmlsafe_json_dumps(workflow_json_schema()),
            "files": await workflow_files.list_files(request, p),
            "admin": p.role is Role.ADMIN}


@router.post("/workflows/edit", response_class=HTMLResponse)
async def edit(request: Request, p: ClientOrAdmin) -> Response:
    """``action``: ``check`` (show every error), ``run`` (start a run with ``params``, a
    YAML mapping, in ``tenant``) or ``download`` (the file as ``<name>.yaml``)."""
    form = await request.form()
    text = str(form.get("spec") or "")
    filename = str(form.get("filename") or "workflow.yaml")
    params_text, action = str(form.get("params") or ""), str(form.get("action") or "check")
    tenant = p.tenant or str(form.get("tenant") or "default")
    problems = validate_workflow(text, filename) if text.strip() else [
        Problem(1, "", "the file is empty")]
    params, params_error = _params(params_text)
    if action == "download" and not problems:
        name = parse_workflow(text, filename).name
        return Response(text, media_type="application/yaml", headers={
            "Content-Disposition": f'attachment; filename="{name}.yaml"'})
    if action == "run" and not problems and params_error is None:
        run, _ = await start_run(request, RunIn(spec=text, filename=filename, params=params,
                                                tenant=tenant))
        return RedirectResponse(f"/ui/runs/{run.id}", 303)
    return render(request, "editor.html", **await _editor_page(request, p), text=text,
                  filename=filename, params=params_text, problems=problems,
                  params_error=params_error, tenant=tenant, save_name="")


def _params(text: str) -> tuple[dict[str, Any], str | None]:
    """A run's params from YAML (a mapping), or the reason they are not."""
    if not text.strip():
        return {}, None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return {}, f"params: not YAML: {str(exc).splitlines()[0]}"
    if not isinstance(data, dict):
        return {}, "params: give a mapping (name: value, one a line)"
    return data, None
