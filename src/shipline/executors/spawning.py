"""Starting a step's process without holding the GIL while the kernel makes it.

Python 3.11's `subprocess` keeps the GIL until the child
has exec'd.  Here that is not a few microseconds: a fork waits while any
process moves between cgroups (every step's shell joins its own: the kernel
lets a fork through only after an RCU grace period), so each step start held
every thread of the server still for milliseconds.  In a burst of API runs,
py-spy (`--gil`) found the GIL held inside `_fork_exec` in 74% of its samples.

glibc's `posix_spawn`, called through ctypes (which lets go of the GIL for the
length of every foreign call), makes the same child: stdin from /dev/null,
stdout and stderr to one pipe, a session of its own, the workdir entered by
its open descriptor, every other descriptor closed, the signals Python ignores
back to their defaults.  Where the C library lacks what that needs (glibc
before 2.34, musl), `subprocess.Popen` does it as before.  Python 3.12 lets go
of the GIL in `subprocess` itself (gh-104372); this module can go with 3.11.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80  # a GNU extension (glibc 2.26)

# Opaque to us: room for glibc's posix_spawn_file_actions_t (80 bytes on 64-bit Linux),
# posix_spawnattr_t (336) and sigset_t (128), with a margin; only pointers to them are passed.
_FileActions = ctypes.c_char * 256
_Attributes = ctypes.c_char * 1024
_SigSet = ctypes.c_char * 256


@cache
def _libc() -> Any | None:
    """The C library's spawn functions, or None where one that is needed is missing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        needed = [
            libc.posix_spawn,
            libc.posix_spawn_file_actions_addclosefrom_np,  # glibc 2.34
            libc.posix_spawn_file_actions_addfchdir_np,  # glibc 2.29
            libc.posix_spawnattr_setflags,
        ]
    except (OSError, AttributeError):
        return None
    for function in needed:
        function.restype = ctypes.c_int
    libc.posix_spawn_file_actions_addopen.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    libc.posix_spawnattr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
    return libc


def spawn(argv: Sequence[str], *, cwd_fd: int, env: Mapping[str, str], output: int) -> int:
    """Start `argv` in a new session in the folder open at `cwd_fd`, its stdout and stderr on
    `output`, and return its pid.  Call it off the event loop: it returns once the child has
    exec'd.  Raises what `subprocess` raises: OSError (FileNotFoundError for a missing program),
    ValueError for a null byte or a variable name with '='."""
    libc = _libc()
    if libc is None:
        return _popen(argv, cwd_fd=cwd_fd, env=env, output=output)
    # C strings end at a NUL: a value holding one would be cut short without a word (subprocess refuses it too).
    for name, value in (*((f"argument {i}", a) for i, a in enumerate(argv)), *env.items()):
        if "\0" in name or "\0" in value:
            raise ValueError(f"embedded null byte in {name.split(chr(0))[0]!r} of the step's command or environment")
    if bad := [name for name in env if "=" in name]:
        raise ValueError(f"illegal environment variable name {bad[0]!r}")  # as subprocess says
    program = argv[0] if os.sep in argv[0] else _found(argv[0], os.pathsep.join(os.get_exec_path(env)))
    if program is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    moved: list[int] = []

    def above_two(fd: int) -> int:  # what the child dup2s onto 0-2 or keeps must not be one of 0-2
        if fd > 2:
            return fd
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))
        return moved[-1]

    output, cwd_fd = above_two(output), above_two(cwd_fd)
    actions, attributes, signals = _FileActions(), _Attributes(), _SigSet()
    libc.posix_spawn_file_actions_init(actions)
    libc.posix_spawnattr_init(attributes)
    try:
        _check(libc.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0))
        _check(libc.posix_spawn_file_actions_adddup2(actions, output, 1))
        _check(libc.posix_spawn_file_actions_adddup2(actions, output, 2))
        _check(libc.posix_spawn_file_actions_addfchdir_np(actions, cwd_fd))
        _check(libc.posix_spawn_file_actions_addclosefrom_np(actions, 3))
        libc.sigemptyset(signals)
        _check(libc.posix_spawnattr_setsigmask(attributes, signals))
        for number in (signal.SIGPIPE, signal.SIGXFSZ):  # what Popen's restore_signals resets
            libc.sigaddset(signals, int(number))
        _check(libc.posix_spawnattr_setsigdefault(attributes, signals))
        _check(libc.posix_spawnattr_setflags(attributes, _SETSID | _SETSIGMASK | _SETSIGDEF))
        args = (ctypes.c_char_p * (len(argv) + 1))(*(os.fsencode(a) for a in argv), None)
        environ = (ctypes.c_char_p * (len(env) + 1))(*(os.fsencode(f"{k}={v}") for k, v in env.items()), None)
        pid = ctypes.c_int()
        failed = libc.posix_spawn(ctypes.byref(pid), os.fsencode(program), actions, attributes, args, environ)
        if failed:
            raise OSError(failed, os.strerror(failed), argv[0])
        return pid.value
    finally:
        libc.posix_spawn_file_actions_destroy(actions)
        libc.posix_spawnattr_destroy(attributes)
        for fd in moved:
            os.close(fd)


_FOUND: dict[tuple[str, str], str] = {}
"""Programs found on a PATH (`_found`), by (name, PATH)."""


def _found(name: str, path: str) -> str | None:
    """`shutil.which(name, path=path)`, remembered while what it found is still an executable file
    there, as a shell hashes the commands it ran: looking through PATH for each step's shell cost
    22 us a step, checking the one found 1."""
    found = _FOUND.get((name, path))
    if found is not None and os.access(found, os.X_OK) and not os.path.isdir(found):
        return found
    found = shutil.which(name, path=path)
    if found is not None and len(_FOUND) < 64:
        _FOUND[(name, path)] = found
    return found


def _check(result: int) -> None:
    if result:
        raise OSError(result, os.strerror(result))


def _popen(argv: Sequence[str], *, cwd_fd: int, env: Mapping[str, str], output: int) -> int:
    proc = subprocess.Popen(
        argv,
        cwd=f"/proc/self/fd/{cwd_fd}",
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        start_new_session=True,
    )
    proc.returncode = 0  # reaped by the caller: Popen must not wait for it, nor warn that it runs on
    return proc.pid
