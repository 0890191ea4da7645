"""Entities: named sets of aliases. `@name` is the OR of its aliases, each alias a phrase.

Built-in `@country:CC` expands to the country's name in every locale Babel's CLDR data carries
(Taiwan, تايوان, 台湾, Тайвань, טייוואן …). Loading every locale takes about a second, so it happens
once per process and only when a query asks for a country.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _territory_names() -> dict[str, frozenset[str]]:
    from babel import Locale, UnknownLocaleError
    from babel.localedata import locale_identifiers

    names: dict[str, set[str]] = {}
    for identifier in locale_identifiers():
        try:
            territories = Locale.parse(identifier).territories
        except (UnknownLocaleError, ValueError):  # pragma: no cover - CLDR ships only valid ones
            continue
        for code, name in territories.items():
            if len(code) == 2 and code.isalpha():
                names.setdefault(code, set()).add(name)
    return {code: frozenset(values) for code, values in names.items()}


def is_country_code(code: str) -> bool:
    """True if CLDR knows the ISO 3166 alpha-2 `code` (case-insensitive)."""
    return code.upper() in _territory_names()


def country_names(code: str) -> frozenset[str]:
    """The names of the country in every CLDR locale; empty for an unknown code."""
    return _territory_names().get(code.upper(), frozenset())
