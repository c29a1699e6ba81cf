"""The `shipline` command: the outermost edge, where settings, store and executor are chosen."""

from __future__ import annotations

import sys


def main() -> None:
    """The console script.

    `shipline step ...` runs inside catalog steps, several times per run: it loads
    only the step commands, not the server, store and engine (about 0.4 s saved
    per call, which is most of shipline's own share of a service pipeline).
    """
    if sys.argv[1:2] == ["step"]:
        from shipline.cli.steps import step

        step.main(args=sys.argv[2:], prog_name="shipline step")
        return
    from shipline.cli.main import main as root

    root()


__all__ = ["main"]
