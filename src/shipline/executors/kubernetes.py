"""Run each task attempt as a Pod of a Kubernetes cluster (`SHIPLINE_EXECUTOR=kubernetes`).

One pod per attempt, in `kube_namespace` of the cluster of $KUBECONFIG (through
lightkube).  Its steps run in order inside it: consecutive steps with the same
image share one container, which runs a small bash driver (`DRIVER`) over
them; containers of different images are init containers, in step order, the
last one the pod's main container.  So a task of one image costs one pod
start, no more.

What the steps need comes in one Secret per attempt, mounted only into that
pod: the driver, each step's script, environment (values from params and
secrets never appear in the pod's spec) and workdir, and the task's secret
files (mode 0400, at `/shipline/secret-files/NAME`).  The Secret is owned by
the pod (garbage-collected with it) and deleted with it; all pods and Secrets
of a run are deleted again when the run ends.

The driver marks each step's start, end and `$SHIPLINE_OUTPUT` on the pod's log
with a random mark of the attempt (`MARK start|output|end ...`), so logs,
exit codes and results (base64, any size up to `step_output_max_bytes`: no
4 KB termination-message cap) all come through the container's output, which
is read as it is written and written to shipline's store: logs outlive the pod.

That output is read by attaching to the pod's main container (`pods/attach`,
a WebSocket), whose driver waits on its stdin for the word to start: the
kubelet serves an attach as soon as the container runs, while it serves the
container's log only once its status says "running", which its relist (PLEG,
every second) brings half a second later on average.  Where the account may
not attach (checked once, with a SelfSubjectAccessReview), where the attach
ends early, and for the containers of other images before the main one, the
log is read instead (`pods/log`, followed).

Step timeouts, the task's timeout and cancel delete the pod.  A pod that
cannot start (an image that cannot be pulled, a missing claim, a config
error), that is deleted by hand or evicted, or whose node stops answering
(the pods tolerate the node controller's unreachable/not-ready taints for 0 s,
so they are evicted as soon as it taints the node), fails the task with that
reason.  Calls wait out an API
server that restarts: the log is followed past what the cut attach read.
A restarted engine finds a dead engine's pods and Secrets by label and
deletes them (`stop_orphans`).

The run's workspace is a folder per run (`INSTANCE/RUN`, a subPath) of the
PersistentVolumeClaim `kube_workspace_claim`: tasks of a run may run at once,
so on a cluster of several nodes the claim must be ReadWriteMany, or the pods
kept on one node (`kube_node_selector`).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, cast

import httpx2
from httpx2.websockets import WebSocketUpgradeError
from lightkube import ApiError, AsyncClient, Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Pod, PodLog, Secret

from shipline.domain.rollouts import NODE_GONE_TAINTS
from shipline.exceptions import UsageError
from shipline.executors.base import StepEnd, StepListener, StepSpec, TaskInvocation, TaskOutcome
from shipline.kubeconfigs import kubeconfig_in_memory
from shipline.settings import Settings

T = TypeVar("T")

CHANNEL_PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
"""Kubernetes' WebSocket subprotocols for attach: each message is a channel byte, then data
(0 stdin, 1 stdout, 2 stderr, 3 the server's Status at the end)."""
STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3

MAX_LINE = 64 * 1024
"""Longer log lines are cut into pieces of this size (as the local executor does)."""

WORKSPACE = PurePosixPath("/workspace")
HOME = "/shipline/run/home"
SPEC_DIR = "/shipline/spec"
SECRET_FILES_DIR = "/shipline/secret-files"

MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "shipline.dev/instance"
LABEL_RUN = "shipline.dev/run"
LABEL_TASK = "shipline.dev/task"
LABEL_ATTEMPT = "shipline.dev/attempt"
ANNOTATION_OWNER = "shipline.dev/owner"

FATAL_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
"""Why a container waits, when waiting longer will not help: the task fails at once."""

_NODE_LOST = (
    "the pod's node '{node}' stopped answering: the cluster marked it unreachable or not ready and "
    "evicted the pod; it was deleted without waiting for the node"
)

DRIVER = r"""
set -u
if [ "${1-}" = --wait ]; then
  shift
  if ! IFS= read -r go; then
    echo "shipline: the pod's stdin closed before the executor's word to start came"
    exit 125
  fi
fi
spec=/shipline/spec
mark=$(cat "$spec/mark")
max_out=$(cat "$spec/max-output")
mkdir -p /shipline/run/home /shipline/run/out
for i in "$@"; do
  printf '%s start %s\n' "$mark" "$i"
  out=/shipline/run/out/$i
  : > "$out"
  chmod 600 "$out"
  (
    vars=()
    while IFS= read -r -d '' kv; do vars+=("$kv"); done < "$spec/env-$i"
    wd=$(cat "$spec/workdir-$i")
    cd /workspace || exit 125
    if ! mkdir -p -- "./$wd" 2>/dev/null || ! cd -P -- "./$wd" 2>/dev/null; then
      echo "shipline: workdir '$wd' cannot be made or entered inside the run's workspace: refused"
      exit 126
    fi
    case "$(pwd -P)/" in
      /workspace/*) ;;
      *) echo "shipline: workdir '$wd' leads to $(pwd -P) (through a symlink), outside the run's workspace: refused"; exit 126 ;;
    esac
    script=$(cat "$spec/script-$i"; printf x)
    script=${script%x}
    if [ "$(cat "$spec/shell-$i")" = sh ]; then set -- sh -ec; else set -- bash --noprofile --norc -eo pipefail -c; fi
    exec env -i PATH="$PATH" "${vars[@]}" SHIPLINE_OUTPUT="$out" "$@" "$script"
  ) < /dev/null 2>&1
  code=$?
  size=$(stat -c %s "$out")
  if [ "$size" -gt "$max_out" ]; then
    printf '%s output %s -%s\n' "$mark" "$i" "$size"
  else
    printf '%s output %s %s\n' "$mark" "$i" "$(base64 -w0 < "$out")"
  fi
  rm -f "$out"
  printf '%s end %s %s\n' "$mark" "$i" "$code"
  [ "$code" = 0 ] || exit "$code"
done
"""


@dataclass
class _Group:
    """Consecutive steps of one image: one container."""

    name: str
    image: str
    steps: list[StepSpec]


@dataclass
class _Attempt:
    """What is known of one attempt's pod while it runs."""

    pod: str
    steps: list[StepSpec]
    mark: str
    listener: StepListener
    max_log_bytes: int
    attach: bool
    """The main container waits for an attach to start its steps (`--wait`)."""
    status: dict[str, Any] = field(default_factory=dict)
    """The pod's `.status`, as the watch last saw it."""
    node: str = ""
    """The node the pod was scheduled to."""
    node_lost: bool = False
    """The cluster evicted the pod from a node that stopped answering: it is force-deleted (its kubelet cannot)."""
    gone: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    current: int | None = None
    """The step running now (started, not ended)."""
    current_since: float = 0.0
    started: set[int] = field(default_factory=set)
    ended: dict[int, int] = field(default_factory=dict)
    outputs: dict[int, str] = field(default_factory=dict)
    oversized: dict[int, int] = field(default_factory=dict)
    last_line: str = ""
    kept: dict[int, int] = field(default_factory=dict)
    announced: int | None = None
    """The step shown as started while the pod waits for a node (its log says why it waits)."""
    waiting_said: str = ""

    def container_state(self, container: str) -> dict[str, Any]:
        for key in ("initContainerStatuses", "containerStatuses"):
            for status in self.status.get(key) or []:
                if status.get("name") == container:
                    state: dict[str, Any] = status.get("state") or {}
                    return state
        return {}


class KubernetesExecutor:
    def __init__(self, settings: Settings, kubeconfig: Path | None = None) -> None:
        self.settings = settings
        self.namespace = settings.kube_namespace
        self.kubeconfig = kubeconfig
        self.instance = hashlib.sha256(settings.database.encode()).hexdigest()[:12]
        """Tells this store's pods from another's in the same namespace (run ids repeat across stores)."""
        self._config: KubeConfig | None = None
        self._client: AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._active = 0
        self._attach: bool | None = None
        """Whether the account may attach to the run pods (asked once)."""
        self._cleanups: set[asyncio.Future[None]] = set()
        """Deletions of finished pods still under way (awaited before a run is over)."""
        """Runs between `run_starting` and `run_ended`: the client is closed when none is left."""
        self.node_selector = _pairs(settings.kube_node_selector, "SHIPLINE_KUBE_NODE_SELECTOR")
        self.tolerations = _tolerations(settings.kube_tolerations)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesExecutor:
        return cls(settings)

    # --- the cluster ---------------------------------------------------------------------

    def config(self) -> KubeConfig:
        if self._config is None:
            try:
                if self.kubeconfig is not None:
                    self._config = kubeconfig_in_memory(KubeConfig.from_file(self.kubeconfig))
                else:
                    self._config = kubeconfig_in_memory(KubeConfig.from_env())
            except ConfigError as exc:
                where = str(self.kubeconfig or "$KUBECONFIG / ~/.kube/config / the pod's service account")
                raise UsageError(
                    f"the kubernetes executor found no cluster to use in {where} ({exc}): "
                    "set KUBECONFIG to a kubeconfig file for the cluster, or SHIPLINE_EXECUTOR=local"
                ) from exc
        return self._config

    def client(self) -> AsyncClient:
        """One client per event loop (its connections belong to the loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = AsyncClient(config=self.config(), namespace=self.namespace, field_manager="shipline")
            self._client_loop = loop
        return self._client

    def _server(self) -> str:
        single = self.config().get()
        return single.cluster.server if single is not None else "of $KUBECONFIG"

    def _labels(self, run_id: int) -> dict[str, Any]:
        return {MANAGED_BY: "shipline", LABEL_INSTANCE: self.instance, LABEL_RUN: str(run_id)}

    # --- where the run's steps live: paths inside the pod ----------------------------------

    def workspace(self, settings: Settings, run_id: int) -> Path:
        return Path(WORKSPACE)

    def secret_file_path(self, settings: Settings, run_id: int, task: str, name: str) -> str:
        return f"{SECRET_FILES_DIR}/{name}"

    def step_environment(self, settings: Settings, run_id: int, pipeline: str) -> dict[str, str]:
        # PATH and the rest come from the image; nothing of the engine's environment goes in.
        return {
            "HOME": HOME,
            "SHIPLINE_RUN_ID": str(run_id),
            "SHIPLINE_PIPELINE": pipeline,
            "SHIPLINE_TASK": "",
            "SHIPLINE_WORKSPACE": str(WORKSPACE),
            "CI": "true",
        }

    async def run_starting(self, settings: Settings, run_id: int) -> None:
        self._active += 1

    async def run_ended(self, settings: Settings, run_id: int) -> None:
        """Delete every pod and Secret of the run that is still there (normally none)."""
        try:
            await self._delete_run(run_id)
        finally:
            self._active -= 1
            if self._active <= 0 and self._client is not None and self._client_loop is asyncio.get_running_loop():
                # No run left on this loop: close the connections (the loop may end with the run).
                client, self._client = self._client, None
                await client.close()

    async def _delete_run(self, run_id: int) -> None:
        if self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)
        client = self.client()
        selector = self._labels(run_id)

        async def names(kind: type[Pod] | type[Secret]) -> list[str]:
            return [
                o.metadata.name
                async for o in client.list(kind, namespace=self.namespace, labels=selector)
                if o.metadata and o.metadata.name
            ]

        for name in await _patiently(lambda: names(Pod)) or []:
            await _patiently(partial(client.delete, Pod, name, namespace=self.namespace, grace_period=0))
        for name in await _patiently(lambda: names(Secret)) or []:
            await _patiently(partial(client.delete, Secret, name, namespace=self.namespace))

    def stop_orphans(self, run_id: int, owner: str, pids: list[int]) -> None:
        """A dead engine's pods and Secrets of `run_id`, found by label: deleted (the run is marked interrupted)."""
        client = Client(config=self.config(), namespace=self.namespace, field_manager="shipline")
        try:
            selector = self._labels(run_id)
            for pod in client.list(Pod, namespace=self.namespace, labels=selector):
                if pod.metadata is not None and pod.metadata.name:
                    with suppress(ApiError):
                        client.delete(Pod, pod.metadata.name, namespace=self.namespace, grace_period=0)
            for secret in client.list(Secret, namespace=self.namespace, labels=selector):
                if secret.metadata is not None and secret.metadata.name:
                    with suppress(ApiError):
                        client.delete(Secret, secret.metadata.name, namespace=self.namespace)
        finally:
            client.close()

    def leftovers(self, run_id: int | None = None) -> list[str]:
        """`Kind/name` of this store's pods and Secrets (of one run) still in the namespace."""
        client = Client(config=self.config(), namespace=self.namespace)
        labels: dict[str, Any] = {MANAGED_BY: "shipline", LABEL_INSTANCE: self.instance}
        if run_id is not None:
            labels[LABEL_RUN] = str(run_id)
        try:
            found = [f"Pod/{p.metadata.name}" for p in client.list(Pod, namespace=self.namespace, labels=labels) if p.metadata]
            found += [
                f"Secret/{s.metadata.name}" for s in client.list(Secret, namespace=self.namespace, labels=labels) if s.metadata
            ]
            return found
        finally:
            client.close()

    # --- one attempt -----------------------------------------------------------------------

    async def execute(self, invocation: TaskInvocation, listener: StepListener) -> TaskOutcome:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        if not invocation.steps:
            return TaskOutcome(True)
        image_default = self.settings.runner_image
        if any(not (s.image or image_default) for s in invocation.steps):
            return _refused(
                invocation,
                listener,
                "no image for the step: give it `image:` (on the step or the task), or set SHIPLINE_RUNNER_IMAGE",
            )
        groups = _groups(invocation.steps, image_default or "")
        name = _pod_name(invocation)
        mark = f"\x1fshipline-{secrets.token_hex(12)}"
        client = self.client()
        labels = {
            **self._labels(invocation.run_id),
            LABEL_TASK: invocation.task,
            LABEL_ATTEMPT: str(invocation.attempt),
        }
        secret = self._secret(name, labels, invocation, mark)
        attach = await self._may_attach(client)
        pod = self._pod(name, labels, groups, invocation, attach)
        attempt = _Attempt(name, invocation.steps, mark, listener, self.settings.step_log_max_bytes, attach)
        try:
            await client.create(secret)
            created = await client.create(pod)
        except ApiError as exc:
            await _patiently(lambda: client.delete(Secret, name, namespace=self.namespace))
            return _refused(invocation, listener, self._api_problem(exc, "create the task's pod"))
        except httpx2.TransportError as exc:
            await _patiently(lambda: client.delete(Secret, name, namespace=self.namespace))
            return _refused(
                invocation,
                listener,
                f"the cluster's API server ({self._server()}) did not answer ({type(exc).__name__}: {exc}): "
                "check that it is up and that $KUBECONFIG points at it",
            )
        # Beside the pod's start, not before it: the Secret's owner reference is only a safety net.
        owning = asyncio.create_task(self._own_secret(client, name, created))
        try:
            return await self._supervise(invocation, attempt, groups, begun)
        except asyncio.CancelledError as exc:
            why = str(exc.args[0]) if exc.args and exc.args[0] else "cancelled"
            _stop_current(attempt, f"shipline: {why}; the step's pod was deleted", "cancelled")
            raise
        finally:
            done = bool(attempt.ended) and not attempt.gone and attempt.current is None
            grace = 0 if done or attempt.node_lost else int(self.settings.kill_grace_seconds)
            cleanup = asyncio.ensure_future(self._finish(owning, client, name, grace))
            if done and all(code == 0 for code in attempt.ended.values()):
                # The steps are over: the pod and Secret go while the next task starts
                # (`run_ended` waits for it before the run is over).
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
            else:
                # Shielded: a cancel must not leave the pod (and its Secret) behind.
                await asyncio.shield(cleanup)

    async def _supervise(self, invocation: TaskInvocation, attempt: _Attempt, groups: list[_Group], begun: float) -> TaskOutcome:
        loop = asyncio.get_running_loop()
        watcher = asyncio.create_task(self._watch(attempt))
        follower = asyncio.create_task(self._follow(attempt, groups))
        task_deadline = begun + invocation.timeout if invocation.timeout else None
        try:
            while not follower.done():
                limit, what = task_deadline, f"the task timed out after {invocation.timeout:g}s" if invocation.timeout else ""
                step = invocation.steps[attempt.current] if attempt.current is not None else None
                if step is not None and step.timeout is not None:
                    step_deadline = attempt.current_since + step.timeout
                    if limit is None or step_deadline < limit:
                        limit, what = step_deadline, f"step timed out after {step.timeout:g}s"
                if limit is None or loop.time() < limit:
                    # A short look, then the deadlines again: a step that starts brings its own.
                    wait = 0.2 if limit is None else min(0.2, max(limit - loop.time(), 0.0))
                    await asyncio.wait({follower}, timeout=wait)
                    continue
                follower.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await follower
                waited = _never_scheduled(attempt)
                why = f" ({waited})" if waited else ""
                _stop_current(attempt, f"shipline: {what}{why}; the step's pod was deleted", "failed")
                outputs = _outputs(attempt)
                if what.startswith("the task"):
                    return TaskOutcome(False, f"timed out after {invocation.timeout:g}s{why}", outputs)
                assert step is not None
                return TaskOutcome(False, f"step '{step.name}' timed out after {step.timeout:g}s{why}", outputs)
            problem = follower.result()
        finally:
            for helper in (watcher, follower):
                helper.cancel()
            await asyncio.gather(watcher, follower, return_exceptions=True)
        return self._outcome(attempt, problem)

    def _outcome(self, attempt: _Attempt, problem: str | None) -> TaskOutcome:
        outputs = _outputs(attempt)
        for step in attempt.steps:
            i = step.index
            if i in attempt.oversized and attempt.ended.get(i) == 0:
                limit = self.settings.step_output_max_bytes
                return TaskOutcome(
                    False,
                    f"step '{step.name}' wrote {attempt.oversized[i]} bytes to $SHIPLINE_OUTPUT, more than "
                    f"step_output_max_bytes ({limit}); results are short `name=value` lines: "
                    "put files in the workspace and write their paths (or raise SHIPLINE_STEP_OUTPUT_MAX_BYTES)",
                    outputs,
                )
            code = attempt.ended.get(i)
            if code is not None and code != 0:
                said = f": {attempt.last_line}" if attempt.last_line else ""
                return TaskOutcome(False, f"step '{step.name}' exited with code {code}{said}", outputs)
            if code is None:
                why = problem or "the pod ended before the step did"
                _stop_current(attempt, f"shipline: {why}", "failed", index=i)
                return TaskOutcome(False, f"step '{step.name}': {why}", outputs)
        return TaskOutcome(True, "", outputs)

    async def _follow(self, attempt: _Attempt, groups: list[_Group]) -> str | None:
        """Read each container's log, in order, as it is written; None, or why the pod did not get to the end."""
        for group in groups:
            seen = 0
            if attempt.attach and group is groups[-1]:
                seen, problem = await self._attached(attempt, group)
                if problem is not None:
                    return problem
            last_look = False
            while not self._group_over(attempt, group):
                # The log is asked for at once and again every 0.05 s until the steps are over:
                # the kubelet serves it as soon as the container runs (before the pod's status
                # says so), and may close the stream of a container that ends within moments of
                # its start before it saw all of it (then it is read again, past what was seen).
                if (problem := self._not_starting(attempt, group)) is not None:
                    return problem
                if last_look:
                    break
                last_look = "terminated" in attempt.container_state(group.name)
                pause = 0.05
                try:
                    seen = await self._read_log(attempt, group, await self._open_log(attempt.pod, group.name), seen)
                except ApiError as exc:
                    if exc.status.code is not None and exc.status.code >= 500:
                        pause = 0.5  # the kubelet does not answer (the node is down?)
                except httpx2.TransportError:
                    pause = 0.5  # the API server does not answer (it restarts?)
                if not self._group_over(attempt, group):
                    attempt.changed.clear()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(attempt.changed.wait(), pause)
            if any(code != 0 for code in attempt.ended.values()):
                return None
            if not all(s.index in attempt.ended for s in group.steps):
                return await self._why_cut(attempt, group.name)
        return None

    @staticmethod
    def _group_over(attempt: _Attempt, group: _Group) -> bool:
        return all(s.index in attempt.ended for s in group.steps) or any(c != 0 for c in attempt.ended.values())

    def _not_starting(self, attempt: _Attempt, group: _Group) -> str | None:
        """Why the container will not start (from the pod's status as last seen), if it will not."""
        if attempt.node_lost:
            return _NODE_LOST.format(node=attempt.node)
        if attempt.gone:
            return (
                f"the pod was deleted (by hand, or evicted) {'while the step ran' if attempt.started else 'before the step ran'}"
            )
        state = attempt.container_state(group.name)
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason", "")
        if reason in FATAL_WAITING:
            detail = waiting.get("message", "")
            if "Image" in reason:
                return (
                    f"the image '{group.image}' could not be pulled ({reason}: {detail}); "
                    "check its name and tag, and that the cluster's nodes can pull from its registry"
                )
            return f"the container could not start ({reason}: {detail})"
        if (failed := self._pod_failed(attempt)) is not None:
            return failed
        message = _unscheduled(attempt) or ""
        if "persistentvolumeclaim" in message and "not found" in message:
            return (
                f"the pod cannot be scheduled: {message}; create the workspace claim "
                f"'{self.settings.kube_workspace_claim}' in namespace '{self.namespace}' (README "
                "'Running on Kubernetes'), or set SHIPLINE_KUBE_WORKSPACE_CLAIM"
            )
        if message and not attempt.node:
            _say_waiting(attempt, message)
        return None

    @staticmethod
    def _node_lost(status: dict[str, Any]) -> bool:
        """Did the cluster evict the pod because its node stopped answering?  The pods ask to
        be evicted at once from a node tainted unreachable or not-ready (`_pod`); the taint
        manager then says so in a DisruptionTarget condition."""
        return any(
            c.get("type") == "DisruptionTarget" and c.get("reason") == "DeletionByTaintManager"
            for c in status.get("conditions") or []
        )

    def _pod_failed(self, attempt: _Attempt) -> str | None:
        if attempt.status.get("phase") == "Failed" and attempt.status.get("reason"):
            return f"the pod failed ({attempt.status.get('reason')}: {attempt.status.get('message', '')})"
        return None

    async def _why_cut(self, attempt: _Attempt, container: str) -> str:
        """The log ended before the steps did: say why, from the pod's state."""
        for _ in range(50):  # the watch may be a moment behind the log
            if attempt.node_lost:
                return _NODE_LOST.format(node=attempt.node)
            if attempt.gone:
                return "the pod was deleted (by hand, or evicted) while the step ran"
            if (failed := self._pod_failed(attempt)) is not None:
                return failed
            terminated = attempt.container_state(container).get("terminated")
            if terminated:
                reason = terminated.get("reason", "")
                return f"the step's container ended ({reason}, exit code {terminated.get('exitCode')})"
            attempt.changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(attempt.changed.wait(), 0.2)
        return "the pod's log ended before the step did"

    async def _watch(self, attempt: _Attempt) -> None:
        """Keep `attempt.status` current; a watch that breaks is started again."""
        client = self.client()
        while not attempt.gone:
            try:
                async for kind, obj in client.watch(Pod, namespace=self.namespace, fields={"metadata.name": attempt.pod}):
                    pod = obj.to_dict() if hasattr(obj, "to_dict") else {}
                    attempt.status = pod.get("status") or {}
                    attempt.node = (pod.get("spec") or {}).get("nodeName") or attempt.node
                    attempt.node_lost = attempt.node_lost or self._node_lost(attempt.status)
                    if kind == "DELETED" or (pod.get("metadata") or {}).get("deletionTimestamp"):
                        attempt.gone = True
                    attempt.changed.set()
                    if attempt.gone:
                        return
            except ApiError as exc:
                if exc.status.code == 404:
                    attempt.gone = True
                    attempt.changed.set()
                    return
                await asyncio.sleep(0.5)
            except Exception:
                await asyncio.sleep(0.5)

    async def _read_log(self, attempt: _Attempt, group: _Group, response: httpx2.Response, skip: int) -> int:
        """The container's log until its steps are over; the first `skip` pieces were read
        before.  Returns how many pieces the log has had so far."""
        try:
            return await self._read(attempt, group, response.aiter_raw(), skip)
        finally:
            await response.aclose()

    async def _read(
        self, attempt: _Attempt, group: _Group, chunks: AsyncIterator[bytes], skip: int, first: str | None = None
    ) -> int:
        """The container's output, line by line, until its steps are over (not until the stream
        closes: the container's exit takes the kubelet a moment more); the first `skip`
        pieces were read before.  Returns how many pieces the output has had so far, or -1
        if its first piece is not `first` (it does not start at the beginning: nothing read)."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        count = 0
        with suppress(Exception):
            async for raw, partial in _lines(chunks):
                count += 1
                if count <= skip:
                    continue
                text = decoder.decode(raw, final=not partial)
                if first is not None and count == 1 and text.removesuffix("\r") != first:
                    return -1
                self._line(attempt, text if partial else text.removesuffix("\r"), partial)
                if not partial and attempt.mark in text and self._group_over(attempt, group):
                    break
        return max(count, skip)

    async def _attached(self, attempt: _Attempt, group: _Group) -> tuple[int, str | None]:
        """Attach to the main container as soon as it runs, tell its driver to start, and read
        its output until the steps are over.  Returns how many pieces were read (an attach that
        ends early is followed by the log, past them), and why the container will not start, if
        it will not."""
        inner = self.client()._client._client  # lightkube's httpx2 client (its TLS, its auth): lightkube has exec, not attach
        path = f"/api/v1/namespaces/{self.namespace}/pods/{attempt.pod}/attach"
        params = {"container": group.name, "stdin": "true", "stdout": "true", "stderr": "true"}
        first = f"{attempt.mark} start {group.steps[0].index}"
        while not self._group_over(attempt, group):
            if (problem := self._not_starting(attempt, group)) is not None:
                return 0, problem
            if "terminated" in attempt.container_state(group.name):
                return 0, None  # over before an attach saw it: its log has it all
            count = 0
            try:
                async with inner.websocket(path, subprotocols=CHANNEL_PROTOCOLS, params=params) as ws:
                    await ws.send_bytes(bytes((STDIN,)) + b"go\n")
                    count = await self._read(attempt, group, _attach_output(ws, attempt), 0, first=first)
            except WebSocketUpgradeError as exc:
                if exc.response.status_code in (401, 403):
                    return 0, (
                        f"the cluster refused to attach to the task's pod ({exc.response.status_code}): the account "
                        "of $KUBECONFIG needs `create` on `pods/attach` (README, 'Running on Kubernetes')"
                    )
            except Exception:
                pass  # no connection (the API server restarts?): again in a moment
            if count < 0:
                return 0, None  # an earlier attach started the steps but showed nothing: the log has it all
            if count > 0:
                return count, None  # what is left (if anything) is in the log
            # Not attached: the container does not run yet (its runtime may also end an attach
            # at once, before the container takes its stdin).  Again in a moment.
            attempt.changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(attempt.changed.wait(), 0.05)
        return 0, None

    async def _may_attach(self, client: AsyncClient) -> bool:
        """May the account attach to pods in the namespace?  Asked once (a SelfSubjectAccessReview)."""
        if self._attach is None:
            review = SelfSubjectAccessReview(
                spec=SelfSubjectAccessReviewSpec(
                    resourceAttributes=ResourceAttributes(
                        namespace=self.namespace, verb="create", resource="pods", subresource="attach"
                    )
                )
            )
            try:
                answer = await client.create(review)
                self._attach = bool(answer.status and answer.status.allowed)
            except (ApiError, httpx2.TransportError):
                return False  # asked again next time
        return self._attach

    async def _open_log(self, pod: str, container: str) -> httpx2.Response:
        """The container's log stream, followed (raises ApiError while it has not started).

        Not `AsyncClient.log`: it decodes text and splits lines at '\\r' as well."""
        inner = self.client()._client
        request = inner.prepare_request(
            "get", PodLog, name=pod, namespace=self.namespace, params={"container": container, "follow": True}
        )
        request.timeout = httpx2.Timeout(10.0, read=None)  # a step may print nothing for hours
        response: httpx2.Response = await inner.send(inner.build_adapter_request(request), stream=True)  # type: ignore[no-untyped-call]
        if response.is_error:
            await response.aread()
            await response.aclose()
            inner.raise_for_status(response)  # type: ignore[no-untyped-call]
        return response

    def _line(self, attempt: _Attempt, text: str, partial: bool) -> None:
        """One line of the log: a mark of the driver, or a line of the running step."""
        where = text.find(attempt.mark) if not partial else -1
        if where < 0:
            if attempt.current is not None:
                self._emit(attempt, attempt.current, text, partial)
            return
        before, words = text[:where], text[where + len(attempt.mark) :].split()
        if before and attempt.current is not None:
            self._emit(attempt, attempt.current, before, False)  # the step's last line, without its newline
        if len(words) < 2 or not words[1].isdigit():
            return
        what, index = words[0], int(words[1])
        if index >= len(attempt.steps):
            return
        if what == "start":
            attempt.current = index
            attempt.current_since = asyncio.get_running_loop().time()
            attempt.started.add(index)
            attempt.last_line = ""
            if index != attempt.announced:
                attempt.listener.step_started(index, None)
        elif what == "output" and len(words) >= 2:
            value = words[2] if len(words) > 2 else ""
            if value.startswith("-"):
                attempt.oversized[index] = int(value[1:]) if value[1:].isdigit() else 0
                attempt.outputs[index] = ""
            else:
                attempt.outputs[index] = base64.b64decode(value).decode("utf-8", "replace")
        elif what == "end" and len(words) >= 3:
            code = int(words[2]) if words[2].lstrip("-").isdigit() else 1
            attempt.ended[index] = code
            attempt.current = None
            status: StepEnd = "succeeded" if code == 0 else "failed"
            attempt.listener.step_finished(index, code, status)

    def _emit(self, attempt: _Attempt, index: int, text: str, partial: bool) -> None:
        kept = attempt.kept.get(index, 0)
        limit = attempt.max_log_bytes
        if kept > limit:
            return
        kept += len(text.encode()) + (0 if partial else 1)
        attempt.kept[index] = kept
        if kept > limit:
            attempt.listener.step_log(
                index,
                f"shipline: this step's output passed step_log_max_bytes ({limit} bytes); the rest "
                "is not kept (write large output to a file in the workspace, or raise SHIPLINE_STEP_LOG_MAX_BYTES)",
                False,
            )
            return
        if text.strip():
            stripped = text.strip()
            attempt.last_line = stripped if len(stripped) <= 300 else stripped[:297] + "..."
        attempt.listener.step_log(index, text, partial)

    async def _own_secret(self, client: AsyncClient, name: str, pod: Pod) -> None:
        """Make the pod the Secret's owner: if everything else fails, the cluster deletes it with the pod."""
        if pod.metadata is None or pod.metadata.uid is None:
            return
        owner = OwnerReference(apiVersion="v1", kind="Pod", name=name, uid=pod.metadata.uid)
        with suppress(ApiError):
            await client.patch(
                Secret,
                name,
                {"metadata": {"ownerReferences": [owner.to_dict()]}},
                namespace=self.namespace,
            )

    async def _finish(self, owning: asyncio.Task[None], client: AsyncClient, name: str, grace: int) -> None:
        with suppress(Exception):
            await owning
        await self._delete(client, name, grace)

    async def _delete(self, client: AsyncClient, name: str, grace: int) -> None:
        await _patiently(lambda: client.delete(Pod, name, namespace=self.namespace, grace_period=grace))
        await _patiently(lambda: client.delete(Secret, name, namespace=self.namespace))

    def _api_problem(self, exc: ApiError, doing: str) -> str:
        status = exc.status
        message = status.message or str(exc)
        where = f"namespace '{self.namespace}'"
        if status.code == 403 and "quota" in message:
            return f"the cluster refused to {doing} in {where}: a ResourceQuota is exhausted ({message}); raise the quota or wait for other pods to end"
        if status.code == 403:
            return (
                f"the cluster refused to {doing} in {where} ({message}): the account of $KUBECONFIG needs the Role "
                "shown in the README ('Running on Kubernetes': pods, pods/log, pods/attach, secrets) bound to it there"
            )
        if status.code == 404:
            return f"the cluster has no {where} ({message}): create it, or set SHIPLINE_KUBE_NAMESPACE"
        return f"the cluster refused to {doing} in {where} ({status.code} {status.reason}: {message})"

    # --- objects -----------------------------------------------------------------------------

    def _secret(self, name: str, labels: dict[str, str], invocation: TaskInvocation, mark: str) -> Secret:
        data: dict[str, bytes] = {
            "driver": DRIVER.encode(),
            "mark": mark.encode(),
            "max-output": str(self.settings.step_output_max_bytes).encode(),
        }
        for step in invocation.steps:
            i = step.index
            env = {k: v for k, v in step.env.items() if k != "SHIPLINE_OUTPUT"}
            data[f"env-{i}"] = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
            data[f"script-{i}"] = step.script.encode()
            data[f"shell-{i}"] = step.shell.encode()
            relative = PurePosixPath(step.workdir).relative_to(WORKSPACE) if step.workdir.is_relative_to(WORKSPACE) else None
            data[f"workdir-{i}"] = str(relative or ".").encode()
        for where, value in invocation.secret_files.items():
            data[f"file-{PurePosixPath(where).name}"] = value.encode()
        return Secret(
            metadata=ObjectMeta(name=name, namespace=self.namespace, labels=labels),
            type="Opaque",
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        )

    def _pod(self, name: str, labels: dict[str, str], groups: list[_Group], invocation: TaskInvocation, attach: bool) -> Pod:
        mounts: list[dict[str, Any]] = [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "run", "mountPath": "/shipline/run"},
            {
                "name": "workspace",
                "mountPath": str(WORKSPACE),
                "subPath": f"{self.instance}/{invocation.run_id}",
            },
        ]
        spec_items = [{"key": k, "path": k} for k in ("driver", "mark", "max-output")]
        for step in invocation.steps:
            spec_items += [
                {"key": f"{part}-{step.index}", "path": f"{part}-{step.index}"} for part in ("env", "script", "shell", "workdir")
            ]
        volumes: list[dict[str, Any]] = [
            {"name": "spec", "secret": {"secretName": name, "defaultMode": 0o400, "items": spec_items}},
            {"name": "run", "emptyDir": {}},
            {"name": "workspace", "persistentVolumeClaim": {"claimName": self.settings.kube_workspace_claim}},
        ]
        if invocation.secret_files:
            mounts.append({"name": "secret-files", "mountPath": SECRET_FILES_DIR, "readOnly": True})
            names = [PurePosixPath(where).name for where in invocation.secret_files]
            items = [{"key": f"file-{n}", "path": n} for n in names]
            volumes.append({"name": "secret-files", "secret": {"secretName": name, "defaultMode": 0o400, "items": items}})
        containers: list[dict[str, Any]] = [
            {
                "name": group.name,
                "image": group.image,
                "command": ["bash", f"{SPEC_DIR}/driver", *[str(s.index) for s in group.steps]],
                "workingDir": str(WORKSPACE),
                "volumeMounts": mounts,
                "env": [{"name": "HOME", "value": HOME}],
            }
            for group in groups
        ]
        if attach:
            # The main container's driver waits for the executor's attach (see the module's doc).
            main = containers[-1]
            main["command"] = [*main["command"][:2], "--wait", *main["command"][2:]]
            main.update(stdin=True)
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": int(self.settings.kill_grace_seconds),
            "initContainers": containers[:-1],
            "containers": containers[-1:],
            "volumes": volumes,
        }
        if self.node_selector:
            spec["nodeSelector"] = self.node_selector
        # A node that stops answering ends the task when the cluster notices (the node
        # controller's grace, 40 s by default), not 5 minutes later (the default tolerations).
        spec["tolerations"] = [
            *self.tolerations,
            *({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0} for key in NODE_GONE_TAINTS),
        ]
        return cast(
            Pod,
            Pod.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "namespace": self.namespace,
                        "labels": labels,
                        "annotations": {ANNOTATION_OWNER: f"run {invocation.run_id}, task {invocation.task}"},
                    },
                    "spec": spec,
                }
            ),
        )


