"""Workflow files: validate one and get every error at its line and field (what a form
shows at each field; ``bridgehead workflow validate`` prints the same list; ``POST
/v1/workflows/runs`` stops at the first of them); the files the server keeps in ``[server]
workflows_dir`` (read by any client, written by admins: the web UI's editor saves there)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridgehead.errors import Conflict, InvalidSpec, NotFound
from bridgehead.server.auth import Admin, ClientOrAdmin
from bridgehead.workflows.document import document_of, yaml_of
from bridgehead.workflows.spec import (
    MAX_FILE_BYTES,
    Problem,
    parse_workflow,
    read_spec_file,
    validate_workflow,
)

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])


class ValidateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str | None = Field(None, min_length=1, max_length=MAX_FILE_BYTES,
                             description="The workflow file's YAML.")
    document: dict[str, Any] | None = Field(
        None, description="Instead of spec: the file's data (a form's); it is written as "
        "YAML (the answer's yaml) and that text is checked.")
    filename: str = Field("workflow.yaml", min_length=1, max_length=256,
                          description="Named in each error's message.")

    @model_validator(mode="after")
    def _one_source(self) -> ValidateIn:
        if (self.spec is None) == (self.document is None):
            raise ValueError("give exactly one of spec (YAML text) or document (its data)")
        return self


class ProblemOut(BaseModel):
    line: int = Field(description="1-based line of the file.")
    loc: str = Field(description="The field, as steps[1].needs[0]; empty for the file.")
    detail: str = Field(description="What is wrong there.")
    message: str = Field(description="file:line: field: detail, as the CLI says it.")


class ValidateOut(BaseModel):
    valid: bool
    name: str | None = Field(None, description="The workflow's name, when it is valid.")
    steps: list[str] = Field(default_factory=list, description="Its step ids, when valid.")
    errors: list[ProblemOut]
    document: dict[str, Any] | None = Field(
        None, description="Given spec: the file's data, for a form (none when it does not "
        "read as a mapping of JSON values: see form_error).")
    form_error: str | None = Field(None, description="Why a form cannot show this file.")
    yaml: str | None = Field(None, description="Given document: the YAML written from it.")


def _problems(text: str, filename: str) -> tuple[list[Problem], ValidateOut]:
    problems = validate_workflow(text, filename)
    out = ValidateOut(valid=not problems, errors=[
        ProblemOut(line=p.line, loc=p.loc, detail=p.detail, message=p.message(filename))
        for p in problems])
    if not problems:
        spec = parse_workflow(text, filename)
        out.name, out.steps = spec.name, [s.id for s in spec.steps]
    return problems, out


@router.post("/validate", response_model=ValidateOut)
async def validate(body: ValidateIn, _p: ClientOrAdmin) -> ValidateOut:
    """Every error of a workflow file, each with its line and field, in file order (200
    either way: an invalid file is an answer here, not a bad request). Given ``document``
    (a form's data) instead of ``spec``, the answer's ``yaml`` is the file it makes."""
    if body.document is not None:
        text = yaml_of(body.document)
        _, out = _problems(text, body.filename)
        out.yaml = text
        return out
    assert body.spec is not None
    _, out = _problems(body.spec, body.filename)
    try:
        out.document = document_of(body.spec, body.filename)
    except InvalidSpec as exc:
        out.form_error = exc.message
    return out


# -- the server's workflow files ---------------------------------------------------------------
FILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
"""A saved file's name (``<name>.yaml``): no path separator, no dot, so never ``..``."""


class FileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=1000, description="The file is <name>.yaml: letters, "
                      "digits, _ and - only.")
    spec: str = Field(max_length=MAX_FILE_BYTES, description="The workflow's YAML.")
    overwrite: bool = Field(False, description="Replace the file if it exists (else 409).")


class FileOut(BaseModel):
    name: str
    file: str = Field(description="<name>.yaml, in the server's workflows directory.")
    workflow: str | None = Field(None, description="The workflow's name, when it is valid.")
    spec: str | None = Field(None, description="The file's YAML (GET of one file).")


def _folder(request: Request) -> Path:
    return Path(request.app.state.settings.workflows_dir)


def _file_name(name: str) -> str:
    if not FILE_NAME.fullmatch(name):
        raise InvalidSpec(f"name: {name[:100]!r} is not a workflow file name: use 1 to 100 "
                          "letters, digits, _ and - (no path separator, no '.', no '..')")
    return f"{name}.yaml"


@router.get("/files", response_model=list[FileOut], response_model_exclude_none=True)
async def list_files(request: Request, _p: ClientOrAdmin) -> list[FileOut]:
    """The workflow files the server keeps, by name (a file that does not parse has no
    ``workflow``)."""
    folder = _folder(request)
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
        if FILE_NAME.fullmatch(path.stem) and path.is_file():
            try:
                workflow: str | None = parse_workflow(read_spec_file(path), path.name).name
            except InvalidSpec:
                workflow = None
            out.append(FileOut(name=path.stem, file=path.name, workflow=workflow))
    return out


@router.get("/files/{name}", response_model=FileOut, response_model_exclude_none=True)
async def get_file(name: str, request: Request, _p: ClientOrAdmin) -> FileOut:
    path = _folder(request) / _file_name(name)
    if not path.is_file():
        raise NotFound(f"workflow file {path.name!r} not found")
    return FileOut(name=name, file=path.name, spec=read_spec_file(path))


@router.post("/files", response_model=FileOut, response_model_exclude_none=True,
             status_code=201)
async def save_file(body: FileIn, request: Request, _p: Admin) -> FileOut:
    """Write ``<name>.yaml`` into the workflows directory (admins): a valid workflow only,
    never over an existing file without ``overwrite``, never a second file of one workflow
    name (the directory would no longer load). Written whole or not at all."""
    file = _file_name(body.name)
    problems = validate_workflow(body.spec, file)
    if problems:
        raise InvalidSpec(f"spec: {problems[0].message(file)}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    workflow = parse_workflow(body.spec, file).name
    folder = _folder(request)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file
    for other in folder.glob("*.y*ml"):
        if other.name != file and other.is_file() and _workflow_name(other) == workflow:
            raise Conflict(f"workflow {workflow!r} is already in {other.name}: save it under "
                           "that name, or rename the workflow")
    _write(target, body.spec, body.overwrite)
    return FileOut(name=body.name, file=file, workflow=workflow)


def _workflow_name(path: Path) -> str | None:
    try:
        return parse_workflow(read_spec_file(path), path.name).name
    except InvalidSpec:
        return None


def _write(target: Path, text: str, overwrite: bool) -> None:
    """``text`` into ``target`` through a temporary file in its directory: replaced whole
    (``overwrite``) or linked in only if no file has that name (atomic either way)."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".save-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)
        if overwrite:
            os.replace(temp, target)
            return
        try:
            os.link(temp, target)
        except FileExistsError:
            raise Conflict(f"name: {target.name} exists: set overwrite to replace it") from None
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
