"""The run page's Release panel: a run's own results traced and copyable (headless Chromium)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from serverkit import Live
from test_dashboard import ARTIFACTS, CHROMIUM, FLAGS

DIGEST = "sha256:" + "ab12" * 16
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RELEASE = f"""
name: released
params:
  url: {{default: "http://127.0.0.1:3000/acme/hello.git"}}
tasks:
  - name: version
    steps:
      - run: |
          echo "version=1.2.0" >> "$SHIPLINE_OUTPUT"
          echo "commit={COMMIT}" >> "$SHIPLINE_OUTPUT"
          echo "tag=v1.2.0" >> "$SHIPLINE_OUTPUT"
    results: [version, commit, tag]
  - name: image
    steps:
      - run: |
          echo "image=127.0.0.1:5000/hello:1.2.0" >> "$SHIPLINE_OUTPUT"
          echo "image-digest={DIGEST}" >> "$SHIPLINE_OUTPUT"
    results: [image, image-digest]
results:
  version: ${{{{ tasks.version.results.version }}}}
  commit: ${{{{ tasks.version.results.commit }}}}
  tag: ${{{{ tasks.version.results.tag }}}}
  image: ${{{{ tasks.image.results.image }}}}
  image-digest: ${{{{ tasks.image.results.image-digest }}}}
  chart-version: ${{{{ tasks.version.results.version }}}}
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
def page(browser: Browser, live: Live) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    p = context.new_page()
    yield p
    context.close()


def test_release_panel_traces_and_copies_the_digest(live: Live, pipeline_file: Callable[..., Path], page: Page) -> None:
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "hello",
                "url": "http://127.0.0.1:3000/acme/hello.git",
                "forge": "gitea",
                "secret": "s",
                "pipeline": str(pipeline_file(RELEASE)),
            },
        )
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/runs", json={"pipeline": "released", "params": {}})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
    assert live.wait_run(run_id, {"succeeded", "failed"})["status"] == "succeeded"
    page.goto(f"{live.url}/#/runs/{run_id}")
    panel = page.locator("#release")
    expect(panel).to_be_visible()
    trace = panel.locator(".trace")
    expect(trace).to_contain_text("commit 0123456789ab")
    expect(trace).to_contain_text("tag v1.2.0")
    expect(trace).to_contain_text("chart 1.2.0")
    # The commit and the tag link to the forge's pages.
    expect(trace.locator("a").first).to_have_attribute("href", f"http://127.0.0.1:3000/acme/hello/commit/{COMMIT}")
    # The digest is shown in full and copied with one click.
    row = panel.locator('tr[data-result="image-digest"]')
    expect(row.locator("td.v")).to_have_text(DIGEST)
    row.locator("button.copy").click()
    expect(page.locator(".toast, #toast").first).to_contain_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == DIGEST
    image = panel.locator('tr[data-result="image"] td.v')
    expect(image).to_have_text(f"127.0.0.1:5000/hello:1.2.0@{DIGEST}")
    page.screenshot(path=str(ARTIFACTS / "run-release.png"), full_page=True)
