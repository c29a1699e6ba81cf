"""The step server: `shipline step` calls run in forks of one warm process, and behave as processes of their own.

What a user would notice if it went wrong: a helper's output, results, exit code or
failure message that differ from a helper run as its own process; a helper that
outlives its step's timeout, its step's shell or the engine; a hostile request that
runs something else or stops the server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from artifactkit import log_text
from helpers import Background, RunFn, shipline

from shipline.domain.runs import RunRecord
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors import stepserving
from shipline.executors.cgroups import StepGroup, hierarchy, remove_run
from shipline.executors.local import LocalExecutor
from shipline.executors.stepserving import native_client, step_server, write_client
from shipline.launch import call_step_server
from shipline.settings import Settings
from shipline.store.sql import SqlStore

REPORT = """<testsuite name="s" tests="3" failures="1">
<testcase classname="calc" name="adds"/><testcase classname="calc" name="divides"><failure message="boom"/></testcase>
<testcase classname="calc" name="rounds"/></testsuite>"""

TEST_REPORT = f"""
name: report
tasks:
  - name: check
    steps:
      - name: test
        run: |
          cat > TEST-calc.xml <<'XML'
          {REPORT.replace(chr(10), chr(10) + "          ")}
          XML
          echo "tests ran"
          shipline step test-report --reports 'TEST-*.xml' --exit-code 1
"""


def _children(pid: int) -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _parent(int(e.name)) == pid]


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        pid = _parent(pid)
        if pid == ancestor:
            return True
    return False


def _cmdline(pid: int) -> bytes:
    """What `pid` runs; empty for a process that ended meanwhile (any process on the machine may)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _calling(server: int) -> list[int]:
    """The server's copies that run a call now: in a step's cgroup (a copy that waits for its run's next call is not)."""
    copies = _children(server)
    if hierarchy() is None:
        return copies
    return [pid for pid in copies if "/run-" in _cgroup(pid)]


