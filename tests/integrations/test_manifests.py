"""Reading a directory of rendered manifests: every problem at once, YAML as Kubernetes reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipline.exceptions import ManifestError
from shipline.integrations.manifests import read_manifests


def test_objects_come_in_path_order_with_lists_flattened_and_yaml_1_1_numbers(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - {apiVersion: v1, kind: ConfigMap, metadata: {name: one}}\n"
        "  - {apiVersion: v1, kind: ConfigMap, metadata: {name: two}}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yml").write_text("---\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {}\n")
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes: [{name: v, secret: {secretName: s, defaultMode: 0644}}]\n"
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    found = read_manifests(tmp_path)
    assert [(m.source, m.body["metadata"]["name"]) for m in found] == [
        ("a.yaml", "p"),
        ("b.yaml#1", "one"),
        ("b.yaml#2", "two"),
        ("sub/c.yml", "s"),
    ]
    assert found[0].body["spec"]["volumes"][0]["secret"]["defaultMode"] == 0o644  # octal, as kubectl reads it


def test_every_problem_in_every_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n")
    (tmp_path / "nameless.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    (tmp_path / "scalar.yaml").write_text("just text\n")
    with pytest.raises(ManifestError) as caught:
        read_manifests(tmp_path)
    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("broken.yaml:4:1: invalid YAML")
    assert problems[1] == "nameless.yaml: ConfigMap without metadata.name"
    assert problems[2].startswith("scalar.yaml: not a Kubernetes object")
    assert caught.value.exit_code == 2
