"""The poller: notices new commits and tags in repositories that cannot send webhooks.

`git ls-remote` lists a remote's refs without cloning anything; comparing
with what was seen last time gives push and tag events.  The first poll of a
repository only records what is there (it does not start a run for every
existing branch).  What was seen is kept in the store, so a restart does not
forget, and several servers polling the same repository produce the same
delivery ids, which the store de-duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from shipline.domain.urls import public_url
from shipline.exceptions import ToolError
from shipline.triggers.events import ZERO_SHA, EventKind, ForgeEvent

log = logging.getLogger("shipline.triggers.poll")


@dataclass(frozen=True)
class PollTarget:
    id: int
    name: str
    url: str
    default_branch: str
    interval: float


class RefMemory(Protocol):
    def load_refs(self, repository_id: int) -> dict[str, str] | None: ...

    def save_refs(self, repository_id: int, refs: dict[str, str]) -> None: ...


Sink = Callable[[PollTarget, ForgeEvent, str], None]
"""Called with (target, event, delivery id) for every change seen."""


async def ls_remote(url: str, timeout: float = 60.0) -> dict[str, str]:
    """ref -> sha of a remote's branches and tags (peeled tags give the commit)."""
    shown = public_url(url)  # a credential an older version let into a URL is never logged
    if url.startswith("-"):
        raise ToolError(f"repository URL {shown!r} starts with '-'; git would read it as an option")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
    # Its own process group: git runs a helper per transport (git-remote-https), which
    # must go with it on a timeout or when the server stops.
    proc = await asyncio.create_subprocess_exec(
        "git",
        "ls-remote",
        "--heads",
        "--tags",
        url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        _kill_group(proc.pid)
        await proc.wait()
        raise ToolError(f"git ls-remote {shown} took longer than {timeout:g}s; is the forge reachable?") from exc
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    if proc.returncode != 0:
        said = err.decode(errors="replace").replace(url, shown).strip()
        raise ToolError(f"git ls-remote {shown} failed ({proc.returncode}): {said[:500]}")
    refs: dict[str, str] = {}
    for line in out.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        if ref.endswith("^{}"):
            refs[ref[:-3]] = sha  # the commit a tag points to
        elif ref not in refs:
            refs[ref] = sha
    return refs


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def diff_refs(target: PollTarget, old: dict[str, str], new: dict[str, str]) -> list[tuple[ForgeEvent, str]]:
    """The events between two listings, each with a delivery id that names the change."""
    out: list[tuple[ForgeEvent, str]] = []
    base = {"forge": "poll", "repo_urls": (target.url,), "repo_name": target.name, "default_branch": target.default_branch}
    for ref in sorted(set(old) | set(new)):
        before, after = old.get(ref, ZERO_SHA), new.get(ref, ZERO_SHA)
        if before == after:
            continue
        if ref.startswith("refs/heads/"):
            kind, branch, tag = EventKind.PUSH, ref[len("refs/heads/") :], ""
        elif ref.startswith("refs/tags/"):
            kind, branch, tag = EventKind.TAG, "", ref[len("refs/tags/") :]
        else:
            continue
        if after == ZERO_SHA:
            kind = EventKind.DELETE
        event = ForgeEvent(kind=kind, branch=branch, tag=tag, sha=after if after != ZERO_SHA else "", before=before, **base)  # type: ignore[arg-type]
        out.append((event, f"{target.id}:{ref}:{after}"))
    return out


class Poller:
    def __init__(self, targets: Callable[[], list[PollTarget]], memory: RefMemory, sink: Sink, tick: float = 1.0) -> None:
        self.targets = targets
        self.memory = memory
        self.sink = sink
        self.tick = tick
        self._due: dict[int, float] = {}
        self.errors: dict[int, str] = {}

    async def poll(self, target: PollTarget) -> int:
        """Look once; returns how many changes were handed on."""
        new = await ls_remote(target.url)
        old = self.memory.load_refs(target.id)
        if old is None:
            self.memory.save_refs(target.id, new)
            log.info("poll baseline", extra={"repository": target.name, "refs": len(new)})
            return 0
        changes = diff_refs(target, old, new)
        for event, delivery in changes:
            try:
                self.sink(target, event, delivery)
            except Exception:
                log.exception("poll change not handled", extra={"repository": target.name, "delivery": delivery})
        self.memory.save_refs(target.id, new)
        return len(changes)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for target in self.targets():
                if self._due.get(target.id, 0.0) > now:
                    continue
                self._due[target.id] = now + target.interval
                try:
                    await self.poll(target)
                    self.errors.pop(target.id, None)
                except ToolError as exc:
                    if self.errors.get(target.id) != str(exc):
                        log.warning("poll failed", extra={"repository": target.name, "error": str(exc)})
                    self.errors[target.id] = str(exc)
            try:
                await asyncio.wait_for(stop.wait(), self.tick)
            except TimeoutError:
                pass
