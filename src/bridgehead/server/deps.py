"""What route handlers take from the app: its store."""

from __future__ import annotations

from fastapi import Request

from bridgehead.store import JobStore


def store_of(request: Request) -> JobStore:
    return request.app.state.store
