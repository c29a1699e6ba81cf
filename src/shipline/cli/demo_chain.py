"""Following `shipline demo`'s push down the chain, one progress line per stage, and what to do next.

It only watches: the server's API (runs, environment history) and Gitea's
pull requests.  Each stage records when it was seen, counted from the push;
"push -> verified in dev" is the latency the README quotes.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx

from shipline.exceptions import ShiplineError

if TYPE_CHECKING:
    from shipline.cli.demo import Demo
    from shipline.integrations.forges.giteaadmin import GiteaAdmin, Promotion

T = TypeVar("T")
TICK = 0.25
PROMOTION_MODULE = "shipline.gitops.promoting"
PR_WAIT_SECONDS = 120.0
"""How long a release may go without its pull request before the demo says the chain stopped there."""
DONE = ("succeeded", "failed", "cancelled")


class Stopped(Exception):
    """The chain went no further: why, in a sentence for people."""


def say(line: str) -> None:
    click.echo(line, err=True)


class Follower:
    def __init__(self, demo: Demo, admin: GiteaAdmin, timeout: float) -> None:
        self.demo = demo
        self.admin = admin
        self.timeout = timeout
        self.api = httpx.Client(base_url=demo.server_url, timeout=30)
        self.start = time.monotonic()
        self.stages: list[dict[str, Any]] = []

    def close(self) -> None:
        self.api.close()

    def mark(self, stage: str, line: str, **data: Any) -> None:
        seconds = round(time.monotonic() - self.start, 1)
        say(f"[{seconds:6.1f}s] {line}" if stage != "environments" else f"[ before ] {line}")
        self.stages.append({"stage": stage, "seconds": seconds, "message": line, **data})

    def until(self, what: str, probe: Callable[[], T | None], timeout: float | None = None) -> T:
        """probe() until it gives something; Stopped naming `what` when the time is up."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            try:
                found = probe()
            except (httpx.HTTPError, ShiplineError) as exc:
                say(f"          (retrying: {exc})")
                found = None
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise Stopped(f"{what}: nothing within {limit:.0f}s")
            time.sleep(TICK)

    # --- the server's view ---------------------------------------------------------------

    def run_of(self, sha: str) -> dict[str, Any] | None:
        answer = self.api.get("/api/v1/runs", params={"pipeline": self.demo.service, "limit": 20})
        answer.raise_for_status()
        for run in answer.json()["runs"]:
            if run["params"].get("revision") == sha:
                return run  # type: ignore[no-any-return]
        return None

    def run(self, run_id: int) -> dict[str, Any]:
        answer = self.api.get(f"/api/v1/runs/{run_id}")
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def history(self, env: str) -> list[dict[str, Any]]:
        answer = self.api.get(f"/api/v1/environments/{env}/history", params={"limit": 20})
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    def environments(self) -> dict[str, dict[str, Any]]:
        answer = self.api.get("/api/v1/environments")
        answer.raise_for_status()
        return {e["environment"]["name"]: e for e in answer.json()}

    # --- Gitea's view --------------------------------------------------------------------

    def promotion(self, env: str, version: str) -> Promotion | None:
        title = f"Promote {self.demo.service} to {version}"
        for found in self.admin.pull_requests(self.demo.org, self.demo.env_repo(env)):
            if found.pull.title == title:
                return found
        return None

    # --- the stages ------------------------------------------------------------------------

    def baseline(self) -> None:
        """Each environment synced at its branch's head before the push, so what follows is the push's doing."""
        from shipline.cli.demo import ENVIRONMENTS

        def synced() -> dict[str, str] | None:
            envs = self.environments()
            heads: dict[str, str] = {}
            for name in ENVIRONMENTS:
                status = envs[name]["status"]
                if not status["commit"]:
                    return None
                if status["applied_commit"] != status["commit"]:
                    latest = self.history(name)[:1]
                    if latest and latest[0]["commit"] == status["commit"] and latest[0]["outcome"] != "verified":
                        raise Stopped(f"{name} did not sync its first commit: {latest[0]['message']}")
                    return None
                heads[name] = status["commit"][:12]
            return heads

        heads = self.until("the environments' first sync", synced)
        self.mark("environments", "environments synced: " + ", ".join(f"{n} at {c}" for n, c in heads.items()))

    def service_run(self, sha: str) -> dict[str, Any]:
        service = self.demo.service
        found = self.until(
            f"a run of {service} for {sha[:12]} (did the webhook reach the server?)", lambda: self.run_of(sha), 120
        )
        url = f"{self.demo.server_url}/#/runs/{found['id']}"
        self.mark("service-run", f"{service}: run #{found['id']} started ({url})", run=found["id"], url=url)

        def ended() -> dict[str, Any] | None:
            record = self.run(int(found["id"]))
            return record if record["status"] in DONE else None

        record = self.until(f"run #{found['id']} of {service} to end", ended)
        if record["status"] != "succeeded":
            failed = [t for t in record["tasks"] if t["status"] == "failed"]
            where = f" at task {failed[0]['name']}: {failed[0]['message']}" if failed else f": {record['message']}"
            raise Stopped(f"{service}: run #{record['id']} {record['status']}{where}")
        results = record.get("results") or {}
        version = results.get("version", "")
        if not version:
            raise Stopped(f"{service}: run #{record['id']} succeeded but released no version (see its results)")
        image = results.get("image", "")
        digest = results.get("image-digest", "")
        chart = results.get("chart", "")
        self.mark(
            "released",
            f"{service}: {version} released: image {image}{'@' + digest[:19] + '...' if digest else ''}, chart {chart or '-'}",
            version=version,
            image=image,
            image_digest=digest,
            chart=chart,
            tag=results.get("tag", ""),
            run=record["id"],
        )
        return record

    def pull_request(self, env: str, version: str, wait: float) -> Promotion:
        found = self.until(
            f"the pull request promoting {self.demo.service} {version} to {env}", lambda: self.promotion(env, version), wait
        )
        self.mark(
            f"pr-{env}", f"{env}: pull request #{found.pull.number} {found.pull.title!r}: {found.pull.url}", pr=found.pull.url
        )
        return found

    def dry_run(self, env: str, pr: Promotion) -> str:
        """The end of the dry run on a pull request's head (commit status `shipline/env-NAME`)."""
        context = f"shipline/env-{env}"

        def ended() -> str | None:
            state = self.admin.commit_status(self.demo.org, self.demo.env_repo(env), pr.pull.head_sha, context)
            return state if state in ("success", "failure", "error") else None

        state = self.until(f"the dry run ({context}) on pull request #{pr.pull.number}", ended, PR_WAIT_SECONDS)
        return "passed" if state == "success" else f"ended {state} (see the pull request's comment)"

    def merged(self, env: str, version: str) -> Promotion:
        def merged() -> Promotion | None:
            found = self.promotion(env, version)
            if found is not None and found.pull.state == "closed" and not found.pull.merged:
                raise Stopped(f"{env}: pull request #{found.pull.number} was closed without a merge: {found.pull.url}")
            return found if found is not None and found.pull.merged else None

        found = self.until(f"the pull request to {env} to be merged (its checks?)", merged)
        self.mark(f"merged-{env}", f"{env}: pull request #{found.pull.number} merged", pr=found.pull.url)
        return found

    def verified(self, env: str, merge_sha: str, since: float) -> dict[str, Any]:
        def entry() -> dict[str, Any] | None:
            for item in self.history(env):
                if merge_sha and item["commit"] != merge_sha:
                    continue
                if item["outcome"] == "verified":
                    return item
                raise Stopped(f"{env}: the sync of {item['commit'][:12]} ended {item['outcome']}: {item['message']}")
            return None

        found = self.until(f"{env} to sync {merge_sha[:12] or 'the merge'}", entry)
        self.mark(
            f"verified-{env}",
            f"{env}: synced and verified at {found['commit'][:12]} (run #{found['run_id']})",
            run=found["run_id"],
            commit=found["commit"],
        )
        return found


