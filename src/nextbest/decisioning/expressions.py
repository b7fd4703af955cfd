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

Rules are typed: a rule is a condition; `and`, `or` and `not` combine conditions; a comparison or `in`
compares like with like (numbers, texts, times, or true/false with `==` and `!=`). `parse_rule` checks
what the text alone shows (`count(...) == "x"`, `profile.age` as a whole rule); `Rule.check_types`
checks again once the names' types are known (a catalog combined with a model: see
`ActionCatalog.check_model`). A rule is at most MAX_RULE_LENGTH characters, nested at most MAX_NESTING
deep, so no text can exhaust the parser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from nextbest.errors import NextbestError

NAMESPACES = ("profile", "context")
HISTORY_FUNCTIONS = ("count", "days_since")
MATCH_COLUMNS = ("event_type", "channel", "action")
COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")
Literal_: TypeAlias = float | str | bool
# Bounds on what a catalog may ask of the parser and of the history aggregates.
MAX_RULE_LENGTH = 2_000  # characters
MAX_NESTING = 20  # parentheses and `not`s open at once; each level is a few frames of recursion
MAX_DAYS = 36_600  # a count's window (about a century), so its start stays a valid time


class RuleError(NextbestError):
    """A rule that does not parse, is not a condition, or compares unlike values."""


class ValueType(StrEnum):
    """What an expression yields. Names read numbers, texts or times; comparisons yield conditions."""

    NUMBER = "number"
    TEXT = "text"
    TIME = "time"
    CONDITION = "condition"


# The types a catalog may declare for the names it reads (a time has no literal to compare it with).
DECLARABLE_TYPES = (ValueType.NUMBER, ValueType.TEXT)


@dataclass(frozen=True)
class HistoryQuery:
    """A history aggregate a rule reads: `count` over the last `days` days, or `days_since`."""

    function: str
    days: float | None
    match: tuple[tuple[str, tuple[str, ...]], ...]  # (column, accepted values); every column must match


# Every node knows the characters of the rule it was read from (`span`, start and end), so an error can
# quote the part of the rule at fault.
@dataclass(frozen=True)
class Constant:
    value: Literal_
    span: tuple[int, int] = field(compare=False)


@dataclass(frozen=True)
class Name:
    namespace: str
    key: str
    span: tuple[int, int] = field(compare=False)


@dataclass(frozen=True)
class History:
    query: HistoryQuery
    span: tuple[int, int] = field(compare=False)


@dataclass(frozen=True)
class Compare:
    operator: str
    left: Node
    right: Node
    span: tuple[int, int] = field(compare=False)


@dataclass(frozen=True)
class Membership:
    operand: Node
    values: tuple[Literal_, ...]
    negated: bool
    span: tuple[int, int] = field(compare=False)


@dataclass(frozen=True)
class Logical:
    operator: str  # "and" | "or"
    operands: tuple[Node, ...]
    span: tuple[int, int] = field(compare=False)


@dataclass(frozen=True)
class Not:
    operand: Node
    span: tuple[int, int] = field(compare=False)


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

    def check_types(self, types: Mapping[tuple[str, str], ValueType], complete: Collection[str] = ()) -> None:
        """Raises `RuleError` unless the rule is a condition that compares like with like, given the
        types of the names it reads. `types` lists every name of the namespaces in `complete` (any other
        there is an error); a name of another namespace without a type may be a number, a text or a time."""
        _TypeChecker(self.text, types, complete).condition(self.tree)

    def evaluate(self, columns: RuleColumns) -> np.ndarray:
        """Boolean [N]: whether each of the N requests satisfies the rule."""
        return _evaluate(self.tree, columns)


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


class _Token(NamedTuple):
    kind: str  # a group of _TOKEN
    value: str
    position: int

    @property
    def end(self) -> int:
        return self.position + len(self.value)


def parse_rule(text: str) -> Rule:
    """Parses `text` and checks that it is a condition comparing like with like (see `Rule.check_types`;
    the types of names are not known here).

    Raises:
        RuleError: the text is not a rule; the message says what was expected, at which position.
    """
    if not isinstance(text, str) or not text.strip():
        raise RuleError("a rule must be a non-empty text")
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"a rule is at most {MAX_RULE_LENGTH:,} characters long; this one has {len(text):,}")
    parser = _Parser(text, _tokenise(text))
    tree = parser.rule()
    parser.expect_end()
    rule = Rule(text, tree)
    rule.check_types({})
    return rule


