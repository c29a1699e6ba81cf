"""The `shipline` command as a user runs it: a real process, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, Background, shipline

Write = Callable[..., Path]


def test_validate_ok_and_problems(write: Write, home: Path) -> None:
    good = REPO / "examples" / "hello.yaml"
    done = shipline("validate", str(good))
    assert done.returncode == 0, done.stderr
    assert "1 definition OK" in done.stderr
    bad = write("name: demo\ntasks:\n  - name: a\n    needz: [b]\n    steps: [{run: x}]\n")
    done = shipline("validate", str(good), str(bad))
    assert done.returncode == 2
    assert f"{bad}:4:5: unknown key 'needz'" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr


def test_validate_json(write: Write, home: Path) -> None:
    bad = write("name: demo\ntasks: [{name: a, steps: [{run: 'echo ${{ params.nope }}'}]}]\n")
    done = shipline("validate", "--json", str(bad))
    assert done.returncode == 2
    [problem] = json.loads(done.stdout)
    assert problem["line"] == 2 and problem["message"].startswith("'params.nope': no param")


def test_run_json_record_and_exit_codes(home: Path, write: Write) -> None:
    done = shipline("run", str(REPO / "examples" / "hello.yaml"), "-p", "greeting=hi", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert set(record) >= {"id", "pipeline", "status", "params", "started_at", "finished_at", "tasks"}
    assert record["status"] == "succeeded"
    assert record["params"]["greeting"] == "hi"
    assert {t["name"]: t["status"] for t in record["tasks"]}["consume"] == "succeeded"
    for task in record["tasks"]:
        assert set(task) >= {"name", "status", "results", "started_at", "finished_at"}
    assert "consume | hi, world! The answer is 42." in done.stderr

    failing = write("name: f\ntasks: [{name: a, steps: [{run: 'echo oops; exit 7'}]}]\n")
    done = shipline("run", str(failing))
    assert done.returncode == 1
    assert "a failed" in done.stdout and "exited with code 7" in done.stdout
    assert "shipline runs logs" in done.stdout
    assert "a last lines:\n  oops" in done.stdout, "the failed task's last output is shown"


def test_run_bad_input_exits_2_without_traceback(home: Path, write: Write) -> None:
    hello = str(REPO / "examples" / "hello.yaml")
    for args in (["-p", "nope=1"], ["-p", "no-equals-sign"], ["-p", "who=https://ghp_T0k3nXYZ@github.com/acme/priv.git"]):
        done = shipline("run", hello, *args)
        assert done.returncode == 2, args
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "param 'who' is a URL with credentials" in done.stderr and "ghp_T0k3nXYZ" not in done.stderr
    done = shipline("run", str(write("name: x\n")))
    assert done.returncode == 2 and "a pipeline needs `tasks:`" in done.stderr
    done = shipline("run", "/no/such/file.yaml")
    assert done.returncode == 2 and "no such file" in done.stderr
    required = write("name: r\nparams: {env: {description: target environment}}\ntasks: [{name: a, steps: [{run: 'true'}]}]\n")
    done = shipline("run", str(required))
    assert done.returncode == 2
    assert "param 'env' is required (target environment): pass -p env=VALUE" in done.stderr
    listed = json.loads(shipline("runs", "list", "--json").stdout)
    assert listed == [], "bad params create no run"


def test_runs_list_show_logs_rerun(home: Path) -> None:
    hello = str(REPO / "examples" / "hello.yaml")
    first = json.loads(shipline("run", hello, "--json").stdout)
    listed = shipline("runs", "list")
    assert listed.returncode == 0 and "hello" in listed.stdout and "succeeded" in listed.stdout
    shown = json.loads(shipline("runs", "show", str(first["id"]), "--json").stdout)
    assert shown["id"] == first["id"] and shown["tasks"] == first["tasks"]
    logs = shipline("runs", "logs", str(first["id"]), "--task", "consume")
    assert logs.stdout.splitlines() == [
        '==> consume / step 1: echo "${{ params.greeting }}, ${{ params.who }}! The answ...',
        "hello, world! The answer is 42.",
    ]
    bad = shipline("runs", "logs", str(first["id"]), "--task", "nope")
    assert bad.returncode == 2 and "has no task 'nope'" in bad.stderr
    again = shipline("runs", "rerun", str(first["id"]), "--json")
    assert again.returncode == 0
    record = json.loads(again.stdout)
    assert record["rerun_of"] == first["id"] and record["id"] != first["id"]
    missing = shipline("runs", "show", "4242")
    assert missing.returncode == 2 and "no run 4242" in missing.stderr


def _start_run(write: Write, tmp_path: Path, name: str = "long") -> tuple[subprocess.Popen[str], Path]:
    pidfile = tmp_path / "child.pid"
    path = write(
        f"""
        name: {name}
        tasks:
          - name: work
            steps:
              - run: |
                  echo "started work"
                  sleep 300 & echo $! > {pidfile}
                  echo "child running"
                  wait
          - name: after
            steps: [{{run: 'true'}}]
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipline", "run", str(path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    return proc, pidfile


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


