"""The `Store` contract, run against every implementation (the `store` fixture: the SQLite file
and a real PostgreSQL): what a cycle, delivery and the commands rely on, whatever holds it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from costwatch import periods
from costwatch.alerts import LedgerEntry
from costwatch.errors import StateError
from costwatch.health import ExportHealth
from costwatch.state import Message, Store

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
PERIOD = periods.current("month", BERLIN, T0).key()


def entry(**changes: Any) -> LedgerEntry:
    base = LedgerEntry(
        budget="every-key",
        subject="key-1",
        model="",
        metric="cost_usd",
        kind="actual",
        period=PERIOD,
        level=80.0,
        limit=200.0,
        used=161.5,
        sent_at=T0,
    )
    return replace(base, **changes)


def message(n: int = 0, channel: str | None = "#ai-spend") -> Message:
    return Message(kind="alert", channel=channel, payload={"n": n, "text": f"alert {n}"})


def test_a_ledger_entry_round_trips_with_its_time_in_utc(store: Store) -> None:
    written = entry(sent_at=datetime(2026, 11, 3, 9, 30, 0, 123456, tzinfo=BERLIN), used=0.1)
    store.commit(now=T0, ledger=[written, entry(subject="k2", sent_at=None, kind="forecast")])
    read = store.ledger([PERIOD])
    assert read[written.key] == written
    assert read[written.key].sent_at.utcoffset() == timedelta(0)  # type: ignore[union-attr]
    assert read[entry(subject="k2", kind="forecast").key].sent_at is None


def test_the_ledger_returns_the_requested_periods_only(store: Store) -> None:
    day = periods.current("day", BERLIN, T0).key()
    october = periods.current("month", BERLIN, T0 - timedelta(days=20)).key()
    store.commit(now=T0, ledger=[entry(), entry(period=day), entry(period=october)])
    assert {key[5] for key in store.ledger([PERIOD, day])} == {PERIOD, day}
    assert {key[5] for key in store.ledger([october, october])} == {october}
    assert store.ledger([]) == {}


def test_a_ledger_entry_written_again_replaces_the_one_before(store: Store) -> None:
    store.commit(now=T0, ledger=[entry(level=50.0)])
    store.commit(now=T0, ledger=[entry(level=100.0, sent_at=None)])
    assert list(store.ledger([PERIOD]).values()) == [entry(level=100.0, sent_at=None)]


def test_pending_lists_unsent_messages_oldest_first(store: Store) -> None:
    ids = store.commit(now=T0, messages=[message(1), message(2, channel=None)])
    ids += store.commit(
        now=T0 + timedelta(minutes=15),
        messages=[Message(kind="exports_failing", channel="#ops", payload={"é": ["<!channel>"]})],
    )
    pending = store.pending()
    assert [item.id for item in pending] == ids == sorted(ids)
    assert [(item.kind, item.channel) for item in pending] == [
        ("alert", "#ai-spend"),
        ("alert", None),
        ("exports_failing", "#ops"),
    ]
    assert pending[2].payload == {"é": ["<!channel>"]}
    assert pending[2].created_at == T0 + timedelta(minutes=15)
    assert (pending[0].attempts, pending[0].last_error) == (0, None)
    assert [item.id for item in store.pending(limit=2)] == ids[:2]
    assert store.pending_count() == 3


def test_pending_at_now_holds_back_a_message_until_its_retry_is_due(store: Store) -> None:
    first, second = store.commit(now=T0, messages=[message(1), message(2)])
    retry_at = T0 + timedelta(seconds=30)
    store.mark_failed(first, "ratelimited", now=T0, retry_at=retry_at)
    assert [item.id for item in store.pending(T0)] == [second]
    assert [item.id for item in store.pending(retry_at - timedelta(microseconds=1))] == [second]
    assert [item.id for item in store.pending(retry_at.astimezone(BERLIN))] == [first, second]
    assert [item.id for item in store.pending()] == [first, second]


def test_mark_failed_counts_attempts_and_keeps_the_latest_error(store: Store) -> None:
    (item_id,) = store.commit(now=T0, messages=[message()])
    store.mark_failed(item_id, "timeout", now=T0, retry_at=T0)
    store.mark_failed(item_id, "channel_not_found: #gone", now=T0, retry_at=T0)
    (item,) = store.pending()
    assert (item.attempts, item.last_error) == (2, "channel_not_found: #gone")


def test_mark_sent_takes_messages_out_of_pending_and_its_count(store: Store) -> None:
    ids = store.commit(now=T0, messages=[message(n) for n in range(4)])
    store.mark_sent([ids[0], ids[2]], now=T0)
    assert [item.id for item in store.pending()] == [ids[1], ids[3]]
    assert store.pending_count() == 2
    store.mark_sent([], now=T0)
    assert store.pending_count() == 2


def test_export_health_is_the_default_until_written_and_then_round_trips(store: Store) -> None:
    assert store.export_health() == ExportHealth()
    health = ExportHealth(
        consecutive_failures=4,
        failing_since=datetime(2026, 11, 10, 9, 0, tzinfo=timezone(timedelta(hours=5))),
        last_success=T0 - timedelta(days=1),
        last_reason="rate_limited",
        alerted=True,
    )
    store.commit(now=T0, health=health)
    assert store.export_health() == health
    store.commit(now=T0, health=ExportHealth(last_success=T0))
    assert store.export_health() == ExportHealth(last_success=T0)


def test_prune_never_deletes_an_unsent_message_nor_a_running_periods_ledger(
    store: Store,
) -> None:
    old, recent = T0 - timedelta(days=40), T0 - timedelta(days=2)
    sent_old, unsent_old = store.commit(now=old, messages=[message(1), message(2)])
    (sent_recent,) = store.commit(now=recent, messages=[message(3)])
    store.mark_sent([sent_old], now=old)
    store.mark_failed(unsent_old, "invalid_auth", now=old, retry_at=old)
    store.mark_sent([sent_recent], now=recent)
    september = periods.current("month", BERLIN, datetime(2026, 9, 15, tzinfo=UTC)).key()
    store.commit(now=T0, ledger=[entry(), entry(period=september)])
    assert store.prune(T0, timedelta(days=30)) == 2  # the old sent row, September's entry
    assert [item.id for item in store.pending()] == [unsent_old]
    assert set(store.ledger([PERIOD, september])) == {entry().key}
    assert store.prune(T0, timedelta(days=30)) == 0


def test_a_transaction_reads_what_it_plans_against_and_commits_whole(store: Store) -> None:
    with store.transaction() as transaction:
        assert transaction.ledger([PERIOD]) == {}
        assert transaction.export_health() == ExportHealth()
        ids = transaction.commit(now=T0, ledger=[entry()], messages=[message()])
    assert [item.id for item in store.pending()] == ids
    with pytest.raises(StateError, match="ended"):
        transaction.ledger([PERIOD])


def test_a_transaction_that_raises_is_rolled_back_whole(store: Store) -> None:
    def plan_and_fail() -> None:
        with store.transaction() as t:
            t.commit(now=T0, ledger=[entry()], messages=[message()])
            raise RuntimeError("planning failed")

    with pytest.raises(RuntimeError, match="planning failed"):
        plan_and_fail()
    assert store.ledger([PERIOD]) == {}
    assert store.pending_count() == 0


def test_a_naive_datetime_is_refused_and_nothing_of_that_commit_is_written(store: Store) -> None:
    naive = datetime(2026, 11, 1)  # noqa: DTZ001
    with pytest.raises(ValueError, match="naive"):
        store.commit(now=T0, messages=[message()], ledger=[entry(sent_at=naive)])
    assert store.pending_count() == 0
    assert store.ledger([PERIOD]) == {}


def run_threads(work: Callable[[int], None], threads: int = 2) -> None:
    errors: list[BaseException] = []

    def guarded(worker: int) -> None:
        try:
            work(worker)
        except BaseException as error:
            errors.append(error)

    started = [threading.Thread(target=guarded, args=(n,)) for n in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)
    assert not errors, errors


def test_two_threads_committing_and_reading_through_one_store_lose_nothing(store: Store) -> None:
    def work(worker: int) -> None:
        for n in range(40):
            subject = f"w{worker}-{n}"
            store.commit(now=T0, ledger=[entry(subject=subject)], messages=[message(n)])
            assert entry(subject=subject).key in store.ledger([PERIOD])
            store.export_health()

    run_threads(work)
    assert len(store.ledger([PERIOD])) == 80
    assert len({item.id for item in store.pending()}) == store.pending_count() == 80


def test_a_closed_store_answers_with_state_error(store: Store) -> None:
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.pending_count()
    with pytest.raises(StateError, match="closed"):
        store.commit(now=T0, messages=[message()])
