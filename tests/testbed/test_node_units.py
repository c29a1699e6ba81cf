"""The real node's configuration, without running it: addresses, ports, what the kubelet allows."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

from shipline.testbed import nodeconfigs
from shipline.testbed.ports import plan_ports


def test_the_node_address_moves_with_the_port_base_and_is_not_loopback() -> None:
    first, second = nodeconfigs.node_ip(28400), nodeconfigs.node_ip(28500)
    assert first != second
    for address in (first, second):
        parsed = ipaddress.ip_address(address)
        assert parsed.is_private and not parsed.is_loopback
        assert parsed not in ipaddress.ip_network(nodeconfigs.POD_SUBNET)


def test_the_node_ports_move_with_the_base_and_do_not_collide() -> None:
    ports = plan_ports(28500)
    node = [ports[name] for name in ("containerd", "kubelet-healthz", "kubelet", "kube-proxy", "kube-proxy-metrics")]
    assert node == [28508, 28509, 28510, 28511, 28512]
    assert len(set(ports.values())) == len(ports)


def test_the_kubelet_admits_only_authenticated_authorised_callers_and_taints_its_node() -> None:
    config = json.loads(
        nodeconfigs.kubelet_config(
            node_ip="10.251.1.2",
            port=28510,
            healthz_port=28509,
            pki=Path("/pki"),
            socket=Path("/run/c.sock"),
            pod_logs=Path("/logs"),
        )
    )
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["healthzBindAddress"] == "127.0.0.1"
    assert config["registerWithTaints"] == [{"key": nodeconfigs.REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}]


def test_containerd_pulls_the_testbed_registry_over_plain_http_and_keeps_its_own_paths() -> None:
    text = nodeconfigs.containerd_config(
        root=Path("/h/data/containerd"),
        state=Path("/h/run/containerd"),
        socket=Path("/h/run/containerd/c.sock"),
        metrics_port=28508,
        cni_conf=Path("/h/node/cni"),
        certs_d=Path("/h/node/certs.d"),
        sandbox_image="127.0.0.1:28500/shipline/pause:3.10",
    )
    config = tomllib.loads(text)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert (config["root"], config["state"], config["grpc"]["address"]) == (
        "/h/data/containerd",
        "/h/run/containerd",
        "/h/run/containerd/c.sock",
    )
    assert cri["sandbox_image"] == "127.0.0.1:28500/shipline/pause:3.10"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["registry"]["config_path"] == "/h/node/certs.d"
    hosts = tomllib.loads(nodeconfigs.registry_hosts("127.0.0.1:28500"))
    assert hosts["server"] == "http://127.0.0.1:28500"
    assert hosts["host"]["http://127.0.0.1:28500"]["capabilities"] == ["pull", "resolve"]


def test_pod_traffic_is_not_masqueraded_off_the_machine() -> None:
    bridge = json.loads(nodeconfigs.cni_config(Path("/ipam")))["plugins"][0]
    assert bridge["ipMasq"] is False and bridge["bridge"] == nodeconfigs.BRIDGE
    assert bridge["ipam"]["dataDir"] == "/ipam"
