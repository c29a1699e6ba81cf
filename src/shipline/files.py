"""Files under `$SHIPLINE_HOME` are the engine's user's alone: 0700 directories, 0600 files.

Below the store and the executors in the layers (both make such files), so both use these.

The database, step logs, workspaces, step homes and the secret key hold run
data; whatever creates them goes through these functions.  The mode is set
after creation, so a permissive umask cannot widen it, and directories made
0755 by an older version are tightened the next time they are used.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, Literal, overload

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, root: Path | None = None) -> Path:
    """Make `path` (and its missing parents) with mode 0700.

    Existing directories keep their mode, except `path` itself and, with
    `root`, every directory from `root` down to `path`: those are the
    engine's own, so they are made private whoever made them.
    """
    created = []
    try:
        os.mkdir(path, DIR_MODE)  # the usual case (a run's folder): its parent is there
    except FileExistsError:
        pass
    except FileNotFoundError:
        parent = path
        while not parent.exists() and parent != parent.parent:
            created.append(parent)
            parent = parent.parent
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for directory in (path, *created):
        os.chmod(directory, DIR_MODE)
    if root is not None:
        # With strings, not pathlib: a run makes three such folders as it starts.
        top = os.fspath(root)
        inside = top if top.endswith(os.sep) else top + os.sep
        folder = os.path.dirname(os.fspath(path))
        while folder == top or folder.startswith(inside):  # up to the root: none further up is the engine's
            with suppress(PermissionError):  # not ours to change: leave it to its owner
                os.chmod(folder, DIR_MODE)
            if folder == top:
                break
            folder = os.path.dirname(folder)
    return path


def private_file(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """Open (creating if need be) a file only its owner may read; returns the descriptor."""
    return _made_private(os.open(path, flags | os.O_CLOEXEC, FILE_MODE))


def _made_private(fd: int) -> int:
    """`fd`, its file made 0600 whatever the umask (closed when that fails)."""
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def own_file(path: Path) -> int:
    """`private_file` for appending, where a step may have put something first: steps run as the
    engine's user and know their run's log folder.  A FIFO there would hold the engine up (its open
    waits for a reader), a symlink would lead its writes elsewhere: what is not a regular file is
    removed, and a new file made in its place."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fd = regular_fd(path, flags)
    if fd is None:
        remove_entry(path)
        fd = os.open(path, flags | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    return _made_private(fd)


@overload
def open_regular(path: Path) -> BinaryIO: ...
@overload
def open_regular(path: Path, *, text: Literal[True]) -> io.TextIOWrapper: ...


def open_regular(path: Path, *, text: bool = False) -> BinaryIO | io.TextIOWrapper:
    """A file of the engine's opened for reading, if it is a regular file: anything else (a FIFO,
    whose open would wait for a writer; a symlink, not followed; a folder) is FileNotFoundError,
    as a missing file is.  Text is UTF-8, undecodable bytes replaced."""
    fd = regular_fd(path, os.O_RDONLY)
    if fd is None:
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    binary = os.fdopen(fd, "rb")
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace") if text else binary


def regular_fd(path: Path, flags: int) -> int | None:
    """`path` opened with `flags` if it is a regular file, None if it is something else.  Neither a
    symlink is followed nor a FIFO waited on (O_NONBLOCK: an open for writing fails with ENXIO
    when no one reads it; one for reading returns at once, and fstat tells what it is)."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, FILE_MODE)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # a symlink, a FIFO no one reads, a folder
            return None
        raise
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


def remove_entry(path: Path) -> None:
    """Remove what is at `path`: a file, a link (not what it leads to), a FIFO, a folder with what is in it."""
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)


def make_private(path: Path) -> None:
    """Make an existing file 0600 (a directory 0700); a missing one is left missing."""
    try:
        os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)
    except FileNotFoundError:
        pass
