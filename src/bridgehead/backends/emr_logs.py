"""A step's logs, read once from where EMR puts them: ``<log_uri><cluster>/steps/<step>/
stdout.gz`` and ``stderr.gz``. EMR uploads them every few minutes while the step runs (there
is no live log to follow), so they are read when the step has ended; a step that ran
(succeeded or failed) has its end reported once its logs are there, or after
:data:`LOG_WAIT_S`; a step lost with its cluster is looked for once. Kept in memory until the
record forgets the step."""

from __future__ import annotations

import logging
import time
from typing import Any

from bridgehead.backends.emr_api import EmrApi
from bridgehead.domain.jobs import JobState
from bridgehead.errors import BackendUnavailable

logger = logging.getLogger(__name__)

LOG_WAIT_S = 120.0
_RAN = (JobState.SUCCEEDED.value, JobState.FAILED.value)


class StepLogs:
    def __init__(self, api: EmrApi, enabled: bool) -> None:
        self.api = api
        self.enabled = enabled
        self._logs: dict[str, dict[str, bytes]] = {}

    def awaiting(self, tag: str, entry: dict[str, Any]) -> bool:
        """Whether ``tag``'s end waits for its logs."""
        return (self.enabled and entry["final"]["state"] in _RAN and tag not in self._logs
                and time.time() - entry.get("final_at", 0) < LOG_WAIT_S)

    def read(self, tag: str, stream: str, offset: int, limit: int) -> bytes:
        return self._logs.get(tag, {}).get(stream, b"")[offset:offset + limit]

    async def fetch(self, steps: dict[str, dict[str, Any]]) -> None:
        """Read the logs of the record's ``steps`` that ended and have none yet."""
        if not self.enabled:
            return
        now = time.time()
        self._logs = {t: v for t, v in self._logs.items() if t in steps}
        for tag, entry in list(steps.items()):
            if entry.get("final") is None or tag in self._logs or not entry.get("step") \
                    or now - entry.get("final_at", now) > LOG_WAIT_S or entry.get("no_logs"):
                continue
            try:
                found = {s: await self.api.step_log(entry["cluster"], entry["step"], s)
                         for s in ("stdout", "stderr")}
            except BackendUnavailable as exc:
                logger.warning("EMR step logs unreadable for now: %s", exc)
                return
            if all(v is not None for v in found.values()):
                self._logs[tag] = {s: v or b"" for s, v in found.items()}
            elif not self.awaiting(tag, entry):
                entry["no_logs"] = True  # lost with its cluster: looked once
