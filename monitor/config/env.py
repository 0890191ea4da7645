"""`${VAR}` and `${VAR:-default}` in config values, replaced from an environment mapping.

`$${` is a literal `${`. An unset variable without a default is an error; a variable set to the
empty string takes the default when there is one (so `${SMTP_USER:-}` means "no username").

This module only substitutes text. It knows nothing of YAML, keys or line numbers: the YAML loader
calls it for every scalar value (never for keys), reports its errors at the value's position and
remembers which variables a value came from, so that a message names the variable instead of
repeating a value that may be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_REFERENCE = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


@dataclass(frozen=True)
class Substitution:
    """The text with every reference replaced (an unresolvable one by ""), the names of the
    variables it referred to, and one message per reference that could not be resolved."""

    text: str
    names: tuple[str, ...]
    errors: tuple[str, ...]


def substitute(text: str, env: Mapping[str, str]) -> Substitution:
    names: list[str] = []
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = _BODY.fullmatch(match.group(1) or "")
        if match.group(1) is None or body is None:
            errors.append("malformed ${...}: write ${NAME} or ${NAME:-default}")
            return ""
        name, default = body.group(1), body.group(2)
        names.append(name)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            errors.append(
                f"environment variable {name} is not set "
                f"(write ${{{name}:-default}} to make it optional)"
            )
            return ""
        return value

    result = _REFERENCE.sub(replace, text)
    return Substitution(result, tuple(names), tuple(errors))
