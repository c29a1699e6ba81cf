"""Which loopback port each service of the testbed listens on.

Ports come from one base ($SHIPLINE_TESTBED_PORT_BASE, default 28400), a fixed
offset per service: below Linux's ephemeral range (32768+), away from the usual
homes of registries (5000), Gitea (3000), etcd (2379) and apiservers (6443), so a
testbed runs beside those.  Planning is pure; `find_taken` is the one probe.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

DEFAULT_BASE = 28400

OFFSETS: dict[str, int] = {
    "registry": 0,
    "gitea": 1,
    "etcd": 2,
    "etcd-peer": 3,
    "kube-apiserver": 4,
    "kube-controller-manager": 5,
    "kube-scheduler": 6,
    "kwok": 7,
    # The real node (see testbed/node.py).
    "containerd": 8,
    "kubelet-healthz": 9,
    "kubelet": 10,
    "kube-proxy": 11,
    "kube-proxy-metrics": 12,
    "coredns": 13,
}


def plan_ports(base: int = DEFAULT_BASE) -> dict[str, int]:
    if not 1024 <= base <= 65535 - max(OFFSETS.values()):
        raise ValueError(f"port base {base} is out of range: choose 1024..{65535 - max(OFFSETS.values())}")
    return {name: base + offset for name, offset in OFFSETS.items()}


def port_base_from_env(environ: Mapping[str, str]) -> int:
    raw = environ.get("SHIPLINE_TESTBED_PORT_BASE", "")
    if not raw:
        return DEFAULT_BASE
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"SHIPLINE_TESTBED_PORT_BASE={raw!r} is not a port number") from exc


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def find_taken(ports: Mapping[str, int], host: str = "127.0.0.1") -> dict[str, int]:
    """The planned ports on which something already listens."""
    return {name: port for name, port in ports.items() if is_listening(port, host)}
