"""What `shipline run` and `runs show` say about retries and timeouts: each line tells what happened."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from helpers import shipline


def test_retries_and_timeouts_are_told_as_they_are(home: Path, write: Callable[..., Path], tmp_path: Path) -> None:
    count = tmp_path / "count"
    path = write(f"""
        name: retry
        tasks:
          - name: flaky
            retries: 2
            steps:
              - name: try
                run: |
                  n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}
                  [ "$n" -ge 1 ] || {{ echo "boom"; exit 4; }}
          - name: slow
            timeout: 1s
            steps: [{{run: sleep 30}}]
    """)
    done = shipline("run", str(path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.endswith("flaky attempt 1 failed: step 'try' exited with code 4: boom; retrying") for line in lines), (
        done.stdout
    )
    [succeeded] = [line for line in lines if " flaky succeeded in " in line]
    assert "exited with code" not in succeeded, "the success line carries no earlier failure"
    assert any(line.endswith("slow | shipline: the task timed out after 1s; its processes were stopped") for line in lines)
    assert "cancelled" not in done.stdout, "a timeout is told as a timeout"
    shown = shipline("runs", "show", "1")
    [flaky] = [line for line in shown.stdout.splitlines() if line.strip().startswith("flaky")]
    assert "(2 attempts)" in flaky
    assert json.loads(shipline("runs", "show", "1", "--json").stdout)["tasks"][0]["attempts"] == 2


def test_a_run_that_failed_at_once_is_not_said_to_have_timed_out(home: Path, write: Callable[..., Path]) -> None:
    path = write("""
        name: zero
        timeout: 1s
        tasks:
          - name: first
            steps: [{run: exit 1}]
        finally:
          - name: report
            steps: [{run: sleep 2}]
    """)
    done = shipline("run", str(path), "--json")
    record = json.loads(done.stdout)
    assert record["status"] == "failed"
    assert record["message"] == "task first failed"
    assert "timed out" not in done.stderr
