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
the command; its exit code goes back to the caller.

A copy whose call succeeded then lets go of the caller (its streams, folder and
environment), leaves the step's cgroup for the server's, and waits for the next
call *of the same run* (the caller's cgroup says which run): a fork and the
first touch of every page it copies cost ~5 ms of CPU per call, the rest of a
call like `test-report` 0.3 ms.  It is taken again only as it was left: one
thread, no descriptor but its own, fewer than MAX_CALLS calls; otherwise (a
failed call, no cgroups here, a copy that could not leave the step's group) it
exits after its call, and what it left in its session is killed.  A call of
another run never reaches it: whatever a command keeps in memory stays within
the run that gave it.  Waiting copies exit after IDLE_SECONDS, past MAX_IDLE,
and with the server.

- Single-threaded, so a fork never copies a lock held by another thread.
- A command's first call imports what it needs in its copy, and tells the
  server which modules those were; the server imports them before it forks
  again (and freezes them out of the collector): from then on each copy
  starts with every command's modules in place.  No import is paid twice.
- A caller that goes away (killed with its step) takes its command with it:
  SIGTERM to the copy's session, SIGKILL after the grace period.
- When the engine's process ends, however it ends, the pipe reads EOF: the
  server kills the commands still running and exits.
- Only processes of the server's own user are served (a step could run the
  same commands itself); only `shipline step ...`.

With SHIPLINE_LOG_LEVEL=debug it logs one line per call to the engine's
stderr: the command, its exit code, its own CPU time (not that of the tools it
ran), its caller's and the server's, and the copy that ran it (its pid, and how
many calls it has run).
"""

from __future__ import annotations

import dataclasses
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
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from shipline.executors.cgroups import move_into, own_group, step_group_of
from shipline.launch import PROTOCOL

log = logging.getLogger("shipline.stepserver")

GRACE_SECONDS = 5.0
"""After its caller went away, how long a command gets between SIGTERM and SIGKILL."""

MAX_REQUEST = 8 * 1024 * 1024
"""A request holds the step's whole environment; more than this is refused."""

REPORT_MAX = 60 * 1024
"""At most this much of the modules a call imported goes into its copy's report to the server."""

READ_SECONDS = 5.0
"""How long a caller may take to send its request once connected."""

IDLE_SECONDS = 60.0
"""How long a copy waits for the next call of its run before it exits."""

MAX_IDLE = 4
"""Copies that wait at most; past that, the one that has waited longest exits."""

MAX_CALLS = 100
"""A copy runs at most this many calls, then exits (the next is forked anew): nothing a command keeps piles up."""


@dataclass
class _Copy:
    """A forked copy of the server: it runs one call, and then, when it may, waits for the next of the same run."""

    pid: int
    pidfd: int
    control: socket.socket
    """The server's end of a socket pair: calls go out on it, reports come back."""
    run: Path | None
    """The run (its cgroup folder) whose calls it may take again; None: it exits after its call."""
    cpu: float = 0.0
    """Its CPU time at its last report."""
    calls: int = 0
    idle_since: float = 0.0


@dataclass
class _Call:
    copy: _Copy
    conn: socket.socket
    name: str
    kill_at: float | None = None
    code: int = 0
    caller_gone: bool = False
    cpu: float = 0.0
    reported: bool = False


@dataclass(frozen=True)
class _Request:
    group: Path | None
    """The caller's step cgroup, which the copy joins for the call."""
    cwd: str
    argv: list[str]
    environ: dict[str, str]
    fds: list[int]


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _read_message(conn: socket.socket, timeout: float | None = READ_SECONDS) -> tuple[list[bytes], list[int]]:
    """A length-prefixed message's NUL-separated fields and the descriptors that came with it."""
    conn.settimeout(timeout)
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


def _send_message(conn: socket.socket, fields: list[bytes], fds: Sequence[int] = ()) -> None:
    payload = b"\0".join(fields)
    message = len(payload).to_bytes(4, "big") + payload
    sent = conn.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else [])
    if sent < len(message):
        conn.sendall(message[sent:])


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


def _copy_main(control: int, request: _Request, home: Path | None) -> NoReturn:
    """In the forked copy: run the call; then, if it may, wait for the next call of the same run and run it."""
    code = 1
    try:
        os.setsid()  # a session of its own: the server can stop the command and what it started together
        for target, fd in enumerate(request.fds[:3]):
            os.dup2(fd, target)
        os.dup2(control, 3)
        os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        request = dataclasses.replace(request, fds=[0, 1, 2])
        channel = socket.socket(fileno=3)
        calls = 0
        while True:
            calls += 1
            code = 1  # what the call ends with if it fails before its command has said
            code, imported = _run_call(request)
            # Taken again only by a copy that is as it was: the call succeeded, left no thread, child or
            # descriptor behind, and its copy could leave the step's cgroup (else the step's end kills it).
            again = (
                home is not None
                and request.group is not None
                and code == 0
                and calls < MAX_CALLS
                and _as_found()
                and move_into(home)
            )
            cpu = _cpu(resource.getrusage(resource.RUSAGE_SELF))
            report = [str(code).encode(), f"{cpu:.6f}".encode(), b"again" if again else b"exit", imported.encode()[:REPORT_MAX]]
            _send_message(channel, report)
            if not again:
                break
            try:
                fields, fds = _read_message(channel, timeout=None)
                group = os.fsdecode(fields[0])
                cwd, argv, environ = _decode(fields[1:])
            except (OSError, ValueError):  # the server is gone, or said something this copy does not understand
                code = 1  # never a success for a call that did not run
                break
            request = _Request(Path(group) if group else None, cwd, argv, environ, fds)
    finally:
        os._exit(code & 0xFF)


