"""The one exception tree of Bridgehead.

::

    BridgeheadError
    ├── InvalidSpec            bad input: a job spec, a filter, a name (HTTP 400, CLI exit 2)
    │   └── InvalidAt          ... at a field of a document (a workflow, a rule, a pattern)
    ├── ConfigError            bad settings or DSN (CLI exit 2)
    ├── NotFound               no such job/cluster/token (HTTP 404)
    ├── Conflict               the request contradicts the stored state (HTTP 409)
    ├── AuthError              missing or unknown token (HTTP 401)
    │   └── Forbidden          a valid token outside its scope (HTTP 403)
    ├── StoreError             the database failed or is unreachable (HTTP 503)
    ├── BackendError           a scheduler call failed
    │   ├── BackendUnavailable the scheduler cannot be reached: retry later, change nothing
    │   └── SubmitRejected     the scheduler refused the job: it fails with this message
    └── ClientError            the SDK could not talk to the server, or it answered an error
        ├── ServerUnavailable  connection refused / timed out / 5xx: retry later
        └── RateLimited        429: too many requests of the token at once (SDK retries)

Each class's docstring is its default message. Drivers' exceptions are translated at the
boundary where they occur, always ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self, TypeVar

T = TypeVar("T")


class BridgeheadError(Exception):
    """Bridgehead failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidSpec(BridgeheadError):
    """The request is not valid."""


Loc = tuple[str | int, ...]
"""The path of a field in a document: ``("steps", 1, "needs")``."""


def format_loc(loc: Loc) -> str:
    """``("steps", 1, "needs")`` -> ``"steps[1].needs"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


class InvalidAt(InvalidSpec):
    """The document is not valid at one field.

    ``loc`` is the path of the offending field, ``detail`` the message without it; the
    message is ``"steps[1].needs: <detail>"``. Each kind of document has its subclass."""

    def __init__(self, detail: str, loc: Loc = ()) -> None:
        super().__init__(f"{format_loc(loc)}: {detail}" if loc else detail)
        self.detail = detail
        self.loc = loc

    def within(self, *prefix: str | int) -> Self:
        """The same error, located inside ``prefix`` (a part validated alone, then placed)."""
        return type(self)(self.detail, (*prefix, *self.loc))

    @classmethod
    def located(cls, loc: Loc, build: Callable[..., T], *args: Any) -> T:
        """``build(*args)``, its errors located at ``loc``: one of this class moved inside
        ``loc``, any other ``InvalidSpec`` becoming one of this class there."""
        try:
            return build(*args)
        except cls as exc:
            raise exc.within(*loc) from exc
        except InvalidSpec as exc:
            raise cls(exc.message, loc) from exc


class ConfigError(BridgeheadError):
    """The configuration is not valid."""


class NotFound(BridgeheadError):
    """Not found."""


class Conflict(BridgeheadError):
    """The request conflicts with the current state."""


class AuthError(BridgeheadError):
    """A valid bearer token is required."""


class Forbidden(AuthError):
    """This token may not do that."""


class StoreError(BridgeheadError):
    """The job store failed."""


class BackendError(BridgeheadError):
    """The scheduler backend failed."""


class BackendUnavailable(BackendError):
    """The scheduler cannot be reached; try again later."""


class SubmitRejected(BackendError):
    """The scheduler refused the job."""


class ClientError(BridgeheadError):
    """The Bridgehead server answered with an error."""

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnavailable(ClientError):
    """The Bridgehead server cannot be reached."""


class RateLimited(ClientError):
    """The server refused the request for now (429: this token has too many requests in
    service at once); nothing of it was done. ``retry_after``: the seconds it asked to wait."""

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after
