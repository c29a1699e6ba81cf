"""Pipeline definitions as typed objects: what a `.shipline/*.yaml` file may say.

These models are the schema (`shipline schema` prints them as JSON Schema).
They check shape only; rules that span the whole pipeline (references, the
task graph) live in `graphs.py` and `checking.py`.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""Task and pipeline names: DNS-label-like, so they are safe in paths and pod names."""

VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
"""Param, input and result names."""

PATTERN_HINTS = {
    NAME_PATTERN: "lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit (e.g. build-image)",
    VAR_PATTERN: "letters, digits, '_' and '-', at most 64, starting with a letter or '_' (e.g. image_tag)",
}
"""What each name pattern means, said the way a person would: messages never show the regex."""

ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PATTERN_HINTS[ENV_PATTERN] = "letters, digits and '_', not starting with a digit (e.g. GO_FLAGS)"

_NUM = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"^(?:{_NUM}h)?(?:{_NUM}m(?!s))?(?:{_NUM}s)?(?:{_NUM}ms)?$")


def parse_duration(value: Any) -> float:
    """`90`, `90s`, `0.5s`, `5m`, `1h30m`, `250ms` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '90s', '5m', '1h30m'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())) and value.strip():
        h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s + ms / 1000
    else:
        raise ValueError(f"{value!r} is not a duration: write seconds (90) or text like '90s', '5m', '1h30m'")
    if seconds <= 0:
        raise ValueError("a duration must be more than zero")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda v: v, return_type=float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "minLength": 1, "pattern": _DURATION.pattern},
            ],
            "description": "Seconds (90), or text like '90s', '5m', '1h30m', '250ms'.",
        }
    ),
]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
VarName = Annotated[str, Field(pattern=VAR_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_PATTERN)]


def _scalar_text(value: Any) -> Any:
    """YAML gives `42` and `true` as numbers and booleans; values here are text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_text), WithJsonSchema({"type": ["string", "number", "boolean"]})]
"""Text; YAML's numbers and booleans (`depth: 1`, `push: true`) are taken as their text."""

_SCALAR_SHORTHAND = {"type": ["string", "number", "boolean", "null"]}


class _Spec(BaseModel):
    # Each field's docstring is its description in `shipline schema` (editors show it): put there
    # by `engine.loading.pipeline_schema`, which reads them from this module's source.  Pydantic's
    # `use_attribute_docstrings` would read the source at every import, a third of loading this module.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


def _or_shorthand(
    cls: type[BaseModel], core: CoreSchema, handler: GetJsonSchemaHandler, short: JsonSchemaValue, what: str
) -> JsonSchemaValue:
    """The model's object schema, or the one-value shorthand the loader also takes."""
    full = handler.resolve_ref_schema(handler(core))
    return {"anyOf": [full, {**short, "description": what}], "description": full.get("description", "")}


class Param(_Spec):
    """A value given at run time with `-p NAME=VALUE` (or by a trigger)."""

    default: Text | None = None
    """Used when no value is given; without one the param is required."""
    description: str = ""
    """What the value is for: shown when it is missing, and in the dashboard."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `greeting: hello` is short for `greeting: {default: hello}`.
        if data is None or isinstance(data, (str, int, float, bool)):
            return {"default": _scalar_text(data)} if data is not None else {}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return _or_shorthand(cls, core, handler, _SCALAR_SHORTHAND, "Short for {default: VALUE}; null: required.")

    @property
    def required(self) -> bool:
        return self.default is None


class Step(_Spec):
    """One command; the steps of a task share its working directory and run in order."""

    name: str | None = None
    """Shown in progress and logs; default: the first line of `run`."""
    run: str
    """A script. `${{ }}` inside it becomes a reference to an environment variable holding the value."""
    shell: Literal["bash", "sh"] = "bash"
    """`bash` (run as `bash -eo pipefail -c`) or `sh` (`sh -ec`)."""
    env: dict[EnvName, Text] = {}
    """Environment variables for this step only; values may use `${{ }}`."""
    workdir: str | None = None
    """Relative to the run's workspace; may not leave it."""
    timeout: Duration | None = None
    """Bounds this step; on expiry its processes are stopped and the task fails."""
    image: str | None = None
    """The container image this step runs in with the `kubernetes` executor (default: the task's
    `image:`, else the SHIPLINE_RUNNER_IMAGE setting); the `local` executor ignores it."""


