"""What an operator watches: Prometheus metrics and structured (JSON) log lines.

Metrics live in a registry per app, so two servers in one process (tests)
never share counters.  Run counts are read from the store at scrape time, so
they are right even for runs made by another process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import unquote_plus

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shipline.engine.events import Event, EventBus, Listener
from shipline.gitops.measuring import dora
from shipline.settings import Settings
from shipline.store.repositories import ServerStore

log = logging.getLogger("shipline.server")

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}
"""A record's own attributes (and uvicorn's coloured copy of its message): the rest came with `extra=`."""


def _extras(record: logging.LogRecord) -> dict[str, object]:
    """The fields a call gave with `extra=` (environment, run, error...)."""
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
        for key, value in vars(record).items()
        if key not in _RESERVED and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every `extra=` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """A line for a terminal: time, level, logger, message, then the `extra=` fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = [f"{key}={_text(value)}" for key, value in _extras(record).items()]
        return " ".join([line, *fields])


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


_QUERY_PARAM = re.compile(r"([?&;])([^=&\s\"?#]*)(=)([^&\s\"#]*)")


def redact_tokens(text: str) -> str:
    """Every `token=` value in the URLs of `text` as ***, however its name is spelled (`%74oken`, `t%6Fken`, `TOKEN`)."""
    if "=" not in text:
        return text

    def hide(m: re.Match[str]) -> str:
        name = unquote_plus(m.group(2)).strip().lower()
        return f"{m.group(1)}{m.group(2)}=***" if name == "token" else m.group(0)

    return _QUERY_PARAM.sub(hide, text)


class RedactTokens(logging.Filter):
    """EventSource sends its API token as `?token=`: keep it out of access logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_tokens(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactTokens())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    for name in ("shipline", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(settings.log_level.upper())


class _RunCounts(Collector):
    def __init__(self, state: ServerStore) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        counts = self.state.count_runs()
        runs = GaugeMetricFamily("shipline_runs", "Runs in the store, by status.", labels=["status"])
        for status, n in sorted(counts.items()):
            runs.add_metric([status], n)
        yield runs
        queue = GaugeMetricFamily("shipline_queue_depth", "Runs queued and not yet started.")
        queue.add_metric([], counts.get("queued", 0))
        yield queue


DORA_WINDOW_DAYS = 30
"""`/metrics` shows DORA's keys over the last 30 days (the API and CLI offer 7, 30 and 90)."""


class _Dora(Collector):
    """DORA's four keys, computed from the store at scrape time (environment history and promotions).

    One sample per environment (`service=""`), per service (`environment=""`)
    and for everything (both empty).  Times are summaries with quantiles 0.5
    and 0.9, present only when there was at least one.
    """

    def __init__(self, state: ServerStore) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        result = dora(self.state.sql, DORA_WINDOW_DAYS)
        labels = ["environment", "service"]
        window = f"over the last {DORA_WINDOW_DAYS} days"
        deployments = GaugeMetricFamily("shipline_dora_deployments", f"Deployments (verified syncs) {window}.", labels=labels)
        frequency = GaugeMetricFamily(
            "shipline_dora_deployment_frequency_per_day", f"Deployments per day {window}.", labels=labels
        )
        changes = GaugeMetricFamily("shipline_dora_changes", f"Syncs that applied a change {window}.", labels=labels)
        failed = GaugeMetricFamily(
            "shipline_dora_failed_changes", f"Changes that failed verification or were rolled back {window}.", labels=labels
        )
        rate = GaugeMetricFamily(
            "shipline_dora_change_failure_rate", f"Failed changes / changes {window} (absent without changes).", labels=labels
        )
        lead = GaugeMetricFamily(
            "shipline_dora_lead_time_seconds", f"Commit to verified, median and p90 {window}.", labels=[*labels, "quantile"]
        )
        restore = GaugeMetricFamily(
            "shipline_dora_time_to_restore_seconds",
            f"Failed sync to the next verified one, median and p90 {window}.",
            labels=[*labels, "quantile"],
        )
        unrestored = GaugeMetricFamily(
            "shipline_dora_unrestored_failures", "Failures not restored yet (at most one per environment).", labels=labels
        )
        for m in [result.overall, *result.environments, *result.services]:
            key = [m.environment, m.service]
            deployments.add_metric(key, m.deployments)
            frequency.add_metric(key, m.deployment_frequency)
            changes.add_metric(key, m.changes)
            failed.add_metric(key, m.failed_changes)
            if m.change_failure_rate is not None:
                rate.add_metric(key, m.change_failure_rate)
            for family, times in ((lead, m.lead_time), (restore, m.time_to_restore)):
                if times.median_seconds is not None and times.p90_seconds is not None:
                    family.add_metric([*key, "0.5"], times.median_seconds)
                    family.add_metric([*key, "0.9"], times.p90_seconds)
            unrestored.add_metric(key, m.unrestored)
        yield from (deployments, frequency, changes, failed, rate, lead, restore, unrestored)


class Metrics:
    def __init__(self, state: ServerStore) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_RunCounts(state))
        self.registry.register(_Dora(state))
        self.deliveries = Counter(
            "shipline_webhook_deliveries",
            "Webhook deliveries received, by forge and what came of them "
            "(started, ignored, duplicate, ping, unauthorized, unknown_repository, bad_request, error).",
            ["forge", "result"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "shipline_task_duration_seconds",
            "How long tasks took, from start to end, by final status.",
            ["status"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.runs_started = Counter(
            "shipline_runs_triggered",
            "Runs created by the server, by source (webhook forge, poll, cron, api).",
            ["source"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def watch(self, bus: EventBus) -> Listener:
        """Time tasks from the engine's events: started -> finished (until the listener is closed).

        Called on the thread that publishes (the engine's): the histogram takes its own lock."""
        started: dict[tuple[int, str], datetime] = {}

        def timed(event: Event) -> None:
            key = (event.run_id, str(event.data.get("task")))
            status = str(event.data.get("status"))
            if status == "running":
                started.setdefault(key, event.at)
            elif key in started:
                self.task_seconds.labels(status).observe((event.at - started.pop(key)).total_seconds())

        return bus.listen(timed, kinds=frozenset({"task"}))


async def cancel_quietly(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
