"""DORA's four keys, computed from what shipline itself recorded.

Environment history (one entry per finished sync or rollback) gives
deployments, change failures and restores of each environment; promotions
(one row per service version proposed to an environment) give each service's
lead time from its commit to verified.  Everything here is a pure function of
those records and a window, so the CLI, the API, `/metrics` and the dashboard
show the same figures.  Definitions (also in docs/environments.md):

- deployment: a sync that applied a new commit and verified it (per service:
  a verified promotion);
- lead time for changes: verified_at - commit_time of verified promotions;
- change failure rate: syncs that applied a change and failed verification or
  were rolled back (or were later undone by a rollback) / syncs that applied
  a change;
- time to restore: from the first failed sync of a streak to the next
  verified sync or rollback of that environment, counted in the window where
  the restore happened.

Bands follow the Accelerate State of DevOps reports (2023 and 2024); see
`band_*` below for which year each threshold comes from and why.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cached_property

from pydantic import BaseModel, ConfigDict

from shipline.domain.environments import HistoryEntry, Outcome

WINDOWS = {"7d": 7, "30d": 30, "90d": 90}
"""The windows the CLI, API and dashboard offer (days)."""

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 30 * DAY


class Band(StrEnum):
    """A DORA performance level."""

    ELITE = "elite"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


def band_frequency(per_day: float) -> Band:
    """2023 and 2024 reports (the same for both): elite on demand (several a day), high between once a
    day and once a week, medium between once a week and once a month, low less often."""
    if per_day > 1:
        return Band.ELITE
    if per_day >= 1 / 7:
        return Band.HIGH
    if per_day >= 1 / 30:
        return Band.MEDIUM
    return Band.LOW


def band_lead_time(seconds: float) -> Band:
    """2023 and 2024 reports: elite less than a day, high a day to a week, medium a week to a month."""
    if seconds < DAY:
        return Band.ELITE
    if seconds <= WEEK:
        return Band.HIGH
    if seconds <= MONTH:
        return Band.MEDIUM
    return Band.LOW


def band_failure_rate(rate: float) -> Band:
    """2023 report (5%, 10%, 15%, 64%): the 2024 clusters put high (20%) above medium (10%), which
    cannot rank one team's figure, so the last report with ordered levels is used."""
    if rate <= 0.05:
        return Band.ELITE
    if rate <= 0.10:
        return Band.HIGH
    if rate <= 0.15:
        return Band.MEDIUM
    return Band.LOW


def band_restore(seconds: float) -> Band:
    """2023 report: elite less than an hour, high less than a day, medium a day to a week, low longer
    (2024 gives high and medium the same "less than one day")."""
    if seconds < HOUR:
        return Band.ELITE
    if seconds < DAY:
        return Band.HIGH
    if seconds <= WEEK:
        return Band.MEDIUM
    return Band.LOW


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    """The part of a promotion (a service version proposed to an environment) the metrics read."""

    service: str
    environment: str
    state: str
    """proposed, open, merged, verified, failed, superseded or closed."""
    commit_time: datetime | None
    """When the service's commit was made (None when unknown)."""
    updated_at: datetime
    merged_at: datetime | None
    verified_at: datetime | None
    pr_number: int | None = None
    """Its pull request: a failed promotion that had one failed after a sync, not while being proposed."""

    @property
    def applied(self) -> bool:
        """Reached the environment's branch (a sync can fail it without `merged_at` when a person merged)."""
        return self.merged_at is not None or self.pr_number is not None


@dataclass(frozen=True)
class Window:
    end: datetime
    days: int

    @cached_property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)

    def holds(self, moment: datetime) -> bool:
        return self.start < moment <= self.end


def parse_window(text: str) -> int:
    """`7d`, `30d` or `90d` as days; ValueError naming the choices otherwise."""
    days = WINDOWS.get(text.strip().lower())
    if days is None:
        raise ValueError(f"window {text!r} is not one of {', '.join(WINDOWS)}")
    return days


# --- outputs --------------------------------------------------------------------------------


class Times(BaseModel):
    """Durations in seconds: how many, their median and 90th percentile (None when there are none)."""

    model_config = ConfigDict(frozen=True)

    count: int
    median_seconds: float | None
    p90_seconds: float | None


