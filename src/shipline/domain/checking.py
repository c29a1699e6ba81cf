"""Whole-pipeline checks: names, the `needs` graph and every `${{ }}` reference.

Shape is pydantic's job; this module finds what only the whole definition can
tell: a `needs` naming no task, a cycle, a reference to a result that no task
declares or that may not exist yet when the task starts.  Each finding carries
the path of the offending value in the YAML document so the loader can turn
it into FILE:LINE:COL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from shipline.domain import expressions as ex
from shipline.domain.graphs import Node, ancestors, dependencies, find_cycle
from shipline.domain.pipelines import ResolvedPipeline, ResolvedTask

Loc = tuple[str | int, ...]

RUN_FIELDS = ("id", "pipeline", "status")

SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")
"""What `shipline secrets set NAME` accepts and `${{ secrets.NAME }}` may name."""

SECRET_ROOTS = frozenset({"secrets", "secret_files"})
"""`secrets.NAME` is the value; `secret_files.NAME` the path of a private file holding it."""

GROUP_ROOTS = frozenset({"params", "inputs", "run"})
"""What a `concurrency:` group may use: it is rendered when the run is created."""


@dataclass(frozen=True)
class Finding:
    loc: Loc
    message: str
    offset: int | None = None
    """Character offset inside the string value at `loc`, when known."""


@dataclass(frozen=True)
class TaskOrigin:
    """Where a resolved task was written: `("tasks", 3)` or `("finally", 0)`."""

    loc: Loc


def check_workdir(value: str | None) -> str | None:
    """A message when `value` would leave the workspace, else None."""
    if value is None:
        return None
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        return f"workdir {value!r} must be a relative path inside the workspace (no '/' at the start, no '..')"
    return None


def expression_texts(task: ResolvedTask, loc: Loc, template: bool) -> Iterator[tuple[Loc, str]]:
    """Every string of a task that may hold `${{ }}`, with its place."""
    if task.when is not None:
        yield (*loc, "when"), task.when
    for key, value in task.env.items():
        yield (*loc, "env", key), value
    if template:
        # The steps came from a reusable task file, checked on its own.
        for key, value in task.inputs.items():
            yield (*loc, "with", key), value
        return
    for i, step in enumerate(task.steps):
        yield (*loc, "steps", i, "run"), step.run
        for key, value in step.env.items():
            yield (*loc, "steps", i, "env", key), value


def check_references(
    text: str,
    loc: Loc,
    *,
    params: set[str],
    inputs: set[str] | None,
    results: dict[str, list[str]],
    visible: set[str],
    task_name: str | None,
    archetype_inputs: set[str] | None = None,
    roots: frozenset[str] | None = None,
) -> Iterator[Finding]:
    """Check one templated string.

    `inputs` is None outside reusable task files; `archetype_inputs` names the
    inputs of a whole-pipeline archetype (`${{ inputs.* }}` in its tasks);
    `roots`, when given, limits what may be referenced at all.
    """
    try:
        refs = ex.template_references(text)
    except ex.ExpressionError as exc:
        yield Finding(loc, f"bad expression: {exc.message}", exc.offset)
        return
    for ref, offset in refs:
        if roots is not None and ref.path[0] not in roots:
            allowed = ", ".join(f"{r}.*" for r in sorted(roots))
            yield Finding(loc, f"'{'.'.join(ref.path)}': only {allowed} may be used here", offset)
            continue
        if ref.path[0] in SECRET_ROOTS and _is_condition(loc):
            # A condition on a secret would tell its value bit by bit through skipped tasks.
            yield Finding(loc, f"'{'.'.join(ref.path)}': secrets cannot be used in `when:`", offset)
            continue
        for finding in _check_ref(
            ref,
            loc,
            params=params,
            inputs=inputs,
            results=results,
            visible=visible,
            task_name=task_name,
            archetype_inputs=archetype_inputs,
        ):
            yield Finding(finding.loc, finding.message, offset)


def _is_condition(loc: Loc) -> bool:
    return loc[-1] == "when" and (len(loc) < 2 or loc[-2] not in ("env", "with"))


def _check_ref(
    ref: ex.Ref,
    loc: Loc,
    *,
    params: set[str],
    inputs: set[str] | None,
    results: dict[str, list[str]],
    visible: set[str],
    task_name: str | None,
    archetype_inputs: set[str] | None,
) -> Iterator[Finding]:
    path, text = ref.path, ".".join(ref.path)
    root = path[0]
    if root == "params" and inputs is None:
        if len(path) != 2:
            yield Finding(loc, f"'{text}': write params.NAME")
        elif path[1] not in params:
            known = ", ".join(sorted(params)) or "none are declared"
            yield Finding(loc, f"'{text}': no param '{path[1]}' (params: {known})")
    elif root == "inputs" and inputs is None and archetype_inputs is not None:
        if len(path) != 2 or path[1] not in archetype_inputs:
            known = ", ".join(sorted(archetype_inputs)) or "none are declared"
            yield Finding(loc, f"'{text}': no input '{path[-1]}' (inputs: {known})")
    elif root == "inputs":
        if inputs is None:
            yield Finding(loc, f"'{text}': inputs.* exist only in reusable task files and archetypes; here use params.NAME")
        elif len(path) != 2 or path[1] not in inputs:
            known = ", ".join(sorted(inputs)) or "none are declared"
            yield Finding(loc, f"'{text}': no input '{path[-1]}' (inputs: {known})")
    elif root == "run":
        if len(path) != 2 or path[1] not in RUN_FIELDS:
            yield Finding(loc, f"'{text}': run has {', '.join('run.' + f for f in RUN_FIELDS)}")
    elif root == "tasks" and inputs is None:
        yield from _check_task_ref(path, text, loc, results, visible, task_name)
    elif root in SECRET_ROOTS and inputs is None:
        if len(path) != 2 or not SECRET_NAME.fullmatch(path[1]):
            yield Finding(loc, f"'{text}': write {root}.NAME (letters, digits, '_' and '-')")
    elif root in SECRET_ROOTS:
        yield Finding(loc, f"'{text}': a reusable task gets secrets through its inputs: `with: {{NAME: ${{{{ {root}.NAME }}}}}}`")
    else:
        allowed = "inputs.*, run.*" if inputs is not None else "params.*, tasks.*, secrets.*, secret_files.*, run.*"
        yield Finding(loc, f"'{text}': unknown reference (expressions may use {allowed})")


def _check_task_ref(
    path: tuple[str, ...],
    text: str,
    loc: Loc,
    results: dict[str, list[str]],
    visible: set[str],
    task_name: str | None,
) -> Iterator[Finding]:
    shape_ok = (len(path) == 4 and path[2] == "results") or (len(path) == 3 and path[2] == "status")
    if not shape_ok:
        yield Finding(loc, f"'{text}': write tasks.TASK.results.NAME or tasks.TASK.status")
        return
    other = path[1]
    if other not in results:
        yield Finding(loc, f"'{text}': no task '{other}'")
        return
    if len(path) == 4 and path[3] not in results[other]:
        declared = ", ".join(results[other]) or "it declares none"
        yield Finding(loc, f"'{text}': task '{other}' has no result '{path[3]}' ({declared}; add it to its `results:`)")
        return
    if task_name is not None and other not in visible:
        if other == task_name:
            yield Finding(loc, f"'{text}': a task cannot use its own results")
        else:
            yield Finding(
                loc,
                f"'{text}': task '{task_name}' may start before '{other}' ends; add '{other}' to its `needs:`",
            )


def check_pipeline(
    pipeline: ResolvedPipeline,
    origins: dict[str, TaskOrigin],
    templated: set[str],
    declared_inputs: set[str] | None = None,
) -> list[Finding]:
    """Every problem that spans tasks.  `templated` names tasks whose steps came from `uses:`;
    `declared_inputs` the inputs of an archetype (None for a plain pipeline).

    Task names must already be unique (the loader checks that first).
    """
    findings: list[Finding] = []
    main_names = {t.name for t in pipeline.main}
    final_names = {t.name for t in pipeline.finally_}
    graphs: dict[bool, dict[str, list[str]]] = {}
    for is_finally, tasks, own in ((False, pipeline.main, main_names), (True, pipeline.finally_, final_names)):
        deps = dependencies([Node(t.name, t.needs) for t in tasks])
        for task in tasks:
            loc = origins[task.name].loc
            for k, need in enumerate(task.needs):
                if need in own:
                    continue
                if is_finally and need in main_names:
                    msg = f"needs '{need}': finally tasks already wait for every task; name finally tasks only"
                elif not is_finally and need in final_names:
                    msg = f"needs '{need}': a finally task; tasks cannot wait for finally tasks"
                else:
                    msg = f"needs '{need}': no such task in `{'finally' if is_finally else 'tasks'}:`"
                findings.append(Finding((*loc, "needs", k), msg))
        cycle = find_cycle({n: [d for d in ds if d in own] for n, ds in deps.items()})
        if cycle:
            loc = origins[cycle[0]].loc
            findings.append(Finding((*loc, "needs"), "`needs` form a cycle: " + " -> ".join(cycle)))
        graphs[is_finally] = deps

    results = {t.name: t.results for t in pipeline.tasks}
    params = set(pipeline.params)
    arch = declared_inputs
    for key, value in pipeline.env.items():
        findings += check_references(
            value,
            ("env", key),
            params=params,
            inputs=None,
            results=results,
            visible=set(),
            task_name=None,
            archetype_inputs=arch,
        )
    everything = {t.name for t in pipeline.tasks}
    for key, value in pipeline.results.items():
        findings += check_references(
            value,
            ("results", key),
            params=params,
            inputs=None,
            results=results,
            visible=everything,
            task_name=None,
            archetype_inputs=arch,
            roots=frozenset({"params", "inputs", "tasks", "run"}),
        )
    if pipeline.concurrency is not None:
        findings += check_group(pipeline.concurrency.group, params, arch)
    for task in pipeline.tasks:
        loc = origins[task.name].loc
        texts = list(expression_texts(task, loc, template=task.name in templated))
        visible: set[str] = set()
        if any("tasks." in text for _, text in texts):
            # Only a task that names another task needs its ancestors (costly in a long chain).
            visible = ancestors(graphs[task.is_finally], task.name)
            if task.is_finally:
                visible |= main_names
        for text_loc, text in texts:
            findings += check_references(
                text,
                text_loc,
                params=params,
                inputs=None,
                results=results,
                visible=visible,
                task_name=task.name,
                archetype_inputs=arch,
            )
        if task.when is not None and not task.when.strip():
            findings.append(Finding((*loc, "when"), "`when:` is empty"))
        if problem := check_workdir(task.workdir):
            findings.append(Finding((*loc, "workdir"), problem))
        if task.name not in templated:
            for i, step in enumerate(task.steps):
                if problem := check_workdir(step.workdir):
                    findings.append(Finding((*loc, "steps", i, "workdir"), problem))
    return findings


def check_group(group: str, params: set[str], archetype_inputs: set[str] | None) -> list[Finding]:
    """A `concurrency:` group: rendered when the run is created, so params, inputs and run.pipeline only."""
    findings = list(
        check_references(
            group,
            ("concurrency", "group"),
            params=params,
            inputs=None,
            results={},
            visible=set(),
            task_name=None,
            archetype_inputs=archetype_inputs,
            roots=GROUP_ROOTS,
        )
    )
    try:
        refs = ex.template_references(group)
    except ex.ExpressionError:
        refs = []  # reported above
    for ref, offset in refs:
        if ref.path[0] == "run" and ref.path[1:] != ("pipeline",):
            findings.append(
                Finding(
                    ("concurrency", "group"),
                    f"'{'.'.join(ref.path)}': a group may use run.pipeline only (it is rendered before the run exists)",
                    offset,
                )
            )
    return findings


def referenced_secrets(pipeline: ResolvedPipeline, root: str = "secrets") -> list[str]:
    """The names of the secrets a (checked) pipeline uses as values (`root="secret_files"`: as files), each once, sorted."""
    texts = [*pipeline.env.values(), *pipeline.inputs.values()]
    for task in pipeline.tasks:
        texts += [*task.env.values(), *task.inputs.values()]
        texts += [text for step in task.steps for text in (step.run, *step.env.values())]
    return sorted(
        {ref.path[1] for text in texts for ref, _ in ex.template_references(text) if ref.path[0] == root and len(ref.path) == 2}
    )


def task_secret_files(pipeline: ResolvedPipeline, task: ResolvedTask) -> list[str]:
    """The secrets a task needs as files: named in its own texts, the pipeline's env, or an
    archetype input it uses.  Only that task's steps get those files."""
    texts = [*task.env.values(), *task.inputs.values(), *pipeline.env.values()]
    if task.uses is None:
        texts += [text for step in task.steps for text in (step.run, *step.env.values())]
    names: set[str] = set()
    for text in texts:
        for ref, _ in ex.template_references(text):
            if ref.path[0] == "secret_files" and len(ref.path) == 2:
                names.add(ref.path[1])
            elif ref.path[0] == "inputs" and len(ref.path) == 2 and ref.path[1] in pipeline.inputs:
                names.update(
                    r.path[1]
                    for r, _ in ex.template_references(pipeline.inputs[ref.path[1]])
                    if r.path[0] == "secret_files" and len(r.path) == 2
                )
    return sorted(names)


def check_template(env: dict[str, str], steps_texts: list[tuple[Loc, str]], inputs: set[str]) -> list[Finding]:
    """References inside a reusable task file may use inputs.* and run.* only."""
    findings: list[Finding] = []
    texts = [(("env", k), v) for k, v in env.items()] + steps_texts
    for loc, text in texts:
        findings += check_references(text, loc, params=set(), inputs=inputs, results={}, visible=set(), task_name=None)
    return findings
