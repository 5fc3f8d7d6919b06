"""Logging set-up: plain text for people, one JSON object per line for log pipelines.

INFO is for state changes (a job queued, submitted, running, ended; a server or agent started
or stopped). Per-request lines are DEBUG: httpx logs every request at INFO, and an agent
heartbeats, claims and reports every few seconds, so those records are demoted
(:func:`quiet_requests`, applied by the SDK's clients and by :func:`setup_logging`) and shown
only when DEBUG is asked for. Secrets (bearer tokens) are masked in every record our handler
writes, whatever logger made it.
"""

from __future__ import annotations

import json
import logging
import re
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

REQUEST_LOGGERS = ("httpx", "httpcore", "uvicorn.access")
"""Loggers that write a line per HTTP request (client and server side)."""
STATEMENT_LOGGERS = ("aiosqlite",)
"""Database drivers that log every statement with its parameters at DEBUG: a job's spec
(its env values) and more. Kept at INFO even when DEBUG is asked for."""

_BEARER = re.compile(r"(?i)(bearer\s+|authorization['\"]?\s*[:=]\s*['\"]?)[^\s'\",]+")
_TOKEN = re.compile(r"\bbh_[A-Za-z0-9_\-]{8,}")


def mask_secrets(text: str) -> str:
    """``text`` with bearer credentials and Bridgehead tokens (``bh_...``) replaced by
    ``***``: a last guard, for a message that quotes a header or a request by mistake."""
    return _TOKEN.sub("bh_***", _BEARER.sub(r"\1***", text))


class _DemoteRequests(logging.Filter):
    """Makes an INFO record of a request logger DEBUG, and drops it unless that logger is
    enabled for DEBUG (its own level, or the root's, set so)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_DEMOTE = _DemoteRequests()


def quiet_requests(names: tuple[str, ...] = REQUEST_LOGGERS) -> None:
    """Demote the per-request INFO lines of ``names`` to DEBUG (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _DEMOTE not in logger.filters:
            logger.addFilter(_DEMOTE)


def loud_requests(names: tuple[str, ...]) -> None:
    """Undo :func:`quiet_requests` for ``names`` (``bridgehead server --access-log``)."""
    for name in names:
        logging.getLogger(name).removeFilter(_DEMOTE)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(out, default=str))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_requests()
    for name in STATEMENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
