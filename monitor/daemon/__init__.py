"""The service of `monitor run` and `monitor once`, one module per concern:

- `service`: `Service` — the poller, outbox and notifiers of one process, and its polling/delivery steps
- `run`: `run_forever` — the ticks, health endpoint, bot and clean stop of `monitor run`
- `health`: Prometheus metrics and the `/healthz` + `/metrics` endpoint
- `leader`: which process polls Telegram, and starting the subscriber bot
- `locks`: the SQLite lock file that keeps a second process off one database
- `logs`: text or JSON log lines, secrets redacted
- `memory`: the heap that worker threads freed, given back to the system (glibc)

The names most callers need are re-exported here.
"""

from monitor.daemon.leader import start_bot
from monitor.daemon.locks import AlreadyRunningError, sqlite_lock
from monitor.daemon.logs import configure_logging
from monitor.daemon.run import run_forever
from monitor.daemon.service import Service, notifiers_for

__all__ = [
    "AlreadyRunningError",
    "Service",
    "configure_logging",
    "notifiers_for",
    "run_forever",
    "sqlite_lock",
    "start_bot",
]
