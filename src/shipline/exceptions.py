"""Every error shipline raises on purpose, and how each reaches a user.

    ShiplineError                 exit 1, HTTP 500
    ├── UsageError                exit 2, HTTP 400   bad flags, bad params
    │   ├── DefinitionError       exit 2, HTTP 422   a pipeline file with problems
    │   ├── ManifestError         exit 2, HTTP 422   manifests a cluster rejects (all of them listed)
    │   └── PromotionEditError    exit 2, HTTP 422   an environment repository a promotion cannot edit
    ├── NotFound                  exit 2, HTTP 404   no such run, task or file
    ├── Conflict                  exit 1, HTTP 409   e.g. cancelling a finished run
    ├── StoreError                exit 1, HTTP 503   the database refused or is unreachable
    ├── ToolError                 exit 1, HTTP 502   an external tool (git, helm, go, apt) failed
    │   └── RegistryError         exit 1, HTTP 502   an OCI registry is unreachable or refused a push
    ├── ClusterError              exit 1, HTTP 502   a Kubernetes API server refused or is unreachable
    └── ForgeError                exit 1, HTTP 502   a forge's API (Gitea, GitHub) refused or is unreachable

Each class carries its CLI exit code and HTTP status, so the edges convert
without a table of their own.  A message says what happened, to what, and what
to check.  Library exceptions are converted where they enter and kept as the
cause (`raise StoreError(...) from exc`).
"""

from __future__ import annotations

from dataclasses import dataclass


class ShiplineError(Exception):
    exit_code = 1
    http_status = 500


class UsageError(ShiplineError):
    exit_code = 2
    http_status = 400


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a definition, at a place a person can jump to."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class DefinitionError(UsageError):
    """A pipeline definition with one or more problems, all of them listed."""

    http_status = 422

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NotFound(ShiplineError):
    exit_code = 2
    http_status = 404


class Conflict(ShiplineError):
    http_status = 409


class StoreError(ShiplineError):
    http_status = 503


class ToolError(ShiplineError):
    http_status = 502


class RegistryError(ToolError):
    """An OCI registry is unreachable, wants credentials, or refused a push."""


class ManifestError(UsageError):
    """Kubernetes objects that cannot be applied as written: bad YAML, a kind the
    cluster does not know, a field the API server rejects.  Every problem is listed."""

    http_status = 422

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} object{'s' if count != 1 else ''} rejected, nothing applied:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class PromotionEditError(UsageError):
    """A release cannot be written into an environment repository: the service is not in it,
    a file does not parse, or the version is not one to promote.  Names the file and what to add."""

    http_status = 422


class ClusterError(ShiplineError):
    """The Kubernetes API server refused a request (credentials, conflicts) or could not be reached."""

    http_status = 502


class ForgeError(ShiplineError):
    """A forge's API call failed: names the forge, the call, the HTTP status and what to check."""

    http_status = 502

    def __init__(self, message: str, *, forge: str = "", call: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.forge = forge
        self.call = call
        self.status = status
