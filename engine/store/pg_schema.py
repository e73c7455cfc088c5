"""PostgreSQL tables, and the daily partitions of the message tables.

The four tables that grow with traffic (``messages``, ``message_raw``,
``content``, ``deliveries``) are range-partitioned by the message's
``received_at`` (epoch seconds), one partition per UTC day and table. A day's
partitions are created, all four at once, before the first message of that day
is inserted; retention drops whole days (``DROP TABLE`` frees the disk at once,
where a DELETE leaves dead tuples that VACUUM only makes reusable). Rows of one
message always sit in the same day, so a day's partitions go together. Partitioned tables
cannot carry foreign keys to a non-unique-by-id parent, so the store deletes
what SQLite would cascade. A day is dropped only when everything in it is final
(``day_state``, ``drop_final_days``); retention deletes the final rows of a day
it keeps, and drops that day on a later run once its last message is final.

Work that several engine processes share carries ``claimed_by`` and
``lease_until`` (see ``engine.store.pg_claims``).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from engine.store.signals import PG_SIGNALS_SCHEMA

SCHEMA_VERSION = 1
DAY = 86400
PARTITIONED = ("messages", "message_raw", "content", "deliveries")
# How long dropping a day waits for its tables (a long reader holds them); then the day waits
# for the next run rather than stall every insert queued behind the drop.
LOCK_TIMEOUT = "2s"

MESSAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id BIGSERIAL, channel TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL, control_id TEXT, message_type TEXT, msg_key TEXT,
    duplicate INTEGER NOT NULL DEFAULT 0, error TEXT, updated_at DOUBLE PRECISION,
    claimed_by TEXT, lease_until DOUBLE PRECISION,
    PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at);
CREATE INDEX IF NOT EXISTS messages_pending ON messages (channel, id) WHERE status = 'RECEIVED';
CREATE INDEX IF NOT EXISTS messages_control_id ON messages (control_id);
CREATE INDEX IF NOT EXISTS messages_channel_received ON messages (channel, received_at);
CREATE TABLE IF NOT EXISTS message_raw (
    id BIGINT NOT NULL, received_at DOUBLE PRECISION NOT NULL, raw BYTEA NOT NULL,
    PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at);
CREATE TABLE IF NOT EXISTS content (
    message_id BIGINT NOT NULL, received_at DOUBLE PRECISION NOT NULL, layer TEXT NOT NULL,
    data BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (message_id, layer, received_at)) PARTITION BY RANGE (received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id BIGSERIAL, message_id BIGINT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
    destination TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    payload BYTEA, response BYTEA, error TEXT, updated_at DOUBLE PRECISION, msg_key TEXT,
    claimed_by TEXT, lease_until DOUBLE PRECISION,
    PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at);
CREATE INDEX IF NOT EXISTS deliveries_queued ON deliveries (destination, id)
    WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries (message_id);
"""

CLINICAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT NOT NULL, issuer TEXT NOT NULL DEFAULT '', family TEXT, given TEXT,
    birth_date TEXT, sex TEXT, patient_class TEXT, location TEXT, merged_into TEXT,
    updated_at DOUBLE PRECISION, PRIMARY KEY (patient_id, issuer));
