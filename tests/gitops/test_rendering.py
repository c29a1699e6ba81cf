"""Rendering an environment repository's three layouts (real helm and kubectl on the testbed)."""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from envkit import push_chart, write, write_chart

from shipline.domain.promotions import edit_version, files_to_edit
from shipline.gitops.rendering import Layout, RenderError, render
from shipline.integrations.templating import Templater


def images(objects: list[dict]) -> dict[str, str]:  # type: ignore[type-arg]
    return {
        o["metadata"]["name"]: c["image"]
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }


# --- manifests/ (no tools needed) -----------------------------------------------------


def test_manifests_multi_document_and_lists_get_the_namespace(tmp_path: Path) -> None:
    write(
        tmp_path / "manifests/app.yaml",
        """
        # hello and its service
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: hello, namespace: somewhere-else}
        spec:
          selector: {matchLabels: {app: hello}}
          template:
            metadata: {labels: {app: hello}}
            spec:
              containers: [{name: app, image: "reg/hello:1.0.0"}]
              volumes: [{name: c, configMap: {name: c, defaultMode: 0644}}]
        ---
        apiVersion: v1
        kind: List
        items:
          - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {enabled: "yes"}}
          - {apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: reader}, rules: []}
    """,
    )
    write(
        tmp_path / "manifests/nested/svc.yml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: hello}\nspec: {ports: [{port: 80}]}\n",
    )
    write(tmp_path / "manifests/README.md", "not a manifest\n")
    result = render(tmp_path, "dev")
    assert result.layout == Layout.MANIFESTS
    assert [(o["kind"], o["metadata"].get("namespace")) for o in result.objects] == [
        ("ConfigMap", "dev"),
        ("ClusterRole", None),
        ("Service", "dev"),
        ("Deployment", "dev"),
    ]
    assert result.sources[2] == "manifests/nested/svc.yml:1"
    assert result.sources[3] == "manifests/app.yaml:3"
    deployment = result.objects[3]
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["defaultMode"] == 0o644, "YAML 1.1, as kubectl"
    assert images(result.objects) == {"hello": "reg/hello:1.0.0"}


def test_a_cluster_environment_keeps_the_namespaces_objects_name(tmp_path: Path) -> None:
    write(
        tmp_path / "manifests/a.yaml",
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: a, namespace: team-a}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: b}
    """,
    )
    result = render(tmp_path, "default", cluster=True)
    assert [o["metadata"]["namespace"] for o in result.objects] == ["team-a", "default"]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [unclosed\n",
            r"manifests/bad.yaml:4:1: not valid YAML: did not find expected .,. or .\].",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nmetadata: {name: x}\n",
            r"manifests/bad.yaml:5: an object needs kind",
        ),
        ("- just\n- a list\n", r"manifests/bad.yaml:1: a manifest is a mapping"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
            r"the same object is rendered twice: ConfigMap dev/c",
        ),
    ],
)
def test_bad_manifests_name_the_file_and_the_cause(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "manifests/bad.yaml", text)
    with pytest.raises(RenderError, match=message):
        render(tmp_path, "dev")


def test_a_repository_without_a_layout_says_what_to_add(tmp_path: Path) -> None:
    write(tmp_path / "README.md", "hi\n")
    with pytest.raises(RenderError, match=r"no environment layout found: add manifests/"):
        render(tmp_path, "dev")
    (tmp_path / "manifests").mkdir()
    with pytest.raises(RenderError, match=r"manifests/: holds no manifests"):
        render(tmp_path, "dev")


# --- kustomize, umbrella chart, helmfile (real tools) ----------------------------------


@pytest.fixture
def templater(helm: Path, kubectl: Path) -> Iterator[Templater]:
    with Templater(helm=str(helm), kubectl=str(kubectl)) as tools:
        yield tools


@pytest.mark.testbed
def test_a_kustomization_is_built_with_kubectl(tmp_path: Path, templater: Templater) -> None:
    write(
        tmp_path / "manifests/kustomization.yaml",
        """
        resources: [app.yaml]
        images:
          - {name: reg/hello, newTag: "2.0.0"}
        commonLabels: {team: blue}
    """,
    )
    write(
        tmp_path / "manifests/app.yaml",
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: hello}
        spec:
          selector: {matchLabels: {app: hello}}
          template:
            metadata: {labels: {app: hello}}
            spec: {containers: [{name: app, image: "reg/hello:1.0.0"}]}
    """,
    )
    result = render(tmp_path, "dev", templater=templater)
    assert result.layout == Layout.KUSTOMIZE
    assert images(result.objects) == {"hello": "reg/hello:2.0.0"}
    assert result.objects[0]["metadata"]["labels"]["team"] == "blue"
    write(tmp_path / "manifests/kustomization.yaml", "resources: [missing.yaml]\n")
    with pytest.raises(RenderError, match=r"manifests/kustomization.yaml: kustomize cannot build it: .*missing.yaml"):
        render(tmp_path, "dev", templater=templater)


