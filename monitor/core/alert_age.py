"""Whether an item is too old to alert: no backlog floods (`alert_max_age`, FAULTS 67).

A feed added with years of archive, or a feed that comes back after a long outage, would otherwise
send every old item that matches. Such items are still stored and matched (`monitor backtest` sees
them); this module only decides which matches may become alerts. Pure: `now` is an argument.

An item's age is counted from the date its feed gives it. An item without a usable date is as old
as the moment we first saw it, except on the feed's first poll: then nothing says whether it is
today's news or the bottom of an archive, so it does not alert. A new undated item on a later poll
is news by definition and alerts.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def too_old_to_alert(
    published: datetime | None,
    first_seen: datetime,
    now: datetime,
    max_age: timedelta | None,
    *,
    first_poll: bool,
) -> bool:
    """Whether an item published at `published` (None: the feed gave no date) and first stored at
    `first_seen` is older than `max_age` (None: no limit) at `now`."""
    if max_age is None:
        return False
    if published is None:
        if first_poll:
            return True
        published = first_seen
    return now - published > max_age
