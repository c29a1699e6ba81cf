"""Ids too large for the database and URLs Python cannot parse: clear 4xx answers and messages, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import shipline
from serverkit import BUILD, Live

HUGE = "99999999999999999999999"
BAD_URLS = ("https://user:p/ss@github.com/a/b.git", "https://github.com:abc/x.git")


def test_api_answers_huge_ids_with_404(live: Live) -> None:
    with live.client(live.operator_token) as c:
        for method, path in (("GET", f"/api/v1/runs/{HUGE}"), ("GET", f"/api/v1/runs/{HUGE}/logs"),
                             ("POST", f"/api/v1/runs/{HUGE}/cancel"), ("POST", f"/api/v1/runs/{HUGE}/rerun"),
                             ("GET", "/api/v1/runs/-5"), ("DELETE", f"/api/v1/triggers/{HUGE}"),
                             ("GET", f"/api/v1/repositories/{HUGE}")):
            r = c.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
        r = c.get("/api/v1/runs", params={"before": HUGE})
        assert r.status_code == 200 and r.json()["runs"] == [], r.text


def test_api_refuses_unparsable_urls_with_400(live: Live, pipeline_file: Callable[..., Path]) -> None:
    with live.client(live.operator_token) as c:
        for url in BAD_URLS:
            r = c.post("/api/v1/repositories", json={
                "name": "x", "url": url, "forge": "git", "pipeline": str(pipeline_file(BUILD)),
            })
            assert r.status_code == 400, r.text
            assert "not a port number" in r.json()["message"]
            assert "p/ss" not in r.text, "a password is not echoed back"


def test_cli_says_what_is_wrong(home: Path, tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(BUILD)
    for url in BAD_URLS:
        done = shipline("repos", "add", "x", url, "--forge", "git", "--pipeline", str(pipeline))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "not a port number" in done.stderr
    for args in (("runs", "show", HUGE), ("runs", "logs", HUGE), ("runs", "cancel", HUGE), ("runs", "rerun", HUGE),
                 ("runs", "list", "--before", HUGE)):
        done = shipline(*args)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        if args[1] != "list":
            assert done.returncode == 2 and f"no run {HUGE}" in done.stderr, (args, done.stderr)
