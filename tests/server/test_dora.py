"""DORA metrics from records in a real store: the CLI, the API, `/metrics` and the dashboard's Delivery page.

History entries are written through `EnvironmentStore.record` (what a finished
sync or rollback writes) and promotions through `PromotionStore` (what the
promotion notifier writes); only their times are moved into the past, so the
figures are known in advance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import shipline
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families
from serverkit import Live
from sqlalchemy import update

from shipline.domain.environments import Environment, Outcome
from shipline.settings import Settings
from shipline.store.environment_tables import environment_history
from shipline.store.environments import EnvironmentStore
from shipline.store.promotions import PromotionState, PromotionStore
from shipline.store.sql import SqlStore, utcnow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
CHROMIUM = os.environ.get("SHIPLINE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
HOUR = 3600.0


def _env(name: str) -> Environment:
    # Manual sync: the server's reconciler must not try to follow a branch nobody serves.
    return Environment(name=name, repo=f"http://127.0.0.1:9/{name}.git", namespace=name, sync="manual")


def _sync(
    store: EnvironmentStore,
    sql: SqlStore,
    env: str,
    commit: str,
    outcome: Outcome,
    when: datetime,
    *,
    action: str = "sync",
    back_to: str = "",
) -> None:
    """One history entry as `record_outcome` writes it for such a run, dated `when`."""
    applied = {Outcome.VERIFIED: commit, Outcome.ROLLED_BACK: back_to, Outcome.FAILED: ""}[outcome]
    entry = store.record(
        env,
        action=action,
        run_id=None,
        commit=commit,
        applied_commit=applied,
        outcome=outcome,
        verified=outcome == Outcome.VERIFIED,
        rolled_back_to=back_to,
        message=f"{action}: {commit} {outcome.value}",
    )
    with sql.transaction() as conn:
        conn.execute(update(environment_history).where(environment_history.c.id == entry.id).values(created_at=when))


def _promote(
    promotions: PromotionStore,
    service: str,
    env: str,
    version: str,
    committed: datetime,
    state: PromotionState,
    *,
    merged: datetime,
    verified: datetime | None = None,
) -> None:
    row, _ = promotions.propose(
        service=service,
        environment=env,
        version=version,
        service_commit=f"{service}{version}".replace(".", "")[:40].ljust(40, "0"),
        commit_time=committed,
        source_run=1,
        image=f"127.0.0.1:5000/{service}:{version}",
        chart="",
    )
    promotions.update(row.id, state=state, merged_at=merged, verified_at=verified)


@pytest.fixture
def records(settings: Settings) -> Iterator[datetime]:
    """dev: 3 deployments in 30 days, one rolled back and restored 2 h later; prod: one deployment in 30
    days and a rollback never restored; api: two verified promotions to dev (lead times 3 h and 5 h);
    web: a promotion to prod that failed."""
    now = utcnow()
    ago = lambda days, hours=0.0: now - timedelta(days=days, hours=hours)  # noqa: E731
    sql = SqlStore(settings.database)
    store, promotions = EnvironmentStore(sql), PromotionStore(sql)
    for name in ("dev", "prod"):
        store.put(_env(name), "environments.yaml")
    _sync(store, sql, "dev", "a1" * 20, Outcome.VERIFIED, ago(10))
    _sync(store, sql, "dev", "b2" * 20, Outcome.VERIFIED, ago(5))
    _sync(store, sql, "dev", "c3" * 20, Outcome.ROLLED_BACK, ago(3), back_to="b2" * 20)
    _sync(store, sql, "dev", "d4" * 20, Outcome.VERIFIED, ago(3, -2))
    _sync(store, sql, "prod", "e5" * 20, Outcome.VERIFIED, ago(40))
    _sync(store, sql, "prod", "f6" * 20, Outcome.VERIFIED, ago(20))
    _sync(store, sql, "prod", "a7" * 20, Outcome.ROLLED_BACK, ago(2), back_to="f6" * 20)
    _promote(promotions, "api", "dev", "1.0.0", ago(5, 3), PromotionState.VERIFIED, merged=ago(5, 1), verified=ago(5))
    _promote(promotions, "api", "dev", "1.1.0", ago(3, 3), PromotionState.VERIFIED, merged=ago(3, -1), verified=ago(3, -2))
    _promote(promotions, "web", "prod", "2.0.0", ago(2, 1), PromotionState.FAILED, merged=ago(2, 0.5))
    sql.close()
    return now


def test_cli_reports_each_environment_and_service(records: datetime, home: Path) -> None:
    done = shipline("metrics", "dora", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["window_days"] == 30
    overall = out["overall"]
    assert (overall["deployments"], overall["changes"], overall["failed_changes"], overall["unrestored"]) == (4, 6, 2, 1)
    dev, prod = out["environments"]
    assert (dev["environment"], dev["deployments"], dev["failed_changes"]) == ("dev", 3, 1)
    assert dev["time_to_restore"]["median_seconds"] == pytest.approx(2 * HOUR, abs=1)
    assert dev["time_to_restore_band"] == "high"
    assert dev["lead_time"]["count"] == 2 and dev["lead_time"]["median_seconds"] == pytest.approx(4 * HOUR, abs=1)
    assert (prod["environment"], prod["deployments"], prod["unrestored"], prod["time_to_restore"]["count"]) == ("prod", 1, 1, 0)
    api, web = out["services"]
    assert (api["service"], api["deployments"], api["lead_time_band"]) == ("api", 2, "elite")
    assert api["lead_time"]["p90_seconds"] == pytest.approx(4.8 * HOUR, abs=1)
    assert (web["service"], web["deployments"], web["failed_changes"], web["change_failure_rate"]) == ("web", 0, 1, 1.0)

    week = json.loads(shipline("metrics", "dora", "--window", "7d", "--environment", "dev", "--json").stdout)
    assert [e["environment"] for e in week["environments"]] == ["dev"]
    assert week["overall"]["deployments"] == 2  # the one from 10 days ago is outside the week

    table = shipline("metrics", "dora", "--window", "90d")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "last 90 days" in lines[0]
    assert (
        next(line for line in lines if line.strip().startswith("env prod")).split()[2] == "2"
    )  # the one from 40 days ago counts now

    unknown = shipline("metrics", "dora", "--environment", "staging")
    assert unknown.returncode != 0 and "no environment 'staging'" in unknown.stderr


def test_api_and_prometheus_give_the_same_figures(records: datetime, live: Live) -> None:
    with live.client() as c:
        r = c.get("/api/v1/metrics/dora", params={"window": "30d", "service": "api"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [s["service"] for s in body["services"]] == ["api"]
        assert [(e["environment"], e["deployments"]) for e in body["environments"]] == [("dev", 2)]
        assert body["overall"]["lead_time"]["median_seconds"] == pytest.approx(4 * HOUR, abs=1)
        assert len(body["days"]) == 31 and sum(d["deployments"] for d in body["days"]) == 2

        assert c.get("/api/v1/metrics/dora", params={"window": "1y"}).status_code == 422
        missing = c.get("/api/v1/metrics/dora", params={"environment": "staging"})
        assert missing.status_code == 404 and "staging" in missing.text

        text = c.get("/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("shipline_dora_")
    }

    def value(name: str, environment: str = "", service: str = "", **extra: str) -> float | None:
        return samples.get((name, tuple(sorted({"environment": environment, "service": service, **extra}.items()))))

    assert value("shipline_dora_deployments", "dev") == 3
    assert value("shipline_dora_deployments") == 4
    assert value("shipline_dora_unrestored_failures", "prod") == 1
    assert value("shipline_dora_change_failure_rate", service="web") == 1
    assert value("shipline_dora_lead_time_seconds", service="api", quantile="0.5") == pytest.approx(4 * HOUR, abs=1)
    assert value("shipline_dora_time_to_restore_seconds", "dev", quantile="0.5") == pytest.approx(2 * HOUR, abs=1)
    # No restore in prod yet: no time-to-restore sample rather than a made-up zero.
    assert value("shipline_dora_time_to_restore_seconds", "prod", quantile="0.5") is None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (Debian's package; never a downloaded browser)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    yield context.new_page()
    context.close()


def test_delivery_page_plots_the_window_and_filters(records: datetime, live: Live, page: Page) -> None:
    page.goto(live.url + "/#/delivery")
    tiles = page.locator(".dora-tile")
    expect(page.locator('[data-metric="deployment-frequency"] [data-value]')).to_have_text("0.13/day")
    expect(page.locator('[data-metric="change-failure-rate"] [data-value]')).to_have_text("33%")
    expect(page.locator('[data-metric="lead-time"] [data-band]')).to_have_text("elite")
    expect(tiles).to_have_count(4)
    expect(page.locator("#dora-chart g.day")).to_have_count(31)
    expect(page.locator("#dora-chart g.day rect.ok")).to_have_count(4)  # four days with a deployment
    expect(page.locator("#dora-chart g.day rect.bad")).to_have_count(2)
    expect(page.locator('#dora-table tr[data-scope="environment:dev"] td[data-deployments]')).to_have_text("3")
    expect(page.locator('#dora-table tr[data-scope="service:web"]')).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "delivery.png"), full_page=True)

    page.locator('#dora-window [data-window="7d"]').click()
    expect(page).to_have_url(f"{live.url}/#/delivery?window=7d")
    expect(page.locator("#dora-chart g.day")).to_have_count(8)
    expect(page.locator('[data-metric="deployment-frequency"] [data-value]')).to_have_text("0.29/day")  # 2 in 7 days

    page.select_option("#dora-env", "prod")
    expect(page.locator('#dora-table tr[data-scope="environment:dev"]')).to_have_count(0)
    expect(page.locator('[data-metric="time-to-restore"]')).to_contain_text("1 not restored")
    page.screenshot(path=str(ARTIFACTS / "delivery-prod-7d.png"), full_page=True)
