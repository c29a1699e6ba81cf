"""Reading environment declaration files, with FILE:LINE:COL for every problem.

The same machinery as pipeline files (`engine.loading`): one parse that keeps
positions, pydantic for shape, every problem collected before failing.
"""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError

from shipline.domain.environments import Environment, EnvironmentsFile
from shipline.engine.loading import _Document, _plain, _validate_model, _yaml
from shipline.exceptions import DefinitionError, Problem


def load_environments(path: str | Path) -> list[Environment]:
    """The environments a declaration file declares; DefinitionError lists every problem."""
    path = Path(path)
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DefinitionError([Problem(display, 1, 1, "no such file")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([Problem(display, 1, 1, f"cannot read: {exc}")]) from exc
    doc = _Document(path, display, text)
    try:
        doc.root = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line, mark.column) if mark else (0, 0)
        raise DefinitionError([Problem(display, line + 1, col + 1, f"not valid YAML: {exc.problem or exc.context}")]) from exc
    if not isinstance(doc.root, CommentedMap):
        raise DefinitionError([Problem(display, 1, 1, "an environments file is a YAML mapping with `environments:` (a list)")])
    spec = _validate_model(doc, EnvironmentsFile, _plain(doc.root))
    if spec is None:
        raise DefinitionError(doc.problems)
    seen: dict[str, int] = {}
    for i, env in enumerate(spec.environments):
        if env.name in seen:
            doc.problem(("environments", i, "name"), f"environment '{env.name}' is declared twice (first as item {seen[env.name] + 1})")
        seen.setdefault(env.name, i)
    if doc.problems:
        raise DefinitionError(doc.problems)
    return list(spec.environments)
