"""SPEC §3: normalisation and tokens, from the data table in tests/data/normalisation.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.core.text import NormalizedText, fits_cp1252, fold_word_end, normalize, tokens

CASES = json.loads((Path(__file__).parent / "data" / "normalisation.json").read_text("utf-8"))


@pytest.mark.parametrize(("rule", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_tokens_follow_every_rule(rule: str, text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


@pytest.mark.parametrize(("rule", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_token_offsets_point_back_into_the_original(
    rule: str, text: str, expected: list[str]
) -> None:
    """Every token maps to an original span whose own normalisation is that token (the matcher's
    tokens keep ة and أ at a word's end; folded, they are the tokens of `tokens`)."""
    nt = NormalizedText.of(text)
    assert [fold_word_end(t) for t in nt.tokens] == expected
    for i, token in enumerate(nt.tokens):
        start, end = nt.to_original(*nt.token_span(i))
        assert 0 <= start < end <= len(text)
        assert tokens(text[start:end]) == [fold_word_end(token)], (text[start:end], token)


WORD_ENDS = json.loads((Path(__file__).parent / "data" / "word_ends.json").read_text("utf-8"))


@pytest.mark.parametrize(("case", "text", "expected"), WORD_ENDS, ids=[c[0] for c in WORD_ENDS])
def test_the_matcher_reads_the_letters_rule_7_judges_as_written(
    case: str, text: str, expected: list[str]
) -> None:
    """A ة, or an alif with hamza, at the end of a word stays in the text the matcher reads;
    everywhere else, and in `tokens`, rule 3 folds it."""
    nt = NormalizedText.of(text)
    assert nt.tokens == expected
    assert tokens(text) == [fold_word_end(t) for t in expected]
    assert len(nt.text) == len(normalize(text))  # offsets do not move


def test_normalize_is_idempotent() -> None:
    for _, text, _ in CASES:
        assert normalize(normalize(text)) == normalize(text)


def test_offsets_survive_mixed_expansions_and_deletions() -> None:
    # NBSP (NFKC → space), a lam-alef ligature (1 → 2), harakat (deleted), ß (casefold 1 → 2)
    text = "Straße\u00a0ﻻ تَايْوَان «أول خط أحمر»"
    nt = NormalizedText.of(text)
    spans = [nt.to_original(*nt.token_span(i)) for i in range(len(nt.tokens))]
    assert [text[s:e] for s, e in spans] == ["Straße", "ﻻ", "تَايْوَان", "أول", "خط", "أحمر"]


@pytest.mark.parametrize(
    "text",
    [c[1] for c in CASES]
    + [
        "\u064bتايوان",  # a deleted mark first
        "تايوان\u064b\u0651",  # and last
        "قَضِيَّةُ تَايْوَانَ هِيَ «أَوَّلُ خَطٍّ أَحْمَرَ»",
        "قَضِيَّةُ تَايْوَانَ هِيَ «أَوَّلُ خَطٍّ أَحْمَرَ» " * 4,  # fully vocalised: many marks
        "plain ascii, Taiwan's line",
        "",
    ],
)
def test_quick_offset_map_agrees_with_the_exact_one(text: str) -> None:
    """Texts that only lose marks get their offset map while normalising; it must equal the map
    built character by character from the original."""
    from monitor.core.text import _OffsetMap

    quick = NormalizedText.of(text)
    exact = _OffsetMap.build(text)
    for offset in range(len(quick.text) + 1):
        assert quick.to_original(offset, offset) == (exact.start(offset), exact.end(offset))


@pytest.mark.parametrize(
    "text",
    [c[1] for c in CASES]
    + [
        "Straße\u00a0ﻻ تَايْوَان «أول خط أحمر»",
        "قَضِيَّةُ تَايْوَانَ هِيَ «أَوَّلُ خَطٍّ أَحْمَرَ» " * 4,
        "\u064bتايوان\u064b\u0651 x",
    ],
)
def test_spans_mapped_in_one_call_agree_with_one_at_a_time(text: str) -> None:
    """The matcher maps its hits with `original_spans` (its own token offsets and, for a text
    that only lost marks, its own map lookups): every span it can be asked for — whole tokens,
    parts of one, runs of several — maps as `to_original` maps it, then takes in the harakat
    and tatweel written on its last letter."""
    nt = NormalizedText.of(text)
    words = nt.tokens
    asked = [(i, 0, i, len(w)) for i, w in enumerate(words)]
    asked += [(i, 1, i, len(w) - 1) for i, w in enumerate(words) if len(w) > 2]
    asked += [(i, 0, i + 1, len(words[i + 1])) for i in range(len(words) - 1)]
    expected = []
    for first, start, last, end in asked:
        offset, _ = nt.token_span(first)
        last_offset, _ = nt.token_span(last)
        original_start, original_end = nt.to_original(offset + start, last_offset + end)
        while original_end < len(text) and (
            "\u064b" <= text[original_end] <= "\u065f" or text[original_end] in "\u0670\u0640"
        ):
            original_end += 1
        expected.append((original_start, original_end))
    assert nt.original_spans(asked) == expected
    assert nt.original_spans(list(reversed(asked))) == list(reversed(expected))


def test_the_code_pages_that_skip_the_full_tokenizer_need_it_nowhere() -> None:
    """A text that encodes in one of these code pages takes the fast tokenizer without a search:
    no character of theirs may be one the fast tokenizer gets wrong."""
    from monitor.core.text import _FAST_CODE_PAGES, _NEEDS_FULL_TOKENIZER

    for code_page in _FAST_CODE_PAGES:
        for byte in range(256):
            try:
                char = bytes([byte]).decode(code_page)
            except UnicodeDecodeError:
                continue
            assert not _NEEDS_FULL_TOKENIZER.search(char), (code_page, hex(ord(char)))


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("Taiwan's red line", True),
        ("Café crème — “naïve” façade", True),
        ("تايوان خط أحمر", False),
        ("Taiwan تايوان", False),
        ("Тайвань", False),
        ("台湾", False),
        ("", True),
    ],
)
def test_a_text_knows_whether_it_fits_code_page_1252(text: str, fits: bool) -> None:
    """The matcher looks the words of such a text up among the forms that fit only: every token
    of a text that fits fits too."""
    normalized = NormalizedText.of(text)
    assert normalized.cp1252 is fits
    assert fits_cp1252(normalized.text) is fits
    if fits:
        assert all(fits_cp1252(token) for token in normalized.tokens)


@pytest.mark.parametrize("text", [c[1] for c in CASES] + [c[1] for c in WORD_ENDS])
def test_a_terms_words_are_the_tokens_the_matcher_reads(text: str) -> None:
    from monitor.core.text import term_words

    assert term_words(text) == tuple(NormalizedText.of(text).tokens)
