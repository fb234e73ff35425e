"""`/restore --table T --where "EXPR"`: the expression parsed to a small grammar, checked, and rendered; never spliced.

    expr      := term (OR term)*
    term      := factor (AND factor)*
    factor    := NOT factor | "(" expr ")" | predicate
    predicate := column ( ("=" | "<>" | "!=" | "<" | "<=" | ">" | ">=") literal
                        | [NOT] IN "(" literal ("," literal)* ")"
                        | IS [NOT] NULL
                        | [NOT] BETWEEN literal AND literal
                        | [NOT] LIKE literal )
    column    := a name (folded to lower case, as PostgreSQL does) or a "quoted name": one of the table's columns
    literal   := a number (-12, 3.5), a 'string' ('' for a quote), TRUE or FALSE

Anything else (a semicolon, a comment, a function, a subquery, a column the table does not have, an unterminated
string, a nesting deeper than MAX_DEPTH) is refused with one sentence naming it. A value is always a parameter, sent
without a type, so that PostgreSQL reads it as the compared column's type (`id = '7'` and `id = 7` are the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from psycopg import sql

from bot.stack.compose import StackError

MAX_LENGTH = 4000  # characters of the whole expression (the option itself is limited to it)
MAX_DEPTH = 16  # nested parentheses and NOTs
MAX_ITEMS = 1000  # values in one IN list
MAX_PREDICATES = 200

KEYWORDS = {"and", "or", "not", "in", "is", "null", "between", "like", "true", "false"}
# Words that mean someone is writing SQL, not a condition: named in the refusal.
STATEMENTS = {"select", "insert", "update", "delete", "drop", "union", "from", "with", "exists", "create", "alter",
              "truncate", "grant", "copy", "execute", "returning", "into", "values", "table"}
COMPARISONS = {"=": "=", "<>": "<>", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class WhereError(StackError):
    """The --where expression is refused; one sentence for the user."""


# ---- tokens ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # name, quoted, number, string, op, punct, end
    text: str  # for a name: lower case; for a quoted name or a string: its value
    at: int  # 1-based character position, for messages


_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise WhereError(f"--where is {len(text)} characters long; it may be at most {MAX_LENGTH}.")
    tokens: list[Token] = []
    at = 0
    while at < len(text):
        ch = text[at]
        if ch.isspace():
            at += 1
        elif text.startswith("--", at) or text.startswith("/*", at):
            raise WhereError(f"--where cannot hold a comment ({text[at:at + 2]} at character {at + 1}).")
        elif ch == "'":
            value, at = _quoted(text, at, "'", "string")
            tokens.append(Token("string", value, at))
        elif ch == '"':
            start = at
            value, at = _quoted(text, at, '"', "quoted column name")
            if not value:
                raise WhereError(f"--where has an empty quoted column name at character {start + 1}.")
            tokens.append(Token("quoted", value, start + 1))
        elif (match := _NUMBER.match(text, at)) and (ch != "-" or not _after_value(tokens)):
            end = match.end()
            if end < len(text) and (text[end].isalpha() or text[end] == "_"):
                raise WhereError(f"--where has {text[at:end + 1]!r} at character {at + 1}, which is neither a number nor a name.")
            tokens.append(Token("number", match.group(), at + 1))
            at = end
        elif match := _NAME.match(text, at):
            tokens.append(Token("name", match.group().lower(), at + 1))
            at = match.end()
        elif (two := text[at:at + 2]) in ("<>", "!=", "<=", ">="):
            tokens.append(Token("op", two, at + 1))
            at += 2
        elif ch in "=<>":
            tokens.append(Token("op", ch, at + 1))
            at += 1
        elif ch in "(),":
            tokens.append(Token("punct", ch, at + 1))
            at += 1
        else:
            shown = ch if ch.isprintable() else f"U+{ord(ch):04X}"
            raise WhereError(
                f"--where cannot contain {shown!r} (character {at + 1}); it takes column comparisons joined by AND, OR and NOT."
            )
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _after_value(tokens: list[Token]) -> bool:
    """A '-' right after a value would be subtraction, which the grammar has not; before a number it is its sign."""
    return bool(tokens) and tokens[-1].kind in ("number", "string", "quoted") or (bool(tokens) and tokens[-1].text == ")")


def _quoted(text: str, at: int, quote: str, what: str) -> tuple[str, int]:
    """The value of a quoted string or name starting at AT (a doubled quote is one), and the position after it."""
    parts, i = [], at + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise WhereError(f"A {what} in --where is not closed (the {quote} at character {at + 1}).")
        parts.append(text[i:end])
        if text.startswith(quote * 2, end):
            parts.append(quote)
            i = end + 2
            continue
        return "".join(parts), end + 1


# ---- the tree ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: str | bool  # a number or a string as text (PostgreSQL reads it as the column's type); TRUE/FALSE


@dataclass(frozen=True)
class Compare:
    column: str
    op: str
    value: Literal


@dataclass(frozen=True)
class InList:
    column: str
    values: tuple[Literal, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool = False


@dataclass(frozen=True)
class Between:
    column: str
    low: Literal
    high: Literal
    negated: bool = False


@dataclass(frozen=True)
class Like:
    column: str
    pattern: Literal
    negated: bool = False


@dataclass(frozen=True)
class Not:
    item: "Node"


@dataclass(frozen=True)
class And:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Node", ...]


Node = Union[Compare, InList, IsNull, Between, Like, Not, And, Or]


# ---- the parser --------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token], columns: list[str], table: str):
        self.tokens, self.at = tokens, 0
        self.columns, self.table = columns, table
        self.depth = self.predicates = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def word(self, *words: str) -> bool:
        if self.token.kind == "name" and self.token.text in words:
            self.at += 1
            return True
        return False

    def punct(self, ch: str) -> bool:
        if self.token.kind == "punct" and self.token.text == ch:
            self.at += 1
            return True
        return False

    def expect_punct(self, ch: str, after: str) -> None:
        if not self.punct(ch):
            raise WhereError(f"--where needs {ch!r} {after}, not {self.shown(self.token)}.")

    @staticmethod
    def shown(token: Token) -> str:
        if token.kind == "end":
            return "the end"
        if token.kind == "string":
            return f"the string at character {token.at}"
        return f"{token.text[:30]!r} at character {token.at}"

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise WhereError("--where is empty; give a condition such as id IN (1, 2, 3).")
        node = self.expr()
        if self.token.kind != "end":
            raise WhereError(f"--where has {self.shown(self.token)} where AND, OR or the end should be.")
        return node

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise WhereError(f"--where nests deeper than {MAX_DEPTH} levels of parentheses and NOT.")

    def expr(self) -> Node:
        items = [self.term()]
        while self.word("or"):
            items.append(self.term())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def term(self) -> Node:
        items = [self.factor()]
        while self.word("and"):
            items.append(self.factor())
        return items[0] if len(items) == 1 else And(tuple(items))

    def factor(self) -> Node:
        if self.word("not"):
            self.deeper()
            node = Not(self.factor())
            self.depth -= 1
            return node
        if self.punct("("):
            self.deeper()
            node = self.expr()
            self.expect_punct(")", "to close a parenthesis")
            self.depth -= 1
            return node
        return self.predicate()

    def column(self) -> str:
        token = self.take()
        if token.kind == "name":
            if token.text in STATEMENTS:
                raise WhereError(f"--where is a condition, not SQL: {token.text.upper()} at character {token.at} is refused.")
            if token.text in KEYWORDS:
                raise WhereError(f"--where needs a column name at character {token.at}, not {token.text.upper()}.")
        elif token.kind != "quoted":
            raise WhereError(f"--where needs a column name where it has {self.shown(token)}.")
        if self.token.kind == "punct" and self.token.text == "(":
            raise WhereError(f"--where cannot call functions ({token.text[:30]} at character {token.at}); compare columns with values.")
        if token.text not in self.columns:
            listed = ", ".join(self.columns[:20]) + (", …" if len(self.columns) > 20 else "")
            raise WhereError(f"{self.table} has no column {token.text[:40]!r}; its columns are {listed}.")
        return token.text

    def literal(self, after: str) -> Literal:
        token = self.take()
        if token.text == "(" and token.kind == "punct" and self.token.kind == "name" and self.token.text in STATEMENTS:
            token = self.token
        if token.kind in ("number", "string"):
            return Literal(token.text)
        if token.kind == "name" and token.text in ("true", "false"):
            return Literal(token.text == "true")
        if token.kind == "name" and token.text == "null":
            raise WhereError(f"--where compares with NULL at character {token.at}: use IS NULL or IS NOT NULL.")
        if token.kind == "name" and token.text in STATEMENTS:
            raise WhereError(f"--where cannot hold a subquery or SQL ({token.text.upper()} at character {token.at}).")
        if token.kind in ("name", "quoted"):
            raise WhereError(f"--where compares a column with a value, not with {token.text[:30]!r} (character {token.at}).")
        raise WhereError(f"--where needs a value {after}, not {self.shown(token)}.")

    def predicate(self) -> Node:
        self.predicates += 1
        if self.predicates > MAX_PREDICATES:
            raise WhereError(f"--where has more than {MAX_PREDICATES} conditions.")
        column = self.column()
        token = self.token
        if token.kind == "op":
            self.take()
            return Compare(column, COMPARISONS[token.text], self.literal(f"after {token.text}"))
        if self.word("is"):
            negated = self.word("not")
            if not self.word("null"):
                raise WhereError(f"--where needs NULL after IS{' NOT' if negated else ''}, not {self.shown(self.token)}.")
            return IsNull(column, negated)
        negated = self.word("not")
        if self.word("in"):
            self.expect_punct("(", "after IN")
            values = [self.literal("in the IN list")]
            while self.punct(","):
                values.append(self.literal("in the IN list"))
                if len(values) > MAX_ITEMS:
                    raise WhereError(f"--where has an IN list of more than {MAX_ITEMS} values.")
            self.expect_punct(")", "to close the IN list")
            return InList(column, tuple(values), negated)
        if self.word("between"):
            low = self.literal("after BETWEEN")
            if not self.word("and"):
                raise WhereError(f"--where needs AND in BETWEEN, not {self.shown(self.token)}.")
            return Between(column, low, self.literal("after BETWEEN … AND"), negated)
        if self.word("like"):
            return Like(column, self.literal("after LIKE"), negated)
        raise WhereError(f"--where needs a comparison after {column}, not {self.shown(self.token)}.")


def parse(text: str, columns: list[str], table: str = "the table") -> Node:
    """The expression's tree, every column one of COLUMNS; WhereError (one sentence) for anything else."""
    return _Parser(tokenize(text), list(columns), table).parse()


