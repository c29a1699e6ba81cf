"""Git for promotions: an environment repository's files at its branch head, a promotion branch pushed from
them, and a service's commits between two release tags.

The `git` CLI does the work, with the forge credentials shipline has handed
to it through a credential-store file (0600, in a private temporary
directory), so URLs never carry a token.  Every ref given to git is checked
first and passed as a full `refs/...` name or after `--`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from shipline.exceptions import ToolError

GIT_TIMEOUT = 120.0
MAX_FILE_BYTES = 1_000_000
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REF = re.compile(r"^[A-Za-z0-9._/+-]{1,200}$")


class PromotionGitError(ToolError):
    """git failed on an environment or service repository (unreachable, refused the push, no such ref).

    `transient`: worth trying again later (the forge unreachable or failing on its side); False when git
    said the repository, the branch or the credentials are wrong, which waiting does not mend."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


_FOR_GOOD = (
    "not found",
    "authentication failed",
    "could not read username",
    "couldn't find remote ref",
    "does not appear to be a git repository",
    "does not exist",
    "the requested url returned error: 40",
    "invalid refspec",
)


def _ref(value: str) -> str:
    if not _REF.match(value) or value.startswith(("-", "/")) or ".." in value or value.endswith(("/", ".lock")):
        raise PromotionGitError(
            f"{value!r} is not a branch or tag name shipline pushes or reads; check the declaration", transient=False
        )
    return value


@dataclass(frozen=True)
class ServiceCommit:
    sha: str
    subject: str


class Workspace:
    """A private temporary directory with git credentials; `with Workspace(creds) as ws: ...`."""

    def __init__(self, credentials: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="shipline-promote-"))
        os.chmod(self.root, 0o700)
        self._creds = self.root / "credentials"
        self._creds.touch(mode=0o600)
        self._creds.write_text(credentials, encoding="utf-8")

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def git(self, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
        command = [
            "git",
            "-c",
            f"credential.helper=store --file={self._creds}",
            "-c",
            "user.name=shipline",
            "-c",
            "user.email=shipline@localhost",
            "-c",
            "init.defaultBranch=main",
            *args,
        ]
        environ = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "HOME": str(self.root), **(env or {})}
        try:
            done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False, env=environ)
        except subprocess.TimeoutExpired as exc:
            raise PromotionGitError(f"git {args[0]} took longer than {GIT_TIMEOUT:.0f}s; is the forge reachable?") from exc
        if done.returncode != 0:
            words = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])[:500]
            lowered = words.lower()
            raise PromotionGitError(
                f"git {args[0]} failed: {words}; check the repository and the token",
                transient=not any(sign in lowered for sign in _FOR_GOOD),
            )
        return done.stdout


@dataclass
class EnvCheckout:
    """One environment repository's branch head, checked out shallow, to edit and push as a promotion branch."""

    work: Workspace
    url: str
    branch: str
    path: Path
    head: str

    @classmethod
    def clone(cls, work: Workspace, url: str, branch: str, name: str = "env") -> EnvCheckout:
        path = work.root / name
        work.git("clone", "--quiet", "--depth", "1", "--single-branch", "--branch", _ref(branch), "--", url, str(path))
        head = work.git("rev-parse", "HEAD", cwd=path).strip()
        return cls(work, url, branch, path, head)

    @classmethod
    def at(cls, work: Workspace, url: str, branch: str, commit: str, name: str = "env-at") -> EnvCheckout:
        """The repository at one commit (fetched by its id)."""
        if not _SHA.match(commit):
            raise PromotionGitError(f"{commit!r} is not a commit id", transient=False)
        path = work.root / name
        work.git("init", "--quiet", str(path))
        work.git("remote", "add", "origin", url, cwd=path)
        work.git("fetch", "--quiet", "--depth", "1", "origin", commit, cwd=path)
        work.git("checkout", "--quiet", "--detach", commit, "--", cwd=path)
        return cls(work, url, branch, path, commit)

    def paths(self) -> list[str]:
        """Every file of the repository (relative, with `/`), outside `.git`."""
        out = []
        for file in sorted(self.path.rglob("*")):
            relative = file.relative_to(self.path)
            if relative.parts[0] != ".git" and file.is_file() and not file.is_symlink():
                out.append(relative.as_posix())
        return out

    def read(self, paths: Iterable[str]) -> dict[str, str]:
        """These files' text (a file too large or not UTF-8 is left out)."""
        out: dict[str, str] = {}
        for path in paths:
            file = self.path / path
            if file.stat().st_size > MAX_FILE_BYTES:
                continue
            try:
                out[path] = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
        return out

    def push_branch(self, branch: str, changes: Mapping[str, str], message: str) -> str:
        """Commit `changes` on top of the head and force-push them as `branch`; the commit's id.

        The commit is made with the head's own date, so the same changes on the same base give the same
        id: pushing again what is there already changes nothing (no new check run, no new notification)."""
        for path, text in changes.items():
            target = (self.path / path).resolve()
            if not target.is_relative_to(self.path.resolve()) or ".git" in Path(path).parts:
                raise PromotionGitError(f"{path!r} is outside the environment repository", transient=False)
            target.write_text(text, encoding="utf-8")
            self.work.git("add", "--", path, cwd=self.path)
        when = self.work.git("log", "-1", "--format=%cI", "HEAD", cwd=self.path).strip()
        dates = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
        self.work.git("commit", "--quiet", "--no-verify", "-m", message, cwd=self.path, env=dates)
        sha = self.work.git("rev-parse", "HEAD", cwd=self.path).strip()
        if self.remote_head(branch) != sha:
            self.work.git("push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{_ref(branch)}", cwd=self.path)
        return sha

    def remote_head(self, branch: str) -> str:
        out = self.work.git("ls-remote", "origin", f"refs/heads/{_ref(branch)}", cwd=self.path)
        return out.split("\t", 1)[0].strip() if out.strip() else ""


def service_history(
    work: Workspace, url: str, new_tag: str, old_tag: str, commit: str
) -> tuple[list[ServiceCommit], datetime | None]:
    """(commits after `old_tag` up to `new_tag`, newest first, at most 50; when `commit` was made).

    A blobless clone: history without file contents.  `old_tag` "" or missing: the last 20 commits."""
    path = work.root / "service"
    work.git("clone", "--quiet", "--bare", "--filter=blob:none", "--", url, str(path))
    when: datetime | None = None
    if _SHA.match(commit):
        try:
            when = datetime.fromisoformat(work.git("log", "-1", "--format=%cI", commit, cwd=path).strip())
        except (PromotionGitError, ValueError):
            when = None
    span = [f"refs/tags/{_ref(new_tag)}"]
    if old_tag:
        try:
            work.git("rev-parse", "--verify", "--quiet", f"refs/tags/{_ref(old_tag)}", cwd=path)
            span.append(f"^refs/tags/{old_tag}")
        except PromotionGitError:
            pass
    limit = "50" if len(span) > 1 else "20"
    out = work.git("log", "--format=%H%x09%s", "-n", limit, *span, "--", cwd=path)
    commits = [ServiceCommit(*line.split("\t", 1)) for line in out.splitlines() if "\t" in line]
    return commits, when
