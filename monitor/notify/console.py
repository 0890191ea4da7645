"""The console channel: alerts printed as text, the default when nothing else is configured."""

from __future__ import annotations

import sys
from typing import TextIO

from monitor.core.render import alert_text
from monitor.errors import DeliveryError
from monitor.model import Alert


class ConsoleNotifier:
    """Prints each alert, followed by a blank line. Bold hits on a terminal, `*hits*` otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    async def send(self, alert: Alert) -> None:
        emphasis = ("\x1b[1m", "\x1b[0m") if self.stream.isatty() else ("*", "*")
        try:
            self.stream.write(alert_text(alert, emphasis) + "\n\n")
            self.stream.flush()
        except OSError as exc:  # a closed pipe: nobody reads, retrying will not help
            raise DeliveryError(f"cannot write to the console: {exc}", permanent=True) from exc

    async def close(self) -> None:
        return None
