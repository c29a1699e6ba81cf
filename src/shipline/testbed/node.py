"""The real node: what `up` prepares on the host before containerd starts, and what
`down` puts back after the kubelet, kube-proxy and containerd stop.

Before its first start, `up` records the host settings the node changes (SYSCTLS)
and the iptables chains that exist, in <home>/node/host-before.json; `down` kills
what still runs in pods, unmounts what the kubelet and containerd mounted, removes
the bridge and the node's address, deletes every iptables chain that was not there
before (and the rules that jump to it), and writes the sysctls back.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from shipline.domain.rollouts import NODE_GONE_TAINTS
from shipline.exceptions import ToolError
from shipline.testbed import certs, nodeconfigs
from shipline.testbed.building import is_built
from shipline.testbed.images import push_images
from shipline.testbed.layout import Layout
from shipline.testbed.nodeconfigs import API_SERVICE_IP, BRIDGE, NODE_NAME, POD_GATEWAY, POD_SUBNET
from shipline.testbed.parts import COREDNS

Report = Callable[[str], None]

NODE_SERVICES = ("containerd", "coredns", "kubelet", "kube-proxy")
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")
OWN_CHAIN = "SHIPLINE-NODE"
MACHINE_MARKER = Path("/run/shipline-testbed-node.json")
"""Which testbed home runs this machine's real node (there is one per machine)."""


def node_dir(layout: Layout) -> Path:
    return layout.home / "node"


def error_file(layout: Layout) -> Path:
    """Why the node did not come up at the last `up` (absent when it did)."""
    return node_dir(layout) / "error.txt"


def socket(layout: Layout) -> Path:
    return layout.run / "containerd" / "containerd.sock"


def unavailable_reason(layout: Layout) -> str:
    """Why this machine cannot run the real node now ("" if it can)."""
    if os.geteuid() != 0:
        return "the real node needs root (containerd, the kubelet, iptables)"
    for program in ("/usr/bin/containerd", "/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/sbin/iptables"):
        if not Path(program).exists():
            return f"{program} is missing: run `shipline testbed build --only debian`"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup: containers cannot run here"
    owner = _machine_owner()
    if owner and owner != str(layout.home) and _kubelet_alive(Path(owner)):
        return f"the testbed in {owner} runs this machine's real node (one per machine): stop it there first"
    return ""


def _machine_owner() -> str:
    try:
        return str(json.loads(MACHINE_MARKER.read_text()).get("home", ""))
    except (OSError, ValueError):
        return ""


def _kubelet_alive(home: Path) -> bool:
    from shipline.testbed.processes import is_alive, read_pid

    pid = read_pid(home / "run" / "kubelet.pid")
    return pid is not None and is_alive(pid, "kubelet")


# -- up ------------------------------------------------------------------------


def write_pki(layout: Layout, node_ip: str) -> None:
    """The kubelet's serving certificate for the node's address (the clients are in certs.CLIENTS)."""
    pki = layout.pki
    serving = pki / "kubelet-serving.crt"
    marker = pki / "kubelet-serving.ip"
    if serving.exists() and marker.exists() and marker.read_text() == node_ip:
        return
    ca = certs.KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    pair = certs.make_serving(ca, NODE_NAME, (NODE_NAME,), (node_ip,))
    (pki / "kubelet-serving.key").write_bytes(pair.key_pem)
    os.chmod(pki / "kubelet-serving.key", 0o600)
    serving.write_bytes(pair.cert_pem)
    marker.write_text(node_ip)


def prepare(layout: Layout, ports: Mapping[str, int], report: Report) -> None:
    """Host side of the node: address, bridge, sysctls, own iptables rules, config files, images."""
    node_ip = nodeconfigs.node_ip(ports["registry"])
    directory = node_dir(layout)
    directory.mkdir(parents=True, exist_ok=True)
    MACHINE_MARKER.write_text(json.dumps({"home": str(layout.home)}) + "\n")
    before = directory / "host-before.json"
    if not before.exists():
        snapshot = {"sysctls": {name: _sysctl(name) for name in nodeconfigs.SYSCTLS}, "chains": _all_chains()}
        before.write_text(json.dumps(snapshot, indent=2) + "\n")
        report(f"node: recorded the host's sysctls and iptables chains in {before}")
    _ip("addr", "replace", f"{node_ip}/32", "dev", "lo")
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "replace", f"{POD_GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    # Pods reach the API server (127.0.0.1 only) through the `kubernetes` Service's address:
    # a DNAT from the bridge to loopback, which needs route_localnet on this bridge alone.
    _write_sysctl(f"net.ipv4.conf.{BRIDGE}.route_localnet", "1")
    _write_sysctl("net.ipv4.ip_forward", "1")
    _write_sysctl("net.bridge.bridge-nf-call-iptables", "1")
    _own_rules(ports["kube-apiserver"])
    write_pki(layout, node_ip)
    _write_configs(layout, ports, node_ip)
    push_images(layout, f"127.0.0.1:{ports['registry']}", report)


