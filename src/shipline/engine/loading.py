"""Reading pipeline files: YAML with positions -> a checked `ResolvedPipeline`.

Every problem is collected with FILE:LINE:COL before anything fails, so one
`shipline validate` shows all that is wrong, not just the first thing.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

from shipline.domain import expressions as ex
from shipline.domain.checking import Finding, Loc, TaskOrigin, check_group, check_pipeline, check_references, check_template
from shipline.domain.graphs import Node, dependencies
from shipline.domain.pipelines import NAME_PATTERN, PATTERN_HINTS, Pipeline, ResolvedPipeline, ResolvedTask, Task, TaskTemplate
from shipline.exceptions import DefinitionError, Problem

CATALOG_PREFIX = "shipline/"
M = TypeVar("M", bound=BaseModel)

MAX_DEFINITION_BYTES = 256 * 1024
"""A definition file (pipeline, task, archetype) may be at most this large."""
MAX_DEPTH = 64
"""How deeply mappings and lists may nest in a definition."""
MAX_NODES = 100_000
"""How many values a definition may hold once its aliases (`*name`) are expanded: no "billion laughs"."""

_FLOW_RUN = re.compile(r"(?:[\[{][ \t\r\n]*){%d}" % MAX_DEPTH)  # noqa: UP031 (braces of a regex) inside the top mapping: one level more

_reads: ContextVar[list[Path] | None] = ContextVar("shipline_definition_reads", default=None)


@contextmanager
def recording_reads() -> Iterator[list[Path]]:
    """Every file read by the loads inside the block (a pipeline, its tasks, its archetype), for caching."""
    files: list[Path] = []
    token = _reads.set(files)
    try:
        yield files
    finally:
        _reads.reset(token)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


@dataclass
class _Document:
    """One parsed file: its text, its YAML tree with positions, and what is wrong with it."""

    path: Path
    display: str
    text: str
    root: Any = None
    problems: list[Problem] = field(default_factory=list)

    def problem(self, loc: Loc, message: str, offset: int | None = None, *, at_key: bool = False) -> None:
        line, col = self.position(loc, offset, at_key=at_key)
        self.problems.append(Problem(self.display, line + 1, col + 1, message))

    def position(self, loc: Loc, offset: int | None = None, *, at_key: bool = False) -> tuple[int, int]:
        """0-based (line, col) of the value at `loc`: as deep as the document goes."""
        node, pos = self.root, (0, 0)
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                pos = node.lc.key(part) if (last and at_key) else node.lc.value(part)
                if isinstance(node[part], (CommentedMap, CommentedSeq)) and not (last and at_key):
                    pos = node.lc.key(part)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                pos = node.lc.item(part)
                node = node[part]
            else:
                break
        else:
            if offset is not None and isinstance(node, str):
                return self._inside_scalar(pos, node, offset)
        return pos

    def _inside_scalar(self, pos: tuple[int, int], value: str, offset: int) -> tuple[int, int]:
        lines = self.text.splitlines()
        line, col = pos
        head = lines[line][col:] if line < len(lines) else ""
        before = value[:offset]
        newlines = before.count("\n")
        if head[:1] in ("|", ">"):
            first = line + 1
            while first < len(lines) and not lines[first].strip():
                first += 1
            indent = len(lines[first]) - len(lines[first].lstrip()) if first < len(lines) else 0
            return first + newlines, indent + len(before) - (before.rfind("\n") + 1)
        quote = 1 if head[:1] in ("'", '"') else 0
        if newlines == 0:
            return line, col + quote + offset
        return line + newlines, 0


def _bounds(text: str, display: str) -> Problem | None:
    """The first place the YAML nests too deeply or expands to too much, found from its events
    (before any tree is built, so a hostile file fails in the time it takes to read it)."""
    # A long run of `[`/`{` is refused before the YAML scanner sees it: it reads ahead
    # ~1,000 of them for a possible key, slowly and without letting other threads run.
    if (run := _FLOW_RUN.search(text)) is not None:
        at = run.start() + [m.start() for m in re.finditer(r"[\[{]", run.group())][MAX_DEPTH - 1]
        line = text.count("\n", 0, at)
        return Problem(display, line + 1, at - (text.rfind("\n", 0, at) + 1) + 1, f"nested more than {MAX_DEPTH} levels deep")
    depth = 0
    stack: list[int] = []  # values so far in each open collection
    sizes: dict[str, int] = {}  # anchor -> values it stands for
    anchors: list[str | None] = []
    total = 0
    try:
        for ev in _yaml().parse(text):
            if isinstance(ev, (CollectionStartEvent, ScalarEvent, AliasEvent)):
                mark = ev.start_mark
                where = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
                if isinstance(ev, AliasEvent):
                    count = sizes.get(str(ev.anchor), 1)
                else:
                    count = 1
                total += count
                if total > MAX_NODES:
                    what = f"alias *{ev.anchor} makes it" if isinstance(ev, AliasEvent) else "it is"
                    return Problem(
                        display, where[0], where[1], f"too large: {what} more than {MAX_NODES} values once aliases are expanded"
                    )
                if stack:
                    stack[-1] += count
                if isinstance(ev, CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        return Problem(display, where[0], where[1], f"nested more than {MAX_DEPTH} levels deep")
                    stack.append(1)
                    anchors.append(ev.anchor)
                elif isinstance(ev, ScalarEvent) and ev.anchor:
                    sizes[str(ev.anchor)] = 1
            elif isinstance(ev, CollectionEndEvent):
                depth -= 1
                count = stack.pop()
                anchor = anchors.pop()
                if anchor:
                    sizes[str(anchor)] = count
                if stack:
                    stack[-1] += count - 1  # the start already counted 1
    except YAMLError:
        return None  # the real load reports it, with its position
    return None


def _parse(text: str, display: str) -> tuple[Any, Problem | None]:
    """The YAML tree of `text`, or the first problem that keeps it from being one (its bounds, its syntax)."""
    if (bound := _bounds(text, display)) is not None:
        return None, bound
    try:
        return _yaml().load(text), None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line, mark.column) if mark else (0, 0)
        return None, Problem(display, line + 1, col + 1, f"not valid YAML: {exc.problem or exc.context}")


REMEMBERED_BYTES = 32 * 1024
"""Definitions up to this size (the last 64 texts) are parsed once per text and process: the catalog's
task and pipeline files on every load of a pipeline that uses them, a repository's pipeline at each
commit a webhook brings, an environment run's definition.  A service pipeline's load (nine files, each
parsed twice by ruamel.yaml) took 72 ms of CPU; a repeated one takes 6 ms.  The trees are only read
(positions, `_plain` copies), never changed, so they are shared."""

_parse_remembered = lru_cache(maxsize=64)(_parse)


def _read(path: Path, display: str) -> _Document:
    files = _reads.get()
    if files is not None:
        files.append(path)
    try:
        size = path.stat().st_size
        if size > MAX_DEFINITION_BYTES:
            doc = _Document(path, display, "")
            doc.problems.append(
                Problem(display, 1, 1, f"the file is {size} bytes; a definition may be at most {MAX_DEFINITION_BYTES}")
            )
            return doc
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        doc = _Document(path, display, "")
        doc.problems.append(Problem(display, 1, 1, "no such file"))
        return doc
    except (OSError, UnicodeDecodeError) as exc:
        doc = _Document(path, display, "")
        doc.problems.append(Problem(display, 1, 1, f"cannot read: {exc}"))
        return doc
    doc = _Document(path, display, text)
    root, problem = (_parse_remembered if len(text) <= REMEMBERED_BYTES else _parse)(text, display)
    if problem is not None:
        doc.problems.append(problem)
        return doc
    doc.root = root
    if not isinstance(doc.root, CommentedMap):
        doc.problems.append(Problem(display, 1, 1, "a definition is a YAML mapping (name:, tasks:, ...)"))
        doc.root = None
    return doc


def _validate_model(doc: _Document, model: type[M], data: Any, loc: Loc = ()) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            path = (*loc, *(p for p in err["loc"] if isinstance(p, int) or not _is_tag(p)))
            if err["type"] == "extra_forbidden":
                doc.problem(path, f"unknown key '{path[-1]}'", at_key=True)
            elif err["type"] == "missing":
                doc.problem(path[:-1], f"'{path[-1]}' is required")
            else:
                where = ".".join(str(p) for p in path)
                msg = _message(err)
                doc.problem(path, f"{where}: {msg}" if where else msg)
        return None


def _message(err: Any) -> str:
    """pydantic's message, said for a person: a name rule in words, never its regex."""
    ctx = err.get("ctx") or {}
    if err["type"] == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(ctx.get("pattern", ""), "")
        what = "a name" if "[key]" not in err["loc"] else "a key"
        return f"{err['input']!r} is not {what} shipline takes: write {hint}" if hint else "not in the expected form"
    if err["type"] == "too_short" and err["loc"] and err["loc"][-1] == "steps":
        return "`steps:` is empty: give at least one step (`- run: ...`)"
    return str(err["msg"]).removeprefix("Value error, ")


