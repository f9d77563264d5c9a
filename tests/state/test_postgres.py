"""The PostgreSQL state over a real server: its schema and migrations, connections that break,
credentials kept out of messages, leader election, fencing and outbox claims."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pgserver
import psycopg
import pytest

from costwatch.config import StateConfig
from costwatch.deadline import StopSignal
from costwatch.errors import NotLeaderError, StateError, StateMissing
from costwatch.state import Message, PostgresState, leadership, open_store
from costwatch.state.pgschema import SCHEMA_VERSION

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=3)


def message(n: int = 0) -> Message:
    return Message(kind="alert", channel="#ai-spend", payload={"n": n})


def sql(url: str, statement: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True, options="-c search_path=costwatch") as db:
        cursor = db.execute(statement.encode(), params)
        return cursor.fetchall() if cursor.description else []


def fenced(url: str) -> PostgresState:
    return PostgresState.open(url, where="test database", lease=LEASE, holder="test")


@pytest.fixture
def leader(pg_url: str) -> Iterator[PostgresState]:
    with fenced(pg_url) as state:
        assert state.elector is not None
        state.elector.lead(5)
        yield state


# -- the schema ---------------------------------------------------------------------------------


def test_a_new_database_gets_the_schema_in_its_own_namespace_and_reopening_keeps_rows(
    pg_url: str,
) -> None:
    with PostgresState.open(pg_url, where="db") as state:
        ids = state.commit(now=T0, messages=[message()])
    assert sql(pg_url, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    tables = {
        row[0]
        for row in sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'costwatch'")
    }
    assert {"ledger", "outbox", "export_health", "leader", "usage_daily", "marks"} <= tables
    assert sql(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    with PostgresState.open(pg_url, where="db") as state:
        assert [item.id for item in state.pending()] == ids
    assert sql(pg_url, "SELECT count(*) FROM schema_version") == [(SCHEMA_VERSION,)]


def test_two_processes_starting_at_once_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PostgresState.open(pg_url, where="db").close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sql(pg_url, "SELECT count(*) FROM schema_version") == [(SCHEMA_VERSION,)]


def test_a_database_of_a_newer_costwatch_is_refused_and_left_as_it_is(pg_url: str) -> None:
    PostgresState.open(pg_url, where="db").close()
    sql(pg_url, "INSERT INTO schema_version VALUES (%s)", SCHEMA_VERSION + 1)
    with pytest.raises(StateError, match=r"db: written by a newer costwatch \(schema"):
        PostgresState.open(pg_url, where="db")
    assert sql(pg_url, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION + 1,)]


def test_a_costwatch_schema_of_another_application_is_refused_untouched(pg_url: str) -> None:
    sql(pg_url, "CREATE SCHEMA costwatch")
    sql(pg_url, "CREATE TABLE costwatch.invoices (id int)")
    with pytest.raises(StateError, match="holds tables of another application"):
        PostgresState.open(pg_url, where="db")
    assert sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'costwatch'") == [
        ("invoices",)
    ]


# -- connections and credentials ----------------------------------------------------------------


def test_a_connection_that_broke_fails_one_call_and_the_next_goes_through(pg_url: str) -> None:
    admin = pgserver.server()
    with PostgresState.open(pg_url, where="db") as state:
        state.commit(now=T0, messages=[message()])
        ((pid,),) = sql(
            pg_url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'costwatch'"
            " AND datname = current_database()",
        )
        assert isinstance(pid, int)
        pgserver.terminate(admin, pid)
        with pytest.raises(StateError, match=r"^db: "):
            state.pending_count()
        assert state.pending_count() == 1
        state.commit(now=T0, messages=[message(2)])
        assert state.pending_count() == 2


def test_the_password_is_in_no_message_and_the_state_is_named_without_it(tmp_path: Path) -> None:
    secret = "hunter2-secret-password"
    dead = f"postgresql://costwatch:{secret}@127.0.0.1:1/costwatch?sslmode=disable"
    config = StateConfig.model_validate({"url": dead}, context={"folder": tmp_path})
    assert config.where() == "postgresql://costwatch@127.0.0.1:1/costwatch"
    assert secret not in repr(config)
    with pytest.raises(StateError) as refused:
        open_store(config)
    assert secret not in str(refused.value)
    assert str(refused.value).startswith(
        "postgresql://costwatch@127.0.0.1:1/costwatch: cannot connect"
    )
    (tmp_path / "pw").write_text(secret + "\n", encoding="utf-8")
    split = StateConfig.model_validate(
        {"url": "postgresql://costwatch@127.0.0.1:1/db", "password_file": str(tmp_path / "pw")},
        context={"folder": tmp_path},
    )
    assert split.password is not None
    assert split.password.get_secret_value() == secret
    with pytest.raises(StateError) as again:
        open_store(split)
    assert secret not in str(again.value)


def test_path_and_url_together_are_a_configuration_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not both"):
        StateConfig.model_validate(
            {"path": "state.db", "url": "postgresql://h/db"}, context={"folder": tmp_path}
        )
    with pytest.raises(ValidationError, match="postgresql:// URL"):
        StateConfig.model_validate({"url": "mysql://h/db"}, context={"folder": tmp_path})


# -- leadership and fencing ---------------------------------------------------------------------


def test_a_standby_writes_nothing_and_leading_is_one_process_at_a_time(pg_url: str) -> None:
    with fenced(pg_url) as first, fenced(pg_url) as second:
        assert first.elector is not None
        assert second.elector is not None
        with pytest.raises(NotLeaderError, match="not the leader"):
            first.commit(now=T0, messages=[message()])
        assert first.elector.try_lead()
        assert not second.elector.try_lead()
        with pytest.raises(NotLeaderError):
            second.mark_failed(1, "x", T0, T0)
        first.commit(now=T0, messages=[message()])
        assert second.pending_count() == 1  # a standby reads
        with pytest.raises(StateError, match=r"in use by test \(pid \d+ on host .*\(epoch 1\)"):
            second.elector.lead(0.3)


def test_a_leader_whose_backend_was_terminated_commits_nothing_and_steps_down(
    pg_url: str, leader: PostgresState
) -> None:
    assert leader.elector is not None
    changes: list[bool] = []
    leader.elector.on_change = changes.append
    fence = leader.elector.fence()
    assert fence is not None
    pgserver.terminate(pgserver.server(), fence.pid)
    with pytest.raises(NotLeaderError, match="deposed"):
        leader.commit(now=T0, messages=[message()])
    assert not leader.elector.leading
    assert changes == [False]
    assert sql(pg_url, "SELECT count(*) FROM outbox") == [(0,)]
    with fenced(pg_url) as successor:
        assert successor.elector is not None
        assert successor.elector.try_lead()
        assert successor.elector.fence().epoch == fence.epoch + 1  # type: ignore[union-attr]
        successor.commit(now=T0, messages=[message()])
    assert sql(pg_url, "SELECT count(*) FROM outbox") == [(1,)]


def test_a_deposed_leader_leaves_the_lock_to_the_standby_that_was_waiting(
    pg_url: str, leader: PostgresState
) -> None:
    """Its lock backend terminated, the leader finds out at its next renewal and campaigns on
    as a standby, the lock free; it stands again only after two of the standbys' retries, so
    the standby that was campaigning takes the lock (it took it back itself 24 ms after
    losing it, before the standby's next try, and the failover never came)."""
    assert leader.elector is not None
    with fenced(pg_url) as standby:
        assert standby.elector is not None
        stop = StopSignal()
        waiting = threading.Thread(target=standby.elector.campaign, args=(stop,), daemon=True)
        waiting.start()
        fence = leader.elector.fence()
        assert fence is not None
        pgserver.terminate(pgserver.server(), fence.pid)
        assert not leader.elector.renew()  # stepped down; the lock is free
        old = threading.Thread(target=leader.elector.campaign, args=(stop,), daemon=True)
        old.start()  # at once, as the campaign loop goes on after a failed renewal
        try:
            deadline = time.monotonic() + 10
            while not (standby.elector.leading or leader.elector.leading):
                assert time.monotonic() < deadline, "nobody took the free lock"
                time.sleep(0.01)
            assert standby.elector.leading
            assert not leader.elector.leading
        finally:
            stop.set()
            waiting.join(10)
            old.join(10)


def test_a_deposed_leaders_claims_are_void_and_its_marks_are_refused(pg_url: str) -> None:
    with fenced(pg_url) as old, fenced(pg_url) as new:
        assert old.elector is not None
        assert new.elector is not None
        old.elector.lead(5)
        ids = old.commit(now=T0, messages=[message(n) for n in range(3)])
        assert [item.id for item in old.pending(T0)] == ids  # claimed for epoch 1
        assert sql(pg_url, "SELECT DISTINCT claim_epoch FROM outbox") == [(1,)]
        old.elector.deposed("the test let go")
        new.elector.lead(5)
        assert [item.id for item in new.pending(T0)] == ids  # epoch 1's claims are void
        with pytest.raises(NotLeaderError):
            old.mark_sent(ids, T0)
        new.mark_sent(ids[:2], T0)
        assert new.pending_count() == 1


def test_rows_another_transaction_is_claiming_are_skipped_not_waited_for(
    pg_url: str, leader: PostgresState
) -> None:
    first, second = leader.commit(now=T0, messages=[message(1), message(2)])
    with psycopg.connect(pg_url, options="-c search_path=costwatch") as other:
        other.execute("SELECT id FROM outbox WHERE id = %s FOR UPDATE", (first,))
        assert [item.id for item in leader.pending(T0)] == [second]
    assert [item.id for item in leader.pending(T0)] == [first, second]


def test_marks_only_touch_rows_this_epoch_claimed(pg_url: str, leader: PostgresState) -> None:
    (item,) = leader.commit(now=T0, messages=[message()])
    leader.mark_sent([item], T0)  # not claimed by this epoch: left as it is
    assert leader.pending_count() == 1
    leader.pending(T0)
    leader.mark_sent([item], T0)
    assert leader.pending_count() == 0


def test_the_leaders_snapshot_is_shared_with_the_standbys(pg_url: str) -> None:
    with fenced(pg_url) as one, fenced(pg_url) as two:
        assert one.elector is not None
        one.elector.lead(5)
        lead, stand = leadership(one), leadership(two)
        assert stand.shared() is None
        from costwatch.state import SharedSnapshot

        lead.share(SharedSnapshot(b"costwatch_key_spend_usd 1\n", T0, 3))
        assert stand.shared() == SharedSnapshot(b"costwatch_key_spend_usd 1\n", T0, 3)
        with pytest.raises(NotLeaderError):
            stand.share(SharedSnapshot(b"x", T0, 0))


def test_opened_to_read_only_an_empty_database_is_missing_state_and_stays_empty(
    pg_url: str,
) -> None:
    config = StateConfig.model_validate({"url": pg_url})
    with pytest.raises(StateMissing, match="holds no costwatch state yet"):
        open_store(config, write=False)
    assert sql(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'costwatch'") == [(0,)]


def test_opened_to_read_only_an_older_schema_is_refused_and_left_as_it_is(pg_url: str) -> None:
    PostgresState.open(pg_url, where="db").close()
    sql(pg_url, "UPDATE schema_version SET version = 0")  # every migration's row
    sql(pg_url, "INSERT INTO schema_version VALUES (0)")
    with pytest.raises(StateError, match=r"older costwatch .* a dry run does not migrate it"):
        open_store(StateConfig.model_validate({"url": pg_url}), write=False)
    assert sql(pg_url, "SELECT max(version) FROM schema_version") == [(0,)]