def _tokenise(text: str) -> list[_Token]:
    tokens, position = [], 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None:
            raise _error(text, position, f"cannot read {text[position:].strip()[:20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


def _error(text: str, position: int, problem: str) -> RuleError:
    return RuleError(f"{problem} at position {position} in {text!r}")


VALUE = "a value (profile.<attribute>, context.<key>, count(...), days_since(...), a number, a quoted text, "
VALUE += "true or false)"
LITERAL = "a number, a quoted text, true or false"


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text, self.tokens, self.index, self.depth = text, tokens, 0, 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str, value: str | None = None, kind: str | None = None) -> _Token:
        """The next token, which must be `value` (or of `kind`) when given; `expected` says what a
        rule needs here, for the error."""
        token = self.peek()
        if token is None:
            raise _error(self.text, len(self.text), f"the rule ends where {expected} was expected")
        if (value is not None and token.value != value) or (kind is not None and token.kind != kind):
            raise _error(self.text, token.position, f"expected {expected}, got {token.value!r}")
        self.index += 1
        return token

    def end(self) -> int:
        """Where the last token taken ends: the end of the node just read."""
        return self.tokens[self.index - 1].end

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token.value == value and token.kind in ("op", "word")

    def expect_end(self) -> None:
        token = self.peek()
        if token is not None:
            hint = " (comparisons are ==, !=, <, <=, >, >=)" if token.value == "=" else ""
            raise _error(
                self.text,
                token.position,
                f"expected `and`, `or` or the end of the rule, got {token.value!r}{hint}",
            )

    def nested(self, position: int, parse: Callable[[], Node]) -> Node:
        """`parse()` one level deeper (in parentheses or after `not`), at most MAX_NESTING deep: the
        parser, the checks and the evaluation recurse once per level."""
        if self.depth == MAX_NESTING:
            raise _error(self.text, position, f"rules nest at most {MAX_NESTING} deep (parentheses, `not`)")
        self.depth += 1
        node = parse()
        self.depth -= 1
        return node

    def rule(self) -> Node:
        return self.logical("or", self.conjunction)

    def conjunction(self) -> Node:
        return self.logical("and", self.negation)

    def logical(self, operator: str, operand: Callable[[], Node]) -> Node:
        operands = [operand()]
        while self.at(operator):
            self.take(f"`{operator}`", operator)
            operands.append(operand())
        if len(operands) == 1:
            return operands[0]
        return Logical(operator, tuple(operands), (operands[0].span[0], self.end()))

    def negation(self) -> Node:
        if self.at("not"):
            start = self.take("`not`", "not").position
            return Not(self.nested(start, self.negation), (start, self.end()))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        token = self.peek()
        if token is not None and token.kind == "op" and token.value in COMPARISONS:
            self.index += 1
            right = self.operand()
            return Compare(token.value, left, right, (left.span[0], self.end()))
        if self.at("in") or (self.at("not") and self._next_is("in")):
            negated = self.at("not")
            if negated:
                self.take("`not`", "not")
            self.take("`in`", "in")
            values = self.literal_list()
            return Membership(left, values, negated, (left.span[0], self.end()))
        return left

    def _next_is(self, value: str) -> bool:
        following = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
        return following is not None and following.value == value

    def operand(self) -> Node:
        token = self.take(VALUE)
        if token.kind in ("number", "string") or token.value in ("true", "false"):
            return Constant(self.literal(token), (token.position, token.end))
        if token.value == "(":
            inner = self.nested(token.position, self.rule)
            self.take("`)`", ")")
            return replace(inner, span=(token.position, self.end()))
        if token.kind == "word" and token.value in NAMESPACES:
            self.take(f"`.` after {token.value}", ".")
            key = self.take(f"an attribute name after {token.value}.", kind="word")
            return Name(token.value, key.value, (token.position, key.end))
        if token.kind == "word" and token.value in HISTORY_FUNCTIONS:
            query = self.history_call(token)
            return History(query, (token.position, self.end()))
        raise _error(self.text, token.position, f"expected {VALUE}, got {token.value!r}")

    def history_call(self, function: _Token) -> HistoryQuery:
        self.take(f"`(` after {function.value}", "(")
        arguments: dict[str, Literal_ | tuple[Literal_, ...]] = {}
        while not self.at(")"):
            if arguments:
                self.take("`,` or `)`", ",")
            key = self.take("an argument name", kind="word")
            if key.value in arguments:
                raise _error(self.text, key.position, f"{function.value}() is given {key.value} twice")
            self.take(f"`=` after {key.value}", "=")
            if self.at("["):
                arguments[key.value] = self.literal_list()
            else:
                arguments[key.value] = self.literal(self.take(f"{LITERAL} or a list"))
        self.take("`)`", ")")
        return _history_query(function, arguments, self.text)

    def literal_list(self) -> tuple[Literal_, ...]:
        self.take("a list `[...]`", "[")
        values: list[Literal_] = []
        while not self.at("]"):
            if values:
                self.take("`,` or `]`", ",")
            values.append(self.literal(self.take(LITERAL)))
        self.take("`]`", "]")
        return tuple(values)

    def literal(self, token: _Token) -> Literal_:
        if token.kind == "number":
            number = float(token.value)
            if not math.isfinite(number):
                raise _error(self.text, token.position, f"the number {token.value[:20]}... is out of range")
            return number
        if token.kind == "string":
            return token.value[1:-1]
        if token.value in ("true", "false"):
            return token.value == "true"
        raise _error(self.text, token.position, f"expected {LITERAL}, got {token.value!r}")


