"""Settings: typed, documented, read in exactly one place.

`load_settings()` reads the environment and one optional TOML file
(`$SHIPLINE_CONFIG`, else `$SHIPLINE_HOME/config.toml`); everything else is
handed a `Settings` object by the edge that built it.  Environment variables
win over the file, the file wins over defaults.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from shipline.exceptions import UsageError

DEFAULT_STEP_ENV = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
"""What steps see of the engine's environment by default: nothing that holds a credential."""


def _default_parallel() -> int:
    return max(4, 2 * (os.cpu_count() or 1))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".shipline")
    """Where state lives: the SQLite database, run workspaces and logs ($SHIPLINE_HOME)."""

    database_url: str | None = None
    """SQLAlchemy URL of the store; None means SQLite at `home/shipline.db` ($SHIPLINE_DATABASE_URL)."""

    max_parallel: int = Field(default_factory=_default_parallel, ge=1)
    """How many tasks may run at once across all runs of one engine ($SHIPLINE_MAX_PARALLEL)."""

    cancel_poll_seconds: float = Field(default=0.5, gt=0)
    """How often a running engine checks the store for cancel requests made by other processes."""

    kill_grace_seconds: float = Field(default=5.0, ge=0)
    """After SIGTERM, how long a step's process group gets before SIGKILL."""

    step_server: bool = True
    """Whether the local executor runs the catalog's `shipline step ...` calls in forks of one warm
    process (its step server) rather than a new Python process each ($SHIPLINE_STEP_SERVER)."""

    step_env: list[str] = Field(default_factory=lambda: list(DEFAULT_STEP_ENV))
    """Variables of the engine's environment that steps see, as names or globs (`LC_*`); the rest,
    credentials included, stays out ($SHIPLINE_STEP_ENV, comma-separated)."""

    secret_key: SecretStr | None = None
    """The key that encrypts stored secrets ($SHIPLINE_SECRET_KEY); None means `home/secret.key`,
    made on first use.  Every process sharing a PostgreSQL store must have the same key."""

    # --- what pipelines talk to ---

    registry: str | None = None
    """The default OCI registry, `HOST:PORT[/PREFIX]` ($SHIPLINE_REGISTRY); steps see it as
    $SHIPLINE_REGISTRY.  A registry on 127.0.0.1 or localhost is spoken to over plain HTTP."""

    gitea_url: str | None = None
    """Base URL of the Gitea that hosts the repositories ($SHIPLINE_GITEA_URL); steps see it as $SHIPLINE_GITEA_URL."""

    gitea_token: SecretStr | None = None
    """API token for `gitea_url` ($SHIPLINE_GITEA_TOKEN): git over HTTP (clones, tags) and the API.
    Steps never see it unless a task asks for `${{ secret_files.git-credentials }}`."""

    github_token: SecretStr | None = None
    """Token for github.com ($SHIPLINE_GITHUB_TOKEN), used like `gitea_token`."""

    github_api_url: str = "https://api.github.com"
    """GitHub's REST API ($SHIPLINE_GITHUB_API_URL); `https://HOST/api/v3` for GitHub Enterprise Server."""

    forge_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    """How long one forge API call may take before it is retried or fails ($SHIPLINE_FORGE_TIMEOUT_SECONDS)."""

    public_url: str | None = None
    """The server's URL as forges and people reach it, e.g. `https://shipline.example` ($SHIPLINE_PUBLIC_URL):
    `repos add` points webhooks at PUBLIC_URL/hooks/FORGE and commit statuses link to PUBLIC_URL/#/runs/ID.
    None means http://HOST:PORT of `shipline serve`."""

    # --- the server (`shipline serve`) ---

    host: str = "127.0.0.1"
    """Address `shipline serve` listens on; 0.0.0.0 for every interface ($SHIPLINE_HOST)."""

    port: int = Field(default=8080, ge=1, le=65535)
    """TCP port `shipline serve` listens on ($SHIPLINE_PORT)."""

    advertise_url: str | None = None
    """Where the other servers on the same store reach this one, e.g. `http://10.0.3.7:8080`
    ($SHIPLINE_ADVERTISE_URL): asked for the step logs of a run this server ran, they pass the
    request on to it.  None means http://HOST:PORT, with the host's name for 0.0.0.0 / ::.
    Under Kubernetes, the pod's IP (`status.podIP` through the downward API)."""

    anonymous_read: bool = True
    """Whether the dashboard and read-only API work without a token; changes always need one ($SHIPLINE_ANONYMOUS_READ)."""

    log_format: Literal["json", "text"] = "json"
    """Server log lines: one JSON object per line, or plain text for a terminal ($SHIPLINE_LOG_FORMAT)."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe server log level written ($SHIPLINE_LOG_LEVEL)."""

    drain_seconds: float = Field(default=0.0, ge=0, le=86400)
    """When `shipline serve` is told to stop (SIGTERM, Ctrl-C), how long the runs it drives get to
    end by themselves before they are cancelled; it starts no new run meanwhile ($SHIPLINE_DRAIN_SECONDS).
    0 cancels them at once.  Under Kubernetes, keep `terminationGracePeriodSeconds` above it."""

    queue_poll_seconds: float = Field(default=0.2, gt=0, le=10)
    """How often the server's engine looks for newly queued runs."""

    poll_tick_seconds: float = Field(default=1.0, gt=0, le=60)
    """How often the poller and the cron scheduler check whether something is due."""

    webhook_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    """Larger webhook bodies are refused with 413 while they arrive, before anything is parsed
    ($SHIPLINE_WEBHOOK_MAX_BYTES)."""

    api_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Larger request bodies to the API are refused with 413 while they arrive ($SHIPLINE_API_MAX_BYTES)."""

    # --- what one step may produce ---

    step_log_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """A step's log keeps this much of its output; past it, one line says so and the rest is
    dropped (the step goes on) ($SHIPLINE_STEP_LOG_MAX_BYTES)."""

    step_output_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    """A step that writes more than this to $SHIPLINE_OUTPUT fails, saying so
    ($SHIPLINE_STEP_OUTPUT_MAX_BYTES).  Results are short values: put files in the workspace."""

    env_poll_seconds: float = Field(default=30.0, gt=0)
    """How often the server reads the branch head of each `sync: auto` environment; a webhook
    from the environment repository makes it look at once ($SHIPLINE_ENV_POLL_SECONDS)."""

    # --- where steps run ---

    executor: Literal["local", "kubernetes"] = "local"
    """`local`: steps are processes on the engine's host; `kubernetes`: each task is a Pod in
    `kube_namespace` of the cluster of $KUBECONFIG ($SHIPLINE_EXECUTOR)."""

    kube_namespace: str = "shipline-runs"
    """Where the `kubernetes` executor makes its pods and Secrets ($SHIPLINE_KUBE_NAMESPACE)."""

    runner_image: str | None = None
    """The image of steps that say no `image:` ($SHIPLINE_RUNNER_IMAGE); the `kubernetes`
    executor needs it (bash, coreutils)."""

    kube_workspace_claim: str = "shipline-workspace"
    """The PersistentVolumeClaim in `kube_namespace` that holds the runs' workspaces, one
    folder per run ($SHIPLINE_KUBE_WORKSPACE_CLAIM).  Tasks of a run may run at the same
    time on different nodes: the claim must be ReadWriteMany, or all pods on one node."""

    kube_node_selector: str = ""
    """`key=value,...` labels the run pods' node must have ($SHIPLINE_KUBE_NODE_SELECTOR)."""

    kube_tolerations: str = ""
    """`key=value:Effect,...` (or `key:Effect`) taints the run pods tolerate ($SHIPLINE_KUBE_TOLERATIONS)."""

    pipelines_root: Path | None = None
    """The folder on the server that pipeline files registered over HTTP must be in
    ($SHIPLINE_PIPELINES_ROOT; default $SHIPLINE_HOME/pipelines): the API takes paths
    relative to it, so a remote operator cannot make the server read other files."""

    @field_validator("public_url", "advertise_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^https?://[^/@\s]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http(s) URL without credentials, e.g. https://shipline.example")
        return value

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'shipline.db'}"

    @property
    def server_url(self) -> str:
        """Where forges and people reach the server: `public_url`, else http://HOST:PORT (no trailing slash)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def peer_url(self) -> str:
        """Where the other servers reach this one: `advertise_url`, else http://HOST:PORT (the host's name for 0.0.0.0)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def workspaces(self) -> Path:
        return self.home / "workspaces"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def step_homes(self) -> Path:
        """Each run's steps get `step_homes/RUN` as $HOME, not the engine's own."""
        return self.home / "step-homes"

    @property
    def pipelines(self) -> Path:
        """Where pipeline files registered through the API live (`pipelines_root`)."""
        return self.pipelines_root or self.home / "pipelines"

    @property
    def secret_key_file(self) -> Path:
        return self.home / "secret.key"


