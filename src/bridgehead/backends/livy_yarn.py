"""The YARN ResourceManager behind a Livy server, as the ``livy`` backend asks it: apps by our
tags in one query, a kill, and exact usage (Hadoop's ResourceManagerRest.md, "Cluster
Applications API": ``applicationTags`` matches ANY of a comma-separated list; each app has
``state``, ``finalStatus``, ``diagnostics``, ``vcoreSeconds``, ``memorySeconds``). Usage is
``vcoreSeconds`` only: why ``memorySeconds`` is not carried is in :meth:`YarnRM.usage`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import httpx

from bridgehead.domain.jobs import Usage
from bridgehead.errors import BackendUnavailable

_YARN_TAG = re.compile(r"[a-z0-9._-]{1,90}")
TAGS_PER_QUERY = 500
"""Tags in one ``applicationTags`` query: 500 keep its URL under ~25 KB (the RM's web server
takes request headers up to ``hadoop.http.max.request.header.size``, 64 KB by default)."""


def yarn_tag(tag: str) -> str:
    """Our tag as YARN keeps it (lower-case, no commas, at most 100 characters): ``bh-<tag>``,
    or ``bh-<sha256 prefix>`` for a tag that would not survive that."""
    if _YARN_TAG.fullmatch(tag):
        return f"bh-{tag}"
    return "bh-" + hashlib.sha256(tag.encode()).hexdigest()[:32]


class YarnRM:
    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/")
        self._client = client
        self.requests = 0

    async def apps(self, tags: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest app carrying each of our ``tags`` (given as Bridgehead tags), keyed by
        its YARN tag."""
        wanted = sorted({yarn_tag(t) for t in tags})
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(wanted), TAGS_PER_QUERY):
            part = set(wanted[i:i + TAGS_PER_QUERY])
            data = await self._get({"applicationTags": ",".join(sorted(part))})
            for app in (data.get("apps") or {}).get("app") or []:  # {"apps": null}: none
                app_tags = str(app.get("applicationTags") or "").split(",")
                for t in part.intersection(app_tags):
                    if int(app.get("startedTime") or 0) >= int(
                            out.get(t, {}).get("startedTime") or 0):
                        out[t] = app
        return out

    @staticmethod
    def usage(app: dict[str, Any]) -> Usage | None:
        """``vcoreSeconds`` exactly, as core-seconds: cores = its average over the app's
        ``elapsedTime`` (at least 1), elapsed = vcoreSeconds / cores.

        ``memorySeconds`` is not carried. It is what YARN ALLOCATED to all the app's
        containers together ("The amount of memory the application has allocated
        (megabyte-seconds)", ResourceManagerRest.md), not what its processes used, and
        :class:`Usage`'s only memory field, ``max_rss_mb``, is the PEAK RESIDENT memory of one
        task (Slurm's MaxRSS; the UI shows it as "Peak memory"): memorySeconds / elapsedTime
        is an average allocation summed over containers, neither a peak nor resident.
        Putting it there would misstate what the job used; and Usage is stored and priced,
        so it is not widened here either: a field for allocated MB-seconds would carry it."""
        vcore_s = float(app.get("vcoreSeconds") or 0)
        if vcore_s <= 0:
            return None
        elapsed = float(app.get("elapsedTime") or 0) / 1000
        cores = max(1, round(vcore_s / elapsed)) if elapsed > 0 else 1
        return Usage(elapsed_s=vcore_s / cores, cores=cores, nodes=1)

    async def kill(self, app_id: str) -> None:
        """``PUT /ws/v1/cluster/apps/{id}/state {"state": "KILLED"}`` (200 or 202)."""
        url = f"{self.url}/ws/v1/cluster/apps/{app_id}/state"
        try:
            response = await self._client.put(url, json={"state": "KILLED"})
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach YARN at {url}: {exc!r}") from exc
        self.requests += 1
        if response.status_code not in (200, 202, 404):
            raise BackendUnavailable(f"YARN answered the kill of {app_id} with HTTP "
                                     f"{response.status_code}")

    async def _get(self, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.url}/ws/v1/cluster/apps"
        try:
            response = await self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach YARN at {url}: {exc!r}") from exc
        self.requests += 1
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200 or not isinstance(data, dict):
            raise BackendUnavailable(f"YARN answered {url} with HTTP {response.status_code}")
        return data
