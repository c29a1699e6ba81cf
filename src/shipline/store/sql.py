"""`SqlStore`: runs, tasks and steps in SQLite (default) or PostgreSQL.

The engine's recorder is the only writer of run state; everything else reads.
Every write is one short transaction (or a few writes together in one: `together()`),
so a killed process leaves the store consistent up to its last completed change.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, SQLAlchemyError

from shipline.domain.runs import (
    RunRecord,
    RunStatus,
    RunTransition,
    StepRecord,
    StepStatus,
    TaskRecord,
    TaskStatus,
    Transition,
)
from shipline.exceptions import NotFound, StoreError
from shipline.files import make_private, private_dir, private_file
from shipline.store.tables import outbox_cursors, run_events, runs, servers, step_runs, task_runs

if TYPE_CHECKING:  # imported where a definition is read back (`load_spec`): listing runs needs none
    from sqlalchemy import Select

    from shipline.domain.pipelines import ResolvedPipeline

ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without a zone; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


PING_AFTER_IDLE = 1.0
"""Seconds a pooled PostgreSQL connection may rest before it is pinged on its way out of the pool.

A restarted (or failed-over) server leaves dead connections in the pool; a ping finds them and the
pool connects anew, so the next transaction works.  Pinging before every transaction (SQLAlchemy's
`pool_pre_ping`) costs a round trip per transaction: a run's recorder takes a connection every few
milliseconds, and one that was used that recently has had no time to die unnoticed.
"""


def _stamp(_dbapi_connection: Any, record: Any, *_: Any) -> None:
    record.info["rested_since"] = time.monotonic()


def _ping_after_rest(engine: Engine) -> Any:
    dialect = engine.dialect

    def ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("rested_since", 0.0) < PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and takes or makes another.
            raise DisconnectionError(f"a pooled connection is dead: {exc}") from exc

    return ping


@dataclass(frozen=True)
class _Write:
    """One row written by the recorder: an INSERT, or with `keys` an UPDATE of the row they name."""

    table: Table
    values: dict[str, Any]
    keys: tuple[str, ...] = ()
    key_values: tuple[Any, ...] = ()

    @property
    def shape(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        return self.table.name, self.keys, tuple(sorted(self.values))

    def may_touch_a_row_of(self, other: _Write) -> bool:
        """Might one of the two change a row the other writes?  (Two new rows do not.)"""
        if self.table is not other.table or not (self.keys or other.keys):
            return False
        changed, written = (self, other) if self.keys else (other, self)
        if written.keys:  # two UPDATEs: of one row only when they name the same one
            return written.keys != changed.keys or written.key_values == changed.key_values
        return all(written.values.get(k, v) == v for k, v in zip(changed.keys, changed.key_values, strict=True))

    def then(self, later: _Write) -> _Write | None:
        """This write and a `later` one of the same row as one write (the later values win), or
        None when they are not surely of one row."""
        if later.table is not self.table or not later.keys:
            return None
        if self.keys:
            same = self.keys == later.keys and self.key_values == later.key_values
        else:  # a new row, then an UPDATE that names it by its values
            same = all(k in self.values and self.values[k] == v for k, v in zip(later.keys, later.key_values, strict=True))
        return _Write(self.table, {**self.values, **later.values}, self.keys, self.key_values) if same else None

    def params(self, prefix: str = "") -> dict[str, Any]:
        return {
            **{f"{prefix}{k}": v for k, v in self.values.items()},
            **{f"{prefix}key_{k}": v for k, v in zip(self.keys, self.key_values, strict=True)},
        }


@dataclass
class _Together:
    """A `together()` block: its transaction, its outbox rows (inserted at its end) and, on
    PostgreSQL, the writes that wait for its end to go as one statement."""

    conn: Connection | None = None
    """The block's transaction, once it has one (SQLite: from the start)."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[_Write] | None = None
    """PostgreSQL: the block's writes, sent at its end as one statement (`SqlStore._one_statement`);
    None when the block has a transaction instead (SQLite, or something in it needed one)."""
    stack: ExitStack = field(default_factory=ExitStack)
    read_back: int | None = None
    """A run whose record is read in the block's transaction, after its writes (`together(read_back=...)`)."""
    record: RunRecord | None = None
    """That record, once the block has ended."""


def _private_sqlite(database: Path) -> None:
    """The database file, and so its -wal and -shm (SQLite gives them the database's mode), is 0600."""
    private_dir(database.parent)
    os.close(private_file(database, os.O_RDWR | os.O_CREAT))
    for other in (Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")):
        make_private(other)


OUTBOX_COLUMNS = ("run_id", "kind", "task", "status", "data", "created_at")
ONE_STATEMENT_PARTS = 16
"""At most this many writes, and as many outbox rows, go as one statement: a quick task's block
has two to four of each; a larger block (the ends of a fan-out's tasks saved together, a failed
fan-out's skipped tasks) goes as a transaction, where one statement would grow with the run
(PostgreSQL takes 65,535 values at most) and be built anew for each size."""
BATCHED_WRITES = 256
"""PostgreSQL: up to this many writes of a block wait for its end, and are sent there a shape at a
time (`executemany`, which psycopg pipelines: about one round trip for each shape, where a
statement each was one round trip each).  Each new write is checked against those waiting
(3.4 ms in all for 256, a fraction of a round trip a write); the writes past the bound go at once."""
MAX_STATEMENTS = 512
"""Statements kept built, by shape: a bound, though the recorder's writes come in a few shapes."""


def _processed(processors: dict[str, Callable[[Any], Any] | None], values: dict[str, Any]) -> dict[str, Any]:
    """Values as a statement sent straight to the driver takes them (`SqlStore._compiled`)."""
    return {k: v if (process := processors[k]) is None else process(v) for k, v in values.items()}


class _Compiled(NamedTuple):
    """A PostgreSQL statement as `SqlStore._compiled` builds it once, for `_send`."""

    sql: str
    """With PostgreSQL's own placeholders, `$1`, `$2`...: what psycopg sends as it is."""
    names: tuple[str, ...]
    """The values' names, in the placeholders' order."""
    processors: dict[str, Callable[[Any], Any] | None]
    """The bind processors of the values the statement is given (by name)."""
    held: dict[str, Any]
    """The values the statement holds itself (its literals), processed."""

    def bound(self, values: dict[str, Any]) -> list[Any]:
        """Its values in its placeholders' order: `values` (by name) through their bind
        processors, with the ones it holds itself."""
        given = _processed(self.processors, values)
        if self.held:
            given = {**self.held, **given}
        return [given[name] for name in self.names]


_PYFORMAT = re.compile(r"%\(([^)]+)\)s|%%")


def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """SQL compiled with `%(name)s` placeholders, with `$n` ones instead, and the names in their order."""
    order: dict[str, int] = {}

    def placeholder(found: re.Match[str]) -> str:
        if found.group(0) == "%%":
            return "%"
        return f"${order.setdefault(found.group(1), len(order) + 1)}"

    return _PYFORMAT.sub(placeholder, sql), tuple(order)


def _send(driver: Any, statement: _Compiled, values: dict[str, Any]) -> Any:
    """Execute a compiled statement on a psycopg connection with `values` (by name, not yet
    processed: `_Compiled.bound`); its cursor.

    Through a raw cursor, which takes the SQL as it is: with `%(name)s` placeholders psycopg
    parses the SQL again on every execution once it has over 50 values or 4 KB (its cache's
    bounds), as the end of a 1-task run does (51 values: 0.05 ms each time)."""
    from psycopg import RawCursor

    return RawCursor(driver).execute(statement.sql, statement.bound(values))


def _send_many(driver: Any, statement: _Compiled, rows: list[dict[str, Any]]) -> None:
    """`_send` of one statement for each of `rows` (values by name, not yet processed): in a
    pipeline, psycopg sends them without a Sync between them."""
    from psycopg import RawCursor

    RawCursor(driver).executemany(statement.sql, [statement.bound(row) for row in rows])


def _by_shape(writes: list[_Write]) -> dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[_Write]]:
    """A block's waiting writes grouped by shape, in the order each shape first came (one
    `executemany` each: no two of them write one row, `SqlStore._wait_or_send`)."""
    shapes: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[_Write]] = {}
    for write in writes:
        shapes.setdefault(write.shape, []).append(write)
    return shapes