def columns_of(node: Node) -> set[str]:
    if isinstance(node, (And, Or)):
        return set().union(*(columns_of(item) for item in node.items))
    if isinstance(node, Not):
        return columns_of(node.item)
    return {node.column}


# ---- rendering ---------------------------------------------------------------------------------------------


def render(node: Node) -> tuple[sql.Composable, list]:
    """SQL with a placeholder for every value, and the values in order."""
    params: list = []
    return _render(node, params), params


def _value(literal: Literal, params: list) -> sql.Composable:
    params.append(literal.value)
    return sql.Placeholder()


def _render(node: Node, params: list) -> sql.Composable:
    if isinstance(node, (And, Or)):
        joiner = sql.SQL(" AND " if isinstance(node, And) else " OR ")
        return sql.SQL("({})").format(joiner.join(_render(item, params) for item in node.items))
    if isinstance(node, Not):
        return sql.SQL("(NOT {})").format(_render(node.item, params))
    column = sql.Identifier(node.column)
    if isinstance(node, Compare):
        return sql.SQL("({} {} {})").format(column, sql.SQL(node.op), _value(node.value, params))
    if isinstance(node, IsNull):
        return sql.SQL("({} IS NOT NULL)" if node.negated else "({} IS NULL)").format(column)
    negation = sql.SQL("NOT " if node.negated else "")
    if isinstance(node, InList):
        values = sql.SQL(", ").join(_value(value, params) for value in node.values)
        return sql.SQL("({} {}IN ({}))").format(column, negation, values)
    if isinstance(node, Between):
        low, high = _value(node.low, params), _value(node.high, params)
        return sql.SQL("({} {}BETWEEN {} AND {})").format(column, negation, low, high)
    return sql.SQL("({} {}LIKE {})").format(column, negation, _value(node.pattern, params))
