"""Results: the `name=value` lines a step writes to `$SHIPLINE_OUTPUT`.

The format is GitHub Actions': `name=value` on one line, or

    name<<DELIM
    a value
    over several lines
    DELIM
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

MAX_RESULT_BYTES = 64 * 1024
"""Results are small named values; files belong in the workspace."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class OutputError(ValueError):
    pass


def parse_output(text: str, shown: Callable[[str], str] = lambda text: text) -> dict[str, str]:
    """Every result in the file; a later line with the same name wins.

    `shown` is how text of the file is shown in an error (the engine masks
    secrets); it is applied to whole lines, before they are cut short, so a
    cut can never leave part of a secret unmasked.
    """
    results: dict[str, str] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i].removesuffix("\r")
        i += 1
        if not line.strip():
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if heredoc != -1 and (eq == -1 or heredoc < eq):
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            if not delimiter:
                raise OutputError(f"line {i}: '{shown(line)[:80]}' needs a delimiter after '<<'")
            body: list[str] = []
            while i < len(lines) and lines[i].removesuffix("\r") != delimiter:
                body.append(lines[i].removesuffix("\r"))
                i += 1
            if i >= len(lines):
                raise OutputError(f"line {i}: result '{shown(name)[:80]}' has no closing '{shown(delimiter)[:80]}' line")
            i += 1
            value = "\n".join(body)
        elif eq != -1:
            name, value = line[:eq], line[eq + 1 :]
        else:
            raise OutputError(f"line {i}: '{shown(line)[:80]}' is not `name=value` or `name<<DELIMITER`")
        if not _NAME.match(name):
            raise OutputError(f"line {i}: '{shown(name)[:80]}' is not a result name (letters, digits, _ and -)")
        if len(value.encode()) > MAX_RESULT_BYTES:
            raise OutputError(f"result '{shown(name)[:80]}' is {len(value.encode())} bytes; results are limited to 64 KiB")
        results[name] = value
    return results


def format_results(results: Mapping[str, str]) -> str:
    """The lines `parse_output` reads back as `results`: `name=value`, or, for a value over several
    lines, a heredoc whose delimiter is no line of the value (so no value can end itself early).
    A carriage return that ends a line of a value is not kept (`parse_output` reads CRLF files)."""
    lines = []
    for name, value in results.items():
        if not _NAME.match(name):
            raise OutputError(f"'{name[:80]}' is not a result name (letters, digits, _ and -)")
        if "\n" not in value:
            lines.append(f"{name}={value}\n")
            continue
        taken = {line.removesuffix("\r") for line in value.split("\n")}
        delimiter, n = "SHIPLINE_EOF", 0
        while delimiter in taken:
            n += 1
            delimiter = f"SHIPLINE_EOF_{n}"
        lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(lines)