def _cgroup(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _wait_for(what: Callable[[], object], seconds: float, message: Callable[[], str]) -> object:
    deadline = time.monotonic() + seconds
    while not (found := what()):
        assert time.monotonic() < deadline, message()
        time.sleep(0.05)
    return found


@pytest.fixture
def hanging_subscriber() -> Iterator[str]:
    """An HTTP endpoint that takes connections and never answers: a `notify` to it waits."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/events"


def _hanging_notify(url: str, timeout: str = "") -> str:
    return f"""
name: hang
tasks:
  - name: tell
    steps:
      - run: shipline step notify --subscribers {url} --pipeline hang --run-id 1 --outcome succeeded --timeout 120
        {f"timeout: {timeout}" if timeout else ""}
"""


def _command(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)


def _engine(settings: Settings, store: SqlStore, served: bool) -> Engine:
    settings = settings.model_copy(update={"step_server": served})
    return Engine(settings, store, LocalExecutor.from_settings(settings), EventBus())


def _run(engine: Engine, path: Path) -> RunRecord:
    return asyncio.run(engine.drive(engine.submit(load_pipeline(path), {})))


def test_a_served_helper_gives_what_a_process_of_its_own_gives(
    settings: Settings, store: SqlStore, write: Callable[..., Path]
) -> None:
    path = write(TEST_REPORT)
    served = _run(_engine(settings, store, True), path)
    alone = _run(_engine(settings, store, False), path)
    for record in (served, alone):
        assert record.status == "failed"
        (task,) = record.tasks
        assert task.message == "step 'test' exited with code 1: 1 of 3 tests failed: calc.divides"
    assert [t.model_dump(include={"status", "message", "exit_code"}) for t in served.tasks] == [
        t.model_dump(include={"status", "message", "exit_code"}) for t in alone.tasks
    ]
    lines = [log_text(settings, r, "check").splitlines() for r in (served, alone)]
    assert [line.split(" ", 1)[1] for line in lines[0]] == [line.split(" ", 1)[1] for line in lines[1]]
    assert any("2 passed, 1 failed, 0 skipped" in line for line in lines[0])
    server = step_server()
    assert server is not None, "the step server should run on this machine"


def test_a_served_helper_is_stopped_with_its_step(run_pipeline: RunFn, hanging_subscriber: str, settings: Settings) -> None:
    server = step_server()
    assert server is not None
    result: list[RunRecord] = []
    thread = threading.Thread(target=lambda: result.append(run_pipeline(_hanging_notify(hanging_subscriber, "3s"))))
    thread.start()
    try:
        copies = _wait_for(lambda: _calling(server.process.pid), 20, lambda: "no `shipline step notify` reached the step server")
        assert isinstance(copies, list)
        (copy,) = copies
        if hierarchy() is not None:  # it joined the cgroup of the step that called it
            assert "/run-" in Path(f"/proc/{copy}/cgroup").read_text()
    finally:
        thread.join(60)
    (record,) = result
    assert record.status == "failed"
    assert "timed out after 3s" in (record.tasks[0].message or "")
    _wait_for(lambda: not _alive(copy), 10, lambda: f"the helper {copy} outlived its step")
    assert _alive(server.process.pid), "the server ends with the engine, not with a step"


def test_a_helper_whose_caller_is_killed_ends_too(run_pipeline: RunFn, hanging_subscriber: str) -> None:
    server = step_server()
    assert server is not None
    result: list[RunRecord] = []
    thread = threading.Thread(target=lambda: result.append(run_pipeline(_hanging_notify(hanging_subscriber))))
    thread.start()
    try:
        copies = _wait_for(lambda: _calling(server.process.pid), 20, lambda: "no call reached the step server")
        assert isinstance(copies, list)
        (copy,) = copies
        callers = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and int(p.name) != copy
            and b"step\0notify" in _cmdline(int(p.name))
            and _descends_from(int(p.name), os.getpid())  # this test's step, not another test run's
        ]
        assert len(callers) == 1, callers
        os.kill(callers[0], signal.SIGKILL)
    finally:
        thread.join(60)
    (record,) = result
    assert record.status == "failed"
    assert "exited with code -9" in (record.tasks[0].message or "")  # bash ran the call in its place
    _wait_for(lambda: not _alive(copy), 10, lambda: f"the helper {copy} outlived its caller")


def _server_and_copies(engine: Background) -> tuple[int, list[int]]:
    """The step server of a `shipline run` left running, once it runs a call, and its copies."""
    servers = _wait_for(
        lambda: [p for p in _children(engine.proc.pid) if b"shipline.cli.stepserver" in _cmdline(p)],
        60,
        engine.why,
    )
    assert isinstance(servers, list)
    (server,) = servers
    copies = _wait_for(lambda: _children(server), 30, engine.why)
    assert isinstance(copies, list)
    return server, copies


def test_the_server_and_its_helpers_end_with_the_engine(
    home: Path, write: Callable[..., Path], tmp_path: Path, hanging_subscriber: str
) -> None:
    engine = Background("run", str(write(_hanging_notify(hanging_subscriber))), output=tmp_path / "run.out")
    try:
        server, copies = _server_and_copies(engine)
        client = Path(_cmdline(server).split(b"\0")[-2].decode())
        assert (client / "shipline").is_file()
        engine.proc.kill()
        engine.proc.wait(10)
        for pid in (server, *copies):
            _wait_for(lambda pid=pid: not _alive(pid), 10, lambda pid=pid: f"{pid} outlived its engine")
        assert not client.exists(), "the folder of the steps' `shipline` stays after its server"
    finally:
        if engine.proc.poll() is None:
            engine.proc.kill()


def test_the_server_refuses_what_is_not_a_step_and_keeps_serving(tmp_path: Path) -> None:
    server = step_server()
    assert server is not None
    marker = tmp_path / "ran"
    # Not `shipline step ...`: refused (None: the caller runs it itself), nothing run by the server.
    assert call_step_server(server.address, ["shipline", "init", "service", "x", str(marker)]) is None
    # Garbage, a truncated request, a request that claims more than it sends.
    for payload in (b"\x00\x00\x00\x05hello", b"GET / HTTP/1.0\r\n\r\n", (10**9).to_bytes(4, "big") + b"x" * 100):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect("\0" + server.address)
            raw.sendall(payload)
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(10)
            assert raw.recv(64) == b"refused"
    assert not marker.exists()
    assert server.process.poll() is None
    # And a real call still works.
    env = {**os.environ, "SHIPLINE_STEP_SOCKET": server.address, "PATH": f"{server.client}{os.pathsep}{os.environ['PATH']}"}
    done = _command(["shipline", "step", "test-report", "--reports", "none.xml"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no JUnit XML report matched none.xml" in done.stdout


@pytest.mark.parametrize("client", ["native", "python"])
def test_the_steps_shipline_hands_on_what_the_server_does_not_take(tmp_path: Path, client: str) -> None:
    server = step_server()
    assert server is not None
    native = native_client()
    if client == "native" and native is None:
        pytest.skip("the C client is not built here (`make install` builds it where a C compiler is)")
    folder = write_client(native if client == "native" else None)
    try:
        steps_shipline = str(folder / "shipline")
        (tmp_path / "TEST-x.xml").write_text(REPORT)
        env = {**os.environ, "SHIPLINE_STEP_FALLBACK": server.fallback, "SHIPLINE_OUTPUT": str(tmp_path / "out")}
        for address in (server.address, "shipline-steps-nobody-listens"):  # served, then run by the installed one
            (tmp_path / "out").unlink(missing_ok=True)
            done = _command([steps_shipline, "step", "test-report"], {**env, "SHIPLINE_STEP_SOCKET": address}, tmp_path)
            assert done.returncode == 1, done.stderr
            assert "1 of 3 tests failed: calc.divides" in done.stderr
            assert "tests-failed=1" in (tmp_path / "out").read_text()
        # Not a step: handed to the installed `shipline` as it is.
        version = _command([steps_shipline, "--version"], env)
        assert version.stdout.startswith("shipline, version"), version
        # No server and nothing to hand it to: a clear error, not a silent success.
        env.pop("SHIPLINE_STEP_FALLBACK")
        lost = _command([steps_shipline, "--version"], env)
        assert lost.returncode != 0
        assert "SHIPLINE_STEP_FALLBACK is not set" in lost.stderr
    finally:
        shutil.rmtree(folder)


def test_python_m_shipline_also_calls_the_server_or_runs_the_command(tmp_path: Path) -> None:
    server = step_server()
    assert server is not None
    (tmp_path / "TEST-x.xml").write_text(REPORT)
    for address in (server.address, "shipline-steps-nobody-listens"):
        (tmp_path / "out").unlink(missing_ok=True)
        env = {**os.environ, "SHIPLINE_STEP_SOCKET": address, "SHIPLINE_OUTPUT": str(tmp_path / "out")}
        done = _command([sys.executable, "-m", "shipline", "step", "test-report"], env, tmp_path)
        assert done.returncode == 1, done.stderr
        assert "tests-failed=1" in (tmp_path / "out").read_text()


def test_the_step_server_can_be_turned_off(home: Path, write: Callable[..., Path]) -> None:
    path = write(
        """
        name: where
        tasks:
          - name: look
            steps:
              - run: echo "socket=${SHIPLINE_STEP_SOCKET:-none}"; shipline step test-report --reports none.xml
        """
    )
    on = shipline("run", str(path))
    off = shipline("run", str(path), env={"SHIPLINE_STEP_SERVER": "false"})
    assert on.returncode == off.returncode == 0, (on.stdout + on.stderr, off.stdout + off.stderr)
    logs = sorted((home / "logs").rglob("*.log"))
    texts = [p.read_text() for p in logs]
    assert any("socket=shipline-steps-" in t for t in texts)
    assert any("socket=none" in t for t in texts)


def test_a_step_server_that_died_is_replaced(run_pipeline: RunFn) -> None:
    first = step_server()
    assert first is not None
    first.process.kill()
    first.process.wait(10)
    record = run_pipeline(
        """
        name: after
        tasks:
          - name: look
            steps:
              - run: shipline step test-report --reports none.xml
        """
    )
    assert record.status == "succeeded", record.tasks[0].message
    second = step_server()
    assert second is not None and second.process.pid != first.process.pid
    assert second.process.poll() is None
    assert not first.client.exists(), "the dead server's client folder was left"


def test_no_engine_credential_reaches_the_server_or_its_copies(
    home: Path, write: Callable[..., Path], tmp_path: Path, hanging_subscriber: str
) -> None:
    token = "engine-only-token-4f1c"
    env = {**os.environ, "SHIPLINE_GITEA_TOKEN": token, "AWS_SECRET_ACCESS_KEY": token}
    engine = Background("run", str(write(_hanging_notify(hanging_subscriber))), output=tmp_path / "run.out", env=env)
    try:
        server, copies = _server_and_copies(engine)
        for pid in (server, *copies):  # what /proc/PID/environ shows any process of the same user
            assert token.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        engine.proc.kill()
        engine.proc.wait(10)


@contextmanager
def _own_server(*steps: tuple[int, int]) -> Iterator[tuple[stepserving.StepServer, list[StepGroup]]]:
    """A step server of the test's own (started with the test's environment) and a step cgroup for
    each (run, step); all gone at the end, the server's copies with it."""
    if hierarchy() is None:
        pytest.skip("copies are taken again only where steps have cgroups")
    server = stepserving._start()
    groups = [StepGroup.create(run, "t", 1, index) for run, index in steps]
    try:
        assert all(groups)
        yield server, [g for g in groups if g is not None]
    finally:
        os.close(server.alive)
        server.process.wait(10)
        for group in groups:
            if group is not None:
                group.kill()
                group.remove()
        for run in {run for run, _ in steps}:
            remove_run(run)


