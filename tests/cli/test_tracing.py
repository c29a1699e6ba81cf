from shipline.cli.tracing import release_trace

DIGEST = "sha256:" + "a" * 64


def test_a_release_traces_commit_tag_image_digest_and_chart() -> None:
    trace = release_trace(
        {
            "commit": "0123456789abcdef" * 2 + "01234567",
            "tag": "v1.2.0",
            "image": "r:5000/hello:1.2.0",
            "image-digest": DIGEST,
            "chart": "oci://r:5000/charts/hello",
            "chart-version": "1.2.0",
            "version": "1.2.0",
        }
    )
    assert trace == (
        f"commit 0123456789ab -> tag v1.2.0 -> image r:5000/hello:1.2.0@{DIGEST} -> chart oci://r:5000/charts/hello 1.2.0"
    )


def test_a_prerelease_says_it_has_no_tag_and_other_runs_have_no_trace() -> None:
    trace = release_trace({"commit": "c" * 40, "tag": "", "image": "r/h:1.0.1-x.1", "image-digest": DIGEST})
    assert trace is not None and "no tag (pre-release)" in trace and "chart" not in trace
    assert release_trace({"answer": "42"}) is None
    assert release_trace({"commit": "c" * 40}) is None
