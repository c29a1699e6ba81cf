"""Fixtures for environment tests: an environment repository on Gitea, the CLI's environment, kubectl."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from envkit import EnvRepo, Kube

from shipline.testbed.fixtures import GiteaRepo, Testbed


@pytest.fixture
def env_repo(tmp_path: Path, gitea_repo: GiteaRepo) -> EnvRepo:
    return EnvRepo(tmp_path / "env-repo", gitea_repo.clone_url)


@pytest.fixture
def cli_env(home: Path, testbed: Testbed, helm: Path, kubectl: Path) -> dict[str, str]:
    """What the CLI gets: the testbed's variables and its helm and kubectl on PATH."""
    path = os.pathsep.join([str(helm.parent), str(kubectl.parent), os.environ.get("PATH", "")])
    return {**testbed.env, "PATH": path, "SHIPLINE_HOME": str(home)}


@pytest.fixture
def kube(kubectl: Path, kubeconfig: Path, namespace: str) -> Kube:
    return Kube(kubectl, kubeconfig, namespace)
