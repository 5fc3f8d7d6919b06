"""Where a job submitted from the CLI runs, and a word when that is why it failed.

Like sbatch, which runs a job where it was submitted, ``bridgehead submit`` without
``--workdir`` gives the job the caller's current directory when the cluster's agent says its
jobs see this host's files (``info.files``: the local backend, sbatch on a head node) and the
directory is under the agent's allowed roots (any, when it has none). Elsewhere the job runs
in the directory the agent makes for it; if it then fails and its command names relative
paths, ``relative_paths_note`` says so and how to set ``--workdir``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridgehead.backends.base import host_id
from bridgehead.domain.jobs import Job, JobState


def default_workdir(clusters: list[Mapping[str, Any]], cluster: str,
                    cwd: Path | None = None) -> str | None:
    """The caller's directory, if ``cluster``'s jobs would see it; else None."""
    here = (cwd or Path.cwd()).resolve()
    known = next((c for c in clusters if c.get("name") == cluster), None)
    files = (known or {}).get("info", {}).get("files")
    if not isinstance(files, Mapping) or files.get("host") != host_id():
        return None
    roots = [Path(r).resolve() for r in files.get("roots") or ()]
    if roots and not any(here.is_relative_to(root) for root in roots):
        return None
    return str(here)


def relative_words(command: tuple[str, ...], cwd: Path | None = None) -> list[str]:
    """The words of ``command`` that name a path relative to the caller's directory: its
    program when it has a ``/`` (``./job.sh``), and any argument that is a file here."""
    here = cwd or Path.cwd()
    found = []
    for i, word in enumerate(command):
        if not word or word.startswith(("/", "-")):
            continue
        if (i == 0 and "/" in word) or (i > 0 and (here / word).exists()):
            found.append(word)
    return found


def relative_paths_note(job: Job, cwd: Path | None = None) -> str | None:
    """Why a failed job that ran in its job directory may have failed, and the fix."""
    if job.state is not JobState.FAILED or job.spec.working_dir is not None:
        return None
    words = relative_words(job.spec.command, cwd)
    if not words:
        return None
    here = os.fspath(cwd or Path.cwd())
    return (f"the job ran in its job directory on cluster {job.cluster!r}, not in {here}: "
            f"relative paths ({', '.join(words)}) are looked up there; give --workdir DIR "
            f"(a directory the cluster sees) or absolute paths")
