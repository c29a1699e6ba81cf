"""Where the testbed keeps things: the build cache and the running state.

    $SHIPLINE_TESTBED_CACHE  (default ~/.cache/shipline/testbed)   built once, kept
        bin/<part>-<version>/    executables
        stamps/<part>-<version>.json
        go/mod, go/build         the go command's module and build caches
        src/                     wrapper modules and copied module sources
    $SHIPLINE_TESTBED_HOME   (default ~/.shipline/testbed)          one running testbed
        state.json               ports and credentials of the running testbed
        env                      `export ...` lines (what `shipline testbed env` prints)
        kubeconfig
        pki/                     CA, certificates, service-account key
        run/<service>.pid, logs/<service>.log
        data/<service>/          etcd, registry storage

Pure: the environment is passed in, nothing is created here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shipline.testbed.parts import GoPart


@dataclass(frozen=True)
class Layout:
    cache: Path
    home: Path

    # -- cache -----------------------------------------------------------
    @property
    def stamps(self) -> Path:
        return self.cache / "stamps"

    def stamp(self, key: str) -> Path:
        return self.stamps / f"{key}.json"

    def bin_dir(self, part: GoPart) -> Path:
        return self.cache / "bin" / part.key

    def program(self, part: GoPart, program: str) -> Path:
        return self.bin_dir(part) / program

    @property
    def gomodcache(self) -> Path:
        return self.cache / "go" / "mod"

    @property
    def gocache(self) -> Path:
        return self.cache / "go" / "build"

    @property
    def sources(self) -> Path:
        return self.cache / "src"

    # -- state -----------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def env_file(self) -> Path:
        return self.home / "env"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.home / "pki"

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def pidfile(self, service: str) -> Path:
        return self.run / f"{service}.pid"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def data(self, service: str) -> Path:
        return self.home / "data" / service


def layout_from_env(environ: Mapping[str, str], user_home: Path) -> Layout:
    """The layout that $SHIPLINE_TESTBED_CACHE and $SHIPLINE_TESTBED_HOME choose."""
    cache = environ.get("SHIPLINE_TESTBED_CACHE") or str(user_home / ".cache" / "shipline" / "testbed")
    home = environ.get("SHIPLINE_TESTBED_HOME") or str(user_home / ".shipline" / "testbed")
    return Layout(cache=Path(cache).expanduser().absolute(), home=Path(home).expanduser().absolute())
