"""The stop signal and deadlines every wait goes through (`costwatch.deadline`)."""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loopback import Background

from costwatch.deadline import MIN_TIMEOUT, UNBOUNDED, Deadline, Stopping, StopSignal


def test_setting_the_signal_runs_each_hook_registered_at_the_time_once() -> None:
    stop = StopSignal()
    calls: list[str] = []
    with stop.on_stop(lambda: calls.append("inside")):
        pass
    with stop.on_stop(lambda: calls.append("registered")):
        stop.set()
        stop.set()
    assert calls == ["registered"]  # the hook left with its block; a second set is a no-op


def test_a_hook_registered_after_the_signal_runs_at_once() -> None:
    stop = StopSignal()
    stop.set()
    calls: list[str] = []
    with stop.on_stop(lambda: calls.append("late")):
        assert calls == ["late"]


def test_a_wait_ends_with_stopping_as_soon_as_the_signal_is_set() -> None:
    stop = StopSignal()
    waiting = Background(lambda: Deadline(stop=stop).wait(60))
    time.sleep(0.2)
    stop.set()
    with pytest.raises(Stopping):
        waiting.result(5, "the wait after the stop")


def test_a_wait_that_cannot_end_before_the_deadline_is_not_started() -> None:
    deadline = Deadline.after(0.5)
    started = time.monotonic()
    with pytest.raises(Stopping, match="no time left"):
        deadline.wait(30)
    assert time.monotonic() - started < 0.5  # refused at once, not after waiting


def test_a_stopped_or_past_deadline_has_nothing_left_and_check_raises() -> None:
    stop = StopSignal()
    stop.set()
    for deadline in (Deadline(stop=stop), Deadline(at=time.monotonic() - 1)):
        assert deadline.remaining() == 0.0
        with pytest.raises(Stopping):
            deadline.check()
    assert UNBOUNDED.remaining() == math.inf
    UNBOUNDED.check()
    assert not UNBOUNDED.stop.is_set()


def test_within_takes_the_earlier_of_two_deadlines_and_keeps_the_signal() -> None:
    stop = StopSignal()
    soon = Deadline.after(1, stop).within(60)
    assert soon.stop is stop
    assert 0 < soon.remaining() <= 1
    assert Deadline(stop=stop).within(1).remaining() <= 1


@given(st.floats(min_value=0, max_value=1e9), st.floats(min_value=-10, max_value=1e9))
def test_a_timeout_capped_by_a_deadline_is_never_longer_and_never_zero(
    seconds: float, left: float
) -> None:
    capped = Deadline(at=time.monotonic() + left).cap(seconds)
    assert MIN_TIMEOUT <= capped <= max(seconds, MIN_TIMEOUT)
    assert capped <= max(left, MIN_TIMEOUT) + 0.1


def test_the_stop_does_not_shorten_the_timeout_of_a_request_already_made() -> None:
    stop = StopSignal()
    stop.set()
    assert Deadline(stop=stop).cap(10.0) == 10.0


def test_hooks_may_be_registered_from_many_threads_while_the_signal_is_set() -> None:
    stop = StopSignal()
    ran = threading.Semaphore(0)
    entered = threading.Barrier(9)

    def worker() -> None:
        with stop.on_stop(ran.release):
            entered.wait(5)
            stop.wait(5)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    entered.wait(5)
    stop.set()
    for thread in threads:
        thread.join(5)
    assert all(ran.acquire(timeout=1) for _ in threads)
