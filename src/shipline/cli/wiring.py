"""Where the CLI chooses its parts: settings, store, executor, engine."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from shipline.engine.events import EventBus
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings, load_settings
from shipline.store.sql import SqlStore


@dataclass
class Wiring:
    """Built lazily: `shipline validate` never opens the database."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def store(self) -> SqlStore:
        return SqlStore(self.settings.database)

    @cached_property
    def engine(self) -> Engine:
        executor = LocalExecutor.from_settings(self.settings)
        return Engine(self.settings, self.store, executor, EventBus())
