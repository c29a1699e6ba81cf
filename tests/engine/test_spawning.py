"""A step's process as the local executor starts it: the same through glibc's posix_spawn
(which lets go of the GIL meanwhile) as through `subprocess`, where the C library lacks it."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import RunFn

from shipline.domain.runs import RunStatus, TaskStatus
from shipline.engine.logs import read_log
from shipline.executors import local, spawning
from shipline.settings import Settings


@pytest.fixture(params=["posix_spawn", "subprocess"])
def spawner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "subprocess":
        monkeypatch.setattr(spawning, "_libc", lambda: None)
    elif spawning._libc() is None:
        pytest.skip("this C library has no posix_spawn_file_actions_addclosefrom_np / addfchdir_np (glibc < 2.34)")
    return str(request.param)


def _log(settings: Settings, run_id: int) -> list[str]:
    """The step's lines, without their timestamps."""
    return [line.text for path in sorted((settings.logs / str(run_id)).glob("look.*.log")) for line in read_log(path)]


def test_a_steps_process_has_its_own_session_an_empty_stdin_and_nothing_of_the_engines(
    spawner: str, run_pipeline: RunFn, settings: Settings, tmp_path: Path
) -> None:
    engine_only = os.open(tmp_path / "engine-only", os.O_CREAT | os.O_RDWR)
    os.set_inheritable(engine_only, True)  # even one a child would inherit through exec
    try:
        record = run_pipeline(
            f"""
            name: proc
            tasks:
              - name: look
                steps:
                  - run: |
                      echo "stdin=$(readlink /proc/$$/fd/0)"
                      echo "session=$(cut -d' ' -f6 /proc/$$/stat) pid=$$"
                      echo "cwd=$(pwd -P)"
                      echo "ignored=$(sed -n 's/^SigIgn:\\t*//p' /proc/$$/status)"
                      if [ -e /proc/$$/fd/{engine_only} ]; then echo "fd {engine_only} open"; else echo "fd closed"; fi
                      echo "on stderr" >&2
                      echo "read=$(head -c 3 | wc -c)"
            """
        )
    finally:
        os.close(engine_only)
    assert record.status == RunStatus.SUCCEEDED, record.task("look").message
    log = _log(settings, record.id)
    lines = dict(line.split("=", 1) for line in log if "=" in line)
    assert lines["stdin"] == "/dev/null"
    assert lines["read"] == "0"  # a step that reads its stdin ends at once, reading nothing
    session, pid = lines["session"].split(" pid=")
    assert session == pid  # a session (and process group) of its own: killed as one
    assert lines["cwd"] == str((settings.workspaces / str(record.id)).resolve())
    ignored = int(lines["ignored"], 16)
    for number in (signal.SIGPIPE, signal.SIGXFSZ):  # the engine ignores them; its steps do not
        assert not ignored & (1 << (number - 1)), f"{number.name} is ignored in the step"
    assert "fd closed" in log
    assert "on stderr" in log  # stderr goes where stdout goes


def test_a_shell_that_is_not_on_path_fails_the_step_and_says_so(
    spawner: str, run_pipeline: RunFn, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # steps get the engine's PATH: no bash on it
    record = run_pipeline("name: p\ntasks:\n  - name: look\n    steps: [{run: 'true'}]\n")
    assert record.task("look").status == TaskStatus.FAILED
    assert record.status == RunStatus.FAILED
    assert _log(settings, record.id) == ["shipline: cannot start bash: [Errno 2] No such file or directory: 'bash'"]


def test_a_value_with_a_null_byte_fails_the_task_rather_than_reaching_the_step_cut_short(
    spawner: str, run_pipeline: RunFn, settings: Settings
) -> None:
    record = run_pipeline(
        """
        name: nul
        params:
          x: {default: "a"}
        tasks:
          - name: look
            env: {X: "${{ params.x }}"}
            steps: [{run: 'echo "X=$X"'}]
        """,
        {"x": "a\x00b"},
    )
    assert record.task("look").status == TaskStatus.FAILED
    assert "embedded null byte" in record.task("look").message
    assert not any(line.startswith("X=") for line in _log(settings, record.id))


def test_a_variable_name_with_an_equals_sign_is_refused_not_split(spawner: str, tmp_path: Path) -> None:
    """`A=B` with value `x` would reach the program as `A` with value `B=x`."""
    read, write = os.pipe()
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ValueError, match="illegal environment variable name"):
            spawning.spawn(["true"], cwd_fd=folder, env={"PATH": os.defpath, "A=B": "x"}, output=write)
    finally:
        for fd in (read, write, folder):
            os.close(fd)


def test_a_step_starts_on_the_loop_only_when_no_other_step_runs(run_pipeline: RunFn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone step is spawned on the engine's loop (nothing else waits for it); beside a running
    step, in the spawn thread, so that the loop goes on while a fork waits (for cgroup joins)."""
    where: list[tuple[str, str]] = []
    spawn = local._spawn_piped

    def watched(argv: list[str], cwd_fd: int, env: Mapping[str, str]) -> tuple[int, int]:
        where.append((f"{env['SHIPLINE_TASK']}: {argv[-1].rsplit(';', 1)[-1].strip()}", threading.current_thread().name))
        return spawn(argv, cwd_fd, env)

    monkeypatch.setattr(local, "_spawn_piped", watched)
    record = run_pipeline(
        """
        name: lone
        tasks:
          - name: first
            steps: [{run: 'true'}]
          - name: slow
            needs: [first]
            steps: [{run: 'sleep 1'}]
          - name: beside
            needs: [first]
            steps: [{run: 'sleep 0.2'}, {run: 'echo second'}]
          - name: last
            needs: [slow, beside]
            steps: [{run: 'true'}]
        """
    )
    assert record.status == RunStatus.SUCCEEDED
    loop_thread = threading.current_thread().name  # run_pipeline drives the run here
    threads = dict(where)
    assert threads["first: true"] == loop_thread
    assert threads["beside: echo second"].startswith("shipline-spawn")  # `slow` was sleeping
    assert threads["last: true"] == loop_thread
    assert len(where) == 5


def test_a_program_found_on_path_is_looked_for_again_once_it_is_gone(spawner: str, tmp_path: Path) -> None:
    """The spawn remembers where it found a program on PATH (as a shell hashes its commands), but
    not past the program's removal: then the next one on PATH runs, not 'No such file'."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        tool = folder / "tool"
        tool.write_text(f"#!/bin/sh\necho {folder.name}\n")
        tool.chmod(0o755)
    env = {"PATH": f"{first}{os.pathsep}{second}{os.pathsep}{os.defpath}"}

    def said() -> str:
        read, write = os.pipe()
        folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            pid = spawning.spawn(["tool"], cwd_fd=folder, env=env, output=write)
        finally:
            os.close(write)
            os.close(folder)
        with os.fdopen(read) as output:
            text = output.read().strip()
        os.waitpid(pid, 0)
        return text

    assert said() == "first"
    (first / "tool").unlink()
    assert said() == "second"
