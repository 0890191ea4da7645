"""Which way a piece of an item's text runs, from the item's language (pure).

Mail readers and Telegram lay a paragraph out from its first strongly directional character, so an
Arabic headline that begins with a Latin name («CNN: بكين …») comes out left to right, its words in
the wrong order. When the item's language is known it decides instead: Arabic, Persian, Hebrew,
Urdu (and the other languages written right to left) run right to left, every other language left
to right. Without a language the first strong character decides, as the readers would.

`direction` gives the HTML `dir` value; `line_mark` the invisible mark (RLM U+200F or LRM U+200E)
that makes Telegram lay out a line that would otherwise go the wrong way — none when the line's
first strong character already agrees, so most lines carry nothing extra.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

__all__ = ["LRM", "RLM", "RTL_LANGUAGES", "Direction", "direction", "first_strong", "line_mark"]

Direction = Literal["ltr", "rtl"]

RLM = "\u200f"
LRM = "\u200e"
# ISO 639 codes of languages written right to left: Arabic, Persian (and Dari), Hebrew, Urdu,
# Pashto, Sindhi, Yiddish, Central Kurdish, Dhivehi, Uyghur, Syriac.
RTL_LANGUAGES = frozenset(
    {"ar", "fa", "prs", "he", "iw", "ur", "ps", "sd", "yi", "ji", "ckb", "dv", "ug", "syr"}
)


def _language_direction(language: str | None) -> Direction | None:
    if not language:
        return None
    primary = language.replace("_", "-").split("-", 1)[0].strip().lower()
    if not primary:
        return None
    return "rtl" if primary in RTL_LANGUAGES else "ltr"


def first_strong(text: str) -> Direction | None:
    """The direction of the first strongly directional character of `text`, if any."""
    for ch in text:
        kind = unicodedata.bidirectional(ch)
        if kind in ("R", "AL"):
            return "rtl"
        if kind == "L":
            return "ltr"
    return None


def direction(language: str | None, text: str = "") -> Direction:
    """The direction of `text` of an item in `language` (a BCP 47 tag such as "ar" or "fa-IR"):
    the language's when known, else that of the text's first strong character, else ltr."""
    return _language_direction(language) or first_strong(text) or "ltr"


def line_mark(language: str | None, text: str) -> str:
    """The mark to put before a line holding `text` of an item in `language` so that it is laid
    out in the language's direction: "" when the language is unknown or the text agrees."""
    wanted = _language_direction(language)
    if wanted is None or (first_strong(text) or wanted) == wanted:
        return ""
    return RLM if wanted == "rtl" else LRM
