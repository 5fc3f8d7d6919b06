"""The OpenAPI document tells the truth about errors.

FastAPI documents a 422 shaped as its own list of errors and nothing else; Bridgehead answers
every error as ``{"detail": "<message>"}`` (422 adds ``errors``, how many fields failed; see
``app._install_handlers``). ``install`` rewrites the generated document once:

- 401 (and the bearer security scheme) on every route that needs a token; 403 on routes that
  need a role;
- 400 everywhere (``guard.BodyGuard``: NUL in the URL; in a JSON body, also text the store
  cannot hold or nesting too deep), 413 (body too large) on every method that may carry one;
- 404 on routes with a path parameter; 422 in Bridgehead's shape; 503 (store unreachable)
  everywhere;
- what a handler raises besides these, a route declares with ``responses=errors(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from bridgehead.server.auth import ROLE_CHECKS, principal

DESCRIPTIONS = {
    400: "Bad input: the message names the field or parameter (also text the store cannot "
         "hold: NUL, an unpaired surrogate, JSON nested deeper than 32).",
    401: "Missing or unknown bearer token.",
    403: "The token's role or scope does not allow this.",
    404: "Not found (or not visible to this token).",
    409: "The request conflicts with what is stored.",
    413: "The request body is larger than the server's max_body_bytes.",
    422: "A parameter or field has the wrong type or is out of range: detail names the "
         "first, errors counts them.",
    503: "The store cannot be reached; try again.",
}
_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer",
                       "description": "A token from `bridgehead token create`."}}


class ErrorOut(BaseModel):
    """Every error Bridgehead answers."""

    detail: str = Field(description="What went wrong, naming the field or the object.")


class InvalidOut(ErrorOut):
    """A request that does not match the schema (HTTP 422)."""

    errors: int = Field(description="How many fields failed; detail names the first.")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the error codes a handler raises itself."""
    return {code: {"model": ErrorOut, "description": DESCRIPTIONS[code]} for code in codes}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` document the errors as they are sent."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            document(generate(), app.routes)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def document(schema: dict[str, Any], routes: Iterable[Any]) -> None:
    components = schema.setdefault("components", {})
    found = components.setdefault("schemas", {})
    for model in (ErrorOut, InvalidOut):
        found[model.__name__] = model.model_json_schema()
    components["securitySchemes"] = _SCHEMES
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            operation = schema["paths"][route.path_format].get(method.lower())
            if operation is not None:
                _document_operation(operation, route, method)
    for unused in ("HTTPValidationError", "ValidationError"):
        found.pop(unused, None)


def _document_operation(operation: dict[str, Any], route: APIRoute, method: str) -> None:
    calls = set(_calls(route.dependant))
    codes = {400, 503}
    if principal in calls:
        codes.add(401)
        operation["security"] = [{"bearer": []}]
    if calls & set(ROLE_CHECKS):
        codes.add(403)
    if method not in ("GET", "HEAD", "OPTIONS"):
        codes.add(413)
    if route.dependant.path_params:
        codes.add(404)
    responses = operation.setdefault("responses", {})
    for code in sorted(codes):
        responses.setdefault(str(code), _response(code, "ErrorOut"))
    if "422" in responses:
        responses["422"] = _response(422, "InvalidOut")


def _response(code: int, model: str) -> dict[str, Any]:
    return {"description": DESCRIPTIONS[code], "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model}"}}}}


def _calls(dependant: Dependant) -> Iterable[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)
