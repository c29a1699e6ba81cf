"""Where the CLI chooses its parts: settings, store, executor, engine.

Each part is built (and its modules imported) on first use: `shipline validate`
never opens the database, and `shipline step ...` inside a pipeline's step
never imports the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from shipline.settings import Settings, load_settings

if TYPE_CHECKING:
    from shipline.engine.running import Engine
    from shipline.store.sql import SqlStore


@dataclass
class Wiring:
    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def store(self) -> SqlStore:
        from shipline.store.sql import SqlStore

        return SqlStore(self.settings.database)

    @cached_property
    def engine(self) -> Engine:
        from shipline.engine.events import EventBus
        from shipline.engine.running import Engine
        from shipline.executors.choosing import make_executor

        return Engine(self.settings, self.store, make_executor(self.settings), EventBus())

    def recover(self) -> None:
        """Finish what dead engines left (`Engine.recover`), building the engine only when some
        run has a dead owner: `runs list` and `runs show` then import no engine at all."""
        from datetime import UTC, datetime

        from shipline.engine.processes import owner_alive

        moment = datetime.now(UTC)
        if any(not owner_alive(owner, heartbeat, moment) for _, owner, heartbeat in self.store.owned_active()):
            self.engine.recover()
