"""Load on `openseedance serve` over loopback: N concurrent clients for a bounded time.

    python benchmarks/serve_load.py                               # 4 clients, 60 s, 2 workers
    python benchmarks/serve_load.py --clients 8 --seconds 120 --workers 2 --duration 2
    python benchmarks/serve_load.py --db postgresql://postgres@127.0.0.1:5433/postgres   # the PostgreSQL store

A real HTTP server (uvicorn) with its worker processes and job store (SQLite in a fresh folder, or
the database `--db` names: each run uses a fresh API key and counts only its own jobs) runs in this process;
each client (a thread with its own `volcenginesdkarkruntime.Ark` client) submits a task, polls it
to the end, and submits the next until time is up; then every outstanding task is waited for.
Reports jobs submitted / completed / failed / lost (submitted but never finished) and p50/p95 of
queue latency (created -> a worker took it, from the store), run time, and end-to-end latency
(submit -> the client saw `succeeded`, polled every 0.2 s). Writes JSON next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import uvicorn
from volcenginesdkarkruntime import Ark

from openseedance.serve.api import ServeSettings, owner_of
from openseedance.serve.app import create_app

KEY = f"load-test-{secrets.token_hex(6)}"
PROMPTS = ["a red circle bounces and a bell rings", "a blue square slides left and a drum beats",
           "a green triangle spins and a voice says hello", "a yellow star jumps twice, wind blows"]  # fmt: skip
FINAL = ("succeeded", "failed", "cancelled", "expired")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def client_loop(url: str, until: float, duration: int, log: list[dict], lock: threading.Lock) -> None:
    client = Ark(base_url=f"{url}/api/v3", api_key=KEY, max_retries=0, timeout=60)
    n = 0
    while time.time() < until:
        start = time.time()
        task_id = client.content_generation.tasks.create(
            model="openseedance", duration=duration, content=[{"type": "text", "text": PROMPTS[n % len(PROMPTS)]}]).id
        n += 1
        while (status := client.content_generation.tasks.get(task_id=task_id).status) not in FINAL:
            time.sleep(0.2)
        with lock:
            log.append({"id": task_id, "status": status, "end_to_end": time.time() - start})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long clients keep submitting")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=2, help="clip seconds")
    parser.add_argument("--db", default=None, help="a postgresql:// URL (default: SQLite in a fresh folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "serve_load" / "serve_load.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    data = Path(tempfile.mkdtemp(prefix="serve-load-"))
    settings = ServeSettings(data_dir=data, api_keys=(KEY,), workers=args.workers, threads_per_worker=1,
                             max_pending_per_key=args.clients + 1, db=args.db)  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    time.sleep(15)  # let the workers load the model before the clock starts

    log: list[dict] = []
    lock = threading.Lock()
    began = time.time()
    clients = [threading.Thread(target=client_loop, args=(url, began + args.seconds, args.duration, log, lock))
               for _ in range(args.clients)]  # fmt: skip
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    wall = time.time() - began
    server.should_exit = True
    thread.join(30)

    jobs, _ = settings.open_store().list(owner_of(KEY), limit=1_000_000)
    rows = [(j.id, j.status, j.created_at, j.started_at, j.finished_at, j.attempts) for j in jobs]
    in_store = {r[0]: r for r in rows}
    done = [r for r in rows if r[1] == "succeeded"]
    queue = [r[3] - r[2] for r in done]
    run = [r[4] - r[3] for r in done]
    e2e = [e["end_to_end"] for e in log if e["status"] == "succeeded"]
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "store": "postgresql" if args.db else "sqlite",
        "clients": args.clients, "workers": args.workers, "clip_seconds": args.duration,
        "submit_seconds": args.seconds, "wall_seconds": round(wall, 1),
        "submitted": len(log), "completed": len(done), "failed": sum(r[1] == "failed" for r in rows),
        "lost": sum(1 for e in log if e["id"] not in in_store or in_store[e["id"]][1] not in FINAL),
        "retried": sum(r[5] > 1 for r in rows),
        "jobs_per_minute": round(60 * len(done) / wall, 2),
        "queue_p50": percentile(queue, 0.5), "queue_p95": percentile(queue, 0.95),
        "run_p50": percentile(run, 0.5), "run_p95": percentile(run, 0.95),
        "end_to_end_p50": percentile(e2e, 0.5), "end_to_end_p95": percentile(e2e, 0.95),
        "end_to_end_mean": statistics.fmean(e2e) if e2e else None,
    }  # fmt: skip
    print(f"\nserve load: {result['store']}, {args.clients} clients x {args.seconds:g} s, {args.workers} workers, "
          f"{args.duration} s clips ({result['machine']})")  # fmt: skip
    print(f"{'submitted':>10}{'completed':>10}{'failed':>8}{'lost':>6}{'jobs/min':>10}")
    print(f"{result['submitted']:>10}{result['completed']:>10}{result['failed']:>8}{result['lost']:>6}"
          f"{result['jobs_per_minute']:>10}")  # fmt: skip
    print(f"\n{'latency (s)':<14}{'p50':>8}{'p95':>8}")
    for name in ("queue", "run", "end_to_end"):
        p50, p95 = result[f"{name}_p50"], result[f"{name}_p95"]
        print(f"{name:<14}{p50 or float('nan'):>8.2f}{p95 or float('nan'):>8.2f}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
