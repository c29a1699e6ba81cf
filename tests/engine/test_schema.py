"""`shipline schema` against every example the docs show: what the docs teach, the schema accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import REPO, shipline
from ruamel.yaml import YAML

from shipline.engine.loading import pipeline_schema, task_schema

_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _examples() -> list[tuple[str, str, Any]]:
    """(where, kind, document) for every whole pipeline or task file in the docs, README, examples and catalog."""
    texts = [
        (f"{p.relative_to(REPO)} block {i}", block)
        for p in [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
        for i, block in enumerate(_BLOCK.findall(p.read_text()))
    ]
    texts += [(str(p.relative_to(REPO)), p.read_text()) for p in sorted((REPO / "examples").rglob("*.yaml"))]
    catalog = REPO / "src" / "shipline" / "catalog"
    texts += [(str(p.relative_to(REPO)), p.read_text()) for p in sorted(catalog.glob("*.yaml"))]
    found = []
    for where, text in texts:
        try:
            doc = YAML(typ="safe").load(text)
        except Exception:  # a fragment of a file (an indented snippet), not a whole one
            continue
        if isinstance(doc, list) and doc and all(isinstance(t, dict) and "name" in t for t in doc):
            found += [(f"{where} task {t['name']}", "task-in-pipeline", t) for t in doc]  # a `tasks:` excerpt
            continue
        if not isinstance(doc, dict):
            continue
        if "name" in doc and ("tasks" in doc or "uses" in doc):
            found.append((where, "pipeline", doc))
        elif "steps" in doc and "tasks" not in doc:
            found.append((where, "task", doc))
    for p in sorted((catalog / "pipelines").glob("*.yaml")) if (catalog / "pipelines").is_dir() else []:
        doc = YAML(typ="safe").load(p.read_text())
        found.append((str(p.relative_to(REPO)), "pipeline", {"name": "archetype", **doc}))  # an archetype's name is optional
    return found


EXAMPLES = _examples()


def test_there_are_examples_of_both_kinds() -> None:
    kinds = [kind for _, kind, _ in EXAMPLES]
    assert kinds.count("pipeline") >= 4 and kinds.count("task") >= 2 and kinds.count("task-in-pipeline") >= 2, EXAMPLES


@pytest.mark.parametrize(("where", "kind", "doc"), EXAMPLES, ids=[w for w, _, _ in EXAMPLES])
def test_the_schema_accepts_every_documented_example(where: str, kind: str, doc: Any) -> None:
    schema = pipeline_schema() if kind == "pipeline" else task_schema()
    if kind == "task-in-pipeline":
        schema = {"$defs": pipeline_schema()["$defs"], "$ref": "#/$defs/Task"}
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)


def test_documented_shorthands_and_durations_are_accepted() -> None:
    validator = jsonschema.Draft202012Validator(pipeline_schema())
    good = {
        "name": "p",
        "timeout": "1m",
        "params": {"greeting": "hi", "n": 3, "token": None},
        "concurrency": "deploy-${{ params.greeting }}",
        "tasks": [
            {
                "name": "a",
                "timeout": "1h30m",
                "workdir": "src",
                "retries": 1,
                "steps": [{"run": "true", "timeout": 90, "env": {"DEPTH": 1}}],
            }
        ],
    }
    assert list(validator.iter_errors(good)) == []
    for bad in (
        {**good, "timeout": "soon"},
        {**good, "tasks": [{"name": "a", "stepz": []}]},
        {**good, "params": {"greeting": {"defualt": "x"}}},
        {"name": "p"},
    ):
        assert list(validator.iter_errors(bad)), bad


def test_every_field_is_described() -> None:
    for schema in (pipeline_schema(), task_schema()):
        models = [schema, *schema["$defs"].values()]
        for model in models:
            for variant in model.get("anyOf", [model]):
                for name, prop in variant.get("properties", {}).items():
                    assert prop.get("description"), f"{variant.get('title')}.{name} has no description"


def test_schema_command_prints_both(home: Path) -> None:
    pipeline = json.loads(shipline("schema").stdout)
    task = json.loads(shipline("schema", "--task").stdout)
    assert pipeline["title"] == "shipline pipeline" and "tasks" in pipeline["properties"]
    assert task["title"] == "shipline reusable task" and "inputs" in task["properties"]
