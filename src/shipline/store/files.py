"""Files under `$SHIPLINE_HOME` are the engine's user's alone: 0700 directories, 0600 files.

The database, step logs, workspaces, step homes and the secret key hold run
data; whatever creates them goes through these functions.  The mode is set
after creation, so a permissive umask cannot widen it, and directories made
0755 by an older version are tightened the next time they are used.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, root: Path | None = None) -> Path:
    """Make `path` (and its missing parents) with mode 0700.

    Existing directories keep their mode, except `path` itself and, with
    `root`, every directory from `root` down to `path`: those are the
    engine's own, so they are made private whoever made them.
    """
    created = []
    parent = path
    while not parent.exists() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for directory in (path, *created):
        os.chmod(directory, DIR_MODE)
    if root is not None and path.is_relative_to(root):
        for directory in path.parents:
            if directory.is_relative_to(root):
                with suppress(PermissionError):  # not ours to change: leave it to its owner
                    os.chmod(directory, DIR_MODE)
    return path


def private_file(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """Open (creating if need be) a file only its owner may read; returns the descriptor."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def make_private(path: Path) -> None:
    """Make an existing file 0600 (a directory 0700); a missing one is left missing."""
    try:
        os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)
    except FileNotFoundError:
        pass