def _history_query(
    function: _Token, arguments: dict[str, Literal_ | tuple[Literal_, ...]], text: str
) -> HistoryQuery:
    name = function.value
    allowed = {*MATCH_COLUMNS, "days"} if name == "count" else set(MATCH_COLUMNS)
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise _error(
            text, function.position, f"{name}() takes {', '.join(sorted(allowed))}; got {', '.join(unknown)}"
        )
    days = arguments.get("days")
    if name == "count" and not (isinstance(days, float) and 0 < days <= MAX_DAYS):
        raise _error(text, function.position, f"count() needs days=<a number above 0, at most {MAX_DAYS:,}>")
    match = []
    for column in MATCH_COLUMNS:
        if column in arguments:
            value = arguments[column]
            accepted = value if isinstance(value, tuple) else (value,)
            if not accepted or not all(isinstance(v, str) for v in accepted):
                raise _error(
                    text, function.position, f"{name}({column}=...) must be a quoted text or a list of them"
                )
            match.append((column, tuple(str(v) for v in accepted)))
    return HistoryQuery(name, float(days) if isinstance(days, float) else None, tuple(match))


_ARTICLES = {
    ValueType.NUMBER: "a number",
    ValueType.TEXT: "a text",
    ValueType.TIME: "a time",
    ValueType.CONDITION: "a condition (true or false)",
    None: "a value",
}


class _TypeChecker:
    """Types every node of a rule; `types` gives the names' (a name without one is some value)."""

    def __init__(
        self, text: str, types: Mapping[tuple[str, str], ValueType], complete: Collection[str]
    ) -> None:
        self.text, self.types, self.complete = text, types, complete

    def source(self, node: Node) -> str:
        return self.text[node.span[0] : node.span[1]]

    def fail(self, node: Node, problem: str) -> RuleError:
        return _error(self.text, node.span[0], f"`{self.source(node)}`: {problem}")

    def condition(self, node: Node) -> None:
        kind = self.type_of(node)
        if kind is not ValueType.CONDITION:
            raise self.fail(
                node, f"{_ARTICLES[kind]} is not a condition; compare it (e.g. `{self.source(node)} == ...`)"
            )

    def type_of(self, node: Node) -> ValueType | None:
        if isinstance(node, Constant):
            return _literal_type(node.value)
        if isinstance(node, Name):
            return self.name_type(node)
        if isinstance(node, History):
            return ValueType.NUMBER
        if isinstance(node, Compare):
            self.compare(node)
        elif isinstance(node, Membership):
            self.membership(node)
        else:
            for operand in node.operands if isinstance(node, Logical) else (node.operand,):
                self.condition(operand)
        return ValueType.CONDITION

    def name_type(self, node: Name) -> ValueType | None:
        kind = self.types.get((node.namespace, node.key))
        if kind is None and node.namespace in self.complete:
            known = sorted(key for namespace, key in self.types if namespace == node.namespace)
            raise self.fail(
                node,
                f"unknown {node.namespace} name; the known ones are {', '.join(known) or '(none)'} (a "
                f"catalog declares others, with their types, under `{node.namespace}:`)",
            )
        return kind

    def compare(self, node: Compare) -> None:
        left, right = self.type_of(node.left), self.type_of(node.right)
        if not _comparable(left, right):
            raise self.fail(
                node,
                f"`{self.source(node.left)}` is {_ARTICLES[left]} and `{self.source(node.right)}` "
                f"{_ARTICLES[right]}: compare like with like",
            )
        if node.operator not in ("==", "!=") and ValueType.CONDITION in (left, right):
            raise self.fail(node, f"true and false have no order; use == or != instead of {node.operator}")

    def membership(self, node: Membership) -> None:
        operand = self.type_of(node.operand)
        kinds = {_literal_type(value) for value in node.values}
        if len(kinds) > 1:
            raise self.fail(node, f"the list mixes {' and '.join(sorted(_ARTICLES[k] for k in kinds))}")
        for kind in kinds:
            if not _comparable(operand, kind):
                operand_source = self.source(node.operand)
                raise self.fail(
                    node, f"`{operand_source}` is {_ARTICLES[operand]}; the list holds {_ARTICLES[kind]}"
                )


def _literal_type(value: Literal_) -> ValueType:
    if isinstance(value, bool):
        return ValueType.CONDITION
    return ValueType.TEXT if isinstance(value, str) else ValueType.NUMBER


def _comparable(left: ValueType | None, right: ValueType | None) -> bool:
    """Like with like; a name of unknown type is some value (a number, a text, a time), never a condition."""
    if left is None or right is None:
        return ValueType.CONDITION not in (left, right)
    return left == right


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
    # A parsed rule is checked: the operands of `not`, `and` and `or` are conditions, boolean arrays.
    if isinstance(node, Not):
        return ~_evaluate(node.operand, columns)
    results = [_evaluate(o, columns) for o in node.operands]
    return np.logical_and.reduce(results) if node.operator == "and" else np.logical_or.reduce(results)


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
