"""The sender `costwatch demo` uses: each message printed as the text a reader sees in Slack."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TextIO

from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.slack.render import Rendered, as_terminal_text


@dataclass
class TerminalSender:
    """A Slack sender that prints each message as readable text, in one write under `lock`
    (which `costwatch.demo.logs_between_messages` makes log records wait for)."""

    out: TextIO = sys.stdout
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, channel: str | None, message: Rendered, deadline: Deadline = UNBOUNDED) -> None:
        text = as_terminal_text(message)
        rule = "─" * 72
        with self.lock:
            self.out.write(f"\n{rule}\nSlack {channel or ''}\n{text}\n{rule}\n")
            self.out.flush()