def _own_rules(api_port: int) -> None:
    rules = {
        "nat": [
            (
                OWN_CHAIN,
                [
                    "-i",
                    BRIDGE,
                    "-d",
                    API_SERVICE_IP,
                    "-p",
                    "tcp",
                    "--dport",
                    "443",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    f"127.0.0.1:{api_port}",
                ],
            ),
        ],
        "filter": [
            # Pods talk to this machine and to each other, nowhere else.
            (OWN_CHAIN, ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]),
            (OWN_CHAIN, ["-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP"]),
        ],
    }
    hooks = {"nat": "PREROUTING", "filter": "FORWARD"}
    for table, chain_rules in rules.items():
        subprocess.run(["iptables", "-t", table, "-N", OWN_CHAIN], capture_output=True, check=False)
        _iptables("iptables", "-t", table, "-F", OWN_CHAIN)
        for chain, spec in chain_rules:
            _iptables("iptables", "-t", table, "-A", chain, *spec)
        hook = hooks[table]
        exists = subprocess.run(["iptables", "-t", table, "-C", hook, "-j", OWN_CHAIN], capture_output=True, check=False)
        if exists.returncode != 0:
            _iptables("iptables", "-t", table, "-I", hook, "1", "-j", OWN_CHAIN)


def _write_configs(layout: Layout, ports: Mapping[str, int], node_ip: str) -> None:
    directory = node_dir(layout)
    registry = f"127.0.0.1:{ports['registry']}"
    certs_d = directory / "certs.d"
    (certs_d / registry).mkdir(parents=True, exist_ok=True)
    (certs_d / registry / "hosts.toml").write_text(nodeconfigs.registry_hosts(registry))
    cni = directory / "cni"
    cni.mkdir(exist_ok=True)
    (cni / "10-shipline.conflist").write_text(nodeconfigs.cni_config(layout.data("cni-ipam")))
    (directory / "containerd.toml").write_text(
        nodeconfigs.containerd_config(
            root=layout.data("containerd"),
            state=layout.run / "containerd",
            socket=socket(layout),
            metrics_port=ports["containerd"],
            cni_conf=cni,
            certs_d=certs_d,
            sandbox_image=f"{registry}/{nodeconfigs.PAUSE_IMAGE}",
        )
    )
    (directory / "kubelet.json").write_text(
        nodeconfigs.kubelet_config(
            node_ip=node_ip,
            port=ports["kubelet"],
            healthz_port=ports["kubelet-healthz"],
            pki=layout.pki,
            socket=socket(layout),
            pod_logs=layout.data("pod-logs"),
            cluster_dns=is_built(layout, COREDNS.name),
        )
    )
    (directory / "Corefile").write_text(
        nodeconfigs.corefile(node_ip=node_ip, health_port=ports["coredns"], kubeconfig=layout.pki / "coredns.kubeconfig")
    )
    (directory / "kube-proxy.json").write_text(
        nodeconfigs.kube_proxy_config(
            kubeconfig=layout.pki / "kube-proxy.kubeconfig",
            node_ip=node_ip,
            healthz_port=ports["kube-proxy"],
            metrics_port=ports["kube-proxy-metrics"],
        )
    )
    for sub in ("containerd", "kubelet", "pod-logs", "cni-ipam"):
        layout.data(sub).mkdir(parents=True, exist_ok=True)


def wait_ready(kubectl: Callable[..., str], timeout: float, report: Report, log: Path, since: float) -> None:
    """Until the kubelet reports the node Ready after `since` (a Ready from before a restart is
    stale) and the node controller has taken off the taints of a node that did not answer
    (`node.kubernetes.io/unreachable|not-ready`: pods that tolerate them briefly would be evicted)."""
    deadline = time.monotonic() + timeout
    out = ""
    not_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - 1))
    while time.monotonic() < deadline:
        try:
            out = kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status} "
                "{.status.conditions[?(@.type=='Ready')].lastHeartbeatTime} {.spec.taints[*].key}",
            ).strip()
        except ToolError as exc:
            out = str(exc)
        status, _, rest = out.partition(" ")
        heartbeat, _, taints = rest.partition(" ")
        down = [t for t in taints.split() if t in NODE_GONE_TAINTS]
        if status == "True" and heartbeat >= not_before and not down:
            report(f"node: {NODE_NAME} Ready")
            return
        time.sleep(1)
    raise ToolError(f"the real node {NODE_NAME} did not become Ready within {timeout:.0f}s ({out}); see {log}")


# -- down ----------------------------------------------------------------------


def kill_pods(layout: Layout, report: Report) -> None:
    """With containerd still up: kill every container it runs for the node."""
    sock = socket(layout)
    if not sock.exists():
        return
    base = ["ctr", "--address", str(sock), "--namespace", "k8s.io"]
    listed = subprocess.run([*base, "tasks", "ls", "-q"], capture_output=True, text=True, check=False, timeout=30)
    tasks = listed.stdout.split() if listed.returncode == 0 else []
    for task in tasks:
        subprocess.run([*base, "tasks", "kill", "-s", "SIGKILL", task], capture_output=True, check=False, timeout=30)
    deadline = time.monotonic() + 10
    for task in tasks:
        while time.monotonic() < deadline:
            done = subprocess.run([*base, "tasks", "delete", task], capture_output=True, check=False, timeout=30)
            if done.returncode == 0 or b"not found" in done.stderr:
                break
            time.sleep(0.2)
    if tasks:
        report(f"node: killed {len(tasks)} container(s)")


