"""The durable job store: every generation request is a row that outlives the process that made it.

A job moves queued -> running -> succeeded | failed, or queued -> cancelled | expired. Workers
*claim* a queued job atomically, *beat* while they run it, and *finish* or *fail* it; a worker that
stops beating (killed, machine lost) is noticed by `reap`, and its job goes back to the queue (or
fails once it has used its attempts) — never lost, never stuck running. Every status change also
writes an event row in the same transaction, from which callbacks are delivered.

`JobStore` is the interface; `SQLiteJobStore` (WAL, one file) is the embedded default, for one
machine; `PostgresJobStore` (`serve/postgres.py`) serves servers and workers on any number of hosts.
`open_store` picks one from a path or a database URL. Both keep a schema version and upgrade an older
database in place when they open it.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openseedance.serve.spec import JobSpec

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")
FINISHED = ("succeeded", "failed", "cancelled", "expired")


class JobError(Exception):
    """A request the store cannot honour (unknown job, wrong state); `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "not_found" | "conflict"


@dataclass
class Job:
    id: str
    api: str  # the API that created it: "ark" | "openai"
    owner: str  # who may see it: a digest of the API key
    model: str
    spec: JobSpec  # what to generate, and the echoed request fields
    status: str = "queued"
    priority: int = 0
    progress: float = 0.0  # 0..1 while running
    error: dict[str, str] | None = None  # {"code", "message"}
    result: dict[str, Any] | None = None  # file names, usage, expiry
    callback_url: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    deadline: float | None = None  # unfinished by then -> expired
    worker: str | None = None
    heartbeat: float | None = None
    attempts: int = 0
    seq: int = 0  # creation order

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class StoreError(ValueError):
    """The job store cannot be opened: a malformed location, an unreachable database, a newer schema."""


EVENT_LEASE = 60.0  # seconds an event handed out by `events` stays with its deliverer before another may take it


def open_store(db: str | Path) -> JobStore:
    """The job store at `db`: a `postgresql://` (or `postgres://`) URL, or the path of a SQLite file."""
    text = str(db)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme is None:
        return SQLiteJobStore(text)
    if scheme[1].lower() in ("postgresql", "postgres"):
        from openseedance.serve.postgres import PostgresJobStore

        return PostgresJobStore(text)
    if scheme[1].lower() == "sqlite":
        return SQLiteJobStore(text.removeprefix(scheme[0]))
    raise StoreError(f"unsupported database {scheme[1]}://...: give a postgresql://user@host/dbname URL or the path "
                     "of a SQLite file")  # fmt: skip


class JobStore(ABC):
    """What the server and the workers need from a job store."""

    @abstractmethod
    def create(self, job: Job) -> Job: ...

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def list(self, owner: str, *, api: str | None = None, statuses: tuple[str, ...] = (),
             ids: tuple[str, ...] = (), model: str | None = None, after: str | None = None,
             descending: bool = True, offset: int = 0, limit: int = 20) -> tuple[list[Job], int]:  # fmt: skip
        """One page of `owner`'s jobs (newest first unless `descending=False`) and the total that match."""

    @abstractmethod
    def pending(self, owner: str) -> int:
        """How many of `owner`'s jobs are queued or running."""

    @abstractmethod
    def claim(self, worker: str) -> Job | None:
        """Atomically take the most urgent queued job (priority, then age) for `worker`."""

    @abstractmethod
    def beat(self, job_id: str, worker: str, progress: float) -> Job | None:
        """Record that `worker` is alive on `job_id`; None when the job is no longer its to run."""

    @abstractmethod
    def finish(self, job_id: str, worker: str, result: dict[str, Any]) -> bool: ...

    @abstractmethod
    def fail(self, job_id: str, worker: str, error: dict[str, str], status: str = "failed") -> bool: ...

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """queued -> cancelled; raises JobError for a running or finished job."""

    @abstractmethod
    def delete(self, job_id: str) -> Job:
        """Remove a finished job's record (its files are the caller's to remove); queued ones are
        cancelled first; running ones are refused."""

    @abstractmethod
    def release(self, worker: str, max_attempts: int) -> list[str]:
        """`worker` is known dead: its running jobs go back to the queue (or fail)."""

    @abstractmethod
    def reap(self, stale_after: float, max_attempts: int) -> list[str]:
        """Re-queue (or fail) running jobs whose worker stopped beating; expire overdue queued jobs."""

    @abstractmethod
    def expired_results(self, now: float) -> list[Job]:
        """Finished jobs whose result files are past their keep-until time."""

    @abstractmethod
    def set_result(self, job_id: str, result: dict[str, Any] | None) -> None: ...

    @abstractmethod
    def events(self, limit: int = 50) -> list[tuple[int, str, str, str, int]]:
        """Undelivered callback events: (event id, job id, status, url, attempts), due now. They are
        the caller's for `EVENT_LEASE` s (so two servers never send one event twice at once): until then
        only `event_done` moves them on."""

    @abstractmethod
    def event_done(self, event_id: int, delivered: bool, retry_at: float | None) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Let go of the store's connections."""


