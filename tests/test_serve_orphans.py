"""A server killed outright (SIGKILL, the OOM killer) leaves no worker process behind, and the jobs
its workers had in hand run again, once each, after a restart on the same data folder."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from serve_util import Server, alive, wait_for, worker_pids
from test_serve_durability import _all_done, _row, _submit

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc"),
]


def _kill_server(srv: Server) -> list[int]:
    """SIGKILL the server process alone, as the OOM killer would, and return its workers' pids."""
    workers = wait_for(lambda: (found := worker_pids(srv.process.pid)) and len(found) == 2 and found, 60)
    os.kill(srv.process.pid, signal.SIGKILL)
    srv.process.wait(10)
    return workers


def _gone_within(pids: list[int], timeout: float) -> float:
    start = time.time()
    wait_for(lambda: not any(alive(p) for p in pids), timeout, every=0.1)
    return time.time() - start


def test_workers_leave_with_a_killed_server(tmp_path):
    srv = Server(tmp_path / "srv", args=("--workers", "2")).start()
    try:
        workers = _kill_server(srv)  # most likely still loading the model
        assert _gone_within(workers, 10) < 10
    finally:
        srv.stop()  # ends anything left in the server's process group


def test_jobs_of_a_killed_server_run_again_once_after_a_restart(tmp_path):
    # the 8-step teacher: jobs long enough to be caught mid-way (the 2-step default may finish first)
    srv = Server(tmp_path / "srv", args=("--workers", "2", "--stale-after", "3", "--teacher")).start()
    try:
        ids = _submit(srv, 3, duration=6)
        wait_for(lambda: [_row(srv, i)["status"] for i in ids].count("running") == 2, 120)
        first = {i: _row(srv, i)["worker"] for i in ids}
        workers = _kill_server(srv)
        assert _gone_within(workers, 10) < 10
        rows = [_row(srv, i) for i in ids]
        assert [r["status"] for r in rows] == ["queued"] * 3  # the leaving workers gave their jobs back
        assert sorted(r["attempts"] for r in rows) == [0, 1, 1]
        srv.start()
        assert wait_for(lambda: _all_done(srv, ids), 240) == ["succeeded"] * 3
        for i, row in zip(ids, [_row(srv, i) for i in ids], strict=True):
            assert row["attempts"] == (2 if first[i] else 1) and row["worker"] != first[i]
    finally:
        srv.stop()
