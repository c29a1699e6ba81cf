"""DORA's four keys from environment history and promotions: the pure computation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from shipline.domain.dora import (
    Band,
    Promotion,
    Window,
    band_failure_rate,
    band_frequency,
    band_lead_time,
    band_restore,
    parse_window,
    report,
    times,
)
from shipline.domain.environments import HistoryEntry, Outcome

END = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
_ids = count(1)


def at(days_ago: float, hours: float = 0) -> datetime:
    return END - timedelta(days=days_ago) + timedelta(hours=hours)


def sync(env: str, commit: str, outcome: Outcome, when: datetime, *, applied: str | None = None) -> HistoryEntry:
    """A history entry shaped like `record_outcome` writes it."""
    if applied is None:
        applied = {Outcome.VERIFIED: commit, Outcome.ROLLED_BACK: "", Outcome.FAILED: ""}[outcome]
    return HistoryEntry(
        id=next(_ids),
        environment=env,
        action="sync",
        run_id=next(_ids),
        commit=commit,
        applied_commit=applied,
        outcome=outcome,
        verified=outcome == Outcome.VERIFIED,
        rolled_back_to="",
        message="",
        created_at=when,
    )


def rolled_back(env: str, commit: str, to: str, when: datetime) -> HistoryEntry:
    entry = sync(env, commit, Outcome.ROLLED_BACK, when, applied=to)
    return entry.model_copy(update={"rolled_back_to": to})


def rollback(env: str, to: str, when: datetime) -> HistoryEntry:
    return sync(env, to, Outcome.VERIFIED, when).model_copy(update={"action": "rollback"})


def promotion(service: str, env: str, state: str, *, committed: datetime | None, ended: datetime) -> Promotion:
    return Promotion(
        service=service,
        environment=env,
        state=state,
        commit_time=committed,
        updated_at=ended,
        merged_at=ended - timedelta(minutes=5),
        verified_at=ended if state == "verified" else None,
    )


def test_empty_history_gives_zero_deployments_and_no_bands() -> None:
    out = report([], [], Window(END, 30))
    assert out.overall.deployments == 0
    assert out.overall.deployment_frequency == 0
    assert out.overall.deployment_frequency_band is None
    assert out.overall.change_failure_rate is None and out.overall.change_failure_rate_band is None
    assert out.overall.lead_time.count == 0 and out.overall.lead_time.median_seconds is None
    assert out.overall.time_to_restore.median_seconds is None
    assert out.environments == [] and out.services == []
    assert len(out.days) == 31 and sum(d.deployments for d in out.days) == 0


def test_one_environment_counts_verified_changes_and_failures() -> None:
    history = [
        sync("dev", "a1", Outcome.VERIFIED, at(20)),
        sync("dev", "b2", Outcome.VERIFIED, at(10)),
        sync("dev", "b2", Outcome.VERIFIED, at(9)),  # the same commit again (self-heal): no change
        rolled_back("dev", "c3", "b2", at(5)),
        sync("dev", "c3", Outcome.FAILED, at(4, 1)),  # clone failed: applied nothing, no change
        sync("dev", "d4", Outcome.VERIFIED, at(4, 2)),
    ]
    out = report(history, [], Window(END, 30))
    (dev,) = out.environments
    assert dev.environment == "dev"
    assert dev.deployments == 3
    assert dev.deployment_frequency == pytest.approx(3 / 30, rel=1e-5)
    assert dev.deployment_frequency_band == Band.MEDIUM
    assert (dev.changes, dev.failed_changes) == (4, 1)
    assert dev.change_failure_rate == pytest.approx(0.25)
    assert dev.change_failure_rate_band == Band.LOW
    # c3 rolled back 5 days before the end, d4 verified 26 hours later
    assert dev.time_to_restore.count == 1
    assert dev.time_to_restore.median_seconds == pytest.approx(26 * 3600)
    assert dev.time_to_restore_band == Band.MEDIUM
    assert dev.unrestored == 0
    assert out.overall.deployments == 3
    assert sum(d.deployments for d in out.days) == 3 and sum(d.failed_changes for d in out.days) == 1


def test_several_environments_are_reported_apart_and_summed_overall() -> None:
    history = [sync("dev", f"d{i}", Outcome.VERIFIED, at(i)) for i in range(1, 7)]
    history += [sync("prod", "p1", Outcome.VERIFIED, at(3)), sync("prod", "p2", Outcome.FAILED, at(2), applied="p2")]
    out = report(history, [], Window(END, 7))
    dev, prod = out.environments
    assert (dev.environment, dev.deployments, dev.changes) == ("dev", 6, 6)
    assert dev.deployment_frequency_band == Band.HIGH  # 6 in 7 days: less than one a day
    assert (prod.environment, prod.deployments, prod.failed_changes, prod.unrestored) == ("prod", 1, 1, 1)
    assert out.overall.deployments == 7 and out.overall.changes == 8 and out.overall.unrestored == 1
    only_prod = report(history, [], Window(END, 7), environment="prod")
    assert [m.environment for m in only_prod.environments] == ["prod"]
    assert only_prod.overall.deployments == 1 and only_prod.overall.environment == "prod"


def test_a_restore_in_the_window_of_a_failure_before_it_counts_where_it_restored() -> None:
    history = [
        sync("prod", "a1", Outcome.VERIFIED, at(40)),
        rolled_back("prod", "b2", "a1", at(31)),  # before the 30-day window
        sync("prod", "c3", Outcome.VERIFIED, at(29)),  # restored inside it
    ]
    out = report(history, [], Window(END, 30))
    (prod,) = out.environments
    assert prod.time_to_restore.count == 1
    assert prod.time_to_restore.median_seconds == pytest.approx(2 * 86400)
    assert prod.time_to_restore_band == Band.MEDIUM
    assert (prod.changes, prod.failed_changes) == (1, 0)  # the failure belongs to the window before
    earlier = report(history, [], Window(at(30.5), 30))
    assert earlier.environments[0].failed_changes == 1
    assert earlier.environments[0].unrestored == 1  # not restored by the end of that window
    assert earlier.environments[0].time_to_restore.count == 0


def test_a_failure_never_restored_is_counted_as_unrestored() -> None:
    history = [
        sync("prod", "a1", Outcome.VERIFIED, at(10)),
        rolled_back("prod", "b2", "a1", at(3)),
        rolled_back("prod", "b3", "a1", at(2)),
    ]
    out = report(history, [], Window(END, 30)).environments[0]
    assert (out.changes, out.failed_changes, out.unrestored) == (3, 2, 1)
    assert out.time_to_restore.count == 0 and out.time_to_restore_band is None
    assert out.change_failure_rate == pytest.approx(2 / 3)


def test_a_streak_of_failures_restores_once_from_its_first_failure() -> None:
    history = [
        sync("dev", "a1", Outcome.VERIFIED, at(10)),
        rolled_back("dev", "b2", "a1", at(5)),
        rolled_back("dev", "b3", "a1", at(5, 1)),
        sync("dev", "b4", Outcome.VERIFIED, at(5, 3)),
    ]
    dev = report(history, [], Window(END, 30)).environments[0]
    assert dev.failed_changes == 2
    assert dev.time_to_restore.count == 1 and dev.time_to_restore.median_seconds == pytest.approx(3 * 3600)


def test_a_rollback_of_a_verified_change_makes_it_a_failed_change() -> None:
    history = [
        sync("prod", "a1", Outcome.VERIFIED, at(10)),
        sync("prod", "b2", Outcome.VERIFIED, at(5)),
        rollback("prod", "a1", at(5, 0.5)),  # a person took b2 back out
    ]
    prod = report(history, [], Window(END, 30)).environments[0]
    assert prod.deployments == 2
    assert (prod.changes, prod.failed_changes) == (2, 1)
    assert prod.time_to_restore.median_seconds == pytest.approx(1800)
    assert prod.time_to_restore_band == Band.ELITE


def test_history_after_the_window_end_is_ignored() -> None:
    history = [sync("dev", "a1", Outcome.VERIFIED, at(1)), sync("dev", "b2", Outcome.VERIFIED, END + timedelta(hours=1))]
    assert report(history, [], Window(END, 7)).overall.deployments == 1


def test_services_lead_time_failures_and_restores_come_from_promotions() -> None:
    promotions = [
        promotion("api", "dev", "verified", committed=at(3), ended=at(3, 2)),
        promotion("api", "dev", "verified", committed=at(2), ended=at(2, 4)),
        promotion("api", "dev", "failed", committed=at(1), ended=at(1, 1)),
        promotion("api", "dev", "verified", committed=at(1, 2), ended=at(1, 3)),
        promotion("api", "dev", "open", committed=at(0.5), ended=at(0.4)),  # not merged yet: nothing
        # failed while being proposed (no pull request, never merged): not a change
        Promotion("api", "dev", "failed", at(0.3), at(0.2), merged_at=None, verified_at=None),
        promotion("web", "dev", "verified", committed=None, ended=at(1)),  # commit time unknown
        promotion("web", "prod", "verified", committed=at(10), ended=at(2)),
    ]
    history = [sync("dev", "e1", Outcome.VERIFIED, at(3, 2)), sync("prod", "p1", Outcome.VERIFIED, at(2))]
    out = report(history, promotions, Window(END, 7))
    api, web = out.services
    assert (api.service, api.deployments, api.changes, api.failed_changes) == ("api", 3, 4, 1)
    assert api.lead_time.count == 3
    assert api.lead_time.median_seconds == pytest.approx(2 * 3600)  # 2h, 4h, 1h
    assert api.lead_time_band == Band.ELITE
    assert api.time_to_restore.median_seconds == pytest.approx(2 * 3600)
    assert (web.deployments, web.lead_time.count) == (2, 1)
    assert web.lead_time_band == Band.MEDIUM  # 8 days
    dev, prod = out.environments
    assert dev.lead_time.count == 3 and prod.lead_time.count == 1
    assert out.overall.lead_time.count == 4

    only_api = report(history, promotions, Window(END, 7), service="api")
    assert [s.service for s in only_api.services] == ["api"]
    assert [(e.environment, e.service, e.deployments) for e in only_api.environments] == [("dev", "api", 3)]
    assert only_api.overall.deployments == 3 and only_api.overall.failed_changes == 1


@pytest.mark.parametrize(
    ("per_day", "band"),
    [(3, Band.ELITE), (1, Band.HIGH), (1 / 7, Band.HIGH), (1 / 8, Band.MEDIUM), (1 / 31, Band.LOW), (0, Band.LOW)],
)
def test_frequency_bands(per_day: float, band: Band) -> None:
    assert band_frequency(per_day) == band


def test_other_bands_at_their_edges() -> None:
    assert [band_lead_time(s) for s in (3600, 86400, 7 * 86400, 30 * 86400, 31 * 86400)] == [
        Band.ELITE,
        Band.HIGH,
        Band.HIGH,
        Band.MEDIUM,
        Band.LOW,
    ]
    assert [band_failure_rate(r) for r in (0, 0.05, 0.1, 0.15, 0.5)] == [Band.ELITE, Band.ELITE, Band.HIGH, Band.MEDIUM, Band.LOW]
    assert [band_restore(s) for s in (60, 3600, 86400, 7 * 86400, 8 * 86400)] == [
        Band.ELITE,
        Band.HIGH,
        Band.MEDIUM,
        Band.MEDIUM,
        Band.LOW,
    ]


def test_times_median_and_p90() -> None:
    assert times([5.0]).median_seconds == 5 and times([5.0]).p90_seconds == 5
    spread = times([float(i) for i in range(1, 11)])
    assert spread.count == 10 and spread.median_seconds == 5.5 and spread.p90_seconds == pytest.approx(9.1)


def test_windows() -> None:
    assert [parse_window(w) for w in ("7d", "30d", "90D")] == [7, 30, 90]
    with pytest.raises(ValueError, match="7d, 30d, 90d"):
        parse_window("1y")


def test_a_promotion_failed_by_a_sync_counts_even_when_a_person_merged_it() -> None:
    merged_by_hand = Promotion("api", "prod", "failed", at(2), at(1), merged_at=None, verified_at=None, pr_number=7)
    api = report([], [merged_by_hand], Window(END, 7)).services[0]
    assert (api.changes, api.failed_changes, api.unrestored) == (1, 1, 1)
