"""Helm and kustomize as renderers: a chart or a kustomization in, manifest text out.

Only rendering: nothing here talks to a cluster.  Helm runs with a repository
list and cache of its own (a temporary directory per `Templater`), so a
chart's HTTP repositories are added there and never touch the user's Helm
configuration.  A registry on 127.0.0.1 or localhost is spoken to over plain
HTTP, as everywhere in shipline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from shipline.exceptions import ToolError

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def is_plain_http(reference: str) -> bool:
    """Whether an `oci://HOST[:PORT]/...` reference (or `HOST:PORT/...`) names a loopback registry."""
    rest = reference.removeprefix("oci://")
    host = urlsplit("//" + rest).hostname or ""
    return host in LOOPBACK


class TemplateError(ToolError):
    """helm or kubectl refused to render; `detail` is what the tool said."""

    def __init__(self, message: str, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{message}: {detail}" if detail else message)


class Templater:
    """`helm template`, `helm dependency build` and `kubectl kustomize`, each a subprocess."""

    def __init__(self, helm: str | None = None, kubectl: str | None = None, timeout: float = 300.0) -> None:
        self.helm = helm or os.environ.get("SHIPLINE_HELM") or "helm"
        self.kubectl = kubectl or os.environ.get("SHIPLINE_KUBECTL") or "kubectl"
        self.timeout = timeout
        self._home = Path(tempfile.mkdtemp(prefix="shipline-helm-"))
        self._repos: dict[str, str] = {}

    def __enter__(self) -> Templater:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._home, ignore_errors=True)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HELM_REPOSITORY_CONFIG"] = str(self._home / "repositories.yaml")
        env["HELM_REPOSITORY_CACHE"] = str(self._home / "cache")
        return env

    def _run(self, argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
        program = shutil.which(argv[0])
        if program is None:
            raise ToolError(f'{what}: `{argv[0]}` is not on PATH; install it (the testbed\'s: eval "$(shipline testbed env)")')
        try:
            proc = subprocess.run(
                [program, *argv[1:]],
                cwd=cwd,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TemplateError(f"{what}: gave no answer in {self.timeout:.0f}s", "") from exc
        except OSError as exc:
            raise ToolError(f"{what}: cannot start {argv[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise TemplateError(what, _tail(proc.stderr or proc.stdout))
        return proc.stdout

    # --- helm -----------------------------------------------------------------------

    def add_repo(self, url: str) -> str:
        """A name for an HTTP chart repository, added (and its index fetched) once."""
        if url not in self._repos:
            name = "r" + hashlib.sha256(url.encode()).hexdigest()[:12]
            self._run([self.helm, "repo", "add", name, url], f"helm repo add {url}")
            self._repos[url] = name
        return self._repos[url]

    def dependency_build(self, chart: Path, *, plain_http: bool = False) -> None:
        argv = [self.helm, "dependency", "build", str(chart), "--skip-refresh"]
        if plain_http:
            argv.append("--plain-http")
        self._run(argv, f"helm dependency build {chart.name}")

    def template(
        self,
        release: str,
        chart: str,
        *,
        namespace: str,
        version: str | None = None,
        values: Sequence[Path] = (),
        sets: Sequence[tuple[str, str]] = (),
        repo: str | None = None,
        what: str | None = None,
    ) -> str:
        argv = [self.helm, "template", release, chart, "--namespace", namespace, "--include-crds", "--skip-tests"]
        if version:
            argv += ["--version", version]
        if repo:
            argv += ["--repo", repo]
        if chart.startswith("oci://") and is_plain_http(chart):
            argv.append("--plain-http")
        for path in values:
            argv += ["--values", str(path)]
        for name, value in sets:
            argv += ["--set-string", f"{name}={value}"]
        return self._run(argv, what or f"helm template {release} {chart}")

    # --- kustomize ------------------------------------------------------------------

    def kustomize(self, directory: Path) -> str:
        return self._run([self.kubectl, "kustomize", str(directory)], f"kubectl kustomize {directory.name}")


def _tail(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept)
