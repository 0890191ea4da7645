"""SPEC §4: the query parser — every operator, and errors that point at the column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.core import query as q
from monitor.errors import QueryError

ERRORS = json.loads((Path(__file__).parent / "data" / "query_errors.json").read_text("utf-8"))


@pytest.mark.parametrize(("case", "text", "column", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_the_column(case: str, text: str, column: int, message: str) -> None:
    with pytest.raises(QueryError) as err:
        q.parse(text)
    assert err.value.column == column
    assert message in err.value.message
    assert err.value.pointer().splitlines()[1] == " " * (column - 1) + "^"


def test_adjacency_means_and() -> None:
    assert q.parse("taiwan china") == q.And((q.Term("taiwan", 1), q.Term("china", 8)))


def test_precedence_near_binds_tighter_than_and_than_or() -> None:
    tree = q.parse("a OR b c NEAR/3 d")
    assert isinstance(tree, q.Or)
    a, rest = tree.children
    assert a == q.Term("a", 1)
    assert isinstance(rest, q.And)
    assert isinstance(rest.children[1], q.Near)
    assert rest.children[1].distance == 3


def test_lower_case_operators_are_terms() -> None:
    assert q.parse("war and peace") == q.And(
        (q.Term("war", 1), q.Term("and", 5), q.Term("peace", 9))
    )
    assert q.parse("not") == q.Term("not", 1)


def test_operator_lookalikes_are_the_unquoted_words_and_or_not_not_in_capitals() -> None:
    tree = q.parse('title:(china or russia) And NOT "and" =or not* (x Not y)')
    assert [(t.text, t.column) for t in q.operator_lookalikes(tree)] == [
        ("or", 14),
        ("And", 25),
        ("Not", 51),
    ]
    assert q.operator_lookalikes(q.parse("China OR Russia AND NOT sport")) == []


def test_not_alone_and_a_not_b() -> None:
    assert q.parse("NOT sport") == q.Not(q.Term("sport", 5), 1)
    assert q.parse("a NOT b") == q.And((q.Term("a", 1), q.Not(q.Term("b", 7), 3)))


def test_phrases_in_three_quote_styles() -> None:
    for text in ('"خط أحمر"', "“خط أحمر”", "«خط أحمر»"):
        assert q.parse(text) == q.Phrase("خط أحمر", 1)


def test_prefix_wildcard() -> None:
    assert q.parse("الصين*") == q.Term("الصين", 1, prefix=True)


def test_entities_and_countries() -> None:
    assert q.parse("@taiwan AND @red-line") == q.And(
        (q.EntityRef("taiwan", 1), q.EntityRef("red-line", 13))
    )
    assert q.parse("@country:tw") == q.CountryRef("TW", 1)


def test_fields_and_filters() -> None:
    assert q.parse('title:"red line"') == q.Field("title", q.Phrase("red line", 7), 1)
    assert q.parse("body:(a OR b)") == q.Field("body", q.Or((q.Term("a", 7), q.Term("b", 12))), 1)
    assert q.parse("source:aawsat lang:ar") == q.And(
        (q.Filter("source", "aawsat", 1), q.Filter("lang", "ar", 15))
    )


def test_validate_checks_entities_and_countries() -> None:
    q.validate("@taiwan AND @country:TW", {"taiwan"})
    with pytest.raises(QueryError) as err:
        q.validate("x AND @taiwan", {"china"})
    assert err.value.column == 7
    assert "unknown entity @taiwan" in err.value.message
    with pytest.raises(QueryError) as err:
        q.validate("@country:XQ", set())
    assert "unknown country code 'XQ'" in err.value.message


def test_nesting_is_bounded() -> None:
    with pytest.raises(QueryError, match="nested deeper"):
        q.parse("(" * 60 + "a" + ")" * 60)