def test_a_copy_serves_the_next_calls_of_its_run_as_they_came_and_no_other_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIPLINE_LOG_LEVEL", "debug")  # its line per call names the copy that ran it
    with _own_server((901, 0), (901, 1), (902, 0), (901, 2), (901, 3)) as (server, groups):
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "TEST-x.xml").write_text(REPORT)
        env = {
            **os.environ,
            "SHIPLINE_STEP_SOCKET": server.address,
            "PATH": f"{server.client}{os.pathsep}{os.environ['PATH']}",
        }

        def call(group: StepGroup, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["bash", "-c", f'echo $$ > {group.procs_file} && exec shipline step test-report --reports "TEST-*.xml"'],
                env={**env, **extra},
                cwd=cwd,
                capture_output=True,
                text=True,
                check=False,
            )

        first = call(groups[0], tmp_path / "a", SHIPLINE_OUTPUT=str(tmp_path / "first.out"))
        # The same run's next call, in another folder, without $SHIPLINE_OUTPUT: what the first call
        # was given (its folder, its environment) is not what this one sees.
        second = call(groups[1], tmp_path / "b")
        other_run = call(groups[2], tmp_path / "a")
        assert first.returncode == 0 and other_run.returncode == 0, first.stderr + other_run.stderr
        assert "no JUnit XML report matched" in first.stdout
        assert second.returncode == 1 and "1 of 3 tests failed: calc.divides" in second.stderr
        assert (tmp_path / "first.out").read_text().count("tests-passed=") == 1
        after_failure = call(groups[3], tmp_path / "a")
        again = call(groups[4], tmp_path / "a")
        assert after_failure.returncode == 0 and again.returncode == 0
        time.sleep(0.3)  # the server's lines come after the callers' ends
        copies = [int(pid) for pid in re.findall(r"; copy (\d+), its call", capfd.readouterr().err)]
        assert len(copies) == 5, copies
        assert copies[1] == copies[0], "the run's second call forked a copy anew"
        assert copies[2] != copies[0], "a call of another run was given a copy of the first run"
        assert copies[3] != copies[0], "a copy whose call failed was taken again"
        assert copies[4] == copies[3]
        assert _alive(copies[4]) and "/run-" not in _cgroup(copies[4]), "a waiting copy stays in a step's cgroup"
        assert not _alive(copies[0])
    assert not _alive(copies[4]), "a waiting copy outlived its server"


