"""The REST API under /api/v1: runs, pipelines, repositories, triggers, deliveries, secrets, tokens.

Reads need a token only when `anonymous_read` is off; every change needs an
operator token.  Errors come back as `{"error": kind, "message": ...}` with
the status each shipline error class names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from shipline.domain.graphs import levels
from shipline.domain.runs import RunRecord, RunStatus
from shipline.engine.logs import logs_elsewhere, parse_line
from shipline.exceptions import Conflict, NotFound, ShiplineError, UsageError
from shipline.files import open_regular
from shipline.server.auth import operator, reader
from shipline.server.forwarding import forward_logs
from shipline.store.repositories import Repository, Role, Token, Trigger, confine_pipeline
from shipline.store.secrets import SecretInfo
from shipline.triggers.rules import TriggerRule

router = APIRouter(prefix="/api/v1")
Reader = Annotated[Token | None, Depends(reader)]
Operator = Annotated[Token, Depends(operator)]


def _server(request: Request) -> Any:
    return request.app.state.server


# --- runs --------------------------------------------------------------------------------


class RunPage(BaseModel):
    runs: list[RunRecord]
    next_before: int | None
    """Pass as `before` to get the next (older) page; null on the last page."""


class RunDetail(RunRecord):
    levels: dict[str, int] = {}
    """Each task's depth in the task graph (0 = starts at once), for drawing it."""


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(description="Name of a pipeline of a registered repository (see GET /api/v1/pipelines).")
    params: dict[str, str] = {}


class LogLineOut(BaseModel):
    at: str
    text: str


class StepLog(BaseModel):
    task: str
    attempt: int
    step: int
    name: str
    lines: list[LogLineOut]


def detail(record: RunRecord) -> RunDetail:
    deps = {t.name: [d for d in t.needs] for t in record.tasks if not t.is_finally}
    fin = {t.name: [d for d in t.needs] for t in record.tasks if t.is_finally}
    depth = levels(deps)
    top = max(depth.values(), default=-1) + 1
    depth.update({name: top + lvl for name, lvl in levels(fin).items()})
    return RunDetail(**record.model_dump(), levels=depth)


@router.get("/runs", response_model=RunPage, tags=["runs"], summary="List runs, newest first")
def list_runs(
    request: Request,
    _: Reader,
    pipeline: str | None = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(description="Only runs with a smaller id (paging).")] = None,
) -> Response:
    store = _server(request).sql
    records = store.list_runs(pipeline=pipeline, status=status.value if status else None, limit=limit + 1, before=before)
    more = len(records) > limit
    records = records[:limit]
    return _json(RunPage(runs=records, next_before=records[-1].id if more and records else None))


def _json(model: BaseModel, status_code: int = 200) -> Response:
    """The model as the JSON answer, serialized once: a page of runs is hundreds of records,
    which FastAPI would dump, validate against `response_model` again, then serialize."""
    return Response(model.model_dump_json().encode(), status_code=status_code, media_type="application/json")


@router.post("/runs", response_model=RunDetail, status_code=201, tags=["runs"], summary="Start a run with params")
def start_run(request: Request, body: StartRun, token: Operator) -> Response:
    server = _server(request)
    pipelines = server.known_pipelines()
    if body.pipeline not in pipelines:
        known = ", ".join(sorted(pipelines)) or "none: register a repository first"
        raise NotFound(f"no pipeline {body.pipeline!r} among the registered repositories' pipelines ({known})")
    repo, pipeline = pipelines[body.pipeline]
    trigger = {"source": "api", "event": "manual", "token": token.name, "repository_name": repo.name}
    server.engine.check_secrets(pipeline)
    run_id = server.engine.submit(pipeline, body.params, trigger=trigger)
    server.runner.poke()
    server.dispatcher.notify(run_id, "queued", pipeline.name)
    server.metrics.runs_started.labels("api").inc()
    return _json(detail(server.sql.get_run(run_id)), 201)


@router.get("/runs/{run_id}", response_model=RunDetail, tags=["runs"], summary="One run, with its tasks and steps")
def show_run(request: Request, run_id: int, _: Reader) -> RunDetail:
    return detail(_server(request).sql.get_run(run_id))


@router.post("/runs/{run_id}/cancel", response_model=RunDetail, tags=["runs"], summary="Cancel a queued or running run")
def cancel_run(request: Request, run_id: int, _: Operator) -> RunDetail:
    server = _server(request)
    record = server.sql.get_run(run_id)
    if record.status.done:
        raise Conflict(f"run {run_id} already ended ({record.status.value}); nothing to cancel")
    server.cancel(run_id)
    server.dispatcher.notify(run_id)
    return detail(server.sql.get_run(run_id))


