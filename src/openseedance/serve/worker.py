"""Generation workers: processes that take jobs from the store, run the pipeline, and store the clip.

A worker beats while it runs a job; if the job stops being its own (a reaper decided it was lost) or
passes its deadline, the next sampling step stops it. `WorkerPool` runs workers as child processes
of the server and notices at once when one dies: its job goes straight back to the queue. A pool
worker whose server dies, however it died, leaves within seconds (`follow_parent`).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from openseedance import media, provenance
from openseedance.engines import RunOptions
from openseedance.pipeline import GeneratedClip, Pipeline
from openseedance.serve.api import ServeSettings
from openseedance.serve.jobs import Job, JobStore
from openseedance.serve.spec import build_request, load_references

log = logging.getLogger("openseedance.serve")


class Stopped(Exception):
    """The job was taken away from this worker, or ran past its deadline."""

    def __init__(self, expired: bool) -> None:
        super().__init__("expired" if expired else "lost")
        self.expired = expired


class Leaving(Exception):
    """The worker is leaving (its server is gone, or it was sent SIGTERM): the job goes back to the queue."""


def worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


class _Heartbeat(threading.Thread):
    """Beats for one job every `interval` s; `check` (called between sampling steps) raises when
    the job must stop."""

    def __init__(self, store: JobStore, job: Job, worker: str, interval: float, leave: threading.Event) -> None:
        super().__init__(daemon=True)
        self.store, self.job, self.worker, self.interval, self.leave = store, job, worker, interval, leave
        self.progress = 0.0
        self.stop_reason: Stopped | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            alive = self.store.beat(self.job.id, self.worker, self.progress)
        except Exception:  # a busy or briefly unreachable store: try again next beat
            log.exception("heartbeat for %s failed", self.job.id)
            return
        if alive is None:
            self.stop_reason = Stopped(expired=False)
        elif alive.deadline is not None and time.time() > alive.deadline:
            self.stop_reason = Stopped(expired=True)

    def step(self, done: int, total: int) -> None:
        self.progress = 0.05 + 0.85 * done / total
        if self.leave.is_set():
            raise Leaving()
        self.check()

    def check(self) -> None:
        if self.stop_reason is not None:
            raise self.stop_reason

    def close(self) -> None:
        self._done.set()


class Worker:
    """Runs jobs until `stop` (set by whoever started it: finish the job in hand first) or `leave`
    (set within the process: give the job in hand back at the next sampling step)."""

    def __init__(self, store: JobStore, pipe: Pipeline, settings: ServeSettings,
                 leave: threading.Event | None = None) -> None:  # fmt: skip
        self.store, self.pipe, self.settings = store, pipe, settings
        self.leave = leave or threading.Event()
        self.id = worker_id()

    def serve(self, stop: threading.Event | Any, poll: float = 0.2, retry: float = 5.0) -> None:
        log.info("worker %s ready", self.id)
        while not stop.is_set() and not self.leave.is_set():
            try:
                job = self.store.claim(self.id)
            except Exception as e:  # a database restarting or briefly unreachable: the worker waits, not dies
                log.warning("worker %s cannot claim from the job store (%s); retrying in %g s", self.id, e, retry)
                stop.wait(retry)
                continue
            if job is None:
                stop.wait(poll)
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        log.info("worker %s runs %s (attempt %d)", self.id, job.id, job.attempts)
        heart = _Heartbeat(self.store, job, self.id, self.settings.heartbeat, self.leave)
        heart.start()
        try:
            result = self._generate(job, heart)
            heart.check()  # a last look: the job may have been taken away meanwhile
            if self.store.finish(job.id, self.id, result):
                log.info("worker %s finished %s", self.id, job.id)
            else:
                log.warning("%s finished elsewhere; result dropped", job.id)
        except Leaving:
            requeued = self.store.release(self.id, self.settings.max_attempts)
            log.warning("worker %s leaving; gave back %s", self.id, requeued or "nothing")
        except Stopped as e:
            if e.expired:
                self.store.fail(job.id, self.id, {"code": "Expired", "message": "the task ran past its "
                                "execution_expires_after"}, status="expired")  # fmt: skip
            log.warning("%s stopped: %s", job.id, e)
        except ValueError as e:
            self.store.fail(job.id, self.id, {"code": "InvalidParameter", "message": str(e)})
        except Exception as e:
            log.exception("%s failed", job.id)
            self.store.fail(job.id, self.id, {"code": "InternalServiceError", "message": f"generation failed: {e}"})
        finally:
            heart.close()

    def _generate(self, job: Job, heart: _Heartbeat) -> dict[str, Any]:
        folder = self.settings.files_dir / job.id
        spec = job.spec
        if spec.live_chunk is not None:
            return self._live(job, folder, heart)
        request = build_request(spec, load_references(spec, folder, self.settings.limits),
                                self.pipe.capabilities.sample_rate)  # fmt: skip
        out = self.pipe(request, RunOptions(steps=spec.steps), progress=heart.step, job_id=job.id)
        heart.progress = 0.95
        files = write_outputs(out, folder, spec.return_last_frame)
        tokens = out.tokens
        return {"files": files, "keep_until": time.time() + self.settings.result_ttl, "seconds": out.seconds,
                "usage": {"completion_tokens": tokens, "total_tokens": tokens}, "resolved": out.request}  # fmt: skip


    def _live(self, job: Job, folder: Path, heart: _Heartbeat) -> dict[str, Any]:
        """A live job: chunks appended to the stream file until it is stopped, reaches its length,
        or nobody has watched it for `live_idle` s; then the finished file, signed."""
        from openseedance.live import Live, LiveConfig
        from openseedance.serve.live import STREAM, LiveControl

        if job.attempts > 1:  # a stream cannot be picked up where a lost worker left it
            raise ValueError("the worker making this live stream was lost; start a new one")
        spec, control = job.spec, LiveControl(folder)
        request = build_request(spec, load_references(spec, folder, self.settings.limits),
                                self.pipe.capabilities.sample_rate)  # fmt: skip
        live = Live(self.pipe, request, LiveConfig(chunk=spec.live_chunk, duration=spec.duration),
                    RunOptions(steps=spec.steps), job_id=job.id)  # fmt: skip
        steered, tokens, thumbnail, why = 0, 0, None, "length"
        rate = request.sample_rate if request.generate_audio else None
        with media.FragmentWriter(folder / STREAM, request.width, request.height, request.fps, rate) as out:
            for part in live:
                out.write(part.clip)
                tokens += part.tokens
                if thumbnail is None and len(part.clip.video):
                    thumbnail = part.clip.video[len(part.clip.video) // 2]
                heart.progress = min(0.95, live.seconds / spec.duration)
                control.report({"seconds": round(live.seconds, 4), "prompts": live.timeline})
                asked = control.next_prompt()
                if asked is not None and asked["seq"] > steered:
                    steered = asked["seq"]
                    try:
                        live.steer(asked["prompt"])
                    except ValueError as e:
                        log.warning("%s: prompt refused: %s", job.id, e)
                watched = control.last_watched() or job.started_at or time.time()
                if control.stop_asked():
                    why = "stop"
                elif time.time() - watched > self.settings.live_idle:
                    why = "idle"
                elif self.leave.is_set() or heart.stop_reason is not None:
                    why = "worker"
                else:
                    continue
                live.stop()
        heart.check()
        final = folder / "video.mp4"
        tmp = folder / ".video.signing.mp4"
        shutil.copyfile(folder / STREAM, tmp)
        live.finish(tmp)
        tmp.replace(final)
        (folder / STREAM).unlink(missing_ok=True)
        files = {"video": "video.mp4"}
        if thumbnail is not None:
            _jpeg(thumbnail, folder / "thumbnail.jpg")
            files["thumbnail"] = "thumbnail.jpg"
        control.report({"seconds": round(live.seconds, 4), "prompts": live.timeline})
        log.info("%s: live stream ended (%s) after %.1f s", job.id, why, live.seconds)
        return {"files": files, "keep_until": time.time() + self.settings.result_ttl, "stopped_by": why,
                "usage": {"completion_tokens": tokens, "total_tokens": tokens}, "resolved": live.record()}  # fmt: skip


def write_outputs(out: GeneratedClip, folder: Path, last_frame: bool) -> dict[str, str]:
    """The clip, a thumbnail, a sprite sheet, and the last frame when asked."""
    folder.mkdir(parents=True, exist_ok=True)
    out.write(folder / "video.mp4")
    frames = out.clip.video
    files = {"video": "video.mp4", "thumbnail": "thumbnail.jpg", "spritesheet": "spritesheet.jpg"}
    _jpeg(frames[len(frames) // 2], folder / "thumbnail.jpg")
    _jpeg(_sheet(frames), folder / "spritesheet.jpg")
    if last_frame:
        media.write_image(folder / "last_frame.png", frames[-1])
        files["last_frame"] = "last_frame.png"
    return files


def _jpeg(image: np.ndarray, path: Path) -> None:
    tmp = path.with_suffix(".part")
    Image.fromarray(image).save(tmp, format="JPEG", quality=90)
    tmp.replace(path)


def _sheet(frames: np.ndarray, columns: int = 4, count: int = 16) -> np.ndarray:
    """Up to `count` evenly spaced frames in a grid."""
    picks = frames[np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)]
    rows = -(-len(picks) // columns)
    h, w = picks.shape[1:3]
    sheet = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, frame in enumerate(picks):
        sheet[(i // columns) * h : (i // columns + 1) * h, (i % columns) * w : (i % columns + 1) * w] = frame
    return sheet


def load_pipeline(settings: ServeSettings) -> Pipeline:
    return Pipeline.from_pretrained(settings.model, allow_faces=settings.allow_faces).to(settings.device)


def run_worker(settings: ServeSettings, stop: threading.Event | Any, leave: threading.Event | None = None) -> None:
    """A worker process's main: load the model once, then serve jobs until `stop` or `leave` is set."""
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    threads = settings.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, settings.workers))
    torch.set_num_threads(threads)
    store = settings.open_store()  # first: an unreachable store is reported before the model loads
    pipe = load_pipeline(settings)
    getattr(pipe.engine, "text_encoder", None)  # a text encoder loaded on first use: now, not during a job
    provenance.prepare()  # and the marks' patterns
    Worker(store, pipe, settings, leave).serve(stop)