@pytest.fixture
def chart_server(tmp_path: Path, helm: Path) -> Iterator[tuple[str, Path]]:
    """A classic HTTP chart repository (index.yaml + packages) on 127.0.0.1."""
    root = tmp_path / "http-charts"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.mark.testbed
def test_an_umbrella_chart_with_file_oci_and_http_dependencies(
    tmp_path: Path,
    helm: Path,
    registry: str,
    templater: Templater,
    chart_server: tuple[str, Path],
) -> None:
    suffix = uuid.uuid4().hex[:6]
    # From OCI: pushed to the testbed's registry.
    oci_name = f"api-{suffix}"
    oci_repo = push_chart(
        helm, write_chart(tmp_path / "src", oci_name, "1.2.0", image="reg/api", tag="1.2.0"), registry, tmp_path
    )
    # From a classic HTTP repository.
    http_url, http_root = chart_server
    http_name = f"web-{suffix}"
    subprocess.run(
        [
            str(helm),
            "package",
            str(write_chart(tmp_path / "src", http_name, "0.3.0", image="reg/web", tag="0.3.0")),
            "-d",
            str(http_root),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run([str(helm), "repo", "index", str(http_root), "--url", http_url], check=True, capture_output=True)
    # From a directory in the environment repository.
    env = tmp_path / "env"
    write_chart(env / "charts-src", "worker", "0.1.0", image="reg/worker", tag="0.1.0")
    write(
        env / "Chart.yaml",
        f"""
        apiVersion: v2
        name: dev-env
        version: 0.0.1
        dependencies:
          - {{name: {oci_name}, version: 1.2.0, repository: "{oci_repo}"}}
          - {{name: {http_name}, version: 0.3.0, repository: "{http_url}"}}
          - {{name: worker, version: 0.1.0, repository: "file://./charts-src/worker"}}
    """,
    )
    write(env / "values.yaml", f'{http_name}:\n  image: {{tag: "0.3.1"}}\n')
    result = render(env, "dev", release="dev", templater=templater)
    assert result.layout == Layout.UMBRELLA
    assert images(result.objects) == {oci_name: "reg/api:1.2.0", http_name: "reg/web:0.3.1", "worker": "reg/worker:0.1.0"}
    assert all(o["metadata"]["namespace"] == "dev" for o in result.objects)
    assert any(s.startswith(f"dev-env/charts/{oci_name}/templates/") for s in result.sources)


@pytest.mark.testbed
def test_a_promoted_umbrella_chart_with_a_lock_still_renders(tmp_path: Path, helm: Path, templater: Templater) -> None:
    """edit_version keeps Chart.lock in step: `helm dependency build` refuses a lock out of sync."""
    env = tmp_path / "env"
    write_chart(env / "charts-src", "hello", "1.1.0", image="reg/hello", tag="1.1.0")
    write_chart(env / "charts-src", "world", "2.0.0", image="reg/world", tag="2.0.0")
    write(
        env / "Chart.yaml",
        """
        apiVersion: v2
        name: dev-env
        version: 0.0.1
        dependencies:
          - name: hello   # promoted below
            version: "1.1.0"
            repository: file://./charts-src/hello
          - name: world
            alias: planet
            condition: planet.enabled
            tags: [front, <edge> & co]
            import-values: [{child: b, parent: a}]
            version: 2.0.0
            repository: "file://./charts-src/world"
    """,
    )
    home = {
        "HELM_CACHE_HOME": str(tmp_path / "h"),
        "HELM_CONFIG_HOME": str(tmp_path / "h"),
        "HELM_DATA_HOME": str(tmp_path / "h"),
    }
    subprocess.run(
        [str(helm), "dependency", "update", str(env)], check=True, capture_output=True, env={"PATH": "/usr/bin:/bin", **home}
    )
    lock = (env / "Chart.lock").read_text()
    write_chart(env / "charts-src", "hello", "1.2.0", image="reg/hello", tag="1.2.0")  # the release to promote

    files = {
        name: (env / name).read_text()
        for name in files_to_edit("umbrella", ["Chart.yaml", "Chart.lock", "charts-src/hello/Chart.yaml"])
    }
    changed = edit_version("umbrella", files, "hello", "1.2.0")
    for name, text in changed.items():
        (env / name).write_text(text)

    result = render(env, "dev", release="dev", templater=templater)
    assert images(result.objects) == {"hello": "reg/hello:1.2.0", "planet": "reg/world:2.0.0"}
    assert sorted(changed) == ["Chart.lock", "Chart.yaml"]
    assert [line for line in changed["Chart.lock"].splitlines() if line not in lock.splitlines()] == [
        "  version: 1.2.0",
        f"digest: {yaml.safe_load(changed['Chart.lock'])['digest']}",
    ]


@pytest.mark.testbed
def test_an_umbrella_chart_that_does_not_render_says_why(tmp_path: Path, templater: Templater) -> None:
    env = tmp_path / "env"
    write_chart(
        tmp_path, "env", "0.1.0", template="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n"
    )
    with pytest.raises(
        RenderError, match=r"Chart.yaml: the umbrella chart 'env' does not render: .*nil pointer evaluating interface \{\}.deeper"
    ):
        render(env, "dev", templater=templater)
    write(
        env / "Chart.yaml",
        'apiVersion: v2\nname: env\nversion: 0.1.0\ndependencies:\n  - {name: gone, version: 9.9.9, repository: "oci://127.0.0.1:1/charts"}\n',
    )
    with pytest.raises(RenderError, match=r"Chart.yaml: its dependencies \(gone 9.9.9\) cannot be fetched"):
        render(env, "dev", templater=templater)


@pytest.mark.testbed
def test_a_helmfile_renders_one_release_per_service(tmp_path: Path, helm: Path, registry: str, templater: Templater) -> None:
    name = f"hello-{uuid.uuid4().hex[:6]}"
    repo = push_chart(helm, write_chart(tmp_path / "src", name, "1.0.0", image="reg/hello", tag="1.0.0"), registry, tmp_path)
    env = tmp_path / "env"
    write_chart(env / "charts", "local", "0.1.0", image="reg/local", tag="0.1.0")
    write(env / "values/hello.yaml", "replicas: 2\n")
    write(
        env / "helmfile.yaml",
        f"""
        repositories:
          - {{name: ours, url: "{registry}/charts", oci: true}}
        releases:
          - name: hello
            namespace: elsewhere
            chart: {repo}/{name}
            version: 1.0.0
            values:
              - values/hello.yaml
              - image: {{tag: "1.0.1"}}
          - name: hello-again
            chart: ours/{name}
            version: 1.0.0
            values:
              - name: hello-again
          - name: local
            chart: ./charts/local
          - name: disabled
            chart: ./charts/local
            installed: false
    """,
    )
    result = render(env, "dev", templater=templater)
    assert result.layout == Layout.HELMFILE
    assert images(result.objects) == {name: "reg/hello:1.0.1", "hello-again": "reg/hello:1.0.0", "local": "reg/local:0.1.0"}
    deployments = {o["metadata"]["name"]: o for o in result.objects if o["kind"] == "Deployment"}
    assert deployments[name]["spec"]["replicas"] == 2
    assert {o["metadata"]["namespace"] for o in result.objects} == {"dev"}
    assert not (env / ".shipline-render").exists(), "inline values files are cleaned up"


@pytest.mark.testbed
def test_a_helmfile_release_whose_version_does_not_exist(tmp_path: Path, helm: Path, registry: str, templater: Templater) -> None:
    name = f"hello-{uuid.uuid4().hex[:6]}"
    repo = push_chart(helm, write_chart(tmp_path / "src", name, "1.0.0"), registry, tmp_path)
    env = tmp_path / "env"
    write(env / "helmfile.yaml", f"releases:\n  - {{name: hello, chart: {repo}/{name}, version: 7.7.7}}\n")
    with pytest.raises(RenderError, match=rf"helmfile.yaml: release 'hello': chart {repo}/{name} version 7.7.7 does not exist"):
        render(env, "dev", templater=templater)
    write(env / "helmfile.yaml", "releases:\n  - {name: hello, chart: ../outside}\n")
    with pytest.raises(RenderError, match=r"outside the repository"):
        render(env, "dev", templater=templater)
    write(env / "helmfile.yaml", "releases:\n  - {name: hello, chart: x, colour: blue}\n")
    with pytest.raises(RenderError, match=r"helmfile.yaml: releases.0.colour: unknown key"):
        render(env, "dev", templater=templater)