_ENV = {
    "SHIPLINE_HOME": "home",
    "SHIPLINE_DATABASE_URL": "database_url",
    "SHIPLINE_MAX_PARALLEL": "max_parallel",
    "SHIPLINE_SECRET_KEY": "secret_key",
    "SHIPLINE_STEP_ENV": "step_env",
    "SHIPLINE_STEP_SERVER": "step_server",
    "SHIPLINE_REGISTRY": "registry",
    "SHIPLINE_GITEA_URL": "gitea_url",
    "SHIPLINE_GITEA_TOKEN": "gitea_token",
    "SHIPLINE_GITHUB_TOKEN": "github_token",
    "SHIPLINE_GITHUB_API_URL": "github_api_url",
    "SHIPLINE_FORGE_TIMEOUT_SECONDS": "forge_timeout_seconds",
    "SHIPLINE_PUBLIC_URL": "public_url",
    "SHIPLINE_ADVERTISE_URL": "advertise_url",
    "SHIPLINE_HOST": "host",
    "SHIPLINE_PORT": "port",
    "SHIPLINE_ANONYMOUS_READ": "anonymous_read",
    "SHIPLINE_LOG_FORMAT": "log_format",
    "SHIPLINE_LOG_LEVEL": "log_level",
    "SHIPLINE_ENV_POLL_SECONDS": "env_poll_seconds",
    "SHIPLINE_DRAIN_SECONDS": "drain_seconds",
    "SHIPLINE_PIPELINES_ROOT": "pipelines_root",
    "SHIPLINE_EXECUTOR": "executor",
    "SHIPLINE_KUBE_NAMESPACE": "kube_namespace",
    "SHIPLINE_RUNNER_IMAGE": "runner_image",
    "SHIPLINE_KUBE_WORKSPACE_CLAIM": "kube_workspace_claim",
    "SHIPLINE_KUBE_NODE_SELECTOR": "kube_node_selector",
    "SHIPLINE_KUBE_TOLERATIONS": "kube_tolerations",
    "SHIPLINE_WEBHOOK_MAX_BYTES": "webhook_max_bytes",
    "SHIPLINE_API_MAX_BYTES": "api_max_bytes",
    "SHIPLINE_STEP_LOG_MAX_BYTES": "step_log_max_bytes",
    "SHIPLINE_STEP_OUTPUT_MAX_BYTES": "step_output_max_bytes",
}