def teardown(layout: Layout, report: Report) -> None:
    """After containerd, the kubelet and kube-proxy have stopped: put the host back."""
    directory = node_dir(layout)
    before_file = directory / "host-before.json"
    sandboxes = _sandbox_ids(layout)
    _kill_shims(layout)
    _unmount_under((layout.home, layout.run / "containerd", layout.data("containerd")))
    if not before_file.exists():
        return  # this testbed never set up a node: the bridge and chains, if any, are another's
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
    # Any veth of a pod whose namespace is gone went with it; the address last.
    for port_file in (layout.state_file,):
        try:
            base = int(json.loads(port_file.read_text())["ports"]["registry"])
            subprocess.run(
                ["ip", "addr", "del", f"{nodeconfigs.node_ip(base)}/32", "dev", "lo"], capture_output=True, check=False
            )
        except (OSError, ValueError, KeyError):
            pass
    _remove_runtime_leftovers(sandboxes)
    before = json.loads(before_file.read_text())
    removed = _remove_new_chains({(k.split(" ", 1)[0], k.split(" ", 1)[1]): set(v) for k, v in before["chains"].items()})
    for name, value in before["sysctls"].items():
        if value is not None and _sysctl(name) != value:
            _write_sysctl(name, value)
    before_file.unlink()
    report(f"node: host put back (sysctls, {removed} iptables chain(s) removed, bridge and address gone)")
    if _machine_owner() == str(layout.home):
        MACHINE_MARKER.unlink(missing_ok=True)


def _sandbox_ids(layout: Layout) -> set[str]:
    """The pod sandboxes this node's containerd knew (their CNI results are kept by id)."""
    sandboxes = layout.run / "containerd" / "io.containerd.grpc.v1.cri" / "sandboxes"
    try:
        return {entry.name for entry in os.scandir(sandboxes)}
    except OSError:
        return set()


def _remove_runtime_leftovers(sandboxes: set[str]) -> None:
    """Killed pods had no CNI DEL: drop their cached results, then the machine-wide dirs if empty."""
    results = Path("/var/lib/cni/results")
    for sandbox in sandboxes:
        for name in (f"shipline-testbed-{sandbox}-eth0", f"cni-loopback-{sandbox}-lo"):
            (results / name).unlink(missing_ok=True)
    for directory in (
        results,
        results.parent,
        Path("/run/containerd/runc/k8s.io"),
        Path("/run/containerd/runc"),
        Path("/run/containerd/s"),
        Path("/run/containerd"),
    ):
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty, or not there: someone else's


def _kill_shims(layout: Layout) -> None:
    needle = str(socket(layout)).encode()
    for _ in range(20):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    argv = cmdline.read()
            except OSError:
                continue
            if b"containerd-shim" in argv and needle in argv:
                found = True
                try:
                    os.kill(int(entry.name), 9)
                except ProcessLookupError:
                    pass
        if not found:
            return
        time.sleep(0.2)


def _unmount_under(prefixes: tuple[Path, ...]) -> None:
    roots = tuple(str(p).rstrip("/") + "/" for p in prefixes)
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 1:
            point = fields[1].replace("\\040", " ")
            if point.startswith(roots):
                points.append(point)
    # Deepest first.
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# -- host state: sysctls and iptables chains -----------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    try:
        _sysctl_path(name).write_text(value + "\n")
    except OSError as exc:
        raise ToolError(f"could not set {name}={value}: {exc}; the real node needs root on a machine that allows it") from exc


def _save(command: str, table: str) -> str:
    proc = subprocess.run([f"{command}-save", "-t", table], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def _chains(text: str) -> set[str]:
    return {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}


def _all_chains() -> dict[str, list[str]]:
    return {f"{command} {table}": sorted(_chains(_save(command, table))) for command in IPTABLES for table in TABLES}


def _remove_new_chains(before: Mapping[tuple[str, ...], set[str]]) -> int:
    removed = 0
    for command in IPTABLES:
        for table in TABLES:
            text = _save(command, table)
            new = _chains(text) - set(before.get((command, table), set()))
            if not new:
                continue
            for line in text.splitlines():
                if not line.startswith("-A "):
                    continue
                words = shlex.split(line)
                chain = words[1]
                target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")), "")
                if chain not in new and target in new:
                    subprocess.run([command, "-t", table, "-D", chain, *words[2:]], capture_output=True, check=False)
            for chain in new:
                subprocess.run([command, "-t", table, "-F", chain], capture_output=True, check=False)
            for chain in new:
                if subprocess.run([command, "-t", table, "-X", chain], capture_output=True, check=False).returncode == 0:
                    removed += 1
    return removed


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}; the real node needs root and iproute2")


def _iptables(*argv: str) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
