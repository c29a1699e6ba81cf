"""Secrets: referenced by name, encrypted at rest, given to steps as data, masked everywhere."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from helpers import RunFn
from pydantic import SecretStr
from sqlalchemy import text

from shipline.domain.runs import RunStatus, TaskStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.recording import RunRecorder
from shipline.engine.running import Engine
from shipline.exceptions import DefinitionError, UsageError
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore

Write = Callable[..., Path]

USES_TOKEN = """
name: deploy
tasks:
  - name: login
    env: {TOKEN: "${{ secrets.registry-token }}"}
    steps:
      - run: |
          echo "logging in with $TOKEN"
          echo "inline ${{ secrets.registry-token }}"
          echo "echoed=$TOKEN" >> "$SHIPLINE_OUTPUT"
          printf %s "$TOKEN" > token.seen
    results: [echoed]
"""


def log_text(settings: Settings, run_id: int) -> str:
    return "".join(p.read_text() for p in sorted((settings.logs / str(run_id)).rglob("*.log")))


def test_a_step_gets_the_value_and_nothing_keeps_it(
    engine: Engine, run_pipeline: RunFn, settings: Settings, store: SqlStore
) -> None:
    value = "hunter2-s3cr3t"
    engine.secrets.set("registry-token", value)
    record = run_pipeline(USES_TOKEN)
    assert record.status == RunStatus.SUCCEEDED, record.message
    assert (settings.workspaces / str(record.id) / "token.seen").read_text() == value  # the step had the real value
    logs = log_text(settings, record.id)
    assert "logging in with ***" in logs and "inline ***" in logs and value not in logs
    assert record.task("login").results == {"echoed": "***"}
    with store.engine.connect() as conn:
        rows = [json.dumps([*row]) for row in conn.execute(text("SELECT * FROM runs"))]
        rows += [json.dumps([*row]) for row in conn.execute(text("SELECT * FROM task_runs"))]
        stored = conn.execute(text("SELECT value FROM secrets")).scalar_one()
    assert all(value not in row for row in rows)
    assert value not in stored and stored.startswith("fernet:gAAAA")  # a Fernet token, not the value
    assert (settings.home / "secret.key").stat().st_mode & 0o777 == 0o600


def test_a_reusable_task_gets_a_secret_through_its_inputs(
    engine: Engine, run_pipeline: RunFn, write: Write, settings: Settings
) -> None:
    write(
        """
        inputs: {password: {}}
        steps:
          - run: echo "using ${{ inputs.password }}"; printf %s "${{ inputs.password }}" > pw.seen
        """,
        "tasks/login.yaml",
    )
    engine.secrets.set("db_password", "pa55word")
    record = run_pipeline(
        """
        name: reuse
        tasks:
          - name: login
            uses: ./tasks/login.yaml
            with: {password: "${{ secrets.db_password }}"}
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    assert (settings.workspaces / str(record.id) / "pw.seen").read_text() == "pa55word"
    assert "using ***" in log_text(settings, record.id) and "pa55word" not in log_text(settings, record.id)


