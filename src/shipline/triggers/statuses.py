"""Which commit status a run should show on its forge.  Pure.

A run started by a pull-request event of a registered repository reports on
the pull request's head commit, under the context `shipline/PIPELINE`: pending
while it waits or runs, then success, failure, or error (cancelled).  Branch
protection that requires that context then blocks the merge of a failing
pull request.  Nothing else gets a status: pushes, tags, schedules and runs
started by hand are not checks of a pull request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shipline.domain.runs import RunStatus

CONTEXT_PREFIX = "shipline/"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_STATES = {
    RunStatus.QUEUED: "pending",
    RunStatus.RUNNING: "pending",
    RunStatus.SUCCEEDED: "success",
    RunStatus.FAILED: "failure",
    RunStatus.CANCELLED: "error",
}
DESCRIPTION_MAX = 140
"""GitHub refuses longer descriptions; Gitea cuts them."""


@dataclass(frozen=True)
class StatusUpdate:
    repository_id: int
    sha: str
    context: str
    state: str
    """pending | success | failure | error"""
    description: str
    target_url: str


def context_for(pipeline: str) -> str:
    """The commit-status context of a pipeline: what branch protection names (contract)."""
    return CONTEXT_PREFIX + pipeline


def run_link(server_url: str, run_id: int) -> str:
    return f"{server_url.rstrip('/')}/#/runs/{run_id}"


def _describe(run_id: int, status: RunStatus, message: str, results: dict[str, str]) -> str:
    if status is RunStatus.QUEUED:
        text = f"run {run_id} queued"
    elif status is RunStatus.RUNNING:
        text = f"run {run_id} running"
    elif status is RunStatus.SUCCEEDED:
        text = results.get("summary") or f"run {run_id} passed"
    elif status is RunStatus.CANCELLED:
        text = f"run {run_id} cancelled" + (f": {message}" if message else "")
    else:
        text = results.get("summary") or f"run {run_id} failed" + (f": {message}" if message else "")
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "…"


def commit_status(
    *,
    run_id: int,
    pipeline: str,
    status: RunStatus,
    trigger: dict[str, Any] | None,
    server_url: str,
    message: str = "",
    results: dict[str, str] | None = None,
) -> StatusUpdate | None:
    """The status this run should show now, or None when it reports none."""
    if not isinstance(trigger, dict) or trigger.get("event") != "pull_request":
        return None
    repository_id = trigger.get("repository_id")
    sha = trigger.get("sha")
    if not isinstance(repository_id, int) or not isinstance(sha, str) or not _SHA.match(sha):
        return None
    if trigger.get("pr_action") == "closed":
        return None  # a closed pull request's head is nothing to merge: no check to report
    return StatusUpdate(
        repository_id=repository_id,
        sha=sha,
        context=context_for(pipeline),
        state=_STATES[status],
        description=_describe(run_id, status, message, results or {}),
        target_url=run_link(server_url, run_id),
    )
