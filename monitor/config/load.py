"""The entry points: config text or file → validated, frozen `Settings`, or one `ConfigError`
listing every problem in the file.

`load_config` reads the file (unreadable or non-UTF-8 is a problem too) and `parse_config`
validates text: it reads the YAML, drops top-level `x-…` keys (a place for anchors), validates
against the schema, runs the cross-section checks and reports everything at once. Only `cli` reads
the config; everything else receives plain values from it. This module holds no rule of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import (
    ValidationError,
)

from monitor.config.report import already_reported, cross_check, finish, validation_problems
from monitor.config.schema import INHERITED, KeyPath, Settings
from monitor.config.yaml_loader import read_yaml
from monitor.core.collector import collector_paused
from monitor.errors import ConfigError, ConfigProblem


def parse_config(
    text: str, filename: str = "<string>", env: Mapping[str, str] | None = None
) -> Settings:
    """Validate config text. `filename` names the file in problems and fixes `config_dir` (the
    current directory for "<string>"). `env` defaults to `os.environ`. Raises ConfigError."""
    text = text.removeprefix("\ufeff")
    doc = read_yaml(text, os.environ if env is None else env)
    problems = list(doc.problems)
    settings: Settings | None = None
    if isinstance(doc.data, dict):
        # Top-level `x-…` keys are ignored, a place for YAML anchors (as in Docker Compose).
        data = {key: value for key, value in doc.data.items() if not key.startswith("x-")}
        config_dir = Path.cwd() if filename.startswith("<") else Path(filename).absolute().parent
        try:
            settings = Settings.model_validate(data | {"config_dir": config_dir})
            settings.remember_source(filename, text, _with_inherited(doc.written, data))
        except ValidationError as exc:
            problems += validation_problems(exc, doc)
        problems += cross_check(data, doc.unresolved)
    problems = [p for p in problems if p in doc.problems or not already_reported(p.path, doc)]
    if problems or settings is None:
        raise ConfigError(finish(problems, filename, doc))
    return settings


def _with_inherited(written: dict[KeyPath, str], data: dict[str, object]) -> dict[KeyPath, str]:
    """`written`, plus each feed's inherited value that came from a variable, under the feed's key."""
    result = dict(written)
    feeds = data.get("feeds")
    for index, feed in enumerate(feeds if isinstance(feeds, list) else []):
        for key, source in INHERITED.items():
            if isinstance(feed, dict) and key not in feed and source in written:
                result["feeds", index, key] = written[source]
    return result


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the config file at `path`. Raises ConfigError, also if unreadable."""
    filename = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem(filename, None, "", f"cannot read the file: {reason}")]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [ConfigProblem(filename, line, "", "the file is not UTF-8 text")]
        ) from None
    with collector_paused():  # 10,000 watchlists make many objects, all kept
        return parse_config(text, filename, env)