def _check_private(path: Path, values: Mapping[str, Any]) -> None:
    """A config file holding a credential must be its owner's alone (as ssh insists for a key)."""
    mode = path.stat().st_mode & 0o777
    if not mode & 0o077:
        return
    held = [name for name, field in Settings.model_fields.items() if name in values and "SecretStr" in str(field.annotation)]
    if re.search(r"://[^/@]*:[^/@]*@", str(values.get("database_url", ""))):
        held.append("database_url (with a password)")
    if held:
        variables = ", ".join(f"${var}" for var, field in _ENV.items() if any(h.startswith(field) for h in held))
        raise UsageError(
            f"{path} holds {', '.join(held)} but others may read it (mode {mode:o}): "
            f"`chmod 600 {path}`, or give {'it' if len(held) == 1 else 'them'} in {variables} instead"
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the config file and the environment."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    home = Path(env["SHIPLINE_HOME"]).expanduser() if env.get("SHIPLINE_HOME") else None
    config = env.get("SHIPLINE_CONFIG") or (str(home / "config.toml") if home else None)
    if config is None:
        config = str(Path.home() / ".shipline" / "config.toml")
    config_path = Path(config).expanduser()
    if config_path.is_file():
        try:
            values.update(tomllib.loads(config_path.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{config_path}: not valid TOML: {exc}") from exc
        _check_private(config_path, values)
    elif env.get("SHIPLINE_CONFIG"):
        raise UsageError(f"SHIPLINE_CONFIG names {config_path}, which does not exist")
    for var, field in _ENV.items():
        if env.get(var):
            values[field] = env[var]
    if isinstance(values.get("step_env"), str):
        values["step_env"] = [name.strip() for name in values["step_env"].split(",") if name.strip()]
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        source = f"{config_path} or SHIPLINE_* variables" if config_path.is_file() else "SHIPLINE_* variables"
        raise UsageError(f"invalid settings (from {source}):\n" + "\n".join(lines)) from exc
    return settings.model_copy(update={"home": settings.home.expanduser().absolute()})
