"""A tiny JSON-over-HTTP server for the contract fakes (stdlib only, one thread per request):
a fake is a ``handle(request) -> Reply`` function; this module does the sockets."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection without an answer (the request never arrived, as the client sees
    it)."""


Handler = Callable[[Request], Reply]


class JsonServer:
    """``handler`` served on ``host:port`` (0: a free port) in a daemon thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self._server = ThreadingHTTPServer((host, port), _handler_class(handler))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> JsonServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"fake-http-{self.url}")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(handler: Handler) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(Reply(status=400, body={"msg": "the body is not JSON"}))
                return
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            request = Request(method=self.command, path=unquote(url.path), query=query, body=body,
                              headers={k.lower(): v for k, v in self.headers.items()})
            self._send(handler(request))

        def _send(self, reply: Reply) -> None:
            if reply.drop:
                self.close_connection = True
                return
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return _Handler
