"""Servers and workers as on several hosts: two `openseedance serve` processes (API only) and three
`openseedance worker` processes, each with its own scratch folder, sharing nothing but one PostgreSQL
database and the results folder. Jobs go in through both servers; a worker is killed with SIGKILL
mid-job and a server is killed and started again: no job is lost, none is stuck, none runs twice
to success (counted from the workers' own logs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from volcenginesdkarkruntime import Ark

from serve_util import KEY, Server, alive, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FINAL = ("succeeded", "failed", "cancelled", "expired")


class Worker:
    """One `openseedance worker` process with its own scratch folder and log."""

    def __init__(self, scratch: Path, shared: tuple[str, ...]) -> None:
        scratch.mkdir(parents=True)
        self.log = scratch / "worker.log"
        command = [sys.executable, "-m", "openseedance.cli", "-v", "worker", "--data", str(scratch), "--threads", "1",
                   *shared]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def finished(self) -> list[str]:
        return re.findall(r"worker \S+ finished (\S+)", self.log.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _client(srv: Server) -> Ark:
    return Ark(base_url=f"{srv.url}/api/v3", api_key=KEY, max_retries=0)


def _submit(srv: Server, n: int, tag: str) -> list[str]:
    client = _client(srv)
    return [client.content_generation.tasks.create(model="m", duration=2, content=[
        {"type": "text", "text": f"a red circle bounces, {tag} take {i}"}]).id for i in range(n)]  # fmt: skip


def _tasks(srv: Server, ids: list[str]) -> list:
    client = _client(srv)
    return [client.content_generation.tasks.get(task_id=i) for i in ids]


def _all_final(srv: Server, ids: list[str]) -> list | None:
    tasks = _tasks(srv, ids)
    return tasks if all(t.status in FINAL for t in tasks) else None


def test_two_servers_three_workers_lose_nothing_and_run_nothing_twice(pg_url, tmp_path):
    from openseedance.serve.jobs import open_store

    # the 8-step teacher: jobs long enough to be caught mid-way (the 2-step default may finish first)
    shared = ("--db", pg_url, "--results", str(tmp_path / "results"), "--teacher")
    servers = [Server(tmp_path / f"server{i}", args=("--workers", "0", "--stale-after", "3", "--max-pending", "32",
                                                     *shared)) for i in range(2)]  # fmt: skip
    workers: list[Worker] = []
    store = open_store(pg_url)
    try:
        workers = [Worker(tmp_path / f"worker{i}", shared) for i in range(3)]  # loading while the servers start
        for srv in servers:
            srv.start()
        ids = _submit(servers[0], 3, "first") + _submit(servers[1], 3, "second")

        # a worker dies mid-job, with no chance to give its job back
        job = wait_for(lambda: next((j for j in map(store.get, ids) if j.status == "running"), None), 180, every=0.1)
        pid = int(job.worker.rsplit(":", 1)[1])
        killed = next(w for w in workers if w.process.pid == pid)
        os.kill(pid, signal.SIGKILL)
        killed.process.wait(10)

        # a server dies and comes back; the other takes work meanwhile, both after
        servers[0].stop(kill=True)
        ids += _submit(servers[1], 1, "during")
        servers[0].start()
        ids += _submit(servers[0], 1, "after")

        tasks = wait_for(lambda: _all_final(servers[0], ids), 300)
        assert [t.status for t in tasks] == ["succeeded"] * len(ids)  # none lost, none stuck
        assert [t.status for t in _tasks(servers[1], ids)] == ["succeeded"] * len(ids)  # either server answers
        again = store.get(job.id)
        assert again.attempts == 2 and again.worker != job.worker  # run again elsewhere after the kill
        finished = Counter(i for w in workers for i in w.finished())
        assert finished == Counter(ids)  # each job ran to success exactly once
        assert job.id not in killed.finished()

        # the results are reachable through both servers, ranges included
        for srv in servers:
            url = f"{srv.url}/files/{tasks[0].id}/video.mp4"
            whole = httpx.get(url, timeout=30)
            assert whole.status_code == 200 and whole.content[4:8] == b"ftyp"
            part = httpx.get(url, headers={"range": "bytes=0-99"}, timeout=30)
            assert part.status_code == 206 and part.content == whole.content[:100]
        assert all(alive(w.process.pid) for w in workers if w is not killed)
    finally:
        for w in workers:
            w.stop()
        for srv in servers:
            srv.stop()
        store.close()