CRAFTED_CALLER = """
import os, socket, struct, sys
from shipline.launch import encode_request
with open(sys.argv[1], "w") as procs:  # into the step's cgroup, as a step's shell is
    procs.write(str(os.getpid()))
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect("\\0" + sys.argv[2])
request = encode_request(["shipline", "step", "test-report"], sys.argv[3], dict(os.environb))
sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
print("exit code", sock.recv(64).decode().strip())
"""


def test_a_kept_copy_that_cannot_take_a_call_does_not_report_success(tmp_path: Path) -> None:
    """A call that fails before its command runs (its folder is gone) fails, in a kept copy as in a new one."""
    with _own_server((903, 0), (903, 1)) as (server, groups):
        said, errors = [], []
        for group, cwd in zip(groups, (tmp_path, tmp_path / "gone"), strict=True):
            done = subprocess.run(
                [sys.executable, "-c", CRAFTED_CALLER, str(group.procs_file), server.address, str(cwd)],
                capture_output=True,
                text=True,
                check=False,
            )
            said.append(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr)
            errors.append(done.stderr)
        assert said[0] == "exit code 0", said
        assert said[1].startswith("exit code ") and said[1] != "exit code 0", said
        assert f"cannot run `step test-report` in {tmp_path / 'gone'}: No such file or directory" in errors[1]
