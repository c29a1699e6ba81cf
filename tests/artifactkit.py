"""Small real things for the artifact tasks' tests: busybox images, tiny charts, extra registries, an event sink.

Everything here is real: `docker-registry` processes on loopback ports (read-only,
or behind htpasswd), skopeo to look at what was pushed, an HTTP server that
records what it receives.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt

from shipline.domain.runs import RunRecord
from shipline.settings import Settings


def log_text(settings: Settings, record: RunRecord, task: str) -> str:
    return "".join(p.read_text() for p in sorted((settings.logs / str(record.id)).glob(f"{task}.*.log")))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_context(directory: Path, run: str = "echo built > /built") -> Path:
    """A build context: a static busybox FROM scratch (nothing can be pulled here), and one RUN."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", directory / "busybox")
    (directory / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        f'RUN ["/bin/busybox", "sh", "-c", {json.dumps(run)}]\n'
        'CMD ["/bin/busybox", "cat", "/built"]\n'
    )
    return directory


def tiny_chart(directory: Path, name: str = "hello", template: str | None = None) -> Path:
    """A chart with commented values and one template that uses the image values."""
    (directory / "templates").mkdir(parents=True, exist_ok=True)
    (directory / "Chart.yaml").write_text(
        f'apiVersion: v2\nname: {name}\ndescription: a tiny chart  # kept\nversion: 0.0.1\nappVersion: "0.0.1"\n'
    )
    (directory / "values.yaml").write_text(
        textwrap.dedent("""\
        # Values of the tiny chart.
        replicas: 1
        image:
          repository: example.invalid/placeholder   # set by the release
          tag: latest
          pullPolicy: IfNotPresent
        ports:
          - 8080
        """)
    )
    (directory / "templates" / "configmap.yaml").write_text(
        template
        or textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: {{ .Release.Name }}
        data:
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        """)
    )
    return directory


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=False, timeout=120)


def inspect_image(reference: str) -> dict[str, Any] | None:
    """skopeo's view of a pushed image; None when the registry has no such tag."""
    proc = skopeo("inspect", "--tls-verify=false", f"docker://{reference}")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def write_auth_file(path: Path, host: str, user: str, password: str) -> Path:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    path.chmod(0o600)
    return path


@dataclass
class ExtraRegistry:
    """A second docker-registry on its own loopback port."""

    host: str
    process: subprocess.Popen[bytes]


@contextmanager
def extra_registry(root: Path, *, readonly: bool = False, users: dict[str, str] | None = None) -> Iterator[ExtraRegistry]:
    """Start `docker-registry serve` read-only or behind htpasswd; stopped on the way out."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if readonly:
        config["storage"]["maintenance"] = {"readonly": {"enabled": True}}
    if users:
        lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}" for u, p in users.items()]
        (root / "htpasswd").write_text("\n".join(lines) + "\n")
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}}
    (root / "config.json").write_text(json.dumps(config))
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(root / "config.json")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # 401: up, and wants credentials
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()}") from None
                time.sleep(0.05)
        yield ExtraRegistry(f"127.0.0.1:{port}", process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class EventSink:
    """An HTTP server on 127.0.0.1 that records each POST; the first `fail_first` get 503."""

    url: str
    received: list[Received] = field(default_factory=list)
    refused: int = 0


@contextmanager
def event_sink(fail_first: int = 0) -> Iterator[EventSink]:
    sink = EventSink("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                if sink.refused < fail_first:
                    sink.refused += 1
                    code = 503
                else:
                    sink.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    code = 202
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/events"
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
