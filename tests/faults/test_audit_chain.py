"""The audit trail is tamper-evident, on both databases.

Every row is chained to the one before by a hash (PostgreSQL: computed by the insert trigger; SQLite: by the
writer); ``scheduler:audit --verify`` walks the chain. Here a superuser (the file's owner on SQLite) edits a
row, deletes one in the middle, or deletes the oldest rows without a checkpoint, and --verify names the
first broken row (exit 1, one line; JSON too). Pruning by ``auditRetentionDays`` keeps the chain verifiable
through its checkpoint row; concurrent writers on PostgreSQL serialize on the chain head; a database
migrated from revision 0001 with audit rows gets them chained; each row records who wrote it.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select, text

from cli.main import cli
from scheduler.commands.loading import load_registry
from scheduler.planning.cleanup import cleanup_step
from scheduler.records import AuditRecord
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.audit import insert_audit
from scheduler.storage.audit_chain import GENESIS, local_identity
from scheduler.storage.clock import db_now
from scheduler.storage.db import make_engine
from scheduler.storage.schema import upgrade
from scheduler.storage.tables import audit
from scheduler.storage.transactions import write_transaction
from tests.support.services import PG_ADMIN_URL, create_pg_database, drop_pg_database, require


def _service(engine: Engine, **settings: int) -> SchedulerService:
    config = Settings(**settings)  # type: ignore[arg-type]
    return SchedulerService(engine, config, commands=load_registry(config), actor="auditor")


def _verify(db_url: str, tmp_path: Path, *extra: str) -> Result:
    config = tmp_path / "module.yaml"
    config.write_text("config: {}\n")
    env = {"SCHEDULER_DATABASE_URL": db_url, "SCHEDULER_CONFIG_FILE": str(config)}
    return CliRunner(env=env).invoke(cli, ["scheduler:audit", "--verify", *extra])


def _changes(service: SchedulerService, count: int) -> None:
    for index in range(count):
        service.create_task(name=f"t{index}", command="test:echo", schedule="5m")


def _ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(select(audit.c.id).order_by(audit.c.id)).scalars())


def _broken(db_url: str, tmp_path: Path, row_id: int, problem: str) -> None:
    """--verify: exit 1 and one line naming ``row_id``; the JSON verdict says the same."""
    plain = _verify(db_url, tmp_path)
    assert plain.exit_code == 1, plain.output
    assert plain.stdout.splitlines() == [f"audit chain broken at row {row_id}: {problem}"]
    verdict = json.loads(_verify(db_url, tmp_path, "--format", "json").stdout)
    assert (verdict["intact"], verdict["broken_at"], verdict["problem"]) == (False, row_id, problem)


def test_an_untouched_trail_verifies_intact_and_names_its_head(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    service = _service(engine)
    _changes(service, 3)
    service.pause("t1")
    ids = _ids(engine)
    result = _verify(db_url, tmp_path)
    assert result.exit_code == 0, result.output
    head = service.audit(limit=1)[0]
    assert result.stdout == f"audit chain intact: 4 rows, head row {ids[-1]} hash {head.row_hash}\n"
    verdict = json.loads(_verify(db_url, tmp_path, "--format", "json").stdout)
    assert verdict == {
        "intact": True, "rows": 4, "head_id": ids[-1], "head_hash": head.row_hash, "broken_at": None,
        "problem": None,
    }  # fmt: skip
    entries = list(reversed(service.audit()))
    assert entries[0].prev_hash == GENESIS
    assert all(later.prev_hash == earlier.row_hash for earlier, later in itertools.pairwise(entries))


def test_a_row_edited_by_the_superuser_is_found(engine: Engine, db_url: str, tmp_path: Path) -> None:
    _changes(_service(engine), 4)
    ids = _ids(engine)
    with engine.begin() as connection:  # PostgreSQL: the superuser, whom the append-only trigger lets through
        connection.execute(text("UPDATE task_audit SET actor = 'nobody' WHERE id = :id"), {"id": ids[2]})
    _broken(db_url, tmp_path, ids[2], "its content does not match its hash: the row was changed")


def test_a_row_deleted_in_the_middle_is_found(engine: Engine, db_url: str, tmp_path: Path) -> None:
    _changes(_service(engine), 5)
    ids = _ids(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM task_audit WHERE id = :id"), {"id": ids[2]})
    _broken(
        db_url,
        tmp_path,
        ids[3],
        f"it does not follow row {ids[1]}: a row between them was deleted or replaced",
    )


def test_the_oldest_rows_deleted_without_a_checkpoint_are_found(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    _changes(_service(engine), 3)
    ids = _ids(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM task_audit WHERE id = :id"), {"id": ids[0]})
    _broken(
        db_url,
        tmp_path,
        ids[1],
        "the chain does not start here: rows before it were deleted without a checkpoint",
    )


def test_pruning_old_rows_leaves_a_checkpoint_and_a_chain_that_still_verifies(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with write_transaction(engine) as connection:  # five changes made 40 days ago
        old = db_now(connection) - timedelta(days=40)
        records = [
            AuditRecord("pause", index, f"old-{index}", None, {"status": "paused"}) for index in range(5)
        ]
        insert_audit(connection, records, actor="long ago", at=old)
    service = _service(engine, audit_retention_days=30)
    _changes(service, 2)
    before = list(reversed(service.audit()))
    kept = _service(engine)  # the default: audit rows are kept for ever
    assert cleanup_step(engine, kept.settings).audit_pruned == 0 and len(service.audit()) == 7

    result = cleanup_step(engine, service.settings, batch_size=3)  # two batches: two checkpoints

    assert result.audit_pruned == 5 and result.done
    after = list(reversed(service.audit()))
    assert [entry.action for entry in after] == ["create", "create", "checkpoint", "checkpoint"]
    assert after[:2] == before[5:]
    assert [entry.after for entry in after[2:]] == [
        {"pruned_rows": 3, "pruned_through_id": before[2].id, "pruned_through_hash": before[2].row_hash,
         "retention_days": 30},
        {"pruned_rows": 2, "pruned_through_id": before[4].id, "pruned_through_hash": before[4].row_hash,
         "retention_days": 30},
    ]  # fmt: skip
    assert all(entry.actor == "cleanup" for entry in after[2:])
    assert _verify(db_url, tmp_path).exit_code == 0
    assert cleanup_step(engine, service.settings).audit_pruned == 0  # nothing old left: no new checkpoint
    assert service.verify_audit().rows == 4
    with engine.begin() as connection:  # a row deleted after the prune is still found
        connection.execute(text("DELETE FROM task_audit WHERE id = :id"), {"id": after[0].id})
    assert service.verify_audit().broken_at == after[1].id


@pytest.mark.postgres
def test_concurrent_writers_on_postgresql_serialize_on_the_chain_head(pg_url: str, tmp_path: Path) -> None:
    engine = make_engine(pg_url)
    try:
        service = _service(engine)
        errors: list[BaseException] = []

        def write(writer: int) -> None:
            try:
                for index in range(15):
                    service.create_task(name=f"w{writer}-{index}", command="test:echo", schedule="5m")
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=write, args=(writer,)) for writer in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        verdict = service.verify_audit()
        assert (verdict.intact, verdict.rows) == (True, 60)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def at_0001(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database migrated to revision 0001 only (yields its URL)."""
    if request.param == "sqlite":
        url = f"sqlite:///{(tmp_path / 'old.db').as_posix()}"
    else:
        require("PostgreSQL", PG_ADMIN_URL, 5432)
        name, url = create_pg_database(None)
        request.addfinalizer(lambda: drop_pg_database(name))
    engine = make_engine(url)
    upgrade(engine, "0001")
    engine.dispose()
    return url


