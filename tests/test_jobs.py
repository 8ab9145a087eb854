"""The SQLite job store: claims are exclusive across processes, lost work returns to the queue,
and every status change leaves a callback event."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from openseedance.serve.jobs import Job, JobError, SQLiteJobStore, new_id
from openseedance.serve.spec import JobSpec


def _job(owner: str = "me", **kw) -> Job:
    spec = JobSpec(prompt="a bell rings", duration=1.0, fps=12.0, seed=0, width=64, height=64)
    return Job(id=new_id("t-"), api="ark", owner=owner, model="m", spec=spec, **kw)


def _claim_all(path: str, worker: str, out: mp.Queue) -> None:
    store = SQLiteJobStore(path)
    got = []
    while (job := store.claim(worker)) is not None:
        got.append(job.id)
        store.finish(job.id, worker, {"files": {}})
    out.put(got)


def test_claims_are_exclusive_across_processes(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.db")
    ids = {store.create(_job()).id for _ in range(60)}
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(tmp_path / "jobs.db"), f"w{i}", out)) for i in range(3)]
    for p in procs:
        p.start()
    claimed = [job for _ in procs for job in out.get(timeout=60)]
    for p in procs:
        p.join(10)
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    assert all(store.get(i).status == "succeeded" for i in ids)


def test_priority_then_age(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.db")
    old, urgent, new = store.create(_job()), store.create(_job(priority=5)), store.create(_job())
    assert [store.claim("w").id for _ in range(3)] == [urgent.id, old.id, new.id]
    assert store.claim("w") is None


def test_lost_worker_requeues_then_fails(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.db")
    job = store.create(_job())
    for attempt in (1, 2):
        assert store.claim("w1").id == job.id
        assert store.get(job.id).attempts == attempt
        assert store.release("w1", max_attempts=2) == [job.id]
        assert store.get(job.id).status == ("queued" if attempt == 1 else "failed")
    assert store.get(job.id).error["code"] == "WorkerLost"


def test_reap_stale_heartbeats_and_overdue_jobs(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.db")
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


def test_cancel_delete_and_conflicts(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.db")
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


def test_listing_filters_and_paging(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.db")
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


def test_events_follow_status_changes_in_order(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.db")
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
