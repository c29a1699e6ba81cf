"""The testbed's pure parts: go.mod wrapper, port plan, config files, certificates, processes."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shipline.testbed import certs, configs
from shipline.testbed.gomod import staging_modules, tools_go, wrapper_gomod
from shipline.testbed.layout import layout_from_env
from shipline.testbed.parts import staging_version
from shipline.testbed.ports import DEFAULT_BASE, OFFSETS, holder, is_listening, plan_ports
from shipline.testbed.processes import is_alive, running_pid, start_detached, stop

KUBE_GOMOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/foo/bar => github.com/foo/bar v1.0.0
)
"""


def test_staging_version_follows_the_kubernetes_minor_and_patch() -> None:
    assert staging_version("v1.34.4") == "v0.34.4"
    with pytest.raises(ValueError):
        staging_version("v2.0.0")


def test_wrapper_replaces_each_staging_module_with_its_release() -> None:
    assert staging_modules(KUBE_GOMOD) == ["k8s.io/api", "k8s.io/client-go"]
    text = wrapper_gomod("example.test/w", "v1.34.4", KUBE_GOMOD)
    assert "require k8s.io/kubernetes v1.34.4" in text
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.34.4" in text
    assert "github.com/foo/bar" not in text
    assert "go 1.24.0" in text


def test_wrapper_refuses_a_go_mod_without_staging() -> None:
    with pytest.raises(ValueError, match="staging"):
        wrapper_gomod("example.test/w", "v1.34.4", "module x\n")


def test_tools_go_imports_every_package_behind_a_build_tag() -> None:
    text = tools_go(("a/b", "c/d"))
    assert text.startswith("//go:build tools")
    assert '_ "a/b"' in text and '_ "c/d"' in text


def test_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = plan_ports()
    assert len(set(ports.values())) == len(OFFSETS)
    assert all(DEFAULT_BASE <= p < 32768 for p in ports.values())
    assert plan_ports(40000)["registry"] == 40000
    with pytest.raises(ValueError):
        plan_ports(80)


def test_layout_follows_the_environment(tmp_path: Path) -> None:
    layout = layout_from_env(
        {"SHIPLINE_TESTBED_CACHE": str(tmp_path / "c"), "SHIPLINE_TESTBED_HOME": str(tmp_path / "h")}, tmp_path
    )
    assert layout.cache == tmp_path / "c" and layout.home == tmp_path / "h"
    default = layout_from_env({}, tmp_path)
    assert default.cache == tmp_path / ".cache" / "shipline" / "testbed"
    assert default.home == tmp_path / ".shipline" / "testbed"


def test_env_file_is_quoted_for_the_shell() -> None:
    text = configs.env_file({"KUBECONFIG": "/a b/kc", "SHIPLINE_GITEA_TOKEN": "x'y"})
    out = subprocess.run(
        ["sh", "-c", text + 'printf "%s|%s" "$KUBECONFIG" "$SHIPLINE_GITEA_TOKEN"'], capture_output=True, text=True, check=True
    )
    assert out.stdout == "/a b/kc|x'y"


def test_registry_config_allows_deletes_on_loopback(tmp_path: Path) -> None:
    config = json.loads(configs.registry_config(tmp_path, 1234))
    assert config["http"]["addr"] == "127.0.0.1:1234"
    assert config["storage"]["delete"] == {"enabled": True}


def test_gitea_config_allows_loopback_webhooks(tmp_path: Path) -> None:
    secrets = configs.GiteaSecrets("a", "b", "c", "d")
    text = configs.gitea_app_ini(work=tmp_path, static=tmp_path, port=4000, run_user="u", secrets=secrets)
    assert "[webhook]\nALLOWED_HOST_LIST = loopback" in text
    assert "HTTP_ADDR = 127.0.0.1" in text and "INSTALL_LOCK = true" in text


