"""Which loopback port each service of the testbed listens on.

Ports come from one base ($SHIPLINE_TESTBED_PORT_BASE, default 28400), a fixed
offset per service: below Linux's ephemeral range (32768+), away from the usual
homes of registries (5000), Gitea (3000), etcd (2379) and apiservers (6443), so a
testbed runs beside those.  Planning is pure; `find_taken` is the one probe.
"""

from __future__ import annotations

import os
import socket
import time
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


def find_taken(ports: Mapping[str, int], host: str = "127.0.0.1", patience: float = 0.0) -> dict[str, int]:
    """The planned ports on which something already listens (still, after `patience` seconds:
    a service stopped a moment ago may yet be closing its sockets)."""
    deadline = time.monotonic() + patience
    while True:
        taken = {name: port for name, port in ports.items() if is_listening(port, host)}
        if not taken or time.monotonic() >= deadline:
            return taken
        time.sleep(0.2)


def holder(port: int) -> str:
    """Who listens on a TCP port of this machine, as "pid N: command line", or "" if unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    if not inodes:
        return ""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        # Through a thread's view: a process whose first thread has ended shows no files of its own.
        for tid in _listdir(f"/proc/{pid}/task"):
            task = f"/proc/{pid}/task/{tid}"
            fds = _listdir(f"{task}/fd")
            if not fds:
                continue
            if any(_readlink(f"{task}/fd/{fd}") in inodes for fd in fds):
                try:
                    with open(f"{task}/cmdline", "rb") as cmdline:
                        command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    command = "?"
                return f"pid {pid}: {command[:200]}"
            break
    return ""


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
