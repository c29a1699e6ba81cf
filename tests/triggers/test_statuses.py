"""Which commit status a run shows: pure."""

from __future__ import annotations

from typing import Any

from shipline.domain.runs import RunStatus
from shipline.triggers.statuses import commit_status

SHA = "ab" * 20
PR: dict[str, Any] = {"event": "pull_request", "repository_id": 3, "sha": SHA, "pr_number": 9, "pr_action": "opened"}


def status(run_status: RunStatus, trigger: dict[str, Any] | None = PR, **kw: Any) -> Any:
    return commit_status(run_id=12, pipeline="hello", status=run_status, trigger=trigger, server_url="https://ci.example/", **kw)


def test_a_pull_request_run_reports_on_its_head() -> None:
    pending = status(RunStatus.QUEUED)
    assert (pending.repository_id, pending.sha, pending.context, pending.state) == (3, SHA, "shipline/hello", "pending")
    assert pending.target_url == "https://ci.example/#/runs/12"
    assert status(RunStatus.RUNNING).state == "pending"
    assert status(RunStatus.SUCCEEDED).state == "success"
    assert status(RunStatus.FAILED).state == "failure"
    assert status(RunStatus.CANCELLED).state == "error"


def test_descriptions_say_what_happened_and_fit() -> None:
    assert status(RunStatus.RUNNING).description == "run 12 running"
    assert status(RunStatus.FAILED, message="task test failed: exit 1").description == "run 12 failed: task test failed: exit 1"
    # The service archetype's one-line summary is what a reviewer wants to read.
    done = status(RunStatus.SUCCEEDED, results={"summary": "passed: hello 1.2.0-pr-9.1, 14 tests passed"})
    assert done.description == "passed: hello 1.2.0-pr-9.1, 14 tests passed"
    long = status(RunStatus.FAILED, message="x\n" * 200)
    assert len(long.description) == 140 and "\n" not in long.description


def test_only_pull_request_runs_with_a_commit_report() -> None:
    assert status(RunStatus.SUCCEEDED, trigger=None) is None  # started by hand
    assert status(RunStatus.SUCCEEDED, trigger={**PR, "event": "push"}) is None
    assert status(RunStatus.SUCCEEDED, trigger={**PR, "sha": "main"}) is None  # no commit to put it on
    assert status(RunStatus.SUCCEEDED, trigger={k: v for k, v in PR.items() if k != "repository_id"}) is None
    assert status(RunStatus.SUCCEEDED, trigger={**PR, "pr_action": "closed"}) is None