@router.post(
    "/runs/{run_id}/rerun",
    response_model=RunDetail,
    status_code=201,
    tags=["runs"],
    summary="Start the same definition again with the same params",
)
def rerun(request: Request, run_id: int, _: Operator) -> RunDetail:
    server = _server(request)
    new_id = server.engine.rerun(run_id)
    server.runner.poke()
    server.dispatcher.notify(new_id)
    return detail(server.sql.get_run(new_id))


LOG_PAGE_BYTES = 4 * 1024 * 1024
"""A page of JSON logs holds at most about this much text, whatever `limit` says."""


def _cursor(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 0
    step, _, offset = text.partition(":")
    if not (step.isdigit() and offset.isdigit()) or len(text) > 40:
        raise UsageError(f"cursor {text!r} is not one this server gave (STEP:OFFSET, from the X-Next-Cursor header)")
    return int(step), int(offset)


@router.get(
    "/runs/{run_id}/logs",
    response_model=list[StepLog],
    tags=["runs"],
    summary="Step logs so far, a page at a time (JSON), or all of them streamed as text (?format=text)",
    description=(
        "JSON: at most `limit` lines (and about 4 MiB) per answer; when more remain, the "
        "`X-Next-Cursor` header (and a `Link: rel=next`) gives the `cursor` of the next page. "
        "Text (`?format=text`): every line from `cursor` on, streamed. "
        "Follow a running run with /logs/stream. "
        "When the run's steps ran under another server sharing the store, its answer is passed on; "
        "409 when that server said nowhere where it can be reached, 502 when it does not answer."
    ),
)
def logs(
    request: Request,
    run_id: int,
    _: Reader,
    task: str | None = None,
    format: Literal["json", "text"] = "json",
    cursor: Annotated[str | None, Query(description="Where to go on from: the X-Next-Cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 5000,
) -> Response:
    server = _server(request)
    server.sql.get_run(run_id)  # 404 for an unknown run
    if elsewhere := logs_elsewhere(server.sql, server.settings.logs, run_id):
        return forward_logs(request, elsewhere, server.engine.owner)
    first, offset = _cursor(cursor)
    steps = server.sql.log_paths(run_id, task)[first:]
    if format == "text":

        def text() -> Iterator[bytes]:
            batch: list[bytes] = []
            size = 0
            for i, (task_name, _attempt, index, _name, path) in enumerate(steps):
                for line, _end in _lines(server.log_file(path), offset if i == 0 else 0):
                    piece = f"[{task_name}#{index}] {line.text}\n".encode()
                    batch.append(piece)
                    size += len(piece)
                    if size >= 256 * 1024:  # one send per batch, not per line
                        yield b"".join(batch)
                        batch, size = [], 0
            if batch:
                yield b"".join(batch)

        return StreamingResponse(text(), media_type="text/plain; charset=utf-8")
    out: list[dict[str, Any]] = []
    budget, left = LOG_PAGE_BYTES, limit
    headers: dict[str, str] = {}
    for i, (task_name, attempt, index, name, path) in enumerate(steps):
        lines: list[dict[str, str]] = []
        out.append({"task": task_name, "attempt": attempt, "step": index, "name": name, "lines": lines})
        for line, end in _lines(server.log_file(path), offset if i == 0 else 0):
            if left == 0 or budget <= 0:
                nxt = f"{first + i}:{end - line.size}"
                headers["X-Next-Cursor"] = nxt
                headers["Link"] = f'</api/v1/runs/{run_id}/logs?cursor={nxt}&limit={limit}>; rel="next"'
                break
            lines.append({"at": line.at.isoformat(), "text": line.text})
            left -= 1
            budget -= line.size
        if headers:
            break
    # Rendered here, in the worker thread: a page is megabytes of JSON, too much for the event loop.
    return Response(json.dumps(out).encode(), media_type="application/json", headers=headers)


@dataclass(frozen=True)
class _Line:
    at: datetime
    text: str
    size: int
    """Bytes it takes in the file."""


def _lines(path: Path, offset: int) -> Iterator[tuple[_Line, int]]:
    """The log's lines from `offset`, one at a time (bounded memory), each with the offset after it."""
    try:
        f = open_regular(path)
    except FileNotFoundError:
        return
    with f:
        f.seek(offset)
        pos = offset
        while raw := f.readline(MAX_LOG_LINE):
            pos += len(raw)
            parsed = parse_line(raw.decode("utf-8", errors="replace"))
            yield _Line(parsed.at, parsed.text, len(raw)), pos


MAX_LOG_LINE = 1024 * 1024


# --- pipelines ---------------------------------------------------------------------------


class PipelineOut(BaseModel):
    name: str
    repository: str
    file: str
    params: dict[str, dict[str, Any]]
    tasks: list[dict[str, Any]]
    problem: str = ""
    """Why the file could not be loaded, if it could not."""


@router.get(
    "/pipelines", response_model=list[PipelineOut], tags=["pipelines"], summary="The pipelines of registered repositories"
)
def list_pipelines(request: Request, _: Reader) -> list[PipelineOut]:
    server = _server(request)
    out = []
    for repo in server.state.list_repositories():
        if not repo.pipeline:
            out.append(
                PipelineOut(
                    name="",
                    repository=repo.name,
                    file="",
                    params={},
                    tasks=[],
                    problem="pipelines as code: the repository's .shipline/pipeline.yaml, read at each event's commit",
                )
            )
            continue
        try:
            p = server.dispatcher.pipelines.load(repo.pipeline)
        except ShiplineError as exc:
            out.append(PipelineOut(name="", repository=repo.name, file=repo.pipeline, params={}, tasks=[], problem=str(exc)))
            continue
        out.append(
            PipelineOut(
                name=p.name,
                repository=repo.name,
                file=repo.pipeline,
                params={k: v.model_dump(mode="json") for k, v in p.params.items()},
                tasks=[{"name": t.name, "needs": t.needs, "is_finally": t.is_finally, "uses": t.uses} for t in p.tasks],
            )
        )
    return out


# --- repositories and triggers -----------------------------------------------------------


class RepositoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    url: str = Field(description="Clone URL (or a path to a bare repository for `git`).")
    forge: str = Field(description="github, gitea, gitlab, or git (no webhooks: poll it).")
    secret: str = Field(default="", description="The webhook secret (GitLab: the token) set on the forge's hook.")
    pipeline: str = Field(
        default="",
        description=(
            "The pipeline file to run: a path relative to the server's pipelines folder ($SHIPLINE_PIPELINES_ROOT, "
            "default $SHIPLINE_HOME/pipelines), none outside it; empty (gitea, github): the repository's own "
            ".shipline/pipeline.yaml at each event's commit."
        ),
    )
    default_branch: str = "main"
    poll_seconds: int | None = Field(default=None, description="Poll with `git ls-remote` this often (seconds).")
    previews: bool = Field(
        default=False,
        description="Preview environments for its pull requests, deployed with the kubeconfig in secret previews-kubeconfig.",
    )
    triggers: list[TriggerRule] = []


class RepositoryOut(BaseModel):
    repository: Repository
    triggers: list[Trigger]
    has_secret: bool


def _repo_out(server: Any, repo: Repository) -> RepositoryOut:
    return RepositoryOut(repository=repo, triggers=server.state.list_triggers(repo.id), has_secret=bool(repo.secret))


@router.get("/repositories", response_model=list[RepositoryOut], tags=["repositories"])
def list_repositories(request: Request, _: Reader) -> list[RepositoryOut]:
    server = _server(request)
    return [_repo_out(server, r) for r in server.state.list_repositories()]


class PreviewOut(BaseModel):
    repository: str
    pr_number: int
    service: str
    namespace: str
    state: str
    """building | deploying | ready | failed | removed"""
    reason: str
    version: str
    image: str
    run_id: int | None
    """The run whose build is (being) deployed."""
    open: bool


@router.get(
    "/previews",
    response_model=list[PreviewOut],
    tags=["repositories"],
    summary="Preview environments of pull requests (see docs/forges.md, Preview environments)",
)
def list_previews(request: Request, _: Reader, removed: bool = False) -> list[PreviewOut]:
    from shipline.store.previews import PreviewStore

    server = _server(request)
    names = {r.id: r.name for r in server.state.list_repositories()}
    out = []
    for p in PreviewStore(server.sql).all(include_removed=removed):
        if not p.service:
            continue
        shown = p.deployed if p.state.value in ("ready", "removed") else (p.wanted or p.deployed)
        shown = shown or {}
        out.append(
            PreviewOut(
                repository=names.get(p.repository_id, ""),
                pr_number=p.pr_number,
                service=p.service,
                namespace=p.namespace,
                state=p.state.value,
                reason=p.reason,
                version=str(shown.get("version") or ""),
                image=str(shown.get("image") or ""),
                run_id=shown.get("run") if isinstance(shown.get("run"), int) else None,
                open=p.open,
            )
        )
    return out


@router.post(
    "/repositories",
    response_model=RepositoryOut,
    status_code=201,
    tags=["repositories"],
    summary="Register a repository (and its trigger rules)",
)
def add_repository(request: Request, body: RepositoryIn, _: Operator) -> RepositoryOut:
    server = _server(request)
    if not body.pipeline:
        if body.forge not in ("gitea", "github"):
            raise UsageError(
                f"forge {body.forge!r} needs a `pipeline` file: only gitea and github repositories are read through their API"
            )
        pipeline = ""
    else:
        pipeline = confine_pipeline(body.pipeline, server.settings.pipelines)  # before anything reads the file
        server.dispatcher.pipelines.load(pipeline)  # a broken file is refused now (422 with its problems), not at the first event
    repo = server.state.add_repository(
        name=body.name,
        url=body.url,
        forge=body.forge,
        secret=body.secret,
        pipeline=pipeline,
        default_branch=body.default_branch,
        poll_seconds=body.poll_seconds,
        previews=body.previews,
    )
    for rule in body.triggers:
        server.state.add_trigger(repo.id, rule)
    return _repo_out(server, repo)


@router.get("/repositories/{name}", response_model=RepositoryOut, tags=["repositories"])
def show_repository(request: Request, name: str, _: Reader) -> RepositoryOut:
    server = _server(request)
    return _repo_out(server, server.state.get_repository(name))


@router.delete("/repositories/{name}", response_model=Repository, tags=["repositories"])
def remove_repository(request: Request, name: str, _: Operator) -> Repository:
    result: Repository = _server(request).state.remove_repository(name)
    return result


@router.get("/triggers", response_model=list[Trigger], tags=["triggers"])
def list_triggers(request: Request, _: Reader) -> list[Trigger]:
    result: list[Trigger] = _server(request).state.list_triggers()
    return result


@router.post(
    "/repositories/{name}/triggers",
    response_model=Trigger,
    status_code=201,
    tags=["triggers"],
    summary="Add a trigger rule to a repository",
)
def add_trigger(request: Request, name: str, rule: TriggerRule, _: Operator) -> Trigger:
    server = _server(request)
    repo = server.state.get_repository(name)
    result: Trigger = server.state.add_trigger(repo.id, rule)
    return result


@router.delete("/triggers/{trigger_id}", response_model=Trigger, tags=["triggers"])
def remove_trigger(request: Request, trigger_id: int, _: Operator) -> Trigger:
    result: Trigger = _server(request).state.remove_trigger(trigger_id)
    return result


@router.get("/deliveries", tags=["triggers"], summary="Recent webhook, poll and cron deliveries")
def list_deliveries(request: Request, _: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    return [d.model_dump(mode="json") for d in _server(request).state.list_deliveries(limit)]


# --- secrets -----------------------------------------------------------------------------


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, description="The value; stored encrypted, never returned by any endpoint.")


@router.get("/secrets", response_model=list[SecretInfo], tags=["secrets"], summary="Secret names and times (never values)")
def list_secrets(request: Request, _: Operator) -> list[SecretInfo]:
    result: list[SecretInfo] = _server(request).engine.secrets.all()
    return result


@router.put("/secrets/{name}", response_model=SecretInfo, tags=["secrets"], summary="Create or replace a secret")
def set_secret(request: Request, name: str, body: SecretIn, _: Operator) -> SecretInfo:
    result: SecretInfo = _server(request).engine.secrets.set(name, body.value)
    return result


@router.delete("/secrets/{name}", response_model=SecretInfo, tags=["secrets"])
def delete_secret(request: Request, name: str, _: Operator) -> SecretInfo:
    result: SecretInfo = _server(request).engine.secrets.delete(name)
    return result


# --- tokens ------------------------------------------------------------------------------


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Role


class TokenCreated(BaseModel):
    token: Token
    secret: str = Field(description="The token itself: shown once, keep it.")


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["tokens"])
def create_token(request: Request, body: TokenIn, _: Operator) -> TokenCreated:
    token, plain = _server(request).state.create_token(body.name, body.role)
    return TokenCreated(token=token, secret=plain)


@router.get("/tokens", response_model=list[Token], tags=["tokens"])
def list_tokens(request: Request, _: Operator) -> list[Token]:
    result: list[Token] = _server(request).state.list_tokens()
    return result


@router.get("/whoami", tags=["tokens"], summary="The token's name and role (null without a token)")
def whoami(request: Request, token: Reader) -> dict[str, Any]:
    return {"token": token.model_dump(mode="json") if token else None, "anonymous_read": _server(request).settings.anonymous_read}
