"""image -> chart -> publish -> notify in one run: each task's results feed the next, the events name what was pushed."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from artifactkit import event_sink, inspect_image, log_text, tiny_chart, tiny_context
from helpers import RunFn

from shipline.domain.runs import RunStatus
from shipline.settings import Settings

pytestmark = pytest.mark.testbed


def test_the_release_tasks_chain(
    run_pipeline: RunFn, registry: str, helm: Path, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{helm.parent}{os.pathsep}{os.environ['PATH']}")
    name = f"svc-{uuid.uuid4().hex[:8]}"
    context, chart = tiny_context(tmp_path / "ctx"), tiny_chart(tmp_path / "chart", name)
    with event_sink() as sink:
        record = run_pipeline(f"""
            name: {name}
            tasks:
              - name: build
                steps: [{{run: 'cp -r "{context}" ctx && cp -r "{chart}" chart && mkdir dist && echo bin > dist/{name}'}}]
              - name: image
                uses: shipline/image
                with: {{version: 0.1.0, context: ctx, registry: "{registry}", revision: abc}}
              - name: chart
                uses: shipline/chart
                with: {{version: 0.1.0, image: "${{{{ tasks.image.results.image }}}}", registry: "{registry}"}}
              - name: publish
                needs: [build]
                uses: shipline/publish
                with: {{version: 0.1.0, registry: "{registry}"}}
              - name: notify
                needs: [chart, publish]
                uses: shipline/notify
                with:
                  subscribers: "{sink.url}"
                  commit: abc
                  image: "${{{{ tasks.image.results.image }}}}"
                  image-digest: "${{{{ tasks.image.results.image-digest }}}}"
                  chart: "${{{{ tasks.chart.results.chart }}}}"
                  chart-digest: "${{{{ tasks.chart.results.chart-digest }}}}"
                  artifact: "${{{{ tasks.publish.results.artifact }}}}"
                  artifact-digest: "${{{{ tasks.publish.results.artifact-digest }}}}"
            """)
    assert record.status == RunStatus.SUCCEEDED, "".join(
        log_text(settings, record, t) for t in ("image", "chart", "publish", "notify")
    )
    image, chart_results, published = (record.task(t).results for t in ("image", "chart", "publish"))
    assert image["image"] == f"{registry}/{name}:0.1.0"
    info = inspect_image(image["image"])
    assert info is not None and info["Digest"] == image["image-digest"]
    assert chart_results["chart"] == f"oci://{registry}/charts/{name}"
    assert published["artifact"] == f"{registry}/{name}-artifacts:0.1.0"

    published_subjects = [r.headers["ce-subject"] for r in sink.received if r.headers["ce-type"].endswith("published.0.2.0")]
    assert published_subjects == [
        f"pkg:oci/{name}@{image['image-digest']}?repository_url={registry}/{name}",
        f"pkg:oci/{name}@{chart_results['chart-digest']}?repository_url={registry}/charts/{name}",
        f"pkg:oci/{name}-artifacts@{published['artifact-digest']}?repository_url={registry}/{name}-artifacts",
    ]
    assert sink.received[-1].headers["ce-type"] == "dev.cdevents.pipelinerun.finished.0.2.0"
