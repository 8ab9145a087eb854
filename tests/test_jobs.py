"""The job-store contract, on both stores (SQLite, and PostgreSQL when a server is reachable: see
conftest.py): claims are exclusive across processes, lost work returns to the queue, every status
change leaves a callback event, and the schema is versioned and upgraded in place."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from openseedance.serve.jobs import Job, JobError, JobStore, SQLiteJobStore, StoreError, new_id, open_store
from openseedance.serve.spec import JobSpec


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path) -> str:
    """Where a fresh store lives: a SQLite file, or a PostgreSQL database URL."""
    return str(tmp_path / "jobs.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def store(db) -> Iterator[JobStore]:
    store = open_store(db)
    yield store
    store.close()


def _job(owner: str = "me", **kw) -> Job:
    spec = JobSpec(prompt="a bell rings", duration=1.0, fps=12.0, seed=0, width=64, height=64)
    return Job(id=new_id("t-"), api="ark", owner=owner, model="m", spec=spec, **kw)


def _claim_all(db: str, worker: str, start: mp.Event, out: mp.Queue) -> None:
    store = open_store(db)
    claimed, finished = [], []
    start.wait()
    while (job := store.claim(worker)) is not None:
        claimed.append(job.id)
        if store.finish(job.id, worker, {"files": {}}):
            finished.append(job.id)
    out.put((claimed, finished))


def test_racing_workers_never_run_a_job_twice(db, store):
    """Six worker processes released at once on 120 jobs: each job is claimed once and finished once."""
    ids = {store.create(_job()).id for _ in range(120)}
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(db, f"w{i}", start, out)) for i in range(6)]
    for p in procs:
        p.start()
    start.set()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(10)
    claims = Counter(job for claimed, _ in reports for job in claimed)
    finishes = Counter(job for _, finished in reports for job in finished)
    assert set(claims) == ids and set(finishes) == ids
    assert max(claims.values()) == 1 and max(finishes.values()) == 1  # none run twice
    assert all(store.get(i).status == "succeeded" and store.get(i).attempts == 1 for i in ids)


def test_priority_then_age(store):
    old, urgent, new = store.create(_job()), store.create(_job(priority=5)), store.create(_job())
    assert [store.claim("w").id for _ in range(3)] == [urgent.id, old.id, new.id]
    assert store.claim("w") is None


def test_lost_worker_requeues_then_fails(store):
    job = store.create(_job())
    for attempt in (1, 2):
        assert store.claim("w1").id == job.id
        assert store.get(job.id).attempts == attempt
        assert store.release("w1", max_attempts=2) == [job.id]
        assert store.get(job.id).status == ("queued" if attempt == 1 else "failed")
    assert store.get(job.id).error["code"] == "WorkerLost"


def test_reap_stale_heartbeats_and_overdue_jobs(store):
    running = store.create(_job())
    overdue = store.create(_job(deadline=time.time() - 1))
    assert store.claim("w").id == running.id  # the overdue one is never claimed
    assert store.reap(stale_after=60, max_attempts=3) == [overdue.id]
    assert store.get(overdue.id).status == "expired"
    time.sleep(0.05)
    assert store.reap(stale_after=0.01, max_attempts=3) == [running.id]
    assert store.get(running.id).status == "queued"
    # the worker that lost it can no longer beat, finish or fail it
    assert store.beat(running.id, "w", 0.5) is None
    assert not store.finish(running.id, "w", {})


def test_cancel_delete_and_conflicts(store):
    queued, running = store.create(_job()), store.create(_job())
    store.claim("w")  # takes `queued` (older)
    queued, running = running, queued
    assert store.cancel(queued.id).status == "cancelled"
    with pytest.raises(JobError, match="only queued"):
        store.cancel(running.id)
    with pytest.raises(JobError, match="running"):
        store.delete(running.id)
    store.delete(queued.id)
    assert store.get(queued.id) is None
    with pytest.raises(JobError) as e:
        store.cancel("nope")
    assert e.value.code == "not_found"


def test_listing_filters_and_paging(store):
    mine = [store.create(_job()) for _ in range(5)]
    store.create(_job(owner="someone else"))
    store.cancel(mine[0].id)
    page, total = store.list("me", limit=2)
    assert total == 5 and [j.id for j in page] == [mine[4].id, mine[3].id]
    page, _ = store.list("me", after=mine[3].id, limit=10)
    assert [j.id for j in page] == [j.id for j in reversed(mine[:3])]
    page, total = store.list("me", statuses=("cancelled",))
    assert total == 1 and page[0].id == mine[0].id
    page, total = store.list("me", ids=(mine[1].id, mine[2].id), descending=False)
    assert [j.id for j in page] == [mine[1].id, mine[2].id]
    assert store.pending("me") == 4


def test_events_follow_status_changes_in_order(store):
    job = store.create(_job(callback_url="http://example.com/hook"))
    store.create(_job())  # no callback_url: no events
    store.claim("w")
    store.finish(job.id, "w", {"files": {}})
    events = store.events()
    assert [e[2] for e in events] == ["queued"]  # later events wait for the first
    store.event_done(events[0][0], delivered=False, retry_at=time.time() + 60)
    assert store.events() == []  # the retry is not due, and the rest keep their order behind it
    store.event_done(events[0][0], delivered=True, retry_at=None)
    assert [e[2] for e in store.events()] == ["running"]


def test_an_event_handed_out_is_not_handed_out_again(store):
    """Two servers delivering callbacks from one store never send one event twice at once."""
    job = store.create(_job(callback_url="http://example.com/hook"))
    first = store.events()
    assert [e[1] for e in first] == [job.id]
    assert store.events() == []  # leased to the first caller
    store.event_done(first[0][0], delivered=False, retry_at=time.time())
    assert [e[0] for e in store.events()] == [first[0][0]]  # due again once the caller gave it back


def test_result_clean_up_finds_files_past_their_time(store):
    kept, gone = store.create(_job()), store.create(_job())
    for job, keep in ((kept, time.time() + 60), (gone, time.time() - 1)):
        store.claim("w")
        store.finish(job.id, "w", {"files": {"video": "video.mp4"}, "keep_until": keep})
    assert [j.id for j in store.expired_results(time.time())] == [gone.id]
    store.set_result(gone.id, {**store.get(gone.id).result, "files": None})
    assert store.expired_results(time.time()) == []


_UNVERSIONED = """
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, api TEXT NOT NULL,
    owner TEXT NOT NULL, model TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, progress REAL NOT NULL DEFAULT 0, error TEXT, result TEXT,
    callback_url TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL,
    deadline REAL, worker TEXT, heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, status TEXT NOT NULL,
    url TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0);
