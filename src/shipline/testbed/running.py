"""`shipline testbed up`, `status`, `env` and `down`.

`up` is idempotent: it keeps the ports, certificates and credentials of the first
`up` (in state.json and pki/), starts only what is not answering, and waits until
every started service answers.  `down` stops every service by its pid file, from
any process.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shipline.exceptions import ToolError, UsageError
from shipline.testbed import certs, configs, node, nodeconfigs
from shipline.testbed.building import is_built, run_logged
from shipline.testbed.layout import Layout
from shipline.testbed.parts import DEBIAN_PROGRAMS, GITEA, GO_PARTS, IMAGES_PART, KUBERNETES, KWOK, GoPart
from shipline.testbed.ports import find_taken, holder, plan_ports
from shipline.testbed.processes import RunAs, running_pid, start_detached, stop
from shipline.testbed.services import ServiceSpec, probe, service_specs

Report = Callable[[str], None]

SERVICE_USER = "shipline-testbed"
"""The unprivileged account Gitea runs as when shipline runs as root."""

GITEA_ADMIN = "shipline"
FAKE_NODES = 3


@dataclass
class State:
    """What the first `up` chose, kept so later calls (from any process) agree."""

    ports: dict[str, int]
    gitea_root: str
    gitea_password: str
    gitea_token: str = ""
    gitea_admin: str = GITEA_ADMIN
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    built: bool
    pid: int | None
    healthy: bool
    detail: str
    log: str

    @property
    def state(self) -> str:
        if not self.built:
            return "not built"
        if self.pid is None:
            return "healthy (not ours)" if self.healthy else "stopped"
        return "healthy" if self.healthy else "unhealthy"


def programs(layout: Layout) -> dict[str, Path]:
    found = {name: Path(path) for name, path in DEBIAN_PROGRAMS.items()}
    for part in GO_PARTS:
        for program in part.programs:
            found[program] = layout.program(part, program)
    return found


def load_state(layout: Layout) -> State | None:
    try:
        data = json.loads(layout.state_file.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise UsageError(f"{layout.state_file} is corrupt ({exc}); run `shipline testbed down --purge`") from exc
    return State(**data)


def _save_state(layout: Layout, state: State) -> None:
    layout.home.mkdir(parents=True, exist_ok=True)
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(layout.state_file)


def _gitea_root(layout: Layout) -> Path:
    if os.geteuid() == 0:
        # Gitea's user cannot enter root's home (mode 700): give it a directory of its own.
        import hashlib

        digest = hashlib.sha256(str(layout.home).encode()).hexdigest()[:10]
        return Path("/var/lib/shipline-testbed") / digest
    return layout.home / "gitea"


def _specs(layout: Layout, state: State) -> list[ServiceSpec]:
    # A testbed made before a service was added gets that service's port from the same base.
    for name, port in plan_ports(state.ports["registry"]).items():
        state.ports.setdefault(name, port)
    progs = programs(layout)
    root = Path(state.gitea_root)
    if os.geteuid() == 0:
        progs["gitea"] = root / "gitea"
    return service_specs(layout, state.ports, progs, root)


def _part_ready(layout: Layout, name: str) -> bool:
    return is_built(layout, name)


def _build_hint(part: str) -> str:
    return f"shipline testbed build --only {part}"


# -- up ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """One `up` or `down` at a time per testbed home (tests and people may race)."""
    layout.home.mkdir(parents=True, exist_ok=True)
    with open(layout.home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up(layout: Layout, environ: Mapping[str, str], port_base: int, report: Report = print, timeout: float = 180.0) -> State:
    """Start every built service that is not running; wait until all answer."""
    with _locked(layout):
        return _up(layout, environ, port_base, report, timeout)


def _up(layout: Layout, environ: Mapping[str, str], port_base: int, report: Report, timeout: float) -> State:
    start = time.monotonic()
    state = load_state(layout)
    if state is None:
        state = State(
            ports=plan_ports(port_base),
            gitea_root=str(_gitea_root(layout)),
            gitea_password=secrets.token_urlsafe(18),
        )
    specs = _specs(layout, state)
    wanted: list[ServiceSpec] = []
    no_node = node.unavailable_reason(layout) if _part_ready(layout, "kubelet") else ""
    for spec in specs:
        if spec.name in node.NODE_SERVICES and no_node:
            report(f"{spec.name}: skipped, {no_node}")
        elif not _part_ready(layout, spec.part):
            report(f"{spec.name}: not built, skipped (build it with `{_build_hint(spec.part)}`)")
        elif any(need not in {w.name for w in wanted} for need in spec.needs):
            report(f"{spec.name}: skipped, it needs {', '.join(spec.needs)}")
        else:
            wanted.append(spec)
    if not wanted:
        raise UsageError("nothing of the testbed is built: run `shipline testbed build` first")

    running = {s.name for s in wanted if running_pid(layout.pidfile(s.name), str(s.program))}
    ours = {s.name: s.port for s in wanted if s.name not in running}
    if state.ports["etcd-peer"] and "etcd" not in running:
        ours["etcd-peer"] = state.ports["etcd-peer"]
    taken = find_taken(ours)
    program = {s.name: str(s.program) for s in specs} | {
        "etcd-peer": next((str(s.program) for s in specs if s.name == "etcd"), "")
    }
    if any(program[name] and program[name] in holder(port) for name, port in taken.items()):
        # A service of ours stopped a moment ago may still be closing its sockets.
        taken = find_taken(taken, patience=10.0)
    if taken:
        where = ", ".join(f"{name} on 127.0.0.1:{port}{_held_by(port)}" for name, port in taken.items())
        raise UsageError(
            f"ports already in use by something that is not this testbed: {where}. "
            f"Stop it, or choose other ports: `shipline testbed down --purge` and then "
            f"`SHIPLINE_TESTBED_PORT_BASE=<port> shipline testbed up`"
        )
    _save_state(layout, state)
    _write_files(layout, state, wanted, report)

    env = dict(environ)
    done: set[str] = set()
    node_wanted = [s for s in wanted if s.name in node.NODE_SERVICES]
    wanted = [s for s in wanted if s.name not in node.NODE_SERVICES]
    for spec in wanted:
        missing = [n for n in spec.needs if n not in done and any(w.name == n for w in wanted)]
        for need in missing:
            _wait_healthy(layout, next(w for w in wanted if w.name == need), timeout, report)
            done.add(need)
        if spec.name in running:
            report(f"{spec.name}: already running on 127.0.0.1:{spec.port}")
            continue
        if spec.name == "gitea":
            _prepare_gitea(layout, state, spec, report)
        _start(layout, state, spec, env, report)
    for spec in wanted:
        if spec.name not in done:
            _wait_healthy(layout, spec, timeout, report)
    if any(s.name == "kwok" for s in wanted):
        _ensure_nodes(layout, timeout, report)
    if node_wanted:
        _up_node(layout, state, node_wanted, running, env, timeout, report)
    if any(s.name == "gitea" for s in wanted):
        _ensure_gitea_token(layout, state, report)
        _save_state(layout, state)
    # It holds the Gitea admin token: the testbed's user's alone.
    fd = os.open(layout.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(configs.env_file(env_values(layout, state)))
    report(f'testbed is up in {time.monotonic() - start:.1f}s; `eval "$(shipline testbed env)"` to use it')
    return state


def _held_by(port: int) -> str:
    who = holder(port)
    return f" ({who})" if who else ""


def _start(layout: Layout, state: State, spec: ServiceSpec, env: Mapping[str, str], report: Report) -> None:
    run_as = _service_user() if spec.run_as_service_user and os.geteuid() == 0 else None
    spec_env = {**env, **dict(spec.env)}
    if run_as is not None:
        spec_env.update(HOME=str(Path(state.gitea_root) / "home"), USER=run_as.user)
    start_detached(
        spec.argv,
        pidfile=layout.pidfile(spec.name),
        log=layout.log(spec.name),
        env=spec_env,
        cwd=spec.cwd or layout.home,
        run_as=run_as,
    )
    report(f"{spec.name}: started on 127.0.0.1:{spec.port} (log: {layout.log(spec.name)})")


def _up_node(
    layout: Layout,
    state: State,
    specs: list[ServiceSpec],
    running: set[str],
    env: Mapping[str, str],
    timeout: float,
    report: Report,
) -> None:
    """Start the real node; if it cannot come up, stop it again and keep the reason, so that
    the rest of the testbed still serves (and the tests that need the node say why not)."""
    since = 0.0 if "kubelet" in running else time.time()
    error = node.error_file(layout)
    try:
        if not _part_ready(layout, IMAGES_PART):
            raise UsageError(f"the real node needs the base images: run `{_build_hint(IMAGES_PART)}`")
        for spec in specs:
            if spec.name in running:
                report(f"{spec.name}: already running on 127.0.0.1:{spec.port}")
                continue
            if spec.name == "containerd":
                node.prepare(layout, state.ports, report)
            if spec.name == "coredns":
                kubectl(layout, "apply", "-f", "-", stdin=json.dumps(nodeconfigs.COREDNS_RBAC))
            _start(layout, state, spec, env, report)
            _wait_healthy(layout, spec, timeout, report)
        node.wait_ready(lambda *args: kubectl(layout, *args), timeout, report, layout.log("kubelet"), since=since)
        apiserver = running_pid(layout.pidfile("kube-apiserver"), "kube-apiserver")
        if apiserver is not None and b"--kubelet-client-certificate" not in Path(f"/proc/{apiserver}/cmdline").read_bytes():
            report(
                "node: kube-apiserver was started before the testbed had a real node, so `kubectl logs/exec` "
                "on the node are refused; restart it: `shipline testbed down && shipline testbed up`"
            )
    except (ToolError, UsageError) as exc:
        report(f"node: did not come up, stopping it: {exc}")
        _down(layout, False, lambda line: None, set(node.NODE_SERVICES))
        error.parent.mkdir(parents=True, exist_ok=True)
        error.write_text(str(exc) + "\n")
        return
    error.unlink(missing_ok=True)


def _write_files(layout: Layout, state: State, wanted: list[ServiceSpec], report: Report) -> None:
    for directory in (layout.pki, layout.run, layout.logs, layout.data("etcd"), layout.data("registry")):
        directory.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.pki, 0o700)
    (layout.home / "registry.yml").write_text(configs.registry_config(layout.data("registry"), state.ports["registry"]))
    pki = layout.pki
    if not (pki / "ca.crt").exists():
        report("generating the cluster's CA, certificates and service-account key")
        ca = certs.make_ca()
        _write_pair(pki, "ca", ca)
        _write_pair(pki, "apiserver", certs.make_serving(ca, "kube-apiserver", certs.APISERVER_DNS, certs.APISERVER_IPS))
        sa = certs.make_service_account_key()
        (pki / "sa.pub").write_bytes(sa.cert_pem)
        (pki / "sa.key").write_bytes(sa.key_pem)
        os.chmod(pki / "sa.key", 0o600)
    ca_pair = certs.KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    for client in certs.CLIENTS:
        # Also on a testbed made before a client was added (the real node's came later).
        if not (pki / f"{client.file_name}.crt").exists():
            _write_pair(pki, client.file_name, certs.make_client(ca_pair, client))
    if not (pki / "front-proxy-ca.crt").exists():
        # The aggregation layer's own CA, as kubeadm makes it: extension API servers
        # (and every component's delegated authentication) trust requests it signs.
        front = certs.make_ca("front-proxy-ca")
        _write_pair(pki, "front-proxy-ca", front)
        _write_pair(pki, "front-proxy-client", certs.make_client(front, certs.FRONT_PROXY_CLIENT))
    server = f"https://127.0.0.1:{state.ports['kube-apiserver']}"
    ca_pem = (pki / "ca.crt").read_bytes()
    for client in certs.CLIENTS:
        text = configs.kubeconfig(
            server=server,
            ca_pem=ca_pem,
            user=client.common_name,
            cert_pem=(pki / f"{client.file_name}.crt").read_bytes(),
            key_pem=(pki / f"{client.file_name}.key").read_bytes(),
        )
        target = layout.kubeconfig if client.file_name == "admin" else pki / f"{client.file_name}.kubeconfig"
        target.write_text(text)
        os.chmod(target, 0o600)


def _write_pair(pki: Path, name: str, pair: certs.KeyPair) -> None:
    (pki / f"{name}.crt").write_bytes(pair.cert_pem)
    (pki / f"{name}.key").write_bytes(pair.key_pem)
    os.chmod(pki / f"{name}.key", 0o600)


def _wait_healthy(layout: Layout, spec: ServiceSpec, timeout: float, report: Report) -> None:
    deadline = time.monotonic() + timeout
    detail = ""
    while time.monotonic() < deadline:
        healthy, detail = probe(spec, layout.pki / "ca.crt")
        if healthy:
            report(f"{spec.name}: healthy")
            return
        if running_pid(layout.pidfile(spec.name), str(spec.program)) is None:
            break
        time.sleep(0.3)
    raise ToolError(
        f"{spec.name} did not become healthy at {spec.health_url} ({detail or 'process exited'}); "
        f"the end of its log {layout.log(spec.name)}:\n{_tail(layout.log(spec.name))}"
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def kubectl(layout: Layout, *args: str, stdin: str | None = None, kubeconfig: Path | None = None) -> str:
    """Run the testbed's kubectl with its admin kubeconfig; ToolError on failure."""
    program = layout.program(KUBERNETES, "kubectl")
    cmd = [str(program), f"--kubeconfig={kubeconfig or layout.kubeconfig}", *args]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"`{' '.join(cmd)}` could not run: {exc}") from exc
    if proc.returncode != 0:
        raise ToolError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}") from (
            subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
        )
    return proc.stdout


