"""`shipline testbed build`: install the Debian packages and build the Go tools, once.

Each part ends with a stamp file named by its pinned version; a part whose stamp
and programs exist is skipped without running anything, so a second `build` costs
a few stat() calls.  Every command's output goes to a log in the cache; a failure
raises ToolError naming the command, the tail of its output and the log.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shipline.exceptions import ToolError, UsageError
from shipline.testbed import images
from shipline.testbed.gomod import tools_go, wrapper_gomod
from shipline.testbed.layout import Layout
from shipline.testbed.parts import (
    ALL_PART_NAMES,
    DEBIAN_PACKAGES,
    DEBIAN_PROGRAMS,
    GO_PARTS,
    IMAGES_PART,
    KUBERNETES,
    GoPart,
    staging_version,
)

Report = Callable[[str], None]
"""Receives one line of progress for a person to read."""

GO_FLAGS = ("-trimpath", "-ldflags")


@dataclass(frozen=True)
class PartResult:
    name: str
    version: str
    cached: bool
    seconds: float
    """Time of the build that made the stamp (for a cached part: the original build)."""
    peak_rss_mib: float
    """Largest single process (usually the Go linker) while building this part."""
    peak_used_mib: float
    """Machine memory in use at the worst moment, above what was in use when the part started."""
    peak_tree_mib: float = 0.0
    """All of the build's processes together, at the worst moment (sampled twice a second)."""


def debian_key() -> str:
    # Keyed by the package list: adding a package redoes the apt step, nothing else.
    import hashlib

    digest = hashlib.sha256(" ".join(sorted(DEBIAN_PACKAGES)).encode()).hexdigest()[:12]
    return f"debian-{digest}"


def missing_programs(layout: Layout, part_name: str) -> list[Path]:
    if part_name == "debian":
        return [Path(p) for p in DEBIAN_PROGRAMS.values() if not Path(p).exists()]
    if part_name == IMAGES_PART:
        return [path for path in (images.archive(layout, i) for i in images.IMAGES) if not path.is_file()]
    part = next(p for p in GO_PARTS if p.name == part_name)
    return [layout.program(part, prog) for prog in part.programs if not layout.program(part, prog).exists()]


def stamp_key(part_name: str) -> str:
    if part_name == "debian":
        return debian_key()
    if part_name == IMAGES_PART:
        return images.images_key()
    return next(p for p in GO_PARTS if p.name == part_name).key


def is_built(layout: Layout, part_name: str) -> bool:
    return layout.stamp(stamp_key(part_name)).is_file() and not missing_programs(layout, part_name)


def build(layout: Layout, only: Sequence[str] = (), report: Report = print, force: bool = False) -> list[PartResult]:
    """Build every part (or those named in `only`) that is not built yet, in order."""
    unknown = [name for name in only if name not in ALL_PART_NAMES]
    if unknown:
        raise UsageError(f"unknown testbed part(s): {', '.join(unknown)}; the parts are: {', '.join(ALL_PART_NAMES)}")
    wanted = [name for name in ALL_PART_NAMES if not only or name in only]
    results = []
    total_start = time.monotonic()
    for index, name in enumerate(wanted, 1):
        prefix = f"[{index}/{len(wanted)}] {name}"
        stamp = layout.stamp(stamp_key(name))
        if not force and is_built(layout, name):
            recorded = _read_stamp(stamp)
            results.append(
                PartResult(
                    name=name,
                    version=str(recorded.get("version", "")),
                    cached=True,
                    seconds=_num(recorded, "seconds"),
                    peak_rss_mib=_num(recorded, "peak_rss_mib"),
                    peak_used_mib=_num(recorded, "peak_used_mib"),
                    peak_tree_mib=_num(recorded, "peak_tree_mib"),
                )
            )
            report(f"{prefix}: cached ({stamp.name}, built in {_num(recorded, 'seconds'):.0f}s)")
            continue
        report(f"{prefix}: building ...")
        with _MemoryWatch() as watch:
            start = time.monotonic()
            if name == "debian":
                version = _install_debian(layout, lambda line: report(f"{prefix}: {line}"))  # noqa: B023 (called within this iteration)
            elif name == IMAGES_PART:
                images.build_images(layout, lambda line: report(f"{prefix}: {line}"))  # noqa: B023 (called within this iteration)
                version = images.images_key()
            else:
                part = next(p for p in GO_PARTS if p.name == name)
                _build_go_part(layout, part, lambda line: report(f"{prefix}: {line}"))  # noqa: B023 (called within this iteration)
                version = part.version
            seconds = time.monotonic() - start
        missing = missing_programs(layout, name)
        if missing:
            raise ToolError(
                f"{name}: built, but {', '.join(map(str, missing))} is missing; see the logs under {layout.cache / 'logs'}"
            )
        result = PartResult(name, version, False, seconds, watch.peak_rss_mib, watch.peak_used_mib, watch.peak_tree_mib)
        _write_stamp(stamp, result)
        results.append(result)
        report(f"{prefix}: done in {seconds:.1f}s (its processes peaked at {result.peak_tree_mib:.0f} MiB together)")
    built = [r for r in results if not r.cached]
    if built:
        report(
            f"built {len(built)} part(s) in {time.monotonic() - total_start:.1f}s; "
            f"peak memory of the build's processes {max(r.peak_tree_mib for r in built):.0f} MiB"
        )
    else:
        report("everything is built; nothing to do")
    return results


