"""Reading a directory of rendered manifests: the objects an environment should hold.

YAML is read as Kubernetes reads it, YAML 1.1 (`0644` is octal, `on` is
true), with PyYAML's libyaml loader: Kubernetes' own dialect, and ten times
faster than a pure-Python parser on a 200-service environment (each step of a
pipeline reads the whole directory again).  `kind: List` documents are
flattened, and every problem in every file is reported at once, with its file,
line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader

from shipline.exceptions import ManifestError, UsageError


@dataclass(frozen=True)
class Manifest:
    source: str
    """Where it was written: `web.yaml` or `web.yaml#2` (the second document)."""
    body: dict[str, Any]


def read_manifests(directory: Path) -> list[Manifest]:
    """Every object in the *.yaml, *.yml and *.json files under directory, in path order.

    YAML is read as Kubernetes reads it (YAML 1.1: `0644` is octal, `on` is
    true).  `kind: List` documents are flattened.  Every problem in every file
    is reported at once.
    """
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory of rendered manifests")
    manifests: list[Manifest] = []
    problems: list[str] = []
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))
    for path in files:
        name = str(path.relative_to(directory))
        try:
            documents = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
            problems.append(f"{where}: invalid YAML: {exc.problem}")
            continue
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            problems.append(f"{name}: invalid YAML: {exc}")
            continue
        bodies = [body for document in documents for body in _flatten(document)]
        for index, body in enumerate(bodies, 1):
            source = name if len(bodies) == 1 else f"{name}#{index}"
            problem = _shape_problem(body)
            if problem:
                problems.append(f"{source}: {problem}")
            else:
                manifests.append(Manifest(source, body))
    if problems:
        raise ManifestError(problems)
    return manifests


def _flatten(document: Any) -> list[Any]:
    if document is None:
        return []
    if isinstance(document, dict) and str(document.get("kind", "")).endswith("List") and "items" in document:
        return [item for sub in document.get("items") or [] for item in _flatten(sub)]
    return [document]


def _shape_problem(body: Any) -> str:
    if not isinstance(body, dict):
        return f"not a Kubernetes object (a {type(body).__name__}, not a mapping)"
    missing = [k for k in ("apiVersion", "kind") if not body.get(k)]
    meta = body.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        missing.append("metadata.name")
    if missing:
        return f"{body.get('kind') or 'object'} without {', '.join(missing)}"
    return ""