CREATE TABLE IF NOT EXISTS orders (
    id BIGSERIAL PRIMARY KEY, order_key TEXT NOT NULL UNIQUE, patient_id TEXT, issuer TEXT,
    placer TEXT, filler TEXT, accession TEXT, requested_procedure_id TEXT, study_uid TEXT,
    modality TEXT, procedure_code TEXT, procedure_text TEXT, priority TEXT, status TEXT,
    control TEXT NOT NULL, patient_class TEXT, location TEXT,
    cancelled INTEGER NOT NULL DEFAULT 0, message_id BIGINT,
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS orders_accession ON orders (accession);
CREATE INDEX IF NOT EXISTS orders_study ON orders (study_uid);
CREATE TABLE IF NOT EXISTS studies (
    uid TEXT PRIMARY KEY, accession TEXT, patient_id TEXT, issuer TEXT, modality TEXT,
    body_part TEXT, state TEXT NOT NULL, revision INTEGER NOT NULL DEFAULT 0,
    series_count INTEGER NOT NULL DEFAULT 0, instance_count INTEGER NOT NULL DEFAULT 0,
    expected_count INTEGER, quiet_secs DOUBLE PRECISION NOT NULL, channel TEXT NOT NULL,
    first_at DOUBLE PRECISION NOT NULL, last_at DOUBLE PRECISION NOT NULL,
    completed_at DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS studies_receiving ON studies (last_at) WHERE state = 'receiving';
CREATE INDEX IF NOT EXISTS studies_accession ON studies (accession);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, transfer_syntax TEXT NOT NULL, path TEXT NOT NULL,
    size BIGINT NOT NULL, revision INTEGER NOT NULL, own_output INTEGER NOT NULL DEFAULT 0,
    received_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid, series_uid);
CREATE INDEX IF NOT EXISTS instances_received ON instances (received_at);
CREATE TABLE IF NOT EXISTS cases (
    id BIGSERIAL PRIMARY KEY, order_id BIGINT, study_uid TEXT NOT NULL,
    revision INTEGER NOT NULL, state TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, UNIQUE (study_uid, revision));
CREATE INDEX IF NOT EXISTS cases_order ON cases (order_id);
"""

INFERENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS inference_jobs (
    id BIGSERIAL PRIMARY KEY, case_id BIGINT NOT NULL, model TEXT, state TEXT NOT NULL,
    lane INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0, error TEXT,
    claimed_by TEXT, lease_until DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS inference_jobs_queued ON inference_jobs (lane, id)
    WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS inference_jobs_running ON inference_jobs (lease_until)
    WHERE state = 'running';
CREATE INDEX IF NOT EXISTS inference_jobs_case ON inference_jobs (case_id);
CREATE TABLE IF NOT EXISTS inference_results (
    case_id BIGINT PRIMARY KEY, finished_at DOUBLE PRECISION NOT NULL,
    notified_at DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS findings (
    id BIGSERIAL PRIMARY KEY, case_id BIGINT NOT NULL, job_id BIGINT NOT NULL,
    study_uid TEXT NOT NULL, code TEXT NOT NULL, display TEXT NOT NULL, system TEXT NOT NULL,
    probability DOUBLE PRECISION, critical INTEGER NOT NULL, model TEXT NOT NULL,
    version TEXT NOT NULL, location TEXT, demo INTEGER NOT NULL, criticality TEXT NOT NULL,
    mode TEXT NOT NULL, detail TEXT, created_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS findings_case ON findings (case_id);
CREATE TABLE IF NOT EXISTS inference_audit (
    id BIGSERIAL PRIMARY KEY, job_id BIGINT NOT NULL, case_id BIGINT NOT NULL,
    study_uid TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, checksum TEXT NOT NULL,
    device TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
    batch_size INTEGER NOT NULL, queue_ms DOUBLE PRECISION, preprocess_ms DOUBLE PRECISION,
    forward_ms DOUBLE PRECISION, total_ms DOUBLE PRECISION, outputs TEXT NOT NULL, error TEXT,
    created_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS inference_audit_case ON inference_audit (case_id);
CREATE TABLE IF NOT EXISTS pseudonyms (
    kind TEXT NOT NULL, real TEXT NOT NULL, pseudo TEXT NOT NULL UNIQUE, case_id BIGINT,
    created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, real));
CREATE TABLE IF NOT EXISTS model_loads (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, format TEXT NOT NULL,
    checksum TEXT NOT NULL, device TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    at DOUBLE PRECISION NOT NULL);
"""

RESULTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS worklist (
    case_id BIGINT PRIMARY KEY, priority TEXT, reason TEXT,
    ai_flags TEXT NOT NULL DEFAULT '[]', raised_at DOUBLE PRECISION,
    state TEXT NOT NULL DEFAULT 'unread', updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id BIGSERIAL PRIMARY KEY, case_id BIGINT NOT NULL, model TEXT NOT NULL,
    version TEXT NOT NULL, code TEXT NOT NULL, verdict TEXT NOT NULL, source TEXT NOT NULL,
    corrected_code TEXT, reader TEXT, comment TEXT, created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (case_id, model, version, code, source));
CREATE INDEX IF NOT EXISTS feedback_model ON feedback (model, version);
"""

FHIR_SCHEMA = """
CREATE TABLE IF NOT EXISTS fhir_resources (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, case_id BIGINT,
    body TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (resource_type, resource_id));
CREATE INDEX IF NOT EXISTS fhir_resources_case ON fhir_resources (case_id);
CREATE TABLE IF NOT EXISTS fhir_index (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, kind TEXT NOT NULL,
    system TEXT, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS fhir_index_key ON fhir_index (kind, value);
CREATE INDEX IF NOT EXISTS fhir_index_resource ON fhir_index (resource_type, resource_id);
"""


@functools.lru_cache(maxsize=1024)
def pg(sql: str) -> str:
    """Portable SQL's ``?`` placeholders as ``$1``, ``$2``... (it holds no literal ``?``)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def lock(conn: asyncpg.Connection, name: str) -> None:
    """A transaction-scoped advisory lock, named per schema (tests share one database)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':' || $1))",
                       name)


async def create_schema(conn: asyncpg.Connection) -> None:
    """Create every table (idempotent); several processes may start at once."""
    async with conn.transaction():
        await lock(conn, "schema")
        for ddl in (MESSAGES_SCHEMA, CLINICAL_SCHEMA, INFERENCE_SCHEMA, RESULTS_SCHEMA,
                    FHIR_SCHEMA, PG_SIGNALS_SCHEMA):
            await conn.execute(ddl)
        await conn.execute("INSERT INTO schema_version VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           SCHEMA_VERSION, time.time())


def day_of(received_at: float) -> int:
    return int(received_at // DAY)


async def existing_days(conn: asyncpg.Connection) -> set[int]:
    """Days that have partitions (read from the catalog: another process may have made them)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'messages'"
        " AND p.relnamespace = current_schema()::regnamespace")
    return {int(r[0].rsplit("_d", 1)[1]) for r in rows}


async def create_day(conn: asyncpg.Connection, day: int) -> None:
    """Create the four partitions of one day (in the caller's transaction)."""
    await lock(conn, "partitions")
    lo, hi = float(day * DAY), float((day + 1) * DAY)
    for table in PARTITIONED:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table}_d{day} PARTITION OF {table}"
                           f" FOR VALUES FROM ({lo!r}) TO ({hi!r})")


