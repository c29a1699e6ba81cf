"""The promotions store: one row per environment, service and version, whoever asks twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from shipline.settings import Settings
from shipline.store.promotions import Promotion, PromotionState, PromotionStore
from shipline.store.sql import SqlStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[SqlStore]:
    """Migration 0010 on both databases: what the DORA figures read is the same on either."""
    url = settings.database if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlStore(url)
    yield store
    store.close()


def propose(promotions: PromotionStore, version: str, environment: str = "dev", **extra: object) -> tuple[Promotion, bool]:
    values: dict[str, object] = {
        "service": "hello",
        "environment": environment,
        "version": version,
        "service_commit": "a" * 40,
        "commit_time": datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        "source_run": 7,
        "image": f"reg.example/hello:{version}",
        "chart": "oci://reg.example/charts/hello",
        "previous_version": "0.1.0",
        **extra,
    }
    return promotions.propose(**values)  # type: ignore[arg-type]


def test_the_same_version_proposed_twice_is_one_row(any_store: SqlStore) -> None:
    promotions = PromotionStore(any_store)
    first, made = propose(promotions, "0.2.0")
    again, made_again = propose(promotions, "0.2.0", source_run=99)
    assert made is True and made_again is False
    assert again == first
    (row,) = promotions.list()
    assert (row.state, row.source_run, row.previous_version) == (PromotionState.PROPOSED, 7, "0.1.0")
    assert row.commit_time == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert row.merged_at is None and row.verified_at is None and row.pr_number is None


def test_states_move_on_and_filters_read_them(any_store: SqlStore) -> None:
    promotions = PromotionStore(any_store)
    older, _ = propose(promotions, "0.2.0")
    newer, _ = propose(promotions, "0.3.0")
    propose(promotions, "0.3.0", environment="staging")
    promotions.update(older.id, state=PromotionState.SUPERSEDED, message="superseded by 0.3.0")
    now = datetime.now(UTC)
    updated = promotions.update(
        newer.id,
        state=PromotionState.MERGED,
        pr_number=4,
        pr_url="http://forge/pr/4",
        merge_commit="b" * 40,
        merged_at=now,
    )
    assert updated.state == PromotionState.MERGED and updated.merged_at is not None and updated.updated_at >= updated.created_at
    assert [p.version for p in promotions.live("dev")] == ["0.3.0"]
    assert [p.version for p in promotions.list(environment="dev")] == ["0.3.0", "0.2.0"]  # newest first
    assert [p.environment for p in promotions.list(service="hello", states=[PromotionState.PROPOSED])] == ["staging"]
    with pytest.raises(ValueError):
        promotions.update(newer.id, version="9.9.9")