def _ensure_nodes(layout: Layout, timeout: float, report: Report) -> None:
    kubectl(layout, "apply", "-f", "-", stdin=configs.kwok_nodes(FAKE_NODES))
    deadline = time.monotonic() + timeout
    while True:
        out = kubectl(
            layout,
            "get",
            "nodes",
            "-l",
            "type=kwok",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        )
        ready = [line for line in out.splitlines() if line.endswith("=True")]
        if len(ready) >= FAKE_NODES:
            report(f"kwok: {len(ready)} fake nodes Ready")
            return
        if time.monotonic() > deadline:
            raise ToolError(f"kwok's nodes did not become Ready: {out.strip()}; see {layout.log('kwok')}")
        time.sleep(0.5)


# -- Gitea ---------------------------------------------------------------------


def _service_user() -> RunAs:
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        run_logged(
            [
                "useradd",
                "--system",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
                "/nonexistent",
                "--no-create-home",
                SERVICE_USER,
            ],
            log=Path("/dev/null"),
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return RunAs(SERVICE_USER, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def _gitea_secrets() -> configs.GiteaSecrets:
    def key() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")

    return configs.GiteaSecrets(
        secret_key=secrets.token_urlsafe(48), internal_token=secrets.token_urlsafe(64), jwt_secret=key(), lfs_jwt_secret=key()
    )


def _prepare_gitea(layout: Layout, state: State, spec: ServiceSpec, report: Report) -> None:
    """Lay out Gitea's directory, readable by its user, and migrate its database once."""
    root = Path(state.gitea_root)
    run_as = _service_user() if os.geteuid() == 0 else None
    source = layout.sources / GITEA.key
    static = root / "static"
    for sub in ("work/data", "work/repositories", "work/log", "work/custom", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    marker = static / ".version"
    if not marker.exists() or marker.read_text() != GITEA.version:
        report(f"gitea: copying templates and options of {GITEA.version} to {static}")
        shutil.rmtree(static, ignore_errors=True)
        static.mkdir(parents=True)
        for sub in ("templates", "options", "public"):
            if (source / sub).exists():
                shutil.copytree(source / sub, static / sub)
        marker.write_text(GITEA.version)
    if run_as is not None:
        shutil.copy2(layout.program(GITEA, "gitea"), root / "gitea")
    app_ini = root / "app.ini"
    if not app_ini.exists():
        app_ini.write_text(
            configs.gitea_app_ini(
                work=root / "work",
                static=static,
                port=state.ports["gitea"],
                run_user=run_as.user if run_as else pwd.getpwuid(os.getuid()).pw_name,
                secrets=_gitea_secrets(),
            )
        )
    if run_as is not None:
        for path in [root, *root.rglob("*")]:
            os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)
    if not (root / "work" / "data" / "gitea.db").exists():
        report("gitea: creating its database")
        _gitea_cli(layout, state, ["migrate"])


def _gitea_cli(layout: Layout, state: State, args: list[str]) -> str:
    root = Path(state.gitea_root)
    program = root / "gitea" if os.geteuid() == 0 else layout.program(GITEA, "gitea")
    argv = [str(program), *args, "--config", str(root / "app.ini"), "--work-path", str(root / "work")]
    env = {**os.environ, "HOME": str(root / "home"), "GITEA_WORK_DIR": str(root / "work")}
    run_as = _service_user() if os.geteuid() == 0 else None
    if run_as is not None:
        argv = run_as.wrap(argv)
        env["USER"] = run_as.user
    return run_logged(argv, log=layout.log("gitea-cli"), env=env, cwd=root)


def _ensure_gitea_token(layout: Layout, state: State, report: Report) -> None:
    if state.gitea_token and _gitea_token_works(state):
        return
    try:
        _gitea_cli(
            layout,
            state,
            [
                "admin",
                "user",
                "create",
                "--admin",
                "--username",
                state.gitea_admin,
                "--password",
                state.gitea_password,
                "--email",
                f"{state.gitea_admin}@testbed.invalid",
                "--must-change-password=false",
            ],
        )
        report(f"gitea: created admin user {state.gitea_admin}")
    except ToolError as exc:
        if "already exists" not in str(exc):
            raise
    token = (
        _gitea_cli(
            layout,
            state,
            [
                "admin",
                "user",
                "generate-access-token",
                "--username",
                state.gitea_admin,
                "--token-name",
                f"testbed-{int(time.time())}",
                "--scopes",
                "all",
                "--raw",
            ],
        )
        .strip()
        .splitlines()[-1]
        .strip()
    )
    state.gitea_token = token
    report("gitea: created an API token")


def _gitea_token_works(state: State) -> bool:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{state.ports['gitea']}/api/v1/user", headers={"Authorization": f"token {state.gitea_token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (urllib.error.URLError, OSError):
        return False


# -- status, env, down ---------------------------------------------------------


def status(layout: Layout) -> list[ServiceStatus]:
    state = load_state(layout)
    if state is None:
        return []
    result = []
    no_node = node.unavailable_reason(layout) if _part_ready(layout, "kubelet") else ""
    for spec in _specs(layout, state):
        built = _part_ready(layout, spec.part)
        pid = running_pid(layout.pidfile(spec.name), str(spec.program))
        if spec.name in node.NODE_SERVICES and no_node and pid is None:
            # Cannot run here: shown as not built, with the reason, not as a failure.
            result.append(ServiceStatus(spec.name, spec.port, False, None, False, no_node, str(layout.log(spec.name))))
            continue
        healthy, detail = probe(spec, layout.pki / "ca.crt", timeout=1.0) if built else (False, "")
        if spec.name in node.NODE_SERVICES and pid is None and node.error_file(layout).exists():
            detail = "node did not come up: " + node.error_file(layout).read_text().strip()
        result.append(ServiceStatus(spec.name, spec.port, built, pid, healthy, detail, str(layout.log(spec.name))))
    kubelet = next((s for s in result if s.name == "kubelet"), None)
    if kubelet is not None and kubelet.pid is not None:
        result.append(_node_status(layout, state))
    return result


def _node_status(layout: Layout, state: State) -> ServiceStatus:
    """The real node as the API server sees it: a row of `status`."""
    try:
        out = kubectl(
            layout,
            "get",
            "node",
            nodeconfigs.NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status} {.status.nodeInfo.kubeletVersion} "
            "{.status.nodeInfo.containerRuntimeVersion} {.status.addresses[?(@.type=='InternalIP')].address}",
        ).split()
    except ToolError as exc:
        out = ["Unknown", str(exc)[:60]]
    ready = bool(out) and out[0] == "True"
    detail = ("Ready " if ready else "NotReady ") + " ".join(out[1:])
    return ServiceStatus(
        f"node/{nodeconfigs.NODE_NAME}", state.ports["kubelet"], True, None, ready, detail, str(layout.log("kubelet"))
    )


def env_values(layout: Layout, state: State) -> dict[str, str]:
    values = {
        "KUBECONFIG": str(layout.kubeconfig),
        "SHIPLINE_REGISTRY": f"127.0.0.1:{state.ports['registry']}",
        "SHIPLINE_TESTBED_HOME": str(layout.home),
    }
    if _part_ready(layout, IMAGES_PART):
        values["SHIPLINE_RUNNER_IMAGE"] = f"127.0.0.1:{state.ports['registry']}/{nodeconfigs.RUNNER_IMAGE}"
    if state.gitea_token:  # Gitea is built and has been up at least once
        values["SHIPLINE_GITEA_URL"] = f"http://127.0.0.1:{state.ports['gitea']}"
        values["SHIPLINE_GITEA_TOKEN"] = state.gitea_token
    return values


def down(layout: Layout, purge: bool = False, report: Report = print, only: Collection[str] | None = None) -> list[str]:
    """Stop every service (dependents first), or those named in `only`; with purge, delete all state too."""
    if not layout.home.exists():
        report("nothing was running")
        return []
    with _locked(layout):
        return _down(layout, purge, report, only)


def _down(layout: Layout, purge: bool, report: Report, only: Collection[str] | None) -> list[str]:
    state = load_state(layout)
    stopped = []
    if state is not None:
        for spec in reversed(_specs(layout, state)):
            if only is not None and spec.name not in only:
                continue
            if spec.name == "containerd":
                # The kubelet is stopped by now (it would restart what is killed).
                node.kill_pods(layout, report)
            if stop(layout.pidfile(spec.name), str(spec.program)):
                stopped.append(spec.name)
                report(f"{spec.name}: stopped")
            if spec.name == "containerd":
                node.teardown(layout, report)
    if purge:
        if state is not None and Path(state.gitea_root).is_dir():
            shutil.rmtree(state.gitea_root, ignore_errors=True)
        shutil.rmtree(layout.home, ignore_errors=True)
        report(f"removed {layout.home}")
    if not stopped:
        report("nothing was running")
    return stopped


def tool_path(layout: Layout, part: GoPart, program: str) -> Path:
    """A built program's path, or UsageError naming the command that builds it."""
    path = layout.program(part, program)
    if not is_built(layout, part.name):
        raise UsageError(f"{program} is not built: run `{_build_hint(part.name)}`")
    return path


__all__ = ["KWOK", "State", "ServiceStatus", "down", "env_values", "kubectl", "load_state", "status", "tool_path", "up"]
