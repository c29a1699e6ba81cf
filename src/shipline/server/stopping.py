"""How `shipline serve` stops: uvicorn's server, and told twice, it stops waiting for its runs."""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType

import uvicorn


class Server(uvicorn.Server):
    """A first SIGTERM or Ctrl-C stops the server (its runs get `drain_seconds` to end); a second
    one while it stops cancels the runs it still waits for."""

    def __init__(self, config: uvicorn.Config, again: Callable[[], None]) -> None:
        super().__init__(config)
        self.again = again

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.again()
        super().handle_exit(sig, frame)
