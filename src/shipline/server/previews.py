"""Preview environments: a pull request's build, deployed into a namespace of its own while the pull request is open.

Three inputs, one work list (the `previews` table, `store/previews.py`):

- the outbox (cursor `previews`, like `notifying.py`): a run of a pull request
  of a repository with previews on is recorded on the pull request's row:
  under way, failed, or succeeded with a release (its `chart`, `chart-version`,
  `version`, `image` results) that is then the one wanted;
- the webhook (`hooks.py`): a pull request closed or merged marks its row
  closed; reopened marks it open again;
- the work loop (`reconcile`): a closed row's namespace is deleted; an open
  row whose wanted release was not tried yet is deployed: `helm template` of
  the run's chart into `preview-SERVICE-pr-N`, applied, pruned and verified
  (rollouts) with the kubeconfig in the secret `previews-kubeconfig`, never
  the server's own credentials.

After each change the pull request's one comment is rendered again
(`domain/previews.py`) and edited in place when its text changed.  Every step
is written to the row before and after it happens, so a server stopped in
between does the rest when it starts again: delivery from the outbox is at
least once and every step is idempotent (apply, delete, edit a comment).

One server does the work: with several servers on one store, each would
reconcile the same rows (harmless: the same apply twice), but the comment
could be edited twice.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipline.domain.previews import (
    KUBECONFIG_SECRET,
    PREVIEW_LABEL,
    REPOSITORY_REMOVED,
    PreviewState,
    PreviewView,
    comment_marker,
    preview_comment,
    preview_label,
    preview_namespace,
    preview_release,
)
from shipline.domain.runs import RunStatus, RunTransition
from shipline.engine import outbox
from shipline.engine.events import EventBus
from shipline.engine.outbox import OutboxReader
from shipline.exceptions import ClusterError, ForgeError, NotFound, ShiplineError
from shipline.integrations.clusterobjects import Target
from shipline.integrations.clusters import Cluster
from shipline.integrations.forges import Forge, connect, repo_ref, serves
from shipline.integrations.templating import Templater
from shipline.settings import Settings
from shipline.store.previews import Preview, PreviewStore
from shipline.store.repositories import Repository, ServerStore
from shipline.store.secrets import SecretStore
from shipline.store.sql import SqlStore
from shipline.triggers.events import EventKind, ForgeEvent, PullRequestAction
from shipline.triggers.statuses import run_link

log = logging.getLogger("shipline.server.previews")
CONSUMER = "previews"
RETRY_SECONDS = 10.0
VERIFY_SECONDS = 180.0
NO_KUBECONFIG = (
    f"no cluster credentials for previews: set the secret {KUBECONFIG_SECRET} to a kubeconfig "
    f"(`shipline secrets set {KUBECONFIG_SECRET} < KUBECONFIG`); the preview is deployed as soon as it is there"
)
_ENDED = {RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value}


def release_of(run_id: int, results: Any) -> dict[str, Any] | None:
    """What a succeeded run of the service archetype released, for its preview; None without a chart."""
    if not isinstance(results, dict):
        return None
    chart, version = str(results.get("chart") or ""), str(results.get("chart-version") or "")
    if not chart or not version:
        return None
    return {
        "run": run_id,
        "chart": chart if chart.startswith("oci://") else "oci://" + chart,
        "chart_version": version,
        "version": str(results.get("version") or version),
        "image": str(results.get("image") or ""),
    }


@dataclass
class Previews:
    settings: Settings
    sql: SqlStore
    state: ServerStore
    secrets: SecretStore
    owner: str
    """This process, as the holder of the outbox cursor's lease."""
    forge_for: Callable[[str], Forge] | None = None
    verify_seconds: float = VERIFY_SECONDS
    _not_before: dict[int, float] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _nudged: asyncio.Event | None = None

    @property
    def store(self) -> PreviewStore:
        return PreviewStore(self.sql)

    # --- the outbox: runs of pull requests ----------------------------------------------

    def handle(self, transition: RunTransition) -> None:
        """Record a pull request's run on its preview (and say so in the comment)."""
        if transition.kind != "run":
            return
        trigger = transition.trigger
        if not isinstance(trigger, dict) or trigger.get("event") != "pull_request" or trigger.get("pr_action") == "closed":
            return
        if trigger.get("fork"):
            return  # anyone's code: built without secrets, and never deployed with the previews' credentials
        repository_id, number = trigger.get("repository_id"), trigger.get("pr_number")
        if not isinstance(repository_id, int) or not isinstance(number, int) or number < 1:
            return
        try:
            repo = self.state.get_repository(str(repository_id))
        except NotFound:
            return
        if not repo.previews:
            return
        service = transition.pipeline
        preview = self.store.ensure(repository_id, number, service=service, namespace=preview_namespace(service, number))
        if not preview.open:
            return  # closed (or merged) before this run ended: nothing is (re)created
        if preview.last_run is not None and transition.run_id < preview.last_run:
            return  # an older run of the pull request, overtaken by a newer push
        values: dict[str, Any] = {"last_run": transition.run_id, "last_status": transition.status}
        if preview.service != service:
            values.update(service=service, namespace=preview_namespace(service, number))
        if transition.status == RunStatus.SUCCEEDED.value:
            release = release_of(transition.run_id, transition.data.get("results"))
            if release is not None:
                values["wanted"] = release
            else:
                values.update(
                    state=PreviewState.FAILED,
                    reason=f"run {transition.run_id} of {service} released no chart (results `chart`, `chart-version`): "
                    "previews deploy what the shipline/service archetype builds",
                )
        preview = self.store.change(preview.id, **values)
        self._comment(repo, preview)
        self.nudge()

    # --- the webhook: pull requests closed, merged, reopened ----------------------------

    def pull_request_event(self, repo: Repository, event: ForgeEvent) -> None:
        """A pull request of `repo` was closed (its preview goes) or reopened (it comes back at its next run)."""
        if event.kind is not EventKind.PULL_REQUEST or event.pr_number is None or event.pr_number < 1:
            return  # (a repository whose previews were turned off still has its open ones removed)
        number = event.pr_number
        if event.pr_action is PullRequestAction.CLOSED:
            preview = self.store.get(repo.id, number)
            if preview is None:  # no run yet: remember it is closed, so a late run creates nothing
                if repo.previews:
                    self.store.ensure(repo.id, number, service="", namespace="", open_=False)
                return
            if preview.open:
                how = "merged" if event.pr_merged else "closed"
                self.store.change(preview.id, open=False, reason=f"the pull request was {how}")
                log.info("pull request closed: removing its preview", extra={"namespace": preview.namespace})
                self.nudge()
        elif event.pr_action is PullRequestAction.REOPENED and repo.previews:
            preview = self.store.get(repo.id, number)
            if preview is not None and not preview.open:
                values: dict[str, Any] = {"open": True, "reason": ""}
                if preview.state is PreviewState.REMOVED:
                    values.update(state=PreviewState.BUILDING, reason="", deployed=None, attempted_run=None)
                self.store.change(preview.id, **values)
                self.nudge()

    # --- the work loop ------------------------------------------------------------------

    def reconcile(self) -> int:
        """Do what the previews' rows call for; returns how many were worked on."""
        done = 0
        now = time.monotonic()
        for preview in self.store.pending():
            if self._not_before.get(preview.id, 0.0) > now:
                continue
            try:
                repo = self.state.get_repository(str(preview.repository_id))
            except NotFound:
                repo = None
            self._not_before.pop(preview.id, None)
            try:
                if preview.needs_removal:
                    self.remove(repo, preview)
                else:
                    self.deploy(repo, preview)
            except ShiplineError as exc:
                # The cluster or the forge failed on its side: the row still says what to do; try again later.
                log.warning("preview work failed; will try again", extra={"namespace": preview.namespace, "error": str(exc)})
                self._not_before[preview.id] = now + RETRY_SECONDS
            done += 1
        self._catch_up(now)
        return done

    def _catch_up(self, now: float) -> None:
        """Comments a forge failed to take while the work went on: post them now (a sweep every RETRY_SECONDS)."""
        if self._not_before.get(0, 0.0) > now:
            return
        self._not_before[0] = now + RETRY_SECONDS
        behind = [
            p
            for p in self.store.all(include_removed=True)
            if p.service
            and (p.comment_id is not None or p.state is not PreviewState.REMOVED)
            and preview_comment(self.view(p)) != p.comment
        ]
        for preview in behind:
            try:
                repo = self.state.get_repository(str(preview.repository_id))
            except NotFound:
                continue
            if not self._tell(repo, preview):
                return  # the forge is away: the rest wait for the next sweep

    def _tell(self, repo: Repository, preview: Preview) -> bool:
        """The comment, without holding up the work: a forge that fails now is caught up with later."""
        try:
            self._comment(repo, preview)
            return True
        except ForgeError as exc:
            log.warning("preview comment not posted; will try again", extra={"namespace": preview.namespace, "error": str(exc)})
            return False

    def deploy(self, repo: Repository | None, preview: Preview) -> None:
        release = preview.wanted or {}
        if repo is None or not repo.previews:
            self.store.change(preview.id, attempted_run=release.get("run"))
            return
        if self.secrets.missing([KUBECONFIG_SECRET]):
            if preview.state is not PreviewState.FAILED or preview.reason != NO_KUBECONFIG:
                preview = self.store.change(preview.id, state=PreviewState.FAILED, reason=NO_KUBECONFIG)
            self._tell(repo, preview)
            self._not_before[preview.id] = time.monotonic() + RETRY_SECONDS
            return
        holder = self.store.holder(preview.namespace, besides=preview.id)
        if holder is not None and holder.created_at <= preview.created_at:
            owner = self.state.get_repository(str(holder.repository_id)).name if holder.repository_id != repo.id else repo.name
            preview = self.store.change(
                preview.id,
                state=PreviewState.FAILED,
                attempted_run=release.get("run"),
                reason=f"namespace {preview.namespace} is already the preview of pull request #{holder.pr_number} "
                f"of repository {owner}: rename the pipeline (its `name:`)",
            )
            self._tell(repo, preview)
            return
        preview = self.store.change(preview.id, state=PreviewState.DEPLOYING, reason="")
        self._tell(repo, preview)
        log.info("deploying preview", extra={"namespace": preview.namespace, "version": release.get("version")})
        try:
            reason = self._deploy(preview, release)
        except ClusterError as exc:
            if "cannot reach" in str(exc):
                raise  # the cluster is away: try again, do not call the preview failed
            reason = str(exc)
        except ShiplineError as exc:
            reason = str(exc)
        if reason:
            preview = self.store.change(preview.id, state=PreviewState.FAILED, reason=reason, attempted_run=release.get("run"))
        else:
            preview = self.store.change(
                preview.id, state=PreviewState.READY, reason="", attempted_run=release.get("run"), deployed=release
            )
        log.info("preview deployed", extra={"namespace": preview.namespace, "state": preview.state.value, "reason": reason})
        self._tell(repo, preview)

    def _deploy(self, preview: Preview, release: dict[str, Any]) -> str:
        """Render, apply, prune, verify; the reason it failed ("" when it is up)."""
        with tempfile.TemporaryDirectory(prefix="shipline-preview-") as scratch:
            root = Path(scratch)
            kubeconfig = self._kubeconfig(root)
            with Templater() as helm:
                text = helm.template(
                    preview_release(preview.service),
                    str(release["chart"]),
                    namespace=preview.namespace,
                    version=str(release["chart_version"]),
                    what=f"helm template of {release['chart']}:{release['chart_version']}",
                )
            manifests = root / "manifests"
            manifests.mkdir()
            (manifests / "preview.yaml").write_text(text)
            cluster = self._cluster(kubeconfig, preview)
            cluster.label_namespace({PREVIEW_LABEL: preview_label(preview.service, preview.pr_number)})
            desired = cluster.load(manifests)
            _, verification = cluster.sync(desired, self.verify_seconds)
        if verification.ok:
            return ""
        if verification.timed_out and not verification.failures():
            return f"not rolled out within {self.verify_seconds:.0f}s"
        failures = "; ".join(str(f) for f in verification.failures()[:3])
        within = f" within {self.verify_seconds:.0f}s" if verification.timed_out else ""
        return f"not rolled out{within}: {failures}"

    def remove(self, repo: Repository | None, preview: Preview) -> None:
        touched = preview.attempted_run is not None or preview.deployed is not None or preview.state is PreviewState.DEPLOYING
        reason = ""
        if touched and preview.namespace:
            if self.secrets.missing([KUBECONFIG_SECRET]):
                reason = f"namespace {preview.namespace} could not be deleted: no secret {KUBECONFIG_SECRET}; delete it by hand"
            else:
                with tempfile.TemporaryDirectory(prefix="shipline-preview-") as scratch:
                    deleted = self._cluster(self._kubeconfig(Path(scratch)), preview).delete_namespace()
                log.info("preview removed", extra={"namespace": preview.namespace, "deleted": deleted})
        closed = (
            preview.reason
            if preview.reason.startswith(("the pull request was", REPOSITORY_REMOVED))
            else "the pull request was closed"
        )
        preview = self.store.change(preview.id, state=PreviewState.REMOVED, reason=reason or closed)
        if repo is not None:
            self._tell(repo, preview)

    def _kubeconfig(self, scratch: Path) -> Path:
        path = scratch / "kubeconfig"
        path.touch(mode=0o600)
        path.write_text(self.secrets.reveal([KUBECONFIG_SECRET])[KUBECONFIG_SECRET])
        return path

    def _cluster(self, kubeconfig: Path, preview: Preview) -> Cluster:
        try:
            return Cluster.connect(kubeconfig, environment=preview.namespace, target=Target(namespace=preview.namespace))
        except ShiplineError as exc:
            raise ClusterError(f"the kubeconfig in secret {KUBECONFIG_SECRET} cannot be used: {exc}") from exc

    # --- the comment --------------------------------------------------------------------

    def view(self, preview: Preview) -> PreviewView:
        state = preview.state
        shown = preview.deployed if state is PreviewState.READY else None
        if state in (PreviewState.DEPLOYING, PreviewState.FAILED) and preview.wanted is not None:
            shown = preview.wanted
        if state is PreviewState.REMOVED:
            shown = preview.deployed
        shown = shown or {}
        base = self.settings.server_url
        last = preview.last_run
        return PreviewView(
            service=preview.service,
            pr_number=preview.pr_number,
            namespace=preview.namespace,
            state=state,
            reason=preview.reason,
            version=str(shown.get("version") or ""),
            image=str(shown.get("image") or ""),
            run_link=run_link(base, int(shown["run"])) if shown.get("run") else "",
            failed_run_link=run_link(base, last) if last and preview.last_status in ("failed", "cancelled") else "",
            building_link=run_link(base, last) if last and preview.last_status not in _ENDED else "",
            deployed=preview.deployed is not None,
        )

    def _comment(self, repo: Repository, preview: Preview) -> None:
        """Post or edit the pull request's preview comment when its text changed."""
        if not preview.service or (preview.comment_id is None and preview.state is PreviewState.REMOVED):
            return
        body = preview_comment(self.view(preview))
        if body == preview.comment and preview.comment_id is not None:
            return
        if repo.forge not in ("gitea", "github") or not serves(self.settings, repo.forge, repo.url):
            return  # no token for this forge: the preview works, nobody is told
        forge = self.forge_for(repo.forge) if self.forge_for else connect(self.settings, repo.forge)
        ref = repo_ref(repo.url)
        try:
            comment_id = preview.comment_id
            if comment_id is None or not forge.update_comment(ref, comment_id, body):
                # First time, or a server stopped between posting and recording: look before posting.
                comment_id = forge.find_comment(ref, preview.pr_number, comment_marker(preview.service))
                if comment_id is None or not forge.update_comment(ref, comment_id, body):
                    comment_id = forge.comment(ref, preview.pr_number, body)
        finally:
            forge.close()
        self.store.change(preview.id, comment_id=comment_id, comment=body)

    # --- life ---------------------------------------------------------------------------

    def nudge(self) -> None:
        """Work now rather than at the next poll (safe from any thread)."""
        loop, nudged = self._loop, self._nudged
        if loop is not None and nudged is not None:
            with suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(nudged.set)

    async def follow(self, bus: EventBus, stop: asyncio.Event, poll_seconds: float = 1.0) -> None:
        """Read the outbox and do the previews' work until `stop`."""
        self._loop, self._nudged = asyncio.get_running_loop(), asyncio.Event()
        await outbox.follow(
            OutboxReader(self.sql, CONSUMER, self.owner, kind="run"),
            self._handle,
            bus,
            stop,
            name="previews",
            poll_seconds=poll_seconds,
            retry_seconds=poll_seconds,
            transient=(ForgeError,),
            between=self.reconcile,
            nudged=self._nudged,
        )

    def _handle(self, transition: RunTransition) -> None:
        try:
            self.handle(transition)
        except ForgeError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise  # the forge is away: the cursor stays, the transition comes again
            log.warning("preview comment refused; skipped", extra={"run": transition.run_id, "error": str(exc)})
