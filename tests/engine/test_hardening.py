"""What an attacker, an unlucky operator and a newcomer broke in the engine (issue 12), each kept broken-proof."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RunFn

from shipline.domain.runs import RunStatus, TaskStatus
from shipline.engine.loading import load_pipeline
from shipline.exceptions import DefinitionError


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
        text = (f"name: p\ntasks: [{{name: a, uses: '{uses}'}}]\n" if level == "task"
                else f"name: p\nuses: '{uses}'\n")
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
