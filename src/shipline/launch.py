"""The `shipline` command's entry point: the CLI, or a `shipline step` handed to the engine's step server.

A catalog task's step calls `shipline step NAME ...` (several per release).  As a
process of its own, each call starts Python, imports click and shipline's command
group and the step's modules, and tears them down: 45-140 ms of CPU, most of
shipline's share of a warm release.  The local executor runs a step server
(`shipline.cli.stepserver`) that has all that imported once and forks a copy per
call; steps find its address in $SHIPLINE_STEP_SOCKET.  This module is all a call
imports on its way there: no click, no `socket` module (its `enum` import alone
would double the cost), only the C-level `_socket`.  The server runs the command
with this process's arguments, working folder, environment and standard streams,
and this process exits with its exit code.  When there is no server to reach,
the command runs here, as before.
"""

from __future__ import annotations

import gc
import os
import sys
import time

PROTOCOL = b"shipline-step/1"
"""The first field of a request; a server that speaks another version refuses it (and the call runs here)."""


def main() -> None:
    address = os.environ.get("SHIPLINE_STEP_SOCKET")
    if address and sys.argv[1:2] == ["step"]:
        code = call_step_server(address, sys.argv)
        if code is not None:
            sys.exit(code)
    # Start-up makes some 300,000 objects that live until the process ends (modules, classes,
    # pydantic's models, SQLAlchemy's tables), and the cyclic collector, run every 700 new
    # objects, walked them ~150 times: 60-85 ms of a 1-task `shipline run` (0.5 s).  It is off
    # until the command's module is loaded; then what start-up made is frozen (never walked
    # again) and the collector runs as usual (`LazyGroup.get_command`).
    gc.disable()
    from shipline.cli import main as cli

    cli()


def encode_request(argv: list[str], cwd: str, environ: dict[bytes, bytes]) -> bytes:
    """NUL-separated fields (none of which can hold a NUL): protocol, cwd, argc, the arguments, NAME=VALUE pairs."""
    fields = [PROTOCOL, os.fsencode(cwd), str(len(argv)).encode(), *map(os.fsencode, argv)]
    fields += [name + b"=" + value for name, value in environ.items()]
    payload = b"\0".join(fields)
    return len(payload).to_bytes(4, "big") + payload


def call_step_server(address: str, argv: list[str]) -> int | None:
    """Have the step server run `argv`; its exit code, or None when no server could take it (nothing ran).

    Once the request is sent the command may have started: from then on, a server
    that goes away is a failure of the call, never a reason to run it a second time.
    """
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect("\0" + address)  # an abstract socket: nothing on disk to leave behind
        request = encode_request(argv, os.getcwd(), dict(os.environb))
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
        sent = sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        if sent < len(request):
            sock.sendall(request[sent:])
    except OSError:
        sock.close()
        return None
    reply = b""
    try:
        while (chunk := sock.recv(64)) and not chunk.endswith(b"\n"):
            reply += chunk
        reply += chunk
        # This process's own CPU time, for the server's account of what each call cost.
        sock.sendall(f"{time.process_time():.6f}".encode())
    except OSError:
        pass
    finally:
        sock.close()
    reply = reply.strip()
    if reply == b"refused":
        return None
    if not reply.isdigit():
        os.write(2, b"shipline: the step server ended before this command did; see the engine's log\n")
        return 1
    return int(reply)


def step_client() -> None:
    """The `shipline` that steps find first on PATH while a step server runs, when the C one
    (stepclient.c) was not built: `python -IS`, see `shipline.executors.stepserving`."""
    address = os.environ.get("SHIPLINE_STEP_SOCKET")
    code = call_step_server(address, sys.argv) if address and sys.argv[1:2] == ["step"] else None
    if code is not None:
        sys.exit(code)
    real = os.environ.get("SHIPLINE_STEP_FALLBACK", "")
    if not real:
        sys.exit("shipline: no step server answered and $SHIPLINE_STEP_FALLBACK is not set: cannot run this command")
    os.execv(real, [real, *sys.argv[1:]])
