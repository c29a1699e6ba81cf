"""The step server: `shipline step` commands run in forked copies of one warm process.

Started by the local executor the first time a step calls `shipline step`, as
`python -m shipline.cli.stepserver LISTENER ALIVE CLIENT` with two inherited file
descriptors: the listening socket (an abstract Unix socket, named in the steps'
$SHIPLINE_STEP_SOCKET) and the read end of a pipe that the engine holds open
while it lives; CLIENT is the folder of the steps' `shipline` (removed when the
server ends).  That `shipline` (stepclient.c, or `shipline.launch`) sends a
request (arguments, working folder, environment, and its stdin/stdout/stderr as
descriptors); the server forks, and
the copy takes the caller's place: its cgroup (so the step's end, timeout or
cancel kills it with the step), its folder, environment and streams, then runs
the command and exits with its code, which goes back to the caller.

- Single-threaded, so a fork never copies a lock held by another thread.
- A command's first call imports what it needs in its copy, and tells the
  server which modules those were; the server imports them before the
  command's second call (and freezes them out of the collector): from then on
  each call starts with them in place.  No import is paid twice.
- A caller that goes away (killed with its step) takes its command with it:
  SIGTERM to the copy's session, SIGKILL after the grace period.
- When the engine's process ends, however it ends, the pipe reads EOF: the
  server kills the commands still running and exits.
- Only processes of the server's own user are served (a step could run the
  same commands itself); only `shipline step ...`.

With SHIPLINE_LOG_LEVEL=debug it logs one line per call to the engine's
stderr: the command, its exit code, its own CPU time (not that of the tools it
ran) and the server's.
"""

from __future__ import annotations

import gc
import importlib
import io
import logging
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass

from shipline.launch import PROTOCOL

log = logging.getLogger("shipline.stepserver")

GRACE_SECONDS = 5.0
"""After its caller went away, how long a command gets between SIGTERM and SIGKILL."""

MAX_REQUEST = 8 * 1024 * 1024
"""A request holds the step's whole environment; more than this is refused."""

REPORT_MAX = 60 * 1024
"""A copy's report to the server (its CPU time, the modules it imported) fits in a pipe's buffer: it is read after the copy exits."""

READ_SECONDS = 5.0
"""How long a caller may take to send its request once connected."""


@dataclass
class _Call:
    pid: int
    pidfd: int
    conn: socket.socket
    report: int
    name: str
    kill_at: float | None = None
    code: int = 0
    caller_gone: bool = False
    cpu: float = 0.0


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _read_request(conn: socket.socket) -> tuple[list[bytes], list[int]]:
    """The request's fields and the caller's three descriptors."""
    conn.settimeout(READ_SECONDS)
    fds: list[int] = []
    data = b""
    size_of_int = struct.calcsize("i")
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * size_of_int))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % size_of_int
                fds += struct.unpack(f"{usable // size_of_int}i", payload[:usable])
        if not chunk:
            break
        data += chunk
        if len(data) >= 4 and int.from_bytes(data[:4], "big") > MAX_REQUEST:
            break
    size = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    if size < 0 or len(data) != 4 + size:
        for fd in fds:
            os.close(fd)
        raise ValueError("an incomplete or oversized request")
    return data[4:].split(b"\0"), fds


def _decode(fields: list[bytes]) -> tuple[str, list[str], dict[str, str]]:
    if len(fields) < 3 or fields[0] != PROTOCOL or not fields[2].isdigit():
        raise ValueError(f"not a {PROTOCOL.decode()} request")
    count = int(fields[2])
    argv = [os.fsdecode(a) for a in fields[3 : 3 + count]]
    if len(argv) != count or argv[1:2] != ["step"]:
        raise ValueError("only `shipline step ...` is served")
    environ: dict[str, str] = {}
    for pair in fields[3 + count :]:
        name, sep, value = pair.partition(b"=")
        if sep and name:
            environ[os.fsdecode(name)] = os.fsdecode(value)
    return os.fsdecode(fields[1]), argv, environ


def _warm(modules: list[str]) -> None:
    """Import `modules` here, so that the next copy and every later one start with them."""
    missing = [m for m in modules if m not in sys.modules]
    for name in missing:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the copy imports it again and reports the error where the step shows it
            log.debug("step server: importing %s failed: %s", name, exc)
    if missing:
        gc.freeze()  # shared with every copy: never collected, so never touched (and copied) by a collection


def _run_command(caller: int, cwd: str, argv: list[str], environ: dict[str, str], fds: list[int], report: int) -> None:
    """In the forked copy: become the caller's command, run it, and exit with its code."""
    code = 1
    had = set(sys.modules)
    try:
        os.setsid()  # a session of its own: the server can stop the command and what it started together
        from shipline.executors.cgroups import join_step_group_of

        join_step_group_of(caller)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        os.dup2(report, 3)
        os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        report = 3
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as `shipline.cli.main` sets it in a process of its own
        unbuffered = bool(environ.get("PYTHONUNBUFFERED"))
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=unbuffered)
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        sys.argv = argv
        from shipline.cli.main import main

        try:
            main.main(args=argv[1:], prog_name="shipline")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            traceback.print_exc()
            code = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    finally:
        try:
            # Its CPU, then the modules it imported that the server had not: imported there before
            # the command's next call, what this call paid for comes ready to every later one.
            imported = "\n".join(m for m in list(sys.modules) if m not in had)
            report_text = f"{_cpu(resource.getrusage(resource.RUSAGE_SELF)):.6f}\n{imported}"
            os.write(report, report_text.encode()[:REPORT_MAX])
        finally:
            os._exit(code & 0xFF)