def _is_tag(part: str | int) -> bool:
    # pydantic names union branches and validators in `loc`, e.g. 'list[constrained-str]'.
    return isinstance(part, str) and ("[" in part or part in ("function-after", "function-before"))


def _catalog_path(name: str) -> Path | None:
    if not re.fullmatch(NAME_PATTERN, name):  # `shipline/../../x` must not leave the catalog
        return None
    candidate = resources.files("shipline") / "catalog" / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def catalog_names() -> list[str]:
    root = resources.files("shipline") / "catalog"
    return sorted(CATALOG_PREFIX + Path(p.name).stem for p in root.iterdir() if p.name.endswith(".yaml"))


def repository_root(path: Path) -> Path:
    """Where the files a definition `uses:` may live: its git repository, else its own folder."""
    folder = path.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def _local_file(doc: _Document, loc: Loc, uses: str, base: Path, root: Path) -> Path | None:
    """The file `./x.yaml` names, if it is a file inside `root` (symlinks followed); else a problem."""
    path = (base / uses).resolve()
    if not path.is_relative_to(root):
        doc.problem(
            loc,
            f"'{uses}' is outside the pipeline's repository ({root}): a file it uses must be "
            f"inside it, or come from the catalog (shipline/NAME)",
        )
        return None
    if not path.is_file():
        doc.problem(loc, f"'{uses}': no such file (relative to {base})")
        return None
    return path


