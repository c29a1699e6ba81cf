"""The engine's files under $SHIPLINE_HOME: what a step may leave at their paths is not trusted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shipline.files import open_regular, own_file


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a symlink to a file elsewhere, a folder and a regular file, as a step could leave them."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the engine's\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    paths = {name: logs / f"{name}.log" for name in ("fifo", "link", "folder", "file")}
    os.mkfifo(paths["fifo"])
    paths["link"].symlink_to(elsewhere)
    paths["folder"].mkdir()
    (paths["folder"] / "inside").write_text("x")
    paths["file"].write_text("2026-11-30T00:00:00+00:00 a line\n")
    return {**paths, "elsewhere": elsewhere}


def test_only_a_regular_file_is_opened_for_reading(planted: dict[str, Path]) -> None:
    for name in ("fifo", "link", "folder"):  # the FIFO's open would wait for a writer: it must not
        with pytest.raises(FileNotFoundError, match="not a regular file"):
            open_regular(planted[name])
    with open_regular(planted["file"], text=True) as f:
        assert f.read() == "2026-11-30T00:00:00+00:00 a line\n"


def test_a_log_opened_to_append_replaces_what_is_not_a_regular_file(planted: dict[str, Path]) -> None:
    for name in ("fifo", "link", "folder", "file"):
        fd = own_file(planted[name])
        try:
            os.write(fd, b"written by the engine\n")
        finally:
            os.close(fd)
        info = os.lstat(planted[name])
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, name
    assert planted["elsewhere"].read_text() == "not the engine's\n", "the symlink's target is not written"
    assert planted["fifo"].read_text() == "written by the engine\n"
    assert planted["file"].read_text() == "2026-11-30T00:00:00+00:00 a line\nwritten by the engine\n", "a log is appended to"
