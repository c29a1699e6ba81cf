"""Reading environment declaration files, with FILE:LINE:COL for every problem.

The same machinery as pipeline files (`engine.loading`): one parse that keeps
positions, pydantic for shape, every problem collected before failing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from shipline.domain.environments import Environment, EnvironmentsFile
from shipline.engine.loading import _Document, _plain, _validate_model, _yaml
from shipline.exceptions import DefinitionError, Problem, UsageError


def load_environments(path: str | Path, *, check_files: bool = True) -> list[Environment]:
    """The environments a declaration file declares; DefinitionError lists every problem.

    With `check_files`, a declared kubeconfig must exist (relative paths are
    relative to the declaration file).
    """
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
            doc.problem(
                ("environments", i, "name"), f"environment '{env.name}' is declared twice (first as item {seen[env.name] + 1})"
            )
        seen.setdefault(env.name, i)
        if check_files and env.kubeconfig is not None and not kubeconfig_path(path, env).is_file():
            doc.problem(("environments", i, "kubeconfig"), f"kubeconfig {kubeconfig_path(path, env)}: no such file")
    if doc.problems:
        raise DefinitionError(doc.problems)
    return list(spec.environments)


def kubeconfig_path(declaration: Path, env: Environment) -> Path:
    assert env.kubeconfig is not None
    return (declaration.parent / Path(env.kubeconfig).expanduser()).resolve()


_FILE_KEYS = {
    "certificate-authority": "certificate-authority-data",
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
}


def read_kubeconfig(path: Path) -> str:
    """A kubeconfig as one self-contained text: certificate files it names are inlined.

    The text is stored as a secret and handed to a run as a file in a place
    of its own, where relative paths to certificates would not resolve.
    """
    try:
        text = path.read_text(encoding="utf-8")
        config = YAML(typ="safe").load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"kubeconfig {path}: cannot read: {exc}") from exc
    except YAMLError as exc:
        raise UsageError(f"kubeconfig {path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("clusters"), list) or not config["clusters"]:
        raise UsageError(
            f"kubeconfig {path}: not a kubeconfig (no `clusters:`); write one with `kubectl config view --flatten --minify`"
        )
    inlined = False
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for item in config.get(section) or []:
            body = item.get(key) if isinstance(item, dict) else None
            if not isinstance(body, dict):
                continue
            for file_key, data_key in _FILE_KEYS.items():
                name = body.get(file_key)
                if isinstance(name, str) and name:
                    target = (path.parent / Path(name).expanduser()).resolve()
                    try:
                        body[data_key] = base64.b64encode(target.read_bytes()).decode()
                    except OSError as exc:
                        raise UsageError(f"kubeconfig {path}: {file_key} {target}: cannot read: {exc}") from exc
                    del body[file_key]
                    inlined = True
            token_file = body.get("tokenFile")
            if isinstance(token_file, str) and token_file:
                target = (path.parent / Path(token_file).expanduser()).resolve()
                try:
                    body["token"] = target.read_text().strip()
                except OSError as exc:
                    raise UsageError(f"kubeconfig {path}: tokenFile {target}: cannot read: {exc}") from exc
                del body["tokenFile"]
                inlined = True
    if not inlined:
        return text
    return json.dumps(config, indent=2) + "\n"
