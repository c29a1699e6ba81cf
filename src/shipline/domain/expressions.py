"""`${{ }}` expressions: parsing, references and evaluation.

The language is deliberately small: references (`params.x`,
`tasks.build.results.version`, `tasks.build.status`, `inputs.chart`,
`run.id`), string literals in single quotes (`''` escapes a quote), `true`,
`false`, numbers, `==`, `!=`, `&&`, `||`, `!` and parentheses.  Values are
strings or booleans; `==` compares their text.  `a || b` is a's value when a
exists and is true (text other than '', 'false' and '0'), else b's value: a
reference that does not resolve on the left falls back to the right.  Nothing is ever evaluated as
code: a value is only ever compared, concatenated into another value, or
handed to a process as an environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

Value = str | bool


class ExpressionError(ValueError):
    """A malformed expression; `offset` is where in the source text it went wrong."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class UnresolvedReference(LookupError):
    """A reference whose value does not exist (yet): e.g. a result of a skipped task."""

    def __init__(self, path: tuple[str, ...]) -> None:
        super().__init__(".".join(path))
        self.path = path


@dataclass(frozen=True)
class Literal:
    value: Value


@dataclass(frozen=True)
class Ref:
    path: tuple[str, ...]
    offset: int


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Binary:
    op: str  # '==', '!=', '&&', '||'
    left: Expr
    right: Expr


Expr = Literal | Ref | Not | Binary

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>==|!=|&&|\|\||!|\(|\)|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    offset: int


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            if source[pos] == "'":
                raise ExpressionError("unterminated string literal", pos)
            raise ExpressionError(f"unexpected character {source[pos]!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Token("end", "", len(source)))
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect_end(self) -> None:
        tok = self.peek()
        if tok.kind != "end":
            raise ExpressionError(f"unexpected {tok.text!r}", tok.offset)

    def parse_or(self) -> Expr:
        left = self.parse_and()
        while self.peek().text == "||":
            self.take()
            left = Binary("||", left, self.parse_and())
        return left

    def parse_and(self) -> Expr:
        left = self.parse_unary()
        while self.peek().text == "&&":
            self.take()
            left = Binary("&&", left, self.parse_unary())
        return left

    def parse_unary(self) -> Expr:
        if self.peek().text == "!":
            self.take()
            return Not(self.parse_unary())
        return self.parse_comparison()

    def parse_comparison(self) -> Expr:
        left = self.parse_primary()
        if self.peek().text in ("==", "!="):
            op = self.take().text
            left = Binary(op, left, self.parse_primary())
            if self.peek().text in ("==", "!="):
                raise ExpressionError("chained comparison: add parentheses", self.peek().offset)
        return left

    def parse_primary(self) -> Expr:
        tok = self.take()
        if tok.text == "(":
            inner = self.parse_or()
            close = self.take()
            if close.text != ")":
                raise ExpressionError("missing ')'", close.offset)
            return inner
        if tok.kind == "string":
            return Literal(tok.text[1:-1].replace("''", "'"))
        if tok.kind == "number":
            return Literal(tok.text)
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return Literal(tok.text == "true")
            path = [tok.text]
            while self.peek().text == ".":
                self.take()
                part = self.take()
                if part.kind not in ("ident", "number"):
                    raise ExpressionError("expected a name after '.'", part.offset)
                path.append(part.text)
            return Ref(tuple(path), tok.offset)
        if tok.kind == "end":
            raise ExpressionError("expression ends too early", tok.offset)
        raise ExpressionError(f"unexpected {tok.text!r}", tok.offset)


def parse(source: str) -> Expr:
    """Parse the inside of one `${{ }}`."""
    if not source.strip():
        raise ExpressionError("empty expression", 0)
    parser = _Parser(source)
    expr = parser.parse_or()
    parser.expect_end()
    return expr


def references(expr: Expr) -> list[Ref]:
    if isinstance(expr, Ref):
        return [expr]
    if isinstance(expr, Not):
        return references(expr.operand)
    if isinstance(expr, Binary):
        return references(expr.left) + references(expr.right)
    return []


def as_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def truthy(value: Value) -> bool:
    """Booleans are themselves; text is true unless empty, 'false' or '0'."""
    if isinstance(value, bool):
        return value
    return value not in ("", "false", "0")


Context = Mapping[str, object]


def _lookup(context: Context, path: tuple[str, ...]) -> Value:
    node: object = context
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            raise UnresolvedReference(path)
        node = node[part]
    if isinstance(node, (str, bool)):
        return node
    raise UnresolvedReference(path)


def evaluate(expr: Expr, context: Context) -> Value:
    """Evaluate against nested mappings of strings; raises UnresolvedReference."""
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Ref):
        return _lookup(context, expr.path)
    if isinstance(expr, Not):
        return not truthy(evaluate(expr.operand, context))
    if expr.op == "&&":
        left = evaluate(expr.left, context)
        return evaluate(expr.right, context) if truthy(left) else left
    if expr.op == "||":
        # `a || 'fallback'`: a missing value (a result of a task that failed or was
        # skipped) falls back like an empty one, so a finally task can still report.
        try:
            left = evaluate(expr.left, context)
        except UnresolvedReference:
            return evaluate(expr.right, context)
        return left if truthy(left) else evaluate(expr.right, context)
    equal = as_text(evaluate(expr.left, context)) == as_text(evaluate(expr.right, context))
    return equal if expr.op == "==" else not equal


