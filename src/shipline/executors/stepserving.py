"""The engine's side of the step server (`shipline.cli.stepserver`): one per engine process, started on first use.

Steps that call `shipline step ...` get its address in $SHIPLINE_STEP_SOCKET;
`shipline.launch` hands such a call to it instead of starting Python again.  The
server lives as long as this process: it holds the read end of a pipe whose
write end only this process has (not inherited by steps), and exits when that
pipe reads EOF, however this process ended.  Where the server cannot start
(no pidfds, a sandbox without abstract sockets), steps run `shipline step` as
processes of their own, as they always could.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import shipline

log = logging.getLogger("shipline.executors")

STOP_SECONDS = 2.0
"""At the engine's exit, how long it waits for its step server to end (it kills its running commands first)."""

MAX_STARTS = 3
"""A server that keeps dying is not started a fourth time: steps then run `shipline step` themselves."""


@dataclass(frozen=True)
class StepServer:
    address: str
    """The abstract socket's name, for $SHIPLINE_STEP_SOCKET."""
    client: Path
    """A folder to put first on a step's PATH: its `shipline` calls the server."""
    fallback: str
    """The installed `shipline`, to which that one hands what the server does not take."""
    owner: int
    process: subprocess.Popen[bytes]
    alive: int
    """The write end of the pipe the server watches."""


_lock = threading.Lock()
_server: StepServer | None = None
_starts = 0


def step_server() -> StepServer | None:
    """This process's step server, started if need be; None when it cannot run here."""
    global _server, _starts
    with _lock:
        if _server is not None and _server.owner == os.getpid():
            if _server.process.poll() is None:
                return _server
            log.warning("the step server ended (exit %s); starting another", _server.process.returncode)
            atexit.unregister(_stop)
            _stop(_server)
        _server = None  # none yet, or one that ended, or the parent's of a process forked since
        if _starts >= MAX_STARTS:
            return None
        _starts += 1
        try:
            _server = _start()
        except (AttributeError, OSError) as exc:  # AttributeError: no os.pidfd_open
            log.warning("no step server here (%s): `shipline step` runs as a process of its own", exc)
        return _server


def _start() -> StepServer:
    os.close(os.pidfd_open(os.getpid()))  # the server waits for its commands through pidfds
    address = f"shipline-steps-{os.getpid()}-{secrets.token_hex(8)}"
    client = write_client(native_client())
    read, write = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind("\0" + address)  # abstract: nothing on disk, gone with its last holder
            listener.listen(128)
            process = subprocess.Popen(
                [sys.executable, "-m", "shipline.cli.stepserver", str(listener.fileno()), str(read), str(client)],
                pass_fds=(listener.fileno(), read),
                env=server_environment(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a ^C to the engine is the engine's to handle
            )
    except OSError:
        os.close(write)
        shutil.rmtree(client, ignore_errors=True)
        raise
    finally:
        os.close(read)
    server = StepServer(address, client, installed_shipline(), os.getpid(), process, write)
    atexit.register(_stop, server)
    return server


SERVER_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "SHIPLINE_LOG_LEVEL")
"""What the server keeps of the engine's environment: enough for Python to start and to log.  Each copy
runs with the calling step's environment; the process's own environment block, which
/proc/PID/environ shows for the copies too, holds none of the engine's credentials."""


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in SERVER_ENV if name in environ}


def _stop(server: StepServer) -> None:
    """At this process's exit: let the server end now (it would at the pipe's EOF anyway) and wait for it."""
    if server.owner != os.getpid():
        return
    with suppress(OSError):
        os.close(server.alive)
    with suppress(subprocess.TimeoutExpired):
        server.process.wait(STOP_SECONDS)
    shutil.rmtree(server.client, ignore_errors=True)


NATIVE_CLIENT = "shipline-step"
"""The C client (src/shipline/stepclient.c), built beside the interpreter by `make install` where a compiler is."""


def native_client() -> Path | None:
    native = Path(sys.executable).parent / NATIVE_CLIENT
    return native if os.access(native, os.X_OK) else None


def write_client(native: Path | None) -> Path:
    """A folder with the `shipline` that steps call: the C client `native` where it was built, else a Python
    one that starts with neither site nor environment (-IS: 3 ms less per call than the installed script) and
    imports only `shipline.launch`.  Either hands what the server does not take to $SHIPLINE_STEP_FALLBACK."""
    folder = Path(tempfile.mkdtemp(prefix="shipline-steps-"))
    script = folder / "shipline"
    if native is not None:
        script.symlink_to(native)
        return folder
    package_root = Path(shipline.__file__).resolve().parent.parent
    script.write_text(
        f"#!{sys.executable} -IS\n"
        "import sys\n"
        f"sys.path.append({str(package_root)!r})\n"
        "from shipline.launch import step_client\n"
        "step_client()\n"
    )
    script.chmod(0o755)
    return folder


def installed_shipline() -> str:
    """The installed `shipline` command, for what the steps' client hands on ($SHIPLINE_STEP_FALLBACK)."""
    installed = Path(sys.executable).parent / "shipline"
    return str(installed) if installed.exists() else shutil.which("shipline") or str(installed)
