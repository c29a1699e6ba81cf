"""The dashboard's Environments pages in headless Chromium: state at a glance, rollback from the history."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from envkit import EnvRepo, Kube, deployment, env_cmd
from playwright.sync_api import Browser, expect, sync_playwright
from serverkit import start_server

from shipline.settings import Settings
from shipline.store.promotions import PromotionState, PromotionStore
from shipline.store.repositories import Role
from shipline.testbed.fixtures import GiteaRepo

pytestmark = pytest.mark.testbed

CHROMIUM = os.environ.get("SHIPLINE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (Debian's package; never a downloaded browser)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def test_the_environment_page_shows_state_and_rolls_back_from_history(
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    kube: Kube,
    settings: Settings,
    browser: Browser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.0.0"))
    first = env_repo.commit("hello 1.0.0")
    declaration = tmp_path / "environments.yaml"
    declaration.write_text(
        json.dumps(
            {
                "environments": [
                    {
                        "name": "dev",
                        "repo": f"{gitea_repo.html_url}.git",
                        "namespace": namespace,
                        "kubeconfig": str(kubeconfig),
                        "sync": "manual",
                        "verify-timeout": "60s",
                    }
                ]
            }
        )
    )
    assert env_cmd(cli_env, "apply", str(declaration)).returncode == 0
    assert env_cmd(cli_env, "sync", "dev").returncode == 0
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.1.0"))
    second = env_repo.commit("hello 1.1.0")
    assert env_cmd(cli_env, "sync", "dev").returncode == 0

    monkeypatch.setenv("PATH", cli_env["PATH"])
    settings = settings.model_copy(update={"queue_poll_seconds": 0.05, "poll_tick_seconds": 0.2})
    uv, thread, app_server, url = start_server(settings)
    # What the promoter writes (it is the one writer; here its rows are made directly).
    promotions = PromotionStore(app_server.sql)
    release = {"service_commit": "c" * 40, "commit_time": None, "source_run": 1, "image": "reg.example/hello:1.2.0", "chart": ""}
    verified, _ = promotions.propose(service="hello", environment="dev", version="1.1.0", previous_version="1.0.0", **release)
    promotions.update(verified.id, state=PromotionState.VERIFIED, pr_number=7, pr_url=f"{gitea_repo.html_url}/pulls/7")
    hostile, _ = promotions.propose(service="hello", environment="dev", version="1.2.0", previous_version="1.1.0", **release)
    promotions.update(hostile.id, state=PromotionState.OPEN, pr_number=8, pr_url="javascript:alert(1)", message="dry run passed")
    _, operator = app_server.state.create_token("ops", Role.OPERATOR)
    try:
        page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        page.goto(f"{url}/#/environments")
        card = page.locator('[data-env="dev"]')
        expect(card.locator("[data-sync]")).to_have_text("Synced")
        expect(card.locator("[data-health]")).to_have_text("Healthy")
        expect(card).to_contain_text(second[:12])
        page.screenshot(path=str(ARTIFACTS / "environments.png"))

        card.locator("h3 a").click()
        rows = page.locator("#env-history tr[data-entry]")
        expect(rows).to_have_count(2)
        proposed = page.locator("#env-promotions tr[data-promotion]")
        expect(proposed).to_have_count(2)
        expect(proposed.first).to_contain_text("1.2.0")  # newest first
        expect(proposed.first.locator("[data-status]")).to_have_text("open")
        expect(proposed.first).to_contain_text("dry run passed")
        expect(proposed.first.locator("a")).to_have_count(0)  # a pull request link that is not http(s) is not a link
        expect(proposed.nth(1).locator("[data-status]")).to_have_text("verified")
        expect(proposed.nth(1).locator("a")).to_have_attribute("href", f"{gitea_repo.html_url}/pulls/7")
        expect(page.locator("#env-sync")).to_have_count(0)  # reading needs no token; changing does

        page.click("#token-btn")
        page.fill("#token-input", operator)
        page.locator('#token-dialog button[value="save"]').click()
        page.once("dialog", lambda dialog: dialog.accept())
        rows.filter(has_text=first[:12]).get_by_role("button", name="Roll back to this").click()
        expect(page).to_have_url(f"{url}/#/runs/3", timeout=10_000)

        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/api/v1/runs/3", timeout=10).json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the rollback run did not end"
            time.sleep(0.3)
        page.goto(f"{url}/#/environments/dev")
        expect(rows).to_have_count(3, timeout=15_000)
        newest = rows.first
        expect(newest).to_contain_text("rollback")
        expect(newest.locator("[data-status]")).to_have_text("verified")
        expect(page.locator("[data-sync]")).to_have_text("OutOfSync")
        page.screenshot(path=str(ARTIFACTS / "environment-dev.png"))
        assert kube.images() == {"hello": "reg.example/hello:1.0.0"}
    finally:
        uv.should_exit = True
        thread.join(60)
