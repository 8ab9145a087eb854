"""The PostgreSQL job store: servers and workers on any number of hosts share one database.

Same contract as `SQLiteJobStore`, held across hosts by the database instead of by one file lock:
a claim takes the most urgent queued row with `FOR UPDATE SKIP LOCKED` (workers racing for claims
each get a different job, and none waits on another's), the reaper and the callback loop skip rows
another server holds, and every status change writes its event row in the same transaction.

Heartbeats, starts, ends and the reaper's "stale" are read from the database's clock, so hosts whose
clocks disagree never reap a live worker. The schema carries its version (`schema_version`) and is
upgraded in place on open, one migration per transaction under an advisory lock, so servers and
workers starting together upgrade it once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from openseedance.serve.jobs import EVENT_LEASE, Job, JobError, JobStore, StoreError
from openseedance.serve.spec import JobSpec

_NOW = "extract(epoch from statement_timestamp())::double precision"  # the database's clock, in epoch seconds
_JSON = ("spec", "error", "result")
NOW = object()  # a value for `_set`: the database's clock
_UPGRADE_LOCK = 0x05EEDA9CE  # the advisory lock held while the schema is upgraded

# Each entry upgrades the database from version i to i + 1; never edit a released one.
_MIGRATIONS = (
    """
CREATE TABLE jobs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text UNIQUE NOT NULL,
    api text NOT NULL,
    owner text NOT NULL,
    model text NOT NULL,
    spec jsonb NOT NULL,
    status text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    progress double precision NOT NULL DEFAULT 0,
    error jsonb,
    result jsonb,
    callback_url text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    deadline double precision,
    worker text,
    heartbeat double precision,
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX jobs_queue ON jobs (priority DESC, seq) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs (heartbeat) WHERE status = 'running';
CREATE INDEX jobs_owner ON jobs (owner, seq);
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL,
    status text NOT NULL,
    url text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    due double precision NOT NULL,
    done smallint NOT NULL DEFAULT 0
);
CREATE INDEX events_due ON events (due) WHERE done = 0;
CREATE INDEX events_job ON events (job_id, id) WHERE done = 0;
""",
    # every server looks for results past their time each second: an index keeps that cheap at any size
    """
CREATE INDEX jobs_keep_until ON jobs (((result->>'keep_until')::double precision))
    WHERE jsonb_typeof(result->'files') = 'object';
""",
)
SCHEMA_VERSION = len(_MIGRATIONS)


def redact(url: str) -> str:
    """`url` with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _check_url(url: str) -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise StoreError(f"malformed database URL {redact(url)!r}: {str(e).strip()} (expected "
                         "postgresql://user[:password]@host[:port]/dbname)") from None  # fmt: skip


def upgrade(url: str, upto: int = SCHEMA_VERSION) -> int:
    """Bring the database at `url` to schema version `upto` (default: the newest); returns the version
    it had. Raises StoreError when it cannot be reached or is newer than this code."""
    _check_url(url)
    try:
        db = psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise StoreError(f"cannot reach the PostgreSQL database {redact(url)}: {str(e).strip()}") from None
    with db:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (0)")
            found = row[0] if row else 0
        if found > SCHEMA_VERSION:
            raise StoreError(f"the database {redact(url)} has job-store schema version {found}, newer than this "
                             f"version of openseedance knows ({SCHEMA_VERSION}): upgrade openseedance")  # fmt: skip
        for version in range(found, upto):
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
                if db.execute("SELECT version FROM schema_version").fetchone()[0] != version:
                    continue  # another process did this step meanwhile
                db.execute(_MIGRATIONS[version])
                db.execute("UPDATE schema_version SET version = %s", (version + 1,))
    return found


