"""Save a workflow file from the editor without JavaScript: the editor's form posts here
(its Save button's ``formaction``), and the answer is the editor again, with what happened.

The write is the API's own (``POST /v1/workflows/files``, :func:`save_file`), behind the
same checks: admins only (``Admin``: for a session cookie, its Origin and the form's CSRF
token), the same file-name rule, no overwrite unless asked (409), a valid workflow only. What
the script's Save shows in its status line this page shows in place: every error of the file
with its line and field (422), or why the name or an existing file refused it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from bridgehead.errors import Conflict, InvalidSpec
from bridgehead.server import workflows as workflow_files
from bridgehead.server.auth import Admin
from bridgehead.server.ui.more_pages import _editor_page as editor_page
from bridgehead.server.ui.views import render
from bridgehead.server.workflows import _file_name as file_name
from bridgehead.workflows.spec import Problem, validate_workflow

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.post("/workflows/save", response_class=HTMLResponse)
async def save(request: Request, p: Admin) -> HTMLResponse:
    """Form fields: ``name`` (the file is ``<name>.yaml``), ``spec``, ``overwrite``; the
    editor's others (``filename``, ``params``, ``tenant``) are shown again as they were."""
    form = await request.form()
    name, text = str(form.get("name") or ""), str(form.get("spec") or "")
    shown = {"text": text, "filename": str(form.get("filename") or "workflow.yaml"),
             "params": str(form.get("params") or ""), "save_name": name,
             "tenant": p.tenant or str(form.get("tenant") or "default")}
    page = {**await editor_page(request, p), **shown}
    try:
        file = file_name(name)
    except InvalidSpec as exc:
        return render(request, "editor.html", 422, **page, problems=None, save_bad_name=True,
                      save_status=f"Not saved: {exc.message}")
    problems = validate_workflow(text, file) if text.strip() else [
        Problem(1, "", "the file is empty")]
    if problems:
        return render(request, "editor.html", 422, **page, problems=problems,
                      save_status=f"Not saved: {file} has {len(problems)} error"
                                  f"{'s' if len(problems) != 1 else ''} (listed above).")
    try:
        body = workflow_files.FileIn(name=name, spec=text,
                                     overwrite=form.get("overwrite") == "yes")
        saved = await workflow_files.save_file(body, request, p)
    except ValidationError as exc:  # the spec is over the API's size limit
        return render(request, "editor.html", 422, **page, problems=None,
                      save_status=f"Not saved: {exc.errors()[0]['msg']}")
    except Conflict as exc:  # the file exists, or another file holds this workflow
        exists = exc.message.startswith("name:")
        why = (f"{file} exists: tick \"Replace the file if it exists\" to replace it"
               if exists else exc.message)
        return render(request, "editor.html", 409, **page, problems=None,
                      save_bad_name=exists, save_status=f"Not saved: {why}")
    page["files"] = (await editor_page(request, p))["files"]  # with the new file
    return render(request, "editor.html", 201, **page, problems=None, save_done=True,
                  save_status=f"Saved {saved.file} (workflow {saved.workflow}).")