# A day's partitions have no statistics when they are new, and autovacuum looks again only
# once a minute: meanwhile the planner guesses (a fixed share of the rows for ``id = ...``) and
# picks sequential scans and hash joins over the whole day for the statements that finish a
# batch of deliveries (4-34 ms each on a 50,000-row day, growing with it). So a day partition is
# analyzed here whenever its live rows have doubled since it last was (never: from 1,000 rows
# on): about twenty times over a day of a million rows, each a sample of 30,000 rows.
GROWN_DAYS = (
    "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
    " WHERE s.schemaname = current_schema() AND s.relname ~ '_d[0-9]+$'"
    " AND s.n_live_tup >= $1 AND s.n_live_tup > 2 * greatest(c.reltuples, 0)"
    " ORDER BY s.relname")
MIN_ROWS_TO_ANALYZE = 1000


async def analyze_grown_days(conn: asyncpg.Connection) -> list[str]:
    """ANALYZE every day partition whose rows have doubled since its statistics were taken
    (see ``GROWN_DAYS``): the tables analyzed. One process does it at a time (the others skip
    it); a table busy with a drop is left for the next run. Raises asyncpg errors."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext("
                                   "current_schema() || ':analyze'))"):
            return []
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        tables = [r[0] for r in await conn.fetch(GROWN_DAYS, MIN_ROWS_TO_ANALYZE)]
        for table in tables:  # names from the catalog, matched to <table>_d<day>
            await conn.execute(f'ANALYZE "{table}"')
    return tables


async def day_state(conn: asyncpg.Connection, day: int, final: Sequence[str]
                    ) -> tuple[int, bool]:
    """(messages in *day*, whether anything of the day is unfinished: a message whose status
    is not final, or a delivery still QUEUED). Reads the whole day: run it outside the
    writer's transaction (see ``drop_final_days``)."""
    n, unfinished = await conn.fetchrow(
        f"SELECT count(*), count(*) FILTER (WHERE status <> ALL($1::text[])) FROM messages_d{day}",
        list(final))
    waiting = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM deliveries_d{day} WHERE status = 'QUEUED')")
    return int(n), bool(unfinished or waiting)


