"""OData query options for users: `$select`, `$filter`, `$orderby`, and the rules for which
of them need advanced query parameters (docs/graph-behaviour.md, "Filter expression limit")."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.emulator.tenant import (
    CANONICAL,
    DEFAULT_PROPERTIES,
    SINGLE_ENTITY_PROPERTIES,
)
from reconciler.emulator.wire import ApiError, EmuRequest, bad_request, unsupported_query

ADVANCED_HINT = (
    "is not supported because the required parameters might be missing. Try adding "
    "$count=true query parameter and ConsistencyLevel:eventual header. Refer to "
    "https://aka.ms/graph-docs/advanced-queries for more information"
)

_STRING_DEFAULT = frozenset({"eq", "in", "startswith"})
_STRING_ADVANCED = frozenset({"ne", "not", "ge", "le", "eq null"})
# Operator support per property: (works by default, needs advanced query parameters).
FILTER_SUPPORT: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "id": (frozenset({"eq", "in"}), frozenset({"ne", "not"})),
    "displayName": (_STRING_DEFAULT, _STRING_ADVANCED),
    "userPrincipalName": (_STRING_DEFAULT, frozenset({"ne", "not", "ge", "le", "endswith"})),
    "mail": (_STRING_DEFAULT | {"eq null"}, frozenset({"ne", "not", "ge", "le", "endswith"})),
    "accountEnabled": (frozenset({"eq", "in"}), frozenset({"ne", "not"})),
    "userType": (frozenset({"eq", "in"}), frozenset({"ne", "not", "eq null"})),
    "employeeId": (_STRING_DEFAULT, _STRING_ADVANCED),
    "mailNickname": (_STRING_DEFAULT, _STRING_ADVANCED),
    "givenName": (_STRING_DEFAULT, _STRING_ADVANCED),
    "surname": (_STRING_DEFAULT, _STRING_ADVANCED),
    "jobTitle": (_STRING_DEFAULT, _STRING_ADVANCED),
    "department": (_STRING_DEFAULT, _STRING_ADVANCED),
}
DEFAULT_ORDERBY = frozenset({"displayName", "userPrincipalName"})
# Without advanced query parameters a filter may hold at most this many expressions
# (docs/graph-behaviour.md, "Filter literals and the expression limit").
MAX_DEFAULT_EXPRESSIONS = 15


def property_name(name: str) -> str:
    canonical = CANONICAL.get(name.strip().lower())
    if canonical is None:
        raise bad_request(
            f"Could not find a property named '{name}' on type 'microsoft.graph.user'."
        )
    return canonical


def parse_select(raw: str | None, *, collection: bool = True) -> tuple[str, ...]:
    """The projection, `id` always first; the default set when nothing is selected."""
    if raw is None or not raw.strip():
        return DEFAULT_PROPERTIES
    names = [property_name(part) for part in raw.split(",") if part.strip()]
    refused = [n for n in names if n in SINGLE_ENTITY_PROPERTIES]
    if collection and refused:
        raise ApiError(
            501,
            "NotImplemented",
            f"This operation target is not yet supported. Property '{refused[0]}' "
            "cannot be returned for a collection of users.",
        )
    return tuple(dict.fromkeys(["id", *names]))


def is_eventual(req: EmuRequest) -> bool:
    """The request carries the header `ConsistencyLevel: eventual`."""
    return (req.header("ConsistencyLevel") or "").strip().lower() == "eventual"


def is_advanced(req: EmuRequest) -> bool:
    """Advanced query parameters = header ConsistencyLevel: eventual AND $count=true."""
    return is_eventual(req) and (req.option("$count") or "").lower() == "true"


# -- $filter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    op: str  # eq ne ge le in startswith endswith
    prop: str
    values: tuple[Any, ...]

    @property
    def capability(self) -> str:
        return f"{self.op} null" if self.op in {"eq", "ne"} and self.values == (None,) else self.op


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # and / or
    items: tuple[Node, ...]


Node = Clause | Not | BoolOp

_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|([(),])|([A-Za-z_$][\w/.]*)|(-?\d+(?:\.\d+)?))")
_COMPARE = frozenset({"eq", "ne", "ge", "le", "gt", "lt"})
_FUNCTIONS = frozenset({"startswith", "endswith"})


def _syntax_error(text: str, detail: str) -> ApiError:
    return ApiError(400, "BadRequest", f"Invalid filter clause: {detail} in '{text}'.")


class _Parser:
    """Recursive descent over or > and > not > comparison, as OData orders them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text.rstrip()):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise _syntax_error(text, f"Syntax error at position {pos}")
            group = match.lastindex or 0
            if group == 0:
                raise _syntax_error(text, f"Syntax error at position {pos}")
            self.tokens.append((("str", "punct", "word", "num")[group - 1], match.group(group)))
            pos = match.end()
        self.pos = 0

    def parse(self) -> Node:
        node = self._or()
        if self.pos != len(self.tokens):
            raise _syntax_error(self.text, f"Unexpected '{self.tokens[self.pos][1]}'")
        return node

    def _peek_word(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "word":
            return self.tokens[self.pos][1].lower()
        return None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise _syntax_error(self.text, "Unexpected end of expression")
        token = self.tokens[self.pos]
        if expected is not None and token[1].lower() != expected:
            raise _syntax_error(self.text, f"Expected '{expected}' but found '{token[1]}'")
        self.pos += 1
        return token

    def _or(self) -> Node:
        return self._chain("or", self._and)

    def _and(self) -> Node:
        return self._chain("and", self._unary)

    def _chain(self, op: str, operand: Callable[[], Node]) -> Node:
        items = [operand()]
        while self._peek_word() == op:
            self._take()
            items.append(operand())
        return items[0] if len(items) == 1 else BoolOp(op, tuple(items))

    def _unary(self) -> Node:
        if self._peek_word() == "not":
            self._take()
            return Not(self._unary())
        if self.pos < len(self.tokens) and self.tokens[self.pos][1] == "(":
            self._take()
            node = self._or()
            self._take(")")
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        kind, word = self._take()
        if kind != "word":
            raise _syntax_error(self.text, f"Expected a property but found '{word}'")
        if word.lower() in _FUNCTIONS:
            self._take("(")
            prop = self._take()[1]
            self._take(",")
            value = self._literal()
            self._take(")")
            return Clause(word.lower(), property_name(prop), (value,))
        op = (self._peek_word() or "").lower()
        if op == "in":
            self._take()
            return Clause("in", property_name(word), self._literal_list())
        if op not in _COMPARE:
            raise _syntax_error(self.text, f"Expected an operator after '{word}'")
        self._take()
        return Clause(op, property_name(word), (self._literal(),))

    def _literal_list(self) -> tuple[Any, ...]:
        self._take("(")
        values = [self._literal()]
        while self.pos < len(self.tokens) and self.tokens[self.pos][1] == ",":
            self._take()
            values.append(self._literal())
        self._take(")")
        return tuple(values)

    def _literal(self) -> Any:
        kind, text = self._take()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        keywords: dict[str, Any] = {"true": True, "false": False, "null": None}
        if kind == "word" and text.lower() in keywords:
            return keywords[text.lower()]
        raise _syntax_error(self.text, f"Expected a literal but found '{text}'")


def parse_filter(text: str) -> Node:
    return _Parser(text).parse()


def check_filter(node: Node, *, advanced: bool) -> None:
    """Refuse what Graph refuses: unindexed properties always, advanced operators without the
    advanced query parameters."""
    if isinstance(node, BoolOp):
        for item in node.items:
            check_filter(item, advanced=advanced)
        return
    if isinstance(node, Not):
        if not advanced:
            raise unsupported_query(f"Operator 'not' {ADVANCED_HINT}")
        check_filter(node.operand, advanced=advanced)
        return
    default_ops, advanced_ops = FILTER_SUPPORT.get(node.prop, (frozenset(), frozenset()))
    capability = node.capability
    if capability in default_ops:
        return
    if capability in advanced_ops:
        if not advanced:
            raise unsupported_query(f"Operator '{node.op}' {ADVANCED_HINT}")
        return
    raise unsupported_query(
        f"Unsupported or invalid query filter clause specified for property '{node.prop}' "
        "of resource 'User'."
    )


def expression_count(node: Node) -> int:
    """Expressions as Graph counts them: each value of an `in` list, each operand of and/or."""
    if isinstance(node, Clause):
        return len(node.values) if node.op == "in" else 1
    if isinstance(node, Not):
        return expression_count(node.operand)
    return sum(expression_count(item) for item in node.items)


def check_expression_limit(node: Node, *, advanced: bool) -> None:
    count = expression_count(node)
    if count > MAX_DEFAULT_EXPRESSIONS and not advanced:
        raise unsupported_query(
            "Too many child clauses specified in search filter expression containing 'OR' "
            f"operators: {count}. Max allowed: {MAX_DEFAULT_EXPRESSIONS}."
        )


def _fold(value: Any) -> Any:
    # lower(), not casefold(): the directory ignores case letter by letter, and casefold would
    # make "Strauß" equal "Strauss", a match Graph never makes.
    return value.lower() if isinstance(value, str) else value


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "eq":
        return bool(_fold(actual) == _fold(expected))
    if op == "ne":
        return bool(_fold(actual) != _fold(expected))
    if actual is None or expected is None:
        return False
    left, right = _fold(actual), _fold(expected)
    return bool(
        {"ge": left >= right, "le": left <= right, "gt": left > right, "lt": left < right}[op]
    )


def _clause_matches(clause: Clause, props: Mapping[str, Any]) -> bool:
    actual = props.get(clause.prop)
    if clause.op == "in":
        return any(_compare("eq", actual, v) for v in clause.values)
    if clause.op in _FUNCTIONS:
        if not isinstance(actual, str) or not isinstance(clause.values[0], str):
            return False
        method = str.startswith if clause.op == "startswith" else str.endswith
        return method(actual.lower(), clause.values[0].lower())
    return _compare(clause.op, actual, clause.values[0])


def matches(node: Node, props: Mapping[str, Any]) -> bool:
    """Evaluate as Entra does: string comparisons ignore case."""
    if isinstance(node, Clause):
        return _clause_matches(node, props)
    if isinstance(node, Not):
        return not matches(node.operand, props)
    results = (matches(item, props) for item in node.items)
    return all(results) if node.op == "and" else any(results)


def id_filter(node: Node, limit: int = 50) -> tuple[str, ...]:
    """The ids of a delta `$filter`, which may only be `id eq '...'` joined by `or`."""
    clauses = node.items if isinstance(node, BoolOp) and node.op == "or" else (node,)
    ids: list[str] = []
    for clause in clauses:
        if not (isinstance(clause, Clause) and clause.prop == "id" and clause.op == "eq"):
            raise unsupported_query("Unsupported Query.")
        ids.append(str(clause.values[0]))
    if len(ids) > limit:
        raise unsupported_query("Unsupported Query.")
    return tuple(ids)


# -- $orderby -----------------------------------------------------------------------------


def parse_orderby(raw: str) -> tuple[str, bool]:
    """(property, descending)."""
    parts = raw.split()
    if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in {"asc", "desc"}):
        raise bad_request(f"Invalid $orderby expression '{raw}'.")
    return property_name(parts[0]), len(parts) == 2 and parts[1].lower() == "desc"
