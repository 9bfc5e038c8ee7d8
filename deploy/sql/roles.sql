-- Least-privilege PostgreSQL roles for systemprompt-scheduler.
--
-- Apply as a superuser after every `systemprompt scheduler:migrate`, in each scheduler database (roles are
-- cluster-wide, privileges are per database, and the GRANTs name tables that must already exist):
--
--   psql -v ON_ERROR_STOP=1 -d scheduler -f deploy/sql/roles.sql
--
-- Re-running is safe and converges: roles are created only when missing, and every role's privileges on our
-- tables are revoked and granted again inside one transaction, so the database always ends up exactly as this
-- file says (a privilege deleted here is deleted there) and no session ever sees a half-applied state.
--
-- The five roles are NOLOGIN groups; each process logs in as its own user that is a member of one of them, so a
-- leaked worker password cannot delete tasks and credentials can be rotated per process:
--
--   CREATE ROLE sched_planner LOGIN PASSWORD '...' IN ROLE scheduler_planner;
--   CREATE ROLE sched_worker  LOGIN PASSWORD '...' IN ROLE scheduler_worker;
--   CREATE ROLE sched_migrate LOGIN PASSWORD '...' IN ROLE scheduler_admin;
--   -- Migrations then run as scheduler_admin, so tables added by later migrations get the same owner:
--   ALTER ROLE sched_migrate SET role = 'scheduler_admin';
--
-- Id columns are BIGSERIAL (SQLAlchemy autoincrement on PostgreSQL): nextval() needs USAGE on the sequence,
-- so every INSERT grant below comes with USAGE on that table's *_id_seq.

BEGIN;

-- Fail fast instead of queueing behind a long planner transaction (and blocking everyone queued behind us);
-- just run the file again.
SET LOCAL lock_timeout = '5s';

DO $roles$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY[
        'scheduler_admin', 'scheduler_operator', 'scheduler_viewer', 'scheduler_planner', 'scheduler_worker'
    ] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Another session (another database of this cluster, a parallel test run) created it between
                -- our check and our CREATE: the role exists, which is all we wanted.
                NULL;
            END;
        END IF;
    END LOOP;
END
$roles$;

-- scheduler_admin owns the schema objects: owning is what allows DDL (ALTER/DROP), so migrations run as it.
-- ALTER ... OWNER takes an exclusive lock, so it only runs when the owner is not already right; the id
-- sequences are owned by their columns and follow their table.
DO $owner$
DECLARE
    table_name text;
    function_name text;
BEGIN
    FOREACH table_name IN ARRAY ARRAY[
        'scheduled_tasks', 'task_executions', 'task_logs', 'task_audit', 'scheduler_leases', 'alembic_version',
        'task_backfills', 'scheduler_calendars', 'task_alert_rules', 'alert_incidents', 'alert_deliveries',
        'alert_silences'
    ] LOOP
        IF (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(table_name))
                IS DISTINCT FROM 'scheduler_admin' THEN
            EXECUTE format('ALTER TABLE %I OWNER TO scheduler_admin', table_name);
        END IF;
    END LOOP;
    -- The functions of migration 0002: the SECURITY DEFINER ones run as their owner, which must own the
    -- tables too (and must not be a superuser that merely ran the migration).
    FOREACH function_name IN ARRAY ARRAY[
        'scheduler_audit_field(text)', 'scheduler_audit_row_hash(text, task_audit)', 'scheduler_audit_stamp()',
        'scheduler_audit_chain()', 'scheduler_audit_append_only()',
        'scheduler_task_outcome(bigint, bigint, text)', 'scheduler_prune_audit(integer, integer, text)'
    ] LOOP
        IF (SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = to_regprocedure(function_name))
                IS DISTINCT FROM 'scheduler_admin' THEN
            EXECUTE format('ALTER FUNCTION %s OWNER TO scheduler_admin', function_name);
        END IF;
    END LOOP;
    -- Explicit CONNECT and schema USAGE, so the roles keep working where PUBLIC's defaults were revoked (a
    -- hardened cluster does); CREATE only for the admin, who adds tables in later migrations.
    EXECUTE format(
        'GRANT CONNECT ON DATABASE %I TO scheduler_admin, scheduler_operator, scheduler_viewer, '
        'scheduler_planner, scheduler_worker', current_database());
    EXECUTE format(
        'GRANT USAGE ON SCHEMA %I TO scheduler_operator, scheduler_viewer, scheduler_planner, scheduler_worker',
        current_schema());
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO scheduler_admin', current_schema());
END
$owner$;

