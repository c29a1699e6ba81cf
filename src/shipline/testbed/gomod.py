"""The wrapper module that lets the go command build Kubernetes' own commands.

k8s.io/kubernetes cannot be `go install`ed: its go.mod points every staging module
(k8s.io/api, k8s.io/client-go, ...) at `./staging/src/...`, and a replace in a
dependency is ignored.  A module of ours that requires k8s.io/kubernetes and
replaces each staging module with its published v0.Y.Z release resolves the same
code.  Pure text in, text out.
"""

from __future__ import annotations

import re

from shipline.testbed.parts import staging_version

_STAGING_REPLACE = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/\S+\s*$")
_GO_LINE = re.compile(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$", re.MULTILINE)


def staging_modules(kubernetes_gomod: str) -> list[str]:
    """The modules k8s.io/kubernetes' go.mod replaces with a staging directory."""
    found = []
    for line in kubernetes_gomod.splitlines():
        match = _STAGING_REPLACE.match(line)
        if match:
            found.append(match.group(1))
    return sorted(set(found))


def wrapper_gomod(module: str, kubernetes_version: str, kubernetes_gomod: str) -> str:
    """go.mod text for a module that builds commands of k8s.io/kubernetes at that version."""
    staging = staging_modules(kubernetes_gomod)
    if not staging:
        raise ValueError("k8s.io/kubernetes' go.mod names no ./staging/src replace: not a Kubernetes go.mod?")
    go_line = _GO_LINE.search(kubernetes_gomod)
    go_version = go_line.group(1) if go_line else "1.24.0"
    release = staging_version(kubernetes_version)
    lines = [
        f"module {module}",
        "",
        f"go {go_version}",
        "",
        f"require k8s.io/kubernetes {kubernetes_version}",
        "",
        "replace (",
        *(f"\t{name} => {name} {release}" for name in staging),
        ")",
        "",
    ]
    return "\n".join(lines)


def tools_go(packages: list[str] | tuple[str, ...]) -> str:
    """A build-tagged file importing the main packages, so `go mod tidy` keeps their requirements."""
    imports = "\n".join(f'\t_ "{p}"' for p in packages)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
