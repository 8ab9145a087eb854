"""Live jobs on a real server: the stream read over HTTP while it is made, a prompt change and a stop
taking effect, the finished file verified, the limits per key, and a client that vanishes leaving no
job running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from openseedance import media, provenance
from serve_util import KEY, Server, wait_for

AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER = "other-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("live") / "srv", args=("--api-key", OTHER, "--live-idle", "3",
                                                                "--live-max-seconds", "30")).start()  # fmt: skip
    yield srv
    srv.stop()


def _status(server: Server, job_id: str, key: str = KEY) -> dict:
    return httpx.get(f"{server.url}/api/live/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()


def test_stream_is_served_while_made_steered_and_stopped(server, tmp_path: Path) -> None:
    created = httpx.post(f"{server.url}/api/live", headers=AUTH, timeout=10,
                         json={"prompt": "a red circle bounces", "seed": 4, "max_seconds": 20})  # fmt: skip
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued" and job["stream_url"] == f"/live/{job['id']}/stream.mp4"
    received, running_when_first_bytes, steered, stopped = bytearray(), None, False, False
    with httpx.stream("GET", server.url + job["stream_url"], timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
        for block in response.iter_bytes():
            received += block
            if running_when_first_bytes is None:
                running_when_first_bytes = _status(server, job["id"])["status"]
            made = _status(server, job["id"])["seconds"]
            if not steered and made >= 1.0:
                asked = httpx.post(f"{server.url}/api/live/{job['id']}/prompt", headers=AUTH, timeout=10,
                                   json={"prompt": "a blue square slides left"})  # fmt: skip
                assert asked.status_code == 200 and asked.json()["next_prompt"] == "a blue square slides left"
                steered = True
            if steered and not stopped and made >= 3.0:
                halt = httpx.post(f"{server.url}/api/live/{job['id']}/stop", headers=AUTH, timeout=10)
                assert halt.status_code == 200
                stopped = True
    assert running_when_first_bytes == "running"  # bytes came before the job ended
    streamed = tmp_path / "streamed.mp4"
    streamed.write_bytes(received)
    clip = media.read_video(streamed)
    done = wait_for(lambda: (s := _status(server, job["id"]))["status"] == "succeeded" and s, 60)
    assert done["stopped_by"] == "stop" and 3.0 <= done["seconds"] < 20
    assert [p["prompt"] for p in done["prompts"]] == ["a red circle bounces", "a blue square slides left"]
    assert clip.video.shape[0] == round(done["seconds"] * 12)  # the stream held every frame made
    final = tmp_path / "final.mp4"
    with httpx.stream("GET", server.url + job["stream_url"], follow_redirects=True, timeout=30) as response:
        assert response.status_code == 200 and str(response.url).endswith(f"/files/{job['id']}/video.mp4")
        final.write_bytes(response.read())
    report = provenance.verify(final)
    assert report.video.found and report.audio.found and report.manifest.intact
    assert report.video.payload == report.audio.payload
    record = json.loads(media.read_metadata(final)["openseedance"])
    assert record["task"] == "live" and len(record["prompts"]) == 2
    late = httpx.post(f"{server.url}/api/live/{job['id']}/prompt", headers=AUTH, json={"prompt": "x"}, timeout=10)
    assert late.status_code == 409


def test_limits_and_bad_requests(server) -> None:
    url = f"{server.url}/api/live"
    cases = [({"prompt": ""}, "prompt"), ({"prompt": "x", "max_seconds": 31}, "max_seconds"),
             ({"prompt": "x", "chunk": 0.1}, "chunk"), ({"prompt": "x", "size": "65x64"}, "size"),
             ({"prompt": "x", "seed": "7"}, "seed"), ({"prompt": "x", "steps": 3}, "steps"),
             ({"prompt": "[shot 1] a ball [shot 2] a cube"}, "prompt")]  # fmt: skip
    for body, param in cases:
        refused = httpx.post(url, headers=AUTH, json=body, timeout=10)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["param"] == param, refused.text
    assert httpx.post(url, json={"prompt": "x"}, timeout=10).status_code == 401
    first = httpx.post(url, headers=AUTH, json={"prompt": "a green circle hops", "max_seconds": 30}, timeout=10)
    assert first.status_code == 201
    second = httpx.post(url, headers=AUTH, json={"prompt": "a yellow star spins"}, timeout=10)
    assert second.status_code == 429 and second.headers["retry-after"]
    other = {"Authorization": f"Bearer {OTHER}"}
    job_id = first.json()["id"]
    assert httpx.get(f"{url}/{job_id}", headers=other, timeout=10).status_code == 404  # another key's job
    assert httpx.post(f"{url}/{job_id}/stop", headers=other, timeout=10).status_code == 404
    assert httpx.post(f"{url}/{job_id}/stop", headers=AUTH, timeout=10).status_code == 200
    wait_for(lambda: _status(server, job_id)["status"] in ("succeeded", "cancelled"), 60)
    assert httpx.get(f"{server.url}/live/nope/stream.mp4", timeout=10).status_code == 404
    listed = httpx.get(f"{server.url}/api/jobs", headers=AUTH, timeout=10)  # the web page's list shows live jobs too
    assert listed.status_code == 200 and job_id in [j["id"] for j in listed.json()["items"]]
    assert all(j["api"] != "live" for j in httpx.get(f"{server.url}/api/v3/contents/generations/tasks",
                                                      headers=AUTH, timeout=10).json().get("items", []))  # fmt: skip


def test_a_vanished_client_leaves_no_running_job(server) -> None:
    job = httpx.post(f"{server.url}/api/live", headers=AUTH, json={"prompt": "a pink triangle spins"}, timeout=10)
    job_id = job.json()["id"]
    # a viewer in another process, killed once the first bytes arrive
    code = ("import httpx, sys\n"
            f"with httpx.stream('GET', '{server.url}/live/{job_id}/stream.mp4', timeout=60) as r:\n"
            "    for b in r.iter_bytes():\n"
            "        print(len(b), flush=True)\n"
            "        break\n"
            "    import os; os._exit(0)\n")  # fmt: skip
    viewer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert viewer.stdout.strip(), viewer.stderr
    gone = time.time()
    done = wait_for(lambda: (s := _status(server, job_id))["status"] == "succeeded" and s, 60)
    assert done["stopped_by"] == "idle"
    assert time.time() - gone < 3 + 10  # the idle time, plus at most a chunk or two
    assert httpx.get(f"{server.url}/files/{job_id}/video.mp4", timeout=10).status_code == 200