class PostgresJobStore(JobStore):
    """Jobs in a PostgreSQL database (a pool of at most `connections` connections per process)."""

    def __init__(self, url: str, connections: int = 8) -> None:
        self.url = url
        upgrade(url)
        self._pool = ConnectionPool(url, min_size=1, max_size=connections, open=False, timeout=60,
                                    kwargs={"row_factory": dict_row}, check=ConnectionPool.check_connection,
                                    name="openseedance-jobs")  # fmt: skip
        self._pool.open(wait=True, timeout=30)

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresJobStore({redact(self.url)!r})"

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        with self._pool.connection() as db, db.cursor() as cursor:
            yield cursor

    @staticmethod
    def _job(row: dict[str, Any]) -> Job:
        return Job(**{**row, "spec": JobSpec.from_dict(row["spec"])})

    @staticmethod
    def _event(cursor: psycopg.Cursor, job_id: str, status: str) -> None:
        cursor.execute("INSERT INTO events (job_id, status, url, due) SELECT id, %s, callback_url, %s FROM jobs "
                       "WHERE id = %s AND callback_url IS NOT NULL", (status, time.time(), job_id))  # fmt: skip

    def _set(self, cursor: psycopg.Cursor, job_id: str, where: str, params: tuple, **values: Any) -> bool:
        """Update `job_id` where `where` holds; `NOW` as a value is the database's clock. A status change
        leaves its event."""
        values["updated_at"] = NOW
        assignments = ", ".join(f"{k} = {_NOW}" if v is NOW else f"{k} = %s" for k, v in values.items())
        params = (*(Jsonb(v) if k in _JSON and v is not None else v for k, v in values.items() if v is not NOW),
                  job_id, *params)  # fmt: skip
        cursor.execute(f"UPDATE jobs SET {assignments} WHERE id = %s AND {where}", params)
        changed = cursor.rowcount > 0
        if changed and "status" in values:
            self._event(cursor, job_id, values["status"])
        return changed

    def _require(self, cursor: psycopg.Cursor, job_id: str) -> Job:
        row = cursor.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
        if row is None:
            raise JobError("not_found", f"no task {job_id!r}")
        return self._job(row)

    # ------------------------------------------------------------------ the API side

    def create(self, job: Job) -> Job:
        job.updated_at = job.created_at
        columns = [f for f in Job.__dataclass_fields__ if f != "seq"]
        stored = {"spec": job.spec.to_dict(), "error": job.error, "result": job.result}
        values = [Jsonb(stored[c]) if c in _JSON and stored[c] is not None else getattr(job, c) if c not in _JSON
                  else None for c in columns]  # fmt: skip
        with self._tx() as cursor:
            cursor.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
                           "RETURNING seq", values)  # fmt: skip
            job.seq = cursor.fetchone()["seq"]
            self._event(cursor, job.id, job.status)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._tx() as cursor:
            row = cursor.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return self._job(row) if row else None

    def list(self, owner: str, *, api: str | None = None, statuses: tuple[str, ...] = (),
             ids: tuple[str, ...] = (), model: str | None = None, after: str | None = None,
             descending: bool = True, offset: int = 0, limit: int = 20) -> tuple[list[Job], int]:  # fmt: skip
        where, params = ["owner = %s"], [owner]
        for column, value in (("api", api), ("model", model)):
            if value:
                where.append(f"{column} = %s")
                params.append(value)
        for column, value in (("status", statuses), ("id", ids)):
            if value:
                where.append(f"{column} = ANY(%s)")
                params.append(list(value))
        with self._tx() as cursor:
            count = cursor.execute(f"SELECT COUNT(*) AS n FROM jobs WHERE {' AND '.join(where)}", params)
            total = count.fetchone()["n"]
            if after:
                anchor = cursor.execute("SELECT seq FROM jobs WHERE id = %s AND owner = %s", (after, owner)).fetchone()
                if anchor is None:
                    raise JobError("not_found", f"no job {after!r} to page after")
                where.append("seq < %s" if descending else "seq > %s")
                params.append(anchor["seq"])
            order = "DESC" if descending else "ASC"
            rows = cursor.execute(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq {order} "
                                  "LIMIT %s OFFSET %s", (*params, limit, offset)).fetchall()  # fmt: skip
        return [self._job(r) for r in rows], total

    def pending(self, owner: str) -> int:
        with self._tx() as cursor:
            return cursor.execute("SELECT COUNT(*) AS n FROM jobs WHERE owner = %s AND status IN ('queued', 'running')",
                                  (owner,)).fetchone()["n"]  # fmt: skip

    def cancel(self, job_id: str) -> Job:
        with self._tx() as cursor:
            job = self._require(cursor, job_id)
            if job.status != "queued":
                raise JobError("conflict", f"task {job_id} is {job.status}; only queued tasks can be cancelled")
            self._set(cursor, job_id, "status = 'queued'", (), status="cancelled", finished_at=NOW)
        return self.get(job_id)

    def delete(self, job_id: str) -> Job:
        with self._tx() as cursor:
            job = self._require(cursor, job_id)
            if job.status == "running":
                raise JobError("conflict", f"task {job_id} is running; wait for it to finish, then delete it")
            cursor.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
            cursor.execute("DELETE FROM events WHERE job_id = %s", (job_id,))
        return job

    # ------------------------------------------------------------------ the worker side

    def claim(self, worker: str) -> Job | None:
        with self._tx() as cursor:
            row = cursor.execute(
                "WITH next AS (SELECT id FROM jobs WHERE status = 'queued' AND "
                f"(deadline IS NULL OR deadline > {_NOW}) ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"UPDATE jobs SET status = 'running', worker = %s, heartbeat = {_NOW}, started_at = {_NOW}, "
                f"updated_at = {_NOW}, progress = 0, attempts = jobs.attempts + 1 FROM next WHERE jobs.id = next.id "
                "RETURNING jobs.*", (worker,)).fetchone()  # fmt: skip
            if row is None:
                return None
            self._event(cursor, row["id"], "running")
        return self._job(row)

    def beat(self, job_id: str, worker: str, progress: float) -> Job | None:
        with self._tx() as cursor:
            row = cursor.execute(f"UPDATE jobs SET heartbeat = {_NOW}, updated_at = {_NOW}, progress = %s "
                                 "WHERE id = %s AND status = 'running' AND worker = %s RETURNING *",
                                 (progress, job_id, worker)).fetchone()  # fmt: skip
        return self._job(row) if row else None

    def finish(self, job_id: str, worker: str, result: dict[str, Any]) -> bool:
        with self._tx() as cursor:
            return self._set(cursor, job_id, "status = 'running' AND worker = %s", (worker,), status="succeeded",
                             result=result, progress=1.0, finished_at=NOW)  # fmt: skip

    def fail(self, job_id: str, worker: str, error: dict[str, str], status: str = "failed") -> bool:
        with self._tx() as cursor:
            return self._set(cursor, job_id, "status = 'running' AND worker = %s", (worker,), status=status,
                             error=error, finished_at=NOW)  # fmt: skip

    def release(self, worker: str, max_attempts: int) -> list[str]:
        with self._tx() as cursor:
            rows = cursor.execute("SELECT id, attempts FROM jobs WHERE status = 'running' AND worker = %s FOR UPDATE",
                                  (worker,)).fetchall()  # fmt: skip
            return self._requeue(cursor, rows, max_attempts, f"worker {worker} stopped")

    def reap(self, stale_after: float, max_attempts: int) -> list[str]:
        with self._tx() as cursor:  # rows another server is reaping, or a worker is beating, are skipped
            stale = cursor.execute("SELECT id, attempts FROM jobs WHERE status = 'running' AND "
                                   f"heartbeat < {_NOW} - %s ORDER BY seq FOR UPDATE SKIP LOCKED",
                                   (stale_after,)).fetchall()  # fmt: skip
            changed = self._requeue(cursor, stale, max_attempts, f"its worker sent no heartbeat for {stale_after:g} s")
            overdue = [r["id"] for r in cursor.execute(f"SELECT id FROM jobs WHERE status = 'queued' AND deadline <= "
                                                       f"{_NOW} ORDER BY seq FOR UPDATE SKIP LOCKED")]  # fmt: skip
            for job_id in overdue:
                self._set(cursor, job_id, "status = 'queued'", (), status="expired", finished_at=NOW,
                          error={"code": "Expired", "message": "the task was not run before execution_expires_after"})
        return changed + overdue

    def _requeue(self, cursor: psycopg.Cursor, rows: list[dict], max_attempts: int, why: str) -> list[str]:
        for row in rows:
            if row["attempts"] < max_attempts:
                self._set(cursor, row["id"], "status = 'running'", (), status="queued", worker=None, heartbeat=None,
                          progress=0.0)  # fmt: skip
            else:
                self._set(cursor, row["id"], "status = 'running'", (), status="failed", finished_at=NOW,
                          error={"code": "WorkerLost", "message": f"gave up after {row['attempts']} attempts: {why}"})
        return [row["id"] for row in rows]

    # ------------------------------------------------------------------ housekeeping

    def expired_results(self, now: float) -> list[Job]:
        with self._tx() as cursor:
            rows = cursor.execute("SELECT * FROM jobs WHERE jsonb_typeof(result->'files') = 'object' AND "
                                  "(result->>'keep_until')::double precision <= %s", (now,)).fetchall()  # fmt: skip
        return [self._job(r) for r in rows]

    def set_result(self, job_id: str, result: dict[str, Any] | None) -> None:
        with self._tx() as cursor:
            cursor.execute("UPDATE jobs SET result = %s WHERE id = %s", (Jsonb(result) if result else None, job_id))

    def events(self, limit: int = 50) -> list[tuple[int, str, str, str, int]]:
        # a job's events go out in order: none while an earlier one of the same job waits for a retry
        now = time.time()
        with self._tx() as cursor:
            rows = cursor.execute(
                "WITH due AS (SELECT id FROM events AS e WHERE done = 0 AND due <= %s AND NOT EXISTS "
                "(SELECT 1 FROM events AS p WHERE p.job_id = e.job_id AND p.done = 0 AND p.id < e.id) ORDER BY id "
                "LIMIT %s FOR UPDATE SKIP LOCKED) UPDATE events SET due = %s FROM due WHERE events.id = due.id "
                "RETURNING events.id, job_id, status, url, attempts",
                (now, limit, now + EVENT_LEASE)).fetchall()  # fmt: skip
        return sorted((r["id"], r["job_id"], r["status"], r["url"], r["attempts"]) for r in rows)

    def event_done(self, event_id: int, delivered: bool, retry_at: float | None) -> None:
        with self._tx() as cursor:
            if delivered or retry_at is None:
                cursor.execute("UPDATE events SET done = %s, attempts = attempts + 1 WHERE id = %s",
                               (1 if delivered else 2, event_id))  # fmt: skip
            else:
                cursor.execute("UPDATE events SET attempts = attempts + 1, due = %s WHERE id = %s",
                               (retry_at, event_id))  # fmt: skip