def test_an_upgrade_from_0001_chains_the_audit_rows_already_there(at_0001: str, tmp_path: Path) -> None:
    engine = make_engine(at_0001)
    try:
        with engine.begin() as connection:
            for index in range(3):
                connection.execute(
                    text(
                        "INSERT INTO task_audit (at, actor, action, task_id, task_name, before, after)"
                        " VALUES (CURRENT_TIMESTAMP, 'old', 'update', :id, :name, :before, :after)"
                    ),
                    {"id": index, "name": f"t{index}", "before": '{"retries": 1}', "after": '{"retries": 2}'},
                )
        upgrade(engine)
        service = _service(engine)
        service.create_task(name="new", command="test:echo", schedule="5m")
        entries = list(reversed(service.audit()))
        assert [(entry.actor, entry.db_user) for entry in entries[:3]] == [("old", None)] * 3
        assert entries[3].db_user is not None and entries[3].prev_hash == entries[2].row_hash
        assert _verify(at_0001, tmp_path).exit_code == 0
        assert service.verify_audit().rows == 4
    finally:
        engine.dispose()


def test_each_row_records_the_database_identity_that_wrote_it(engine: Engine) -> None:
    service = _service(engine)
    service.create_task(name="who", command="test:echo", schedule="5m")
    (entry,) = service.audit()
    assert entry.actor == "auditor"  # the declared label
    if engine.dialect.name == "sqlite":  # the OS user and host of the process that wrote the file
        assert (entry.db_user, entry.db_role, entry.db_host) == (
            *local_identity()[:1],
            None,
            socket.gethostname(),
        )
    else:  # taken by the insert trigger: this test logs in as postgres, over TCP
        assert (entry.db_user, entry.db_role, entry.db_host) == ("postgres", "postgres", "127.0.0.1")
    assert set(entry.to_json()) >= {"actor", "db_user", "db_role", "db_host", "prev_hash", "row_hash"}
