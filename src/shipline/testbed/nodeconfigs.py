"""The real node's configuration files and addresses: pure, text in and text out.

One real node per machine (kube-proxy's and the kubelet's iptables chains are
machine-wide).  Its address is a /32 of the project's own on `lo` (the kubelet
refuses a loopback address as node IP), chosen from the port base so that a
testbed on other ports gets another one; pods live on the bridge `shipline0` in
POD_SUBNET; nothing is routed off the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

NODE_NAME = "shipline-node"
BRIDGE = "shipline0"
POD_SUBNET = "10.85.0.0/24"
POD_GATEWAY = "10.85.0.1"
CLUSTER_DOMAIN = "cluster.local"
API_SERVICE_IP = "10.96.0.1"

REAL_NODE_TAINT = "shipline.dev/real-node"
"""The real node carries `shipline.dev/real-node=true:NoSchedule`: only pods that tolerate
it (and usually select `kubernetes.io/hostname: shipline-node`) run there; the rest
keep landing on kwok's nodes, as before the node existed."""

PAUSE_IMAGE = "shipline/pause:3.10"
RUNNER_IMAGE = "shipline/runner:bookworm"

SYSCTLS: tuple[str, ...] = (
    # Set by the kubelet (its "kernel defaults").
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    # Set by the testbed, so that Services reach pods across the bridge.
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
)
"""Host settings the node changes; `up` records them before, `down` puts them back."""


def node_ip(port_base: int) -> str:
    """10.251.X.Y from the port base: 28400 -> 10.251.110.240."""
    return f"10.251.{(port_base >> 8) & 255}.{port_base & 255}"


def containerd_config(
    *, root: Path, state: Path, socket: Path, metrics_port: int, cni_conf: Path, certs_d: Path, sandbox_image: str
) -> str:
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[metrics]
  address = "127.0.0.1:{metrics_port}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # The sandbox refuses negative OOM scores.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs_d}"
"""


def registry_hosts(registry: str) -> str:
    """containerd's hosts.toml for the testbed registry: plain HTTP on loopback."""
    return f"""server = "http://{registry}"

[host."http://{registry}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"""


def cni_config(ipam_dir: Path) -> str:
    config = {
        "cniVersion": "1.0.0",
        "name": "shipline-testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerade: pods talk to this machine only.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def kubelet_config(
    *, node_ip: str, port: int, healthz_port: int, pki: Path, socket: Path, pod_logs: Path, cluster_dns: bool = False
) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        # Only the API server (its kubelet-client certificate) and authorised users reach it.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        # This machine has cgroups v1 (hybrid): the kubelet only warns.
        "failCgroupV1": False,
        # The sandbox's limits: no rlimit above 20000, no negative OOM score.
        "maxOpenFiles": 20000,
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "clusterDomain": CLUSTER_DOMAIN,
        # CoreDNS runs on the host, on the node's address (when the coredns part is built).
        "clusterDNS": [node_ip] if cluster_dns else [],
        "podLogsDir": str(pod_logs),
        "registerWithTaints": [{"key": REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}],
        "serializeImagePulls": False,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "maxPods": 50,
    }
    return json.dumps(config, indent=2) + "\n"


def kube_proxy_config(*, kubeconfig: Path, node_ip: str, healthz_port: int, metrics_port: int) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": node_ip,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": POD_SUBNET,
        # NodePorts on the node's own address only: no route_localnet on the whole machine.
        "nodePortAddresses": [f"{node_ip}/32"],
        # Leave the machine's conntrack settings alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    return json.dumps(config, indent=2) + "\n"


def corefile(*, node_ip: str, health_port: int, kubeconfig: Path) -> str:
    """Cluster DNS for the node's pods: Service and pod names under cluster.local, nothing else
    (no forwarding: pods have nowhere else to go)."""
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {node_ip}
    errors
    health 127.0.0.1:{health_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


COREDNS_RBAC = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
        },
    ],
}
"""What CoreDNS's `kubernetes` plugin reads, granted to its client certificate's user."""
