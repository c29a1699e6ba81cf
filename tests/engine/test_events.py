"""The engine's events: listeners and subscriptions on its bus, and their way to the server's loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from shipline.engine.events import Event, EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.server import driving
from shipline.server.driving import EngineThread

TWO_STEPS = """
name: two
tasks:
  - name: build
    steps: [{run: echo one}, {run: echo two}]
  - name: test
    needs: [build]
    steps: [{run: 'true'}]
"""


def test_a_listener_that_raises_fails_neither_the_run_nor_the_other_listeners(
    engine: Engine, write: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Event) -> None:
        raise ValueError("a listener's own bug")

    heard: list[Event] = []
    with engine.bus.listen(broken), engine.bus.listen(heard.append, kinds=frozenset({"task"})):
        with caplog.at_level(logging.ERROR, logger="shipline.engine.events"):
            record = asyncio.run(engine.drive(engine.submit(load_pipeline(write(TWO_STEPS)), {})))
    assert record.status.value == "succeeded"
    assert [(e.data["task"], e.data["status"]) for e in heard] == [
        ("build", "running"),
        ("build", "succeeded"),
        ("test", "running"),
        ("test", "succeeded"),
    ]
    assert "an event listener failed" in caplog.text and "a listener's own bug" in caplog.text
    assert not engine.bus.has_subscribers, "closed listeners are gone from the bus"


def test_the_server_loop_gets_the_kinds_its_bus_takes_in_the_order_they_came(engine: Engine, write: Callable[..., Path]) -> None:
    """Steps' events are not handed over while no one on the server's bus takes them."""
    pipeline = load_pipeline(write(TWO_STEPS))
    published: list[Event] = []
    crossed: list[Event] = []
    server_bus = EventBus()

    async def main() -> list[Event]:
        runner = EngineThread(engine, server_bus, poll_seconds=0.05)
        arrived: list[Event] = []
        done = asyncio.Event()

        def take(event: Event) -> None:
            assert asyncio.get_running_loop() is loop, "server listeners are called on the server's loop"
            arrived.append(event)
            if event.kind == "run" and event.data.get("status") == "succeeded":
                done.set()

        loop = asyncio.get_running_loop()
        hand_over = runner._publish

        def handed(batch: list[Event]) -> None:
            crossed.extend(batch)
            hand_over(batch)

        runner._publish = handed  # type: ignore[method-assign]
        with server_bus.listen(take, kinds=frozenset({"run", "task"})), engine.bus.listen(published.append):
            runner.start(loop)
            try:
                engine.submit(pipeline, {})
                runner.poke()
                await asyncio.wait_for(done.wait(), 60)
            finally:
                await asyncio.to_thread(runner.stop)
        return arrived

    arrived = asyncio.run(main())
    assert any(e.kind == "step" for e in published), "the engine did publish steps' events"
    assert arrived == [e for e in published if e.kind in ("run", "task")]
    assert crossed == arrived, "nothing else crossed to the server's loop"
    statuses = [(e.kind, e.data.get("task"), e.data["status"]) for e in arrived]
    assert statuses[0] == ("run", None, "running") and statuses[-1] == ("run", None, "succeeded")
    assert ("task", "test", "succeeded") in statuses


def test_events_waiting_to_cross_reach_the_server_loop_when_the_engine_stops(
    engine: Engine, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's events cross to the server's loop in batches (`HANDOVER_SECONDS`); a batch
    still waiting when the engine's loop stops goes then, not never."""
    monkeypatch.setattr(driving, "HANDOVER_SECONDS", 600.0)
    server_bus = EventBus()
    arrived: list[Event] = []

    async def main() -> None:
        runner = EngineThread(engine, server_bus, poll_seconds=0.05)
        with server_bus.listen(arrived.append, kinds=frozenset({"run"})):
            runner.start(asyncio.get_running_loop())
            try:
                run_id = engine.submit(load_pipeline(write(TWO_STEPS)), {})
                runner.poke()
                while not engine.store.get_run(run_id).status.done:
                    await asyncio.sleep(0.02)
                assert arrived == [], "the batch waits its HANDOVER_SECONDS"
            finally:
                await asyncio.to_thread(runner.stop)
            await asyncio.sleep(0.05)  # the server's loop takes what was handed over

    asyncio.run(main())
    assert [e.data["status"] for e in arrived] == ["running", "succeeded"]
