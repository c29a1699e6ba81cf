"""What an attacker, an unlucky operator and a newcomer broke in the engine (issue 12), each kept broken-proof."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RunFn

from shipline.domain.runs import RunRecord, RunStatus, TaskStatus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.exceptions import DefinitionError
from shipline.executors import cgroups
from shipline.settings import Settings


def test_a_finally_task_reports_with_a_fallback_when_a_result_is_missing(run_pipeline: RunFn) -> None:
    record = run_pipeline("""
        name: fallback
        tasks:
          - name: build
            results: [version]
            steps: [{run: exit 3}]
        finally:
          - name: notify
            env: {VERSION: "${{ tasks.build.results.version || 'unknown' }}"}
            results: [said]
            steps:
              - run: echo "said=build $VERSION ended ${{ run.status }}" >> "$SHIPLINE_OUTPUT"
    """)
    assert record.status == RunStatus.FAILED
    notify = record.task("notify")
    assert notify.status == TaskStatus.SUCCEEDED, notify.message
    assert notify.results == {"said": "build unknown ended failed"}


@pytest.mark.parametrize("level", ["task", "pipeline"])
def test_uses_may_not_read_outside_the_repository(write: Callable[..., Path], tmp_path: Path, level: str) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("name: secret\ntasks: [{name: a, steps: [{run: 'echo stolen'}]}]\n")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "tasks").mkdir()
    (repo / "tasks" / "link.yaml").symlink_to(secret)
    (repo / "tasks" / "ok.yaml").write_text("steps: [{run: echo fine}]\n")
    for uses in ("../../../../../../etc/passwd", "../../secret.yaml", str(secret), "../tasks/link.yaml"):
        uses = uses if uses.startswith(".") else "../" * 20 + uses.lstrip("/")
        text = f"name: p\ntasks: [{{name: a, uses: '{uses}'}}]\n" if level == "task" else f"name: p\nuses: '{uses}'\n"
        path = write(text, "repo/.shipline/pipeline.yaml")
        with pytest.raises(DefinitionError) as err:
            load_pipeline(path)
        [problem] = err.value.problems
        assert "is outside the pipeline's repository" in problem.message, problem
        assert "not a mapping" not in str(err.value) and "stolen" not in str(err.value)
    # Inside the repository is fine, also one folder up from the file.
    fine = load_pipeline(write("name: p\ntasks: [{name: a, uses: ../tasks/ok.yaml}]\n", "repo/.shipline/pipeline.yaml"))
    assert fine.tasks[0].steps[0].run == "echo fine"
    # A caller may name a narrower root: then the same file is outside it.
    with pytest.raises(DefinitionError, match="outside the pipeline's repository"):
        load_pipeline(repo / ".shipline" / "pipeline.yaml", root=repo / ".shipline")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # leave nothing behind on this shared machine
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("end", ["step ends", "task times out", "step times out"])
def test_no_process_of_a_step_outlives_it(run_pipeline: RunFn, tmp_path: Path, end: str) -> None:
    """`setsid` leaves the step's process group, a double fork its parent: the step's cgroup still holds them."""
    pids = tmp_path / "pids"
    body = {"step ends": "true", "task times out": "sleep 60", "step times out": "sleep 60"}[end]
    task_timeout = "timeout: 1s" if end == "task times out" else ""
    step_timeout = ", timeout: 1s" if end == "step times out" else ""
    record = run_pipeline(f"""
        name: escape
        tasks:
          - name: a
            {task_timeout}
            steps:
              - {{run: ": > {pids}; setsid sh -c 'echo $$ >> {pids}; exec sleep 300' & (sh -c 'echo $$ >> {pids}; exec sleep 300' &) ; while [ $(wc -l < {pids}) -lt 2 ]; do sleep 0.01; done; {body}"{step_timeout}}}
    """)
    assert record.task("a").status == (TaskStatus.SUCCEEDED if end == "step ends" else TaskStatus.FAILED)
    left = [int(p) for p in pids.read_text().split()]
    assert len(left) == 2
    assert all(_wait_gone(pid) for pid in left), f"processes of the step outlived it ({end})"


def test_a_group_its_step_left_empty_serves_the_run_s_next_step_and_none_outlives_the_run(
    run_pipeline: RunFn, tmp_path: Path
) -> None:
    """Making and removing a cgroup costs more than a quick step: a run's next step gets the
    group the step before it left empty; one a step left a process in is killed and removed.
    (The second step's process is in a session of its own before that step ends: one not yet
    through `setsid` would die with the step's process group, and leave the group empty.)"""
    where = cgroups.hierarchy()
    if where is None:
        pytest.skip("no writable cgroup hierarchy here")
    pid = tmp_path / "pid"
    record = run_pipeline(f"""
        name: reuse
        tasks:
          - name: a
            steps:
              - run: cat /proc/self/cgroup > {tmp_path}/0
              - run: "cat /proc/self/cgroup > {tmp_path}/1; setsid sh -c 'echo $$ > {pid}; exec sleep 300' & while [ ! -s {pid} ]; do sleep 0.01; done"
              - run: cat /proc/self/cgroup > {tmp_path}/2
          - name: b
            needs: [a]
            steps: [{{run: "cat /proc/self/cgroup > {tmp_path}/3"}}]
    """)
    assert record.status == RunStatus.SUCCEEDED

    def group(step: int) -> Path:
        for line in (tmp_path / str(step)).read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (where.controller is None and controllers == "") or where.controller in controllers.split(","):
                return where.top / path.lstrip("/")
        raise AssertionError(f"step {step} was in no group of {where.kind}")

    first, second, third, fourth = (group(i) for i in range(4))
    assert first.parent.name == f"run-{record.id}" and first.name == "a.1.0"
    assert second == first, "the group the first step left empty"
    assert third != second and third.name == "a.1.2", "a new group: the second step left a process in its own"
    assert fourth == third, "another task of the run"
    assert _wait_gone(int(pid.read_text())), "the process the second step left was killed with its group"
    assert not first.parent.exists(), "the run's groups are removed at its end"


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_a_step_is_in_its_own_cgroup_and_its_errors_name_its_own_lines(
    run_pipeline: RunFn, settings: Settings, shell: str
) -> None:
    """The shell joins the step's cgroup before the script runs, on the script's first line."""
    if cgroups.hierarchy() is None:
        pytest.skip("no writable cgroup hierarchy here")
    record = run_pipeline(f"""
        name: lines
        tasks:
          - name: a
            steps:
              - shell: {shell}
                run: |
                  grep -q '/run-[0-9]*/a[.]1[.]0$' /proc/self/cgroup && echo "in the step's cgroup"
                  echo "told: ${{SHIPLINE_CGROUP_PROCS-nothing}}"
                  no-such-command-here
    """)
    assert record.task("a").status == TaskStatus.FAILED
    log = "".join(p.read_text() for p in (settings.logs / str(record.id)).glob("a.*.log"))
    assert "in the step's cgroup" in log
    assert "told: nothing" in log, "the step's environment is its own"
    assert re.search(r"(line |sh: )3: no-such-command-here: (command )?not found", log), log


def test_without_a_writable_cgroup_steps_still_run_with_a_warning(
    run_pipeline: RunFn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path / "no-cgroups")
    cgroups.hierarchy.cache_clear()
    try:
        record = run_pipeline("name: plain\ntasks: [{name: a, steps: [{run: 'sleep 0.1 & echo hi'}]}]\n")
    finally:
        cgroups.hierarchy.cache_clear()
    assert record.status == RunStatus.SUCCEEDED
    assert any("tracked by process group only" in r.getMessage() for r in caplog.records)


def test_an_output_that_is_not_a_file_fails_its_step_and_holds_up_nothing(
    run_pipeline: RunFn, tmp_path: Path, settings: Settings
) -> None:
    """$SHIPLINE_OUTPUT made a FIFO (whose open would wait for a writer, and the engine's loop
    with it), a symlink to a file elsewhere (whose lines would become the task's results), or a
    folder: the step fails, saying why, nothing outside is read, and the other tasks go on."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("token=outside\n")
    text = f"""
        name: odd-outputs
        tasks:
          - name: fifo
            needs: []
            steps: [{{run: 'mkfifo "$SHIPLINE_OUTPUT"'}}]
          - name: link
            needs: []
            steps: [{{run: 'ln -s {elsewhere} "$SHIPLINE_OUTPUT"'}}]
            results: [token]
          - name: folder
            needs: []
            steps: [{{run: 'mkdir "$SHIPLINE_OUTPUT"'}}]
          - name: plain
            needs: []
            steps: [{{run: 'echo token=inside >> "$SHIPLINE_OUTPUT"'}}]
            results: [token]
    """
    ended: list[RunRecord] = []
    runner = threading.Thread(target=lambda: ended.append(run_pipeline(text)), daemon=True)
    runner.start()
    runner.join(60)
    if runner.is_alive():  # the engine waits in the FIFO's open: a writer lets it go, and the test end
        for fifo in settings.logs.rglob("fifo.*.out"):
            with open(fifo, "w"):
                pass
        runner.join(30)
        pytest.fail("the engine's loop stopped at a FIFO a step left as its $SHIPLINE_OUTPUT")
    record = ended[0]
    for name in ("fifo", "link", "folder"):
        task = record.task(name)
        assert task.status == TaskStatus.FAILED, name
        assert "$SHIPLINE_OUTPUT is not a regular file" in task.message, task.message
    assert record.task("link").results == {}
    assert record.task("plain").status == TaskStatus.SUCCEEDED
    assert record.task("plain").results == {"token": "inside"}
    assert elsewhere.read_text() == "token=outside\n", "what the link led to is neither read nor touched"
    assert list((settings.logs / str(record.id)).glob("*.out")) == [], "no output is left behind"


def test_a_fifo_or_a_symlink_planted_at_a_later_step_s_log_holds_up_nothing(
    run_pipeline: RunFn, tmp_path: Path, settings: Settings
) -> None:
    """A step knows its run's log folder (its $SHIPLINE_OUTPUT is there) and the names of the
    steps' logs after it: the engine's open of a FIFO for writing would wait for a reader,
    and a symlink would take the next step's lines elsewhere.  Each is replaced by a log."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the engine's\n")
    text = f"""
        name: planted-logs
        tasks:
          - name: t
            steps:
              - run: |
                  logs=$(dirname "$SHIPLINE_OUTPUT")
                  mkfifo "$logs/t.1.1.log"
                  ln -s {elsewhere} "$logs/t.1.2.log"
              - run: echo second step
              - run: echo third step
    """
    ended: list[RunRecord] = []
    runner = threading.Thread(target=lambda: ended.append(run_pipeline(text)), daemon=True)
    runner.start()
    runner.join(60)
    if runner.is_alive():  # the engine waits in the FIFO's open: a reader lets it go, and the test end
        for fifo in settings.logs.rglob("t.1.1.log"):
            with open(fifo):
                pass
        runner.join(30)
        pytest.fail("the engine's loop stopped at a FIFO planted at a step's log")
    record = ended[0]
    assert record.status == RunStatus.SUCCEEDED, record.message
    logs = settings.logs / str(record.id)
    assert (logs / "t.1.1.log").read_text().endswith(" second step\n")
    assert (logs / "t.1.2.log").read_text().endswith(" third step\n")
    assert elsewhere.read_text() == "not the engine's\n"


def test_a_workdir_cannot_follow_a_symlink_out_of_the_workspace(run_pipeline: RunFn, tmp_path: Path, settings: Settings) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    record = run_pipeline(f"""
        name: escape
        tasks:
          - name: plant
            steps: [{{run: "ln -s {outside} out && mkdir -p real && ln -s real inner"}}]
          - name: inside
            steps:
              - workdir: inner/sub
                run: pwd > here.txt
          - name: follow
            steps:
              - workdir: out/made-by-engine
                run: touch written-by-step
    """)
    follow = record.task("follow")
    assert follow.status == TaskStatus.FAILED
    assert "outside the run's workspace" in follow.message
    assert list(outside.iterdir()) == [], "nothing was made or written outside the workspace"
    assert record.task("inside").status == TaskStatus.SUCCEEDED, "a symlink that stays inside is fine"
    here = settings.workspaces / str(record.id) / "real" / "sub" / "here.txt"
    assert here.read_text().strip() == str(here.parent.resolve())


def test_a_planted_symlink_does_not_redirect_a_later_task_s_secret_file(
    engine: Engine, write: Callable[..., Path], tmp_path: Path
) -> None:
    engine.secrets.set("deploy-key", "k3y-value-for-deploy")
    trap = tmp_path / "trap"
    trap.mkdir()
    pipeline = load_pipeline(
        write(f"""
        name: plant
        tasks:
          - name: untrusted-build
            steps: [{{run: 'mkdir -p "$HOME/.secret-files" && ln -s {trap} "$HOME/.secret-files/deploy"'}}]
          - name: deploy
            env: {{KEY: "${{{{ secret_files.deploy-key }}}}"}}
            steps: [{{run: 'test -f "$KEY" && echo "$KEY" > {tmp_path}/used'}}]
    """)
    )
    record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
    assert record.status == RunStatus.SUCCEEDED, record.task("deploy").message
    assert list(trap.iterdir()) == [], "the secret was written through the step's symlink"
    assert not (tmp_path / "used").read_text().strip().startswith(str(trap))


def test_validate_reports_shape_names_and_references_in_one_pass(write: Callable[..., Path]) -> None:
    path = write("""
        name: Not_A_Name
        params:
          bad name: x
        tasks:
          - name: a
            retries: 99
            steps: [{run: echo}]
          - name: b
            steps: []
          - name: b
            steps: [{run: "echo ${{ params.nope }}"}]
          - name: c
            needs: [ghost, a]
            env: {V: "${{ tasks.a.results.version }}"}
            steps: [{run: echo}]
    """)
    with pytest.raises(DefinitionError) as err:
        load_pipeline(path)
    found = [f"{p.line}:{p.column}: {p.message}" for p in err.value.problems]
    expected = [
        "1:7: name: 'Not_A_Name' is not a name shipline takes: write lower-case letters, digits and '-', at most 63, "
        "starting and ending with a letter or digit (e.g. build-image)",
        "3:13: params.bad name: 'bad name' is not a key shipline takes: write letters, digits, '_' and '-', at most 64, "
        "starting with a letter or '_' (e.g. image_tag)",
        "6:14: tasks.0.retries: Input should be less than or equal to 10",
        "8:5: tasks.1: `steps:` is empty: give the task at least one step (`- run: ...`), or `uses:` a reusable task",
        "10:11: task name 'b' is used twice; task names must be unique",
        "13:13: needs 'ghost': no such task in `tasks:`",
    ]
    assert found == expected, "\n".join(found)
    assert not any("pattern" in p for p in found)


def test_a_catalog_name_cannot_climb_out_of_the_catalog(write: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("steps: [{run: echo planted}]\n")
    climb = "../" * 30 + str(tmp_path).lstrip("/") + "/evil"
    for text in (f"name: p\ntasks: [{{name: a, uses: 'shipline/{climb}'}}]\n", f"name: p\nuses: 'shipline/{climb}'\n"):
        with pytest.raises(DefinitionError, match="no (catalog task|pipeline) 'shipline/"):
            load_pipeline(write(text, "repo/p.yaml"))


def test_empty_steps_and_tasks_are_called_empty(write: Callable[..., Path]) -> None:
    write("steps: []\n", "repo/tasks/empty.yaml")
    for text, expected in (
        ("name: p\ntasks: []\n", "`tasks:` is empty: give the pipeline at least one task"),
        ("name: p\ntasks: [{name: a, uses: ./tasks/empty.yaml}]\n", "steps: `steps:` is empty: give at least one step"),
    ):
        with pytest.raises(DefinitionError) as err:
            load_pipeline(write(text, "repo/p.yaml"))
        assert any(expected in p.message for p in err.value.problems), err.value
        assert not any("needs `" in p.message or "at least 1 item" in p.message for p in err.value.problems)
