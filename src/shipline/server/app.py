"""The server's edge: choose the parts (settings, store, executor, engine), wire them, serve.

One process holds the engine's worker loop, the poller, the cron scheduler,
the REST API, the webhooks, the metrics and the dashboard.  Everything is
built here and handed down; nothing reaches for a global.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from shipline import __version__
from shipline.domain.environments import Environment
from shipline.domain.pipelines import ResolvedPipeline
from shipline.engine.events import EventBus
from shipline.engine.leases import Lease
from shipline.engine.running import Engine
from shipline.exceptions import DefinitionError, NotFound, ShiplineError
from shipline.executors.choosing import make_executor
from shipline.gitops.promoting import Promoter
from shipline.gitops.reconciling import Reconciler
from shipline.gitops.syncing import Action, git_credentials_available, run_params, write_definition
from shipline.server import api, deliveries, environments, hooks, promotions, streaming
from shipline.server.auth import reader
from shipline.server.dispatching import Dispatcher
from shipline.server.driving import EngineThread
from shipline.server.guarding import Guard
from shipline.server.notifying import CommitStatuses
from shipline.server.observing import Metrics, cancel_quietly
from shipline.server.previews import Previews
from shipline.settings import Settings
from shipline.store.environments import EnvironmentStore
from shipline.store.listening import ENVIRONMENTS, RUNS, StoreListener, announce
from shipline.store.repositories import Repository, ServerStore
from shipline.store.sql import SqlStore
from shipline.triggers.events import EventKind, ForgeEvent
from shipline.triggers.polling import Poller, PollTarget
from shipline.triggers.rules import On
from shipline.triggers.scheduling import CronScheduler, Scheduled

log = logging.getLogger("shipline.server")
STATIC = Path(str(resources.files("shipline.server") / "static"))
REQUEST_THREADS = 8
"""Threads for the requests' store calls (the handlers, the token check, log reads), where anyio
gives 40: they share one GIL and, on SQLite, one writer.  In a burst of 500 POST /runs on 2 cores,
40 threads cost 23-28 ms of server CPU a run, 8 threads 22-23 ms (36-42 -> 44-46 runs/s)."""
SWAGGER = Path(str(swagger_ui_path))
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>shipline API</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


@dataclass
class Server:
    """Everything one `shipline serve` process runs, built once."""

    settings: Settings
    sql: SqlStore
    state: ServerStore
    bus: EventBus
    engine: Engine
    metrics: Metrics
    dispatcher: Dispatcher
    runner: EngineThread
    statuses: CommitStatuses
    previews: Previews
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    poller: Poller | None = None
    reconciler: Reconciler | None = None
    promoter: Promoter | None = None

    @classmethod
    def build(cls, settings: Settings) -> Server:
        sql = SqlStore(settings.database)
        bus = EventBus()
        # The engine publishes on a bus of its own loop; EngineThread hands each event to `bus`.
        engine = Engine(settings, sql, make_executor(settings), EventBus())
        state = ServerStore(sql, engine.secrets.keyring)  # one key for pipeline secrets and webhook secrets
        runner = EngineThread(engine, bus, settings.queue_poll_seconds, settings.drain_seconds)
        metrics = Metrics(state)
        dispatcher = Dispatcher(
            engine, state, bus, metrics, cancel=lambda run_id: runner.call(lambda: engine.cancel(run_id)), wake=runner.poke
        )
        statuses = CommitStatuses(settings, sql, state, owner=engine.owner)
        previews = Previews(settings, sql, state, engine.secrets, owner=engine.owner)
        return cls(settings, sql, state, bus, engine, metrics, dispatcher, runner, statuses, previews)

    def cancel(self, run_id: int) -> None:
        """Cancel on the engine's own loop: its drivers live there."""
        self.runner.call(lambda: self.engine.cancel(run_id))

    def log_file(self, path: str) -> Path:
        """A step log path from the store, refused if it points outside the logs directory."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.settings.logs.resolve()):
            raise NotFound(f"log {path} is outside {self.settings.logs}")
        return resolved

    def known_pipelines(self) -> dict[str, tuple[Repository, ResolvedPipeline]]:
        out: dict[str, tuple[Repository, ResolvedPipeline]] = {}
        for repo in self.state.list_repositories():
            if not repo.pipeline:
                continue  # pipelines as code: known only at an event's commit
            with suppress(ShiplineError):
                pipeline = self.dispatcher.pipelines.load(repo.pipeline)
                out.setdefault(pipeline.name, (repo, pipeline))
        return out

    # --- environments (GitOps) ----------------------------------------------------------

    @property
    def environments(self) -> EnvironmentStore:
        return EnvironmentStore(self.sql)

    def submit_environment(
        self, env: Environment, action: Action, revision: str, last_verified: str, extra: Mapping[str, object] | None = None
    ) -> int:
        """Queue a run of an environment's pipeline (the reconciler's, the promoter's and the API's one way in).

        `extra` goes into the run's trigger (a dry run's pull request)."""
        creds = git_credentials_available(self.settings, self.engine.secrets)
        pipeline = self.dispatcher.pipelines.load(str(write_definition(self.settings.home, env, git_credentials=creds)))
        params = run_params(action, revision=revision, last_verified=last_verified)
        trigger: dict[str, object] = {
            **(extra or {}),
            "source": "gitops",
            "environment": env.name,
            "action": action.value,
            "revision": revision,
        }
        run_id = self.engine.submit(pipeline, params, trigger=trigger)
        self.runner.poke()
        self.dispatcher.notify(run_id, "queued", pipeline.name)
        return run_id

    def poke_environments(self, names: Sequence[str]) -> None:
        """These environments' branches moved: the GitOps controller looks at once, in whichever replica holds its lease."""
        if self.reconciler is not None:
            self.reconciler.poke(names)
        try:
            announce(self.sql, ENVIRONMENTS, names)
        except Exception as exc:  # the others find the new head at their next poll
            log.warning("other servers not told of a moved branch", extra={"environments": list(names), "error": str(exc)})

    # --- what the poller and the scheduler need -----------------------------------------

    def poll_targets(self) -> list[PollTarget]:
        return [
            PollTarget(r.id, r.name, r.url, r.default_branch, float(r.poll_seconds))
            for r in self.state.list_repositories()
            if r.poll_seconds
        ]

    def on_poll(self, target: PollTarget, event: ForgeEvent, delivery: str) -> None:
        repo = self.state.get_repository(str(target.id))
        outcome = self.dispatcher.dispatch(repo, event, "poll", delivery)
        self.metrics.deliveries.labels("poll", outcome.result).inc()

    def schedules(self) -> list[Scheduled]:
        return [Scheduled(t.id, t.rule.cron) for t in self.state.list_triggers() if t.rule.on is On.SCHEDULE and t.rule.cron]

    def on_schedule(self, entry: Scheduled, when: datetime) -> None:
        trigger = self.state.get_trigger(entry.key)
        repo = self.state.get_repository(str(trigger.repository_id))
        branch = trigger.rule.branches[0] if trigger.rule.branches else repo.default_branch
        if branch == ":default":
            branch = repo.default_branch
        event = ForgeEvent(
            forge="cron",
            kind=EventKind.SCHEDULE,
            repo_urls=(repo.url,),
            repo_name=repo.name,
            default_branch=repo.default_branch,
            branch=branch,
            extra={"due": when.isoformat()},
        )
        rules = self.state.list_triggers(repo.id)
        index = next(i for i, t in enumerate(rules) if t.id == trigger.id)
        outcome = self.dispatcher.dispatch(repo, event, "cron", f"{trigger.id}:{when.isoformat()}", (index, trigger.rule))
        self.metrics.deliveries.labels("cron", outcome.result).inc()

    # --- life ---------------------------------------------------------------------------

    def _triggers(self, started: threading.Event, stop: threading.Event) -> None:
        """The poller and the scheduler, on a loop of their own: what they do (git, SQL, YAML) blocks."""

        async def main() -> None:
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)), daemon=True).start()
            assert self.poller is not None
            scheduler = CronScheduler(self.schedules, self.on_schedule, self.settings.poll_tick_seconds)
            started.set()
            await asyncio.gather(self.poller.run(done), scheduler.run(done))

        try:
            asyncio.run(main())
        except Exception:
            log.exception("the poller and scheduler stopped")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.stopping = asyncio.Event()
        self.dispatcher.loop = asyncio.get_running_loop()
        self.poller = Poller(self.poll_targets, self.state, self.on_poll, self.settings.poll_tick_seconds)
        self.reconciler = Reconciler(
            self.sql,
            self.environments,
            self.engine.secrets,
            self.engine.workspace,
            self.submit_environment,
            poll_seconds=self.settings.env_poll_seconds,
            tick=self.settings.poll_tick_seconds,
            lease=Lease(self.sql, "gitops-controller", self.engine.owner),
        )
        self.promoter = Promoter(
            self.settings,
            self.sql,
            self.engine.owner,
            submit_check=lambda env, head, extra: self.submit_environment(env, Action.DIFF, head, "", extra),
            poke=self.poke_environments,
        )
        # Timed on the engine's thread, where its events are published: they need not cross to this loop.
        listeners = [self.metrics.watch(self.engine.bus)]
        # Before its engine runs anything: the other servers pass requests for its runs' step logs on to here.
        await asyncio.to_thread(self.sql.register_server, self.engine.owner, self.settings.peer_url)
        self.runner.start(asyncio.get_running_loop())
        # PostgreSQL: runs queued by other replicas or the CLI, and groups freed there, wake the engine at
        # once; a branch that another replica heard has moved wakes the GitOps controller.
        elsewhere = None
        if not self.sql.is_sqlite:
            reconciler = self.reconciler
            elsewhere = StoreListener(
                self.sql,
                {RUNS: lambda _: self.runner.poke(), ENVIRONMENTS: lambda name: reconciler.poke([name])},
                on_listening=self.runner.poke,
            )
            elsewhere.start(timeout=0)  # listening follows in its thread; the poll covers the moments before
        stop, started = threading.Event(), threading.Event()
        triggers = threading.Thread(target=self._triggers, args=(started, stop), name="shipline-triggers", daemon=True)
        triggers.start()
        await asyncio.to_thread(started.wait, 30)
        environments_stop = asyncio.Event()
        # These end by themselves once told to stop; they work in threads, which
        # must be done with the store before it is closed (a cancel does not stop a thread).
        finishing = [
            asyncio.create_task(self.statuses.follow(self.bus, self.stopping, self.settings.poll_tick_seconds)),
            asyncio.create_task(self.previews.follow(self.bus, self.stopping, self.settings.poll_tick_seconds)),
            asyncio.create_task(self.reconciler.run(environments_stop)),
            asyncio.create_task(self.promoter.follow(self.bus, self.stopping, self.settings.poll_tick_seconds)),
        ]
        listeners.append(self.reconciler.follow(self.bus))
        self.ready = True
        log.info("server ready", extra={"version": __version__, "database": self.sql._where(), "home": str(self.settings.home)})
        try:
            yield
        finally:
            self.ready = False
            stop.set()
            environments_stop.set()
            if elsewhere is not None:
                await asyncio.to_thread(elsewhere.stop)
            # The engine before the notifiers: what the runs that end while it drains
            # (drain_seconds) wait for, a commit status, a pull request, goes out from here.
            await asyncio.to_thread(self.runner.stop)
            self.stopping.set()
            await asyncio.to_thread(triggers.join, 30)
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*finishing, return_exceptions=True), 30)
            for task in finishing:
                await cancel_quietly(task)
            for listener in listeners:
                listener.close()
            self.sql.close()
            log.info("server stopped")


