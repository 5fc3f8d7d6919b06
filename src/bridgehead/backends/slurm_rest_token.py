"""The JWT slurm_rest sends, from one of three places, its value never logged:

- ``rest_token``: fixed;
- ``rest_token_file``: a file (as the agent's own ``token_file``: the agent's user's, mode 600)
  read again whenever it changes (device, inode, mtime or size), as the site's tooling renews
  it: for an agent on a host without Slurm;
- else ``scontrol token`` (the cluster's Slurm client and slurm.conf), made again at 80% of
  its lifespan or when slurmrestd may have refused it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import time
from collections import Counter

from bridgehead.backends import slurm
from bridgehead.config import SlurmSettings, read_token_file
from bridgehead.errors import BackendUnavailable, ConfigError

logger = logging.getLogger(__name__)

_MIN_TOKEN_AGE_S = 30.0


class RestToken:
    """The JWT, from one of three places: ``rest_token`` (fixed); ``rest_token_file``, read
    again whenever the file changes (device, inode, mtime or size: the site's tooling renews
    it); or ``scontrol token`` (asyncio subprocess, argv list), made again at 80% of its
    lifespan or when slurmrestd may have refused it. Its value is never logged."""

    def __init__(self, settings: SlurmSettings, calls: Counter[str]) -> None:
        self._settings, self._calls = settings, calls
        self._fixed = settings.rest_token.get_secret_value() if settings.rest_token else None
        self._file, self._seen = settings.rest_token_file, (0, 0, 0, 0)
        self._value, self._made, self._renew_at = self._fixed, -math.inf, 0.0
        self._lock = asyncio.Lock()
        if self._file is not None:
            self._read_file(at_start=True)
        self.user = settings.rest_user or _jwt_user(self._value) or ""
        """Who the requests speak for: ``rest_user``, else the given token's user (its
        ``sun`` claim), else (set by the backend) the agent's user."""

    async def headers(self) -> dict[str, str]:
        if self._file is not None:
            self._read_file()
        elif self._fixed is None and time.monotonic() >= self._renew_at:
            await self.renew()
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._value or ""}

    async def renew(self, *, suspect: bool = False) -> bool:
        """A new token; False if there is none to get (the configured one, a file that did
        not change, or ``suspect`` but made in the last 30 s: then the answer did not mean
        a refused token)."""
        if self._file is not None:
            return self._read_file()
        if self._fixed is not None:
            return False
        async with self._lock:
            now = time.monotonic()
            if suspect and now - self._made < _MIN_TOKEN_AGE_S:
                return False
            if suspect or now >= self._renew_at:  # else another task just renewed it
                self._value, self._made = await self._mint(), now
                self._renew_at = now + 0.8 * self._settings.rest_token_lifespan_s
                logger.info("made a slurmrestd token for %s", self.user)
            return True

    def _read_file(self, *, at_start: bool = False) -> bool:
        """Read the token file if it changed since last seen: True if a new token was read.
        A file being rewritten may be unreadable or empty for a moment: the token read
        before stays in use, and the file is tried again once it changes again."""
        assert self._file is not None
        try:
            info = os.stat(self._file)
            seen = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            seen = (-1, -1, -1, -1)  # missing: said once, read again when it is back
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            value = read_token_file(self._file).removeprefix("SLURM_JWT=")
        except ConfigError as exc:
            message = exc.message
            if at_start:
                raise ConfigError(f"agent.slurm.rest_token_file: {message}") from exc
            if self._value is None:
                raise BackendUnavailable(f"no slurmrestd token: {message}") from exc
            logger.warning("keeping the slurmrestd token read before: %s", message)
            return False
        self._value = value
        if not at_start:
            self.user = self._settings.rest_user or _jwt_user(value) or self.user
        logger.info("read a slurmrestd token from %s", self._file)
        return True

    async def _mint(self) -> str:
        s = self._settings
        env = {"PATH": os.environ.get("PATH") or os.defpath}  # the agent's: scontrol is here
        if s.conf is not None:
            env["SLURM_CONF"] = str(s.conf)
        self._calls["scontrol_token"] += 1
        code, out, err = await slurm.run_tool(
            ["scontrol", "token", f"username={self.user}",
             f"lifespan={s.rest_token_lifespan_s}"],
            env=env, timeout_s=s.command_timeout_s, bin_dir=s.bin_dir)
        text = out.decode(errors="replace").strip()
        if code != 0 or not text.startswith("SLURM_JWT="):
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            raise BackendUnavailable(f"scontrol token failed: {lines[-1][:300]}")
        return text.removeprefix("SLURM_JWT=")


def _jwt_user(token: str | None) -> str | None:
    """The user a Slurm JWT speaks for: its ``sun`` claim (read, not verified: slurmctld
    verifies it)."""
    try:
        payload = (token or "").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    user = claims.get("sun") if isinstance(claims, dict) else None
    return user if isinstance(user, str) and user else None
