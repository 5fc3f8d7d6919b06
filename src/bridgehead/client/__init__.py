"""Python SDK: ``AsyncClient`` and its synchronous facade ``Client``."""

from bridgehead.client.core import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]
