"""Stamping a chart copy: the image written into values.yaml with ruamel's round trip (no helm needed).

The version and appVersion are helm's to write (`helm package --version --app-version`):
tests/catalog/test_chart.py pulls a pushed chart and reads them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from artifactkit import tiny_chart

from shipline.exceptions import UsageError
from shipline.integrations.charts import Stamp, stamped_copy


def test_the_copy_is_stamped_and_keeps_comments_and_order(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    before = (chart / "values.yaml").read_text()
    copy = stamped_copy(chart, tmp_path / "out", Stamp("1.4.0", "1.4.0", "127.0.0.1:5000/web", "1.4.0"))
    assert copy == tmp_path / "out" / "chart"
    assert (copy / "Chart.yaml").read_text() == (chart / "Chart.yaml").read_text()
    values = (copy / "values.yaml").read_text()
    # Every byte as it was (a comment keeps its column), but the two values.
    expected = before.replace("example.invalid/placeholder", "127.0.0.1:5000/web").replace("tag: latest", "tag: 1.4.0")
    assert values == expected
    assert (chart / "values.yaml").read_text() == before


def test_a_tag_that_yaml_would_read_as_a_number_is_quoted_and_crlf_stays(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    (chart / "values.yaml").write_bytes(b"image:\r\n  repository: x  # here\r\n  tag: latest\r\n")
    copy = stamped_copy(chart, tmp_path / "out", Stamp("1.4.0", "1.4.0", "r.example/web", "42"))
    assert (copy / "values.yaml").read_bytes() == b"image:\r\n  repository: r.example/web  # here\r\n  tag: '42'\r\n"


def test_missing_keys_are_created_with_custom_key_paths(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    (chart / "values.yaml").write_text("# nothing about images here\nreplicas: 2\n")
    copy = stamped_copy(
        chart,
        tmp_path / "out",
        Stamp("2.0.0", "2.0.0", "r.example/web", "2.0.0", repository_key="app.image.repo", tag_key="app.image.version"),
    )
    assert (copy / "values.yaml").read_text() == (
        "# nothing about images here\nreplicas: 2\napp:\n  image:\n    repo: r.example/web\n    version: 2.0.0\n"
    )


def test_a_key_path_through_a_scalar_is_an_error(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    with pytest.raises(UsageError, match="'replicas.repository' cannot be set: 'replicas' holds a int"):
        stamped_copy(chart, tmp_path / "out", Stamp("1.0.0", "1.0.0", "r/x", "1.0.0", repository_key="replicas.repository"))


def test_a_symlink_out_of_the_chart_is_refused(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    (chart / "templates" / "leak.yaml").symlink_to("/etc/passwd")
    with pytest.raises(UsageError, match="points outside the chart"):
        stamped_copy(chart, tmp_path / "out", Stamp("1.0.0", "1.0.0"))


def test_no_chart_yaml(tmp_path: Path) -> None:
    (tmp_path / "chart").mkdir()
    with pytest.raises(UsageError, match="Chart.yaml is missing"):
        stamped_copy(tmp_path / "chart", tmp_path / "out", Stamp("1.0.0", "1.0.0"))


def test_values_nested_past_the_parsers_depth_are_an_error_not_a_crash(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    (chart / "values.yaml").write_text("image: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UsageError, match="values.yaml is not valid YAML"):
        stamped_copy(chart, tmp_path / "out", Stamp("1.0.0", "1.0.0", "r/x", "1.0.0"))


def test_a_values_file_that_links_into_the_chart_is_replaced_not_written_through(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    shared = chart / "values-base.yaml"
    (chart / "values.yaml").rename(shared)
    before = shared.read_text()
    (chart / "values.yaml").symlink_to(shared.resolve())  # absolute: the copy's link leads to the original
    copy = stamped_copy(chart, tmp_path / "out", Stamp("1.4.0", "1.4.0", "127.0.0.1:5000/web", "1.4.0"))
    assert not (copy / "values.yaml").is_symlink()
    assert "repository: 127.0.0.1:5000/web" in (copy / "values.yaml").read_text()
    assert shared.read_text() == before  # the repository's file, untouched


def test_the_copy_links_the_charts_files_and_gives_values_a_file_of_its_own(tmp_path: Path) -> None:
    chart = tiny_chart(tmp_path / "chart", "web")
    before = (chart / "values.yaml").read_text()
    umask = os.umask(0o077)  # the packaged values.yaml is 0644 whatever the step's umask, as the chart's files are
    try:
        copy = stamped_copy(chart, tmp_path / "out", Stamp("1.4.0", "1.4.0", "127.0.0.1:5000/web", "1.4.0"))
    finally:
        os.umask(umask)
    for name in ("Chart.yaml", "templates/configmap.yaml"):
        assert (copy / name).stat().st_ino == (chart / name).stat().st_ino  # a new name, not a new file
    assert (copy / "values.yaml").stat().st_ino != (chart / "values.yaml").stat().st_ino
    assert (chart / "values.yaml").read_text() == before
    assert (copy / "values.yaml").stat().st_mode & 0o777 == 0o644


def test_across_file_systems_the_chart_is_copied(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    chart = tiny_chart(tmp_path / "chart", "web")
    with tempfile.TemporaryDirectory(dir=other) as into:
        copy = stamped_copy(chart, Path(into), Stamp("1.4.0", "1.4.0", "127.0.0.1:5000/web", "1.4.0"))
        assert (copy / "Chart.yaml").read_text() == (chart / "Chart.yaml").read_text()
        assert (copy / "templates" / "configmap.yaml").read_text() == (chart / "templates" / "configmap.yaml").read_text()
        assert "repository: 127.0.0.1:5000/web" in (copy / "values.yaml").read_text()