def test_each_line_of_a_multi_line_secret_is_masked(engine: Engine, run_pipeline: RunFn, settings: Settings) -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
    engine.secrets.set("deploy-key", key)
    record = run_pipeline(
        """
        name: pem
        tasks:
          - name: show
            env: {KEY: "${{ secrets.deploy-key }}"}
            steps: [{run: 'echo "$KEY"; echo "second line: $(echo "$KEY" | sed -n 2p)"'}]
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    logs = log_text(settings, record.id)
    assert all(line not in logs for line in key.splitlines())
    assert "second line: ***" in logs


def test_a_secret_value_is_data_not_code(engine: Engine, run_pipeline: RunFn, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    engine.secrets.set("registry-token", f'$(touch {marker})`touch {marker}`"; touch {marker} #')
    record = run_pipeline(USES_TOKEN)
    assert record.status == RunStatus.SUCCEEDED, record.message
    assert not marker.exists(), "a secret's value was executed"


def test_a_missing_secret_fails_the_run_before_any_step(engine: Engine, write: Write, settings: Settings) -> None:
    pipeline = load_pipeline(write(USES_TOKEN))
    with pytest.raises(UsageError, match=r"secret registry-token, which is not set.*shipline secrets set registry-token"):
        engine.check_secrets(pipeline)
    run_id = engine.submit(pipeline, {})  # what a webhook does: the run exists and says why it failed
    record = asyncio.run(engine.drive(run_id))
    assert record.status == RunStatus.FAILED
    assert "secret registry-token is not set" in record.message and "shipline secrets set registry-token" in record.message
    assert record.task("login").status == TaskStatus.SKIPPED
    assert not (settings.workspaces / str(run_id) / "token.seen").exists()


def test_a_rerun_uses_the_current_value(engine: Engine, run_pipeline: RunFn, settings: Settings) -> None:
    engine.secrets.set("registry-token", "old-value")
    first = run_pipeline(USES_TOKEN)
    engine.secrets.set("registry-token", "new-value")
    second = asyncio.run(engine.drive(engine.rerun(first.id)))
    assert second.status == RunStatus.SUCCEEDED, second.message
    assert (settings.workspaces / str(second.id) / "token.seen").read_text() == "new-value"
    assert "new-value" not in log_text(settings, second.id)


def test_another_key_cannot_read_the_secrets(engine: Engine, settings: Settings, store: SqlStore, write: Write) -> None:
    engine.secrets.set("registry-token", "value")
    other = settings.model_copy(update={"secret_key": SecretStr(Fernet.generate_key().decode())})  # valid, but not this store's
    stranger = Engine(other, store, LocalExecutor(1.0), EventBus())
    run_id = stranger.submit(load_pipeline(write(USES_TOKEN)), {})
    record = asyncio.run(stranger.drive(run_id))
    assert record.status == RunStatus.FAILED
    assert "cannot be decrypted" in record.message and "$SHIPLINE_SECRET_KEY" in record.message


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("when: ${{ secrets.token == 'x' }}", "secrets cannot be used in `when:`"),
        ("env: {T: '${{ secrets }}'}", "write secrets.NAME"),
        ("env: {T: '${{ secrets.a.b }}'}", "write secrets.NAME"),
    ],
)
def test_validate_rejects_secret_misuse(write: Write, snippet: str, message: str) -> None:
    path = write(f"name: bad\ntasks:\n  - name: a\n    {snippet}\n    steps: [{{run: 'true'}}]\n")
    with pytest.raises(DefinitionError) as info:
        load_pipeline(path)
    assert [p.line for p in info.value.problems] == [4]
    assert message in str(info.value)


def test_a_reusable_task_file_cannot_name_secrets(write: Write) -> None:
    write("steps: [{run: 'echo ${{ secrets.token }}'}]\n", "tasks/leaky.yaml")
    path = write("name: p\ntasks:\n  - name: a\n    uses: ./tasks/leaky.yaml\n")
    with pytest.raises(DefinitionError, match=r"gets secrets through its inputs"):
        load_pipeline(path)


# --- nothing leaves the engine unmasked (issue 12, items 1 and 2) -------------------------

RETRIED = """
name: leaky
tasks:
  - name: fetch
    retries: 1
    env: {TOKEN: "${{ secrets.api-token }}"}
    steps:
      - run: echo "$TOKEN" >> "$SHIPLINE_OUTPUT"   # not name=value: the task fails, and is retried
"""


def audit(store: SqlStore) -> Callable[[], str]:
    """Every value ever written to the runs tables (SQLite triggers copy each row as it is written)."""
    columns = {"runs": "params, message, trigger", "task_runs": "name, results, message", "step_runs": "name, log_path"}
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE audit (row TEXT)"))
        for table, cols in columns.items():
            values = " || ' ' || ".join(f"coalesce(NEW.{c}, '')" for c in cols.split(", "))
            for op in ("INSERT", "UPDATE"):
                conn.execute(
                    text(
                        f"CREATE TRIGGER audit_{table}_{op} AFTER {op} ON {table} BEGIN INSERT INTO audit VALUES ({values}); END"
                    )
                )

    def written() -> str:
        with store.engine.connect() as conn:
            return "\n".join(conn.execute(text("SELECT row FROM audit")).scalars())

    return written


def test_a_retry_message_is_masked_in_the_store_the_events_and_the_logs(
    engine: Engine, run_pipeline: RunFn, settings: Settings, store: SqlStore
) -> None:
    value = "tok-9f8e7d6c5b4a"
    engine.secrets.set("api-token", value)
    written = audit(store)
    seen: list[str] = []
    subscription = engine.bus.subscribe()
    record = run_pipeline(RETRIED)
    while not subscription.queue.empty():
        seen.append(json.dumps(subscription.queue.get_nowait().data))
    assert record.status == RunStatus.FAILED and record.task("fetch").attempts == 2
    retried = [e for e in seen if "retrying" in e or "malformed" in e]
    assert retried, seen  # the retry was published, with its message
    assert all(value not in e for e in seen), [e for e in seen if value in e]
    assert "malformed" in written() and value not in written()
    assert "***" in record.task("fetch").message and value not in record.task("fetch").message
    assert value not in log_text(settings, record.id)


def test_a_secret_cut_short_in_a_message_is_still_masked(engine: Engine, run_pipeline: RunFn, store: SqlStore) -> None:
    """Messages quote at most 80 characters of a bad line: they are cut after masking, never before."""
    value = "s3cr3t-0123456789abcdef"
    engine.secrets.set("api-token", value)
    written = audit(store)
    record = run_pipeline(RETRIED.replace('echo "$TOKEN"', 'echo "' + "x" * 70 + '$TOKEN"'))
    assert record.status == RunStatus.FAILED
    assert value[:8] not in written() and value[:8] not in record.task("fetch").message
    assert "x" * 70 + "***" in record.task("fetch").message


def test_nothing_on_disk_holds_a_secret_or_is_readable_by_others(engine: Engine, run_pipeline: RunFn, settings: Settings) -> None:
    value = "hunter2-s3cr3t"
    engine.secrets.set("registry-token", value)
    record = run_pipeline(USES_TOKEN)
    assert record.status == RunStatus.SUCCEEDED, record.message
    files = [p for p in settings.home.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"shipline.db", "secret.key", "login.1.0.log"} <= names
    assert not [p for p in files if p.suffix == ".out"]  # the raw $SHIPLINE_OUTPUT does not outlive its step
    holding = [p for p in files if value.encode() in p.read_bytes() and p.name != "token.seen"]
    assert holding == []  # token.seen is the step's own file, in its private workspace
    for path in [settings.home, *settings.home.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0 or path.is_relative_to(settings.workspaces / str(record.id)), f"{path}: {oct(mode)}"
    for path in (settings.home, settings.logs, settings.workspaces, settings.step_homes, settings.workspaces / str(record.id)):
        assert path.stat().st_mode & 0o777 == 0o700, path
    for path in (settings.home / "shipline.db", settings.home / "secret.key", *settings.logs.rglob("*.log")):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_private_modes_do_not_depend_on_the_umask(settings: Settings, write: Write) -> None:
    """An engine started with a permissive umask (0) still keeps its files to itself."""
    old = os.umask(0)
    try:
        store = SqlStore(settings.database)
        engine = Engine(settings, store, LocalExecutor(1.0), EventBus())
        record = asyncio.run(
            engine.drive(engine.submit(load_pipeline(write(USES_TOKEN.replace("secrets.registry-token", "run.id"))), {}))
        )
        store.close()
    finally:
        os.umask(old)
    assert record.status == RunStatus.SUCCEEDED, record.message
    wal = settings.home / "shipline.db-wal"
    for path in (settings.home / "shipline.db", *([wal] if wal.exists() else []), *settings.logs.rglob("*.log")):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in (settings.home, settings.logs, settings.workspaces, settings.step_homes, *settings.logs.rglob("*/")):
        assert path.stat().st_mode & 0o777 == 0o700, path


def test_a_secret_across_the_cut_of_a_very_long_line_is_masked(engine: Engine, run_pipeline: RunFn, settings: Settings) -> None:
    """The executor cuts lines into 64 KiB pieces; one cut falls inside the secret, which stays masked."""
    value = "ÄÖÜ-hunter2-s3cr3t"  # first the cut falls inside its first (two-byte) character, then after 'ÄÖÜ-hu'
    engine.secrets.set("registry-token", value)
    record = run_pipeline(
        """
        name: long
        tasks:
          - name: print
            env: {TOKEN: "${{ secrets.registry-token }}"}
            steps:
              - run: |
                  python3 -c 'import os, sys; sys.stdout.write("x" * 65535 + os.environ["TOKEN"] + "y" * 100 + "\\n")'
                  python3 -c 'import os, sys; sys.stdout.write("x" * 65527 + os.environ["TOKEN"] + "y" * 100 + "\\n")'
                  echo "after $TOKEN"
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    logs = log_text(settings, record.id)
    assert "hunter2" not in logs and "s3cr3t" not in logs and "\ufffd" not in logs
    text = "".join(line.split(" ", 1)[1].removesuffix("\n") for line in logs.splitlines(keepends=True)[:-1])
    assert text == "x" * 65535 + "***" + "y" * 100 + "x" * 65527 + "***" + "y" * 100
    assert logs.splitlines()[-1].endswith(" after ***")


def test_hold_back_keeps_a_secret_whole_on_one_side_of_the_split(store: SqlStore, settings: Settings) -> None:
    recorder = RunRecorder(store, EventBus(), settings.logs, 1)
    recorder.hide(["s3cr3t-value"])
    assert recorder.hold_back("log s3cr3t-value ok") == ("log s3cr3t-value", " ok")  # complete: masked now
    assert recorder.hold_back("log s3cr3t-va") == ("lo", "g s3cr3t-va")  # may go on: its longest possible start is held back
    assert recorder.hold_back("") == ("", "")
    overlapping = RunRecorder(store, EventBus(), settings.logs, 1)
    overlapping.hide(["abab"])
    assert overlapping.hold_back("xxababab") == ("xxababab", "")  # each occurrence that spans the split moves it on


def test_a_token_inside_a_credential_url_is_masked_on_its_own(store: SqlStore, settings: Settings, write: Write) -> None:
    """A git-credentials file is masked line by line, and the token in each line alone too (raw or %-encoded)."""
    token = "gta-1234/5678"
    settings = settings.model_copy(update={"gitea_url": "http://127.0.0.1:3000", "gitea_token": SecretStr(token)})
    engine = Engine(settings, store, LocalExecutor(1.0), EventBus())
    pipeline = load_pipeline(
        write("""
        name: clone
        tasks:
          - name: clone
            env: {CREDS: "${{ secret_files.git-credentials }}"}
            steps:
              - run: |
                  sed 's/.*shipline:\\(.*\\)@.*/encoded \\1/' "$CREDS"
                  echo "raw $(sed 's/.*shipline:\\(.*\\)@.*/\\1/; s/%2F/\\//' "$CREDS")"
    """)
    )
    record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
    assert record.status == RunStatus.SUCCEEDED, record.message
    logs = log_text(settings, record.id)
    assert "encoded ***" in logs and "raw ***" in logs, logs
    assert "1234" not in logs