-- Start from nothing (REVOKE ALL on a table also drops its column-level grants), then grant what each role
-- needs. PUBLIC is included so nobody outside these roles keeps a stray privilege.
REVOKE ALL ON scheduled_tasks, task_executions, task_logs, task_audit, scheduler_leases, alembic_version,
    task_backfills, scheduler_calendars, task_alert_rules, alert_incidents, alert_deliveries, alert_silences
    FROM PUBLIC, scheduler_operator, scheduler_viewer, scheduler_planner, scheduler_worker;
REVOKE ALL ON SEQUENCE scheduled_tasks_id_seq, task_executions_id_seq, task_logs_id_seq, task_audit_id_seq,
    task_backfills_id_seq, scheduler_calendars_id_seq, alert_incidents_id_seq, alert_deliveries_id_seq,
    alert_silences_id_seq
    FROM PUBLIC, scheduler_operator, scheduler_viewer, scheduler_planner, scheduler_worker;
REVOKE ALL ON FUNCTION scheduler_audit_field(text), scheduler_audit_row_hash(text, task_audit),
    scheduler_audit_stamp(), scheduler_audit_chain(), scheduler_audit_append_only(),
    scheduler_task_outcome(bigint, bigint, text), scheduler_prune_audit(integer, integer, text)
    FROM PUBLIC, scheduler_operator, scheduler_viewer, scheduler_planner, scheduler_worker;

-- task_audit is append-only for every role here: INSERT at most, never UPDATE, DELETE or TRUNCATE. Its
-- triggers (migration 0002) record the database identity of the writer, chain each row to the one before by
-- hash, and refuse UPDATE, DELETE and TRUNCATE to anyone but a superuser or the table's owner, whatever was
-- granted. Pruning old rows is scheduler_prune_audit's, which leaves a checkpoint row in the chain.

-- Every process checks the schema version at start-up and refuses an outdated schema (DESIGN §5).
GRANT SELECT ON alembic_version
    TO scheduler_operator, scheduler_viewer, scheduler_planner, scheduler_worker;

-- scheduler_viewer: dashboards and the CLI's read verbs (list, history, stats, logs); writes nothing.
GRANT SELECT ON scheduled_tasks, task_executions, task_logs, task_audit, scheduler_leases, task_backfills,
    scheduler_calendars TO scheduler_viewer;
GRANT SELECT ON task_alert_rules, alert_incidents, alert_deliveries, alert_silences TO scheduler_viewer;

-- scheduler_operator: on-call. Reads everything; pauses and resumes tasks; runs one now; audits both.
-- Defining, changing or deleting tasks (command, schedule, data) stays with scheduler_admin, so the UPDATE is
-- limited to the columns pause/resume touch (resume recomputes next_run_at and clears the failure streak)
-- and last_run_at, which a manual run stamps.
GRANT SELECT ON scheduled_tasks, task_executions, task_logs, task_audit, scheduler_leases, task_backfills,
    scheduler_calendars TO scheduler_operator;
GRANT UPDATE (status, status_reason, next_run_at, consecutive_failures, last_run_at, updated_at, paused_until)
    ON scheduled_tasks TO scheduler_operator;
-- Backfills (start, cancel) and skips (skipped execution rows) are on-call work too (migration 0005).
GRANT INSERT, UPDATE (status, created, finished_at) ON task_backfills TO scheduler_operator;
GRANT USAGE ON SEQUENCE task_backfills_id_seq TO scheduler_operator;
GRANT UPDATE (reason, finished_at) ON task_executions TO scheduler_operator;
GRANT INSERT ON task_executions, task_audit TO scheduler_operator;
GRANT USAGE ON SEQUENCE task_executions_id_seq, task_audit_id_seq TO scheduler_operator;
-- A manual run is published straight away and then marked queued; nothing else about an execution.
GRANT UPDATE (status, enqueued_at) ON task_executions TO scheduler_operator;
-- Alerts (docs/alerts.md): reads incidents and deliveries (the alerts verb); silences a task (audited). A
-- task's alert rules are part of its definition: changing them stays with scheduler_admin.
GRANT SELECT ON task_alert_rules, alert_incidents, alert_deliveries, alert_silences TO scheduler_operator;
GRANT INSERT ON alert_silences TO scheduler_operator;
GRANT USAGE ON SEQUENCE alert_silences_id_seq TO scheduler_operator;

