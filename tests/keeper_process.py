"""A process that runs the history's keeper to the end at a fixed `now`, for crash tests:
`python tests/keeper_process.py CONFIG NOW`. The real `Keeper` over the real client and state
file; only the clock is fixed, so the simulator (on the same fixed clock) and the keeper agree
on what day it is whatever the date the tests run on. Exit 0 when nothing is left to do."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path

from costwatch import langdock
from costwatch.config import load_config
from costwatch.deadline import Deadline, StopSignal
from costwatch.keeper import Keeper
from costwatch.state import open_store


def main(config_path: str, now_text: str) -> int:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(message)s")
    config = load_config(Path(config_path))
    now = datetime.fromisoformat(now_text)
    stop = StopSignal()
    with open_store(config.state, wait=5.0, command="keeper_process") as state:
        keeper = Keeper(
            state=state,
            connect=lambda deadline: langdock.connect(config.sole_langdock(), deadline=deadline),
            stop=stop,
            clock=lambda: now,
        )
        while keeper.step(config) is not None:
            Deadline(stop=stop).wait(config.history.pace.total_seconds())
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
