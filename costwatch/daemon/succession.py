"""Whether this daemon runs the cycles and delivers: the leader does, a standby waits.

- On SQLite the process always leads (its writer lock made it the only one: `state.Sole`). On
  PostgreSQL the campaign (`state.leader`) runs in a thread of its own: a standby tries to
  take the leader lock every `retry_every`, the leader renews it every third of the lease.
- Promoted from standby, the daemon runs a cycle at once (`on_promoted`): the new leader
  catches up without waiting for the schedule, and delivers what the old one left unsent.
- Deposed, it stops at once: cycles are skipped (not counted), delivery starts no round, and
  `/readyz` answers 503 "standby" (not ready, so no traffic, but alive: `/healthz` stays 200,
  so Kubernetes does not restart it).
- `costwatch_leader` is 1 on the leader, 0 on a standby. The leader shares each cycle's
  metrics snapshot through the state; a standby serves the last shared one, so dashboards
  show the per-key values on whichever replica they scrape and do not go blank on failover.
- A standby that cannot reach the database (`Leadership.problem`) counts each scheduled cycle
  as failed: nobody can run it, and the operator must hear so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from costwatch.deadline import StopSignal
from costwatch.errors import StateError
from costwatch.metrics import Metrics
from costwatch.state import Leadership, SharedSnapshot

__all__ = ["STANDBY", "Succession"]

log = logging.getLogger("costwatch.daemon")

STANDBY = "standby"  # /readyz's body on a standby (docs/reliability.md, deploy/kubernetes)


class Succession:
    """The daemon's side of leadership (see the module docstring)."""

    def __init__(
        self,
        leadership: Leadership,
        metrics: Metrics,
        stop: StopSignal,
        on_promoted: Callable[[], None],
    ) -> None:
        self._leadership = leadership
        self._metrics = metrics
        self._stop = stop
        self._on_promoted = on_promoted
        self._was: bool | None = None  # as last reported; None before the first report
        self._adopted: datetime | None = None  # the shared snapshot a standby serves

    @property
    def leading(self) -> bool:
        return self._leadership.leading

    @property
    def problem(self) -> str | None:
        """Why nobody can lead from here (the database cannot be reached), or None."""
        return self._leadership.problem

    def may_run(self) -> bool:
        """Whether this replica runs the scheduled cycle: it leads. A standby does not (the
        leader does), unless no replica can lead: then `StateError`, a failed cycle."""
        if self.leading:
            return True
        if self.problem is not None:
            raise StateError(f"no replica can lead: {self.problem}")
        return False

    def standby(self) -> tuple[bool, str] | None:
        """`/readyz`'s answer on a standby (not ready: no traffic, yet alive), else None."""
        return None if self.leading else (False, STANDBY)

    def start(self) -> threading.Thread:
        thread = threading.Thread(
            target=self._leadership.campaign,
            args=(self._stop, self._changed),
            name="costwatch-leadership",
            daemon=True,
        )
        thread.start()
        return thread

    def _changed(self, leading: bool) -> None:
        was, self._was = self._was, leading
        self._metrics.leader(leading)
        if leading and was is False:
            log.info("this replica leads now: it runs the cycles and delivers")
            self._on_promoted()
        elif not leading and was is not False:
            log.info("this replica is a standby: another one leads")

    def share(self) -> None:
        """After a leader's cycle: its snapshot, where the standbys read it. A refusal (no
        longer the leader) is logged; the cycle itself is committed already."""
        text, at, truncated = self._metrics.snapshot_state()
        if at is None:
            return
        try:
            self._leadership.share(SharedSnapshot(text, at, truncated))
        except StateError as error:
            log.warning("the metrics snapshot was not shared with the standbys: %s", error)

    def adopt(self) -> None:
        """On a standby: serve the leader's last shared snapshot, if it is a newer one."""
        if self.leading:
            return
        try:
            shared = self._leadership.shared()
        except StateError as error:
            log.debug("the leader's snapshot cannot be read: %s", error)
            return
        if shared is not None and shared.at != self._adopted:
            self._adopted = shared.at
            self._metrics.adopt(shared.text, shared.at, shared.truncated)
