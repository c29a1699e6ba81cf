"""The dashboard in headless Chromium (Debian's, driven by Playwright): live runs, logs, cancel.

Screenshots go to test-artifacts/dashboard/ for people to look at.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from serverkit import Live, github_push, run_of_another_server, signed

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
CHROMIUM = os.environ.get("SHIPLINE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
URL = "https://github.example/acme/shop.git"
SECRET = "dash-secret"

SERVICE = """
name: service
params:
  branch: {default: main}
  revision: {default: ""}
  hold: {default: "3"}
tasks:
  - name: checkout
    env: {BRANCH: "${{ params.branch }}"}
    steps:
      - run: echo "checking out $BRANCH"
  - name: build
    needs: [checkout]
    env: {HOLD: "${{ params.hold }}"}
    steps:
      - name: compile
        run: for i in 1 2 3; do echo "compiling module $i"; sleep "$HOLD"; done
      - name: version
        run: echo "version=1.2.3" >> "$SHIPLINE_OUTPUT"
    results: [version]
  - name: test
    needs: [checkout]
    steps:
      - run: echo "test_cart ... ok"
  - name: publish
    needs: [build, test]
    steps:
      - run: echo "published shop 1.2.3"
finally:
  - name: notify
    steps:
      - run: echo done
"""


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
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    p = context.new_page()
    yield p
    context.close()


def setup_repo(live: Live, pipeline_file: Callable[..., Path]) -> None:
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "shop",
                "url": URL,
                "forge": "github",
                "secret": SECRET,
                "pipeline": str(pipeline_file(SERVICE)),
                "triggers": [{"on": "push", "concurrency": "parallel"}],
            },
        )
        assert r.status_code == 201, r.text


def push(live: Live, branch: str = "main") -> int:
    body, headers = signed(SECRET, github_push(URL, branch, name="acme/shop"))
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 202, r.text
    run_id: int = r.json()["runs"][0]
    return run_id


def test_runs_list_goes_live_from_running_to_succeeded(live: Live, pipeline_file: Callable[..., Path], page: Page) -> None:
    setup_repo(live, pipeline_file)
    page.goto(live.url + "/")
    expect(page.locator("#live.on")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    run_id = push(live)
    row = page.locator(f'tr[data-run="{run_id}"]')
    expect(row).to_have_attribute("data-status", "running", timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "runs-running.png"))
    expect(row).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(row.locator("td.dur")).not_to_be_empty()
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    page.screenshot(path=str(ARTIFACTS / "runs-succeeded.png"))

    row.click()
    expect(page.locator("svg.graph g.node")).to_have_count(5)
    expect(page.locator('svg.graph g[data-task="publish"]')).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#log")).to_contain_text("compiling module 3")
    expect(page.locator("#log")).to_contain_text("run succeeded")
    page.locator('.task[data-task="build"]').click()
    expect(page.locator("#log")).not_to_contain_text("checking out")
    expect(page.locator(".results")).to_contain_text("1.2.3")
    page.screenshot(path=str(ARTIFACTS / "run-succeeded.png"), full_page=True)


def test_run_page_streams_logs_while_running(live: Live, pipeline_file: Callable[..., Path], page: Page) -> None:
    setup_repo(live, pipeline_file)
    run_id = push(live, "feature/live-logs")
    page.goto(f"{live.url}/#/runs/{run_id}")
    expect(page.locator("#log")).to_contain_text("compiling module 1", timeout=20_000)
    expect(page.locator(".title .status")).to_have_attribute("data-status", "running")
    page.screenshot(path=str(ARTIFACTS / "run-running.png"), full_page=True)
    expect(page.locator(".title .status")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(page.locator("#log")).to_contain_text("published shop 1.2.3")


def test_operator_cancels_a_running_run(live: Live, pipeline_file: Callable[..., Path], page: Page) -> None:
    setup_repo(live, pipeline_file)
    with live.client(live.operator_token) as c:
        r = c.post("/api/v1/runs", json={"pipeline": "service", "params": {"hold": "30"}})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
    page.goto(f"{live.url}/#/runs/{run_id}")
    expect(page.locator("#log")).to_contain_text("compiling module 1", timeout=20_000)
    # Without a token the button asks for one; with an operator token it cancels.
    page.locator("#cancel").click()
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", live.operator_token)
    page.locator('#token-dialog button[value="save"]').click()
    expect(page.locator("#token-btn")).to_contain_text("operator")
    page.locator("#cancel").click()
    expect(page.locator(".title .status")).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(page.locator('svg.graph g[data-task="build"]')).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#rerun")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "run-cancelled.png"), full_page=True)
    assert live.wait_run(run_id, {"cancelled"})["status"] == "cancelled"

    # Rerun, then start a run with params from the runs page.
    page.locator("#rerun").click()
    expect(page).to_have_url(f"{live.url}/#/runs/{run_id + 1}")
    page.goto(live.url + "/")
    page.locator("#start-run").click()
    page.fill('#start-dialog input[name="hold"]', "0")
    page.fill('#start-dialog input[name="branch"]', "from-the-dashboard")
    page.screenshot(path=str(ARTIFACTS / "start-run.png"))
    page.locator("#start-submit").click()
    expect(page.locator(".title .status")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(page.locator(".params")).to_contain_text("branch=from-the-dashboard")


def test_operator_sets_and_deletes_a_secret(live: Live, page: Page) -> None:
    value = "hunter2-from-the-browser"
    page.goto(live.url + "/#/secrets")
    expect(page.locator(".empty")).to_contain_text("operator token")
    page.locator(".empty button").click()
    page.fill("#token-input", live.operator_token)
    page.locator('#token-dialog button[value="save"]').click()
    page.fill("#secret-name", "registry-token")
    page.fill("#secret-value", value)
    page.locator("#secret-save").click()
    expect(page.locator('[data-secret="registry-token"]')).to_be_visible()
    expect(page.locator("#secret-value")).to_have_value("")
    assert value not in page.content()
    assert live.server.engine.secrets.reveal(["registry-token"]) == {"registry-token": value}
    page.screenshot(path=str(ARTIFACTS / "secrets.png"), full_page=True)
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator('[data-secret="registry-token"] button').click()
    expect(page.locator('[data-secret="registry-token"]')).to_have_count(0)
    assert live.server.engine.secrets.all() == []


def test_narrow_window_and_repositories_page(live: Live, pipeline_file: Callable[..., Path], browser: Browser) -> None:
    setup_repo(live, pipeline_file)
    run_id = push(live)
    live.wait_run(run_id, {"succeeded"})
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    try:
        page.goto(live.url + "/")
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_attribute("data-status", "succeeded")
        # Nothing wider than the window: no sideways scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        page.screenshot(path=str(ARTIFACTS / "narrow-runs.png"))
        page.goto(f"{live.url}/#/runs/{run_id}")
        expect(page.locator("#log")).to_contain_text("run succeeded")
        page.screenshot(path=str(ARTIFACTS / "narrow-run.png"), full_page=True)
        page.goto(live.url + "/#/repos")
        expect(page.locator('[data-repo="shop"]')).to_contain_text("github.example/acme/shop")
        page.screenshot(path=str(ARTIFACTS / "narrow-repos.png"), full_page=True)
    finally:
        context.close()
    wide = browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        p = wide.new_page()
        p.goto(live.url + "/#/repos")
        expect(p.locator('[data-repo="shop"]')).to_be_visible()
        expect(p.locator("tbody tr").first).to_contain_text("started")
        expect(p.locator(f'tbody tr a[href="#/runs/{run_id}"]')).to_have_count(1)
        p.screenshot(path=str(ARTIFACTS / "repos.png"), full_page=True)
        live.server.sql.delete_runs([run_id])  # what `shipline runs prune` does to a run's record
        p.reload()
        expect(p.locator("tbody tr").first).to_contain_text(f"#{run_id} (pruned)")
        expect(p.locator(f'tbody tr a[href="#/runs/{run_id}"]')).to_have_count(0)
    finally:
        wide.close()


def test_a_run_another_server_ran_shows_where_its_logs_are(live: Live, pipeline_file: Callable[..., Path], page: Page) -> None:
    run_id = run_of_another_server(live, pipeline_file(SERVICE))
    page.goto(f"{live.url}/#/runs/{run_id}")
    expect(page.locator("#log .error")).to_contain_text(f"the logs of run {run_id} are not here")
    expect(page.locator("#log .error")).to_contain_text("its steps ran on builder-2.example")
