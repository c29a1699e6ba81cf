"""The server's log lines carry what the code said with `extra=`, in either format: an operator reading
`environment sync queued` learns which environment, which commit and which run."""

from __future__ import annotations

import json
import logging

from shipline.server.observing import JsonFormatter, TextFormatter


def record(**extra: object) -> logging.LogRecord:
    made = logging.LogRecord("shipline.gitops", logging.INFO, __file__, 1, "environment sync queued", None, None)
    made.__dict__.update(extra)
    return made


def test_a_text_line_ends_with_the_fields_as_key_value() -> None:
    line = TextFormatter().format(record(environment="dev", commit="0123abc", run=12))
    assert line.endswith(" INFO    shipline.gitops: environment sync queued environment=dev commit=0123abc run=12")


def test_a_text_field_with_spaces_or_quotes_is_quoted_so_the_line_still_splits() -> None:
    line = TextFormatter().format(record(error='git said "no"\nfatal', empty=""))
    assert line.endswith(r'error="git said \"no\"\nfatal" empty=""')


def test_a_json_line_has_the_same_fields() -> None:
    out = json.loads(JsonFormatter().format(record(environment="dev", run=12)))
    assert (out["message"], out["environment"], out["run"], out["level"]) == ("environment sync queued", "dev", 12, "info")
