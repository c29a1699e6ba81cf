"""Delivering CDEvents to subscribers: CloudEvents over HTTP, at least once, retried with backoff.

Each event goes in the CloudEvents HTTP *binary* content mode (the mode the
CDEvents binding's examples use): the attributes in `ce-*` headers, the whole
CDEvent as the `application/json` body.  A delivery is retried on a connection
error, a timeout, 408, 429 and 5xx, up to `attempts` tries with exponential
backoff; every try of one event carries the same `ce-id`, so a subscriber that
saw it already can drop the copy.  Other 4xx are final: the subscriber said no.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from shipline.domain.artifacts import is_loopback
from shipline.domain.cdevents import CDEvent
from shipline.integrations.tools import Echo

RETRYABLE = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Delivery:
    """What became of one event at one subscriber."""

    event_id: str
    type: str
    subject: str
    url: str
    delivered: bool
    attempts: int
    status: int | None
    """The subscriber's last HTTP status; None when it never answered."""
    error: str = ""


@dataclass(frozen=True)
class Retry:
    attempts: int = 5
    backoff: float = 1.0
    """Seconds before the second try; doubled for each further one."""
    max_backoff: float = 30.0
    timeout: float = 10.0
    """Per request."""

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * (2 ** (attempt - 1))))


def envelope(event: CDEvent) -> tuple[dict[str, str], bytes]:
    """Headers and body of the binary-mode HTTP request for one CDEvent."""
    cloud = CloudEvent(
        attributes={
            "specversion": "1.0",
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "time": event.timestamp,
            "datacontenttype": "application/json",
        },
        data=event.data,
    )
    message = to_binary_event(cloud)
    return dict(message.headers), message.body


def deliver(
    events: Sequence[CDEvent],
    urls: Sequence[str],
    *,
    retry: Retry,
    echo: Echo,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> list[Delivery]:
    """Send each event to each URL in order; return what happened to every (event, URL) pair."""
    results: list[Delivery] = []
    for url in urls:
        # A subscriber on loopback is never reached through a proxy.
        local = is_loopback(httpx.URL(url).host)
        with httpx.Client(timeout=retry.timeout, transport=transport, follow_redirects=False, trust_env=not local) as client:
            for event in events:
                results.append(_deliver_one(client, event, url, retry, echo, sleep))
    return results


def _deliver_one(
    client: httpx.Client, event: CDEvent, url: str, retry: Retry, echo: Echo, sleep: Callable[[float], None]
) -> Delivery:
    headers, body = envelope(event)
    status: int | None = None
    error = ""
    for attempt in range(1, retry.attempts + 1):
        try:
            response = client.post(url, headers=headers, content=body)
            status, error = response.status_code, ""
            if response.is_success:
                echo(f"delivered {event.type} {event.subject} to {url}: HTTP {status} (attempt {attempt})")
                return Delivery(event.id, event.type, event.subject, url, True, attempt, status)
            error = f"HTTP {status} {response.reason_phrase}".strip()
            final = status < 500 and status not in RETRYABLE
        except httpx.TransportError as exc:
            status, error, final = None, f"{exc.__class__.__name__}: {exc}", False
        if final or attempt == retry.attempts:
            echo(f"not delivered {event.type} to {url}: {error} (attempt {attempt} of {retry.attempts}, giving up)")
            return Delivery(event.id, event.type, event.subject, url, False, attempt, status, error)
        wait = retry.delay(attempt)
        echo(f"retrying {event.type} to {url} in {wait:g}s: {error} (attempt {attempt} of {retry.attempts})")
        sleep(wait)
    raise AssertionError("unreachable: the loop returns on its last attempt")
