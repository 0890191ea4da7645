"""The watchlist query language (SPEC §4): lexer → parser → AST, with errors that name the column.

    query   := or
    or      := and ("OR" and)*
    and     := near (["AND"] near)*          adjacency means AND
    near    := unary ("NEAR/" N unary)*      both sides within N tokens of each other, either order
    unary   := "NOT" unary | primary
    primary := "(" query ")" | field ":" primary | TERM | =TERM | "PHRASE" | ="PHRASE" | TERM*
             | @entity | @country:CC
    field   := title | body | source | lang

Operators are upper-case words; `and`/`or`/`not` in lower case are ordinary terms. Phrases may be
quoted with "…", “…” or «…». `=` right before a word or a quoted phrase asks for its words as
written (normalised, without the clitic rules of Arabic); it takes nothing else: not a prefix
(`=x*`: a form as written has no other endings), an entity, parentheses, or a space after it.
This module only parses: it knows nothing of normalisation or matching (`core.match` compiles the
AST), except `validate`, which also checks entity names for the config.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

from monitor.core.text import term_tokens
from monitor.errors import QueryError

TEXT_FIELDS = ("title", "body")
FILTER_FIELDS = ("source", "lang")
FIELDS = TEXT_FIELDS + FILTER_FIELDS
_QUOTES = {'"': '"', "“": "”", "«": "»", "„": "“"}
_CLOSERS = {'"', "”", "»", "“"}
_SPECIAL = set("()") | set(_QUOTES) | _CLOSERS


# ---- AST -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """A word (or several, from punctuation inside it: `U.S.` is a phrase), optionally a prefix,
    or as written (`=word`)."""

    text: str
    column: int
    prefix: bool = False
    as_written: bool = False


@dataclass(frozen=True)
class Phrase:
    text: str
    column: int
    as_written: bool = False


@dataclass(frozen=True)
class EntityRef:
    name: str
    column: int


@dataclass(frozen=True)
class CountryRef:
    code: str  # upper-case ISO 3166 alpha-2
    column: int


@dataclass(frozen=True)
class Field:
    """`title:x` / `body:x` scope a sub-query; `source:x` / `lang:x` filter by metadata (value only)."""

    name: str
    child: Node
    column: int


@dataclass(frozen=True)
class Filter:
    name: str  # "source" or "lang"
    value: str
    column: int


@dataclass(frozen=True)
class Not:
    child: Node
    column: int


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Near:
    left: Node
    right: Node
    distance: int
    column: int


Node = Term | Phrase | EntityRef | CountryRef | Field | Filter | Not | And | Or | Near


# ---- lexer -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # LPAREN RPAREN AND OR NOT NEAR PHRASE TERM ENTITY COUNTRY FIELD END
    value: str
    column: int  # 1-based
    number: int = 0
    as_written: bool = False  # a TERM or PHRASE right after `=`


def _lex(query: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        col = i + 1
        if c.isspace():
            i += 1
        elif c in "()":
            out.append(_Tok("LPAREN" if c == "(" else "RPAREN", c, col))
            i += 1
        elif c == "=" and query[i + 1 : i + 2] in _QUOTES:
            phrase, i = _phrase(query, i + 1)
            out.append(_Tok("PHRASE", phrase, col, as_written=True))
        elif c in _QUOTES:
            phrase, i = _phrase(query, i)
            out.append(_Tok("PHRASE", phrase, col))
        elif c in _CLOSERS:
            raise QueryError(f"closing {c} without an opening quote", col, query)
        else:
            j = i
            while j < n and not query[j].isspace() and query[j] not in _SPECIAL:
                j += 1
            word = query[i:j]
            out.append(_word_token(word, col, query))
            if out[-1].kind == "FIELD":
                j = i + len(word.split(":", 1)[0]) + 1  # continue right after the colon
            i = j
    out.append(_Tok("END", "", n + 1))
    return out


def _phrase(query: str, i: int) -> tuple[str, int]:
    """The text of the phrase whose opening quote is at `i`, and where the query goes on."""
    closer = _QUOTES[query[i]]
    j = query.find(closer, i + 1)
    if j < 0:
        raise QueryError(f"unclosed phrase: no closing {closer}", i + 1, query)
    text = query[i + 1 : j]
    if not text.strip():
        raise QueryError("empty phrase", i + 1, query)
    return text, j + 1


def _as_written_token(word: str, col: int, query: str) -> _Tok:
    """`=word`: the word as written. Anything else after `=` is an error at the `=`."""
    rest = word[1:]
    example = "e.g. =تايوان"
    if not rest:
        after = query[col : col + 1]
        if after == "(":
            raise QueryError(
                f"= applies to one word or a quoted phrase, not to parentheses ({example})",
                col,
                query,
            )
        raise QueryError(f"= needs a word right after it, with no space ({example})", col, query)
    if rest.startswith("="):
        raise QueryError(f"one = is enough ({example})", col, query)
    if rest.startswith("@"):
        raise QueryError(
            "= applies to a word or a quoted phrase, not to an entity "
            "(list the forms you want among its aliases)",
            col,
            query,
        )
    if "*" in rest:
        raise QueryError(
            "= and * do not go together: =word is one form as written, word* any word that "
            "starts with it",
            col,
            query,
        )
    head, colon, _ = rest.partition(":")
    if colon and head.isascii() and head.isalpha() and head.lower() in FIELDS:
        raise QueryError(f"= goes after the field: {head}:={rest[len(head) + 1 :]}", col, query)
    if rest in ("AND", "OR", "NOT", "NEAR") or rest.startswith("NEAR/"):
        raise QueryError(
            f"= needs a word, not the operator {rest} (write it in lower case to mean the word)",
            col,
            query,
        )
    return _Tok("TERM", rest, col, as_written=True)


def _word_token(word: str, col: int, query: str) -> _Tok:
    if word.startswith("="):
        return _as_written_token(word, col, query)
    if word in ("AND", "OR", "NOT"):
        return _Tok(word, word, col)
    if word.startswith("NEAR"):
        rest = word[4:]
        if rest == "":
            raise QueryError("NEAR needs a distance, e.g. NEAR/5", col, query)
        if rest == "/":
            raise QueryError("NEAR/ without a number, e.g. NEAR/5", col, query)
        if rest.startswith("/"):
            digits = rest[1:]
            if not digits.isascii() or not digits.isdigit():
                raise QueryError(f"NEAR/ needs a whole number, not {digits!r}", col + 5, query)
            distance = int(digits)
            if not 1 <= distance <= 1000:
                raise QueryError("NEAR/ distance must be between 1 and 1000", col + 5, query)
            return _Tok("NEAR", word, col, distance)
    if word.startswith("@"):
        name = word[1:]
        if name.lower().startswith("country:"):
            code = name.split(":", 1)[1]
            if len(code) != 2 or not code.isascii() or not code.isalpha():
                raise QueryError(
                    f"@country: needs a two-letter country code such as TW, not {code!r}",
                    col + 9,
                    query,
                )
            return _Tok("COUNTRY", code.upper(), col)
        if not name:
            raise QueryError("@ needs an entity name, e.g. @taiwan", col, query)
        if not all(ch.isalnum() or ch in "-_" for ch in name):
            raise QueryError(
                f"@{name} is not an entity name (letters, digits, - and _)", col, query
            )
        return _Tok("ENTITY", name, col)
    head, colon, _ = word.partition(":")
    if colon and head and head.isascii() and head.isalpha():
        if head.lower() not in FIELDS:
            raise QueryError(f"unknown field {head!r}; fields are {', '.join(FIELDS)}", col, query)
        return _Tok("FIELD", head.lower(), col)
    if word.startswith("*"):
        raise QueryError(
            "leading wildcards are not supported (write the start: missile*)", col, query
        )
    star = word.find("*")
    if star >= 0 and star != len(word) - 1:
        raise QueryError("a wildcard may only end a term, e.g. missile*", col + star, query)
    return _Tok("TERM", word, col)


# ---- parser ----------------------------------------------------------------------------------------

_PRIMARY_START = {"LPAREN", "PHRASE", "TERM", "ENTITY", "COUNTRY", "FIELD", "NOT"}
MAX_DEPTH = 40  # nested parentheses/NOTs; deeper is surely a mistake and would only cost stack


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.toks = _lex(query)
        self.pos = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def fail(self, message: str, tok: _Tok) -> QueryError:
        return QueryError(message, tok.column, self.query)

    def parse(self) -> Node:
        if self.peek().kind == "END":
            raise self.fail("empty query", self.peek())
        node = self.parse_or()
        tok = self.peek()
        if tok.kind == "RPAREN":
            raise self.fail("unbalanced parenthesis: ) without (", tok)
        if tok.kind != "END":  # pragma: no cover - every other token is consumed by parse_and
            raise self.fail(f"unexpected {tok.value!r}", tok)
        return node

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while self.peek().kind == "OR":
            op = self.take()
            self.expect_operand(op)
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self) -> Node:
        children = [self.parse_near()]
        while True:
            tok = self.peek()
            if tok.kind == "AND":
                self.take()
                self.expect_operand(tok)
            elif tok.kind not in _PRIMARY_START:
                break
            children.append(self.parse_near())
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_near(self) -> Node:
        node = self.parse_unary()
        while self.peek().kind == "NEAR":
            op = self.take()
            self.expect_operand(op)
            right = self.parse_unary()
            for side in (node, right):
                if not _is_positive(side):
                    raise self.fail(
                        f"{op.value} needs words on both sides, not NOT or a filter", op
                    )
            node = Near(node, right, op.number, op.column)
        return node

    def parse_unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "NOT":
            self.take()
            self.expect_operand(tok)
            return Not(self.parse_unary(), tok.column)
        return self.parse_primary()

    def expect_operand(self, op: _Tok) -> None:
        nxt = self.peek()
        if nxt.kind not in _PRIMARY_START:
            where = "at the end" if nxt.kind == "END" else f"before {nxt.value!r}"
            raise self.fail(f"{op.value} needs a term after it ({where})", op)

    def parse_primary(self) -> Node:
        tok = self.take()
        kind = tok.kind
        if kind == "LPAREN":
            if self.peek().kind == "RPAREN":
                raise self.fail("empty parentheses", tok)
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"parentheses nested deeper than {MAX_DEPTH}", tok)
            node = self.parse_or()
            self.depth -= 1
            close = self.peek()
            if close.kind != "RPAREN":
                raise self.fail("unbalanced parenthesis: ( is never closed", tok)
            self.take()
            return node
        if kind == "TERM":
            prefix = tok.value.endswith("*")
            text = tok.value.rstrip("*")
            words = term_tokens(text)
            if not words:
                raise self.fail(f"{tok.value!r} has no letters or digits to match", tok)
            if prefix and len(words[-1]) < 2:
                raise self.fail("a wildcard needs at least 2 letters before *", tok)
            return Term(text, tok.column, prefix, tok.as_written)
        if kind == "PHRASE":
            if not term_tokens(tok.value):
                raise self.fail(f"phrase {tok.value!r} has no letters or digits to match", tok)
            return Phrase(tok.value, tok.column, tok.as_written)
        if kind == "ENTITY":
            return EntityRef(tok.value, tok.column)
        if kind == "COUNTRY":
            return CountryRef(tok.value, tok.column)
        if kind == "FIELD":
            return self.parse_field(tok)
        if kind in ("AND", "OR") or kind == "NEAR":
            raise self.fail(f"{tok.value} needs a term before it", tok)
        if kind == "RPAREN":
            raise self.fail("unbalanced parenthesis: ) without (", tok)
        raise self.fail("expected a term", tok)  # END

    def parse_field(self, tok: _Tok) -> Node:
        nxt = self.peek()
        if nxt.kind not in _PRIMARY_START or nxt.kind == "NOT":
            raise self.fail(f"{tok.value}: needs a value after the colon", tok)
        if tok.value in FILTER_FIELDS:
            if nxt.kind not in ("TERM", "PHRASE"):
                raise self.fail(f"{tok.value}: takes a plain name, e.g. {tok.value}:aawsat", tok)
            value = self.take()
            if value.value.endswith("*"):
                raise self.fail(f"{tok.value}: does not take wildcards", value)
            if value.as_written:
                raise self.fail(f"{tok.value}: takes a plain name, without =", value)
            return Filter(tok.value, value.value.strip(), tok.column)
        child = self.parse_primary()
        if _has_field(child):
            raise self.fail(f"{tok.value}: cannot contain another field", tok)
        return Field(tok.value, child, tok.column)


def _is_positive(node: Node) -> bool:
    """True if the node matches by the presence of words, so it has positions (NEAR needs them)."""
    match node:
        case Not() | Filter():
            return False
        case Field(child=child):
            return _is_positive(child)
        case And(children=children) | Or(children=children):
            return all(_is_positive(c) for c in children)
        case Near():
            return True
    return True


def _has_field(node: Node) -> bool:
    match node:
        case Field() | Filter():
            return True
        case Not(child=child):
            return _has_field(child)
        case And(children=children) | Or(children=children):
            return any(_has_field(c) for c in children)
        case Near(left=left, right=right):
            return _has_field(left) or _has_field(right)
    return False


@lru_cache(maxsize=65536)
def parse(query: str) -> Node:
    """Parse a query into its AST, or raise QueryError with the 1-based column of the fault.

    Cached (the AST is immutable): the config check and the matcher parse the same queries."""
    return _Parser(query).parse()


def leaves(node: Node) -> list[Term | Phrase | EntityRef | CountryRef | Filter]:
    """The query's terms, phrases, references and filters, in order."""
    match node:
        case Field(child=child) | Not(child=child):
            return leaves(child)
        case And(children=children) | Or(children=children):
            return [leaf for c in children for leaf in leaves(c)]
        case Near(left=left, right=right):
            return leaves(left) + leaves(right)
    return [node]


