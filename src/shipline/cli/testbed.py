"""`shipline testbed`: the local registry, forge and cluster (placeholder until issue 3 lands)."""

from __future__ import annotations

import click


@click.group()
def testbed() -> None:
    """The local OCI registry, Gitea and Kubernetes control plane."""
