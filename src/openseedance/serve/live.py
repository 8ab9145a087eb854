"""Live jobs: a stream generated chunk by chunk by a worker, watched while it is made, steered by a
new prompt, stopped at will (DESIGN §8).

    POST /api/live                   {"prompt", "seed"?, "max_seconds"?, "chunk"?, "size"?, "generate_audio"?}
    GET  /api/live/{id}              status, seconds made, the prompts so far
    POST /api/live/{id}/prompt       {"prompt"}: from the next chunk on
    POST /api/live/{id}/stop         end it after the chunk being made
    GET  /live/{id}/stream.mp4       the stream itself, while it is made

The stream is one fragmented mp4 sent over one chunked HTTP response as the worker writes it: a
browser plays it through MediaSource, `ffplay URL` and `curl URL > file` take it as it is, and
nothing is polled (HLS or DASH would cut it into segments and a playlist the client re-reads, a
segment's length behind). A viewer who joins late gets it from the start. The job id (random, 96
bits) is the stream's capability, as for finished files; steering and stopping need the key. Once
the job has ended, the stream's address redirects to the finished, signed file.

The server and its workers share only the job store and the files (possibly on several hosts), so a
live job's controls are small files in its folder: the HTTP side writes the next prompt and the stop
request, and touches `viewer` while someone watches; the worker reads them between chunks. A job
that nobody has watched for `live_idle` seconds stops by itself, so a client that vanished leaves no
job running.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from openseedance.serve.api import ApiError, Service, read_json
from openseedance.serve.bounds import shown
from openseedance.serve.jobs import Job, JobError, new_id
from openseedance.serve.spec import JobSpec

router = APIRouter()

STREAM = "live.mp4"  # the fragmented file while it is made; the finished one is video.mp4


class LiveControl:
    """A live job's control files in its folder, read and written by both sides."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "live"

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.folder / name)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / name).read_text())
        except (OSError, ValueError):
            return None

    def steer(self, prompt: str) -> int:
        """Ask for `prompt` from the next chunk; returns the request's number."""
        seq = (self.next_prompt() or {}).get("seq", 0) + 1
        self._write("prompt.json", {"seq": seq, "prompt": prompt, "at": time.time()})
        return seq

    def next_prompt(self) -> dict[str, Any] | None:
        return self._read("prompt.json")

    def stop(self) -> None:
        self._write("stop.json", {"at": time.time()})

    def stop_asked(self) -> bool:
        return (self.folder / "stop.json").exists()

    def watched(self) -> None:
        """Someone is watching now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "viewer").touch()

    def last_watched(self) -> float | None:
        try:
            return (self.folder / "viewer").stat().st_mtime
        except OSError:
            return None

    def report(self, state: dict[str, Any]) -> None:
        """The worker's account of the stream so far (seconds made, prompts)."""
        self._write("state.json", state)

    def state(self) -> dict[str, Any]:
        return self._read("state.json") or {}


# ---------------------------------------------------------------- the API


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, "InvalidParameter", f"{name} must be a number, got {shown(value)}", name)
    if not low <= value <= high:
        raise ApiError(400, "InvalidParameter", f"{name} must be {low:g}-{high:g}, got {value:g}", name)
    return float(value)


def _prompt(body: dict[str, Any]) -> str:
    """The body's prompt, held to the live stream's own rules (`live.check_prompt`)."""
    from openseedance.live import check_prompt

    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "InvalidParameter", f"prompt must be a string, got {shown(prompt)}", "prompt")
    try:
        return check_prompt(prompt)
    except ValueError as e:
        raise ApiError(400, "InvalidParameter", str(e), "prompt") from None


def _size(body: dict[str, Any], service: Service) -> tuple[int, int]:
    size = body.get("size")
    if size is None:
        return service.native
    parts = size.lower().split("x") if isinstance(size, str) else []
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 5 for p in parts):
        raise ApiError(400, "InvalidParameter", f"size must look like 64x64, got {shown(size)}", "size")
    width, height = int(parts[0]), int(parts[1])
    step, top = service.step, service.card.max_side
    if any(v % step or not step <= v <= top for v in (width, height)):
        raise ApiError(400, "InvalidParameter", f"size: sides must be multiples of {step} up to {top}, got {size}",
                       "size")  # fmt: skip
    return width, height


def _owned(service: Service, request: Request, job_id: str) -> Job:
    job = service.owned(service.authorize(request), job_id, "live")
    if job is None:
        raise ApiError(404, "NotFound", f"no live job {shown(job_id)}", "job_id")
    return job


def render(job: Job, service: Service) -> dict[str, Any]:
    state = LiveControl(service.folder(job.id)).state()
    out = {"id": job.id, "object": "live", "status": job.status, "created_at": int(job.created_at),
           "prompt": job.spec.prompt, "max_seconds": job.spec.duration, "chunk": job.spec.live_chunk,
           "seconds": state.get("seconds", 0.0), "prompts": state.get("prompts", []),
           "stream_url": f"/live/{job.id}/stream.mp4"}  # fmt: skip
    if job.status == "succeeded" and (job.result or {}).get("files"):
        out["video_url"] = f"/files/{job.id}/video.mp4"
        out["stopped_by"] = (job.result or {}).get("stopped_by")
    if job.error:
        out["error"] = job.error
    return out


