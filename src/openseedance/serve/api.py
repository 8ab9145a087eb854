"""What both HTTP APIs share: settings, keys, the submission path, and errors a client can act on."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from openseedance.engines import Capabilities
from openseedance.pipeline import check_request
from openseedance.provenance.faces import FaceError
from openseedance.serve.bounds import Refused, parse_json
from openseedance.serve.decode import Probe
from openseedance.serve.fetch import check_url, load_bytes
from openseedance.serve.jobs import Job, JobStore, new_id, open_store
from openseedance.serve.limits import InputError, InputLimits
from openseedance.serve.spec import (
    JobSpec,
    StoredReference,
    build_request,
    check_counts,
    check_plan,
    decode_references,
    probe,
    size_for,
)

log = logging.getLogger("openseedance.serve")

RETRY_AFTER = 5  # seconds a client over its pending-task limit is told to wait
_SUFFIX = {"image": ".img", "video": ".vid", "audio": ".aud"}


@dataclass(frozen=True)
class ServeSettings:
    data_dir: Path  # this process's own folder: its API keys, and by default the job store and the files
    model: str | None = None  # a model folder; None: the bundled model
    api_keys: tuple[str, ...] = ()
    workers: int = 1  # generation processes started with the server (0: API only)
    max_pending_per_key: int = 8  # queued + running tasks one key may have; 429 beyond
    max_body_bytes: int = 64 * 2**20
    limits: InputLimits = field(default_factory=InputLimits)
    result_ttl: float = 24 * 3600.0  # how long finished clips stay downloadable
    heartbeat: float = 1.0  # seconds between a worker's heartbeats
    stale_after: float = 20.0  # a running job whose worker is silent this long is re-queued
    max_attempts: int = 3  # runs a job gets before a lost worker fails it
    callback_timeout: float = 5.0
    callback_retries: int = 5
    callback_hosts: frozenset[str] = frozenset()  # hosts exempt from the private-address refusal
    allow_faces: bool = False
    threads_per_worker: int | None = None
    device: str = "cpu"  # where workers run the model: cpu, cuda, cuda:N
    # the job store: a postgresql:// URL that servers and workers on several hosts share, or a SQLite file
    db: str | None = None  # None: data_dir/jobs.db
    # each job's inputs and results; with several hosts, a folder every server and worker mounts
    results_dir: Path | None = None  # None: data_dir/files
    max_live_per_key: int = 1  # live jobs one key may have queued or running at once; 429 beyond
    live_max_seconds: float = 600.0  # the longest a live job may run
    live_idle: float = 15.0  # a live job nobody has watched for this long stops by itself

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.db"

    @property
    def files_dir(self) -> Path:
        return self.results_dir or self.data_dir / "files"

    def open_store(self) -> JobStore:
        return open_store(self.db or self.db_path)


class ApiError(Exception):
    """An error to answer with `status` in the calling API's own shape."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers or {}


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        value = await run_in_threadpool(parse_json, body)  # tens of MiB of data: URLs take a while
    except Refused:
        raise
    except (ValueError, RecursionError) as e:  # RecursionError: nesting the depth check did not see
        raise ApiError(400, "InvalidParameter", f"the request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "InvalidParameter", "the request body must be a JSON object")
    return value


class Service:
    """The server's state: settings, the job store, and the model's capabilities (its card, read
    without loading weights: to refuse impossible requests before they are queued)."""

    def __init__(self, settings: ServeSettings, store: JobStore, card: Capabilities) -> None:
        self.settings, self.store, self.card = settings, store, card
        self._owners = {owner_of(k) for k in settings.api_keys}
        self.native = (card.width, card.height)
        self.native_fps = card.fps
        self.default_duration = 4.0
        self.step = card.size_step
        self.sample_rate = card.sample_rate
        # callbacks go to public addresses only, unless the operator named a private host
        self.callback_limits = replace(settings.limits, allow_http=True, allow_hosts=settings.callback_hosts,
                                       fetch_timeout=settings.callback_timeout)  # fmt: skip

    def authorize(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "AuthenticationError", "missing API key: send 'Authorization: Bearer <key>'")
        owner = owner_of(key.strip())
        if not any(secrets.compare_digest(owner, o) for o in self._owners):
            raise ApiError(401, "AuthenticationError", "the API key is not valid for this server")
        return owner

    def owned(self, owner: str, job_id: str, api: str | None = None) -> Job | None:
        """The job `job_id` if this key owns it (and `api` made it, when given); None otherwise, so
        that another key's job and a missing one look the same."""
        job = self.store.get(job_id)
        return job if job is not None and job.owner == owner and api in (None, job.api) else None

    def folder(self, job_id: str) -> Path:
        return self.settings.files_dir / job_id

    def stored_url(self, job: Job, file: str) -> str:
        """A stored reference of `job`, re-read as a data: URL (a draft's or a remix's inputs)."""
        data = (self.folder(job.id) / file).read_bytes()
        return "data:application/octet-stream;base64," + base64.b64encode(data).decode()

    async def submit(self, api: str, owner: str, asked: JobSpec,
                     refs: list[tuple[str, str, str, str]], fields: dict[str, Any], base_url: str) -> Job:  # fmt: skip
        """Fetch and check the references, check the request against the model, then queue it."""
        if self.store.pending(owner) >= self.settings.max_pending_per_key:
            limit = self.settings.max_pending_per_key
            raise ApiError(429, "RateLimitExceeded.QueuedTasks",
                           f"this key already has {limit} tasks queued or running; wait for one to finish",
                           headers={"Retry-After": str(RETRY_AFTER)})  # fmt: skip
        job_id = new_id("cgt-" if api == "ark" else "video_")
        try:
            if fields.get("callback_url") is not None:
                await run_in_threadpool(check_url, fields["callback_url"], self.callback_limits, "callback_url")
            spec, blobs = await run_in_threadpool(self._prepare, asked, refs)
        except InputError as e:
            raise ApiError(e.http_status, "InvalidParameter", str(e), e.field) from None
        except FaceError as e:  # a real person's likeness, refused unless the server allows it
            raise ApiError(400, "InputImageSensitiveContentDetected.PrivacyInformation", str(e), "content") from None
        spec = replace(spec, base_url=base_url, expires_after=fields.get("expires_after"))
        now = time.time()
        job = Job(id=job_id, api=api, owner=owner, model=fields["model"], spec=spec, priority=fields["priority"],
                  callback_url=fields.get("callback_url"), created_at=now,
                  deadline=now + fields["expires_after"] if fields.get("expires_after") else None)  # fmt: skip
        folder = self.folder(job_id)
        try:  # a job is stored whole or not at all: no folder is left behind by a failed write
            (folder / "inputs").mkdir(parents=True, exist_ok=True)
            for ref, blob in zip(spec.references, blobs, strict=True):
                (folder / ref.file).write_bytes(blob)
            self.store.create(job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("queued %s (%s, %.1f s %dx%d)", job_id, api, spec.duration, spec.width, spec.height)
        return job

    def _prepare(self, asked: JobSpec, refs: list[tuple[str, str, str, str]]) -> tuple[JobSpec, list[bytes]]:
        """The spec to store: the references fetched, the size and the length resolved from their headers and
        checked against the model, then each reference decoded once, at the clip's size and frame rate,
        for the checks that need the pictures (faces, lengths, citations)."""
        limits = self.settings.limits
        check_counts([(kind, role, where) for kind, role, _, where in refs], self.card)
        blobs = [load_bytes(url, limits, where)[0] for _, _, url, where in refs]
        wheres = [where for *_, where in refs]
        references = tuple(StoredReference(kind, role, f"inputs/{i}{_SUFFIX[kind]}")
                           for i, (kind, role, _, _) in enumerate(refs))  # fmt: skip
        probes = [probe(r.kind, blob, limits, where) for r, blob, where in zip(references, blobs, wheres, strict=True)]
        spec = self._resolve(replace(asked, references=references), probes)
        check_plan(spec, probes, wheres, self.card, self.sample_rate)
        decoded = decode_references(spec, blobs, wheres, limits, self.sample_rate)
        for ref, item in zip(references, decoded, strict=True):
            if ref.role == "source_video":  # its length as decoded at the clip's frame rate
                spec = replace(spec, duration=len(item.video) / item.fps + (spec.extend_by or 0.0), extend_by=None)
        try:
            request = build_request(spec, decoded, self.sample_rate)
            check_request(request, self.card, self.settings.allow_faces)
        except (InputError, FaceError):
            raise
        except ValueError as e:
            raise InputError(_param_of(str(e)), str(e)) from None
        return spec, blobs

    def _resolve(self, spec: JobSpec, probes: list[Probe]) -> JobSpec:
        """The clip's size and length from the request and the references' headers: an extension is the
        source clip and what is added, at the source's size; "adaptive" takes the first frame's shape."""
        by_role = {r.role: p for r, p in zip(spec.references, probes, strict=True)}
        if "source_video" in by_role:
            source = by_role["source_video"]
            w, h = source.width, source.height
            fits = all(v % self.step == 0 and self.step <= v <= self.card.max_side for v in (w, h))
            spec = replace(spec, duration=source.seconds + (spec.extend_by or 0.0),
                           width=w if fits else self.native[0], height=h if fits else self.native[1])  # fmt: skip
        if spec.width is None or spec.height is None:
            first = by_role.get("first_frame")
            shape = None if first is None else (first.width, first.height)
            width, height = size_for(spec.resolution, spec.ratio, self.native, self.step, shape)
            spec = replace(spec, width=width, height=height)
        return replace(spec, resolution_label=spec.resolution_label or spec.resolution or
                       f"{min(spec.width, spec.height)}p",
                       ratio_label=spec.ratio_label or _ratio(spec.width, spec.height))  # fmt: skip

    def remove(self, job: Job) -> None:
        """Delete a finished job: its record and its files."""
        self.store.delete(job.id)
        shutil.rmtree(self.folder(job.id), ignore_errors=True)


def _ratio(width: int, height: int) -> str:
    from math import gcd

    g = gcd(width, height)
    return f"{width // g}:{height // g}"


def _param_of(message: str) -> str:
    for name in ("duration", "width", "height", "fps", "prompt", "first frame", "image", "video", "audio"):
        if message.startswith(name) or f" {name}" in message[:40]:
            return name.replace(" ", "_")
    return "content"
