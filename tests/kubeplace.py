"""The kubernetes executor's place on the testbed: a namespace with a workspace claim (tests import it)."""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from shipline.settings import Settings

NODE_SELECTOR = "kubernetes.io/hostname=shipline-node"
TOLERATIONS = "shipline.dev/real-node=true:NoSchedule"


@dataclass(frozen=True)
class KubePlace:
    namespace: str
    kubeconfig: Path
    kubectl: Path
    runner_image: str
    workspace_dir: Path
    """The hostPath folder behind the workspace claim (this machine is the node)."""

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
            input=stdin,
            timeout=120,
        )


def claim_yaml(namespace: str, volume: str, folder: Path, claim: str = "shipline-workspace") -> str:
    return textwrap.dedent(
        f"""
        apiVersion: v1
        kind: PersistentVolume
        metadata: {{name: {volume}}}
        spec:
          capacity: {{storage: 1Gi}}
          accessModes: [ReadWriteMany]
          persistentVolumeReclaimPolicy: Retain
          storageClassName: ""
          hostPath: {{path: {folder}, type: DirectoryOrCreate}}
          claimRef: {{namespace: {namespace}, name: {claim}}}
        ---
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata: {{name: {claim}, namespace: {namespace}}}
        spec:
          accessModes: [ReadWriteMany]
          storageClassName: ""
          volumeName: {volume}
          resources: {{requests: {{storage: 1Gi}}}}
        """
    )


def kube_settings(settings: Settings, place: KubePlace) -> Settings:
    return settings.model_copy(
        update={
            "executor": "kubernetes",
            "kube_namespace": place.namespace,
            "runner_image": place.runner_image,
            "kube_node_selector": NODE_SELECTOR,
            "kube_tolerations": TOLERATIONS,
        }
    )
