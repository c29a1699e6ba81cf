from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shipline.exceptions import UsageError
from shipline.triggers.events import EventKind
from shipline.triggers.polling import PollTarget, diff_refs
from shipline.triggers.scheduling import CronScheduler, Scheduled, next_fire

T0 = datetime(2026, 11, 26, 2, 59, 30, tzinfo=UTC)


def test_next_fire() -> None:
    assert next_fire("0 3 * * *", T0) == datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    assert next_fire("*/15 * * * *", T0) == datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    with pytest.raises(UsageError, match="five fields"):
        next_fire("every day", T0)


def test_scheduler_fires_once_per_due_time() -> None:
    entries = [Scheduled(1, "0 3 * * *"), Scheduled(2, "* * * * *")]
    sched = CronScheduler(lambda: entries, lambda e, w: None)
    assert sched.due(T0) == []  # first look: learn the next times
    due = sched.due(T0 + timedelta(seconds=45))
    assert sorted((e.key, w) for e, w in due) == [
        (1, datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
        (2, datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
    ]
    assert sched.due(T0 + timedelta(seconds=50)) == []
    # Down for an hour: one run at the next look, not sixty.
    late = sched.due(T0 + timedelta(hours=1))
    assert [e.key for e, _ in late] == [2]


def test_diff_refs() -> None:
    target = PollTarget(7, "r", "/srv/r.git", "main", 5)
    old = {"refs/heads/main": "a" * 40, "refs/heads/gone": "b" * 40}
    new = {"refs/heads/main": "c" * 40, "refs/heads/new": "d" * 40, "refs/tags/v1": "e" * 40}
    changes = {d: e for e, d in diff_refs(target, old, new)}
    assert changes[f"7:refs/heads/main:{'c' * 40}"].kind is EventKind.PUSH
    assert changes[f"7:refs/heads/main:{'c' * 40}"].before == "a" * 40
    assert changes[f"7:refs/heads/new:{'d' * 40}"].branch == "new"
    assert changes[f"7:refs/tags/v1:{'e' * 40}"].tag == "v1"
    assert changes[f"7:refs/heads/gone:{'0' * 40}"].kind is EventKind.DELETE
    assert diff_refs(target, new, new) == []
