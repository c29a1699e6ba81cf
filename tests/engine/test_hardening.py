"""What an attacker, an unlucky operator and a newcomer broke in the engine (issue 12), each kept broken-proof."""

from __future__ import annotations

from helpers import RunFn

from shipline.domain.runs import RunStatus, TaskStatus


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
