"""Registry addresses, references, labels, PURLs and refusal hints: the names every artifact task shares."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from packageurl import PackageURL

from shipline.domain.artifacts import (
    Registry,
    insecure_registries_conf,
    is_loopback,
    loopback_registries_in,
    oci_labels,
    oci_purl,
    parse_registry,
    refusal_hint,
    split_image,
)
from shipline.exceptions import UsageError

DIGEST = "sha256:" + "0" * 63 + "1"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.8.9.1", True),
        ("localhost:5000", True),
        ("LOCALHOST", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("registry.example:5000", False),
        ("10.0.0.1:5000", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_means_plain_http(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if host != "::1":  # a bare IPv6 address is not HOST:PORT; registries write [::1]
        assert parse_registry(host).plain_http is loopback


def test_a_registry_with_a_prefix_places_images_charts_and_artifacts_under_it() -> None:
    registry = parse_registry("registry.example:5000/team/")
    assert registry == Registry("registry.example:5000", "team")
    assert registry.scheme == "https"
    assert registry.reference("hello", "1.2.3-pr-7.2") == "registry.example:5000/team/hello:1.2.3-pr-7.2"
    assert registry.charts() == "oci://registry.example:5000/team/charts"
    assert str(registry) == "registry.example:5000/team"
    assert parse_registry("127.0.0.1:5000").charts() == "oci://127.0.0.1:5000/charts"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no registry"),
        ("http://127.0.0.1:5000", "without a scheme"),
        ("127.0.0.1:5000/Team", "path part 'Team'"),
        ("bad host:5000", "is not a HOST"),
    ],
)
def test_bad_registries_are_named(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_registry(text)


@pytest.mark.parametrize("name", ["Hello", "hello world", "-x", "a//b", "$(touch x)", ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="is not a repository name"):
        parse_registry("127.0.0.1:5000").repository(name)


@pytest.mark.parametrize("tag", ["1.2.3+build.5", "-x", "a" * 129, "a/b", ""])
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(UsageError, match="not a valid image tag"):
        parse_registry("127.0.0.1:5000").reference("hello", tag)


def test_split_image() -> None:
    assert split_image("127.0.0.1:5000/team/hello:1.0.0") == ("127.0.0.1:5000/team/hello", "1.0.0")
    assert split_image("127.0.0.1:5000/hello") == ("127.0.0.1:5000/hello", "")
    assert split_image(f"127.0.0.1:5000/hello@{DIGEST}") == ("127.0.0.1:5000/hello", f"@{DIGEST}")


def test_labels_leave_out_what_is_unknown_and_stamp_utc() -> None:
    created = datetime(2026, 11, 28, 18, 30, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert oci_labels(version="1.0.0", source="https://git.example/x.git", revision="abc", created=created) == {
        "org.opencontainers.image.source": "https://git.example/x.git",
        "org.opencontainers.image.revision": "abc",
        "org.opencontainers.image.version": "1.0.0",
        "org.opencontainers.image.created": "2026-11-28T17:30:05Z",
    }
    assert set(oci_labels(version="1.0.0")) == {"org.opencontainers.image.version", "org.opencontainers.image.created"}


def test_purl_of_an_image_and_a_chart() -> None:
    image = oci_purl("127.0.0.1:5000/hello", DIGEST)
    assert image == f"pkg:oci/hello@{DIGEST}?repository_url=127.0.0.1:5000/hello"
    parsed = PackageURL.from_string(image)
    assert (parsed.type, parsed.name, parsed.version) == ("oci", "hello", DIGEST)
    assert oci_purl("127.0.0.1:5000/charts/Hello", DIGEST).startswith(
        f"pkg:oci/hello@{DIGEST}?repository_url=127.0.0.1:5000/charts/Hello"
    )
    with pytest.raises(UsageError, match="not a sha256 digest"):
        oci_purl("127.0.0.1:5000/hello", "sha256:short")


@pytest.mark.parametrize(
    ("output", "status", "words"),
    [
        # What buildah, helm and oras really print (seen against docker-registry 2.8).
        (
            "writing blob: initiating layer upload to /v2/t/x/blobs/uploads/ in 127.0.0.1:15702: StatusCode: 405, Method not allowed",
            405,
            "read-only",
        ),
        (
            'Error: failed to perform "Tag" on destination: PUT "http://127.0.0.1:15702/v2/charts/c/manifests/0.1.0": response status code 405: Method Not Allowed',
            405,
            "read-only",
        ),
        (
            "checking whether a blob sha256:20 exists in 127.0.0.1:15703/t/x: unauthorized: authentication required",
            401,
            "credentials",
        ),
        (
            'Error: failed to perform "Exists" on destination: HEAD "http://h/v2/c/manifests/sha256:6c": basic credential not found',
            401,
            "credentials",
        ),
        ('HEAD "http://h/v2/c/manifests/sha256:6c": response status code 401: Unauthorized', 401, "credentials"),
        ("denied: requested access to the resource is denied", 403, "push rights"),
        (
            'pinging container registry 127.0.0.1:15709: Get "http://127.0.0.1:15709/v2/": dial tcp 127.0.0.1:15709: connect: connection refused',
            None,
            "unreachable",
        ),
        ("POST http://h/v2/x/blobs/uploads/ answered status 503 Service Unavailable", 503, "failed on its side"),
        ("x509: certificate signed by unknown authority", None, "TLS failed"),
        ("something odd", None, "check the registry's address"),
    ],
)
def test_refusal_hints(output: str, status: int | None, words: str) -> None:
    got_status, hint = refusal_hint(output)
    assert got_status == status
    assert words in hint


def test_loopback_registries_named_by_from_lines() -> None:
    dockerfile = (
        "FROM --platform=linux/amd64 127.0.0.1:5000/base:1 AS build\n"
        "from localhost:5001/tools/x@sha256:00 as tools\n"
        "FROM registry.example:5000/other:1\nFROM scratch\nFROM busybox:1.36\nFROM build\n"
        "FROM 127.0.0.1:5000/base:2\n"
    )
    assert loopback_registries_in(dockerfile) == ["127.0.0.1:5000", "localhost:5001"]


def test_insecure_registries_conf_extends_the_systems_file() -> None:
    system = '# comment\nunqualified-search-registries = ["docker.io"]\n'
    conf = insecure_registries_conf(system, ["127.0.0.1:5000"])
    assert conf == system + '\n[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n'
    v1 = "[registries.search]\nregistries = ['docker.io']\n"
    assert insecure_registries_conf(v1, ["127.0.0.1:5000"]) == '[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n'