# Each entry upgrades a database from version i to i + 1 (PRAGMA user_version); never edit a released one.
# Version 1 is the schema from before versioning, hence IF NOT EXISTS.
_MIGRATIONS = (
    """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    api TEXT NOT NULL,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    callback_url TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    deadline REAL,
    worker TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, priority DESC, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_due ON events (done, due);
""",
)

_JSON = ("spec", "error", "result")


class SQLiteJobStore(JobStore):
    """Jobs in one SQLite file (WAL): safe for several processes on one machine."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring the file to the newest schema, one migration per transaction (a process that opens it at
        the same moment waits, then finds the work done)."""
        while True:
            with self._tx() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > len(_MIGRATIONS):
                    raise StoreError(f"{self.path} has job-store schema version {version}, newer than this version "
                                     f"of openseedance knows ({len(_MIGRATIONS)}): upgrade openseedance")  # fmt: skip
                if version == len(_MIGRATIONS):
                    return
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")

    def close(self) -> None:
        """Close this thread's connection (another thread's closes when that thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent claims cannot interleave."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        values = dict(row)
        for key in _JSON:
            values[key] = json.loads(values[key]) if values[key] is not None else None
        values["spec"] = JobSpec.from_dict(values["spec"])
        return Job(**values)

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, status: str, now: float) -> None:
        db.execute("INSERT INTO events (job_id, status, url, due) SELECT id, ?, callback_url, ? FROM jobs "
                   "WHERE id = ? AND callback_url IS NOT NULL", (status, now, job_id))  # fmt: skip

    def _set(self, db: sqlite3.Connection, job_id: str, where: str, params: tuple, **values: Any) -> bool:
        now = time.time()
        values["updated_at"] = now
        for key in _JSON:
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key])
        assignments = ", ".join(f"{k} = ?" for k in values)
        cursor = db.execute(f"UPDATE jobs SET {assignments} WHERE id = ? AND {where}",
                            (*values.values(), job_id, *params))  # fmt: skip
        if cursor.rowcount and "status" in values:
            self._event(db, job_id, values["status"], now)
        return cursor.rowcount > 0

    # ------------------------------------------------------------------ the API side

    def create(self, job: Job) -> Job:
        job.updated_at = job.created_at
        columns = [f for f in Job.__dataclass_fields__ if f != "seq"]
        stored = {"spec": job.spec.to_dict(), "error": job.error, "result": job.result}
        values = [json.dumps(stored[c]) if c in _JSON and stored[c] is not None else getattr(job, c)
                  for c in columns]  # fmt: skip
        with self._tx() as db:
            cursor = db.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                                values)  # fmt: skip
            job.seq = cursor.lastrowid
            self._event(db, job.id, job.status, job.created_at)
        return job

    def get(self, job_id: str) -> Job | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def list(self, owner: str, *, api: str | None = None, statuses: tuple[str, ...] = (),
             ids: tuple[str, ...] = (), model: str | None = None, after: str | None = None,
             descending: bool = True, offset: int = 0, limit: int = 20) -> tuple[list[Job], int]:  # fmt: skip
        where, params = ["owner = ?"], [owner]
        if api:
            where.append("api = ?")
            params.append(api)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if ids:
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        if model:
            where.append("model = ?")
            params.append(model)
        db = self._connect()
        total = db.execute(f"SELECT COUNT(*) FROM jobs WHERE {' AND '.join(where)}", params).fetchone()[0]
        if after:
            anchor = db.execute("SELECT seq FROM jobs WHERE id = ? AND owner = ?", (after, owner)).fetchone()
            if anchor is None:
                raise JobError("not_found", f"no job {after!r} to page after")
            where.append("seq < ?" if descending else "seq > ?")
            params.append(anchor[0])
        order = "DESC" if descending else "ASC"
        rows = db.execute(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ? OFFSET ?",
                          (*params, limit, offset)).fetchall()  # fmt: skip
        return [self._job(r) for r in rows], total

    def pending(self, owner: str) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN ('queued', 'running')",
                                       (owner,)).fetchone()[0]  # fmt: skip

    def cancel(self, job_id: str) -> Job:
        with self._tx() as db:
            job = self._require(db, job_id)
            if job.status != "queued":
                raise JobError("conflict", f"task {job_id} is {job.status}; only queued tasks can be cancelled")
            self._set(db, job_id, "status = 'queued'", (), status="cancelled", finished_at=time.time())
        return self.get(job_id)

    def delete(self, job_id: str) -> Job:
        with self._tx() as db:
            job = self._require(db, job_id)
            if job.status == "running":
                raise JobError("conflict", f"task {job_id} is running; wait for it to finish, then delete it")
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
        return job

    def _require(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError("not_found", f"no task {job_id!r}")
        return self._job(row)

    # ------------------------------------------------------------------ the worker side

    def claim(self, worker: str) -> Job | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' AND (deadline IS NULL OR deadline > ?) "
                             "ORDER BY priority DESC, seq LIMIT 1", (now,)).fetchone()  # fmt: skip
            if row is None:
                return None
            db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (row[0],))
            self._set(db, row[0], "status = 'queued'", (), status="running", worker=worker, heartbeat=now,
                      started_at=now, progress=0.0)  # fmt: skip
        return self.get(row[0])

    def beat(self, job_id: str, worker: str, progress: float) -> Job | None:
        with self._tx() as db:
            alive = self._set(db, job_id, "status = 'running' AND worker = ?", (worker,),
                              heartbeat=time.time(), progress=progress)  # fmt: skip
        return self.get(job_id) if alive else None

    def finish(self, job_id: str, worker: str, result: dict[str, Any]) -> bool:
        with self._tx() as db:
            return self._set(db, job_id, "status = 'running' AND worker = ?", (worker,), status="succeeded",
                             result=result, progress=1.0, finished_at=time.time())  # fmt: skip

    def fail(self, job_id: str, worker: str, error: dict[str, str], status: str = "failed") -> bool:
        with self._tx() as db:
            return self._set(db, job_id, "status = 'running' AND worker = ?", (worker,), status=status,
                             error=error, finished_at=time.time())  # fmt: skip

    def release(self, worker: str, max_attempts: int) -> list[str]:
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'running' AND worker = ?", (worker,))]
            return self._requeue(db, ids, max_attempts, f"worker {worker} stopped")

    def reap(self, stale_after: float, max_attempts: int) -> list[str]:
        now = time.time()
        with self._tx() as db:
            stale = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'running' AND heartbeat < ?",
                                              (now - stale_after,))]  # fmt: skip
            changed = self._requeue(db, stale, max_attempts, f"its worker sent no heartbeat for {stale_after:g} s")
            overdue = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'queued' AND deadline <= ?",
                                                (now,))]  # fmt: skip
            for job_id in overdue:
                self._set(db, job_id, "status = 'queued'", (), status="expired", finished_at=now,
                          error={"code": "Expired", "message": "the task was not run before execution_expires_after"})
        return changed + overdue

    def _requeue(self, db: sqlite3.Connection, ids: list[str], max_attempts: int, why: str) -> list[str]:
        for job_id in ids:
            attempts = db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            if attempts < max_attempts:
                self._set(db, job_id, "status = 'running'", (), status="queued", worker=None, heartbeat=None,
                          progress=0.0)  # fmt: skip
            else:
                self._set(db, job_id, "status = 'running'", (), status="failed", finished_at=time.time(),
                          error={"code": "WorkerLost", "message": f"gave up after {attempts} attempts: {why}"})
        return ids

    # ------------------------------------------------------------------ housekeeping

    def expired_results(self, now: float) -> list[Job]:
        rows = self._connect().execute("SELECT * FROM jobs WHERE result IS NOT NULL AND "
                                       "json_extract(result, '$.keep_until') <= ? AND "
                                       "json_extract(result, '$.files') IS NOT NULL", (now,)).fetchall()  # fmt: skip
        return [self._job(r) for r in rows]

    def set_result(self, job_id: str, result: dict[str, Any] | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(result) if result else None, job_id))

    def events(self, limit: int = 50) -> list[tuple[int, str, str, str, int]]:
        # a job's events go out in order: none while an earlier one of the same job waits for a retry
        now = time.time()
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, job_id, status, url, attempts FROM events AS e WHERE done = 0 AND due <= ? AND NOT EXISTS "
                "(SELECT 1 FROM events AS p WHERE p.job_id = e.job_id AND p.done = 0 AND p.id < e.id) ORDER BY id "
                "LIMIT ?", (now, limit)).fetchall()  # fmt: skip
            db.executemany("UPDATE events SET due = ? WHERE id = ?", [(now + EVENT_LEASE, r[0]) for r in rows])
        return [tuple(r) for r in rows]

    def event_done(self, event_id: int, delivered: bool, retry_at: float | None) -> None:
        with self._tx() as db:
            if delivered or retry_at is None:
                db.execute("UPDATE events SET done = ?, attempts = attempts + 1 WHERE id = ?",
                           (1 if delivered else 2, event_id))  # fmt: skip
            else:
                db.execute("UPDATE events SET attempts = attempts + 1, due = ? WHERE id = ?", (retry_at, event_id))