def _load_template(doc: _Document, task: Task, loc: Loc, base: Path, root: Path) -> tuple[TaskTemplate, _Document] | None:
    assert task.uses is not None
    if task.uses.startswith(CATALOG_PREFIX):
        path = _catalog_path(task.uses.removeprefix(CATALOG_PREFIX))
        if path is None:
            doc.problem((*loc, "uses"), f"no catalog task '{task.uses}' (catalog: {', '.join(catalog_names())})")
            return None
        display = task.uses
    elif task.uses.startswith(("./", "../")):
        found = _local_file(doc, (*loc, "uses"), task.uses, base, root)
        if found is None:
            return None
        path, display = found, str(found)
    else:
        doc.problem((*loc, "uses"), f"'{task.uses}': write ./path.yaml (relative to this file) or shipline/NAME")
        return None
    tdoc = _read(path, display)
    if tdoc.root is None:
        doc.problems += tdoc.problems
        return None
    template = _validate_model(tdoc, TaskTemplate, _plain(tdoc.root))
    if template is not None:
        texts: list[tuple[Loc, str]] = []
        for i, step in enumerate(template.steps):
            texts.append((("steps", i, "run"), step.run))
            texts += [(("steps", i, "env", k), v) for k, v in step.env.items()]
        for f in check_template(dict(template.env), texts, set(template.inputs)):
            tdoc.problem(f.loc, f.message, f.offset)
    doc.problems += tdoc.problems
    if template is None or tdoc.problems:
        return None
    for key in task.with_:
        if key not in template.inputs:
            known = ", ".join(template.inputs) or "none"
            doc.problem((*loc, "with", key), f"'{task.uses}' has no input '{key}' (inputs: {known})", at_key=True)
    for key, spec in template.inputs.items():
        if spec.required and key not in task.with_:
            doc.problem((*loc, "with") if task.with_ else loc, f"'{task.uses}' needs input '{key}': add it to `with:`")
    return template, tdoc


