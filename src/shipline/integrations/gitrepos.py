"""A cloned repository, as the service tasks need it: tags, commits since a tag, the remote's tags, a tag push.

The `git` CLI does the work (it holds the credentials set up for the run and
speaks every transport); this module turns its output into plain values and its
failures into `GitError` with the command and git's own words.  Every ref name
passed to git here is checked first and given after `--` or as a full
`refs/...` name, so a value can never become an option.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from shipline.exceptions import ToolError

GIT_TIMEOUT = 120.0
IDENTITY = ("-c", "user.name=shipline", "-c", "user.email=shipline@localhost")


class GitError(ToolError):
    pass


@dataclass(frozen=True)
class Repo:
    """A work tree with an `origin` remote."""

    path: Path
    remote: str = "origin"
    credentials: str = ""
    """A git credential-store file for the remote (a secret file of the task), or ""."""

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        helper = (
            ["-c", "credential.helper=", "-c", f"credential.helper=store --file={self.credentials}"] if self.credentials else []
        )
        cmd = ["git", "-C", str(self.path), *helper, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitError(f"git {args[0]} in {self.path} did not finish: {exc}") from exc
        if check and proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise GitError(f"git {' '.join(args[:2])} in {self.path} failed: {said[-1] if said else proc.returncode}")
        return proc

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").stdout.strip()

    def is_shallow(self) -> bool:
        return self.git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"

    def tags_merged(self, pattern: str = "v*") -> list[str]:
        """Tags whose commit is HEAD or one of its ancestors."""
        out = self.git("tag", "--merged", "HEAD", "--list", pattern).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def messages_since(self, tag: str | None) -> list[str]:
        """Full messages of the commits in HEAD that are not in tag (all of HEAD's when tag is None)."""
        out = self.git("log", "--format=%x1e%B", self._span(tag), "--").stdout
        return [m.strip() for m in out.split("\x1e")[1:]]

    @staticmethod
    def _span(tag: str | None) -> str:
        return f"refs/tags/{tag}..HEAD" if tag else "HEAD"

    def tag_commit(self, tag: str) -> str | None:
        """The commit a local tag points at (peeled), or None."""
        proc = self.git("rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def remote_tag_commit(self, tag: str) -> str | None:
        """The commit tag points at on the remote (annotated tags peeled), or None."""
        out = self.git("ls-remote", "--tags", self.remote, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}").stdout
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            refs[ref.strip()] = sha.strip()
        return refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")

    def remote_default_branch(self) -> str | None:
        """The branch the remote's HEAD names, or None when it does not say."""
        proc = self.git("ls-remote", "--symref", self.remote, "HEAD", check=False)
        for line in proc.stdout.splitlines():
            if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                return line.removeprefix("ref: refs/heads/").split("\t", 1)[0]
        return None

    def push_tag(self, tag: str, commit: str, message: str) -> None:
        """Create annotated tag at commit and push only it."""
        self.git(*IDENTITY, "tag", "--annotate", "--message", message, "--", tag, commit)
        self.git("push", "--quiet", self.remote, f"refs/tags/{tag}:refs/tags/{tag}")
