"""After `kill -9` of `shipline run`, the next command stops everything the run's steps left: none is missed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers import shipline


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


def test_a_killed_cli_leaves_no_process_behind(home: Path, write: Callable[..., Path], tmp_path: Path) -> None:
    sub, sleeper, daemon = tmp_path / "sub.pid", tmp_path / "sleep.pid", tmp_path / "daemon.pid"
    # The step's own shell dies of SIGPIPE once its reader is gone; its background
    # subshell and a setsid daemon must not live on.
    path = write(f"""
        name: leftovers
        tasks:
          - name: work
            steps:
              - run: |
                  (echo $BASHPID > {sub}; sleep 301 & echo $! > {sleeper}; wait; true) &
                  setsid sh -c 'echo $$ > {daemon}; exec sleep 302' &
                  while true; do echo tick; sleep 0.05; done
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipline", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while not all(p.exists() and p.read_text().strip() for p in (sub, sleeper, daemon)):
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    pids = [int(p.read_text()) for p in (sub, sleeper, daemon)]
    proc.kill()
    proc.communicate()
    try:
        [record] = json.loads(shipline("runs", "list", "--json").stdout)
        assert record["message"].startswith("interrupted")
        left = [pid for pid in pids if _alive(pid)]
        assert not left, f"processes {left} of the killed run's step live on"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
