"""The edge: refuse what must never be stored, and make sure nothing stored breaks a read.

``BodyGuard`` refuses a URL whose path or query holds NUL (``%00``: PostgreSQL text cannot
hold it, so a lookup or filter by it would fail in the store) with 400, naming where; and it
reads each request body before the app does: over ``limit`` bytes is 413
(declared or chunked alike); a JSON body with text that cannot be stored and served back
(an unpaired surrogate, NUL) or nested deeper than ``MAX_DEPTH`` is 400, naming where. It
scans the raw bytes first (C speed) and parses only a body that may hold such text, so an
ordinary request costs one regex pass.

``plain`` turns anything a response holds into JSON-safe data whatever is in it (rows stored
before these checks, a backend's odd output): unpaired surrogates become U+FFFD, data deeper
than ``MAX_DEPTH`` is cut. Responses use it only when the fast serializer fails, so one bad
row never takes down a listing, a claim or the event log.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 32
"""How deep JSON may nest in a request (a job spec needs 3, event data rarely 10)."""
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
"""Escapes that may spell NUL or half of a surrogate pair (pairs are fine: checked parsed)."""


class BodyGuard:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if problem := url_problem(scope):
            return await _refuse(send, 400, problem)
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _refuse(send, 413, f"request body larger than {self.limit} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await _refuse(send, 413, f"request body larger than {self.limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"json" in headers.get(b"content-type", b"json") and (problem := check_json(body)):
            return await _refuse(send, 400, f"request body: {problem}")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def url_problem(scope: Scope) -> str | None:
    """What makes this request's URL unusable (NUL in its path or query), or None."""
    if "\x00" in scope["path"]:
        return f"the path {plain(scope['path'])!r} holds NUL (%00), which text may not hold"
    query = scope.get("query_string", b"")
    if b"%00" in query:
        name = next((part.split(b"=", 1)[0] for part in query.split(b"&") if b"%00" in part),
                    b"")
        return (f"query parameter {name.decode('ascii', 'replace')!r} holds NUL (%00), "
                "which text may not hold")
    return None


def check_json(body: bytes) -> str | None:
    """What makes this JSON body unstorable, or None (bad JSON is left to the parser)."""
    deep = body.count(b"{") + body.count(b"[") > MAX_DEPTH
    if not deep and not _SUSPECT.search(body):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None  # the app's parser answers with its own 4xx
    return _problem(data, "", 0)


def _problem(value: Any, where: str, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"{where or 'the body'} nests deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        return _text_problem(value, where)
    if isinstance(value, dict):
        for key, item in value.items():
            found = _text_problem(key, f"{where}.{key}" if where else "a key") or _problem(
                item, f"{where}.{key}" if where else key, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if found := _problem(item, f"{where}[{i}]", depth + 1):
                return found
    return None


def _text_problem(text: str, where: str) -> str | None:
    if "\x00" in text:
        return f"{where or 'text'} contains NUL (\\u0000), which text may not hold"
    if not _valid(text):
        return f"{where or 'text'} contains an unpaired UTF-16 surrogate: send valid Unicode"
    return None


async def _refuse(send: Send, status: int, detail: str) -> None:
    async def nothing() -> Message:
        return {"type": "http.request", "body": b""}

    await JSONResponse({"detail": plain(detail)}, status)({"type": "http"}, nothing, send)


def plain(value: Any, depth: int = 0) -> Any:
    """JSON-safe data from models, mappings, lists, enums, datetimes and text, whatever is in
    them (see the module's docstring)."""
    if depth > MAX_DEPTH * 2:
        return "…"
    if isinstance(value, BaseModel):
        value = dict(value.__dict__)
    if isinstance(value, str):
        return value if _valid(value) else "".join(
            "\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)
    if isinstance(value, enum.Enum):
        return plain(value.value, depth)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {plain(str(k), depth): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v, depth + 1) for v in value]
    return value


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(value: Any) -> bytes:
    """``plain(value)`` as JSON bytes."""
    return json.dumps(plain(value), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()


def to_json(value: Any) -> bytes:
    """Plain JSON data as bytes; cleaned by ``plain`` only when it holds what JSON cannot."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return dumps(value)