def _as_found() -> bool:
    """Nothing of the call is left in the copy: one thread, no child process (a tool left running would
    then die with its step, not with its call), no descriptor but 0-3.  Listing /proc/self/fd opens one
    descriptor itself, the lowest free: 4 when nothing leaked."""
    with suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:  # children that ended: reaped, they are not left
            pass
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        return False
    try:
        if Path(f"/proc/self/task/{threads[0]}/children").read_text().strip():
            return False
    except OSError:
        return False
    return {int(fd) for fd in os.listdir("/proc/self/fd")} <= {0, 1, 2, 3, 4}


def _run_call(request: _Request) -> tuple[int, str]:
    """Become the caller's command and run it: its exit code, and the modules it imported that were not here."""
    code = 1
    had = set(sys.modules)
    if request.group is not None:
        move_into(request.group)
    for target, fd in enumerate(request.fds[:3]):
        os.dup2(fd, target)
    for fd in request.fds:
        if fd > 3:
            os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        os.chdir(request.cwd)
    except OSError as exc:
        os.write(2, f"shipline: cannot run `{' '.join(request.argv[1:3])}` in {request.cwd}: {exc.strerror}\n".encode())
        _let_go()
        return 1, ""
    os.environ.clear()
    os.environ.update(request.environ)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as `shipline.cli.main` sets it in a process of its own
    unbuffered = bool(request.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.argv = request.argv
    from shipline.cli.main import main

    try:
        main.main(args=request.argv[1:], prog_name="shipline")
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
    _let_go()
    return code, "\n".join(m for m in list(sys.modules) if m not in had)


def _let_go() -> None:
    """The caller's streams and folder are let go (a step's output pipe stays open while any process
    holds it: the step would not end), and its environment forgotten, before anyone hears of the end."""
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)
    os.chdir("/")
    os.environ.clear()