def follow(
    demo: Demo,
    admin: GiteaAdmin,
    message: str,
    *,
    wait: bool,
    timeout: float,
    before_push: Callable[[], float | None] = lambda: None,
) -> dict[str, Any]:
    """Push the prepared commit and follow it as far as it goes; the record of what was seen.

    `before_push` runs once the environments are synced (the demo waits there for Go's build cache)."""
    from shipline.cli.demo import ENVIRONMENTS, git

    follower = Follower(demo, admin, timeout)
    result: dict[str, Any] = {
        "org": demo.org,
        "service": demo.service,
        "dashboard": demo.server_url + "/",
        "gitea": demo.repo_url(""),
        "repositories": {name: demo.repo_url(name) for name in (demo.service, *(demo.env_repo(e) for e in ENVIRONMENTS))},
        "stages": follower.stages,
        "latency_seconds": None,
        "stopped_at": None,
        "failed": False,
        "pull_requests": {},
    }
    try:
        if wait:
            follower.baseline()
        result["go_cache_filled_seconds"] = before_push()
        follower.start = time.monotonic()
        git(demo, demo.checkout, "push", "-q", "origin", "HEAD:main")
        sha = git(demo, demo.checkout, "rev-parse", "HEAD")
        result["commit"] = sha
        follower.mark("pushed", f"{demo.service}: pushed {sha[:12]} to main ({message!r})", commit=sha)
        if not wait:
            result["stopped_at"] = "not followed (--no-wait)"
            return result
        record = follower.service_run(sha)
        version = record["results"]["version"]
        result["version"] = version
        if importlib.util.find_spec(PROMOTION_MODULE) is None:
            result["stopped_at"] = "promotion"
            result["note"] = (
                "this shipline has no promotion yet: nothing opens pull requests on the environment repositories, so the "
                "chain stops after the release (the environments stay at their first commit)"
            )
            say(f"          the chain stops here: {result['note']}")
            return result
        merged_at = 0.0
        for index, env in enumerate(ENVIRONMENTS):
            # The first pull request follows the release at once; later ones follow a verified sync.
            pr = follower.pull_request(env, version, PR_WAIT_SECONDS)
            result["pull_requests"][env] = pr.pull.url
            if env == "prod" or index + 1 > len(ENVIRONMENTS):
                checked = follower.dry_run(env, pr)
                follower.mark(
                    "waiting-prod",
                    f"{env}: dry run {checked}; the pull request waits for a person (merge: manual): {pr.pull.url}",
                    pr=pr.pull.url,
                    dry_run=checked,
                )
                result["stopped_at"] = "prod pull request, waiting for a person"
                break
            done = follower.merged(env, version)
            merged_at = time.monotonic()
            follower.verified(env, done.merge_sha, merged_at)
            if env == "dev":
                result["latency_seconds"] = follower.stages[-1]["seconds"]
                say(f"          push -> verified in dev: {result['latency_seconds']:.1f}s")
    except Stopped as exc:
        result["stopped_at"] = str(exc)
        result["failed"] = True
        say(f"          the chain stopped: {exc}")
    finally:
        follower.close()
    return result


