import pytest

from shipline.domain import expressions as ex

CTX = {
    "params": {"greeting": "hello", "empty": "", "flag": "false"},
    "tasks": {"produce": {"status": "succeeded", "results": {"answer": "42"}}},
    "run": {"id": "7", "status": "succeeded"},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("tasks.produce.results.answer == '42'", True),
        ("tasks.produce.results.answer != '42'", False),
        ("params.greeting == 'hello' && run.id == '7'", True),
        ("params.greeting == 'bye' || run.id == '7'", True),
        ("!(params.greeting == 'hello')", False),
        ("!params.empty", True),
        ("!params.flag", True),
        ("'it''s' == 'it''s'", True),
        ("true && !false", True),
        ("run.id == 7", True),
    ],
)
def test_conditions(source: str, expected: bool) -> None:
    assert ex.truthy(ex.evaluate(ex.parse(source), CTX)) is expected


def test_precedence_and_binds_tighter_than_or() -> None:
    assert ex.evaluate(ex.parse("true || false && false"), CTX) is True
    assert ex.evaluate(ex.parse("(true || false) && false"), CTX) is False


@pytest.mark.parametrize(
    ("source", "offset"),
    [("params.x ==", 11), ("'open", 0), ("a == b == c", 7), ("(a", 2), ("a $ b", 2), ("", 0)],
)
def test_errors_point_at_the_problem(source: str, offset: int) -> None:
    with pytest.raises(ex.ExpressionError) as info:
        ex.parse(source)
    assert info.value.offset == offset


def test_unknown_reference_is_unresolved() -> None:
    with pytest.raises(ex.UnresolvedReference) as info:
        ex.evaluate(ex.parse("tasks.produce.results.nope"), CTX)
    assert info.value.path == ("tasks", "produce", "results", "nope")


def test_render_template() -> None:
    assert ex.render("v${{ tasks.produce.results.answer }}-${{ params.greeting }}", CTX) == "v42-hello"


def test_unclosed_hole_is_an_error() -> None:
    with pytest.raises(ex.ExpressionError, match="closing"):
        ex.parse_template("echo ${{ params.greeting")


def test_bind_script_moves_values_into_variables() -> None:
    ctx = {"params": {"evil": '$(touch /tmp/x); `id` "; rm -rf ~ #\nnext'}}
    script, env = ex.bind_script('echo "${{ params.evil }}" ${{ params.evil }}', ctx)
    assert script == 'echo "${SHIPLINE_EXPR_0}" ${SHIPLINE_EXPR_1}'
    assert env == {"SHIPLINE_EXPR_0": ctx["params"]["evil"], "SHIPLINE_EXPR_1": ctx["params"]["evil"]}


def test_template_references_carry_offsets() -> None:
    refs = ex.template_references("ab ${{ params.x }} ${{ tasks.t.results.r == 'y' }}")
    assert [(".".join(r.path), off) for r, off in refs] == [("params.x", 7), ("tasks.t.results.r", 23)]


def test_or_falls_back_on_a_missing_value() -> None:
    ctx = {"tasks": {"build": {"status": "failed"}}, "params": {"empty": "", "x": "1"}}
    assert ex.render("${{ tasks.build.results.version || 'unknown' }}", ctx) == "unknown"
    assert ex.render("${{ params.empty || params.nope || 'last' }}", ctx) == "last"
    assert ex.render("${{ params.x || 'unused' }}", ctx) == "1"
    with pytest.raises(ex.UnresolvedReference):  # only the left of `||` may be missing
        ex.render("${{ params.empty || tasks.build.results.version }}", ctx)
    with pytest.raises(ex.UnresolvedReference):
        ex.render("${{ tasks.build.results.version && 'x' }}", ctx)