def _resolve(task: Task, needs: list[str], template: TaskTemplate | None, is_finally: bool) -> ResolvedTask:
    if template is None:
        return ResolvedTask(
            name=task.name,
            needs=needs,
            when=task.when,
            env=dict(task.env),
            steps=list(task.steps),
            results=task.result_names,
            retries=task.retries,
            timeout=task.timeout,
            workdir=task.workdir,
            image=task.image,
            is_finally=is_finally,
        )
    inputs = {k: spec.default for k, spec in template.inputs.items() if spec.default is not None}
    inputs.update(task.with_)
    return ResolvedTask(
        name=task.name,
        needs=needs,
        when=task.when,
        env={**template.env, **task.env},
        inputs=inputs,
        steps=list(template.steps),
        results=list(template.results),
        retries=task.retries or template.retries,
        timeout=task.timeout or template.timeout,
        workdir=task.workdir,
        image=task.image,
        is_finally=is_finally,
        uses=task.uses,
    )


def _archetype_path(name: str) -> Path | None:
    if not re.fullmatch(NAME_PATTERN, name):
        return None
    candidate = resources.files("shipline") / "catalog" / "pipelines" / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def archetype_names() -> list[str]:
    root = resources.files("shipline") / "catalog" / "pipelines"
    if not root.is_dir():  # none shipped yet (git keeps no empty folder)
        return []
    return sorted(CATALOG_PREFIX + Path(p.name).stem for p in root.iterdir() if p.name.endswith(".yaml"))


def _load_archetype(doc: _Document, spec: Pipeline, base: Path, root: Path) -> tuple[Pipeline, _Document, Path] | None:
    """The whole pipeline a file `uses:`, checked on its own; its `inputs` against the file's `with:`."""
    assert spec.uses is not None
    if spec.uses.startswith(CATALOG_PREFIX):
        path = _archetype_path(spec.uses.removeprefix(CATALOG_PREFIX))
        if path is None:
            doc.problem(("uses",), f"no pipeline '{spec.uses}' in the catalog (pipelines: {', '.join(archetype_names())})")
            return None
        display = spec.uses
    elif spec.uses.startswith(("./", "../")):
        found = _local_file(doc, ("uses",), spec.uses, base, root)
        if found is None:
            return None
        path, display = found, str(found)
    else:
        doc.problem(("uses",), f"'{spec.uses}': write shipline/NAME (a pipeline from the catalog) or ./path.yaml")
        return None
    adoc = _read(path, display)
    archetype = None
    if adoc.root is not None:
        # An archetype's name is optional: runs take the name of the file that uses it.
        archetype = _validate_model(adoc, Pipeline, {"name": "archetype", **_plain(adoc.root)})
    if archetype is not None and archetype.uses is not None:
        adoc.problem(("uses",), "an archetype cannot itself `uses:` another pipeline")
        archetype = None
    doc.problems += adoc.problems
    adoc.problems = []
    if archetype is None:
        return None
    for key in spec.with_:
        if key not in archetype.inputs:
            known = ", ".join(archetype.inputs) or "none"
            doc.problem(("with", key), f"'{spec.uses}' has no input '{key}' (inputs: {known})", at_key=True)
    for key, param in archetype.inputs.items():
        if param.required and key not in spec.with_:
            hint = f" ({param.description})" if param.description else ""
            doc.problem(("with",) if spec.with_ else ("uses",), f"'{spec.uses}' needs input '{key}'{hint}: add it to `with:`")
    for key in spec.params:
        if key not in archetype.params:
            known = ", ".join(archetype.params) or "none"
            doc.problem(
                ("params", key), f"'{spec.uses}' has no param '{key}' to give a default to (params: {known})", at_key=True
            )
    return archetype, adoc, path.parent