class StepServer:
    def __init__(self, listener: socket.socket, alive: int) -> None:
        self.listener = listener
        self.alive = alive
        self.selector = selectors.DefaultSelector()
        self.calls: dict[int, _Call] = {}  # by pid
        self.learned: dict[str, list[str]] = {}  # `step NAME`: what its calls imported, in their order
        self.served = 0

    def serve(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.alive, selectors.EVENT_READ, "alive")
        while True:
            timeout = min((c.kill_at - time.monotonic() for c in self.calls.values() if c.kill_at), default=None)
            for key, _ in self.selector.select(None if timeout is None else max(timeout, 0)):
                what = key.data
                if what == "accept":
                    self._accept()
                elif what == "alive":
                    self._stop_all()
                    return
                elif isinstance(what, tuple) and what[0] == "exited":
                    self._exited(what[1])
                elif isinstance(what, tuple) and what[0] == "caller":
                    self._caller_readable(what[1])
                elif isinstance(what, tuple) and what[0] == "report":
                    self._report(what[1])
            now = time.monotonic()
            for call in self.calls.values():
                if call.kill_at is not None and call.kill_at <= now:
                    _kill(call.pid, signal.SIGKILL)
                    call.kill_at = None

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        fds: list[int] = []
        try:
            caller, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if uid != os.getuid():
                raise ValueError(f"a caller of uid {uid}, not this server's")
            fields, fds = _read_request(conn)
            cwd, argv, environ = _decode(fields)
            if len(fds) < 3:
                raise ValueError("the caller's standard streams did not come with the request")
        except (OSError, ValueError) as exc:
            log.warning("step server: a request was refused: %s", exc)
            for fd in fds:
                os.close(fd)
            with suppress(OSError):
                conn.sendall(b"refused")
            conn.close()
            return
        command = " ".join(argv[1:3])
        _warm(self.learned.get(command, []))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the copy: measured through the command it runs
            os.close(read)
            _run_command(caller, cwd, argv, environ, fds, write)
        os.close(write)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        call = _Call(pid, pidfd, conn, read, command)
        self.calls[pid] = call
        self.selector.register(pidfd, selectors.EVENT_READ, ("exited", pid))
        self.selector.register(conn, selectors.EVENT_READ, ("caller", pid))

    def _caller_readable(self, pid: int) -> None:
        """The caller says nothing after its request: readable means it went away (killed with its step)."""
        call = self.calls[pid]
        with suppress(OSError):
            if call.conn.recv(1, socket.MSG_DONTWAIT):
                return
        self.selector.unregister(call.conn)
        call.caller_gone = True
        _kill(pid, signal.SIGTERM)
        call.kill_at = time.monotonic() + GRACE_SECONDS

    def _exited(self, pid: int) -> None:
        call = self.calls.pop(pid)
        self.selector.unregister(call.pidfd)
        os.close(call.pidfd)
        # What the command left running in its session goes now, as a step's leftovers do at
        # its end (the copy is not reaped yet, so its pid, the session's id, is nobody else's).
        _kill(pid, signal.SIGKILL)
        _, status, _ = os.wait4(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        with suppress(OSError, ValueError):
            cpu, _, imported = os.read(call.report, REPORT_MAX).decode().partition("\n")
            call.cpu = float(cpu)
            if imported:
                self.learned[call.name] = list(dict.fromkeys([*self.learned.get(call.name, []), *imported.split("\n")]))
        os.close(call.report)
        call.code = code
        self.served += 1
        if call.caller_gone:
            self._done(call, None)
            return
        try:
            call.conn.sendall(f"{code}\n".encode())
        except OSError:
            self.selector.unregister(call.conn)
            self._done(call, None)
            return
        # The caller answers with its own CPU time, then closes: the call's account is complete.
        self.selector.modify(call.conn, selectors.EVENT_READ, ("report", call))

    def _report(self, call: _Call) -> None:
        self.selector.unregister(call.conn)
        caller: float | None = None
        with suppress(OSError, ValueError):
            caller = float(call.conn.recv(64, socket.MSG_DONTWAIT))
        self._done(call, caller)

    def _done(self, call: _Call, caller: float | None) -> None:
        call.conn.close()
        log.debug(
            "step server: `shipline %s` exited %d, %.4f s of its own CPU, its caller %s; the server: %d calls, %.4f s of CPU",
            call.name,
            call.code,
            call.cpu,
            "gone" if caller is None else f"{caller:.4f} s",
            self.served,
            _cpu(resource.getrusage(resource.RUSAGE_SELF)),
        )

    def _stop_all(self) -> None:
        """The engine is gone: so are the commands it asked for."""
        for pid in self.calls:
            _kill(pid, signal.SIGKILL)
        for pid in list(self.calls):
            with suppress(OSError):
                os.waitpid(pid, 0)


def _kill(pid: int, sig: signal.Signals) -> None:
    with suppress(OSError):
        os.killpg(pid, sig)


def main() -> None:
    listener_fd, alive, client = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    listener = socket.socket(fileno=listener_fd)
    level = os.environ.get("SHIPLINE_LOG_LEVEL", "warning").upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "WARNING", format="%(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when its steps stop; a ^C reaches it, not this
    # What every command needs, imported once: Python, click, shipline's command groups, the cgroup in use.
    _warm(["shipline.cli.main", "shipline.cli.steps"])
    from shipline.executors.cgroups import hierarchy

    hierarchy()
    gc.freeze()
    try:
        StepServer(listener, alive).serve()
    finally:
        shutil.rmtree(client, ignore_errors=True)  # the engine's `shipline` for steps goes with this server


if __name__ == "__main__":
    main()
