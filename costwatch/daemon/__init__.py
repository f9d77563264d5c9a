"""`costwatch run`: the daemon, composed from its parts.

daemon.py     `Daemon`: the composition root; cycles on a schedule, signals, reload,
              shutdown within the grace; `Daemon.from_path` for the CLI
courier.py    Slack delivery after each cycle and every `retry_every`; the final flush
readiness.py  what `/readyz` answers
schedule.py   the APScheduler trigger and the interval between cycles
"""

from costwatch.daemon.daemon import Daemon

__all__ = ["Daemon"]
