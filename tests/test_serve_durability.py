"""No job lost, none stuck `running`: a worker killed mid-job, and the whole server killed and
started again on the same data folder."""

from __future__ import annotations

import os
import signal
import sqlite3

import httpx
import pytest
from volcenginesdkarkruntime import Ark

from serve_util import KEY, Server, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FINAL = ("succeeded", "failed", "cancelled", "expired")


def _client(srv: Server) -> Ark:
    return Ark(base_url=f"{srv.url}/api/v3", api_key=KEY, max_retries=0)


def _submit(srv: Server, n: int, duration: int) -> list[str]:
    client = _client(srv)
    return [client.content_generation.tasks.create(model="m", duration=duration, content=[
        {"type": "text", "text": f"a red circle bounces, take {i}"}]).id for i in range(n)]  # fmt: skip


def _row(srv: Server, task_id: str) -> dict:
    with sqlite3.connect(srv.data / "jobs.db") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT status, worker, attempts FROM jobs WHERE id = ?", (task_id,)).fetchone())


def _all_done(srv: Server, ids: list[str]) -> list[str]:
    client = _client(srv)
    statuses = [client.content_generation.tasks.get(task_id=i).status for i in ids]
    return statuses if all(s in FINAL for s in statuses) else None


def test_a_killed_worker_loses_no_job_and_results_expire(tmp_path):
    # the 8-step teacher: jobs long enough to be caught mid-way (the 2-step default may finish first)
    srv = Server(tmp_path / "srv", args=("--stale-after", "5", "--result-ttl", "3", "--teacher")).start()
    try:
        (task,) = _submit(srv, 1, duration=12)
        wait_for(lambda: _row(srv, task)["status"] == "running", 120)
        worker = _row(srv, task)["worker"]
        os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
        statuses = wait_for(lambda: _all_done(srv, [task]), 240)
        assert statuses == ["succeeded"]
        row = _row(srv, task)
        assert row["attempts"] == 2 and row["worker"] != worker  # run again by the replacement worker
        url = _client(srv).content_generation.tasks.get(task_id=task).content.video_url
        assert httpx.get(url, timeout=30).status_code == 200
        wait_for(lambda: httpx.get(url, timeout=30).status_code == 404, 30)  # kept --result-ttl seconds, then gone
        assert _client(srv).content_generation.tasks.get(task_id=task).status == "succeeded"  # the record stays
    finally:
        srv.stop()


def test_a_killed_server_restarts_with_every_job(tmp_path):
    srv = Server(tmp_path / "srv", args=("--stale-after", "3", "--teacher"))  # jobs long enough to catch
    srv.start()
    ids = _submit(srv, 3, duration=6)
    wait_for(lambda: any(_row(srv, i)["status"] == "running" for i in ids), 120)
    srv.stop(kill=True)  # the server and its workers, mid-job, with no chance to clean up
    assert [_row(srv, i)["status"] for i in ids].count("running") == 1
    srv.start()
    try:
        statuses = wait_for(lambda: _all_done(srv, ids), 300)
        assert statuses == ["succeeded"] * 3
    finally:
        srv.stop()
