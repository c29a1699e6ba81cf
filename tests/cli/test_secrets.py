"""`shipline secrets` as a user runs it, and `shipline run` with a secret missing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from helpers import shipline

Write = Callable[..., Path]

PIPELINE = """
name: push
tasks:
  - name: push
    env: {TOKEN: "${{ secrets.registry-token }}"}
    steps: [{run: 'echo "token $TOKEN"'}]
"""


def set_from_stdin(name: str, value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipline", "secrets", "set", name], input=value, capture_output=True, text=True, timeout=60
    )


def test_set_list_use_delete(home: Path, write: Write, tmp_path: Path) -> None:
    pipeline = write(PIPELINE)
    missing = shipline("run", str(pipeline))
    assert missing.returncode == 2
    assert "uses secret registry-token, which is not set" in missing.stderr and "Traceback" not in missing.stderr

    done = set_from_stdin("registry-token", "from-stdin\n")
    assert done.returncode == 0, done.stderr
    assert "${{ secrets.registry-token }}" in done.stderr
    ran = shipline("run", str(pipeline))
    assert ran.returncode == 0, ran.stderr
    logs = shipline("runs", "logs", "1").stdout
    assert "token ***" in logs and "from-stdin" not in logs

    (tmp_path / "token.txt").write_text("from-file\n")
    assert shipline("secrets", "set", "file-token", "--from-file", str(tmp_path / "token.txt")).returncode == 0
    assert shipline("secrets", "set", "env-token", "--from-env", "MY_TOKEN", env={"MY_TOKEN": "from-env"}).returncode == 0
    listed = shipline("secrets", "list", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["env-token", "file-token", "registry-token"]
    assert not any(v in listed.stdout for v in ("from-stdin", "from-file", "from-env"))

    assert shipline("secrets", "delete", "registry-token").returncode == 0
    assert shipline("run", str(pipeline)).returncode == 2
    gone = shipline("secrets", "delete", "registry-token")
    assert gone.returncode == 2 and "no secret 'registry-token'" in gone.stderr


def test_bad_names_and_empty_values_are_refused(home: Path) -> None:
    bad = set_from_stdin("has space", "v")
    assert bad.returncode == 2 and "use letters, digits" in bad.stderr
    empty = set_from_stdin("token", "")
    assert empty.returncode == 2 and "no value on stdin" in empty.stderr
    unset = shipline("secrets", "set", "token", "--from-env", "SHIPLINE_TEST_UNSET_VAR")
    assert unset.returncode == 2 and "SHIPLINE_TEST_UNSET_VAR: that variable is not set" in unset.stderr
    assert json.loads(shipline("secrets", "list", "--json").stdout) == []


def test_a_bad_key_says_how_to_make_a_good_one(home: Path) -> None:
    done = shipline("secrets", "set", "token", "--from-env", "V", env={"V": "x", "SHIPLINE_SECRET_KEY": "not-a-key"})
    assert done.returncode == 2
    assert "not a Fernet key" in done.stderr and "Fernet.generate_key()" in done.stderr


def test_a_config_file_holding_the_key_must_be_private(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('secret_key = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="\n')
    config.chmod(0o644)
    done = shipline("secrets", "list", env={"SHIPLINE_CONFIG": str(config)})
    assert done.returncode == 2 and "holds secret_key but others may read it (mode 644)" in done.stderr
    assert f"chmod 600 {config}" in done.stderr and "$SHIPLINE_SECRET_KEY" in done.stderr and "Zm9v" not in done.stderr
    config.write_text('github_token = "ghp_abc123"\ndatabase_url = "postgresql://ci:pw123@127.0.0.1/x"\n')
    done = shipline("secrets", "list", env={"SHIPLINE_CONFIG": str(config)})
    assert done.returncode == 2 and "holds github_token, database_url (with a password)" in done.stderr
    assert "$SHIPLINE_DATABASE_URL, $SHIPLINE_GITHUB_TOKEN" in done.stderr and "pw123" not in done.stderr
    config.write_text('secret_key = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="\n')
    config.chmod(0o600)
    assert shipline("secrets", "list", env={"SHIPLINE_CONFIG": str(config)}).returncode == 0