class Task(_Spec):
    """A unit of the pipeline: inline `steps`, or `uses` a reusable task with `with` inputs."""

    name: Name
    """Unique in the pipeline; lower-case letters, digits and '-'."""
    needs: list[Name] | None = None
    """Tasks to wait for. Unset: the task listed before this one. `[]`: start at once."""
    when: str | None = None
    """A `${{ }}` condition; when false the task is skipped and its dependents still run."""
    env: dict[EnvName, Text] = {}
    """Environment variables for every step of the task; values may use `${{ }}`."""
    steps: list[Step] = []
    """Commands run one after another in the same working directory."""
    results: list[VarName] | dict[VarName, str] = []
    """Names the task must write to $SHIPLINE_OUTPUT (as `name=value` lines)."""
    retries: int = Field(default=0, ge=0, le=10)
    """How many times a failed attempt is tried again (0-10)."""
    timeout: Duration | None = None
    """Bounds each attempt; on expiry its processes are stopped and the attempt fails."""
    workdir: str | None = None
    """Where the task's steps start, relative to the run's workspace (a step's own `workdir` wins)."""
    image: str | None = None
    """The container image of the task's steps with the `kubernetes` executor (a step's own `image:`
    wins; default: the SHIPLINE_RUNNER_IMAGE setting); the `local` executor ignores it."""
    uses: str | None = None
    """`./path.yaml` (relative to this file) or `shipline/NAME` from the built-in catalog."""
    with_: dict[VarName, Text] = Field(default={}, alias="with")
    """Values for the inputs of the task file named by `uses`."""

    @model_validator(mode="after")
    def _steps_or_uses(self) -> Task:
        if self.uses is None and not self.steps and "steps" in self.model_fields_set:
            raise ValueError("`steps:` is empty: give the task at least one step (`- run: ...`), or `uses:` a reusable task")
        if self.uses is None and not self.steps:
            raise ValueError("a task needs `steps:` or `uses:`")
        if self.uses is not None and self.steps:
            raise ValueError("a task has either `steps:` or `uses:`, not both")
        if self.uses is None and self.with_:
            raise ValueError("`with:` goes with `uses:`")
        return self

    @property
    def result_names(self) -> list[str]:
        return list(self.results)


class TaskTemplate(_Spec):
    """A reusable task file (`uses: ./tasks/x.yaml`): steps parameterised by `inputs`."""

    name: Name | None = None
    """Informational: a task that uses this file is named by the pipeline."""
    description: str = ""
    """What the task does."""
    inputs: dict[VarName, Param] = {}
    """What `with:` gives, seen as `${{ inputs.NAME }}`; without a default an input is required."""
    env: dict[EnvName, Text] = {}
    """Environment variables for every step; values may use `${{ inputs.* }}`."""
    steps: list[Step] = Field(min_length=1)
    """Commands run one after another in the same working directory."""
    results: list[VarName] | dict[VarName, str] = []
    """Names a step must write to $SHIPLINE_OUTPUT (as `name=value` lines)."""
    retries: int = Field(default=0, ge=0, le=10)
    """Default retries for tasks that use this file (0-10)."""
    timeout: Duration | None = None
    """Default timeout for each attempt of a task that uses this file."""