def summary(demo: Demo, result: dict[str, Any]) -> str:
    """What to open and what to try next, for people."""
    user, password = demo.gitea_login
    lines = ["", "shipline demo: " + _outcome(result), "", "Open:"]
    lines.append(f"  dashboard       {demo.server_url}/   (runs; Environments: {demo.server_url}/#/environments)")
    lines.append(f"  Gitea           {demo.gitea_url}/{demo.org}   (user {user}, password {password})")
    for env, url in result.get("pull_requests", {}).items():
        lines.append(f"  PR to {env:<9} {url}")
    lines += [
        "",
        'Try next (in a shell with `eval "$(shipline testbed env)"`):',
    ]
    prod = result.get("pull_requests", {}).get("prod")
    if prod:
        lines.append(f"  merge the prod pull request in Gitea ({prod}): prod syncs and verifies at once")
    lines += [
        f"  a change whose tests fail: cd {demo.checkout} && sed -i 's/hello, /bye, /' src/main.go \\",
        "      && git commit -qam 'fix: greet differently' && git push -q origin HEAD:main",
        "      -> the service's run fails at build-test; nothing is released or promoted",
        "  shipline env promotions       # each version proposed to each environment, and where it got to",
        "  shipline env history dev; shipline env rollback dev   (back to the verified commit before)",
        "  shipline demo                 # again: another change down the chain",
        "  shipline demo --reset         # start over; shipline demo --stop ends the server",
    ]
    if result.get("latency_seconds") is not None:
        lines.insert(
            2, f"push -> verified in dev: {result['latency_seconds']:.1f}s; whole command: {result['wall_seconds']:.0f}s"
        )
    else:
        lines.insert(2, f"whole command: {result['wall_seconds']:.0f}s")
    return "\n".join(lines)


def _outcome(result: dict[str, Any]) -> str:
    if result["failed"]:
        return f"stopped: {result['stopped_at']}"
    if result.get("note"):
        return f"{result['service']} {result.get('version', '')} released; {result['note']}"
    if not result.get("version"):
        return f"{result['service']}: {result['stopped_at']}; watch it on the dashboard"
    return f"{result['service']} {result['version']}: {result['stopped_at']}"