class StepServer:
    def __init__(self, listener: socket.socket, alive: int, home: Path | None = None) -> None:
        self.listener = listener
        self.alive = alive
        self.home = home
        """This server's own cgroup, where a copy goes back between the calls of a run (None: no copy is taken again)."""
        self.selector = selectors.DefaultSelector()
        self.copies: dict[int, _Copy] = {}  # by pid
        self.calls: dict[int, _Call] = {}  # by the pid of the copy running it
        self.idle: dict[int, _Copy] = {}  # copies waiting for their run's next call, oldest first
        self.learned: dict[str, list[str]] = {}  # `step NAME`: what its calls imported, in their order
        self.served = 0

    def serve(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.alive, selectors.EVENT_READ, "alive")
        while True:
            deadlines = [c.kill_at for c in self.calls.values() if c.kill_at is not None]
            deadlines += [c.idle_since + IDLE_SECONDS for c in self.idle.values()]
            timeout = min(deadlines, default=None)
            for key, _ in self.selector.select(None if timeout is None else max(timeout - time.monotonic(), 0)):
                what = key.data
                if what == "accept":
                    self._accept()
                elif what == "alive":
                    self._stop_all()
                    return
                elif isinstance(what, tuple) and what[0] == "exited":
                    self._exited(what[1])
                elif isinstance(what, tuple) and what[0] == "report":
                    self._report(what[1])
                elif isinstance(what, tuple) and what[0] == "caller":
                    self._caller_readable(what[1])
                elif isinstance(what, tuple) and what[0] == "answer":
                    self._answer(what[1])
            now = time.monotonic()
            for call in self.calls.values():
                if call.kill_at is not None and call.kill_at <= now:
                    _kill(call.copy.pid, signal.SIGKILL)
                    call.kill_at = None
            for copy in [c for c in self.idle.values() if c.idle_since + IDLE_SECONDS <= now]:
                self._retire(copy)

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
            fields, fds = _read_message(conn)
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
        group = step_group_of(caller)
        copy = None
        if group is not None and (copy := self._waiting(group.parent)) is not None:
            try:
                _send_message(copy.control, [os.fsencode(group), *fields], fds[:3])
            except OSError:  # it died meanwhile: its exit is handled as it comes
                _kill(copy.pid, signal.SIGKILL)
                copy = None
        if copy is None:
            # What every command has imported so far, not only this one's: the copy may serve its
            # run's next calls, of other commands, and should find their modules in place too.
            _warm([module for modules in self.learned.values() for module in modules])
            copy = self._fork(_Request(group, cwd, argv, environ, fds))
        for fd in fds:
            os.close(fd)
        self.calls[copy.pid] = _Call(copy, conn, command)
        self.selector.register(conn, selectors.EVENT_READ, ("caller", copy.pid))

    def _waiting(self, run: Path) -> _Copy | None:
        """A copy that ran an earlier call of this run and waits for the next."""
        for pid, copy in self.idle.items():
            if copy.run == run:
                del self.idle[pid]
                return copy
        return None

    def _fork(self, request: _Request) -> _Copy:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the copy: measured through the commands it runs
            _copy_main(theirs.detach(), request, self.home)
        theirs.close()
        copy = _Copy(pid, os.pidfd_open(pid), mine, request.group.parent if request.group and self.home else None)
        self.copies[pid] = copy
        self.selector.register(copy.pidfd, selectors.EVENT_READ, ("exited", pid))
        self.selector.register(copy.control, selectors.EVENT_READ, ("report", pid))
        return copy

    def _report(self, pid: int) -> None:
        """A copy's call ended: its exit code, its CPU, whether it waits for another call, what it imported."""
        copy = self.copies.get(pid)
        if copy is None:
            return
        try:
            fields, _ = _read_message(copy.control)
            code, cpu, state, imported = int(fields[0]), float(fields[1]), fields[2], os.fsdecode(fields[3])
        except (OSError, ValueError, IndexError):
            with suppress(KeyError, ValueError):
                self.selector.unregister(copy.control)  # silent or gone: its exit tells the rest
            _kill(pid, signal.SIGKILL)
            return
        if imported:
            name = self.calls[pid].name if pid in self.calls else ""
            self.learned[name] = list(dict.fromkeys([*self.learned.get(name, []), *imported.split("\n")]))
        call = self.calls.get(pid)
        if call is None:
            return
        call.cpu, copy.cpu = cpu - copy.cpu, cpu
        copy.calls += 1
        call.code, call.reported = code, True
        if state != b"again":
            return  # it exits: the call ends with its exit (and what it left in its session goes)
        del self.calls[pid]
        if call.caller_gone or call.kill_at is not None:
            _kill(pid, signal.SIGKILL)  # told to stop: it does not serve again
        else:
            copy.idle_since = time.monotonic()
            self.idle[pid] = copy
            while len(self.idle) > MAX_IDLE:
                self._retire(next(iter(self.idle.values())))
        self._ended(call)

    def _retire(self, copy: _Copy) -> None:
        self.idle.pop(copy.pid, None)
        _kill(copy.pid, signal.SIGKILL)

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
        call = self.calls.get(pid)
        if call is not None and not call.reported:
            self._report(pid)  # one it sent before it exited, if any (else an end of file at once)
        copy = self.copies.pop(pid)
        self.idle.pop(pid, None)
        with suppress(KeyError, ValueError):
            self.selector.unregister(copy.control)
        self.selector.unregister(copy.pidfd)
        os.close(copy.pidfd)
        copy.control.close()
        # What the command left running in its session goes now, as a step's leftovers do at
        # its end (the copy is not reaped yet, so its pid, the session's id, is nobody else's).
        _kill(pid, signal.SIGKILL)
        _, status, _ = os.wait4(pid, 0)
        call = self.calls.pop(pid, None)
        if call is None:
            return  # a waiting copy that ended (its time was up, or it was one too many)
        code = os.waitstatus_to_exitcode(status)
        call.code = 128 - code if code < 0 else code
        self._ended(call)

    def _ended(self, call: _Call) -> None:
        self.served += 1
        if call.caller_gone:
            self._done(call, None)
            return
        try:
            call.conn.sendall(f"{call.code}\n".encode())
        except OSError:
            self.selector.unregister(call.conn)
            self._done(call, None)
            return
        # The caller answers with its own CPU time, then closes: the call's account is complete.
        self.selector.modify(call.conn, selectors.EVENT_READ, ("answer", call))

    def _answer(self, call: _Call) -> None:
        self.selector.unregister(call.conn)
        caller: float | None = None
        with suppress(OSError, ValueError):
            caller = float(call.conn.recv(64, socket.MSG_DONTWAIT))
        self._done(call, caller)

    def _done(self, call: _Call, caller: float | None) -> None:
        call.conn.close()
        log.debug(
            "step server: `shipline %s` exited %d, %.4f s of its own CPU, its caller %s; the server: %d calls, %.4f s of CPU;"
            " copy %d, its call %d",
            call.name,
            call.code,
            call.cpu,
            "gone" if caller is None else f"{caller:.4f} s",
            self.served,
            _cpu(resource.getrusage(resource.RUSAGE_SELF)),
            call.copy.pid,
            call.copy.calls,
        )

    def _stop_all(self) -> None:
        """The engine is gone: so are the commands it asked for, and the copies that wait."""
        for pid in self.copies:
            _kill(pid, signal.SIGKILL)
        for pid in list(self.copies):
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

    home = own_group() if hierarchy() is not None else None
    gc.freeze()
    try:
        StepServer(listener, alive, home).serve()
    finally:
        shutil.rmtree(client, ignore_errors=True)  # the engine's `shipline` for steps goes with this server


if __name__ == "__main__":
    main()
