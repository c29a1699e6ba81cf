"""A `git ls-remote` that hangs is stopped with every helper process it started."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from shipline.exceptions import ToolError
from shipline.triggers.polling import ls_remote


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


@pytest.mark.timeout(60)
def test_a_timed_out_ls_remote_leaves_no_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "helper.pid"
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "ext")  # a transport helper that hangs, like a stuck git-remote-https
    with pytest.raises(ToolError, match="took longer than"):
        asyncio.run(ls_remote(f"ext::sh -c echo% $$>{pidfile};exec% sleep% 303", timeout=1.0))
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = _alive(pid)
    if survived:
        os.kill(pid, signal.SIGKILL)
    assert not survived, "the transport helper outlived git ls-remote"