def references(node: Node) -> list[EntityRef | CountryRef]:
    """Every @entity and @country:CC the query uses, in order."""
    return [leaf for leaf in leaves(node) if isinstance(leaf, EntityRef | CountryRef)]


def operator_lookalikes(node: Node) -> list[Term]:
    """The words `and`, `or` and `not` not written in capitals: ordinary terms that an item must
    contain like any other, though whoever wrote them most likely meant the operator. `=and`
    and a quoted "and" ask for the word on purpose and are not listed."""
    return [
        leaf
        for leaf in leaves(node)
        if isinstance(leaf, Term)
        and not (leaf.as_written or leaf.prefix)
        and leaf.text.upper() in ("AND", "OR", "NOT")
    ]


def validate(query: str, entity_names: Collection[str]) -> None:
    """Raise QueryError if `query` does not parse or uses an entity or country that does not exist."""
    from monitor.core.entities import is_country_code  # deferred: loads CLDR data only when asked

    for ref in references(parse(query)):
        if isinstance(ref, EntityRef) and ref.name not in entity_names:
            known = ", ".join(sorted(entity_names)) or "none defined"
            raise QueryError(f"unknown entity @{ref.name} (entities: {known})", ref.column, query)
        if isinstance(ref, CountryRef) and not is_country_code(ref.code):
            raise QueryError(f"unknown country code {ref.code!r}", ref.column, query)