def test_cancel_from_another_shell(home: Path, write: Write, tmp_path: Path) -> None:
    proc, pidfile = _start_run(write, tmp_path)
    run_id = json.loads(shipline("runs", "list", "--json").stdout)[0]["id"]
    done = shipline("runs", "cancel", str(run_id), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "cancelled"
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    record = json.loads(out)
    assert {t["name"]: t["status"] for t in record["tasks"]} == {"work": "cancelled", "after": "skipped"}
    assert not _alive(int(pidfile.read_text()))


def test_ctrl_c_cancels_the_run(home: Path, write: Write, tmp_path: Path) -> None:
    proc, pidfile = _start_run(write, tmp_path)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert json.loads(out)["status"] == "cancelled"
    assert "cancelling" in err
    assert not _alive(int(pidfile.read_text()))


def test_killed_engine_loses_nothing(home: Path, write: Write, tmp_path: Path) -> None:
    proc, pidfile = _start_run(write, tmp_path)
    time.sleep(0.3)  # let "child running" reach the log
    proc.kill()
    proc.communicate()
    child = int(pidfile.read_text())
    listed = json.loads(shipline("runs", "list", "--json").stdout)
    [record] = listed
    assert record["status"] == "failed"
    assert record["message"].startswith("interrupted: the engine (pid")
    assert f"shipline runs rerun {record['id']}" in record["message"]
    tasks = {t["name"]: (t["status"], t["message"]) for t in record["tasks"]}
    assert tasks == {"work": ("failed", "interrupted"), "after": ("skipped", "interrupted")}
    logs = shipline("runs", "logs", str(record["id"]))
    assert "started work" in logs.stdout and "child running" in logs.stdout
    assert not _alive(child), "the dead engine's step processes were stopped"
    assert not list(home.rglob("*.out")), "the dead engine's raw $SHIPLINE_OUTPUT files were left on disk"


def test_live_view_on_a_terminal(home: Path) -> None:
    hello = str(REPO / "examples" / "hello.yaml")
    cmd = f"{sys.executable} -m shipline run {hello}"
    done = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    assert done.returncode == 0, done.stdout
    assert "run 1 succeeded" in done.stdout
    assert "report (finally)" in done.stdout
    assert "consume |" not in done.stdout, "a terminal gets the live table, not log lines"


def test_help_teaches() -> None:
    done = shipline("--help")
    assert "shipline run examples/hello.yaml" in done.stdout
    done = shipline("run", "--help")
    assert "Exit status: 0 when the run succeeded" in done.stdout


def test_schema_is_json() -> None:
    schema = json.loads(shipline("schema").stdout)
    assert schema["title"] == "shipline pipeline"


def test_logs_follow_streams_until_the_run_ends(home: Path, write: Write, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    path = write(
        f"""
        name: chatty
        tasks:
          - name: talk
            steps:
              - run: |
                  echo "first line"
                  while [ ! -e {gate} ]; do sleep 0.05; done
                  echo "second line"
          - name: more
            steps: [{{run: echo "third line"}}]
        """
    )
    run = Background("run", str(path), output=tmp_path / "run.out")
    try:
        deadline = time.monotonic() + 120
        while not json.loads(shipline("runs", "list", "--json").stdout):
            assert run.proc.poll() is None and time.monotonic() < deadline, f"its run was never listed: {run.why()}"
            time.sleep(0.1)
        run_id = json.loads(shipline("runs", "list", "--json").stdout)[0]["id"]
        with subprocess.Popen(
            [sys.executable, "-m", "shipline", "runs", "logs", str(run_id), "-f"], stdout=subprocess.PIPE, text=True
        ) as follow:
            assert follow.stdout is not None
            seen = []
            while "first line" not in seen:
                line = follow.stdout.readline()
                status = shipline("runs", "show", str(run_id)).stdout
                assert line, f"`runs logs -f` ended before the first line: {seen}; the run: {status}"
                seen.append(line.strip())
            gate.touch()
            out, _ = follow.communicate(timeout=60)
        assert follow.returncode == 0
        lines = seen + out.splitlines()
        assert lines.index("first line") < lines.index("second line") < lines.index("third line")
    finally:
        gate.touch()
        run.proc.wait(timeout=60)


def test_long_lines_and_binary_output_are_kept(home: Path, write: Write) -> None:
    path = write(
        """
        name: noisy
        tasks:
          - name: noise
            steps:
              - run: |
                  head -c 150000 /dev/zero | tr '\\0' 'x'
                  printf '\\n\\xff\\xfe bytes\\n'
                  printf 'no newline at the end'
        """
    )
    done = shipline("run", str(path), "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["id"]
    lines = shipline("runs", "logs", str(run_id)).stdout.splitlines()[1:]
    assert [len(line) for line in lines[:3]] == [65536, 65536, 150000 - 2 * 65536]
    assert lines[3] == "\ufffd\ufffd bytes"
    assert lines[4] == "no newline at the end"


def test_help_lists_every_command_with_its_own_summary() -> None:
    import click

    from shipline.cli.main import COMMANDS, main

    ctx = click.Context(main)
    for name, (_, summary) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.get_short_help_str(limit=200) == summary, name
    done = shipline("--help")
    assert done.returncode == 0 and all(f"  {name} " in done.stdout for name in COMMANDS)


@pytest.mark.parametrize(
    ("argv", "unused"),
    [
        # What made `shipline --help` take a second: SQLAlchemy, FastAPI, the engine.
        (["--help"], ["sqlalchemy", "fastapi", "shipline.engine.running", "rich.live"]),
        # In editors and pre-commit hooks: SQLAlchemy and rich were half of its 0.3 s.
        (["validate", str(REPO / "examples" / "hello.yaml")], ["sqlalchemy", "rich", "shipline.engine.running"]),
        # Only `env credentials` and `env status` with a kubeconfig talk to a cluster: 60 ms of client.
        (["env", "list"], ["lightkube", "shipline.integrations.clusters"]),
    ],
)
def test_a_quick_command_loads_nothing_it_does_not_use(argv: list[str], unused: list[str], tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom shipline.launch import main\n"
        f"sys.argv = ['shipline', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    print('exit', exc.code)\n"
        f"print('loaded:', [m for m in {unused!r} if m in sys.modules])"
    )
    env = {**os.environ, "SHIPLINE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.strip().splitlines()[-2:] == ["exit 0", "loaded: []"], done.stdout + done.stderr


def test_a_command_runs_with_the_cyclic_collector_once_started(tmp_path: Path) -> None:
    # Start-up runs without it (`shipline.launch`); a command that runs for hours (`serve`, a
    # long `run`) must have it back, or every reference cycle it makes stays in memory.
    probe = (
        "import gc, sys\n"
        "from shipline.launch import main\n"
        "sys.argv = ['shipline', 'runs', 'list', '--json']\n"
        "try:\n    main()\n"
        "finally:\n    print('collector on:', gc.isenabled(), 'start-up frozen:', gc.get_freeze_count() > 10000)\n"
    )
    env = {**os.environ, "SHIPLINE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.strip().endswith("collector on: True start-up frozen: True"), done.stdout + done.stderr
