"""How `shipline serve` stops: uvicorn's server, draining the engine's runs first.

Told to stop (SIGTERM, Ctrl-C) with `drain_seconds` set, the server stops starting runs and
gives those it drives that long to end, while it goes on answering HTTP (`/readyz` says 503,
so a load balancer sends requests elsewhere; the dashboard still shows the runs going on);
then it stops as uvicorn does.  Told again meanwhile, it cancels those runs and stops at once.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from shipline.server.app import Server as Shipline

log = logging.getLogger("shipline.server")


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, shipline: Shipline) -> None:
        super().__init__(config)
        self.shipline = shipline
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining or self.should_exit:  # told again: stop waiting for the runs
            self.shipline.runner.hurry()
        elif self.shipline.settings.drain_seconds > 0:
            self.draining = True
            self.shipline.ready = False
            log.info("draining: no new run starts here; HTTP is answered until the runs end (stop again to cancel them)")
            threading.Thread(target=self._drain, name="shipline-drain", daemon=True).start()
            return
        super().handle_exit(sig, frame)

    def _drain(self) -> None:
        self.shipline.runner.stop()  # back once its runs have ended, or were cancelled
        self.should_exit = True