def _num(record: dict[str, object], key: str) -> float:
    value = record.get(key, 0.0)
    return float(value) if isinstance(value, (int, float, str)) else 0.0


def _read_stamp(stamp: Path) -> dict[str, object]:
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamp(stamp: Path, result: PartResult) -> None:
    stamp.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "part": result.name,
        "version": result.version,
        "seconds": round(result.seconds, 1),
        "peak_rss_mib": round(result.peak_rss_mib),
        "peak_used_mib": round(result.peak_used_mib),
        "peak_tree_mib": round(result.peak_tree_mib),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stamp.write_text(json.dumps(record, indent=2) + "\n")


def read_build_records(layout: Layout) -> list[dict[str, object]]:
    """What each stamp recorded about its build (for `status` and the README)."""
    return [_read_stamp(layout.stamp(stamp_key(name))) | {"part": name} for name in ALL_PART_NAMES if is_built(layout, name)]


# -- Debian --------------------------------------------------------------------


def _install_debian(layout: Layout, report: Report) -> str:
    packages = list(DEBIAN_PACKAGES)
    if os.geteuid() != 0:
        missing = _missing_packages(packages)
        if missing:
            raise ToolError(
                f"Debian packages missing: {' '.join(missing)}; installing them needs root: "
                f"run `sudo apt-get install -y {' '.join(missing)}` (or `sudo shipline testbed build --only debian`)"
            )
        return "installed"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    missing = _missing_packages(packages)
    if not missing:
        report("all packages already installed")
        return "installed"
    report(f"apt-get update, then install {' '.join(missing)}")
    log = layout.cache / "logs" / "debian.log"
    run_logged(["apt-get", "update"], log=log, env=env)
    run_logged(["apt-get", "install", "-y", "--no-install-recommends", *missing], log=log, env=env)
    return "installed"


def _missing_packages(packages: Iterable[str]) -> list[str]:
    missing = []
    for package in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Status}", package], capture_output=True, text=True, check=False
        )
        if proc.stdout.strip() != "installed":
            missing.append(package)
    return missing


# -- Go ------------------------------------------------------------------------


def go_env(layout: Layout, part: GoPart) -> dict[str, str]:
    go = shutil.which("go")
    if go is None:
        raise ToolError("the go command is not on PATH; install Go >= 1.24 (https://go.dev/doc/install) and run again")
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(layout.gomodcache),
        GOCACHE=str(layout.gocache),
        GOFLAGS="-mod=mod",
        CGO_ENABLED="1" if part.cgo else "0",
    )
    env.update(dict(part.env))
    return env


def _build_go_part(layout: Layout, part: GoPart, report: Report) -> None:
    env = go_env(layout, part)
    log = layout.cache / "logs" / f"{part.key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    out = layout.bin_dir(part)
    out.mkdir(parents=True, exist_ok=True)
    if part.module == KUBERNETES.module:
        _build_kubernetes(layout, part, env, log, out, report)
    elif part.packages == (".",):
        _build_module_source(layout, part, env, log, out, report)
    else:
        report(f"go install {' '.join(p + '@' + part.version for p in part.packages)}")
        targets = [f"{p}@{part.version}" for p in part.packages]
        run_with_heartbeat(
            ["go", "install", "-v", "-trimpath", "-ldflags", "-s -w", *targets],
            log=log,
            env={**env, "GOBIN": str(out), "GOFLAGS": ""},
            cwd=layout.cache,
            heartbeat=report,
        )


def _module_info(module: str, version: str, env: Mapping[str, str], log: Path) -> dict[str, str]:
    proc = run_logged(["go", "mod", "download", "-json", f"{module}@{version}"], log=log, env=env, cwd=Path("/"))
    info = json.loads(proc)
    return {k: str(v) for k, v in info.items()}