def load_pipeline(path: str | Path, root: str | Path | None = None) -> ResolvedPipeline:
    """Read, check and resolve one definition; raise DefinitionError listing every problem.

    A file that `uses:` an archetype gets the archetype's tasks, params and
    results under its own name, with its `with:` as the archetype's inputs.
    Files it uses (`./x.yaml`) must lie inside `root`: by default the file's git
    repository, or its folder when it is in none.
    """
    path = Path(path)
    root = Path(root).resolve() if root is not None else repository_root(path)
    doc = _read(path, str(path))
    if doc.root is None:
        raise DefinitionError(doc.problems)
    data = _plain(doc.root)
    spec = _validate_model(doc, Pipeline, data)
    broken: set[str] = set()
    if spec is None:
        # Go on with what has the right shape, so the rest (names, needs,
        # references) is checked in the same pass instead of in rounds.
        lenient = _lenient(data)
        if lenient is None:
            raise DefinitionError(doc.problems)
        spec, broken = lenient

    base = path.resolve().parent
    body, body_doc = spec, doc
    if spec.uses is not None:
        loaded = _load_archetype(doc, spec, base, root)
        if loaded is None:
            raise DefinitionError(doc.problems)
        body, body_doc, base = loaded
        if spec.uses.startswith(CATALOG_PREFIX):
            root = base.resolve()  # a catalog pipeline uses files of the catalog only
        for key, value in spec.with_.items():
            for f in check_references(
                value,
                ("with", key),
                params=set(body.params),
                inputs=None,
                results={},
                visible=set(),
                task_name=None,
                roots=frozenset({"params", "secrets", "secret_files", "run"}),
            ):
                doc.problem(f.loc, f.message, f.offset)
    inputs = {k: p.default for k, p in body.inputs.items() if p.default is not None}
    inputs.update(spec.with_)
    params = {**body.params, **{k: v for k, v in spec.params.items() if spec.uses is not None}}
    if spec.uses is None:
        for key, param in body.inputs.items():
            if param.required:
                doc.problem(
                    ("inputs", key),
                    f"input '{key}' has no default: this file is an archetype; "
                    f"use it from another file with `uses: ./{path.name}` and `with: {{{key}: ...}}`",
                )

    resolved: list[ResolvedTask] = []
    origins: dict[str, TaskOrigin] = {}
    templated: set[str] = set()
    for key, tasks, is_finally in (("tasks", body.tasks, False), ("finally", body.finally_, True)):
        firsts: dict[str, Task] = {}
        for t in tasks:
            firsts.setdefault(t.name, t)  # a name used twice is reported below
        deps = dependencies([Node(t.name, t.needs) for t in firsts.values()])
        for i, task in enumerate(tasks):
            loc: Loc = (key, i)
            if task.name in origins:
                body_doc.problem((*loc, "name"), f"task name '{task.name}' is used twice; task names must be unique")
                continue
            origins[task.name] = TaskOrigin(loc)
            template = None
            if task.uses is not None:
                loaded_task = _load_template(body_doc, task, loc, base, root)
                template = loaded_task[0] if loaded_task else None
                templated.add(task.name)
                if template is None:
                    broken.add(task.name)
            one = _resolve(task, deps[task.name], template, is_finally)
            if task.name in broken:
                # Its problems are reported; what it would declare is unknown, so
                # references to its results are taken as they are written.
                one = one.model_copy(update={"results": sorted(_referenced_results(data).get(task.name, set()))})
                templated.add(task.name)
            resolved.append(one)
    pipeline = ResolvedPipeline(
        name=spec.name,
        source=str(path),
        params=params,
        inputs=inputs,
        env=dict(body.env),
        tasks=resolved,
        results=dict(body.results),
        concurrency=body.concurrency,
        timeout=spec.timeout or body.timeout,
    )
    declared = set(body.inputs) if (spec.uses is not None or body.inputs) else None
    findings: list[Finding] = check_pipeline(pipeline, origins, templated, declared)
    for f in findings:
        body_doc.problem(f.loc, f.message, f.offset)
    if spec.concurrency is not None and body is not spec:
        # The file's own group replaces the archetype's.
        for f in check_group(spec.concurrency.group, set(params), declared):
            doc.problem(f.loc, f.message, f.offset)
        pipeline = pipeline.model_copy(update={"concurrency": spec.concurrency})
    if doc.problems or body_doc.problems:
        raise DefinitionError(doc.problems + (body_doc.problems if body_doc is not doc else []))
    return pipeline


