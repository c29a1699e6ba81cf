"""Preview names and the preview comment: pure functions."""

from __future__ import annotations

import re

import pytest

from shipline.domain.previews import (
    PreviewState,
    PreviewView,
    comment_marker,
    preview_comment,
    preview_label,
    preview_namespace,
    preview_release,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def test_a_short_name_reads_as_is() -> None:
    assert preview_namespace("hello", 7) == "preview-hello-pr-7"
    assert preview_label("hello", 7) == "hello-pr-7"


@pytest.mark.parametrize(
    "service",
    [
        "a" * 100,
        "Shop_Frontend.v2",
        "-leading-and-trailing-",
        "x" * 49 + "-" + "y" * 20,
        "日本語",
        "",
    ],
)
@pytest.mark.parametrize("number", [1, 42, 99999999])
def test_every_name_is_a_dns_label(service: str, number: int) -> None:
    namespace = preview_namespace(service, number)
    assert DNS_LABEL.match(namespace), namespace
    assert len(namespace) <= 63
    assert namespace.endswith(f"-pr-{number}")
    assert DNS_LABEL.match(preview_release(service)) and len(preview_release(service)) <= 53


def test_long_names_that_share_a_head_stay_apart() -> None:
    one, two = "payments-" + "a" * 60 + "-east", "payments-" + "a" * 60 + "-west"
    assert preview_namespace(one, 3) != preview_namespace(two, 3)
    assert preview_namespace(one, 3) == preview_namespace(one, 3)  # the same every time
    assert len(preview_namespace(one, 3)) == 63


def test_a_pull_request_number_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        preview_namespace("hello", 0)


def test_the_comment_says_namespace_version_status_and_run() -> None:
    text = preview_comment(
        PreviewView(
            service="hello",
            pr_number=3,
            namespace="preview-hello-pr-3",
            state=PreviewState.READY,
            version="0.1.1-pr-3.2",
            image="127.0.0.1:5000/hello:0.1.1-pr-3.2",
            run_link="http://ship/#/runs/12",
            deployed=True,
        )
    )
    assert text.startswith(comment_marker("hello"))
    assert "**Status: ready**" in text
    assert "`preview-hello-pr-3`" in text and "`0.1.1-pr-3.2`" in text and "http://ship/#/runs/12" in text


def test_a_failed_run_keeps_the_last_good_preview_and_says_so() -> None:
    text = preview_comment(
        PreviewView(
            service="hello",
            pr_number=3,
            namespace="preview-hello-pr-3",
            state=PreviewState.READY,
            version="0.1.1-pr-3.1",
            failed_run_link="http://ship/#/runs/13",
            deployed=True,
        )
    )
    assert "Latest run failed: http://ship/#/runs/13 (the preview above stays as it was)" in text


def test_a_reason_is_one_line_and_backticks_cannot_break_out() -> None:
    text = preview_comment(
        PreviewView(service="he`llo", pr_number=1, namespace="preview-he-llo-pr-1", state=PreviewState.FAILED, reason="a\n\nb")
    )
    assert "**Status: failed**: a b" in text
    assert "`he'llo`" in text