def _outbox_row(prefix: str) -> dict[str, Any]:
    return {c: bindparam(f"{prefix}{c}", type_=run_events.c[c].type) for c in OUTBOX_COLUMNS}


MIGRATIONS = resources.files("shipline.store") / "migrations"
_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*['\"]?([\w]*)['\"]?", re.MULTILINE)


def schema_heads() -> set[str]:
    """The newest revisions, read from the migration files without importing Alembic (slow to import)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").iterdir():
        if script.name.endswith(".py"):
            for kind, value in _REVISION.findall(script.read_text()):
                (revisions if kind == "revision" else parents).add(value)
    return revisions - parents


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")


PG_NETWORK: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
"""libpq's network settings for PostgreSQL: seconds to connect; a silent peer found by keepalives
after 60 s; data unacknowledged for 60 s (in ms) ends the connection."""


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"database URL {url!r} is not valid ({exc}); write postgresql://USER@HOST:PORT/DB or sqlite:////ABSOLUTE/PATH"
            ) from exc
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.network: dict[str, int] = {}
        """The libpq network settings of PostgreSQL connections the URL leaves out (`PG_NETWORK`)."""
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            _private_sqlite(Path(parsed.database))
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # SQLite: enough pooled connections for a server's threads (API workers, the engine,
        # notifiers) to each keep one; with the default 5, a burst of requests opened and
        # closed a connection (and set its pragmas) for most transactions.
        pool: dict[str, Any] = {"pool_size": 20} if self.is_sqlite and parsed.database not in (None, "", ":memory:") else {}
        if not self.is_sqlite:
            pool["pool_use_lifo"] = True  # the connection used last goes out first: the others rest, and are pinged
            # A host that drops packets (down, firewalled, a network cut) fails a call in seconds, not the
            # kernel's two minutes (a connect) or quarter of an hour (a query); the URL's own values win.
            pool["connect_args"] = self.network = {k: v for k, v in PG_NETWORK.items() if k not in parsed.query}
        self.engine: Engine = create_engine(parsed, **pool)
        self._statements: dict[tuple[Any, ...], Any] = {}
        self._together: ContextVar[_Together | None] = ContextVar(f"shipline-store-{id(self)}", default=None)
        # PostgreSQL: a `together()` block that only writes is one statement, run without
        # BEGIN and COMMIT (one statement is a transaction of its own): one round trip.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            for moment in ("connect", "checkin"):
                event.listen(self.engine, moment, _stamp)
            event.listen(self.engine, "checkout", _ping_after_rest(self.engine))
        self._migrate()
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        database = make_url(self.url).database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        try:
            st = Path(database).stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def writable(self) -> str | None:
        """Why the store cannot take a write right now, or None when it can.

        Checks that an SQLite file is still the one opened (not deleted or
        replaced under a running process) and that a write transaction can be
        begun (not read-only, not locked for long), without changing anything.
        """
        if self._identity is not None:
            database = str(make_url(self.url).database)
            try:
                st = Path(database).stat()
            except FileNotFoundError:
                return f"the store file {database} was deleted while this process had it open; restart the process"
            if (st.st_dev, st.st_ino) != self._identity:
                return f"the store file {database} was replaced while this process had it open; restart the process"
        try:
            with self.engine.connect() as conn:
                if self.is_sqlite:  # a locked store is not ready: do not wait the writers' 30 s for it
                    conn.exec_driver_sql("PRAGMA busy_timeout=2000")
                    conn.commit()
                try:
                    conn.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"))
                finally:
                    conn.rollback()
                    if self.is_sqlite:
                        conn.exec_driver_sql("PRAGMA busy_timeout=30000")
                        conn.commit()
        except SQLAlchemyError as exc:
            return f"the store at {self._where()} cannot be written: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        return None

    def _migrate(self) -> None:
        """Bring the schema to the newest revision; cheap when it already is.

        Two processes opening a new store at once (a server and a CLI) must not
        both create the tables: the upgrade holds a lock (a file lock beside an
        SQLite database, an advisory lock in PostgreSQL) and looks again.
        """
        try:
            if self._current_revisions() == schema_heads():
                return
            with self._migration_lock(), self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(7245081)"))
                if self._current_revisions(conn) != schema_heads():
                    _upgrade(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {self._where()}: {exc.__class__.__name__}: {exc}") from exc

    def _current_revisions(self, conn: Connection | None = None) -> set[str]:
        if conn is None:
            with self.engine.connect() as fresh:
                return self._current_revisions(fresh)
        if not inspect(conn).has_table("alembic_version"):
            return set()
        return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        database = make_url(self.url).database
        if not self.is_sqlite or not database or database == ":memory:":
            yield
            return
        with os.fdopen(private_file(Path(f"{database}.migrate.lock")), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _where(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction; a database failure becomes a StoreError that names the store.

        Inside `together()`, the writes of that block share its one transaction.
        """
        shared = self._together.get()
        if shared is not None:
            yield self._in_transaction(shared)
            return
        with self._failures_named(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads that need no snapshot of their own beyond each statement's.

        On SQLite, a transaction (its reads see one snapshot).  On PostgreSQL, where each
        statement of a READ COMMITTED transaction sees its own snapshot anyway, the
        statements go without BEGIN and COMMIT: two round trips fewer per read (a run's
        record after each run, the outbox, the engine's look for queued runs).  Inside a
        `together()` block, that block's transaction, so a read sees the block's writes.
        """
        if self.is_sqlite or self._together.get() is not None:
            with self.transaction() as conn:
                yield conn
            return
        with self._failures_named(), self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def _driver(self) -> Iterator[Any]:
        """PostgreSQL: a pooled psycopg connection in autocommit mode, for statements sent straight
        to it (`_send`): each its own transaction.  Taken from the pool as it is: SQLAlchemy's
        Connection around it, which sets the isolation level through the dialect when taken and
        resets it when given back, cost twice as much (0.013 against 0.0065 ms back to back, two
        of them in a 1-task run).  One that broke (the server or the network gone) is not pooled again."""
        fairy = self.engine.raw_connection()
        driver: Any = fairy.dbapi_connection
        try:
            driver.autocommit = True
            yield driver
        finally:
            try:
                driver.autocommit = False
            except self.engine.dialect.loaded_dbapi.Error:
                fairy.invalidate()
            fairy.close()

    @contextmanager
    def _failures_named(self) -> Iterator[None]:
        """A database failure (through SQLAlchemy, or from the driver directly: `_sqlite_write`)
        becomes a StoreError that names the store."""
        try:
            yield
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise StoreError(f"the store at {self._where()} failed: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def together(self, read_back: int | None = None) -> Iterator[_Together]:
        """The store's writes made in this block (by this thread or task) go in one transaction,
        committed at its end, or none of them when it fails (a StoreError).

        The recorder saves a task's transitions that came close together at once:
        one commit instead of several, each still with its outbox row.  The block's
        outbox rows, in the order they came, are one INSERT at its end.  On PostgreSQL
        the block's writes wait for its end too, and go with the outbox rows as one
        statement (`_one_statement`): a quick task's start and end are one round trip
        to the server, where a transaction of three statements was five.  A larger block
        is a transaction, its writes sent a shape at a time (`_in_transaction`).

        `read_back`: the block's transaction also reads that run's record, after the writes (on
        PostgreSQL, in the same round trip as a block of one statement), in the block's `record`
        once it has ended; what failed to be read is not written either.  Not in a block inside
        another: there `record` stays None.
        """
        if (outer := self._together.get()) is not None:
            yield outer
            return
        shared = _Together(waiting=None if self.is_sqlite else [], read_back=read_back)
        # The block's transaction, if it has one, is committed at the end, or rolled back on an error.
        with self._failures_named(), shared.stack:
            if self.is_sqlite:
                shared.conn = shared.stack.enter_context(self.engine.begin())
            token = self._together.set(shared)
            try:
                yield shared
            finally:
                self._together.reset(token)
            self._end(shared)

    def _in_transaction(self, shared: _Together) -> Connection:
        """The block's transaction, begun now if it has none, with the writes that waited sent first:
        a shape at a time (no two of them write one row, `_wait_or_send`, so their order is free)."""
        if shared.conn is None:
            shared.conn = shared.stack.enter_context(self.engine.begin())
            shapes = _by_shape(shared.waiting or [])
            shared.waiting = None
            for writes in shapes.values():
                shared.conn.execute(self._statement(writes[0]), [w.params() for w in writes])
        return shared.conn

    def _pipelined(self, shared: _Together) -> None:
        """PostgreSQL: a block too large for one statement (the ends of a fan-out's tasks saved
        together, a failed fan-out's skipped tasks): its writes a shape at a time (`executemany`),
        its outbox rows, and the read of its record, all in one pipeline with one Sync at its end:
        one round trip and one implicit transaction (none of it is saved if any of it fails).
        In a transaction of its own that block was a round trip per shape (the first with its
        BEGIN), one for the outbox rows, one for the read and a COMMIT: five for the ends of a
        fan-out of ten."""
        read_back, found = shared.read_back, None
        with self._driver() as driver:
            with driver.pipeline():
                for shape, writes in _by_shape(shared.waiting or []).items():
                    statement = self._compiled(("pipelined", shape), partial(self._statement, writes[0]))
                    _send_many(driver, statement, [w.params() for w in writes])
                if shared.outbox:
                    _send_many(driver, self._compiled("outbox", lambda: self._outbox_insert), shared.outbox)
                if read_back is not None:
                    found = self._pg_records(driver, [read_back])
            if read_back is not None:
                shared.record = next(iter(_pg_built([read_back], found)), None)

    def _end(self, shared: _Together) -> None:
        if shared.waiting is None:
            assert shared.conn is not None
            if shared.outbox and self.is_sqlite:
                for row in shared.outbox:
                    self._sqlite_write(shared.conn, _Write(run_events, row))
            elif shared.outbox:
                shared.conn.execute(self._outbox_insert, shared.outbox)
        elif len(shared.waiting) > ONE_STATEMENT_PARTS or len(shared.outbox) > ONE_STATEMENT_PARTS:
            self._pipelined(shared)
            return
        elif shared.waiting or shared.outbox:
            statement, params = self._one_statement(shared.waiting, shared.outbox)
            with self._driver() as driver:
                if shared.read_back is None:
                    _send(driver, statement, params)
                    return
                # The statement and the read sent together, one Sync after both: one round trip, and
                # one implicit transaction (PostgreSQL runs what comes before a Sync as one).
                with driver.pipeline():
                    _send(driver, statement, params)
                    found = self._pg_records(driver, [shared.read_back])
                shared.record = next(iter(_pg_built([shared.read_back], found)), None)
                return
        if shared.read_back is not None:
            conn = self._in_transaction(shared)
            ids = [shared.read_back]
            records = (
                self._sqlite_records(conn, ids)
                if self.is_sqlite
                else _pg_built(ids, self._pg_records(conn.connection.dbapi_connection, ids))
            )
            shared.record = next(iter(records), None)

    def _write(self, write: _Write, transition: Transition | None = None) -> None:
        """Write a row, with the transition's outbox row, in one transaction (the `together()` block's)."""
        shared = self._together.get()
        if shared is None:
            with self.together():
                self._write(write, transition)
            return
        if shared.waiting is None:  # SQLite, or a block that has a transaction already
            if self.is_sqlite:
                self._sqlite_write(self._in_transaction(shared), write)
            else:
                self._in_transaction(shared).execute(self._statement(write), write.params())
        else:
            self._wait_or_send(shared, shared.waiting, write)
        if transition is not None:
            shared.outbox.append(transition.row())

    def _wait_or_send(self, shared: _Together, waiting: list[_Write], write: _Write) -> None:
        """PostgreSQL: the write waits for the block's one statement, whose parts do not see each
        other's rows.  A row written twice in the block (a run's start and end, a step's row made
        and ended) is one write of both when nothing else in the block touches that row; where two
        writes may touch one row but are not surely of the same one, the block needs a transaction;
        so does a write past BATCHED_WRITES."""
        touched = [i for i, w in enumerate(waiting) if w.may_touch_a_row_of(write)]
        if len(touched) == 1 and (merged := waiting[touched[0]].then(write)) is not None:
            waiting[touched[0]] = merged
        elif not touched and len(waiting) < BATCHED_WRITES:
            waiting.append(write)
        else:
            self._in_transaction(shared).execute(self._statement(write), write.params())

    def _sqlite_write(self, conn: Connection, write: _Write) -> int | None:
        """SQLite: the write's statement, prepared once per shape, straight to the connection's
        driver within the block's transaction.

        A quick task's block through SQLAlchemy's execution (statement cache lookup, execution
        context, result) took 0.45 ms of CPU, with its statements sent to sqlite3 0.2 ms; the
        values go through the columns' own SQLAlchemy bind processors (JSON, dates), so what is
        stored is what SQLAlchemy would store.  Returns the id of the row an INSERT made (None for an UPDATE).
        """
        sql, processors = self._sqlite_statement(write)
        values = (*(write.values[c] for c in write.shape[2]), *write.key_values)
        params = [v if process is None else process(v) for process, v in zip(processors, values, strict=True)]
        return conn.connection.dbapi_connection.execute(sql, params).lastrowid  # type: ignore[union-attr,no-any-return]

    def _sqlite_statement(self, write: _Write) -> tuple[str, list[Callable[[Any], Any] | None]]:
        key = ("sqlite", write.shape)
        built: tuple[str, list[Callable[[Any], Any] | None]] | None = self._statements.get(key)
        if built is None:
            table, dialect = write.table, self.engine.dialect
            name = dialect.identifier_preparer.quote
            columns = write.shape[2]
            if write.keys:
                where = " AND ".join(f"{name(k)} = ?" for k in write.keys)
                sql = f"UPDATE {name(table.name)} SET {', '.join(f'{name(c)} = ?' for c in columns)} WHERE {where}"
            else:
                sql = f"INSERT INTO {name(table.name)} ({', '.join(map(name, columns))}) VALUES ({', '.join('?' * len(columns))})"
            processors: list[Callable[[Any], Any] | None] = [
                table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in (*columns, *write.keys)
            ]
            built = self._statements[key] = (sql, processors)
        return built

    def _statement(self, write: _Write) -> Any:
        """The INSERT or UPDATE of a write's shape, built once: building SQLAlchemy expressions
        costs more than SQLite's commit, and the recorder writes a few rows per task."""
        statement = self._statements.get(write.shape)
        if statement is None:
            statement = self._part(write, "")
            self._statements[write.shape] = statement
        return statement

    @staticmethod
    def _part(write: _Write, prefix: str) -> Any:
        table = write.table
        values = {c: bindparam(f"{prefix}{c}", type_=table.c[c].type) for c in write.shape[2]}
        if not write.keys:
            return insert(table).values(values)
        where = (table.c[k] == bindparam(f"{prefix}key_{k}", type_=table.c[k].type) for k in write.keys)
        return update(table).where(*where).values(values)

    def _one_statement(self, writes: list[_Write], outbox: list[dict[str, Any]]) -> tuple[_Compiled, dict[str, Any]]:
        """`WITH w0 AS (UPDATE ...), w1 AS (INSERT ...), e0 AS (INSERT INTO run_events ... RETURNING id)
        INSERT INTO run_events SELECT ... FROM e0`: the block's writes and outbox rows as one
        statement, and its values by name (`_send` puts them through their bind processors).

        The parts of a WITH run in no set order, but a part that reads another's RETURNING runs
        after it: each outbox row is inserted from the one before, so their ids keep their order.
        (Not one INSERT of several VALUES: SQLAlchemy compiles that anew on each use.)  Compiled
        once per shape of block, and sent straight to the driver (as `_sqlite_write`), the values
        through the columns' own bind processors: SQLAlchemy's execution of it took a fifth of
        the block's time on a quiet machine (0.47 -> 0.37 ms a block).
        """
        values: dict[str, Any] = {}
        for i, write in enumerate(writes):
            values.update(write.params(f"w{i}_"))
        for j, row in enumerate(outbox):
            values.update({f"e{j}_{c}": row[c] for c in OUTBOX_COLUMNS})
        shape = ("together", tuple(w.shape for w in writes), len(outbox))
        statement = self._compiled(shape, lambda: self._block_statement(writes, outbox))
        if values.keys() != statement.processors.keys() or statement.held:  # a column the block leaves to SQLAlchemy (a default)
            raise AssertionError(f"the block's values {sorted(values)} are not its statement's {sorted(statement.processors)}")
        return statement, values

    def _block_statement(self, writes: list[_Write], outbox: list[dict[str, Any]]) -> Any:
        parts = [self._part(w, f"w{i}_") for i, w in enumerate(writes)]
        ctes = [part.cte(f"w{i}") for i, part in enumerate(parts)]
        if outbox:
            main = insert(run_events).values(_outbox_row("e0_"))
            for j in range(1, len(outbox)):
                before = main.returning(run_events.c.id).cte(f"e{j - 1}")
                after = select(*(value.label(c) for c, value in _outbox_row(f"e{j}_").items())).select_from(before)
                main = insert(run_events).from_select(OUTBOX_COLUMNS, after)
        else:
            main, ctes = parts[-1], ctes[:-1]
        return main.add_cte(*ctes) if ctes else main

    def _compiled(self, key: Any, statement: Callable[[], Any]) -> _Compiled:
        """PostgreSQL: a statement compiled once per `key`, for what is sent straight to the driver
        (`_one_statement`, `create_run`, `_records`) past SQLAlchemy's execution of it (`_send`)."""
        built: _Compiled | None = self._statements.get(key)
        if built is None:
            dialect = self.engine.dialect
            compiled = statement().compile(dialect=dialect)
            processors = {name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()}
            held = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
            built = _Compiled(
                *_positional(compiled.string),
                {name: process for name, process in processors.items() if name not in held},
                _processed({name: processors[name] for name in held}, held),
            )
            if len(self._statements) < MAX_STATEMENTS:
                self._statements[key] = built
        return built

    def _append(self, conn: Connection, transition: Transition) -> None:
        """The transition's outbox row, in this transaction (at its end, inside `together()`)."""
        shared = self._together.get()
        if shared is not None:
            shared.outbox.append(transition.row())
        else:
            conn.execute(self._outbox_insert, transition.row())

    def close(self) -> None:
        self.engine.dispose()

    # --- runs -------------------------------------------------------------------------

    def create_run(
        self,
        pipeline: ResolvedPipeline,
        params: dict[str, str],
        *,
        trigger: dict[str, Any] | None = None,
        rerun_of: int | None = None,
        owner: str | None = None,
        concurrency_group: str | None = None,
    ) -> int:
        """A queued run; with `owner`, already taken by that engine (so recovery finds it if the engine dies).

        A run with a `concurrency_group` does not hold it yet: `claim` decides when it may start.
        """
        now = utcnow()
        row = {
            "pipeline": pipeline.name,
            "status": RunStatus.QUEUED.value,
            "params": params,
            "spec": pipeline.model_dump(mode="json", by_alias=True),
            "source": pipeline.source,
            "message": "",
            "trigger": trigger,
            "rerun_of": rerun_of,
            "created_at": now,
            "cancel_requested": False,
            "owner": owner,
            "heartbeat_at": now if owner else None,
            "results": {},
            "concurrency_group": concurrency_group,
            "holds_group": False,
        }
        if not self.is_sqlite:  # the run, its tasks and its outbox row in one statement: one round trip, not five
            tasks = {
                "task_names": [task.name for task in pipeline.tasks],
                "task_positions": list(range(len(pipeline.tasks))),
                "task_finally": [task.is_finally for task in pipeline.tasks],
                "task_needs": [json.dumps(list(task.needs)) for task in pipeline.tasks],
            }
            statement = self._compiled("create_run", _create_run_in_one_statement)
            with self._failures_named(), self._driver() as driver:
                return int(_send(driver, statement, {**row, **tasks, "queued_at": now}).fetchone()[0])
        # SQLite: the rows go straight to the driver (`_sqlite_write`), the outbox row at the block's end.
        with self.together():
            conn = self._in_transaction(self._shared())
            run_id = self._sqlite_write(conn, _Write(runs, row))
            assert run_id is not None
            for i, task in enumerate(pipeline.tasks):
                task_row = {
                    "run_id": run_id,
                    "name": task.name,
                    "position": i,
                    "is_finally": task.is_finally,
                    "needs": task.needs,
                    "status": TaskStatus.PENDING.value,
                    "results": {},
                    "attempts": 0,
                    "message": "",
                }
                self._sqlite_write(conn, _Write(task_runs, task_row))
            self._shared().outbox.append(Transition(run_id, "run", RunStatus.QUEUED.value, at=now).row())
        return run_id

    def load_spec(self, run_id: int) -> tuple[ResolvedPipeline, dict[str, str]]:
        _check_id(run_id)
        with self.transaction() as conn:
            row = conn.execute(select(runs.c.spec, runs.c.params).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no run {run_id} (see `shipline runs list`)")
        from shipline.domain.pipelines import ResolvedPipeline

        return ResolvedPipeline.model_validate(row.spec), dict(row.params)

    def _update(
        self,
        table: Table,
        keys: tuple[str, ...],
        key_values: tuple[Any, ...],
        values: dict[str, Any],
        transition: Transition | None = None,
    ) -> None:
        """UPDATE table SET values WHERE keys = key_values; with `transition`, its outbox row in the same transaction."""
        self._write(_Write(table, values, keys, key_values), transition)

    _outbox_insert = insert(run_events).values({c: bindparam(c) for c in OUTBOX_COLUMNS})

    def add_transition(self, transition: Transition) -> None:
        """A transition's outbox row alone (its row's values are saved by a later write)."""
        with self.together():
            self._shared().outbox.append(transition.row())

    def _shared(self) -> _Together:
        """The `together()` block this code runs in."""
        shared = self._together.get()
        assert shared is not None
        return shared

    def update_run(self, run_id: int, transition: Transition | None = None, **values: Any) -> None:
        self._update(runs, ("id",), (run_id,), values, transition)

    def update_task(self, run_id: int, name: str, transition: Transition | None = None, **values: Any) -> None:
        self._update(task_runs, ("run_id", "name"), (run_id, name), values, transition)

    def start_step(
        self,
        run_id: int,
        task: str,
        attempt: int,
        index: int,
        *,
        name: str,
        log_path: str,
        started_at: datetime,
        pid: int | None,
        status: str = StepStatus.RUNNING.value,
        exit_code: int | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """A step's row; one that has ended already (its start and end saved together) is made as it ended."""
        self._write(
            _Write(
                step_runs,
                {
                    "run_id": run_id,
                    "task": task,
                    "attempt": attempt,
                    "idx": index,
                    "name": name,
                    "status": status,
                    "log_path": log_path,
                    "started_at": started_at,
                    "pid": pid,
                    "exit_code": exit_code,
                    "finished_at": finished_at,
                },
            )
        )

    def update_step(self, run_id: int, task: str, attempt: int, index: int, **values: Any) -> None:
        self._update(step_runs, ("run_id", "task", "attempt", "idx"), (run_id, task, attempt, index), values)

    # --- reading ----------------------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        _check_id(run_id)
        records = self._records([run_id])
        if not records:
            raise NotFound(f"no run {run_id} (see `shipline runs list`)")
        return records[0]

    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[RunRecord]:
        """Newest first; `before` pages backwards by id."""
        query = select(runs.c.id).order_by(runs.c.id.desc()).limit(limit)
        if pipeline:
            query = query.where(runs.c.pipeline == pipeline)
        if status:
            query = query.where(runs.c.status == status)
        if before is not None:
            query = query.where(runs.c.id < max(0, min(before, ID_MAX + 1)))
        with self.reading() as conn:
            ids = [row.id for row in conn.execute(query)]
        return self._records(ids)

    def _records(self, ids: list[int]) -> list[RunRecord]:
        if not ids:
            return []
        if self.is_sqlite:
            with self.transaction() as conn:
                return self._sqlite_records(conn, ids)
        with self.reading() as conn:
            return _pg_built(ids, self._pg_records(conn.connection.dbapi_connection, ids))

    def _pg_records(self, driver: Any, ids: list[int]) -> Any:
        """PostgreSQL: `_RECORDS_IN_ONE_STATEMENT` for runs `ids` sent to the driver; its cursor (`_pg_built` reads it).

        One run's record (the end of a run, the answer to an API call) is read by `r.id = $1`:
        PostgreSQL plans `= ANY($1)` again on every execution (its generic plan is costed above
        the custom one), 0.05-0.09 ms of the server's time a read; `= $1` keeps its generic plan
        after the fifth (0.007 ms), measured in the server's log."""
        if len(ids) == 1:
            return _send(driver, self._compiled("record", lambda: _RECORD_IN_ONE_STATEMENT), {"id": ids[0]})
        return _send(driver, self._compiled("records", lambda: _RECORDS_IN_ONE_STATEMENT), {"ids": ids})

    def _sqlite_records(self, conn: Connection, ids: list[int]) -> list[RunRecord]:
        run_rows = self._sqlite_read(conn, _RUN_ROWS, ids)
        task_rows = self._sqlite_read(conn, _TASK_ROWS, ids)
        step_rows = self._sqlite_read(conn, _STEP_ROWS, ids)
        return _built(ids, run_rows, task_rows, step_rows)

    def _sqlite_read(self, conn: Connection, query: Select[Any], ids: list[int]) -> list[Any]:
        """SQLite: one of `_records`' reads of the runs `ids`, as `_sqlite_write` writes: its SQL
        built once per number of ids and sent straight to the driver, the values through the
        columns' own result processors (JSON, dates, booleans), so the rows are what SQLAlchemy
        would hand back.  Through SQLAlchemy a run's record took 0.12 ms, 0.02 of it in sqlite3."""
        key = ("sqlite-read", id(query), len(ids))
        built: tuple[str, list[Callable[[Any], Any] | None], type] | None = self._statements.get(key)
        if built is None:
            dialect = self.engine.dialect
            compiled = query.params(ids=ids).compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
            columns = list(query.selected_columns)
            built = (
                compiled.string,
                [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns],
                namedtuple("Row", [c.name for c in columns]),
            )
            if len(self._statements) < MAX_STATEMENTS:
                self._statements[key] = built
        sql, processors, row = built
        found = conn.connection.dbapi_connection.execute(sql, ids).fetchall()  # type: ignore[union-attr]
        return [row(*(v if p is None or v is None else p(v) for p, v in zip(processors, r, strict=True))) for r in found]

    def log_paths(self, run_id: int, task: str | None = None) -> list[tuple[str, int, int, str, str]]:
        """(task, attempt, step index, step name, log path) in the order the steps ran."""
        _check_id(run_id)
        query = (
            select(step_runs.c.task, step_runs.c.attempt, step_runs.c.idx, step_runs.c.name, step_runs.c.log_path)
            .where(step_runs.c.run_id == run_id)
            .order_by(step_runs.c.started_at, step_runs.c.id)
        )
        if task is not None:
            query = query.where(step_runs.c.task == task)
        with self.transaction() as conn:
            return [(r.task, r.attempt, r.idx, r.name, r.log_path) for r in conn.execute(query)]

    # --- ownership, cancel, recovery --------------------------------------------------

    def claim(self, run_id: int, owner: str, *, ungrouped: bool = False) -> bool:
        """Take a queued run for this engine (or keep one it took at creation); False when another
        engine has it, or when its concurrency group is held by another run or an older one waits in it.

        One UPDATE decides, so two engines never both start runs of one group: SQLite has one
        writer at a time, and PostgreSQL takes a lock on the group first.  `ungrouped`: the
        caller made the run and knows it has no group, so on PostgreSQL the UPDATE goes alone,
        one round trip instead of four (BEGIN, looking for its group, the UPDATE, COMMIT).
        """
        if ungrouped and not self.is_sqlite:
            with self._failures_named(), self._autocommit.connect() as conn:
                result = conn.execute(_CLAIM, {"claim_run": run_id, "claim_owner": owner, "claim_now": utcnow()})
            return bool(result.rowcount)
        with self.transaction() as conn:
            if self.engine.dialect.name == "postgresql":
                group = conn.execute(select(runs.c.concurrency_group).where(runs.c.id == run_id)).scalar()
                if group is not None:
                    conn.execute(text("SELECT pg_advisory_xact_lock(7245082, hashtext(:g))"), {"g": group})
            result = conn.execute(_CLAIM, {"claim_run": run_id, "claim_owner": owner, "claim_now": utcnow()})
        return bool(result.rowcount)

    def group_holder(self, group: str) -> int | None:
        """The run that holds a concurrency group now, or the oldest one waiting in it."""
        with self.transaction() as conn:
            row = conn.execute(
                select(runs.c.id)
                .where(runs.c.concurrency_group == group, runs.c.status.in_(ACTIVE))
                .order_by(runs.c.holds_group.desc(), runs.c.id)
                .limit(1)
            ).first()
        return row.id if row else None

    def active_in_group(self, group: str) -> list[int]:
        """Queued and running runs of a concurrency group, oldest first."""
        with self.transaction() as conn:
            rows = conn.execute(
                select(runs.c.id).where(runs.c.concurrency_group == group, runs.c.status.in_(ACTIVE)).order_by(runs.c.id)
            )
            return [row.id for row in rows]

    def next_queued(self, limit: int) -> list[int]:
        """Queued runs no engine has taken, oldest first; runs of a busy concurrency group are held back."""
        with self.reading() as conn:
            return [row.id for row in conn.execute(_NEXT_QUEUED, {"queued_limit": limit})]

    def request_cancel(self, run_id: int) -> RunRecord:
        """Ask whichever engine owns the run to cancel it; a queued unowned run ends at once.

        Called by the recorder (`RunRecorder.request_cancel`), the one writer of run state.
        """
        _check_id(run_id)
        now = utcnow()
        with self.transaction() as conn:
            row = conn.execute(select(runs.c.status, runs.c.owner).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"no run {run_id} (see `shipline runs list`)")
            if row.status in ACTIVE:
                conn.execute(update(runs).where(runs.c.id == run_id).values(cancel_requested=True))
                if row.status == RunStatus.QUEUED.value and row.owner is None:
                    conn.execute(
                        update(runs)
                        .where(runs.c.id == run_id)
                        .values(status=RunStatus.CANCELLED.value, finished_at=now, message="cancelled before it started")
                    )
                    conn.execute(
                        update(task_runs)
                        .where(task_runs.c.run_id == run_id)
                        .values(status=TaskStatus.SKIPPED.value, message="the run was cancelled")
                    )
                    ended = Transition(run_id, "run", RunStatus.CANCELLED.value, data={"message": "cancelled before it started"})
                    self._append(conn, ended)
        return self.get_run(run_id)

    def lock_unended(self, run_id: int) -> RunRecord | None:
        """For writing the end of a run its engine did not end: the run's record with its row locked
        until the end of the `together()` block this is called in, or None when it has ended.

        Two writers of such an end (another server's recovery, an engine back from a network cut
        that ends its own run) each read, then write: both could read the run unended and write two
        ends (two commit statuses, two CDEvents).  Here the second waits for the first's commit,
        then finds the run ended.  PostgreSQL: `SELECT ... FOR UPDATE`; SQLite: the block's write
        lock taken first (it has one writer at a time).
        """
        if self._together.get() is None:
            raise AssertionError("lock_unended is called inside together(): the lock lasts until the block's end")
        _check_id(run_id)
        with self.transaction() as conn:
            if self.is_sqlite:
                conn.execute(update(runs).where(runs.c.id == run_id).values(id=runs.c.id))
            else:
                conn.execute(select(runs.c.id).where(runs.c.id == run_id).with_for_update())
        record = self.get_run(run_id)
        return None if record.status.done else record

    # --- the outbox -------------------------------------------------------------------

    def transitions_after(self, position: int, limit: int = 100, kind: str | None = None) -> list[RunTransition]:
        """Outbox rows after `position`, oldest first, with what a notifier needs of their run;
        with `kind` ("run" or "task"), only the transitions of that kind."""
        query = (
            select(run_events, runs.c.pipeline, runs.c.params, runs.c.trigger)
            .join(runs, runs.c.id == run_events.c.run_id)
            .where(run_events.c.id > position)
            .order_by(run_events.c.id)
            .limit(limit)
        )
        if kind is not None:
            query = query.where(run_events.c.kind == kind)
        with self.reading() as conn:
            rows = conn.execute(query).all()
        return [
            RunTransition(
                id=r.id,
                run_id=r.run_id,
                pipeline=r.pipeline,
                kind=r.kind,
                task=r.task,
                status=r.status,
                data=r.data or {},
                at=_utc(r.created_at),
                params=r.params or {},
                trigger=r.trigger,
            )
            for r in rows
        ]

    def lease_cursor(self, consumer: str, owner: str, seconds: float, *, take_from: str | None = None) -> int | None:
        """Take (or keep) `consumer`'s lease for `seconds`; its position, or None while another process holds it.

        `take_from`: a holder known to be dead, whose lease is taken before it runs out.
        A new consumer starts at the outbox's end: it is told of what happens from now on.
        """
        now = utcnow()
        holders = [outbox_cursors.c.lease_owner == owner] + ([outbox_cursors.c.lease_owner == take_from] if take_from else [])
        with self.transaction() as conn:
            taken = conn.execute(
                update(outbox_cursors)
                .where(
                    outbox_cursors.c.consumer == consumer,
                    or_(outbox_cursors.c.lease_owner.is_(None), outbox_cursors.c.lease_until < now, *holders),
                )
                .values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
                .returning(outbox_cursors.c.position)
            ).first()
            if taken is not None:
                return int(taken.position)
            exists = conn.execute(select(outbox_cursors.c.consumer).where(outbox_cursors.c.consumer == consumer)).first()
            if exists is not None:
                return None
            end = conn.execute(select(func.coalesce(func.max(run_events.c.id), 0))).scalar_one()
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(outbox_cursors).values(
                            consumer=consumer, position=end, lease_owner=owner, lease_until=now + timedelta(seconds=seconds)
                        )
                    )
            except IntegrityError:
                return None  # another process made it at the same moment: its lease
            return int(end)

    def lease_holder(self, consumer: str) -> str | None:
        """Who holds `consumer`'s lease, run out or not (None: nobody)."""
        with self.engine.connect() as conn:
            return conn.execute(select(outbox_cursors.c.lease_owner).where(outbox_cursors.c.consumer == consumer)).scalar()

    def advance_cursor(self, consumer: str, owner: str, position: int) -> bool:
        """Move `consumer` past `position`; False when this process no longer holds the lease."""
        with self.transaction() as conn:
            moved = conn.execute(
                update(outbox_cursors)
                .where(outbox_cursors.c.consumer == consumer, outbox_cursors.c.lease_owner == owner)
                .values(position=position)
            )
        return bool(moved.rowcount)

    def release_cursor(self, consumer: str, owner: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                update(outbox_cursors)
                .where(outbox_cursors.c.consumer == consumer, outbox_cursors.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def cancel_requests(self, run_ids: Sequence[int]) -> set[int]:
        if not run_ids:
            return set()
        with self.reading() as conn:
            rows = conn.execute(select(runs.c.id).where(runs.c.id.in_(list(run_ids)), runs.c.cancel_requested.is_(True)))
            return {row.id for row in rows}

    def heartbeat(self, owner: str) -> None:
        with self.transaction() as conn:
            conn.execute(update(runs).where(runs.c.owner == owner, runs.c.status.in_(ACTIVE)).values(heartbeat_at=utcnow()))

    def run_owner(self, run_id: int) -> str | None:
        """The engine that took the run (`host:pid:token`), kept after it ends; None while queued."""
        _check_id(run_id)
        with self.transaction() as conn:
            owner: str | None = conn.execute(select(runs.c.owner).where(runs.c.id == run_id)).scalar()
            return owner

    def register_server(self, owner: str, url: str) -> None:
        """Say where the server whose engine is `owner` can be reached (for the step logs of its runs)."""
        with self.transaction() as conn:
            conn.execute(servers.delete().where(servers.c.owner == owner))
            conn.execute(insert(servers).values(owner=owner, url=url, started_at=utcnow()))

    def server_url(self, owner: str) -> str | None:
        """Where the server of the engine `owner` said it can be reached; None for a CLI's engine, or before 0013."""
        with self.transaction() as conn:
            url: str | None = conn.execute(select(servers.c.url).where(servers.c.owner == owner)).scalar()
            return url

    def owned_active(self) -> list[tuple[int, str, datetime | None]]:
        """(run id, owner, last heartbeat) of every run some engine has taken and not finished."""
        with self.transaction() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.owner, runs.c.heartbeat_at).where(runs.c.status.in_(ACTIVE), runs.c.owner.is_not(None))
            )
            return [(row.id, row.owner, _utc(row.heartbeat_at)) for row in rows]

    def running_steps(self, run_id: int) -> list[tuple[str, int, int, int | None]]:
        with self.transaction() as conn:
            rows = conn.execute(
                select(step_runs.c.task, step_runs.c.attempt, step_runs.c.idx, step_runs.c.pid).where(
                    step_runs.c.run_id == run_id, step_runs.c.status == StepStatus.RUNNING.value
                )
            )
            return [(r.task, r.attempt, r.idx, r.pid) for r in rows]

    # --- pruning ----------------------------------------------------------------------

    def finished_runs(self, pipeline: str | None = None) -> list[tuple[int, str, datetime]]:
        """(id, pipeline, finished at) of every run that is over: what `shipline runs prune` chooses from."""
        done = [s.value for s in RunStatus if s.done]
        query = select(runs.c.id, runs.c.pipeline, runs.c.finished_at).where(
            runs.c.status.in_(done), runs.c.finished_at.is_not(None)
        )
        if pipeline:
            query = query.where(runs.c.pipeline == pipeline)
        with self.transaction() as conn:
            rows = conn.execute(query).all()
        # SQLite hands datetimes back without a zone; they were written in UTC.
        return [(r.id, r.pipeline, r.finished_at.replace(tzinfo=r.finished_at.tzinfo or UTC)) for r in rows]

    def known_runs(self, run_ids: Sequence[int]) -> set[int]:
        """Which of `run_ids` the store has a record of (in any state)."""
        ids, known = list(run_ids), set[int]()
        with self.reading() as conn:
            for start in range(0, len(ids), 1000):  # SQLite takes a bounded number of parameters
                chunk = ids[start : start + 1000]
                known.update(row.id for row in conn.execute(select(runs.c.id).where(runs.c.id.in_(chunk))))
        return known

    def delete_runs(self, run_ids: Sequence[int]) -> int:
        """Delete runs that are over, with their tasks and steps; a queued or running run is never deleted.

        The children go by ON DELETE CASCADE: PostgreSQL always honours it, and
        SQLite does because every connection turns `foreign_keys` on (`_sqlite_pragmas`).
        Returns how many runs were deleted.
        """
        if not run_ids:
            return 0
        done = [s.value for s in RunStatus if s.done]
        with self.transaction() as conn:
            result = conn.execute(runs.delete().where(runs.c.id.in_(list(run_ids)), runs.c.status.in_(done)))
        return int(result.rowcount)


_RUN_COLUMNS = (
    "pipeline", "status", "params", "spec", "source", "message", "trigger", "rerun_of", "created_at",
    "cancel_requested", "owner", "heartbeat_at", "results", "concurrency_group", "holds_group",
)  # fmt: skip
"""The columns of a new run's row (`create_run`)."""


@cache
def _create_run_in_one_statement() -> Any:
    """PostgreSQL's `create_run`: `WITH r AS (INSERT INTO runs ... RETURNING id), t AS (INSERT INTO
    task_runs SELECT ... FROM r JOIN unnest(names, positions, ...)), e AS (INSERT INTO run_events
    ...) SELECT id FROM r`.  The tasks come as one array per column, so the statement is the
    same whatever their number (built and compiled once)."""
    from sqlalchemy import Boolean, Integer, String, Text, cast, literal, null, true
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.types import JSON

    run = insert(runs).values({c: bindparam(c, type_=runs.c[c].type) for c in _RUN_COLUMNS}).returning(runs.c.id).cte("r")
    given = (
        func.unnest(
            bindparam("task_names", type_=ARRAY(String)),
            bindparam("task_positions", type_=ARRAY(Integer)),
            bindparam("task_finally", type_=ARRAY(Boolean)),
            bindparam("task_needs", type_=ARRAY(Text)),
        )
        .table_valued("name", "position", "is_finally", "needs")
        .render_derived()
    )
    tasks = insert(task_runs).from_select(
        ["run_id", "name", "position", "is_finally", "needs", "status", "results", "attempts", "message"],
        select(
            run.c.id,
            given.c.name,
            given.c.position,
            given.c.is_finally,
            cast(given.c.needs, JSON),
            literal(TaskStatus.PENDING.value),
            cast(literal("{}"), JSON),
            literal(0),
            literal(""),
        )
        .select_from(run.join(given, true()))
        .order_by(given.c.position),
    )
    queued = insert(run_events).from_select(
        list(OUTBOX_COLUMNS),
        select(
            run.c.id,
            literal("run"),
            null(),
            literal(RunStatus.QUEUED.value),
            cast(literal("{}"), JSON),
            bindparam("queued_at", type_=run_events.c.created_at.type),
        ).select_from(run),
    )
    return select(run.c.id).add_cte(tasks.cte("t"), queued.cte("e"))


_OTHER = runs.alias("other")
_GROUP_BUSY = (
    select(_OTHER.c.id)
    .where(
        _OTHER.c.concurrency_group == runs.c.concurrency_group,
        _OTHER.c.id != runs.c.id,
        or_(
            and_(_OTHER.c.holds_group.is_(True), _OTHER.c.status.in_(ACTIVE)),
            and_(_OTHER.c.status == RunStatus.QUEUED.value, _OTHER.c.id < runs.c.id),
        ),
    )
    .exists()
)
"""Another run of the same concurrency group holds it, or an older one waits in it."""

_CLAIM = (
    update(runs)
    .where(
        runs.c.id == bindparam("claim_run"),
        or_(runs.c.owner.is_(None), runs.c.owner == bindparam("claim_owner")),
        runs.c.status == RunStatus.QUEUED.value,
        or_(runs.c.concurrency_group.is_(None), ~_GROUP_BUSY),
    )
    .values(
        owner=bindparam("claim_owner"), heartbeat_at=bindparam("claim_now"), holds_group=runs.c.concurrency_group.is_not(None)
    )
)
"""`SqlStore.claim`'s UPDATE, built once: building it per call cost several times what SQLite takes to run it."""

_NEXT_QUEUED = (
    select(runs.c.id)
    .where(
        runs.c.status == RunStatus.QUEUED.value,
        runs.c.owner.is_(None),
        or_(runs.c.concurrency_group.is_(None), ~_GROUP_BUSY),
    )
    .order_by(runs.c.id)
    .limit(bindparam("queued_limit"))
)

_RECORD_COLUMNS = [c for c in runs.c if c.name != "spec"]
"""What a run record shows: every column but the definition (`load_spec` reads that), which is
the largest value of a row and would be decoded only to be thrown away."""

_RUN_ROWS = select(*_RECORD_COLUMNS).where(runs.c.id.in_(bindparam("ids", expanding=True)))
_TASK_ROWS = select(task_runs).where(task_runs.c.run_id.in_(bindparam("ids", expanding=True))).order_by(task_runs.c.position)
_STEP_ROWS = (
    select(step_runs)
    .where(step_runs.c.run_id.in_(bindparam("ids", expanding=True)))
    .order_by(step_runs.c.attempt, step_runs.c.idx)
)
"""The reads of `_records`, built once (a run's record is read after each API call that starts or changes it)."""

_RECORD_ROWS = (
    "SELECT r.id, r.pipeline, r.status, r.params, r.created_at, r.started_at, r.finished_at, r.message, r.source,"
    " r.rerun_of, r.trigger, r.results, r.concurrency_group,"
    " (SELECT json_agg(json_build_object('name', t.name, 'status', t.status, 'results', t.results,"
    "   'started_at', t.started_at, 'finished_at', t.finished_at, 'needs', t.needs, 'is_finally', t.is_finally,"
    "   'attempts', t.attempts, 'message', t.message) ORDER BY t.position)"
    "  FROM task_runs t WHERE t.run_id = r.id) AS tasks,"
    " (SELECT json_agg(json_build_object('task', s.task, 'idx', s.idx, 'name', s.name, 'attempt', s.attempt,"
    "   'status', s.status, 'exit_code', s.exit_code, 'started_at', s.started_at, 'finished_at', s.finished_at)"
    "   ORDER BY s.attempt, s.idx)"
    "  FROM step_runs s WHERE s.run_id = r.id) AS steps"
    " FROM runs r"
)
_RECORDS_IN_ONE_STATEMENT = text(_RECORD_ROWS + " WHERE r.id = ANY(:ids)")
"""PostgreSQL: `_records`' three reads as one statement (`SqlStore._records`)."""
_RECORD_IN_ONE_STATEMENT = text(_RECORD_ROWS + " WHERE r.id = :id")
"""PostgreSQL: the same, for one run (`SqlStore._pg_records`)."""


class _RecordRow(NamedTuple):
    """A row of `_RECORDS_IN_ONE_STATEMENT`, its columns in their order."""

    id: int
    pipeline: str
    status: str
    params: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: str
    source: str
    rerun_of: int | None
    trigger: dict[str, Any] | None
    results: dict[str, str] | None
    concurrency_group: str | None
    tasks: list[dict[str, Any]] | None
    steps: list[dict[str, Any]] | None


def _built(ids: list[int], run_rows: Sequence[Any], task_rows: Sequence[Any], step_rows: Sequence[Any]) -> list[RunRecord]:
    """The records of runs `ids`, in that order, from their rows (SQLite's three reads, or PostgreSQL's one)."""
    # Rows the store wrote itself, of the types the records declare: built without
    # validating them again (a page of runs is hundreds of records).
    steps: dict[tuple[int, str], list[StepRecord]] = {}
    for s in step_rows:
        steps.setdefault((s.run_id, s.task), []).append(
            StepRecord.model_construct(
                index=s.idx,
                name=s.name,
                attempt=s.attempt,
                status=StepStatus(s.status),
                exit_code=s.exit_code,
                started_at=_utc(s.started_at),
                finished_at=_utc(s.finished_at),
            )
        )
    tasks: dict[int, list[TaskRecord]] = {}
    for t in task_rows:
        tasks.setdefault(t.run_id, []).append(
            TaskRecord.model_construct(
                name=t.name,
                status=TaskStatus(t.status),
                results=t.results,
                started_at=_utc(t.started_at),
                finished_at=_utc(t.finished_at),
                needs=t.needs,
                is_finally=t.is_finally,
                attempts=t.attempts,
                message=t.message,
                steps=steps.get((t.run_id, t.name), []),
            )
        )
    by_id = {}
    for r in run_rows:
        by_id[r.id] = RunRecord.model_construct(
            id=r.id,
            pipeline=r.pipeline,
            status=RunStatus(r.status),
            params=r.params,
            created_at=_utc(r.created_at),
            started_at=_utc(r.started_at),
            finished_at=_utc(r.finished_at),
            message=r.message,
            source=r.source,
            rerun_of=r.rerun_of,
            trigger=r.trigger,
            results=r.results or {},
            concurrency_group=r.concurrency_group,
            tasks=tasks.get(r.id, []),
        )
    return [by_id[i] for i in ids if i in by_id]


_record_columns_checked = False
"""Whether `_RecordRow` was found to name the columns of `_RECORDS_IN_ONE_STATEMENT` (`_pg_built`)."""


def _pg_built(ids: list[int], found: Any) -> list[RunRecord]:
    """PostgreSQL: the records of runs `ids` from the cursor of `_RECORDS_IN_ONE_STATEMENT` (the runs'
    rows with their tasks and steps as JSON arrays: one round trip, where three SELECTs in a
    transaction were five).  The columns are checked against `_RecordRow` on the first read: both
    are this module's constants, and the cursor's description costs 9 us a read (a quarter of it)."""
    global _record_columns_checked
    if not _record_columns_checked:
        if tuple(column.name for column in found.description) != _RecordRow._fields:
            raise AssertionError(f"_RecordRow does not name the columns of _RECORDS_IN_ONE_STATEMENT: {found.description}")
        _record_columns_checked = True
    run_rows = [_RecordRow(*r) for r in found.fetchall()]
    task_rows = [
        SimpleNamespace(**{**t, "run_id": r.id, "started_at": _parsed(t["started_at"]), "finished_at": _parsed(t["finished_at"])})
        for r in run_rows
        for t in r.tasks or ()
    ]
    step_rows = [
        SimpleNamespace(**{**s, "run_id": r.id, "started_at": _parsed(s["started_at"]), "finished_at": _parsed(s["finished_at"])})
        for r in run_rows
        for s in r.steps or ()
    ]
    return _built(ids, run_rows, task_rows, step_rows)


def _parsed(value: str | None) -> datetime | None:
    """A timestamp of a JSON array built by PostgreSQL (ISO 8601, with its offset)."""
    return None if value is None else datetime.fromisoformat(value)


ID_MAX = 2**31 - 1
"""The largest id a row can have (a 32-bit INTEGER in PostgreSQL): a larger one names nothing."""


def _check_id(run_id: int) -> None:
    """A run id outside 1..ID_MAX is simply not there (and must not reach the driver, which would overflow)."""
    if not 1 <= run_id <= ID_MAX:
        raise NotFound(f"no run {run_id} (run ids are whole numbers from 1 to {ID_MAX}; see `shipline runs list`)")


def host_name() -> str:
    return socket.gethostname()
