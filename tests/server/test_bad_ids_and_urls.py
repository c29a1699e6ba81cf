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
        for method, path in (
            ("GET", f"/api/v1/runs/{HUGE}"),
            ("GET", f"/api/v1/runs/{HUGE}/logs"),
            ("POST", f"/api/v1/runs/{HUGE}/cancel"),
            ("POST", f"/api/v1/runs/{HUGE}/rerun"),
            ("GET", "/api/v1/runs/-5"),
            ("DELETE", f"/api/v1/triggers/{HUGE}"),
            ("GET", f"/api/v1/repositories/{HUGE}"),
            ("GET", f"/api/v1/runs/{HUGE}/logs/stream"),
        ):
            r = c.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
        r = c.get("/api/v1/runs", params={"before": HUGE})
        assert r.status_code == 200 and r.json()["runs"] == [], r.text


def test_api_refuses_unparsable_urls_with_400(live: Live, pipeline_file: Callable[..., Path]) -> None:
    with live.client(live.operator_token) as c:
        for url in BAD_URLS:
            r = c.post(
                "/api/v1/repositories",
                json={
                    "name": "x",
                    "url": url,
                    "forge": "git",
                    "pipeline": str(pipeline_file(BUILD)),
                },
            )
            assert r.status_code == 400, r.text
            assert "not a port number" in r.json()["message"]
            assert "p/ss" not in r.text, "a password is not echoed back"
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "x",
                "url": "/srv/x.git",
                "forge": "git",
                "pipeline": str(pipeline_file(BUILD)),
                "poll_seconds": int(HUGE),
            },
        )
        assert r.status_code == 400 and "poll interval" in r.json()["message"], r.text


def test_cli_says_what_is_wrong(home: Path, tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(BUILD)
    for url in BAD_URLS:
        done = shipline("repos", "add", "x", url, "--forge", "git", "--pipeline", str(pipeline))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "not a port number" in done.stderr
    for args in (
        ("runs", "show", HUGE),
        ("runs", "logs", HUGE),
        ("runs", "cancel", HUGE),
        ("runs", "rerun", HUGE),
        ("runs", "list", "--before", HUGE),
    ):
        done = shipline(*args)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        if args[1] != "list":
            assert done.returncode == 2 and f"no run {HUGE}" in done.stderr, (args, done.stderr)


def test_api_registers_pipeline_files_in_the_pipelines_folder_only(
    live: Live, pipeline_file: Callable[..., Path], tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(BUILD)
    inside = pipeline_file(BUILD, "inside.yaml")
    (inside.parent / "sneaky.yaml").symlink_to(outside)
    with live.client(live.operator_token) as c:
        for path in ("/etc/passwd", "../elsewhere.yaml", str(outside), "sneaky.yaml", "../../../../etc/passwd"):
            r = c.post("/api/v1/repositories", json={"name": "x", "url": "/srv/x.git", "forge": "git", "pipeline": path})
            assert r.status_code == 400, (path, r.text)
            assert "outside the server's pipelines folder" in r.json()["message"]
        r = c.post("/api/v1/repositories", json={"name": "x", "url": "/srv/x.git", "forge": "git", "pipeline": "inside.yaml"})
        assert r.status_code == 201, r.text
        assert r.json()["repository"]["pipeline"] == str(inside.resolve())
        assert [p["name"] for p in c.get("/api/v1/pipelines").json()] == ["build"]
