"""Applying trigger rules to an event: does it fire, and with which params.  Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from shipline.triggers.events import EventKind, ForgeEvent
from shipline.triggers.rules import DEFAULT_BRANCH, On, TriggerRule


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(pattern: str, name: str) -> bool:
    """`*` within one path part, `**` across parts, `?` one character."""
    return _compile(pattern).fullmatch(name) is not None


def filter_match(patterns: Sequence[str], name: str, default_branch: str = "") -> bool:
    """True when `name` matches an including pattern (or there are none) and no `!` pattern.

    The last pattern that matches decides, as in GitHub Actions, so
    `["release/**", "!release/old"]` works as read.
    """
    if not patterns:
        return True
    decided = all(p.startswith("!") for p in patterns)
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        hit = name == default_branch if pattern == DEFAULT_BRANCH else glob_match(pattern, name)
        if hit:
            decided = not negate
    return decided


def _paths_match(patterns: Sequence[str], event: ForgeEvent) -> bool:
    if not patterns or not event.paths_known:
        return True
    return any(filter_match(patterns, path) for path in event.paths)


def fires(rule: TriggerRule, event: ForgeEvent) -> bool:
    """Does this rule start a run for this event?"""
    default = event.default_branch
    if rule.on is On.PUSH:
        return (
            event.kind is EventKind.PUSH
            and filter_match(rule.branches, event.branch, default)
            and _paths_match(rule.paths, event)
        )
    if rule.on is On.TAG:
        return event.kind is EventKind.TAG and filter_match(rule.tags, event.tag)
    if rule.on is On.PULL_REQUEST:
        return (
            event.kind is EventKind.PULL_REQUEST
            and event.pr_action in rule.actions
            and filter_match(rule.branches, event.base_branch, default)
        )
    return False  # schedules fire from the clock, not from events


def event_params(event: ForgeEvent, repo_url: str) -> dict[str, str]:
    """The params every triggered run is offered; a pipeline receives those it declares.

    `event`, `repo_url` and `url` (the repository), `repository` (owner/name),
    `revision` (the commit, or the branch when the commit is not known), `branch`,
    `tag`, and for pull requests `base_branch`, `pr_number` and `pr` (the same
    number: the service archetype's name), `pr_action`.
    """
    params = {"event": event.kind.value, "repo_url": repo_url, "url": repo_url, "repository": event.repo_name}
    if event.branch:
        params["branch"] = event.branch
    if event.tag:
        params["tag"] = event.tag
    revision = event.sha or event.branch or event.tag
    if revision:
        params["revision"] = revision
    if event.kind is EventKind.PULL_REQUEST:
        params["base_branch"] = event.base_branch
        params["pr_number"] = str(event.pr_number) if event.pr_number is not None else ""
        params["pr"] = params["pr_number"]
        params["pr_action"] = event.pr_action.value if event.pr_action else ""
    return params


@dataclass(frozen=True)
class Match:
    rule_index: int
    rule: TriggerRule
    params: dict[str, str]


def match(rules: Iterable[TriggerRule], event: ForgeEvent, repo_url: str) -> list[Match]:
    """Every rule that fires, with the params of the run it starts."""
    out = []
    for i, rule in enumerate(rules):
        if fires(rule, event):
            out.append(Match(i, rule, {**event_params(event, repo_url), **rule.params}))
    return out


def concurrency_key(pipeline: str, event: ForgeEvent) -> str:
    """Runs with the same key queue behind, or cancel, each other (it becomes their concurrency group).

    `:` separates the parts: neither pipeline names nor git refs may contain it.
    """
    if event.kind is EventKind.PULL_REQUEST:
        return f"{pipeline}:pr:{event.pr_number}"
    if event.kind is EventKind.TAG:
        return f"{pipeline}:tag:{event.tag}"
    return f"{pipeline}:branch:{event.branch}"
