"""`shipline demo`: the whole delivery chain on the testbed, from one command.

It builds and starts the testbed when needed, makes a service repository and
three environment repositories in Gitea, declares the environments, starts a
server in the background that Gitea's webhooks reach, pushes a commit to the
service, and follows what happens: the service's run and its artifacts, the
pull request to dev (merged by itself), dev synced and verified, the same for
staging, and the pull request to prod waiting for a person.

Everything the demo owns lives under $SHIPLINE_HOME/demo/ (the server's pid,
port and log, the service's checkout, the declaration); the environments and
the repository registration are ordinary ones in the store, so `shipline env
history dev` and the dashboard show them.  Following the chain is in
`cli/demo_chain.py`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shipline.cli.wiring import Wiring
from shipline.exceptions import ToolError, UsageError

if TYPE_CHECKING:
    from shipline.integrations.forges.giteaadmin import GiteaAdmin

ENVIRONMENTS = ("dev", "staging", "prod")
TESTBED_PARTS = ("debian", "helm", "kwok", "kubernetes", "gitea")
"""What the demo needs of the testbed (not the real node: the demo's pods run on kwok's nodes)."""
PLACEHOLDER = "0.0.0"
"""The version the environment repositories start at, until the service's first release is promoted."""
SERVER_READY_SECONDS = 60.0


def say(line: str) -> None:
    """Progress goes to stderr, so `--json` keeps stdout for the answer."""
    click.echo(line, err=True)


@dataclass
class Demo:
    """Names and places of one demo: the Gitea organisation, the service, the server."""

    home: Path
    """$SHIPLINE_HOME/demo."""
    org: str
    service: str
    env: dict[str, str] = field(default_factory=dict)
    """The environment every `shipline` process of the demo runs with (the testbed's settings added)."""
    gitea_url: str = ""
    gitea_token: str = ""
    gitea_login: tuple[str, str] = ("", "")
    registry: str = ""
    kubeconfig: str = ""
    server_url: str = ""

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def checkout(self) -> Path:
        return self.home / self.service

    def namespace(self, env: str) -> str:
        return f"{self.org}-{env}"

    def env_repo(self, env: str) -> str:
        return f"env-{env}"

    def repo_url(self, name: str) -> str:
        return f"{self.gitea_url}/{self.org}/{name}"


# --- the testbed ------------------------------------------------------------------------


def ensure_testbed(report: Any = say) -> dict[str, Any]:
    """Build what is not built, start what does not run; the testbed's settings and login."""
    from shipline.testbed import running
    from shipline.testbed.building import build, is_built
    from shipline.testbed.layout import layout_from_env
    from shipline.testbed.parts import GO_PARTS
    from shipline.testbed.ports import port_base_from_env

    layout = layout_from_env(os.environ, Path.home())
    missing = [p for p in TESTBED_PARTS if not is_built(layout, p)]
    if missing:
        report(f"testbed: building {', '.join(missing)} (once; a cold build takes 10 to 17 minutes on 2 cores)")
        started = time.monotonic()
        build(layout, only=TESTBED_PARTS, report=lambda line: report(f"testbed: {line}"))
        report(f"testbed: built in {time.monotonic() - started:.0f}s")
    services = running.status(layout)
    if not services or any(s.built and not s.healthy for s in services):
        report("testbed: starting (registry, Gitea, Kubernetes)")
        running.up(layout, os.environ, port_base_from_env(os.environ), report=lambda line: report(f"testbed: {line}"))
    else:
        report("testbed: up")
    state = running.load_state(layout)
    if state is None or not state.gitea_token:
        raise ToolError(f"the testbed at {layout.home} has no Gitea token after `up`: see `shipline testbed status`")
    values = running.env_values(layout, state)
    bins = [str(layout.bin_dir(p)) for p in GO_PARTS]
    values["PATH"] = os.pathsep.join([*bins, os.environ.get("PATH", "")])
    return {"env": values, "login": (state.gitea_admin, state.gitea_password)}


# --- the server in the background ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_our_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"shipline" in b" ".join(cmdline) and b"serve" in cmdline


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def running_server(demo: Demo) -> dict[str, Any] | None:
    """The demo's server from its state file, if that process is alive and answers."""
    try:
        state: dict[str, Any] = json.loads(demo.state_file.read_text())
    except (OSError, ValueError):
        return None
    pid = int(state.get("pid", 0))
    if pid and _is_our_server(pid) and _answers(str(state.get("url", ""))):
        return state
    return None


