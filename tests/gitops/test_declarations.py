"""Declaration files: every problem with FILE:LINE:COL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shipline.exceptions import DefinitionError
from shipline.gitops.declarations import load_environments


def test_a_good_file_gives_its_environments(write: Callable[..., Path]) -> None:
    path = write(
        """
        environments:
          - name: dev
            repo: http://127.0.0.1:3000/org/env-dev.git
            namespace: dev
          - name: ops
            repo: /srv/git/ops.git
            cluster: true
            sync: manual
    """,
        "envs.yaml",
    )
    envs = load_environments(path)
    assert [(e.name, e.namespace, e.cluster, e.sync) for e in envs] == [
        ("dev", "dev", False, "auto"),
        ("ops", None, True, "manual"),
    ]


def test_every_problem_is_reported_with_its_place(write: Callable[..., Path]) -> None:
    path = write(
        """
        environments:
          - name: dev
            repo: http://x/env-dev.git
            namespace: dev
            sync: sometimes
            colour: blue
          - name: prod
            repo: http://x/env-prod.git
          - name: qa
            repo: http://x/qa.git
            namespace: qa
            verify-timeout: soon
            retry: {limit: 20, backoff: 1m}
    """,
        "envs.yaml",
    )
    with pytest.raises(DefinitionError) as info:
        load_environments(path)
    lines = [str(p) for p in info.value.problems]
    assert lines == [
        f"{path}:5:11: environments.0.sync: Input should be 'auto' or 'manual'",
        f"{path}:6:5: unknown key 'colour'",
        f"{path}:7:5: environments.1: an environment needs a target: `namespace: NAME` or `cluster: true`",
        f"{path}:12:21: environments.2.verify-timeout: 'soon' is not a duration: write seconds (90) or text like '90s', '5m', '1h30m'",
        f"{path}:13:20: environments.2.retry.limit: Input should be less than or equal to 10",
    ]


def test_invalid_yaml_and_duplicates(write: Callable[..., Path]) -> None:
    bad = write("environments:\n  - name: dev\n    repo: [unclosed\n", "bad.yaml")
    with pytest.raises(DefinitionError, match=r"bad.yaml:\d+:\d+: not valid YAML"):
        load_environments(bad)
    twice = write(
        """
        environments:
          - {name: dev, repo: a, namespace: dev}
          - {name: dev, repo: b, namespace: dev2}
    """,
        "twice.yaml",
    )
    with pytest.raises(DefinitionError, match=r"twice.yaml:3:12: environment 'dev' is declared twice"):
        load_environments(twice)


def test_a_kubeconfig_with_certificate_files_is_stored_self_contained(tmp_path: Path) -> None:
    import base64
    import json

    from shipline.exceptions import UsageError
    from shipline.gitops.declarations import read_kubeconfig

    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(b"CA-PEM")
    (tmp_path / "certs" / "token").write_text("tok-123\n")
    path = tmp_path / "dev.kubeconfig"
    path.write_text("""
apiVersion: v1
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority: certs/ca.pem}}]
users: [{name: u, user: {tokenFile: certs/token}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
""")
    config = json.loads(read_kubeconfig(path))
    cluster = config["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA-PEM" and "certificate-authority" not in cluster
    assert config["users"][0]["user"] == {"token": "tok-123"}
    inline = tmp_path / "inline.kubeconfig"
    inline.write_text("clusters: [{name: c, cluster: {server: s}}]\n")
    assert read_kubeconfig(inline) == inline.read_text(), "a self-contained kubeconfig is kept as written"
    (tmp_path / "not.kubeconfig").write_text("hello: world\n")
    with pytest.raises(UsageError, match="not a kubeconfig"):
        read_kubeconfig(tmp_path / "not.kubeconfig")
