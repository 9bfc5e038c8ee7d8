"""audit identity and hash chain; the worker's task outcomes through a function

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

``task_audit`` gains the database identity of its writer (``db_user``, ``db_role``, ``db_host``) and a hash
chain (``prev_hash``, ``row_hash``; see scheduler.storage.audit_chain), backfilled over the existing rows.

PostgreSQL also gets, all owned by whoever migrates (roles.sql hands them to scheduler_admin) and executable
by nobody until roles.sql grants it:

- ``task_audit_10_stamp`` (BEFORE INSERT, runs as the caller): ``db_user`` := ``session_user``, ``db_role``
  := ``current_user``, ``db_host`` := the client address; whatever the client sent is overwritten.
- ``task_audit_20_chain`` (BEFORE INSERT, SECURITY DEFINER; triggers fire in name order): takes the chain's
  transaction advisory lock, numbers the row (so id order is chain order), and hashes it after the head.
- ``task_audit_append_only`` (BEFORE UPDATE/DELETE/TRUNCATE): refused (42501) unless the current user is a
  superuser or the table's owner.
- ``scheduler_task_outcome(task, execution, status)``: the worker's only way to write its task (failure
  streak, auto-pause when the task's own ``auto_pause_after`` says so, a once task's end).
- ``scheduler_prune_audit(retention_days, limit, actor)``: the retention of ``task_audit`` (a checkpoint row,
  then the oldest rows).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from scheduler.storage.audit_chain import GENESIS, HASHED_COLUMNS, row_hash

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHAIN_LOCK = 6071225355355898964  # pg_advisory_xact_lock key of the audit chain ("TASKAUDT")
FUNCTIONS = (
    "scheduler_audit_field(text)",
    "scheduler_audit_row_hash(text, task_audit)",
    "scheduler_audit_stamp()",
    "scheduler_audit_chain()",
    "scheduler_audit_append_only()",
    "scheduler_task_outcome(bigint, bigint, text)",
    "scheduler_prune_audit(integer, integer, text)",
)

HASH_FUNCTIONS = r"""
CREATE FUNCTION scheduler_audit_field(value text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN value IS NULL THEN '~' ELSE length(value) || ':' || value END $$;

-- The v1 payload of scheduler.storage.audit_chain.row_hash, field for field.
CREATE FUNCTION scheduler_audit_row_hash(prev text, r task_audit) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT encode(sha256(convert_to('v1'
        || scheduler_audit_field(prev)
        || scheduler_audit_field(r.id::text)
        || scheduler_audit_field(to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'))
        || scheduler_audit_field(r.actor)
        || scheduler_audit_field(r.action)
        || scheduler_audit_field(r.task_id::text)
        || scheduler_audit_field(r.task_name)
        || scheduler_audit_field(r.before::text)
        || scheduler_audit_field(r.after::text)
        || scheduler_audit_field(r.db_user)
        || scheduler_audit_field(r.db_role)
        || scheduler_audit_field(r.db_host), 'UTF8')), 'hex') $$;
"""

BACKFILL = """
DO $backfill$
DECLARE
    r task_audit;
    prev text := '{genesis}';
    hashed text;
BEGIN
    FOR r IN SELECT * FROM task_audit ORDER BY id LOOP
        hashed := scheduler_audit_row_hash(prev, r);
        UPDATE task_audit SET prev_hash = prev, row_hash = hashed WHERE id = r.id;
        prev := hashed;
    END LOOP;
END
$backfill$;
"""

TRIGGERS = """
CREATE FUNCTION scheduler_audit_stamp() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    NEW.db_user := session_user;
    NEW.db_role := current_user;
    NEW.db_host := coalesce(host(inet_client_addr()), 'local');
    RETURN NEW;
END
$$;

CREATE FUNCTION scheduler_audit_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp
    AS $$
DECLARE
    head text;
BEGIN
    -- The head read below must be the newest committed row: a REPEATABLE READ snapshot could fork the chain.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'task_audit rows are appended in READ COMMITTED transactions only'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM pg_advisory_xact_lock({lock});
    NEW.id := nextval(pg_get_serial_sequence('{schema}.task_audit', 'id'));
    SELECT a.row_hash INTO head FROM task_audit a ORDER BY a.id DESC LIMIT 1;
    NEW.prev_hash := coalesce(head, '{genesis}');
    NEW.row_hash := scheduler_audit_row_hash(NEW.prev_hash, NEW);
    RETURN NEW;
END
$$;

CREATE FUNCTION scheduler_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
            OR current_user = (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = TG_RELID) THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD WHEN 'UPDATE' THEN NEW END;
    END IF;
    RAISE EXCEPTION 'task_audit is append-only: % refused for role %', TG_OP, current_user
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER task_audit_10_stamp BEFORE INSERT ON task_audit
    FOR EACH ROW EXECUTE FUNCTION scheduler_audit_stamp();
CREATE TRIGGER task_audit_20_chain BEFORE INSERT ON task_audit
    FOR EACH ROW EXECUTE FUNCTION scheduler_audit_chain();
CREATE TRIGGER task_audit_append_only BEFORE UPDATE OR DELETE ON task_audit
    FOR EACH ROW EXECUTE FUNCTION scheduler_audit_append_only();
CREATE TRIGGER task_audit_no_truncate BEFORE TRUNCATE ON task_audit
    FOR EACH STATEMENT EXECUTE FUNCTION scheduler_audit_append_only();

-- How a final outcome of execution p_execution changes its task: the rule of
-- scheduler.storage.task_outcomes (which SQLite and the planner's sweep use), for the worker role, which may
-- not update tasks itself. Only an execution of this task that is finished with this status counts; a task
-- is paused only when its own auto_pause_after says so, checked in the same statement as the count.
CREATE FUNCTION scheduler_task_outcome(p_task bigint, p_execution bigint, p_status text)
    RETURNS TABLE (id bigint, status varchar, status_reason text, consecutive_failures integer)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    failure boolean := p_status IN ('failed', 'timed_out', 'lost');
BEGIN
    IF p_status <> 'completed' AND NOT failure THEN
        RETURN;
    END IF;
    IF NOT EXISTS (
        SELECT FROM task_executions e
        WHERE e.id = p_execution AND e.task_id = p_task AND e.status = p_status AND e.finished_at IS NOT NULL
    ) THEN
        RETURN;
    END IF;
    IF NOT failure THEN
        RETURN QUERY
        UPDATE scheduled_tasks AS t SET
            consecutive_failures = 0,
            status = CASE WHEN t.schedule_kind = 'once' AND t.next_run_at IS NULL
                THEN 'completed' ELSE t.status END,
            status_reason = CASE WHEN t.schedule_kind = 'once' AND t.next_run_at IS NULL
                THEN 'ran once' ELSE t.status_reason END,
            updated_at = CASE WHEN t.schedule_kind = 'once' AND t.next_run_at IS NULL
                THEN now() ELSE t.updated_at END
        WHERE t.id = p_task AND (t.consecutive_failures <> 0
            OR (t.schedule_kind = 'once' AND t.next_run_at IS NULL AND t.status <> 'completed'))
        RETURNING t.id, t.status, t.status_reason, t.consecutive_failures;
        RETURN;
    END IF;
    RETURN QUERY
    WITH rule AS (
        SELECT t.id,
            t.schedule_kind = 'once' AND t.next_run_at IS NULL AS once,
            t.consecutive_failures + 1 AS failures,
            t.auto_pause_after IS NOT NULL AND t.consecutive_failures + 1 >= t.auto_pause_after
                AND t.status = 'active' AS pauses
        FROM scheduled_tasks t WHERE t.id = p_task
    )
    UPDATE scheduled_tasks AS t SET
        consecutive_failures = rule.failures,
        status = CASE WHEN rule.once THEN 'failed' WHEN rule.pauses THEN 'paused' ELSE t.status END,
        status_reason = CASE
            WHEN rule.once THEN 'execution ' || p_execution || ' ' || p_status
            WHEN rule.pauses THEN 'auto-paused after ' || rule.failures || ' consecutive failures'
            ELSE t.status_reason END,
        updated_at = CASE WHEN rule.once OR rule.pauses THEN now() ELSE t.updated_at END
    FROM rule WHERE t.id = rule.id
    RETURNING t.id, t.status, t.status_reason, t.consecutive_failures;
END
$$;

-- Retention of task_audit: a checkpoint row recording the hash of the last row to go, then up to p_limit of
-- the oldest rows, a prefix of the chain whose rows are all older than p_retention_days (this clock).
CREATE FUNCTION scheduler_prune_audit(p_retention_days integer, p_limit integer, p_actor text)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, {schema}, pg_temp
    AS $$
DECLARE
    first_kept bigint;
    last_id bigint;
    last_hash text;
    pruned integer;
BEGIN
    IF p_retention_days IS NULL OR p_retention_days < 1 OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'audit retention needs at least 1 day and a positive limit'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock({lock});
    SELECT min(a.id) INTO first_kept FROM task_audit a
        WHERE a.at >= clock_timestamp() - make_interval(days => p_retention_days);
    SELECT count(*), max(p.id) INTO pruned, last_id FROM (
        SELECT a.id FROM task_audit a WHERE first_kept IS NULL OR a.id < first_kept
        ORDER BY a.id LIMIT p_limit
    ) p;
    IF last_id IS NULL THEN
        RETURN 0;
    END IF;
    SELECT a.row_hash INTO last_hash FROM task_audit a WHERE a.id = last_id;
    INSERT INTO task_audit (at, actor, action, after)
    VALUES (clock_timestamp(), left(p_actor, 200), 'checkpoint', jsonb_build_object(
        'pruned_rows', pruned, 'pruned_through_id', last_id, 'pruned_through_hash', last_hash,
        'retention_days', p_retention_days));
    DELETE FROM task_audit a WHERE a.id <= last_id;
    RETURN pruned;
END
$$;
"""

NEW_COLUMNS = (
    ("db_user", sa.String(length=200)),
    ("db_role", sa.String(length=200)),
    ("db_host", sa.String(length=255)),
    ("prev_hash", sa.String(length=64)),
    ("row_hash", sa.String(length=64)),
)


def _run(bind: Any, sql: str) -> None:
    """Run plain SQL on the driver's cursor with no parameters, so the % of RAISE formats stays as it is."""
    cursor = bind.connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _postgres(bind: Any) -> None:
    schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    quoted = bind.dialect.identifier_preparer.quote(schema)
    for name, kind in NEW_COLUMNS:
        op.add_column("task_audit", sa.Column(name, kind, nullable=True))
    _run(bind, HASH_FUNCTIONS)
    _run(bind, BACKFILL.format(genesis=GENESIS))
    for name in ("prev_hash", "row_hash"):
        op.alter_column("task_audit", name, existing_type=sa.String(length=64), nullable=False)
    _run(bind, TRIGGERS.format(schema=quoted, lock=CHAIN_LOCK, genesis=GENESIS))
    for function in FUNCTIONS:
        bind.exec_driver_sql(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")


def _sqlite(bind: Any) -> None:
    with op.batch_alter_table("task_audit") as batch:
        for name, kind in NEW_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    table = sa.table("task_audit", sa.column("id"), sa.column("prev_hash"), sa.column("row_hash"))
    prev = GENESIS
    for row in bind.execute(sa.select(*HASHED_COLUMNS).order_by(sa.text("id"))).all():
        hashed = row_hash(prev, row._mapping)
        bind.execute(sa.update(table).where(table.c.id == row.id).values(prev_hash=prev, row_hash=hashed))
        prev = hashed
    with op.batch_alter_table("task_audit") as batch:
        for name in ("prev_hash", "row_hash"):
            batch.alter_column(name, existing_type=sa.String(length=64), nullable=False)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _postgres(bind)
    else:
        _sqlite(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for trigger in ("task_audit_no_truncate", "task_audit_append_only", "task_audit_20_chain",
                        "task_audit_10_stamp"):  # fmt: skip
            bind.exec_driver_sql(f"DROP TRIGGER {trigger} ON task_audit")
        for function in reversed(FUNCTIONS):
            bind.exec_driver_sql(f"DROP FUNCTION {function}")
    with op.batch_alter_table("task_audit") as batch:
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