"""


def test_sqlite_schema_upgrades_in_place(tmp_path):
    """A file made before the schema had a version keeps its jobs and is brought to the newest one."""
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as old:
        old.executescript(_UNVERSIONED)
        old.execute("INSERT INTO jobs (id, api, owner, model, spec, status, created_at, updated_at) VALUES "
                    "('t-old', 'ark', 'me', 'm', ?, 'queued', 1, 1)", (json.dumps(_job().spec.to_dict()),))
    store = SQLiteJobStore(path)
    assert store.claim("w").id == "t-old"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer than this version"):
        SQLiteJobStore(path)


def test_postgres_schema_upgrades_in_place(pg_url):
    import psycopg

    from openseedance.serve.postgres import SCHEMA_VERSION, upgrade

    assert upgrade(pg_url, upto=1) == 0  # a database as the first release left it
    with psycopg.connect(pg_url) as db:
        db.execute("INSERT INTO jobs (id, api, owner, model, spec, status, created_at, updated_at) VALUES "
                   "('t-old', 'ark', 'me', 'm', %s, 'queued', 1, 1)", (json.dumps(_job().spec.to_dict()),))
    store = open_store(pg_url)  # upgraded on open
    assert store.claim("w").id == "t-old"
    store.close()
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'jobs_keep_until'").fetchone()
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer than this version"):
        open_store(pg_url)


@pytest.mark.parametrize(("location", "message"), [
    ("mysql://u@h/jobs", "unsupported database mysql://"),
    ("postgresql://u@[::1/jobs", "malformed database URL"),
    ("postgresql://u:hunter2@127.0.0.1:1/jobs", "cannot reach the PostgreSQL database postgresql://u:\\*\\*\\*@127.0.0.1:1/jobs"),
])  # fmt: skip
def test_a_bad_database_location_says_which(location, message):
    with pytest.raises(StoreError, match=message) as e:
        open_store(location)
    assert "hunter2" not in str(e.value)
