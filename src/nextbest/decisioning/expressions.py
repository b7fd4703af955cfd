"""A small, safe rule language for `eligible_if`, evaluated on whole columns of requests at once.

Nothing is ever passed to Python's `eval`: text is tokenised and parsed by a recursive-descent parser into
a tree of the node types below, and names can only read the three namespaces a request has.

Grammar::

    rule       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("<" | "<=" | ">" | ">=" | "==" | "!=") operand | ["not"] "in" list)?
    operand    := NUMBER | STRING | "true" | "false" | name | call | "(" rule ")"
    name       := ("profile" | "context") "." IDENT
    call       := ("count" | "days_since") "(" [IDENT "=" (literal | list) ("," ...)*] ")"
    list       := "[" [literal ("," literal)*] "]"

`count(days=7, channel="email")` is the number of the customer's events in the last 7 days (before
`as_of`) matching every given column (`event_type`, `channel`, `action`; a list accepts any of its values,
e.g. `event_type=["email_sent", "sms_sent"]`); `days_since(event_type="purchase")` is the days since the
last matching event (infinite when there is none). A missing profile or context
value makes every comparison with it false (and `!=` true), so a rule never crashes on absent data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from nextbest.errors import NextbestError

NAMESPACES = ("profile", "context")
HISTORY_FUNCTIONS = ("count", "days_since")
MATCH_COLUMNS = ("event_type", "channel", "action")
COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")
Literal_: TypeAlias = float | str | bool


class RuleError(NextbestError):
    """A rule that does not parse or names something it cannot read."""


@dataclass(frozen=True)
class HistoryQuery:
    """A history aggregate a rule reads: `count` over the last `days` days, or `days_since`."""

    function: str
    days: float | None
    match: tuple[tuple[str, tuple[str, ...]], ...]  # (column, accepted values); every column must match


@dataclass(frozen=True)
class Constant:
    value: Literal_


@dataclass(frozen=True)
class Name:
    namespace: str
    key: str


@dataclass(frozen=True)
class History:
    query: HistoryQuery


@dataclass(frozen=True)
class Compare:
    operator: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Membership:
    operand: Node
    values: tuple[Literal_, ...]
    negated: bool


@dataclass(frozen=True)
class Logical:
    operator: str  # "and" | "or"
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


Node: TypeAlias = Constant | Name | History | Compare | Membership | Logical | Not


@dataclass(frozen=True)
class Rule:
    """A parsed rule and the history aggregates it needs."""

    text: str
    tree: Node

    @property
    def history_queries(self) -> set[HistoryQuery]:
        return {node.query for node in _nodes(self.tree) if isinstance(node, History)}

    @property
    def names(self) -> set[tuple[str, str]]:
        """The (namespace, key) pairs the rule reads, e.g. ("profile", "segment")."""
        return {(node.namespace, node.key) for node in _nodes(self.tree) if isinstance(node, Name)}

    def evaluate(self, columns: RuleColumns) -> np.ndarray:
        """Boolean [N]: whether each of the N requests satisfies the rule."""
        result = _evaluate(self.tree, columns)
        if result.dtype != np.bool_:
            raise RuleError(f"rule {self.text!r} is not a condition (it yields values, not true/false)")
        return result


@dataclass(frozen=True)
class RuleColumns:
    """What rules read for N requests: profile and context values (object or numeric arrays; None or
    NaN = missing) and the values of the history queries (float arrays)."""

    size: int
    profile: Mapping[str, np.ndarray]
    context: Mapping[str, np.ndarray]
    history: Mapping[HistoryQuery, np.ndarray]


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?)
      | (?P<string>"[^"]*"|'[^']*')
      | (?P<op><=|>=|==|!=|<|>|=|\(|\)|\[|\]|,|\.)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def parse_rule(text: str) -> Rule:
    """Parses `text`; raises `RuleError` naming the position of the first problem."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError("a rule must be a non-empty text")
    parser = _Parser(text, _tokenise(text))
    tree = parser.rule()
    parser.expect_end()
    return Rule(text, tree)