async def _patiently(call: Callable[[], Awaitable[T]], patience: float = 60.0) -> T | None:
    """`call()`, again every half second for up to `patience` seconds while the API server
    cannot be reached (it restarts?); None when the call failed (an ApiError: gone already,
    or refused) or the API server did not come back."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            return await call()
        except ApiError:
            return None
        except httpx2.TransportError:
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.5)


def _refused(invocation: TaskInvocation, listener: StepListener, why: str) -> TaskOutcome:
    """The pod could not even be made: the first step says why."""
    listener.step_started(0, None)
    listener.step_log(0, f"shipline: {why}")
    listener.step_finished(0, None, "failed")
    return TaskOutcome(False, f"step '{invocation.steps[0].name}': {why}")


def _unscheduled(attempt: _Attempt) -> str | None:
    """What the scheduler last said of a pod it could not place (a node selector nothing
    matches, too little CPU or memory free, a missing claim...), or None."""
    for condition in attempt.status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("message") or condition.get("reason") or "no node")
    return None


def _say_waiting(attempt: _Attempt, message: str) -> None:
    """Waiting for a node is right (a cluster autoscaler may add one), in silence it is not: the
    first step is shown as started, its log saying what the scheduler said (again when that changes)."""
    if message == attempt.waiting_said:
        return
    attempt.waiting_said = message
    if attempt.announced is None:
        attempt.announced = next((s.index for s in attempt.steps if s.index not in attempt.started), None)
        if attempt.announced is None:
            return
        attempt.listener.step_started(attempt.announced, None)
    attempt.listener.step_log(attempt.announced, f"shipline: waiting for a node: {message}")


def _never_scheduled(attempt: _Attempt) -> str:
    """Why the pod never got a node, or "" if it got one."""
    said = None if attempt.node else _unscheduled(attempt)
    return f"the pod was never scheduled: {said}" if said else ""


def _stop_current(attempt: _Attempt, line: str, status: StepEnd, index: int | None = None) -> None:
    """End the step that runs now (or the first that did not start) with `line` in its log."""
    if index is None:
        index = attempt.current
    if index is None:
        index = next((s.index for s in attempt.steps if s.index not in attempt.started), None)
    if index is None or index in attempt.ended:
        return
    if index not in attempt.started:
        attempt.started.add(index)
        if index != attempt.announced:
            attempt.listener.step_started(index, None)
    attempt.listener.step_log(index, line)
    attempt.ended[index] = -1
    attempt.current = None
    attempt.listener.step_finished(index, None, status)


def _outputs(attempt: _Attempt) -> tuple[str, ...]:
    ran = [s.index for s in attempt.steps if s.index in attempt.started]
    return tuple(attempt.outputs.get(i, "") for i in range(max(ran) + 1)) if ran else ()


async def _attach_output(ws: Any, attempt: _Attempt) -> AsyncIterator[bytes]:
    """The container's output from an attach's messages, until the stream ends (its Status)
    or the pod is gone or its node lost (its stream may stay open meanwhile)."""
    while not attempt.gone and not attempt.node_lost:
        try:
            message: bytes = await ws.receive_bytes(timeout=0.5)
        except TimeoutError:
            continue
        except Exception:
            return
        channel, data = message[0], message[1:]
        if channel in (STDOUT, STDERR) and data:
            yield data
        elif channel == STATUS:
            return


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bool]]:
    """Raw lines (cut at MAX_LINE) of a stream, as they come."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            for piece, cut in _pieces(line):
                yield piece, cut
        while len(pending) > MAX_LINE:
            yield pending[:MAX_LINE], True
            pending = pending[MAX_LINE:]
    if pending:
        yield pending, False


