"""Trigger rules: which events of a repository start its pipeline, and with what params.

A rule is data a user writes (CLI, API); `matching.py` applies it.  Branch,
tag and path filters are globs where `*` stays within one `/`-separated part,
`**` crosses parts, `?` is one character, and a leading `!` excludes.  The
word `:default` stands for the repository's default branch (a git branch name
cannot contain `:`, so it never clashes with a real branch).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from croniter import croniter  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shipline.domain.urls import has_credentials, public_url
from shipline.triggers.events import PullRequestAction

DEFAULT_BRANCH = ":default"


class On(StrEnum):
    PUSH = "push"
    TAG = "tag"
    PULL_REQUEST = "pull_request"
    SCHEDULE = "schedule"


class Concurrency(StrEnum):
    QUEUE = "queue"
    """A newer run for the same pipeline and branch waits its turn."""
    CANCEL = "cancel"
    """A newer run for the same pipeline and branch cancels the older, unfinished ones."""
    PARALLEL = "parallel"
    """Runs for the same pipeline and branch run side by side."""


Glob = Annotated[str, Field(min_length=1, max_length=200)]
ParamName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]


class TriggerRule(BaseModel):
    """One rule.  With no filters, a push rule fires for every branch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: On
    branches: list[Glob] = []
    """Push: the pushed branch.  Pull request: the base (target) branch.  Schedule: the one branch to build."""
    tags: list[Glob] = []
    """Tag: which tags (e.g. `v*`)."""
    paths: list[Glob] = []
    """Push: run only when a changed file matches.  When the forge does not list the files, the rule fires."""
    actions: list[PullRequestAction] = [
        PullRequestAction.OPENED,
        PullRequestAction.SYNCHRONIZED,
        PullRequestAction.REOPENED,
    ]
    """Pull request: which actions fire (`closed` e.g. removes a preview environment)."""
    cron: str | None = None
    """Schedule: a five-field cron expression in UTC, e.g. `0 3 * * *`."""
    params: dict[ParamName, str] = {}
    """Fixed params for the run; they win over the ones taken from the event."""
    concurrency: Concurrency = Concurrency.QUEUE

    @field_validator("params")
    @classmethod
    def _no_credentials(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.context and info.context.get("stored"):  # one an older version let in: shown without
            return {name: public_url(param) for name, param in value.items()}
        for name, param in value.items():
            if has_credentials(param):
                raise ValueError(
                    f"param {name!r} is a URL with credentials ({public_url(param)!r} with a token or password); "
                    "rules are shown to everyone who can read them: give the URL without, the token as a secret"
                )
        return value

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, value: list[PullRequestAction]) -> list[PullRequestAction]:
        if PullRequestAction.OTHER in value:
            raise ValueError("actions are opened, synchronized, reopened and closed")
        return value

    @model_validator(mode="after")
    def _fits(self) -> TriggerRule:
        if self.on is On.SCHEDULE:
            if not self.cron:
                raise ValueError("a schedule rule needs `cron`, e.g. '0 3 * * *' (every day at 03:00 UTC)")
            if not croniter.is_valid(self.cron):
                raise ValueError(f"{self.cron!r} is not a cron expression: five fields, e.g. '0 3 * * *'")
            if len(self.branches) > 1 or any(b.startswith("!") or "*" in b for b in self.branches):
                raise ValueError("a schedule rule builds one branch: give at most one branch name, no globs")
        elif self.cron:
            raise ValueError(f"`cron` belongs to schedule rules, not to `on: {self.on.value}`")
        if self.tags and self.on is not On.TAG:
            raise ValueError("`tags` filters belong to `on: tag` rules")
        if self.paths and self.on is not On.PUSH:
            raise ValueError("`paths` filters belong to `on: push` rules")
        return self


DEFAULT_RULES = (TriggerRule(on=On.PUSH, branches=[DEFAULT_BRANCH]),)
"""What a repository with no rules of its own gets: a run for each push to its default branch."""