def _tokenise(text: str) -> list[tuple[str, str, int]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise RuleError(
                f"cannot read {text[position:].strip()[:20]!r} at position {position} in {text!r}"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[tuple[str, str, int]]) -> None:
        self.text, self.tokens, self.index = text, tokens, 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise RuleError(f"rule {self.text!r} ends early; expected {value or kind}")
        if (value is not None and token[1] != value) or (kind is not None and token[0] != kind):
            raise RuleError(
                f"expected {value or kind} at position {token[2]} in {self.text!r}, got {token[1]!r}"
            )
        self.index += 1
        return token

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == value and token[0] in ("op", "word")

    def expect_end(self) -> None:
        token = self.peek()
        if token is not None:
            raise RuleError(f"unexpected {token[1]!r} at position {token[2]} in {self.text!r}")

    def rule(self) -> Node:
        return self.logical("or", self.conjunction)

    def conjunction(self) -> Node:
        return self.logical("and", self.negation)

    def logical(self, operator: str, operand: Callable[[], Node]) -> Node:
        operands = [operand()]
        while self.at(operator):
            self.take(operator)
            operands.append(operand())
        return operands[0] if len(operands) == 1 else Logical(operator, tuple(operands))

    def negation(self) -> Node:
        if self.at("not"):
            self.take("not")
            return Not(self.negation())
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        token = self.peek()
        if token is not None and token[1] in COMPARISONS:
            self.take()
            return Compare(token[1], left, self.operand())
        if self.at("in") or (self.at("not") and self._next_is("in")):
            negated = self.at("not")
            if negated:
                self.take("not")
            self.take("in")
            return Membership(left, self.literal_list(), negated)
        return left

    def _next_is(self, value: str) -> bool:
        following = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
        return following is not None and following[1] == value

    def operand(self) -> Node:
        kind, value, position = self.take()
        if kind in ("number", "string") or value in ("true", "false"):
            return Constant(_literal(kind, value))
        if value == "(":
            inner = self.rule()
            self.take(")")
            return inner
        if kind == "word" and value in NAMESPACES:
            self.take(".")
            return Name(value, self.take(kind="word")[1])
        if kind == "word" and value in HISTORY_FUNCTIONS:
            return History(self.history_call(value))
        raise RuleError(
            f"unknown name {value!r} at position {position} in {self.text!r}; expected profile.<attribute>, "
            f"context.<key>, count(...), days_since(...) or a literal"
        )

    def history_call(self, function: str) -> HistoryQuery:
        self.take("(")
        arguments: dict[str, Literal_ | tuple[Literal_, ...]] = {}
        while not self.at(")"):
            if arguments:
                self.take(",")
            key = self.take(kind="word")[1]
            self.take("=")
            if self.at("["):
                arguments[key] = self.literal_list()
            else:
                kind, value, _ = self.take()
                arguments[key] = _literal(kind, value)
        self.take(")")
        return _history_query(function, arguments, self.text)

    def literal_list(self) -> tuple[Literal_, ...]:
        self.take("[")
        values: list[Literal_] = []
        while not self.at("]"):
            if values:
                self.take(",")
            kind, value, position = self.take()
            if kind not in ("number", "string") and value not in ("true", "false"):
                raise RuleError(
                    f"lists hold literals only; got {value!r} at position {position} in {self.text!r}"
                )
            values.append(_literal(kind, value))
        self.take("]")
        return tuple(values)


def _literal(kind: str, value: str) -> Literal_:
    if kind == "number":
        return float(value)
    if kind == "string":
        return value[1:-1]
    if value in ("true", "false"):
        return value == "true"
    raise RuleError(f"expected a number, a quoted text, true or false; got {value!r}")


def _history_query(
    function: str, arguments: dict[str, Literal_ | tuple[Literal_, ...]], text: str
) -> HistoryQuery:
    allowed = {*MATCH_COLUMNS, "days"} if function == "count" else set(MATCH_COLUMNS)
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise RuleError(
            f"{function}() in {text!r} takes {', '.join(sorted(allowed))}; got {', '.join(unknown)}"
        )
    days = arguments.get("days")
    if function == "count" and not (isinstance(days, float) and days > 0):
        raise RuleError(f"count() in {text!r} needs days=<positive number>")
    match = []
    for column in MATCH_COLUMNS:
        if column in arguments:
            value = arguments[column]
            accepted = value if isinstance(value, tuple) else (value,)
            if not accepted or not all(isinstance(v, str) for v in accepted):
                raise RuleError(
                    f"{function}({column}=...) in {text!r} must be a quoted text or a list of them"
                )
            match.append((column, tuple(str(v) for v in accepted)))
    return HistoryQuery(function, float(days) if isinstance(days, float) else None, tuple(match))


def _nodes(node: Node) -> Iterator[Node]:
    """`node` and every node below it."""
    yield node
    if isinstance(node, Compare):
        yield from _nodes(node.left)
        yield from _nodes(node.right)
    elif isinstance(node, Membership | Not):
        yield from _nodes(node.operand)
    elif isinstance(node, Logical):
        for operand in node.operands:
            yield from _nodes(operand)


def _evaluate(node: Node, columns: RuleColumns) -> np.ndarray:
    if isinstance(node, Constant):
        return np.full(columns.size, node.value, dtype=object if isinstance(node.value, str) else None)
    if isinstance(node, Name):
        source = columns.profile if node.namespace == "profile" else columns.context
        values = source.get(node.key)
        return np.full(columns.size, None, dtype=object) if values is None else values
    if isinstance(node, History):
        return columns.history[node.query]
    if isinstance(node, Compare):
        return _compare(node.operator, _evaluate(node.left, columns), _evaluate(node.right, columns))
    if isinstance(node, Membership):
        values = _evaluate(node.operand, columns)
        inside = np.array([_present(v) and v in node.values for v in values], dtype=bool)
        return ~inside if node.negated else inside
    if isinstance(node, Not):
        return ~_as_condition(_evaluate(node.operand, columns))
    results = [_as_condition(_evaluate(o, columns)) for o in node.operands]
    return np.logical_and.reduce(results) if node.operator == "and" else np.logical_or.reduce(results)


def _as_condition(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.bool_:
        return values
    if values.dtype == object and all(isinstance(v, bool) for v in values):
        return values.astype(bool)
    raise RuleError("`and`, `or` and `not` need conditions, e.g. profile.vip == true")


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _compare(operator: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Element-wise comparison where a missing value on either side is false (true for `!=`)."""
    if left.dtype != object and right.dtype != object:
        result = np.asarray(_OPERATORS[operator](left, right), dtype=bool)
        missing = np.isnan(left.astype(float)) | np.isnan(right.astype(float))
        return np.where(missing, operator == "!=", result)
    compare = _OPERATORS[operator]
    out = np.empty(len(left), dtype=bool)
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        if not (_present(a) and _present(b)):
            out[i] = operator == "!="
            continue
        try:
            out[i] = bool(compare(a, b))
        except TypeError as exc:  # e.g. a text compared with a number by < or >
            raise RuleError(f"cannot compare {a!r} {operator} {b!r}") from exc
    return out


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))