def _lenient(data: Any) -> tuple[Pipeline, set[str]] | None:
    """The definition with each part of the wrong shape left out or stood in for, and the stand-ins' names.

    A task whose shape is wrong becomes a task of the same name (when that is a
    valid name) with no checks of its own, so references to it are still judged.
    """
    if not isinstance(data, dict):
        return None
    data = dict(data)
    try:
        Pipeline.model_validate(data)
        return None
    except ValidationError as exc:
        top = {e["loc"][0] for e in exc.errors() if e["loc"] and e["loc"][0] not in ("tasks", "finally")}
    for key in top:
        if key == "name":
            data["name"] = "pipeline"
        else:
            data.pop(key, None)
    broken: set[str] = set()
    for key in ("tasks", "finally"):
        items = data.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            data.pop(key)
            continue
        fixed = []
        for i, item in enumerate(items):
            try:
                Task.model_validate(item)
                fixed.append(item)
                continue
            except ValidationError:
                pass
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
                name = f"{key}-{i}-has-problems"
            stand_in: dict[str, Any] = {"name": name, "steps": [{"run": "true"}]}
            needs = item.get("needs") if isinstance(item, dict) else None
            try:
                Task.model_validate({**stand_in, "needs": needs})
                stand_in["needs"] = needs
            except ValidationError:
                pass
            fixed.append(stand_in)
            broken.add(name)
        data[key] = fixed
    try:
        return Pipeline.model_validate(data), broken
    except ValidationError:
        return None


def _referenced_results(data: Any) -> dict[str, set[str]]:
    """Every `tasks.T.results.R` written anywhere in the raw definition: T -> {R}."""
    found: dict[str, set[str]] = {}
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack += node.values()
        elif isinstance(node, list):
            stack += node
        elif isinstance(node, str) and "${{" in node:
            try:
                refs = ex.template_references(node)
            except ex.ExpressionError:
                continue
            for ref, _ in refs:
                if len(ref.path) == 4 and ref.path[0] == "tasks" and ref.path[2] == "results":
                    found.setdefault(ref.path[1], set()).add(ref.path[3])
    return found


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema of a definition file, for editors."""
    schema = _described(Pipeline.model_json_schema(by_alias=True))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "shipline pipeline"
    schema["anyOf"] = [{"required": ["tasks"]}, {"required": ["uses"]}]
    return schema


def task_schema() -> dict[str, Any]:
    """The JSON Schema of a reusable task file (`uses: ./tasks/x.yaml`, the catalog's tasks), for editors."""
    schema = _described(TaskTemplate.model_json_schema(by_alias=True))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "shipline reusable task"
    return schema


def _field_docs() -> dict[str, dict[str, str]]:
    """Class name -> field name -> the docstring under the field, from `shipline.domain.pipelines`' source."""
    from shipline.domain import pipelines

    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(inspect.getsource(pipelines)).body:
        if isinstance(node, ast.ClassDef):
            fields = docs[node.name] = {}
            for this, after in zip(node.body, node.body[1:], strict=False):
                if (
                    isinstance(this, ast.AnnAssign)
                    and isinstance(this.target, ast.Name)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    fields[this.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    """Each property of each model in `schema` described by its field's docstring (where the schema has none)."""
    from shipline.domain import pipelines

    docs = _field_docs()
    models = {name: model for name, model in vars(pipelines).items() if isinstance(model, type) and issubclass(model, BaseModel)}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            model = models.get(node.get("title", ""))
            if model is not None and isinstance(node.get("properties"), dict):
                by_alias = {(f.alias or name): name for name, f in model.model_fields.items()}
                for key, prop in node["properties"].items():
                    doc = docs.get(model.__name__, {}).get(by_alias.get(key, key))
                    if doc and isinstance(prop, dict) and not prop.get("description"):
                        prop["description"] = doc
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema
