"""Pipelines as code: the file (and the `./` files it uses) read at a commit, cached by (repository, commit).

The forge here is an in-memory twin of the `Forge` interface that serves files by
(path, ref); the Gitea adapter itself is tested against the real Gitea
(tests/integrations, tests/server/test_forge_flow.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shipline.exceptions import DefinitionError, UsageError
from shipline.server.sourcing import RepoPipelines
from shipline.settings import Settings
from shipline.store.repositories import Repository

A, B = "a" * 40, "b" * 40


class Files:
    """Only `read_file` and `close` of the interface are used here."""

    kind = "gitea"

    def __init__(self, files: dict[tuple[str, str], str]) -> None:
        self.files = files
        self.reads: list[tuple[str, str, str]] = []

    def read_file(self, repo: Any, path: str, ref: str) -> bytes | None:
        self.reads.append((str(repo), path, ref))
        text = self.files.get((path, ref))
        return None if text is None else text.encode()

    def close(self) -> None:
        pass


def repo() -> Repository:
    return Repository(
        id=4,
        name="svc",
        url="http://127.0.0.1:3000/team/svc.git",
        forge="gitea",
        pipeline="",
        default_branch="main",
        poll_seconds=None,
        created_at=datetime.now(UTC),
    )


def pipelines(settings: Settings, files: Files, gitea_url: str = "http://127.0.0.1:3000") -> RepoPipelines:
    settings = settings.model_copy(update={"gitea_url": gitea_url})
    return RepoPipelines(settings, forge_for=lambda kind: files)  # type: ignore[arg-type,return-value]


def test_only_from_the_forge_the_token_is_for(settings: Settings) -> None:
    files = Files({(".shipline/pipeline.yaml", A): "name: x\ntasks:\n  - name: t\n    steps: [{run: 'true'}]\n"})
    with pytest.raises(UsageError, match=r"is on 127\.0\.0\.1, but SHIPLINE_GITEA_URL is for gitea\.example"):
        pipelines(settings, files, gitea_url="https://gitea.example").load(repo(), A)
    assert files.reads == []


SERVICE = """
name: hello
uses: ./archetype.yaml
with: {greeting: hi}
"""
ARCHETYPE = """
inputs:
  greeting: {default: hello}
params:
  revision: {default: ""}
tasks:
  - name: greet
    uses: ../tasks/greet.yaml
    with: {text: "${{ inputs.greeting }}"}
"""
GREET = """
inputs:
  text: {}
steps:
  - run: echo "${{ inputs.text }}"
"""


def test_reads_the_definition_and_its_local_files_at_the_commit(settings: Settings) -> None:
    files = Files(
        {
            (".shipline/pipeline.yaml", A): SERVICE,
            (".shipline/archetype.yaml", A): ARCHETYPE,
            ("tasks/greet.yaml", A): GREET,
            (".shipline/pipeline.yaml", B): "name: other\ntasks:\n  - name: t\n    steps: [{run: 'true'}]\n",
        }
    )
    source = pipelines(settings, files)
    first = source.load(repo(), A)
    assert first.name == "hello" and [t.name for t in first.tasks] == ["greet"] and first.tasks[0].inputs["text"]
    assert {path for _, path, _ in files.reads} == {".shipline/pipeline.yaml", ".shipline/archetype.yaml", "tasks/greet.yaml"}
    assert {r for r, _, _ in files.reads} == {"team/svc"}
    reads = len(files.reads)
    assert source.load(repo(), A) is first  # a commit never changes: no second read
    assert len(files.reads) == reads
    assert source.load(repo(), B).name == "other"  # another commit, its own definition


def test_a_branch_is_read_each_time(settings: Settings) -> None:
    files = Files({(".shipline/pipeline.yaml", "main"): "name: x\ntasks:\n  - name: t\n    steps: [{run: 'true'}]\n"})
    source = pipelines(settings, files)
    source.load(repo(), "main")
    source.load(repo(), "main")
    assert len(files.reads) == 2


def test_problems_name_the_repository_and_commit(settings: Settings) -> None:
    files = Files({(".shipline/pipeline.yaml", A): "name: x\ntasks:\n  - name: t\n    stepz: []\n"})
    with pytest.raises(DefinitionError) as caught:
        pipelines(settings, files).load(repo(), A)
    assert str(caught.value).startswith(f"svc@{A[:12]}:.shipline/pipeline.yaml:4:")
    with pytest.raises(UsageError, match=r"has no \.shipline/pipeline\.yaml at bbbbbbbbbbbb.*--pipeline FILE"):
        pipelines(settings, Files({})).load(repo(), B)


def test_uses_outside_the_repository_are_refused(settings: Settings) -> None:
    # Our copy lives under SHIPLINE_HOME: enough `../` would reach any file of the server.
    escape = "../" * 12 + "etc/shipline/env.yaml"
    files = Files({(".shipline/pipeline.yaml", A): f"name: x\nuses: {escape}\n"})
    with pytest.raises(UsageError, match="points outside the repository"):
        pipelines(settings, files).load(repo(), A)
    assert [path for _, path, _ in files.reads] == [".shipline/pipeline.yaml"]
    nested = Files(
        {
            (".shipline/pipeline.yaml", A): "name: x\nuses: ./a.yaml\n",
            (".shipline/a.yaml", A): f"tasks:\n  - name: t\n    uses: ../{escape}\n",
        }
    )
    with pytest.raises(UsageError, match=r"\.shipline/a\.yaml: `uses: \.\./\.\./"):
        pipelines(settings, nested).load(repo(), A)


def test_the_api_registers_a_repository_without_a_pipeline_file(live: Any) -> None:
    with live.client(live.operator_token) as c:
        r = c.post("/api/v1/repositories", json={"name": "plain", "url": "/srv/git/plain.git", "forge": "git"})
        assert r.status_code == 400 and "needs a `pipeline` file" in r.json()["message"]
        r = c.post(
            "/api/v1/repositories",
            json={"name": "svc", "url": "http://127.0.0.1:3000/team/svc.git", "forge": "gitea", "secret": "s"},
        )
        assert r.status_code == 201, r.text
        (listed,) = c.get("/api/v1/pipelines").json()
        assert listed["repository"] == "svc" and "pipelines as code" in listed["problem"]