# --- templates: text with ${{ }} holes -------------------------------------------------

_HOLE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


@dataclass(frozen=True)
class Hole:
    expr: Expr
    source: str
    offset: int  # of the '${{' in the template text


Segment = str | Hole


@lru_cache(maxsize=4096)
def parse_template(text: str) -> tuple[Segment, ...]:
    """Split text into literal parts and `${{ }}` holes; raise on a malformed hole.

    Parsed once per text and process: a pipeline's texts are rendered again at each of
    its runs, and looked through for the secrets they use.  Segments are immutable."""
    segments: list[Segment] = []
    pos = 0
    for m in _HOLE.finditer(text):
        if m.start() > pos:
            segments.append(text[pos : m.start()])
        inner = m.group(1)
        try:
            expr = parse(inner)
        except ExpressionError as exc:
            raise ExpressionError(exc.message, m.start() + 3 + exc.offset) from exc
        segments.append(Hole(expr, inner.strip(), m.start()))  # ref offsets count from m.start() + 3
        pos = m.end()
    rest = text[pos:]
    if "${{" in rest:
        raise ExpressionError("'${{' without a closing '}}'", pos + rest.index("${{"))
    if rest:
        segments.append(rest)
    return tuple(segments)


def template_references(text: str) -> list[tuple[Ref, int]]:
    """Every reference in a template, with its offset in the template text."""
    return [
        (ref, seg.offset + 3 + ref.offset)
        for seg in parse_template(text)
        if isinstance(seg, Hole)
        for ref in references(seg.expr)
    ]


def render(text: str, context: Context) -> str:
    """Substitute every hole with the text of its value."""
    return "".join(seg if isinstance(seg, str) else as_text(evaluate(seg.expr, context)) for seg in parse_template(text))


def evaluate_condition(text: str, context: Context) -> bool:
    """A `when:` value: one `${{ }}` expression (or bare text) judged by truthiness."""
    segments = parse_template(text.strip())
    if len(segments) == 1 and isinstance(segments[0], Hole):
        return truthy(evaluate(segments[0].expr, context))
    return truthy(render(text, context))


def bind_script(script: str, context: Context, prefix: str = "SHIPLINE_EXPR_") -> tuple[str, dict[str, str]]:
    """Make a `run:` script safe: each hole becomes `${VAR}` and VAR holds the value.

    The value never becomes script text, so `$(rm -rf ~)` in a param stays a string.
    """
    env: dict[str, str] = {}
    parts: list[str] = []
    for seg in parse_template(script):
        if isinstance(seg, str):
            parts.append(seg)
            continue
        name = f"{prefix}{len(env)}"
        env[name] = as_text(evaluate(seg.expr, context))
        parts.append("${" + name + "}")
    return "".join(parts), env
