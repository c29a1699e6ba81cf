"""`shipline serve`: the long-running server (webhooks, API, dashboard, engine, poller, cron)."""

from __future__ import annotations

import signal
import sys
from contextlib import suppress
from types import FrameType

import click

from shipline.cli.wiring import Wiring


@click.command()
@click.option("--host", help="Address to listen on [default: settings `host`, 127.0.0.1]; 0.0.0.0 for every interface.")
@click.option("--port", type=click.IntRange(1, 65535), help="TCP port [default: settings `port`, 8080].")
@click.pass_obj
def serve(wiring: Wiring, host: str | None, port: int | None) -> None:
    """Run the server: webhooks in, runs out, dashboard and API to watch them.

    \b
    What it serves:
      /                     the dashboard (runs, run pages with live logs, repositories)
      /api/v1/...           the REST API, described at /openapi.json (browse /api/docs)
      /hooks/github         webhooks: also /hooks/gitea and /hooks/gitlab
      /metrics              Prometheus metrics; /healthz and /readyz for probes

    \b
    First steps:
      shipline tokens create --name me --role operator     # keep the printed token
      shipline repos add app https://forge.example/o/app.git --forge gitea \\
          --pipeline .shipline/pipeline.yaml --secret-env APP_HOOK_SECRET
      shipline serve --host 0.0.0.0 --port 8080

    Settings come from $SHIPLINE_HOME/config.toml (or $SHIPLINE_CONFIG) and
    SHIPLINE_* variables; a bad value stops the server before it listens,
    naming the setting.  The server's log is JSON lines on stderr
    (log_format = "text" for a terminal).

    Told to stop (SIGTERM, Ctrl-C), it cancels the runs it drives; with
    SHIPLINE_DRAIN_SECONDS=600 it starts no new one and lets them end first, for
    up to that long (a restart for an upgrade need not cancel a deploy); told
    again, it cancels them at once.
    """
    import uvicorn

    from shipline.server.app import create_app
    from shipline.server.observing import configure_logging
    from shipline.server.stopping import Server

    settings = wiring.settings
    updates: dict[str, object] = {}
    if host:
        updates["host"] = host
    if port:
        updates["port"] = port
    settings = settings.model_copy(update=updates)
    configure_logging(settings)
    # The event loop shares the GIL with the engine's thread and the request workers; a shorter
    # switch interval (default 5 ms) lets it answer /healthz and small requests while they are busy.
    sys.setswitchinterval(0.001)
    app = create_app(settings)
    # uvicorn stops gracefully on SIGTERM, then raises it again: with the default action that ends
    # the process at once, before its exit handlers (the engine's cgroup folder) and finalizers
    # (lightkube's certificate files) run.  Here it ends as a normal exit.
    signal.signal(signal.SIGTERM, _stopped)
    # Keep idle connections longer than a reverse proxy typically does (nginx: 60s), so a proxy never
    # sends a request down a connection the server has just closed.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=True,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=75,
    )
    server = Server(config, app.state.server)
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as `uvicorn.run`: the port taken, the app's start failed (logged)
        sys.exit(3)


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
