"""Promotion: a service's release becomes a pull request on each environment that runs it.

The server reads the outbox (`engine/outbox.py`) with a cursor of its own,
`promotion`, and reacts to runs that end:

- a service run that released (its results carry `version` and `tag`: the
  default branch, not a pull request) proposes that version to every
  registered environment whose `services:` lists the service, except those
  that come `next:` after one that lists it (they get it once it is verified
  there): the version is
  edited in the environment repository's branch head (`domain/promotions.py`),
  committed on `shipline/promote/SERVICE` made afresh from that head and
  force-pushed (a base that moved, or an older promotion on the branch, never
  leaves a conflict), and one pull request from that branch is opened or
  updated, titled `Promote NAME to VERSION`;
- each pull request head gets a dry run of the environment (the `diff` action
  at that commit) with the commit status `shipline/env-NAME`: pending while it
  runs, then success or failure with the diff posted as a comment.  With
  `merge: auto` a promotion whose dry run passed is merged (a refusal, such as
  another required check still pending, is tried again every few seconds) and
  the environment syncs at once;
- a sync that ends verified marks the promotions it deployed `verified` and,
  when the environment has `next:`, proposes the same versions there; a sync
  that failed verification (and was rolled back) marks them `failed`, says so
  on the pull request, and the chain stops there.

Delivery is at least once, so every step is idempotent: one row per
(environment, service, version), the pull request found by its branch, the
promotion commit made with its base's date (same base and edit, same id: no
push), a dry run started once per head.  A forge or git that cannot be
reached keeps the cursor where it is; the transition is handled again later.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import semver

from shipline.domain import promotions as edits
from shipline.domain.environments import Environment, Outcome
from shipline.domain.runs import RunRecord, RunStatus, RunTransition
from shipline.engine import outbox
from shipline.engine.events import EventBus
from shipline.engine.outbox import OutboxReader
from shipline.engine.running import forge_credentials
from shipline.exceptions import ForgeError, NotFound, PromotionEditError, ShiplineError, ToolError, UsageError
from shipline.gitops.syncing import Action, outcome_of
from shipline.integrations.forges import CommitState, Forge, PullRequest, RepoRef, connect, repo_ref, serves
from shipline.integrations.promotionrepos import EnvCheckout, PromotionGitError, Workspace, service_history
from shipline.settings import Settings
from shipline.store.environments import EnvironmentStore, StoredEnvironment
from shipline.store.promotions import Promotion, PromotionState, PromotionStore
from shipline.store.sql import SqlStore, utcnow
from shipline.triggers.statuses import run_link

log = logging.getLogger("shipline.gitops.promote")
CONSUMER = "promotion"
RETRY_SECONDS = 5.0
SWEEP_SECONDS = 5.0
DIFF_LIMIT = 6000
"""Characters of a dry run's diff in a pull-request comment; the rest is in the run's log."""
BRANCH_PREFIX = "shipline/promote/"

SubmitCheck = Callable[[Environment, str, Mapping[str, object]], int]
"""(environment, commit, what to put in the run's trigger) -> the id of a queued dry run (`diff`) at that commit."""


def context_of(env: Environment) -> str:
    """The commit-status context of an environment's dry run on a pull request."""
    return f"shipline/env-{env.name}"


class Retry(ShiplineError):
    """Something outside (the forge, git) failed on its side: handle the transition again later."""


@dataclass(frozen=True)
class Release:
    """What a promotion proposes: one released version of a service and where it came from."""

    service: str
    version: str
    tag: str
    commit: str
    image: str
    image_digest: str
    chart: str
    chart_digest: str
    url: str
    """The service's git repository ("" when unknown: the pull request then lists no commits)."""
    source_run: int


def _files(checkout: EnvCheckout) -> tuple[edits.Layout, dict[str, str]]:
    """The layout of a checked-out environment repository and the files a version edit needs."""
    paths = checkout.paths()
    layout = edits.layout_of(paths)
    return layout, checkout.read(edits.files_to_edit(layout, paths))


def _deployed(layout: edits.Layout, files: Mapping[str, str], service: str) -> str | None:
    try:
        return edits.deployed_version(layout, files, service)
    except PromotionEditError:
        return None


def _newer(a: str, b: str) -> bool:
    """Whether version `a` is newer than `b` (semver; a version that does not parse is never newer)."""
    try:
        return bool(semver.Version.parse(a.removeprefix("v")) > semver.Version.parse(b.removeprefix("v")))
    except ValueError:
        return False


@dataclass
class Promoter:
    settings: Settings
    sql: SqlStore
    owner: str
    """This process, as the holder of the cursor's lease."""
    submit_check: SubmitCheck
    poke: Callable[[Sequence[str]], None]
    """Make the environments' controller look at their branches now."""
    forge_for: Callable[[str], Forge] | None = None
    _checks: threading.Lock = field(default_factory=threading.Lock)
    _last_sweep: float = 0.0

    @property
    def environments(self) -> EnvironmentStore:
        return EnvironmentStore(self.sql)

    @property
    def promotions(self) -> PromotionStore:
        return PromotionStore(self.sql)

    # --- the outbox ------------------------------------------------------------------------

    def handle(self, transition: RunTransition) -> None:
        """React to one run transition; raises Retry (or ForgeError) when it must be handled again later."""
        if transition.kind != "run" or not RunStatus(transition.status).done:
            return
        try:
            stored = self._environment_of(transition.pipeline)
            if stored is not None:
                record = self.sql.get_run(transition.run_id)
                self._env_run_ended(stored.environment, record)
            elif transition.status == RunStatus.SUCCEEDED.value:
                release = self._release_of(transition)
                if release is not None:
                    self.release(release)
        except ForgeError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise Retry(str(exc)) from exc
            log.warning("promotion: the forge refused; skipped", extra={"run": transition.run_id, "error": str(exc)})
        except PromotionGitError as exc:
            if exc.transient:
                raise Retry(str(exc)) from exc
            log.warning("promotion: git refused for good; skipped", extra={"run": transition.run_id, "error": str(exc)})
        except ToolError as exc:
            raise Retry(str(exc)) from exc
        except (NotFound, UsageError) as exc:
            # Nothing to retry: a run pruned since, an environment without a forge token, a bad declaration.
            log.warning("promotion: transition skipped", extra={"run": transition.run_id, "error": str(exc)})

    def _environment_of(self, pipeline: str) -> StoredEnvironment | None:
        if not pipeline.startswith("env-"):
            return None
        try:
            return self.environments.get(pipeline.removeprefix("env-"))
        except NotFound:
            return None

    def _release_of(self, transition: RunTransition) -> Release | None:
        """The release a succeeded run made, if it is a service run on its default branch that released."""
        results = transition.data.get("results")
        if not isinstance(results, dict):
            return None
        got = {str(k): str(v) for k, v in results.items() if v is not None}
        if not got.get("version") or not got.get("tag") or not got.get("image") or transition.params.get("pr"):
            return None  # no release: a pull request, another branch, or not a service run
        return Release(
            service=transition.pipeline,
            version=got["version"],
            tag=got["tag"],
            commit=got.get("commit", ""),
            image=got["image"],
            image_digest=got.get("image-digest", ""),
            chart=got.get("chart", ""),
            chart_digest=got.get("chart-digest", ""),
            url=transition.params.get("url", ""),
            source_run=transition.run_id,
        )

    # --- proposing ---------------------------------------------------------------------------

    def release(self, release: Release) -> None:
        """Propose a release to every environment whose `services:` lists the service, but for the ones
        that come `next:` after another that lists it: those get it once it is verified there."""
        listing = [s.environment for s in self.environments.all() if release.service in s.environment.services]
        later = {e.next for e in listing if e.next}
        for env in listing:
            if env.name not in later:
                self.propose(env, release)

    def _forge(self, env: Environment) -> tuple[Forge, RepoRef]:
        for kind in ("gitea", "github"):
            if serves(self.settings, kind, env.repo):
                forge = self.forge_for(kind) if self.forge_for else connect(self.settings, kind)
                return forge, repo_ref(env.repo)
        raise NotFound(
            f"environment {env.name}: no forge token for the host of {env.repo} "
            "(set SHIPLINE_GITEA_URL and SHIPLINE_GITEA_TOKEN, or SHIPLINE_GITHUB_TOKEN): no pull request can be opened"
        )

    def _workspace(self) -> Workspace:
        return Workspace(forge_credentials(self.settings)["git-credentials"])

    def propose(self, env: Environment, release: Release, commit_time: datetime | None = None) -> Promotion | None:
        """Open or update the pull request that brings `release` to `env`; the promotion's row."""
        store = self.promotions
        done = store.find(env.name, release.service, release.version)
        if done is not None and not done.state.live:
            return done  # verified, failed, superseded or closed already: a redelivery changes nothing
        try:
            forge, ref = self._forge(env)
        except NotFound as exc:
            row, _ = self._row(env, release, commit_time, "", PromotionState.FAILED, str(exc))
            log.warning("promotion not proposed", extra={"environment": env.name, "error": str(exc)})
            return row
        try:
            if done is not None and done.state == PromotionState.OPEN and done.pr_number is not None:
                # Its pull request may have been merged or closed by a person since the last sweep:
                # a redelivery must not open another one.
                if self._settled(env, forge.pull_request(ref, done.pr_number), [done]):
                    return store.get(done.id)
            with self._workspace() as work:
                try:
                    checkout = EnvCheckout.clone(work, env.repo, env.branch)
                except PromotionGitError as exc:
                    if exc.transient:
                        raise
                    row, _ = self._row(env, release, commit_time, "", PromotionState.FAILED, str(exc))
                    log.warning("promotion not proposed", extra={"environment": env.name, "error": str(exc)})
                    return row
                try:
                    layout, files = _files(checkout)
                except PromotionEditError as exc:
                    row, _ = self._row(env, release, commit_time, "", PromotionState.FAILED, str(exc))
                    return row
                previous = _deployed(layout, files, release.service) or ""
                newer = [p.version for p in store.live(env.name, release.service) if _newer(p.version, release.version)]
                if previous and _newer(previous, release.version):
                    newer.append(previous)
                if newer:
                    row, _ = self._row(
                        env,
                        release,
                        commit_time,
                        previous,
                        PromotionState.SUPERSEDED,
                        f"{newer[-1]} is proposed or deployed already",
                    )
                    log.info("older release not proposed", extra={"environment": env.name, "version": release.version})
                    return row
                try:
                    changes = edits.edit_version(layout, files, release.service, release.version)
                except PromotionEditError as exc:
                    row, _ = self._row(env, release, commit_time, previous, PromotionState.FAILED, str(exc))
                    return row
                if commit_time is None and release.url:
                    commits, commit_time = self._history(work, release, previous)
                else:
                    commits = self._history(work, release, previous)[0] if release.url else []
                row, _ = self._row(env, release, commit_time, previous, PromotionState.PROPOSED, "")
                branch = edits.promotion_branch(release.service)
                if not changes:
                    self._already_there(env, forge, ref, branch, row)
                    return store.get(row.id)
                title = edits.promotion_title(release.service, release.version)
                head = checkout.push_branch(branch, changes, title)
            body = edits.promotion_body(self._domain_release(release), previous, [(c.sha, c.subject) for c in commits])
            pr = forge.find_pull_request(ref, branch)
            if pr is None:
                pr = forge.open_pull_request(ref, head=branch, base=env.branch, title=title, body=body)
                log.info(
                    "promotion pull request opened", extra={"environment": env.name, "pr": pr.number, "version": release.version}
                )
            elif pr.title != title or pr.body != body:
                pr = forge.update_pull_request(ref, pr.number, title=title, body=body)
            for older in store.live(env.name, release.service):
                if older.id != row.id and older.state != PromotionState.MERGED:
                    store.update(older.id, state=PromotionState.SUPERSEDED, message=f"superseded by {release.version}")
            row = store.update(row.id, state=PromotionState.OPEN, pr_number=pr.number, pr_url=pr.url, branch=branch, message="")
            self.check(env, pr.number, head, branch, forge=forge, ref=ref)
            return row
        finally:
            forge.close()

    def _row(
        self, env: Environment, release: Release, commit_time: datetime | None, previous: str, state: PromotionState, message: str
    ) -> tuple[Promotion, bool]:
        row, made = self.promotions.propose(
            service=release.service,
            environment=env.name,
            version=release.version,
            service_commit=release.commit,
            commit_time=commit_time,
            source_run=release.source_run,
            image=release.image,
            chart=release.chart,
            previous_version=previous,
            state=state,
            message=message,
        )
        if not made and row.state.live and state in (PromotionState.FAILED, PromotionState.SUPERSEDED):
            row = self.promotions.update(row.id, state=state, message=message)
        return row, made

    def _history(self, work: Workspace, release: Release, previous: str) -> tuple[list[Any], datetime | None]:
        try:
            return service_history(work, release.url, release.tag, f"v{previous}" if previous else "", release.commit)
        except ToolError as exc:
            log.warning("service history unreadable", extra={"service": release.service, "error": str(exc)})
            return [], None

    def _domain_release(self, release: Release) -> edits.Release:
        return edits.Release(
            service=release.service,
            version=release.version,
            commit=release.commit,
            image=release.image,
            image_digest=release.image_digest,
            chart=release.chart,
            chart_digest=release.chart_digest,
            run_url=run_link(self.settings.server_url, release.source_run),
            source_url=release.url,
        )

    def _already_there(self, env: Environment, forge: Forge, ref: RepoRef, branch: str, row: Promotion) -> None:
        """The environment's branch has the version already (someone edited it by hand): no pull request."""
        pr = forge.find_pull_request(ref, branch)
        if pr is not None and pr.number == row.pr_number:
            forge.comment(ref, pr.number, f"{env.branch} has {row.service} {row.version} already; closing.")
            forge.close_pull_request(ref, pr.number)
        self.promotions.update(row.id, state=PromotionState.CLOSED, message=f"{env.name} has {row.version} already")

    # --- checks on pull requests -----------------------------------------------------------

    def check(
        self, env: Environment, number: int, head: str, branch: str, *, forge: Forge | None = None, ref: RepoRef | None = None
    ) -> int | None:
        """Start the environment's dry run at a pull request's head, once per head; the run's id (None: one exists)."""
        with self._checks:
            for record in self.sql.list_runs(pipeline=env.pipeline_name, limit=50):
                # A dry run its engine died under decides nothing: the head is checked again.
                if record.params.get("action") == Action.DIFF.value and record.params.get("revision") == head:
                    if not record.interrupted:
                        return None
            run_id = self.submit_check(env, head, {"pr": number, "head": head, "head_branch": branch})
        own = forge is None
        if forge is None or ref is None:
            forge, ref = self._forge(env)
        try:
            forge.set_status(
                ref,
                head,
                state=CommitState.PENDING,
                context=context_of(env),
                description=f"dry run of {env.name} (run {run_id})",
                target_url=run_link(self.settings.server_url, run_id),
            )
        finally:
            if own:
                forge.close()
        log.info("dry run queued", extra={"environment": env.name, "pr": number, "run": run_id})
        return run_id

    def _env_run_ended(self, env: Environment, record: RunRecord) -> None:
        action = record.params.get("action", Action.SYNC.value)
        trigger = record.trigger or {}
        if action == Action.DIFF.value and isinstance(trigger.get("pr"), int):
            self._check_ended(env, record, int(trigger["pr"]), str(trigger.get("head", "")), str(trigger.get("head_branch", "")))
        elif action in (Action.SYNC.value, Action.ROLLBACK.value):
            self._sync_ended(env, record)

    def _diff_text(self, record: RunRecord) -> str:
        lines: list[str] = []
        for _, _, _, _, path in self.sql.log_paths(record.id, "diff"):
            with suppress(OSError):
                for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
                    lines.append(line.split(" ", 1)[1] if " " in line else "")
        text = "\n".join(lines).replace("```", "'''")
        if len(text) > DIFF_LIMIT:
            text = text[:DIFF_LIMIT] + f"\n... ({len(text) - DIFF_LIMIT} more characters in the run's log)"
        return text

    def _check_ended(self, env: Environment, record: RunRecord, number: int, head: str, branch: str) -> None:
        if record.interrupted:
            # The server died during the dry run: that is no verdict on the pull request. Run it again
            # (once per head: a redelivery of this transition finds the new run and leaves it be).
            self.check(env, number, head, branch)
            return
        forge, ref = self._forge(env)
        try:
            link = run_link(self.settings.server_url, record.id)
            state = CommitState.SUCCESS if record.status == RunStatus.SUCCEEDED else CommitState.FAILURE
            posted = [s for s in forge.statuses(ref, head) if s.context == context_of(env)]
            if not (posted and posted[0].state == state and posted[0].target_url == link):
                verdict = (
                    "would apply cleanly" if state == CommitState.SUCCESS else f"failed: {record.message or record.status.value}"
                )
                diff = self._diff_text(record) or "(no diff output)"
                forge.comment(
                    ref,
                    number,
                    f"**Dry run of `{env.name}`** at {head[:12]}: {verdict} ([run {record.id}]({link}))\n\n```diff\n{diff}\n```",
                )
                summary = "dry run passed" if state == CommitState.SUCCESS else "dry run failed"
                forge.set_status(
                    ref, head, state=state, context=context_of(env), description=f"{summary} (run {record.id})", target_url=link
                )
            if state == CommitState.SUCCESS and env.merge == "auto" and branch.startswith(BRANCH_PREFIX):
                self._merge(env, forge, ref, number, head)
        finally:
            forge.close()

    def _merge(self, env: Environment, forge: Forge, ref: RepoRef, number: int, head: str) -> bool:
        """Merge a promotion pull request whose dry run passed at `head`; True when it is merged now."""
        pr = forge.pull_request(ref, number)
        rows = [p for p in self.promotions.live(env.name) if p.pr_number == number]
        if pr.merged:
            self._merged(env, pr, rows, "")
            return True
        if pr.state != "open" or pr.head_sha != head:
            return False  # closed, or a newer head whose own dry run decides
        result = forge.merge_pull_request(ref, number, method="merge", message=pr.title)
        if not result.merged:
            for row in rows:
                if row.state == PromotionState.OPEN:
                    self.promotions.update(row.id, message=f"merge refused: {result.reason}; trying again")
            log.info("promotion not merged yet", extra={"environment": env.name, "pr": number, "reason": result.reason})
            return False
        self._merged(env, pr, rows, result.sha)
        log.info("promotion merged", extra={"environment": env.name, "pr": number, "commit": result.sha})
        return True

    def _merged(self, env: Environment, pr: PullRequest, rows: list[Promotion], sha: str) -> None:
        """The forge has merged the pull request: by us, by a person, or by us with the answer lost (a timeout).
        Whichever, the environment looks at its branch now, not at its next poll."""
        for row in rows:
            if row.state in (PromotionState.OPEN, PromotionState.PROPOSED):
                self.promotions.update(row.id, state=PromotionState.MERGED, merge_commit=sha, merged_at=utcnow(), message="")
        self.poke([env.name])

    def sweep(self) -> None:
        """Open promotions: merge the ones whose dry run passed (a refused merge is tried again), and
        note the ones a person merged or closed."""
        for stored in self.environments.all():
            try:
                self._sweep(stored.environment)
            except ShiplineError as exc:  # one environment's forge must not hold back the others
                log.warning("promotion: open pull requests not checked", extra={"environment": stored.name, "error": str(exc)})

    def _sweep(self, env: Environment) -> None:
        rows = [p for p in self.promotions.live(env.name) if p.state == PromotionState.OPEN and p.pr_number]
        if not rows:
            return
        forge, ref = self._forge(env)
        try:
            for number in sorted({p.pr_number for p in rows if p.pr_number is not None}):
                pr = forge.pull_request(ref, number)
                if self._settled(env, pr, [p for p in rows if p.pr_number == number]):
                    continue
                if env.merge == "auto":
                    passed = [
                        s
                        for s in forge.statuses(ref, pr.head_sha)
                        if s.context == context_of(env) and s.state == CommitState.SUCCESS
                    ]
                    if passed:
                        self._merge(env, forge, ref, number, pr.head_sha)
        finally:
            forge.close()

    def _settled(self, env: Environment, pr: PullRequest, rows: list[Promotion]) -> bool:
        """The promotions of a pull request a person merged or closed, noted so; False while it is open."""
        if pr.merged:
            self._merged(env, pr, rows, "")
        elif pr.state != "open":
            for row in rows:
                self.promotions.update(row.id, state=PromotionState.CLOSED, message="pull request closed unmerged")
        return pr.merged or pr.state != "open"

    # --- after a sync ---------------------------------------------------------------------------

    def _sync_ended(self, env: Environment, record: RunRecord) -> None:
        rows = self.promotions.live(env.name)
        if not rows:
            return
        outcome, commit, applied, _, rolled_back_to = outcome_of(record)
        at = applied if outcome == Outcome.VERIFIED else commit
        if not at:
            return  # nothing was checked out: this sync says nothing about any version
        with self._workspace() as work:
            try:
                layout, files = _files(EnvCheckout.at(work, env.repo, env.branch, at))
            except PromotionEditError as exc:
                log.warning("promotions not checked", extra={"environment": env.name, "error": str(exc)})
                return
        deployed = [r for r in rows if _deployed(layout, files, r.service) == r.version]
        link = run_link(self.settings.server_url, record.id)
        if outcome == Outcome.VERIFIED:
            for row in deployed:
                self._chain(env, row, record.id)
                self.promotions.update(
                    row.id,
                    state=PromotionState.VERIFIED,
                    verified_at=utcnow(),
                    merged_at=row.merged_at or utcnow(),
                    merge_commit=row.merge_commit or at,
                    message=f"verified in {env.name} (run {record.id})",
                )
            return
        if outcome == Outcome.ROLLED_BACK:
            why = f"verification failed in {env.name}, rolled back to {rolled_back_to[:12]}; promotion stops here"
        else:
            why = f"the sync of {env.name} failed ({record.message or 'see the run'}); promotion stops here"
        for row in deployed:
            if row.pr_number:
                forge, ref = self._forge(env)
                try:
                    forge.comment(ref, row.pr_number, f"{row.service} {row.version}: {why} ([run {record.id}]({link}))")
                finally:
                    forge.close()
            self.promotions.update(row.id, state=PromotionState.FAILED, message=why)

    def _chain(self, env: Environment, row: Promotion, run_id: int) -> None:
        """Propose a version verified in `env` to its `next:` environment (once: the row's key)."""
        if not env.next:
            return
        try:
            following = self.environments.get(env.next).environment
        except NotFound:
            log.warning("next environment not registered", extra={"environment": env.name, "next": env.next})
            return
        url = ""
        with suppress(ShiplineError):
            runs = self.sql.list_runs(pipeline=row.service, limit=20)
            url = next((r.params.get("url", "") for r in runs if r.params.get("url")), "")
        release = Release(
            service=row.service,
            version=row.version,
            tag=f"v{row.version}",
            commit=row.service_commit,
            image=row.image,
            image_digest="",
            chart=row.chart,
            chart_digest="",
            url=url,
            source_run=run_id,
        )
        self.propose(following, release, commit_time=row.commit_time)

    # --- the loop ---------------------------------------------------------------------------------

    async def follow(self, bus: EventBus, stop: asyncio.Event, poll_seconds: float = 1.0) -> None:
        """Read the outbox until `stop` (at once when a run event is published here, else every
        `poll_seconds`), and look at the open pull requests every SWEEP_SECONDS."""
        await outbox.follow(
            OutboxReader(self.sql, CONSUMER, self.owner, kind="run"),
            self.handle,
            bus,
            stop,
            name="promotion",
            poll_seconds=poll_seconds,
            retry_seconds=RETRY_SECONDS,
            transient=(Retry, ForgeError),
            between=self._sweep_when_due,
        )

    def _sweep_when_due(self) -> None:
        if time.monotonic() - self._last_sweep >= SWEEP_SECONDS:
            self._last_sweep = time.monotonic()
            self.sweep()
