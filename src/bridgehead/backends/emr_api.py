"""The EMR and S3 calls of the ``emr`` backend, counted, with AWS's errors translated at the
boundary: a throttled, refused or unreachable call is BackendUnavailable (the agent backs off
and changes no state). botocore's own retries are off, so :attr:`EmrApi.calls` counts every
request sent (the benchmark's figure) and a throttled call costs one poll interval, not a
burst of retries."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections import Counter
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bridgehead.backends.emr_steps import tag_in
from bridgehead.config import EmrSettings
from bridgehead.errors import BackendUnavailable

THROTTLING = {"ThrottlingException", "Throttling", "RequestLimitExceeded",
              "TooManyRequestsException"}
NO_OBJECT = {"NoSuchKey", "404", "NoSuchBucket"}


class EmrRefused(BackendUnavailable):
    """EMR answered the call with an error (throttled, refused): it did NOT act on it, so
    what the call was to do may be undone at once. A timeout is never this: the call may
    have landed."""

    def __init__(self, message: str, *, throttled: bool) -> None:
        super().__init__(message)
        self.throttled = throttled


class EmrApi:
    def __init__(self, settings: EmrSettings) -> None:
        self.settings = settings
        config = Config(retries={"total_max_attempts": 1}, connect_timeout=10,
                        read_timeout=settings.request_timeout_s)
        self._emr = boto3.client("emr", region_name=settings.region,
                                 endpoint_url=settings.endpoint_url, config=config)
        self._s3: Any = None
        self.calls = 0
        """EMR requests sent (all of them)."""
        self.by_action: Counter[str] = Counter()

    async def call(self, action: str, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        self.by_action[action] += 1
        method = getattr(self._emr, re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower())
        try:
            return await asyncio.to_thread(method, **kwargs)  # type: ignore[no-any-return]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            what = "throttled" if error.get("Code") in THROTTLING else "refused"
            raise EmrRefused(f"EMR {what} {action}: {error.get('Code')}: "
                             f"{error.get('Message')}", throttled=what == "throttled") from exc
        except BotoCoreError as exc:
            raise BackendUnavailable(f"cannot reach EMR ({action}): {exc}") from exc

    async def pages(self, action: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of a listing (``Marker``)."""
        out: list[dict[str, Any]] = []
        while True:
            answer = await self.call(action, **kwargs)
            out += answer.get(key, [])
            if not answer.get("Marker"):
                return out
            kwargs["Marker"] = answer["Marker"]

    async def steps(self, cid: str) -> list[dict[str, Any]]:
        """Every step of a cluster, whatever its state (recovery only)."""
        return await self.pages("ListSteps", "Steps", ClusterId=cid)

    async def steps_by_id(self, cid: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """These steps of a cluster, 10 a call (ListSteps' limit on StepIds)."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), 10):
            answer = await self.call("ListSteps", ClusterId=cid, StepIds=ids[i:i + 10])
            for step in answer.get("Steps", []):
                out[step["Id"]] = step
        return out

    async def step_log(self, cid: str, step_id: str, stream: str) -> bytes | None:
        """``<log_uri><cluster>/steps/<step>/<stream>.gz`` unzipped; None if not there (yet)."""
        bucket, _, prefix = str(self.settings.log_uri).removeprefix("s3://").partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        key = f"{prefix}{cid}/steps/{step_id}/{stream}.gz"
        if self._s3 is None:
            self._s3 = boto3.client("s3", region_name=self.settings.region,
                                    endpoint_url=self.settings.endpoint_url)
        try:
            body = await asyncio.to_thread(
                lambda: self._s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in NO_OBJECT:
                return None
            raise BackendUnavailable(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise BackendUnavailable(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        try:
            return gzip.decompress(body)
        except (OSError, EOFError):
            return bytes(body)


def by_tag(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Our steps among ``steps``, by the tag in their Name."""
    return {tag: s for s in steps if (tag := tag_in(s.get("Name", ""))) is not None}