@router.post("/api/live", status_code=201)
async def create(request: Request) -> JSONResponse:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    body = await read_json(request)
    unknown = sorted(set(body) - {"prompt", "seed", "max_seconds", "chunk", "size", "generate_audio", "model"})
    if unknown:
        raise ApiError(400, "InvalidParameter", f"unknown field {shown(unknown[0])}", unknown[0])
    s = service.settings
    prompt = _prompt(body)
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -1 <= seed < 2**32:
        raise ApiError(400, "InvalidParameter", f"seed must be an integer 0-4294967295 (or -1), got {shown(seed)}",
                       "seed")  # fmt: skip
    seed = int.from_bytes(os.urandom(4), "big") if seed == -1 else seed
    max_seconds = _number(body, "max_seconds", s.live_max_seconds, 1.0, s.live_max_seconds)
    chunk = _number(body, "chunk", 1.0, 0.5, 4.0)
    audio = body.get("generate_audio", True)
    if not isinstance(audio, bool):
        raise ApiError(400, "InvalidParameter", "generate_audio must be true or false", "generate_audio")
    width, height = _size(body, service)
    running = service.store.list(owner, api="live", statuses=("queued", "running"), limit=1)[1]
    if running >= s.max_live_per_key:
        raise ApiError(429, "RateLimitExceeded.LiveJobs", f"this key already has {running} live job(s) running, "
                       f"the most it may have; stop one first", headers={"Retry-After": "5"})  # fmt: skip
    spec = JobSpec(prompt=prompt, duration=max_seconds, fps=service.native_fps, seed=seed, width=width,
                   height=height, generate_audio=audio, live_chunk=chunk)  # fmt: skip
    job = Job(id=new_id("live_"), api="live", owner=owner, model=str(body.get("model") or "openseedance"), spec=spec,
              priority=10)  # fmt: skip
    service.folder(job.id).mkdir(parents=True, exist_ok=True)
    LiveControl(service.folder(job.id)).watched()  # the idle clock starts now
    service.store.create(job)
    return JSONResponse(render(job, service), status_code=201)


@router.get("/api/live/{job_id}")
async def status(job_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    return render(_owned(service, request, job_id), service)


@router.post("/api/live/{job_id}/prompt")
async def steer(job_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    job = _owned(service, request, job_id)
    prompt = _prompt(await read_json(request))
    if job.finished:
        raise ApiError(409, "Conflict", f"the live job has ended ({job.status})", "id")
    seq = LiveControl(service.folder(job.id)).steer(prompt)
    return {"id": job.id, "next_prompt": prompt, "seq": seq}


@router.post("/api/live/{job_id}/stop")
async def stop(job_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    job = _owned(service, request, job_id)
    if not job.finished:
        LiveControl(service.folder(job.id)).stop()
    if job.status == "queued":
        try:
            job = service.store.cancel(job.id)
        except JobError:  # a worker took it meanwhile: it reads the stop request before its first chunk
            job = service.store.get(job.id) or job
    return render(job, service)


@router.get("/live/{job_id}/stream.mp4")
async def stream(job_id: str, request: Request) -> Response:
    """The stream as it is written (from its start), until the job ends; then the finished file."""
    service: Service = request.app.state.service
    job = await run_in_threadpool(service.store.get, job_id) if _plain_id(job_id) else None
    if job is None or job.api != "live":
        raise ApiError(404, "NotFound", "no such live stream", "job_id")
    if job.finished:
        if job.status == "succeeded":
            return RedirectResponse(f"/files/{job.id}/video.mp4", status_code=307)
        raise ApiError(404, "NotFound", f"the live job ended without a video ({job.status})", "job_id")
    folder = service.folder(job.id)
    control = LiveControl(folder)
    control.watched()
    return StreamingResponse(_follow(service, job.id, folder / STREAM, control), media_type="video/mp4",
                             headers={"cache-control": "no-store", "x-content-type-options": "nosniff"})  # fmt: skip


def _plain_id(job_id: str) -> bool:
    return 1 <= len(job_id) <= 64 and all(c.isalnum() or c in "_-" for c in job_id)


async def _follow(service: Service, job_id: str, path: Path, control: LiveControl, block: int = 1 << 16):
    """The bytes of `path` as they are appended, until the job ends and all of them are sent. Every
    half second in between, the viewer is marked present (so the job keeps going) and the job's
    status is read."""
    handle = None
    beat = 0.0
    try:
        while True:
            if handle is None:
                try:
                    handle = path.open("rb")
                except FileNotFoundError:
                    handle = None
            data = handle.read(block) if handle is not None else b""
            if data:
                yield data
                continue
            now = time.monotonic()
            if now - beat >= 0.5:
                beat = now
                control.watched()
                job = await run_in_threadpool(service.store.get, job_id)
                if job is None or job.finished:
                    if handle is not None:  # what was written before it ended
                        while data := handle.read(block):
                            yield data
                    return
            await asyncio.sleep(0.05)
    finally:
        if handle is not None:
            handle.close()
