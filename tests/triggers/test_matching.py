from __future__ import annotations

import pytest
from pydantic import ValidationError

from shipline.triggers.events import EventKind, ForgeEvent, PullRequestAction
from shipline.triggers.matching import filter_match, glob_match, match
from shipline.triggers.rules import DEFAULT_RULES, On, TriggerRule

URL = "http://forge/o/r.git"


def push(branch: str, paths: tuple[str, ...] = (), known: bool = True) -> ForgeEvent:
    return ForgeEvent(
        forge="github",
        kind=EventKind.PUSH,
        branch=branch,
        default_branch="main",
        sha="a" * 40,
        paths=paths,
        paths_known=known,
        repo_name="o/r",
    )


def pr(action: PullRequestAction, base: str = "main") -> ForgeEvent:
    return ForgeEvent(
        forge="gitea",
        kind=EventKind.PULL_REQUEST,
        branch="feature/x",
        base_branch=base,
        default_branch="main",
        pr_number=7,
        pr_action=action,
        sha="b" * 40,
    )


def test_globs() -> None:
    assert glob_match("release/*", "release/1.0")
    assert not glob_match("release/*", "release/1.0/hotfix")
    assert glob_match("release/**", "release/1.0/hotfix")
    assert glob_match("v?.*", "v1.2")
    assert not glob_match("main", "main2")
    assert glob_match("a.b", "a.b") and not glob_match("a.b", "axb")
    assert filter_match(["**", "!:default"], "feature", "main")
    assert not filter_match(["**", "!:default"], "main", "main")
    assert filter_match(["!wip/**"], "feature", "main") and not filter_match(["!wip/**"], "wip/x", "main")


def test_default_branch_and_other_branches() -> None:
    assert [m.params["branch"] for m in match(DEFAULT_RULES, push("main"), URL)] == ["main"]
    assert match(DEFAULT_RULES, push("feature"), URL) == []
    others = [TriggerRule(on=On.PUSH, branches=["**", "!:default"], params={"stage": "test"})]
    (m,) = match(others, push("feature/a"), URL)
    assert m.params == {
        "event": "push",
        "repo_url": URL,
        "url": URL,
        "repository": "o/r",
        "branch": "feature/a",
        "revision": "a" * 40,
        "stage": "test",
    }


def test_path_filters() -> None:
    rule = [TriggerRule(on=On.PUSH, paths=["src/**", "!src/docs/**"])]
    assert match(rule, push("main", ("src/app.py",)), URL)
    assert not match(rule, push("main", ("README.md", "src/docs/a.md")), URL)
    # The forge did not list every file: fire rather than miss a change.
    assert match(rule, push("main", (), known=False), URL)


def test_tags_and_pull_requests() -> None:
    tag = ForgeEvent(forge="gitlab", kind=EventKind.TAG, tag="v1.0.0", sha="c" * 40)
    assert match([TriggerRule(on=On.TAG, tags=["v*"])], tag, URL)[0].params["tag"] == "v1.0.0"
    assert not match([TriggerRule(on=On.TAG, tags=["release-*"])], tag, URL)
    rules = [TriggerRule(on=On.PULL_REQUEST)]
    for action in (PullRequestAction.OPENED, PullRequestAction.SYNCHRONIZED, PullRequestAction.REOPENED):
        (m,) = match(rules, pr(action), URL)
        assert m.params["pr_number"] == "7" and m.params["base_branch"] == "main"
        # The service archetype's names: `url`, `revision` (the head commit), `branch` (the head), `pr`.
        assert (m.params["pr"], m.params["url"], m.params["revision"], m.params["branch"]) == ("7", URL, "b" * 40, "feature/x")
    assert not match(rules, pr(PullRequestAction.CLOSED), URL)
    assert match([TriggerRule(on=On.PULL_REQUEST, actions=[PullRequestAction.CLOSED])], pr(PullRequestAction.CLOSED), URL)
    assert not match([TriggerRule(on=On.PULL_REQUEST, branches=["release/*"])], pr(PullRequestAction.OPENED), URL)
    # A push rule never fires for a pull request, nor for a deleted branch.
    assert not match([TriggerRule(on=On.PUSH)], pr(PullRequestAction.OPENED), URL)
    assert not match([TriggerRule(on=On.PUSH)], ForgeEvent(forge="github", kind=EventKind.DELETE, branch="x"), URL)


def test_rule_validation_names_the_fix() -> None:
    with pytest.raises(ValidationError, match="needs `cron`"):
        TriggerRule(on=On.SCHEDULE)
    with pytest.raises(ValidationError, match="belong to `on: tag`"):
        TriggerRule(on=On.PUSH, tags=["v*"])
    with pytest.raises(ValidationError, match="at most one branch"):
        TriggerRule(on=On.SCHEDULE, cron="0 3 * * *", branches=["**"])
    with pytest.raises(ValidationError):
        TriggerRule(on=On.PUSH, params={"bad name": "x"})


def test_hostile_branch_is_only_a_value() -> None:
    hostile = "$(touch /tmp/pwned)"
    (m,) = match([TriggerRule(on=On.PUSH)], push(hostile), URL)
    assert m.params["branch"] == hostile