def test_kwok_nodes_are_marked_for_kwok() -> None:
    nodes = json.loads(configs.kwok_nodes(2))["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["kwok-node-0", "kwok-node-1"]
    assert all(n["metadata"]["annotations"][configs.KWOK_NODE_ANNOTATION] == "fake" for n in nodes)


def test_certificates_chain_to_the_ca_with_kubeadm_identities() -> None:
    ca = certs.make_ca()
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    serving = x509.load_pem_x509_certificate(certs.make_serving(ca, "kube-apiserver", ("localhost",), ("127.0.0.1",)).cert_pem)
    serving.verify_directly_issued_by(ca_cert)
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    admin = x509.load_pem_x509_certificate(certs.make_client(ca, certs.CLIENTS[0]).cert_pem)
    admin.verify_directly_issued_by(ca_cert)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_detached_process_outlives_its_starter_and_stops(tmp_path: Path) -> None:
    pidfile, log = tmp_path / "p.pid", tmp_path / "p.log"
    program = sys.executable
    pid = start_detached(
        [program, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        pidfile=pidfile,
        log=log,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    try:
        assert running_pid(pidfile, program) == pid
        assert running_pid(pidfile, "no-such-program") is None
        deadline = time.monotonic() + 10
        while "up" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "up" in log.read_text()
    finally:
        assert stop(pidfile, program)
    assert not is_alive(pid)
    assert not pidfile.exists()
    assert not stop(pidfile, program)


# The first thread ends (as a Go service's may while it exits) and another keeps a port open.
FIRST_THREAD_ENDS = """
import ctypes, socket, sys, threading, time
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
threading.Thread(target=time.sleep, args=(60,)).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_process_whose_first_thread_ended_is_alive_while_another_holds_its_port(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", FIRST_THREAD_ENDS], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        with proc.stdout:
            port = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while b"Z" not in Path(f"/proc/{proc.pid}/stat").read_bytes().rsplit(b")", 1)[1][:3]:
            assert time.monotonic() < deadline, "the first thread did not end"
            time.sleep(0.05)
        assert is_listening(port)
        assert is_alive(proc.pid, sys.executable), "a zombie first thread is not the end of the process"
        assert holder(port).startswith(f"pid {proc.pid}: {sys.executable}")
    finally:
        proc.kill()
        proc.wait()
    assert not is_alive(proc.pid)
    assert holder(port) == ""


def test_a_test_needing_an_unbuilt_part_fails_with_the_build_command(tmp_path: Path) -> None:
    from shipline.testbed.fixtures import Testbed
    from shipline.testbed.running import State

    layout = layout_from_env(
        {"SHIPLINE_TESTBED_CACHE": str(tmp_path / "empty-cache"), "SHIPLINE_TESTBED_HOME": str(tmp_path / "h")}, tmp_path
    )
    testbed = Testbed(layout, State(ports=plan_ports(), gitea_root=str(tmp_path), gitea_password="x"), ())
    with pytest.raises(pytest.fail.Exception, match=r"shipline testbed build --only gitea"):
        testbed.require("gitea")


@pytest.mark.testbed
def test_up_refuses_ports_that_something_else_holds(tmp_path: Path) -> None:
    import os
    import socket

    from shipline.exceptions import UsageError
    from shipline.testbed.running import up

    real = layout_from_env(os.environ, Path.home())
    layout = layout_from_env({"SHIPLINE_TESTBED_CACHE": str(real.cache), "SHIPLINE_TESTBED_HOME": str(tmp_path / "h")}, tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        base = squatter.getsockname()[1]  # the registry's port (offset 0) is taken
        if base > 65535 - max(OFFSETS.values()):
            pytest.skip("the kernel gave a port too high to be a base")
        with pytest.raises(UsageError, match="SHIPLINE_TESTBED_PORT_BASE") as refused:
            up(layout, {}, base, report=lambda line: None)
    assert f"registry on 127.0.0.1:{base} (pid {os.getpid()}: " in str(refused.value), "the holder is named"


def test_long_commands_report_progress_and_failures_name_the_command(tmp_path: Path) -> None:
    from shipline.exceptions import ToolError
    from shipline.testbed.building import run_with_heartbeat

    beats: list[str] = []
    env = {"PATH": "/usr/bin:/bin"}
    run_with_heartbeat(
        ["sh", "-c", "echo a; sleep 0.6; echo b; sleep 0.6"],
        log=tmp_path / "l",
        env=env,
        cwd=tmp_path,
        heartbeat=beats.append,
        every=0.25,
    )
    assert beats and beats[-1].endswith("2 packages built")
    with pytest.raises(ToolError, match=r"(?s)`sh -c echo oops >&2; exit 3` failed with exit code 3:\noops"):
        run_with_heartbeat(
            ["sh", "-c", "echo oops >&2; exit 3"], log=tmp_path / "l", env=env, cwd=tmp_path, heartbeat=beats.append
        )


SESSION = """
import sys
from pathlib import Path
from shipline.testbed.fixtures import Sessions
from shipline.testbed.layout import Layout

sessions = Sessions(Layout(cache=Path(sys.argv[1]), home=Path(sys.argv[1])))
sessions.join()
print("joined", flush=True)
sys.stdin.read()  # a session's tests, until the test closes stdin
with sessions.leaving() as last:
    print("last" if last else "not last", flush=True)
"""


def test_a_test_session_stops_the_testbed_only_when_no_other_session_uses_it(tmp_path: Path) -> None:
    """`make test` and a `pytest -k` beside it share one testbed: whichever ends first stops nothing."""
    from shipline.testbed.fixtures import Sessions
    from shipline.testbed.layout import Layout

    def session() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", SESSION, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        return proc

    def leave(proc: subprocess.Popen[str]) -> str:
        out, _ = proc.communicate("", timeout=30)
        return out.strip()

    first, second = session(), session()
    assert first.stdout is not None and second.stdout is not None
    assert first.stdout.readline() == second.stdout.readline() == "joined\n"
    assert leave(first) == "not last", "the other session still runs its tests"
    assert leave(second) == "last"

    # While the last session stops its services, a session that starts waits: it must not find
    # them running (and count on them) only to see them stopped.
    here = Sessions(Layout(cache=tmp_path, home=tmp_path))
    here.join()
    with here.leaving() as last:
        assert last
        third = session()
        assert third.stdout is not None
        time.sleep(0.5)
        assert third.poll() is None and not select.select([third.stdout], [], [], 0)[0], "it waits for the stop"
    assert third.stdout.readline() == "joined\n"
    assert leave(third) == "last"
