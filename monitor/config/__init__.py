"""The config file (YAML) → validated, frozen `Settings`, or one `ConfigError` listing every
problem with its file, line and dotted key.

The package, one module per concern:
  - `schema`: the pydantic models and the validators of their values;
  - `yaml_loader`: YAML → plain data with the line of every key, without YAML 1.1's traps;
  - `env`: `${VAR}` / `${VAR:-default}` substitution;
  - `report`: problems worded for the user, cross-section checks, "did you mean";
  - `load`: `load_config` / `parse_config`, which tie those together;
  - `check_summary`: what `monitor check` prints for a valid config.
This module only re-exports the public names.
"""

from monitor.config.check_summary import summary
from monitor.config.load import load_config, parse_config
from monitor.config.schema import (
    ConsoleChannel,
    DatabaseSettings,
    DefaultSettings,
    Digest,
    EmailChannel,
    EmailSettings,
    Entity,
    FeedSettings,
    FetchSettings,
    ServiceSettings,
    Settings,
    StorySettings,
    TelegramChannel,
    TelegramSettings,
    Watchlist,
)

__all__ = [
    "ConsoleChannel",
    "DatabaseSettings",
    "DefaultSettings",
    "Digest",
    "EmailChannel",
    "EmailSettings",
    "Entity",
    "FeedSettings",
    "FetchSettings",
    "ServiceSettings",
    "Settings",
    "StorySettings",
    "TelegramChannel",
    "TelegramSettings",
    "Watchlist",
    "load_config",
    "parse_config",
    "summary",
]