-- scheduler_planner: selects due tasks (FOR UPDATE SKIP LOCKED needs UPDATE on a column), advances them
-- (next_run_at, run_count, last_run_at, status: a task past its end completes), counts the failure of an
-- execution its sweep found lost (consecutive_failures, the auto-pause), writes execution rows (ON CONFLICT
-- DO NOTHING), relays, cancels and recovers them, holds the leader lease, and deletes old history for
-- retention. It never creates or deletes tasks, nor changes what they run (command, schedule, data, queue).
-- On task_logs: INSERT for the error line of an attempt the recovery sweep found lost, SELECT because
-- DELETE ... WHERE reads the column it filters on.
GRANT SELECT ON scheduled_tasks TO scheduler_planner;
GRANT UPDATE (next_run_at, run_count, last_run_at, status, status_reason, consecutive_failures, updated_at,
    paused_until) ON scheduled_tasks TO scheduler_planner;
-- Releasing backfills' executions and marking finished backfills (scheduler.planning.timed).
GRANT SELECT, UPDATE (status, finished_at) ON task_backfills TO scheduler_planner;
-- Exclusion calendars (migration 0003): the planner reads the days of the calendars its due tasks name.
-- Creating and deleting calendars, like defining tasks, stays with scheduler_admin.
GRANT SELECT ON scheduler_calendars TO scheduler_planner;
GRANT SELECT, INSERT, UPDATE, DELETE ON task_executions TO scheduler_planner;
GRANT SELECT, INSERT, DELETE ON task_logs TO scheduler_planner;
GRANT SELECT, INSERT, UPDATE ON scheduler_leases TO scheduler_planner;
GRANT USAGE ON SEQUENCE task_executions_id_seq, task_logs_id_seq TO scheduler_planner;
-- The planner pauses a task whose stored schedule no longer parses, and every change is audited (DESIGN §2.9):
-- it appends that row. Append only, like the worker: it can neither read the audit log nor rewrite it.
GRANT INSERT ON task_audit TO scheduler_planner;
GRANT USAGE ON SEQUENCE task_audit_id_seq TO scheduler_planner;
-- Audit retention (auditRetentionDays, in the planner's clean-up): the function decides the cutoff from the
-- database clock (at least one day) and leaves a checkpoint row naming this login. Revoke it to keep audit
-- rows for ever whatever the planners are configured with.
GRANT EXECUTE ON FUNCTION scheduler_prune_audit(integer, integer, text) TO scheduler_planner;
-- Alerts: the leader reads the rules and silences, opens and resolves incidents and works the delivery
-- outbox. It deletes none of them.
GRANT SELECT ON task_alert_rules, alert_silences TO scheduler_planner;
GRANT SELECT, INSERT, UPDATE ON alert_incidents, alert_deliveries TO scheduler_planner;
GRANT USAGE ON SEQUENCE alert_incidents_id_seq, alert_deliveries_id_seq TO scheduler_planner;

-- scheduler_worker: claims and finishes executions and appends their logs. It writes no task row itself: a
-- final outcome changes its task (failure streak, auto-pause, a once task's end) only through
-- scheduler_task_outcome, which counts an execution of that task only once it is finished with that status
-- and pauses a task only when the task's own auto_pause_after says so. So a leaked worker password cannot
-- pause a task (a plain UPDATE of status is refused), nor create, delete or re-point one. Nor can it delete
-- history, so the built-in cleanup command fails when scheduled as a task; the planner cleans up every
-- cleanupInterval anyway.
GRANT SELECT ON scheduled_tasks, task_backfills TO scheduler_worker;
GRANT EXECUTE ON FUNCTION scheduler_task_outcome(bigint, bigint, text) TO scheduler_worker;
-- On executions, only what a claim, a heartbeat and an outcome write: never which task, command, slot or queue
-- an execution is (the command a worker runs comes from that row).
GRANT SELECT ON task_executions TO scheduler_worker;
GRANT UPDATE (status, attempt, worker, started_at, heartbeat_at, finished_at, enqueued_at, duration_ms, result,
    error, reason) ON task_executions TO scheduler_worker;
-- SELECT because the per-execution log cap sums what is already stored.
GRANT SELECT, INSERT ON task_logs TO scheduler_worker;
GRANT USAGE ON SEQUENCE task_logs_id_seq TO scheduler_worker;
-- Health checks (the system:health command, `scheduler:health` as a probe) ask whether a lease is fresh.
GRANT SELECT ON scheduler_leases TO scheduler_worker;

-- An auto-pause is a change to a task and every change is audited (DESIGN §2.9): the worker appends that row.
-- Append only: it can neither read the audit log nor rewrite it.
GRANT INSERT ON task_audit TO scheduler_worker;
GRANT USAGE ON SEQUENCE task_audit_id_seq TO scheduler_worker;

COMMIT;
