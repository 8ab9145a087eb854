"""What the job store itself costs per job, SQLite against PostgreSQL, with no model and no HTTP:

    python benchmarks/job_store.py                                     # SQLite only
    python benchmarks/job_store.py --db postgresql://postgres@127.0.0.1:5433/postgres

One process runs `--jobs` jobs through the store's whole life of a job as a server and a worker
call it: create, claim, `--beats` heartbeats, finish, and `--polls` status reads; then `--workers`
processes race to claim and finish `--jobs` more. Reports milliseconds per call of each kind (median)
and claimed jobs per second in the race. Writes JSON into `serve_store/` (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from openseedance.serve.jobs import Job, open_store
from openseedance.serve.spec import JobSpec

SPEC = JobSpec(prompt="a red circle bounces and a bell rings", duration=2.0, fps=12.0, seed=0, width=64, height=64)


def _job(i: int) -> Job:
    return Job(id=f"bench-{time.time_ns()}-{i}", api="ark", owner="bench", model="m", spec=SPEC)


def _race(db: str, worker: str, start: mp.Event, out: mp.Queue) -> None:
    store = open_store(db)
    start.wait()
    done = 0
    while (job := store.claim(worker)) is not None:
        store.finish(job.id, worker, {"files": {}})
        done += 1
    out.put(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=None, help="a postgresql:// URL (default: SQLite in a fresh folder)")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--beats", type=int, default=5)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="processes racing for claims")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    db = args.db or str(Path(tempfile.mkdtemp(prefix="job-store-")) / "jobs.db")
    store = open_store(db)
    times: dict[str, list[float]] = {k: [] for k in ("create", "claim", "beat", "finish", "get")}

    def timed(kind: str, fn, *a):
        t = time.perf_counter()
        value = fn(*a)
        times[kind].append(1000 * (time.perf_counter() - t))
        return value

    for i in range(args.jobs):
        job = timed("create", store.create, _job(i))
        assert timed("claim", store.claim, "w").id == job.id
        for _ in range(args.beats):
            timed("beat", store.beat, job.id, "w", 0.5)
        timed("finish", store.finish, job.id, "w", {"files": {}})
        for _ in range(args.polls):
            timed("get", store.get, job.id)

    for i in range(args.jobs):
        store.create(_job(i))
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(db, f"r{i}", start, out)) for i in range(args.workers)]
    for p in procs:
        p.start()
    time.sleep(5)  # let every process import and connect before the start
    began = time.perf_counter()
    start.set()
    claimed = sum(out.get(timeout=600) for _ in procs)
    race = time.perf_counter() - began
    for p in procs:
        p.join(10)
    store.close()

    result = {"store": "postgresql" if args.db else "sqlite", "date": time.strftime("%Y-%m-%d"), "jobs": args.jobs,
              "ms_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
              "ms_per_job": round(sum(map(sum, times.values())) / args.jobs, 2),
              "race_workers": args.workers, "race_claimed": claimed,
              "race_jobs_per_second": round(claimed / race, 1)}  # fmt: skip
    print(json.dumps(result, indent=1))
    out_path = args.out or Path(__file__).parent / "serve_store" / f"job_store_{result['store']}.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
