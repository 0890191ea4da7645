"""Who may receive a Telegram subscriber's alerts and change its subscriptions (pure; SPEC §6).

`telegram.subscriptions` decides: `open` (anyone), `allowlist` (the ids in `telegram.allow`) or
`off` (no subscriber gets anything; chats named in a channel's `chat_ids` are the operator's and
always get theirs). The same policy is applied when a command asks and again when an alert is
about to be sent, so access that ends — an id taken off the allowlist, `subscriptions: off`, a
chat blocked by the administrator — ends for alerts already waiting too.

An allowlist may hold user ids and chat ids: a private chat is its user's id; a group is admitted
when its own id is listed or when the member who last changed its subscriptions is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Access", "AccessPolicy"]

Access = Literal["open", "allowlist", "off"]


@dataclass(frozen=True)
class AccessPolicy:
    mode: Access = "open"
    allow: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def of(cls, mode: Access, allow: Iterable[int] = ()) -> AccessPolicy:
        return cls(mode, frozenset(allow))

    def admits(self, chat_id: int, user_id: int | None) -> bool:
        """Whether this chat (subscribed by `user_id`) may subscribe and receive alerts."""
        if self.mode == "open":
            return True
        if self.mode == "allowlist":
            return chat_id in self.allow or (user_id is not None and user_id in self.allow)
        return False

    def refusal(self, chat_id: int, user_id: int | None, *, blocked: bool = False) -> str | None:
        """Why this chat may not receive alerts (for logs and `monitor subscribers`), or None."""
        if blocked:
            return "blocked by the administrator"
        if self.admits(chat_id, user_id):
            return None
        if self.mode == "off":
            return "subscriptions are off"
        return "not on telegram.allow"