async def drop_final_days(conn: asyncpg.Connection, days: Sequence[int],
                          newest: Mapping[int, int] | None = None, since: float | None = None
                          ) -> dict[int, int] | None:
    """Drop those of *days* (found all final by ``day_state``) that still are; return the
    bytes each dropped day held, or None when the tables were not granted within
    ``LOCK_TIMEOUT``: nothing is dropped, the days wait for the next run.

    The four tables are locked first (as DROP would lock them), so nothing changes between
    the check and the drop. The lock waits at most ``LOCK_TIMEOUT``: behind a long reader,
    every insert of every process would queue behind our waiting request. It is taken in a
    savepoint, so a timeout undoes only this, not the writer's group around it.

    The check under the lock reads indexes: since ``day_state`` a final message can only have
    become unfinished through RECEIVED (``messages_pending``) or a QUEUED delivery
    (``deliveries_queued``). With *newest* (day -> the newest message id the archive holds of
    it), a day that has gained a message since is kept; with *since* (the run's start), so is
    a day with a message changed since (reprocessed and final again: its archived copy is
    stale). That last check reads the day's message rows under the lock (some 70 ms per
    million when cached; a run takes about ``PRUNE_MAX_PER_RUN`` messages), so it is made only
    with an archive: without one, a message final again may simply go.
    """
    if not days:
        return {}
    before = await conn.fetchval("SELECT current_setting('lock_timeout')")
    try:
        async with conn.transaction():  # a savepoint inside the writer's transaction
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await lock(conn, "partitions")
            await conn.execute("LOCK TABLE ONLY messages, ONLY message_raw, ONLY content,"
                               " ONLY deliveries IN ACCESS EXCLUSIVE MODE")
            freed = await _drop_unchanged(conn, days, newest, since)
    except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
        return None  # the savepoint's rollback undid SET LOCAL too
    # SET LOCAL outlives the savepoint: the group's other writes wait as long as they used to.
    await conn.execute("SELECT set_config('lock_timeout', $1, true)", before)
    return freed


async def _drop_unchanged(conn: asyncpg.Connection, days: Sequence[int],
                          newest: Mapping[int, int] | None, since: float | None
                          ) -> dict[int, int]:
    existing = await existing_days(conn)
    freed: dict[int, int] = {}
    for day in days:
        if day not in existing:
            continue
        checks = [f"EXISTS (SELECT 1 FROM messages_d{day} WHERE status = 'RECEIVED')",
                  f"EXISTS (SELECT 1 FROM deliveries_d{day} WHERE status = 'QUEUED')"]
        args: list[Any] = []
        if newest is not None:
            args.append(newest.get(day, 0))
            checks.append(f"EXISTS (SELECT 1 FROM messages_d{day} WHERE id > ${len(args)})")
        if since is not None:
            args.append(since)
            checks.append(f"EXISTS (SELECT 1 FROM messages_d{day} WHERE updated_at > ${len(args)})")
        if await conn.fetchval(f"SELECT {' OR '.join(checks)}", *args):
            continue
        freed[day] = int(await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE"
            " c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1::text[])",
            [f"{table}_d{day}" for table in PARTITIONED]))
        for table in PARTITIONED:
            await conn.execute(f"DROP TABLE IF EXISTS {table}_d{day}")
    return freed
