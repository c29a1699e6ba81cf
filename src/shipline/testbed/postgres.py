"""A throwaway PostgreSQL server on 127.0.0.1, from Debian's package.

For the test suite and the benchmarks: `initdb` into a temporary directory,
start on a free port with fsync off (listening on 127.0.0.1 and on a Unix-domain
socket in its folder), remove everything on exit.  The server
runs as the `postgres` user when we are root (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from shipline.exceptions import ToolError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    def __init__(self, max_connections: int = 300) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise ToolError("PostgreSQL is not installed: run `shipline testbed build` (it installs Debian's postgresql)")
        self.bindir = Path(bins[-1]).parent
        self.max_connections = max_connections
        self.port = _free_port()
        # Not under a private tmp dir: the server runs as `postgres` and must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="shipline-pg-"))
        self.as_pg: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_pg = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        """The admin URL of the server (no database part)."""
        return f"postgresql+psycopg://shipline@127.0.0.1:{self.port}"

    def _pg(self, *args: str) -> None:
        done = subprocess.run([*self.as_pg, *args], capture_output=True, text=True)
        if done.returncode != 0:
            detail = done.stderr.strip() or done.stdout.strip()
            raise ToolError(f"{Path(args[0]).name} {args[1]} failed ({done.returncode}): {detail}")

    def start(self) -> ThrowawayPostgres:
        try:
            self._pg(str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-A", "trust", "-U", "shipline", "--no-sync")
            self._serve()
        except BaseException:
            self.stop()  # a server that did not start leaves no data folder behind
            raise
        return self

    def _serve(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections={self.max_connections}"
        )
        data = str(self.root / "data")
        self._pg(str(self.bindir / "pg_ctl"), "-D", data, "-l", str(self.root / "log"), "-w", "start", "-o", options)

    def restart(self) -> None:
        """Stop the server at once (its clients' connections die) and start it again, data kept."""
        self._pg(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        self._serve()

    def create_database(self, socket: bool = False) -> str:
        """A fresh, empty database; returns its URL: over TCP to 127.0.0.1, or with `socket` through
        the server's Unix-domain socket, as a client on the server's machine reaches it by default
        (`psql` with no host): a round trip there took 0.02 ms where TCP's took 0.07."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        if socket:
            return f"postgresql+psycopg://shipline@/{name}?host={self.root}&port={self.port}"
        return f"{self.url}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [*self.as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()