def _build_kubernetes(layout: Layout, part: GoPart, env: dict[str, str], log: Path, out: Path, report: Report) -> None:
    report(f"go mod download k8s.io/kubernetes@{part.version}")
    info = _module_info(part.module, part.version, env, log)
    wrapper = layout.sources / part.key
    wrapper.mkdir(parents=True, exist_ok=True)
    gomod = wrapper_gomod(f"shipline.local/testbed/{part.name}", part.version, Path(info["GoMod"]).read_text())
    marker = wrapper / "go.mod.wrapper"
    # go.mod gains require lines from tidy; the marker keeps what we wrote, to notice a new pin.
    if not (wrapper / "go.mod").exists() or not marker.exists() or marker.read_text() != gomod:
        (wrapper / "go.mod").write_text(gomod)
        marker.write_text(gomod)
        (wrapper / "go.sum").unlink(missing_ok=True)
    (wrapper / "tools.go").write_text(tools_go(part.packages))
    report(f"go mod tidy in the wrapper module (staging modules at {staging_version(part.version)})")
    run_logged(["go", "mod", "tidy"], log=log, env=env, cwd=wrapper)
    minor = part.version.lstrip("v").split(".")[1]
    stamp_flags = " ".join(
        f"-X {pkg}.{name}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in (("gitVersion", part.version), ("gitMajor", "1"), ("gitMinor", minor), ("gitTreeState", "clean"))
    )
    report(f"go build {', '.join(part.programs)} (the long one: see {log})")
    run_with_heartbeat(
        ["go", "build", "-v", "-trimpath", "-ldflags", f"-s -w {stamp_flags}", "-o", f"{out}/", *part.packages],
        log=log,
        env=env,
        cwd=wrapper,
        heartbeat=report,
    )
    # `go build -o dir/` names go.etcd.io/etcd/server/v3 after its last non-version element.
    if (out / "server").exists():
        (out / "server").replace(out / "etcd")


def _build_module_source(layout: Layout, part: GoPart, env: dict[str, str], log: Path, out: Path, report: Report) -> None:
    report(f"go mod download {part.module}@{part.version}")
    info = _module_info(part.module, part.version, env, log)
    source = layout.sources / part.key
    if not (source / "go.mod").exists():
        report(f"copy the module source to {source}")
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(info["Dir"], source)
        for root, dirs, files in os.walk(source):
            for name in dirs + files:
                path = os.path.join(root, name)
                os.chmod(path, os.stat(path).st_mode | 0o200)
    tags = ",".join(part.tags)
    version = part.version.lstrip("v")
    report(f"go build -tags '{' '.join(part.tags)}' ({log})")
    run_with_heartbeat(
        [
            "go",
            "build",
            "-v",
            "-trimpath",
            "-tags",
            tags,
            "-ldflags",
            f"-s -w -X main.Version={version}",
            "-o",
            str(out / part.programs[0]),
            ".",
        ],
        log=log,
        env=env,
        cwd=source,
        heartbeat=report,
    )


# -- running commands ----------------------------------------------------------


def run_with_heartbeat(
    cmd: Sequence[str], *, log: Path, env: Mapping[str, str], cwd: Path, heartbeat: Report, every: float = 30.0
) -> None:
    """Run a long command with its output going to `log`; every `every` seconds, say how far it got.

    With `go build -v` each output line is a package built, so the count is progress.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        start_size = out.tell()
        try:
            proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise ToolError(f"`{cmd[0]}` is not installed or not on PATH (running: {' '.join(cmd)})") from exc
        started = time.monotonic()
        while True:
            try:
                returncode = proc.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:
                with log.open("rb") as reader:
                    reader.seek(start_size)
                    lines = reader.read().count(b"\n")
                heartbeat(f"... {time.monotonic() - started:.0f}s, {lines} packages built")
    if returncode != 0:
        with log.open("rb") as reader:
            reader.seek(start_size)
            tail = "\n".join(reader.read().decode(errors="replace").strip().splitlines()[-15:])
        raise ToolError(f"`{' '.join(cmd)}` failed with exit code {returncode}:\n{tail}\n(full output: {log})") from (
            subprocess.CalledProcessError(returncode, list(cmd))
        )


def run_logged(cmd: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command to the end, append its output to `log`, return its stdout.

    Raises ToolError with the command and the tail of its stderr.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.run(
                list(cmd),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ToolError(f"`{cmd[0]}` is not installed or not on PATH (running: {' '.join(cmd)})") from exc
        out.write(proc.stdout)
        out.write(proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ToolError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}\n(full output: {log})") from (
            subprocess.CalledProcessError(proc.returncode, list(cmd), proc.stdout, proc.stderr)
        )
    return proc.stdout


class _MemoryWatch:
    """Samples the machine's available memory while a part builds."""

    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._baseline = _available_mib()
        self._lowest = self._baseline
        self._rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        self.peak_rss_mib = 0.0
        self.peak_used_mib = 0.0
        self.peak_tree_mib = 0.0

    def __enter__(self) -> _MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # ru_maxrss of children is a running maximum: it only says something if it grew.
        self.peak_rss_mib = rss / 1024 if rss > self._rss_before else 0.0
        self.peak_used_mib = max(0.0, self._baseline - self._lowest)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._lowest = min(self._lowest, _available_mib())
            self.peak_tree_mib = max(self.peak_tree_mib, _descendants_rss_mib(os.getpid()))


def _descendants_rss_mib(root: int) -> float:
    """Resident memory of every process below root, added up (what a build costs at that moment)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * page_kib
    total = 0
    for pid, kib in rss.items():
        ancestor = parents.get(pid, 0)
        while ancestor not in (0, 1, root):
            ancestor = parents.get(ancestor, 0)
        if ancestor == root:
            total += kib
    return total / 1024


def _available_mib() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
