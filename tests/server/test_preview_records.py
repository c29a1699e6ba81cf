"""What the previews' work list records for each run and pull-request event (a real SQLite store, no forge, no cluster).

The end-to-end behaviour is in test_previews.py on the testbed; these pin the
rules that are hard to reach there: stale and fork runs, closed pull requests,
repositories without previews, and two pull requests that would share a namespace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shipline.domain.previews import PreviewState
from shipline.domain.runs import RunTransition
from shipline.server.previews import NO_KUBECONFIG, Previews, release_of
from shipline.settings import Settings
from shipline.store.previews import PreviewStore
from shipline.store.repositories import Repository, ServerStore
from shipline.store.secrets import Keyring, SecretStore
from shipline.store.sql import SqlStore
from shipline.triggers.events import EventKind, ForgeEvent, PullRequestAction

RESULTS = {"chart": "oci://127.0.0.1:5000/charts/hello", "chart-version": "0.1.1-pr-4.1", "version": "0.1.1-pr-4.1",
           "image": "127.0.0.1:5000/hello:0.1.1-pr-4.1"}  # fmt: skip


@pytest.fixture
def previews(settings: Settings, store: SqlStore) -> Previews:
    keyring = Keyring.from_settings(settings)
    return Previews(settings, store, ServerStore(store, keyring), SecretStore(store, keyring), owner="test")


def add_repo(previews: Previews, name: str, on: bool = True) -> Repository:
    # A plain git remote: no forge token, so no comment is posted (nothing to mock).
    return previews.state.add_repository(name=name, url=f"/srv/git/{name}.git", forge="git", secret="", pipeline="", previews=on)


def transition(repo: Repository, run_id: int, status: str, pr: int = 4, **trigger: Any) -> RunTransition:
    return RunTransition(
        id=run_id,
        run_id=run_id,
        pipeline="hello",
        kind="run",
        status=status,
        data={"results": RESULTS} if status == "succeeded" else {},
        at=datetime.now(UTC),
        trigger={"event": "pull_request", "repository_id": repo.id, "pr_number": pr, "pr_action": "opened", **trigger},
    )


def closed(repo: Repository, pr: int = 4, merged: bool = False) -> ForgeEvent:
    return ForgeEvent(
        forge="gitea", kind=EventKind.PULL_REQUEST, pr_number=pr, pr_action=PullRequestAction.CLOSED, pr_merged=merged
    )


def test_a_succeeded_run_is_the_release_wanted_and_a_stale_one_is_not(previews: Previews) -> None:
    repo = add_repo(previews, "hello")
    previews.handle(transition(repo, 2, "running"))
    previews.handle(transition(repo, 2, "succeeded"))
    previews.handle(transition(repo, 1, "succeeded"))  # an older push's run, ending late
    row = PreviewStore(previews.sql).get(repo.id, 4)
    assert row is not None and row.namespace == "preview-hello-pr-4" and row.open
    assert row.wanted == release_of(2, RESULTS) and row.last_run == 2 and row.needs_deploy


def test_no_preview_without_opt_in_or_from_a_fork(previews: Previews) -> None:
    plain = add_repo(previews, "plain", on=False)
    previews.handle(transition(plain, 1, "succeeded"))
    forked = add_repo(previews, "forked")
    previews.handle(transition(forked, 2, "succeeded", fork=True))
    assert PreviewStore(previews.sql).all(include_removed=True) == []


def test_a_pull_request_closed_before_its_run_ends_wants_nothing(previews: Previews) -> None:
    repo = add_repo(previews, "hello")
    previews.pull_request_event(repo, closed(repo))
    previews.handle(transition(repo, 3, "succeeded"))
    row = PreviewStore(previews.sql).get(repo.id, 4)
    assert row is not None and not row.open and row.wanted is None
    assert PreviewStore(previews.sql).pending() == []


def test_without_the_kubeconfig_the_preview_says_how_to_fix_it(previews: Previews) -> None:
    repo = add_repo(previews, "hello")
    previews.handle(transition(repo, 2, "succeeded"))
    previews.reconcile()
    row = PreviewStore(previews.sql).get(repo.id, 4)
    assert row is not None and row.state is PreviewState.FAILED and row.reason == NO_KUBECONFIG
    assert "shipline secrets set previews-kubeconfig" in NO_KUBECONFIG


def test_merged_removes_and_says_merged(previews: Previews) -> None:
    repo = add_repo(previews, "hello")
    previews.handle(transition(repo, 2, "running"))
    previews.pull_request_event(repo, closed(repo, merged=True))
    previews.reconcile()  # nothing was deployed: no cluster call, the row is done
    row = PreviewStore(previews.sql).get(repo.id, 4)
    assert row is not None and row.state is PreviewState.REMOVED and row.reason == "the pull request was merged"


def test_a_second_repository_cannot_take_a_namespace_in_use(previews: Previews) -> None:
    first, second = add_repo(previews, "first"), add_repo(previews, "second")
    previews.secrets.set("previews-kubeconfig", "not used: the refusal comes first")
    rows = PreviewStore(previews.sql)
    previews.handle(transition(first, 1, "running"))
    previews.handle(transition(second, 2, "succeeded"))  # its pipeline, too, is named hello
    previews.reconcile()
    taken = rows.get(second.id, 4)
    assert taken is not None and taken.state is PreviewState.FAILED
    assert "already the preview of pull request #4 of repository first" in taken.reason


def test_a_removed_repository_has_its_previews_removed(previews: Previews) -> None:
    repo = add_repo(previews, "hello")
    previews.handle(transition(repo, 2, "running"))
    previews.state.remove_repository("hello")
    previews.reconcile()  # nothing was deployed: no cluster call, the row is done
    row = PreviewStore(previews.sql).get(repo.id, 4)
    assert row is not None and row.state is PreviewState.REMOVED
    assert row.reason == "the repository was removed from shipline"