class Concurrency(_Spec):
    """Runs whose rendered `group` is the same never overlap, whatever started them."""

    group: str = Field(min_length=1, max_length=200)
    """Text that may use `${{ params.* }}`, `${{ inputs.* }}` and `${{ run.pipeline }}`."""
    policy: Literal["queue", "cancel-previous"] = "queue"
    """`queue`: a new run waits until the group is free.  `cancel-previous`: it cancels the group's unfinished runs."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `concurrency: deploy-${{ params.env }}` is short for `{group: ..., policy: queue}`.
        return {"group": data} if isinstance(data, str) else data

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return _or_shorthand(cls, core, handler, {"type": "string", "minLength": 1}, "Short for {group: TEXT, policy: queue}.")


class Pipeline(_Spec):
    """A pipeline definition: params, tasks (a sequence or a DAG) and finally tasks.

    Or a whole pipeline from the catalog: `uses: shipline/NAME` with `with:` inputs.
    """

    name: Name
    """Names the pipeline's runs; lower-case letters, digits and '-'."""
    description: str = ""
    """What the pipeline does."""
    uses: str | None = None
    """An archetype: `shipline/NAME` from the catalog or `./path.yaml`; then no `tasks:`."""
    with_: dict[VarName, Text] = Field(default={}, alias="with")
    """Values for the archetype's `inputs:`."""
    inputs: dict[VarName, Param] = {}
    """Only in an archetype: what a file that `uses:` it fills with `with:` (`${{ inputs.NAME }}`)."""
    params: dict[VarName, Param] = {}
    """Values given when a run starts (`-p NAME=VALUE`, triggers, the API): `${{ params.NAME }}`."""
    env: dict[EnvName, Text] = {}
    """Environment variables for every step of every task."""
    tasks: list[Task] = []
    """Run in the order listed, unless `needs:` makes a graph."""
    finally_: list[Task] = Field(default=[], alias="finally")
    """Always run after the tasks, whether they succeeded, failed or were cancelled."""
    results: dict[VarName, str] = {}
    """The run's own results: NAME -> a template such as `${{ tasks.build.results.version }}`,
    evaluated when the run ends; one that cannot be resolved then is left out."""
    concurrency: Concurrency | None = None
    """Runs with the same rendered group never overlap: later ones wait, or cancel the earlier."""
    timeout: Duration | None = None
    """For the whole run; on expiry running tasks are stopped and the run fails."""

    @model_validator(mode="after")
    def _tasks_or_uses(self) -> Pipeline:
        if self.uses is None:
            if not self.tasks and "tasks" in self.model_fields_set:
                raise ValueError("`tasks:` is empty: give the pipeline at least one task (`- name: ...` with `steps:`)")
            if not self.tasks:
                raise ValueError("a pipeline needs `tasks:` (or `uses: shipline/NAME` for a whole pipeline from the catalog)")
            if self.with_:
                raise ValueError("`with:` goes with `uses:`")
            return self
        extra = [
            key
            for key, given in (
                ("tasks", self.tasks),
                ("finally", self.finally_),
                ("inputs", self.inputs),
                ("env", self.env),
                ("results", self.results),
            )
            if given
        ]
        if extra:
            raise ValueError(
                f"a pipeline that `uses:` another takes name, description, with, params, "
                f"concurrency and timeout; not {', '.join(extra)}"
            )
        return self


class ResolvedTask(_Spec):
    """A task ready to run: a `uses:` has been replaced by the template's steps."""

    name: Name
    needs: list[Name]
    when: str | None = None
    env: dict[str, str] = {}
    inputs: dict[str, str] = {}
    """Templates (may hold `${{ }}`) that become `inputs.*` for the template's steps."""
    steps: list[Step]
    results: list[str] = []
    retries: int = 0
    timeout: float | None = None
    workdir: str | None = None
    image: str | None = None
    is_finally: bool = False
    uses: str | None = None
    """The reusable task the steps came from; its steps see `inputs.*`, not `params.*`."""


class ResolvedPipeline(_Spec):
    """What a run executes; stored with the run so a rerun does exactly the same."""

    name: Name
    source: str = ""
    params: dict[str, Param] = {}
    inputs: dict[str, str] = {}
    """An archetype's inputs: templates (they may hold `${{ params.* }}`) seen as `inputs.*`."""
    env: dict[str, str] = {}
    tasks: list[ResolvedTask]
    results: dict[str, str] = {}
    concurrency: Concurrency | None = None
    timeout: float | None = None

    # Computed once per (immutable) pipeline: the engine asks for them per task.
    @cached_property
    def main(self) -> list[ResolvedTask]:
        return [t for t in self.tasks if not t.is_finally]

    @cached_property
    def finally_(self) -> list[ResolvedTask]:
        return [t for t in self.tasks if t.is_finally]

    @cached_property
    def _by_name(self) -> dict[str, ResolvedTask]:
        return {t.name: t for t in self.tasks}

    def task(self, name: str) -> ResolvedTask:
        return self._by_name[name]