class Metrics(BaseModel):
    """The four keys for one scope: everything selected (both names empty), one environment or one service."""

    model_config = ConfigDict(frozen=True)

    environment: str
    service: str
    deployments: int
    deployment_frequency: float
    """Deployments per day over the window."""
    deployment_frequency_band: Band | None
    lead_time: Times
    lead_time_band: Band | None
    changes: int
    """Syncs (promotions) that applied a change and then verified or failed."""
    failed_changes: int
    change_failure_rate: float | None
    change_failure_rate_band: Band | None
    time_to_restore: Times
    time_to_restore_band: Band | None
    unrestored: int
    """Failures in the window not restored by its end."""


class Day(BaseModel):
    model_config = ConfigDict(frozen=True)

    date: date
    deployments: int
    failed_changes: int


class Report(BaseModel):
    """What `shipline metrics dora --json` prints and `GET /api/v1/metrics/dora` returns."""

    model_config = ConfigDict(frozen=True)

    window_days: int
    start: datetime
    end: datetime
    overall: Metrics
    environments: list[Metrics]
    services: list[Metrics]
    days: list[Day]
    """Deployments and failed changes per day (UTC) of the window, oldest first, for plots."""


# --- computing ------------------------------------------------------------------------------


def times(seconds: Sequence[float]) -> Times:
    if not seconds:
        return Times(count=0, median_seconds=None, p90_seconds=None)
    ordered = sorted(seconds)
    p90 = ordered[0] if len(ordered) == 1 else statistics.quantiles(ordered, n=10, method="inclusive")[8]
    return Times(count=len(ordered), median_seconds=float(statistics.median(ordered)), p90_seconds=float(p90))


@dataclass
class _Events:
    """What happened in one scope, as moments; the window is applied when the figures are made."""

    deployments: list[datetime]
    changes: list[tuple[datetime, bool]]
    """(when, failed) of each change."""
    restores: list[tuple[datetime, datetime]]
    """(failed at, restored at)."""
    open_failures: list[datetime]
    """The start of each failure streak not restored yet (one at most per environment and service)."""
    lead_times: list[tuple[datetime, float]]
    """(verified at, seconds) of each change whose commit time is known."""

    @classmethod
    def empty(cls) -> _Events:
        return cls([], [], [], [], [])

    def merged(self, other: _Events) -> _Events:
        return _Events(
            self.deployments + other.deployments,
            self.changes + other.changes,
            self.restores + other.restores,
            self.open_failures + other.open_failures,
            self.lead_times + other.lead_times,
        )


def _history_events(entries: Iterable[HistoryEntry]) -> _Events:
    """One environment's history (any order) as deployments, changes and restores."""
    events = _Events.empty()
    applied = ""
    failing: datetime | None = None
    last_change: int | None = None  # index in events.changes of a verified change still live
    for entry in sorted(entries, key=lambda e: (e.created_at, e.id)):
        moment = entry.created_at
        if entry.action == "sync":
            touched = entry.outcome != Outcome.FAILED or bool(entry.applied_commit)
            is_change = touched and entry.commit != applied
            if entry.outcome == Outcome.VERIFIED:
                if failing is not None:
                    events.restores.append((failing, moment))
                    failing = None
                if is_change:
                    events.deployments.append(moment)
                    events.changes.append((moment, False))
                    last_change = len(events.changes) - 1
            elif is_change:
                events.changes.append((moment, True))
                last_change = None
                if failing is None:
                    failing = moment
        elif entry.action == "rollback" and entry.outcome == Outcome.VERIFIED:
            if failing is not None:
                events.restores.append((failing, moment))
                failing = None
            elif last_change is not None:
                # Someone rolled a verified change back: it failed in production after all.
                at, _ = events.changes[last_change]
                events.changes[last_change] = (at, True)
                events.restores.append((at, moment))
            last_change = None
        if entry.applied_commit:
            applied = entry.applied_commit
    events.open_failures = [failing] if failing is not None else []
    return events


def _promotion_events(promotions: Iterable[Promotion], until: datetime) -> _Events:
    """Promotions of one service to one environment (any order), as they stood at `until`."""
    events = _Events.empty()
    failing: datetime | None = None
    ended: list[tuple[datetime, Promotion]] = []
    for p in promotions:
        if p.state == "verified" and p.verified_at is not None:
            ended.append((p.verified_at, p))
        elif p.state == "failed" and p.applied:
            ended.append((p.updated_at, p))
    for moment, p in sorted((pair for pair in ended if pair[0] <= until), key=lambda pair: pair[0]):
        if p.state == "verified":
            if failing is not None:
                events.restores.append((failing, moment))
                failing = None
            events.deployments.append(moment)
            events.changes.append((moment, False))
            if p.commit_time is not None:
                events.lead_times.append((moment, max(0.0, (moment - p.commit_time).total_seconds())))
        else:
            events.changes.append((moment, True))
            if failing is None:
                failing = moment
    events.open_failures = [failing] if failing is not None else []
    return events