def stop_server(demo: Demo, report: Any = say) -> bool:
    """Stop the demo's server (and the steps it runs); whether one was running."""
    try:
        state = json.loads(demo.state_file.read_text())
    except (OSError, ValueError):
        return False
    pid = int(state.get("pid", 0))
    stopped = False
    if pid and _is_our_server(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _is_our_server(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_our_server(pid):
            os.killpg(pid, signal.SIGKILL)  # it leads a session of its own: its steps go with it
        report(f"server: stopped (pid {pid})")
        stopped = True
    demo.state_file.unlink(missing_ok=True)
    return stopped


def start_server(demo: Demo, port: int) -> dict[str, Any]:
    demo.home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    env = {**demo.env, "SHIPLINE_PORT": str(port), "SHIPLINE_PUBLIC_URL": url}
    with demo.log_file.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipline", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command; `shipline demo --stop` ends it
        )
    state = {"pid": proc.pid, "port": port, "url": url, "log": str(demo.log_file), "org": demo.org, "service": demo.service}
    demo.state_file.write_text(json.dumps(state, indent=2) + "\n")
    deadline = time.monotonic() + SERVER_READY_SECONDS
    while not _answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = demo.log_file.read_text(errors="replace").splitlines()[-15:]
            if proc.poll() is None:
                proc.terminate()
            demo.state_file.unlink(missing_ok=True)
            raise ToolError(
                f"the demo's server did not become ready at {url}; its log ({demo.log_file}) ends:\n" + "\n".join(tail)
            )
        time.sleep(0.1)
    return state


# --- git ------------------------------------------------------------------------------------


def git(demo: Demo, cwd: Path, *args: str) -> str:
    """git with the Gitea token in a header from the environment: never in a URL or on the command line."""
    env = {
        **os.environ,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: token {demo.gitea_token}",
        "GIT_TERMINAL_PROMPT": "0",
    }
    proc = subprocess.run(
        ["git", "-c", "user.name=shipline demo", "-c", "user.email=demo@shipline.invalid", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"git {' '.join(args[:2])} in {cwd} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def shipline(demo: Demo, *args: str, env: dict[str, str] | None = None) -> str:
    """Another `shipline` command of the demo, with the demo's settings; its output, or ToolError with its error."""
    proc = subprocess.run(
        [sys.executable, "-m", "shipline", *args],
        env=env or demo.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"`shipline {' '.join(args)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


# --- what goes into the repositories ---------------------------------------------------------


def manifests(demo: Demo, env: str, version: str) -> str:
    image = f"{demo.registry}/{demo.service}:{version}"
    name = demo.service
    return f"""\
# {name} in {env}.  Promotion pull requests change the image's tag below
# ({PLACEHOLDER} until the first release of {name} is promoted here).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: {name}
          image: {image}
          ports:
            - name: http
              containerPort: 8080
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  selector:
    app: {name}
  ports:
    - name: http
      port: 80
      targetPort: http
"""


def declaration(demo: Demo) -> str:
    """dev -> staging -> prod: the first two merge their promotions themselves, prod waits for a person."""
    items = []
    for index, env in enumerate(ENVIRONMENTS):
        item: dict[str, Any] = {
            "name": env,
            "repo": demo.repo_url(demo.env_repo(env)) + ".git",
            "branch": "main",
            "namespace": demo.namespace(env),
            "kubeconfig": demo.kubeconfig,
            "sync": "auto",
            "self-heal": True,
            "verify-timeout": "2m",
            "services": [demo.service],
            "merge": "manual" if env == "prod" else "auto",
        }
        if index + 1 < len(ENVIRONMENTS):
            item["next"] = ENVIRONMENTS[index + 1]
        items.append(item)
    return "# Written by `shipline demo`.\n" + json.dumps({"environments": items}, indent=2) + "\n"


def seed_env_repo(demo: Demo, env: str, work: Path) -> None:
    """The first commit of an environment repository: the service at the placeholder version."""
    if work.exists():
        shutil.rmtree(work)
    (work / "manifests").mkdir(parents=True)
    (work / "manifests" / f"{demo.service}.yaml").write_text(manifests(demo, env, PLACEHOLDER))
    (work / "README.md").write_text(
        f"# {env}\n\nThe desired state of environment `{env}` (namespace `{demo.namespace(env)}`), applied by shipline.\n"
        f"Promotion pull requests change `{demo.service}`'s image tag in `manifests/{demo.service}.yaml`.\n"
    )
    git(demo, work, "init", "-q", "-b", "main")
    git(demo, work, "add", "-A")
    git(demo, work, "commit", "-q", "-m", f"{env}: {demo.service} at {PLACEHOLDER}")
    git(demo, work, "push", "-q", demo.repo_url(demo.env_repo(env)) + ".git", "main")
    shutil.rmtree(work)


def prepare_service(demo: Demo, created: bool) -> str:
    """A checkout of the service with a change to push: the scaffold itself the first time; its message."""
    from shipline.cli.init import scaffold

    work = demo.checkout
    url = demo.repo_url(demo.service) + ".git"
    if work.exists():
        shutil.rmtree(work)
    if created:
        scaffold(demo.service, "go", work)
        git(demo, work, "init", "-q", "-b", "main")
        git(demo, work, "remote", "add", "origin", url)
        message = f"feat: {demo.service}, scaffolded by shipline init service"
    else:
        work.parent.mkdir(parents=True, exist_ok=True)
        git(demo, work.parent, "clone", "-q", url, work.name)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        with (work / "CHANGES.md").open("a") as changes:
            changes.write(f"- {stamp}: another run of `shipline demo`\n")
        message = f"feat: demo change of {stamp}"
    # So that `git push` in the checkout just works for the "try next" steps: the header, not the URL.
    git(demo, work, "config", "http.extraHeader", f"Authorization: token {demo.gitea_token}")
    git(demo, work, "config", "user.name", "shipline demo")
    git(demo, work, "config", "user.email", "demo@shipline.invalid")
    git(demo, work, "add", "-A")
    git(demo, work, "commit", "-q", "-m", message)
    return message


# --- Go's build cache -------------------------------------------------------------------------


def warm_go_cache(demo: Demo) -> subprocess.Popen[bytes] | None:
    """The first time: the service's own build and test commands, in a scratch copy, filling the Go build
    cache its runs share (`GOCACHE`), while the rest is set up.  None when the cache is there already.

    Go compiles the standard library into an empty cache first (about a minute here), which is the
    service's build environment, not shipline; a CI runner keeps that cache warm too."""
    from ruamel.yaml import YAML

    from shipline.cli.init import scaffold

    cache = Path(demo.env["GOCACHE"])
    if cache.is_dir() and any(cache.iterdir()):
        return None
    scratch = demo.home / ".warm"
    if scratch.exists():
        shutil.rmtree(scratch)
    scaffold(demo.service, "go", scratch / "src")
    spec = YAML(typ="safe").load((scratch / "src" / ".shipline" / "pipeline.yaml").read_text())
    commands = [str(spec["with"][k]) for k in ("build", "test") if spec.get("with", {}).get(k)]
    (scratch / "home").mkdir()
    # As the steps see it: their PATH and GOCACHE, a HOME of their own, nothing else.
    env = {"PATH": demo.env["PATH"], "GOCACHE": str(cache), "HOME": str(scratch / "home"), "LANG": "C.UTF-8"}
    with (demo.home / "go-warm.log").open("wb") as log:
        return subprocess.Popen(
            ["bash", "-eo", "pipefail", "-c", " && ".join(f"( {c} )" for c in commands)],
            cwd=scratch / "src",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_go_cache(demo: Demo, proc: subprocess.Popen[bytes] | None, started: float) -> float | None:
    """Wait for the warm-up (before the push, so the service's first run does not compile beside it)."""
    if proc is None:
        return None
    if proc.poll() is None:
        say("go: filling the Go build cache the service's runs share (the first time only) ...")
    code = proc.wait()
    seconds = round(time.monotonic() - started, 1)
    shutil.rmtree(demo.home / ".warm", ignore_errors=True)
    if code != 0:
        say(f"go: warming the build cache failed (exit {code}; see {demo.home / 'go-warm.log'}): the first run builds cold")
    else:
        say(f"go: build cache filled in {seconds:.0f}s")
    return seconds


# --- setting it all up ------------------------------------------------------------------------


def reset(demo: Demo, wiring: Wiring, admin: GiteaAdmin) -> None:
    """Delete what an earlier demo left: its server, repositories, namespaces, registrations."""
    from shipline.store.environments import EnvironmentStore
    from shipline.store.repositories import ServerStore

    stop_server(demo)
    for name in (demo.service, *(demo.env_repo(e) for e in ENVIRONMENTS)):
        if admin.delete_repo(demo.org, name):
            say(f"reset: deleted repository {demo.org}/{name}")
    kubectl = shutil.which("kubectl", path=demo.env["PATH"]) or "kubectl"
    namespaces = [demo.namespace(e) for e in ENVIRONMENTS]
    proc = subprocess.run(
        [kubectl, "--kubeconfig", demo.kubeconfig, "delete", "namespace", *namespaces, "--ignore-not-found", "--timeout=180s"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"reset: deleting namespaces {', '.join(namespaces)} failed: {proc.stderr.strip()[-500:]}")
    say(f"reset: namespaces {', '.join(namespaces)} gone")
    state = ServerStore(wiring.store, wiring.engine.secrets.keyring)
    if any(r.name == demo.service for r in state.list_repositories()):
        state.remove_repository(demo.service)
    envs = EnvironmentStore(wiring.store)
    known = {s.name for s in envs.all()}
    for env in ENVIRONMENTS:
        if env in known:
            envs.remove(env)
    if demo.checkout.exists():
        shutil.rmtree(demo.checkout)


def set_up_repositories(demo: Demo, admin: GiteaAdmin) -> bool:
    """The organisation and four repositories; the environment ones seeded when new.  Whether the service's is new."""
    if admin.ensure_org(demo.org):
        say(f"gitea: organisation {demo.org} created")
    service = admin.ensure_repo(demo.org, demo.service, f"the {demo.service} service (shipline demo)")
    say(f"gitea: {demo.org}/{demo.service} {'created' if service.created else 'reused'}")
    for env in ENVIRONMENTS:
        repo = admin.ensure_repo(demo.org, demo.env_repo(env), f"environment {env} (shipline demo)")
        if repo.created or not _has_branch(demo, demo.env_repo(env)):
            seed_env_repo(demo, env, demo.home / f".seed-{env}")
            say(f"gitea: {demo.org}/{repo.name} created: manifests/{demo.service}.yaml at {PLACEHOLDER}")
        else:
            say(f"gitea: {demo.org}/{repo.name} reused")
    return service.created or not _has_branch(demo, demo.service)


def _has_branch(demo: Demo, repo: str) -> bool:
    return bool(git(demo, demo.home, "ls-remote", "--heads", demo.repo_url(repo) + ".git", "main"))


def declare_environments(demo: Demo, wiring: Wiring, admin: GiteaAdmin, public_url: str) -> None:
    """`shipline env apply`, a webhook secret per environment and its hook on Gitea."""
    from shipline.integrations.forges import connect, repo_ref
    from shipline.settings import load_settings

    path = demo.home / "environments.yaml"
    path.write_text(declaration(demo))
    shipline(demo, "env", "apply", str(path))
    settings = load_settings(demo.env)
    forge = connect(settings, "gitea")
    try:
        for env in ENVIRONMENTS:
            secret = secrets.token_urlsafe(24)
            wiring.engine.secrets.set(f"env-{env}-webhook", secret)
            admin.delete_hooks(demo.org, demo.env_repo(env), "/hooks/gitea")  # an earlier demo's, with another secret
            forge.ensure_webhook(repo_ref(demo.repo_url(demo.env_repo(env))), url=f"{public_url}/hooks/gitea", secret=secret)
    finally:
        forge.close()
    say(
        "environments: "
        + ", ".join(f"{e} -> namespace {demo.namespace(e)}" for e in ENVIRONMENTS)
        + " (dev and staging merge promotions themselves, prod waits for a person); webhooks registered"
    )


def register_service(demo: Demo, wiring: Wiring, admin: GiteaAdmin, public_url: str) -> None:
    """`shipline repos add` (pipelines as code, webhook registered); again each time, so the hook has this server's URL."""
    from shipline.store.repositories import ServerStore

    state = ServerStore(wiring.store, wiring.engine.secrets.keyring)
    if any(r.name == demo.service for r in state.list_repositories()):
        state.remove_repository(demo.service)
    admin.delete_hooks(demo.org, demo.service, "/hooks/gitea")  # an earlier demo's, with another secret
    env = {**demo.env, "SHIPLINE_PUBLIC_URL": public_url}
    out = shipline(demo, "repos", "add", demo.service, demo.repo_url(demo.service), "--forge", "gitea", "--json", env=env)
    hook = json.loads(out).get("webhook") or {}
    say(f"repos: {demo.service} registered (its own .shipline/pipeline.yaml); webhook #{hook.get('id', '?')} -> {public_url}")


def demo_env(demo: Demo, testbed: dict[str, Any], settings_home: Path) -> dict[str, str]:
    from shipline.settings import DEFAULT_STEP_ENV

    env = {**os.environ, **testbed["env"]}
    env["SHIPLINE_HOME"] = str(settings_home)
    env["SHIPLINE_LOG_FORMAT"] = "text"
    # Promotions merge and webhooks poke the environments at once; polling is the fallback.
    env.setdefault("SHIPLINE_ENV_POLL_SECONDS", "10")
    # One Go build cache for every run of the demo's service: the first build is cold, the next ones are not.
    env["GOCACHE"] = str(demo.home / "go-build")
    env["SHIPLINE_STEP_ENV"] = ",".join([*DEFAULT_STEP_ENV, "GOCACHE"])
    return env


# --- the command ------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Progress on stderr; what was made and measured as JSON on stdout.")
@click.option("--no-wait", is_flag=True, help="Set everything up and push, but do not follow the chain.")
@click.option("--reset", "do_reset", is_flag=True, help="Delete the demo's repositories, namespaces and registrations first.")
@click.option("--stop", is_flag=True, help="Stop the demo's server and exit.")
@click.option(
    "--org", default="demo", show_default=True, help="Gitea organisation; the namespaces are ORG-dev, ORG-staging, ORG-prod."
)
@click.option("--service", default="hello", show_default=True, help="The service's name (its repository and image).")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to wait for each stage of the chain.")
@click.pass_obj
def demo(
    wiring: Wiring, as_json: bool, no_wait: bool, do_reset: bool, stop: bool, org: str, service: str, timeout: float
) -> None:
    """The whole chain on the testbed: service run, artifacts, pull requests, dev, staging, prod.

    \b
    One command, run again at will:
      1. builds and starts the testbed if needed (a cold build takes about 17 min)
      2. makes ORG/SERVICE (scaffolded by `shipline init service`) and ORG/env-dev,
         env-staging, env-prod in its Gitea, and declares the environments
         (dev and staging merge their promotions themselves; prod waits for you)
      3. starts `shipline serve` in the background (`shipline demo --stop` ends it)
         and registers the repositories' webhooks with it
      4. pushes a commit to SERVICE and follows it: the service's run, its release,
         the pull request to dev, merged, dev verified, staging, the PR to prod
      5. prints what to open (dashboard, pull requests, Gitea login) and what to try

    \b
    Its files (server pid, port and log, the service's checkout) are in
    $SHIPLINE_HOME/demo/.  Exit status: 0 when the chain got as far as this
    shipline goes, 1 when a stage failed (the message says which), 2 for bad input.
    """
    from shipline.domain.pipelines import NAME_PATTERN

    if not re.match(NAME_PATTERN, service) or not re.match(r"^[a-z0-9][a-z0-9-]{0,30}$", org):
        raise UsageError("--org and --service: lower-case letters, digits and '-' (they name repositories and namespaces)")
    settings = wiring.settings
    d = Demo(home=settings.home / "demo", org=org, service=service)
    if stop:
        if not stop_server(d):
            say("server: none was running")
        return
    started = time.monotonic()
    d.home.mkdir(parents=True, exist_ok=True)
    testbed = ensure_testbed()
    d.env = demo_env(d, testbed, settings.home)
    d.gitea_url = d.env["SHIPLINE_GITEA_URL"].rstrip("/")
    d.gitea_token = d.env["SHIPLINE_GITEA_TOKEN"]
    d.gitea_login = testbed["login"]
    d.registry = d.env["SHIPLINE_REGISTRY"]
    d.kubeconfig = d.env["KUBECONFIG"]

    from shipline.cli.demo_chain import follow, summary
    from shipline.integrations.forges.giteaadmin import GiteaAdmin

    warming, warm_started = warm_go_cache(d), time.monotonic()
    with GiteaAdmin(d.gitea_url, d.gitea_token) as admin:
        if do_reset:
            reset(d, wiring, admin)
        server = running_server(d)
        if server is not None and (server.get("org"), server.get("service")) != (org, service):
            stop_server(d)  # it serves another demo's names: start one for these
            server = None
        public_url = server["url"] if server else f"http://127.0.0.1:{free_port()}"
        service_is_new = set_up_repositories(d, admin)
        declare_environments(d, wiring, admin, public_url)
        register_service(d, wiring, admin, public_url)
        if server is None:
            server = start_server(d, int(public_url.rsplit(":", 1)[1]))
            say(f"server: started at {server['url']} (pid {server['pid']}, log {server['log']})")
        else:
            say(f"server: reused at {server['url']} (pid {server['pid']})")
        d.server_url = server["url"]
        message = prepare_service(d, service_is_new)
        try:
            result = follow(
                d, admin, message, wait=not no_wait, timeout=timeout, before_push=lambda: wait_go_cache(d, warming, warm_started)
            )
        finally:
            if warming is not None and warming.poll() is None:
                warming.terminate()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["server"] = server
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(summary(d, result))
    if result.get("failed"):
        sys.exit(1)
