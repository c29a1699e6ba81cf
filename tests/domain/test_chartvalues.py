"""Splicing a release's image into a chart's values.yaml: every other byte stays."""

from __future__ import annotations

import pytest

from shipline.domain.chartvalues import set_scalars

VALUES = """\
# The service's values.
image:
  repository: example.invalid/app    # the release sets it
  tag: "latest"
  pullPolicy: IfNotPresent
sidecar: {image: {repository: 'side', tag: v1}}
"""


def test_each_scalar_is_replaced_in_its_own_style_and_nothing_else_moves() -> None:
    edited = set_scalars(
        VALUES,
        {"image.repository": "127.0.0.1:5000/app", "image.tag": "1.2.0-pr-7.1", "sidecar.image.tag": "2.0.0"},
    )
    assert edited == VALUES.replace("example.invalid/app", "127.0.0.1:5000/app").replace('"latest"', '"1.2.0-pr-7.1"').replace(
        "tag: v1", "tag: 2.0.0"
    )


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("1.4.0", "1.4.0"),
        ("registry.example:5000/team/app", "registry.example:5000/team/app"),
        ("42", "'42'"),  # an int to Helm, unquoted
        ("1.5", "'1.5'"),  # a float
        ("yes", "'yes'"),  # a bool in YAML 1.1, which Helm reads
        ("0o17", "'0o17'"),  # an int in YAML 1.2
        ("a b # c", "'a b # c'"),  # a comment, unquoted
        ("it's", "'it''s'"),
        ("-x", "'-x'"),
        ("trailing:", "'trailing:'"),
    ],
)
def test_a_plain_scalar_is_written_plain_only_where_it_stays_a_string(value: str, written: str) -> None:
    assert set_scalars("tag: old  # kept\n", {"tag": value}) == f"tag: {written}  # kept\n"


def test_a_null_written_as_a_word_is_replaced_like_any_scalar() -> None:
    assert set_scalars("tag: ~\nother: null  # c\n", {"tag": "1.0.0", "other": "x"}) == "tag: 1.0.0\nother: x  # c\n"


def test_quoted_scalars_keep_their_quotes() -> None:
    assert set_scalars("a: 'x'\nb: \"y\"\n", {"a": "it's", "b": 'say "hi"'}) == "a: 'it''s'\nb: \"say \\\"hi\\\"\"\n"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("image: {}\n", "image.tag"),  # missing: the caller creates it
        ("replicas: 2\n", "replicas.tag"),  # through a scalar: the caller says why not
        ("image:\n  - tag: x\n", "image.tag"),  # under a list
        ("image:\n  tag:\n  x: 1\n", "image.tag"),  # empty: no characters to replace
        ("image:\n  tag: \n", "image.tag"),
        ("image: {tag: }\n", "image.tag"),
        ("image: {tag}\n", "image.tag"),
        ("tag: |\n  x\n", "tag"),  # a block scalar
        ("base: &b x\ntag: *b\n", "tag"),  # an alias: the edit would change its anchor
        ("tag: &t x\n", "tag"),  # an anchor
        ("tag: !!str x\n", "tag"),  # a tag
        ("tag: a\ntag: b\n", "tag"),  # twice
        ("tag: 'one\n  two'\n", "tag"),  # over two lines
        ("- a\n", "tag"),  # not a mapping
        ("a: [\n", "a"),  # not YAML
        ("a: 1\n---\nb: 2\n", "a"),  # two documents
    ],
)
def test_what_is_not_a_one_line_scalar_of_its_own_is_left_to_the_caller(text: str, key: str) -> None:
    assert set_scalars(text, {key: "1.0.0"}) is None


def test_two_keys_that_reach_one_scalar_through_an_alias_are_left_to_the_caller() -> None:
    text = "app: &shared {tag: x}\nworker: *shared\n"
    assert set_scalars(text, {"app.tag": "1.0.0"}) == "app: &shared {tag: 1.0.0}\nworker: *shared\n"
    assert set_scalars(text, {"app.tag": "1.0.0", "worker.tag": "2.0.0"}) is None


def test_positions_count_characters_after_a_byte_order_mark_and_beyond_ascii() -> None:
    text = "\ufeffname: \u00e9t\u00e9 \U0001f600\nimage:\n  tag: old  # \u00fc\n"
    assert set_scalars(text, {"image.tag": "1.0.0"}) == text.replace("tag: old", "tag: 1.0.0")


def test_a_file_nested_past_the_parser_s_depth_is_left_to_the_caller() -> None:
    assert set_scalars("a: " + "[" * 5000 + "]" * 5000 + "\n", {"a": "x"}) is None
