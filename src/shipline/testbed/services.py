"""The testbed's services: the command line each starts with and how each answers.

`service_specs` is pure: from the layout, the ports and the programs' paths it
builds each service's argv.  `probe` is the one place that asks a service whether
it is healthy, over HTTP(S) on loopback.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shipline.testbed import nodeconfigs
from shipline.testbed.configs import KWOK_NODE_ANNOTATION
from shipline.testbed.layout import Layout

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    part: str
    """The build part that provides the program."""
    program: Path
    argv: tuple[str, ...]
    port: int
    health_url: str
    needs: tuple[str, ...] = ()
    """Services that must answer before this one starts."""
    tls: str = "none"
    """"none" (plain HTTP), "ca" (verify against the testbed CA) or "insecure" (self-signed, loopback)."""
    run_as_service_user: bool = False
    cwd: Path | None = None
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def service_specs(layout: Layout, ports: dict[str, int], programs: dict[str, Path], gitea_root: Path) -> list[ServiceSpec]:
    """Every service, in an order where each comes after what it needs."""
    pki = layout.pki
    api = f"https://127.0.0.1:{ports['kube-apiserver']}"
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"

    def component_flags(name: str) -> tuple[str, ...]:
        kubeconfig = str(pki / f"{name}.kubeconfig")
        return (
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        )

    return [
        ServiceSpec(
            name="registry",
            part="debian",
            program=programs["docker-registry"],
            argv=(str(programs["docker-registry"]), "serve", str(layout.home / "registry.yml")),
            port=ports["registry"],
            health_url=f"http://127.0.0.1:{ports['registry']}/v2/",
        ),
        ServiceSpec(
            name="gitea",
            part="gitea",
            program=programs["gitea"],
            argv=(
                str(programs["gitea"]),
                "web",
                "--config",
                str(gitea_root / "app.ini"),
                "--work-path",
                str(gitea_root / "work"),
            ),
            port=ports["gitea"],
            health_url=f"http://127.0.0.1:{ports['gitea']}/api/healthz",
            run_as_service_user=True,
            cwd=gitea_root,
        ),
        ServiceSpec(
            name="etcd",
            part="kubernetes",
            program=programs["etcd"],
            argv=(
                str(programs["etcd"]),
                "--name=testbed",
                f"--data-dir={layout.data('etcd')}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                "--listen-metrics-urls=",
                # A throwaway cluster: speed over durability on a power cut.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ),
            port=ports["etcd"],
            health_url=f"{etcd_url}/health",
        ),
        ServiceSpec(
            name="kube-apiserver",
            part="kubernetes",
            program=programs["kube-apiserver"],
            argv=(
                str(programs["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['kube-apiserver']}",
                # No Endpoints for the `kubernetes` Service: a loopback address is not a valid endpoint.
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                # Logs, exec and port-forward reach the real node's kubelet as this client,
                # so the kubelet keeps anonymous access off and asks the API server (Webhook).
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ),
            port=ports["kube-apiserver"],
            health_url=f"{api}/readyz",
            needs=("etcd",),
            tls="ca",
        ),
        ServiceSpec(
            name="kube-controller-manager",
            part="kubernetes",
            program=programs["kube-controller-manager"],
            argv=(
                str(programs["kube-controller-manager"]),
                *component_flags("controller-manager"),
                f"--secure-port={ports['kube-controller-manager']}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--controllers=*,bootstrapsigner,tokencleaner",
                # Tuned openly for GitOps figures (DESIGN: the cluster is the floor): the defaults
                # (20 QPS, 5 deployment and replica-set workers) take a minute to roll out 200
                # one-replica Deployments on an idle machine, which hides what shipline costs.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                "--profiling=false",
            ),
            port=ports["kube-controller-manager"],
            health_url=f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz",
            needs=("kube-apiserver",),
            tls="insecure",
        ),
        ServiceSpec(
            name="kube-scheduler",
            part="kubernetes",
            program=programs["kube-scheduler"],
            argv=(
                str(programs["kube-scheduler"]),
                *component_flags("scheduler"),
                f"--secure-port={ports['kube-scheduler']}",
                # Honoured without a config file (deprecated as a flag, not removed): as for the controller-manager.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--profiling=false",
            ),
            port=ports["kube-scheduler"],
            health_url=f"https://127.0.0.1:{ports['kube-scheduler']}/healthz",
            needs=("kube-apiserver",),
            tls="insecure",
        ),
        ServiceSpec(
            name="kwok",
            part="kwok",
            program=programs["kwok"],
            argv=(
                str(programs["kwok"]),
                f"--kubeconfig={pki / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                # Nodes keep a Lease fresh, so the node lifecycle controller never evicts their pods.
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ),
            port=ports["kwok"],
            health_url=f"http://127.0.0.1:{ports['kwok']}/healthz",
            needs=("kube-apiserver",),
        ),
        *node_specs(layout, ports, programs),
    ]


def node_specs(layout: Layout, ports: dict[str, int], programs: dict[str, Path]) -> list[ServiceSpec]:
    """The real node: containerd, the kubelet, kube-proxy (prepared by testbed/node.py)."""
    node = layout.home / "node"
    node_ip = nodeconfigs.node_ip(ports["registry"])
    return [
        ServiceSpec(
            name="containerd",
            part="kubelet",
            program=programs["containerd"],
            argv=(str(programs["containerd"]), "--config", str(node / "containerd.toml")),
            port=ports["containerd"],
            health_url=f"http://127.0.0.1:{ports['containerd']}/v1/metrics",
            # It pulls the pause image from the registry; the node registers with the API server.
            needs=("registry", "kube-apiserver"),
        ),
        ServiceSpec(
            name="coredns",
            part="coredns",
            program=programs["coredns"],
            argv=(str(programs["coredns"]), "-conf", str(node / "Corefile")),
            port=ports["coredns"],
            health_url=f"http://127.0.0.1:{ports['coredns']}/health",
            needs=("kube-apiserver",),
        ),
        ServiceSpec(
            name="kubelet",
            part="kubelet",
            program=programs["kubelet"],
            argv=(
                str(programs["kubelet"]),
                f"--config={node / 'kubelet.json'}",
                f"--kubeconfig={layout.pki / 'kubelet.kubeconfig'}",
                f"--hostname-override={nodeconfigs.NODE_NAME}",
                f"--node-ip={node_ip}",
                f"--root-dir={layout.data('kubelet')}",
                "--v=1",
            ),
            port=ports["kubelet-healthz"],
            health_url=f"http://127.0.0.1:{ports['kubelet-healthz']}/healthz",
            needs=("containerd",),
        ),
        ServiceSpec(
            name="kube-proxy",
            part="kubelet",
            program=programs["kube-proxy"],
            argv=(str(programs["kube-proxy"]), f"--config={node / 'kube-proxy.json'}", "--v=1"),
            port=ports["kube-proxy"],
            health_url=f"http://127.0.0.1:{ports['kube-proxy']}/livez",
            needs=("kubelet",),
        ),
    ]


def probe(spec: ServiceSpec, ca_file: Path | None, timeout: float = 2.0) -> tuple[bool, str]:
    """Ask a service its health: (healthy, what it said or why not)."""
    context: ssl.SSLContext | None = None
    if spec.tls == "ca" and ca_file is not None:
        context = ssl.create_default_context(cafile=str(ca_file))
    elif spec.tls != "none":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(spec.health_url, timeout=timeout, context=context) as response:
            body = response.read(2000).decode(errors="replace").strip()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)
    if status != 200:
        return False, f"HTTP {status}"
    if spec.name == "etcd":
        try:
            healthy = json.loads(body).get("health") == "true"
        except ValueError:
            healthy = False
        return healthy, body
    return True, body[:80] or "ok"
