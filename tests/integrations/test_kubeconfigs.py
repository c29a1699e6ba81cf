"""A kubeconfig's inline certificates and key are read from memory, never from a temporary file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from lightkube.config.kubeconfig import KubeConfig

from shipline.kubeconfigs import kubeconfig_in_memory


def test_a_kubeconfig_from_the_environment_keeps_its_key_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the Kubernetes executor reads $KUBECONFIG: each `*-data` becomes a memfd path that reads
    the same bytes, and nothing is written to TMPDIR."""
    ca, cert, key = b"the CA\n", b"the client certificate\n", b"the client key\n"
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns"}}],
                "clusters": [
                    {
                        "name": "k",
                        "cluster": {"server": "https://127.0.0.1:1", "certificate-authority-data": base64.b64encode(ca).decode()},
                    }
                ],
                "users": [
                    {
                        "name": "u",
                        "user": {
                            "client-certificate-data": base64.b64encode(cert).decode(),
                            "client-key-data": base64.b64encode(key).decode(),
                        },
                    }
                ],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    single = kubeconfig_in_memory(KubeConfig.from_env()).get()
    assert single is not None and single.user is not None
    assert (single.cluster.server, single.namespace) == ("https://127.0.0.1:1", "ns")
    assert single.cluster.certificate_auth_data is None and single.user.client_key_data is None
    read = {
        name: Path(str(p)).read_bytes()
        for name, p in (
            ("ca", single.cluster.certificate_auth),
            ("cert", single.user.client_cert),
            ("key", single.user.client_key),
        )
    }
    assert read == {"ca": ca, "cert": cert, "key": key}
    assert all(str(p).startswith("/proc/self/fd/") for p in (single.cluster.certificate_auth, single.user.client_key))
    assert list((tmp_path / "tmp").iterdir()) == []
