"""`shipline init service`: the scaffold's own build and tests work offline and write JUnit reports."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import shipline

from shipline.cli.steps_service import find_reports

GO_CACHE = Path(os.environ.get("SHIPLINE_TEST_GOCACHE", "/tmp/shipline-test-gocache"))


def sh(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def pipeline_commands(root: Path) -> dict[str, str]:
    from ruamel.yaml import YAML

    spec = YAML(typ="safe").load((root / ".shipline" / "pipeline.yaml").read_text())
    assert spec["uses"] == "shipline/service"
    assert len((root / ".shipline" / "pipeline.yaml").read_text().splitlines()) <= 6
    return dict(spec["with"])


def test_go_scaffold_builds_a_static_binary_and_reports_its_tests(tmp_path: Path) -> None:
    done = shipline("init", "service", "hello", str(tmp_path / "hello"))
    assert done.returncode == 0, done.stderr
    root = tmp_path / "hello"
    for path in (
        "Dockerfile",
        "chart/Chart.yaml",
        "chart/values.yaml",
        "chart/templates/deployment.yaml",
        ".gitignore",
        "src/main.go",
        "src/main_test.go",
        "go.mod",
    ):
        assert (root / path).is_file(), path
    assert "name: hello" in (root / "chart" / "Chart.yaml").read_text()
    commands = pipeline_commands(root)
    env = {"GOCACHE": str(GO_CACHE), "GOFLAGS": "-mod=mod", "GOPROXY": "off"}
    assert sh(commands["build"], root, env).returncode == 0
    assert (root / "bin" / "hello").is_file()
    assert "FROM scratch" in (root / "Dockerfile").read_text()
    tested = sh(commands["test"], root, env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert find_reports(root, "**/*junit*.xml") == [Path(root / "src" / "junit.xml")]
    assert 'tests="2" failures="0"' in (root / "src" / "junit.xml").read_text()

    # A failing test shows up in the report, by name.
    test_file = root / "src" / "main_test.go"
    test_file.write_text(test_file.read_text().replace('"hello, ship"', '"hello, nobody"'))
    assert sh(commands["test"], root, env).returncode != 0
    report = (root / "src" / "junit.xml").read_text()
    assert 'failures="1"' in report and '<testcase name="TestGreeting"' in report


def test_python_scaffold_builds_a_zipapp_and_reports_its_tests(tmp_path: Path) -> None:
    assert shipline("init", "service", "my-py", "--lang", "python", str(tmp_path / "svc")).returncode == 0
    root = tmp_path / "svc"
    commands = pipeline_commands(root)
    assert sh(commands["build"], root).returncode == 0
    assert (root / "dist" / "my-py.pyz").is_file()
    assert sh(commands["test"], root).returncode == 0
    assert 'tests="2"' in (root / "junit.xml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad_Name"], "is not a service name"),
        (["ok", "--lang", "cobol"], "Invalid value for '--lang'"),
    ],
)
def test_init_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    done = shipline("init", "service", *args, str(tmp_path / "x"))
    assert done.returncode == 2
    assert message in done.stderr


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    done = shipline("init", "service", "x", str(tmp_path / "x"))
    assert done.returncode == 2 and "not empty" in done.stderr
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("lang", ["go", "python"])
def test_scaffolded_pipeline_validates_and_a_typo_is_pointed_at(tmp_path: Path, lang: str) -> None:
    assert shipline("init", "service", "svc", "--lang", lang, str(tmp_path / "svc")).returncode == 0
    pipeline = tmp_path / "svc" / ".shipline" / "pipeline.yaml"
    done = shipline("validate", str(pipeline))
    assert done.returncode == 0, done.stderr
    pipeline.write_text(pipeline.read_text().replace("  test:", "  tset:"))
    done = shipline("validate", str(pipeline))
    assert done.returncode == 2
    assert f"{pipeline}:5:3:" in done.stderr and "tset" in done.stderr


def test_reports_are_found_at_any_depth_but_never_in_hidden_folders_or_outside(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    for path in ("junit.xml", "a/b/unit-junit.xml", "a/TEST-x.xml", ".git/junit.xml", ".venv/lib/junit.xml"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("<testsuites/>")
    (tmp_path / "junit.xml").write_text("<testsuites/>")  # beside the workspace, not in it
    (root / "a" / "out-junit.xml").symlink_to(tmp_path / "junit.xml")
    patterns = "**/*junit*.xml, **/TEST-*.xml, .git/*.xml, ../*.xml"
    assert find_reports(root, patterns) == [root / "a" / "TEST-x.xml", root / "a" / "b" / "unit-junit.xml", root / "junit.xml"]
