"""Pipelines as code: a repository's own `.shipline/pipeline.yaml`, read at the event's commit.

A repository registered without `--pipeline` carries its definition.  For
each event the file is read through the forge's API at the commit the event
names (so a branch builds with the pipeline it has, and a pull request with
its own), together with the `./` files it `uses:`, written under
`SHIPLINE_HOME/pipelines/REPO/COMMIT/` and loaded as any definition is.
A commit never changes, so definitions are cached by (repository, commit).
"""

from __future__ import annotations

import logging
import posixpath
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from shipline.domain.pipelines import ResolvedPipeline
from shipline.engine.loading import load_pipeline
from shipline.exceptions import DefinitionError, Problem, UsageError
from shipline.integrations.forges import Forge, connect, forge_host, host_of, repo_ref
from shipline.settings import Settings
from shipline.store.repositories import Repository

log = logging.getLogger("shipline.server.sourcing")

PIPELINE_PATH = ".shipline/pipeline.yaml"
"""Where a repository keeps its pipeline (pipelines as code)."""
FROM_REPOSITORY = ""
"""The `pipeline` of a repository registered without `--pipeline`."""
MAX_FILES = 20
"""A definition and the `./` files it uses, at most: a bound on what one event makes us fetch."""
CACHE_SIZE = 256
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def _local_uses(text: str) -> list[str]:
    """The `uses: ./x.yaml` references of a definition or archetype (pipeline-level and per task)."""
    try:
        root = YAML(typ="safe").load(text)
    except YAMLError:
        return []  # the loader reports it, with its position
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            uses = node.get("uses")
            if isinstance(uses, str) and uses.startswith(("./", "../")):
                found.append(uses)
            for key in ("tasks", "finally"):
                for task in node.get(key) or []:
                    visit(task)

    visit(root)
    return found


class RepoPipelines:
    """Definitions read from repositories, cached by (repository, commit)."""

    def __init__(self, settings: Settings, forge_for: Callable[[str], Forge] | None = None) -> None:
        self.settings = settings
        self.root = settings.home / "pipelines"
        self.forge_for = forge_for or (lambda kind: connect(settings, kind))
        self._cache: OrderedDict[tuple[int, str], ResolvedPipeline] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, repo: Repository, ref: str) -> ResolvedPipeline:
        """The repository's pipeline at `ref` (a commit; a branch or tag when no commit is known).

        Safe to call from several threads (the webhook handler warms the cache off its loop)."""
        if not ref:
            raise UsageError(f"repository {repo.name!r}: the event names no commit to read {PIPELINE_PATH} at")
        pinned = bool(_SHA.match(ref))
        key = (repo.id, ref)
        if pinned:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
        pipeline = self._fetch_and_load(repo, ref, pinned)
        if pinned:
            with self._lock:
                self._cache[key] = pipeline
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return pipeline

    def _fetch_and_load(self, repo: Repository, ref: str, pinned: bool) -> ResolvedPipeline:
        parent = self.root / str(repo.id)
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A commit's files never change: kept under its sha.  A branch's are read into a
        # directory of this load's own and dropped once loaded (the run keeps the resolved spec).
        where = parent / ref if pinned else Path(tempfile.mkdtemp(prefix=".ref-", dir=parent)) / "tree"
        try:
            if not (pinned and (where / PIPELINE_PATH).is_file()):
                self._fetch(repo, ref, where)
            try:
                return load_pipeline(where / PIPELINE_PATH, root=where)  # the copy has no .git: its top is the root
            except DefinitionError as exc:
                # Name the file as the repository has it, not our copy's path.
                shown = f"{repo.name}@{ref[:12]}:"
                problems = [Problem(p.file.replace(str(where) + "/", shown), p.line, p.column, p.message) for p in exc.problems]
                raise DefinitionError(problems) from exc
        finally:
            if not pinned:
                shutil.rmtree(where.parent, ignore_errors=True)

    def _fetch(self, repo: Repository, ref: str, where: Path) -> None:
        owner_name = repo_ref(repo.url)
        if host_of(repo.url) != forge_host(self.settings, repo.forge):
            setting = "SHIPLINE_GITEA_URL" if repo.forge == "gitea" else "SHIPLINE_GITHUB_API_URL"
            raise UsageError(
                f"repository {repo.name!r} is on {host_of(repo.url) or repo.url}, but {setting} is for "
                f"{forge_host(self.settings, repo.forge) or 'no host'}: shipline reads a repository's own pipeline "
                f"only from the forge it has a token for; register it with `--pipeline FILE`"
            )
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=where.parent))
        forge = self.forge_for(repo.forge)
        try:
            pending, seen = [PIPELINE_PATH], set()
            while pending:
                path = pending.pop()
                if path in seen:
                    continue
                seen.add(path)
                if len(seen) > MAX_FILES:
                    raise UsageError(f"{repo.name}@{ref[:12]}: {PIPELINE_PATH} uses more than {MAX_FILES} files")
                data = forge.read_file(owner_name, path, ref)
                if data is None:
                    if path == PIPELINE_PATH:
                        raise UsageError(
                            f"repository {repo.name!r} has no {PIPELINE_PATH} at {ref[:12]}: add one, "
                            f"or register the repository with `--pipeline FILE`"
                        )
                    continue  # the loader says "no such file" with the line that uses it
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                base = posixpath.dirname(path)
                for uses in _local_uses(data.decode("utf-8", errors="replace")):
                    joined = posixpath.normpath(posixpath.join(base, uses))
                    if joined.startswith("../") or joined == ".." or posixpath.isabs(joined):
                        # Our copy lives on the server: a path out of the repository would read the server's files.
                        raise UsageError(
                            f"{repo.name}@{ref[:12]}:{path}: `uses: {uses}` points outside the repository; "
                            f"a repository's pipeline may only use files of that repository or shipline/NAME"
                        )
                    pending.append(joined)
            try:
                staging.rename(where)  # whole or not at all: a reader never sees half the files
            except OSError:  # another load of the same commit got there first, with the same files
                shutil.rmtree(staging, ignore_errors=True)
            log.info("pipeline read from the repository", extra={"repository": repo.name, "ref": ref, "files": len(seen)})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            forge.close()