def create_app(settings: Settings, server: Server | None = None) -> FastAPI:
    server = server or Server.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
        async with server.running():
            yield

    app = FastAPI(
        title="shipline",
        version=__version__,
        description=(
            "The shipline server: pipeline runs, repositories and their trigger rules, webhooks, "
            "live logs.  Reads work without a token unless `anonymous_read` is off; every change "
            "needs an operator token (`Authorization: Bearer ...`, made with `shipline tokens create`)."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.server = server
    app.add_middleware(Guard)

    @app.exception_handler(ShiplineError)
    async def shipline_error(_: Request, exc: ShiplineError) -> JSONResponse:
        body: dict[str, object] = {"error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, DefinitionError):
            body["problems"] = [str(p) for p in exc.problems]
        return JSONResponse(body, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "UsageError", "message": "; ".join(problems), "problems": problems}, status_code=422)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        # On the event loop itself, not in the worker threads: busy workers must not make it look dead.
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Ready for work: store reachable, engine running")
    def readyz() -> JSONResponse:
        problems = []
        if not server.ready:
            problems.append("starting or stopping")
        if not server.runner.alive:
            problems.append("the engine's worker loop has stopped; see the server log")
        try:
            if (why := server.sql.writable()) is not None:
                problems.append(why)
        except Exception as exc:  # any driver error means not ready
            problems.append(f"store unreachable: {exc.__class__.__name__}")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (a read: needs a token unless anonymous_read)",
        dependencies=[Depends(reader)],
    )
    def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(hooks.router)
    app.include_router(streaming.router)
    app.include_router(api.router)
    app.include_router(environments.router)
    app.include_router(promotions.router)
    app.include_router(deliveries.router)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI, served from the package (an air-gapped server has no CDN)."""
        return HTMLResponse(DOCS_PAGE)

    app.mount("/api/docs/assets", StaticFiles(directory=SWAGGER), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