_PR_SET_PDEATHSIG = 1


def follow_parent(parent: int, leave: threading.Event, every: float = 0.5, grace: float = 3.0) -> None:
    """Set `leave` once process `parent` is no longer this process's parent, however it died
    (SIGKILL, the OOM killer), and end the process `grace` s later if it has not ended by itself
    (a model still loading, a step that does not return). Without this an orphaned worker would
    live on, holding a model and claiming jobs for no server. Call it from the main thread.

    SIGTERM sets `leave` too. On Linux the kernel sends it the moment the parent dies; a thread
    comparing os.getppid() with `parent` every `every` s is the fallback elsewhere. (The kernel
    sends it when the parent's *thread* that started this process ends: for workers the pool
    replaces from the housekeeping thread, that is at the server's shutdown, when they stop anyway.)
    """
    signal.signal(signal.SIGTERM, lambda *_: leave.set())
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            log.warning("no parent-death signal; polling for the server instead")

    def watch() -> None:
        while os.getppid() == parent and not leave.wait(every):
            pass
        if not leave.is_set():
            log.warning("worker %d: the server (pid %d) is gone; leaving", os.getpid(), parent)
            leave.set()
        time.sleep(grace)
        log.warning("worker %d did not end %g s after leaving; exiting now", os.getpid(), grace)
        os._exit(1)

    # checked after asking for the signal: a parent that died before then sent none
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _child(settings: ServeSettings, stop: Any, parent: int) -> None:
    """A pool worker: Ctrl-C reaches the whole process group, but the server decides when workers stop;
    a worker whose server is gone leaves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    leave = threading.Event()
    follow_parent(parent, leave)
    run_worker(settings, stop, leave)


class WorkerPool:
    """`settings.workers` worker processes; one that dies has its job re-queued and is replaced."""

    def __init__(self, settings: ServeSettings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self._ctx = mp.get_context("spawn")
        self._stop = self._ctx.Event()
        self.processes: list[mp.process.BaseProcess] = []
        self._closing = False

    def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.settings.workers)]

    def _spawn(self) -> mp.process.BaseProcess:
        process = self._ctx.Process(target=_child, args=(self.settings, self._stop, os.getpid()), daemon=True)
        process.start()
        return process

    def check(self) -> None:
        """Replace dead workers, first giving their jobs back to the queue."""
        for i, process in enumerate(self.processes):
            if process.is_alive() or self._closing:
                continue
            requeued = self.store.release(worker_id(process.pid), self.settings.max_attempts)
            log.warning("worker %s exited (%s); re-queued %s", process.pid, process.exitcode, requeued or "nothing")
            self.processes[i] = self._spawn()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.is_alive()]

    def close(self, timeout: float = 10.0) -> None:
        self._closing = True
        self._stop.set()
        deadline = time.time() + timeout
        for process in self.processes:
            process.join(max(0.1, deadline - time.time()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
            self.store.release(worker_id(process.pid), self.settings.max_attempts)
