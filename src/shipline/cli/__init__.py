"""The `shipline` command: the outermost edge, where settings, store and executor are chosen."""

from shipline.cli.main import main

__all__ = ["main"]