def _pieces(line: bytes) -> list[tuple[bytes, bool]]:
    if len(line) <= MAX_LINE:
        return [(line, False)]
    return [(line[i : i + MAX_LINE], i + MAX_LINE < len(line)) for i in range(0, len(line), MAX_LINE)]


def _groups(steps: list[StepSpec], default: str) -> list[_Group]:
    groups: list[_Group] = []
    for step in steps:
        image = step.image or default
        if groups and groups[-1].image == image:
            groups[-1].steps.append(step)
        else:
            groups.append(_Group(f"steps-{len(groups)}", image, [step]))
    return groups


def _pod_name(invocation: TaskInvocation) -> str:
    """`shipline-RUN-TASK-ATTEMPT-RANDOM`, a valid DNS label (at most 63)."""
    tail = f"-{invocation.attempt}-{secrets.token_hex(3)}"
    head = f"shipline-{invocation.run_id}-{invocation.task}"[: 63 - len(tail)].rstrip("-")
    return head + tail


def _pairs(text: str, variable: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{variable}: {item!r} is not `key=value` (e.g. kubernetes.io/hostname=node-1)")
        pairs[key] = value
    return pairs


_TOLERATION = re.compile(r"^(?P<key>[^=:]+)(=(?P<value>[^:]*))?(:(?P<effect>NoSchedule|PreferNoSchedule|NoExecute))?$")


def _tolerations(text: str) -> list[dict[str, str]]:
    tolerations = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _TOLERATION.match(item)
        if match is None:
            raise UsageError(
                f"SHIPLINE_KUBE_TOLERATIONS: {item!r} is not `key=value:Effect` or `key:Effect` "
                "(e.g. shipline.dev/real-node=true:NoSchedule)"
            )
        toleration = {"key": match["key"], "operator": "Equal" if match["value"] is not None else "Exists"}
        if match["value"] is not None:
            toleration["value"] = match["value"]
        if match["effect"]:
            toleration["effect"] = match["effect"]
        tolerations.append(toleration)
    return tolerations
