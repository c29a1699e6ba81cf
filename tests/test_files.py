"""The engine's files under $SHIPLINE_HOME: private to its user, and what a step may leave at their paths is not trusted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shipline.files import open_regular, own_file, private_dir


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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_run_folder_made_private_tightens_the_engines_folders_up_to_its_home(tmp_path: Path) -> None:
    """Folders an older version made 0755 are made 0700 when next used, from the home down;
    what is above the home, or beside it with a name that starts alike, is not the engine's."""
    above, home, twin = tmp_path / "above", tmp_path / "above" / "home", tmp_path / "above" / "home2"
    for folder in (home / "logs", twin / "logs"):
        folder.mkdir(parents=True)
    for folder in (above, home, home / "logs", twin, twin / "logs"):
        folder.chmod(0o755)

    made = private_dir(home / "logs" / "7", root=home)
    assert made.is_dir()
    assert [_mode(p) for p in (made, home / "logs", home)] == [0o700] * 3
    assert _mode(above) == 0o755

    private_dir(twin / "logs" / "7", root=home)  # not under the root: only the folder itself
    assert _mode(twin / "logs" / "7") == 0o700
    assert [_mode(p) for p in (twin / "logs", twin, above)] == [0o755] * 3

    private_dir(home / "new" / "deeper", root=home)  # made with its missing parent
    assert [_mode(p) for p in (home / "new" / "deeper", home / "new", home)] == [0o700] * 3
    assert _mode(above) == 0o755