def _lead_times(promotions: Iterable[Promotion]) -> list[tuple[datetime, float]]:
    out = []
    for p in promotions:
        if p.state == "verified" and p.verified_at is not None and p.commit_time is not None:
            out.append((p.verified_at, max(0.0, (p.verified_at - p.commit_time).total_seconds())))
    return out


def _metrics(events: _Events, window: Window, *, environment: str = "", service: str = "", has_data: bool) -> Metrics:
    deployments = sum(1 for m in events.deployments if window.holds(m))
    frequency = deployments / window.days
    leads = [s for m, s in events.lead_times if window.holds(m)]
    changes = [failed for m, failed in events.changes if window.holds(m)]
    failed = sum(changes)
    rate = failed / len(changes) if changes else None
    restores = [(r - f).total_seconds() for f, r in events.restores if window.holds(r)]
    lead, restore = times(leads), times(restores)
    return Metrics(
        environment=environment,
        service=service,
        deployments=deployments,
        deployment_frequency=round(frequency, 6),
        deployment_frequency_band=band_frequency(frequency) if has_data else None,
        lead_time=lead,
        lead_time_band=band_lead_time(lead.median_seconds) if lead.median_seconds is not None else None,
        changes=len(changes),
        failed_changes=failed,
        change_failure_rate=round(rate, 6) if rate is not None else None,
        change_failure_rate_band=band_failure_rate(rate) if rate is not None else None,
        time_to_restore=restore,
        time_to_restore_band=band_restore(restore.median_seconds) if restore.median_seconds is not None else None,
        unrestored=sum(1 for m in events.open_failures if m <= window.end),
    )


def report(
    history: Iterable[HistoryEntry],
    promotions: Iterable[Promotion],
    window: Window,
    *,
    environment: str = "",
    service: str = "",
) -> Report:
    """The four keys over `window`, for everything selected, each environment and each service.

    `history` and `promotions` may hold records from before the window (a
    restore in the window may end a failure from before it) and after it
    (ignored).  `environment` keeps one environment.  `service` keeps one
    service, and then every figure comes from its promotions: the
    environments' rows are that service's deployments to each.
    """
    entries = [e for e in history if e.created_at <= window.end and (not environment or e.environment == environment)]
    chosen = [
        p for p in promotions if (not environment or p.environment == environment) and (not service or p.service == service)
    ]

    env_rows: list[Metrics] = []
    overall = _Events.empty()
    if service:
        for name in sorted({p.environment for p in chosen}):
            events = _promotion_events((p for p in chosen if p.environment == name), window.end)
            overall = overall.merged(events)
            env_rows.append(_metrics(events, window, environment=name, service=service, has_data=True))
        has_data = bool(chosen)
    else:
        by_env: dict[str, list[HistoryEntry]] = {}
        for entry in entries:
            by_env.setdefault(entry.environment, []).append(entry)
        for name in sorted(set(by_env) | {p.environment for p in chosen}):
            events = _history_events(by_env.get(name, []))
            events.lead_times = _lead_times(p for p in chosen if p.environment == name)
            overall = overall.merged(events)
            env_rows.append(_metrics(events, window, environment=name, has_data=name in by_env))
        has_data = bool(entries)

    service_rows: list[Metrics] = []
    for name in sorted({p.service for p in chosen}):
        events = _Events.empty()
        mine = [p for p in chosen if p.service == name]
        for env_name in sorted({p.environment for p in mine}):
            events = events.merged(_promotion_events((p for p in mine if p.environment == env_name), window.end))
        service_rows.append(_metrics(events, window, environment=environment, service=name, has_data=True))

    return Report(
        window_days=window.days,
        start=window.start,
        end=window.end,
        overall=_metrics(overall, window, environment=environment, service=service, has_data=has_data),
        environments=env_rows,
        services=service_rows,
        days=_days(overall, window),
    )


def _days(events: _Events, window: Window) -> list[Day]:
    first = _day(window.start)
    count = (_day(window.end) - first).days + 1
    deployments = [0] * count
    failures = [0] * count
    for moment in events.deployments:
        if window.holds(moment):
            deployments[(_day(moment) - first).days] += 1
    for moment, failed in events.changes:
        if failed and window.holds(moment):
            failures[(_day(moment) - first).days] += 1
    return [Day(date=first + timedelta(days=i), deployments=deployments[i], failed_changes=failures[i]) for i in range(count)]


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
