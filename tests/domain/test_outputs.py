import pytest

from shipline.domain.outputs import MAX_RESULT_BYTES, OutputError, format_results, parse_output


def test_name_value_lines() -> None:
    assert parse_output("a=1\nb=x=y\n\nc=\n") == {"a": "1", "b": "x=y", "c": ""}


def test_multiline_values_with_a_delimiter() -> None:
    text = "notes<<EOF\nline one\nkey=not-a-result\nEOF\nafter=yes\n"
    assert parse_output(text) == {"notes": "line one\nkey=not-a-result", "after": "yes"}


def test_later_lines_win() -> None:
    assert parse_output("v=1\nv=2\n") == {"v": "2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just text\n", "not `name=value`"),
        ("x<<EOF\nnever closed\n", "no closing 'EOF'"),
        ("bad name=1\n", "not a result name"),
        ("x<<\n", "needs a delimiter"),
    ],
)
def test_malformed_output_is_explained(text: str, message: str) -> None:
    with pytest.raises(OutputError, match=message):
        parse_output(text)


def test_results_are_small() -> None:
    with pytest.raises(OutputError, match="64 KiB"):
        parse_output("big=" + "x" * (MAX_RESULT_BYTES + 1))


def test_written_results_read_back_as_they_were() -> None:
    results = {
        "digest": "sha256:" + "a" * 64,
        "empty": "",
        "arrows": "a<<b=c",
        "lines": "first\nsecond\n\nfourth",
        "sly": "one\nSHIPLINE_EOF\nSHIPLINE_EOF_1\nthe end",  # lines that look like the delimiter
    }
    text = format_results(results)
    assert parse_output(text) == results
    assert "sly<<SHIPLINE_EOF_2\n" in text  # a delimiter none of the value's lines is


def test_a_result_name_is_checked_when_written() -> None:
    with pytest.raises(OutputError, match="not a result name"):
        format_results({"bad name": "x"})
