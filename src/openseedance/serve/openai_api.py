"""The OpenAI videos API (`/v1/videos`), the one `openai.OpenAI().videos` speaks.

`POST /videos` takes multipart (as the client sends it) or JSON: `prompt`, `model`, `seconds`,
`size` ("WxH") and `input_reference` (an image: the first frame). A remix keeps the source's
settings and opening frame and follows a new prompt.
"""

from __future__ import annotations

import base64
import io
import re
import secrets
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from openseedance import media
from openseedance.serve.api import ApiError, Service, read_json
from openseedance.serve.fetch import read_upload
from openseedance.serve.files import file_response
from openseedance.serve.jobs import FINISHED, Job, JobError
from openseedance.serve.limits import InputError, InputLimits
from openseedance.serve.spec import JobSpec

router = APIRouter(prefix="/v1")

_STATUS = {"queued": "queued", "running": "in_progress", "succeeded": "completed", "failed": "failed",
           "cancelled": "failed", "expired": "failed"}  # fmt: skip
_VARIANTS = {"video": ("video", "video/mp4"), "thumbnail": ("thumbnail", "image/jpeg"),
             "spritesheet": ("spritesheet", "image/jpeg")}  # fmt: skip


def error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)  # fmt: skip


def render(job: Job) -> dict[str, Any]:
    spec, result = job.spec, job.result or {}
    return {
        "id": job.id,
        "object": "video",
        "created_at": int(job.created_at),
        "status": _STATUS[job.status],
        "model": job.model,
        "progress": round(job.progress * 100) if job.status != "succeeded" else 100,
        "prompt": spec.prompt,
        "seconds": f"{spec.duration:g}",
        "size": f"{spec.width}x{spec.height}",
        "completed_at": int(job.finished_at) if job.status == "succeeded" and job.finished_at else None,
        "expires_at": int(result["keep_until"]) if result.get("keep_until") else None,
        "error": job.error,
        "remixed_from_video_id": spec.echo.get("remixed_from_video_id"),
    }


def _settings(service: Service, prompt: Any, seconds: Any, size: Any) -> JobSpec:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "invalid_value", "prompt is required: describe the video to generate", "prompt")
    duration = service.default_duration
    if seconds not in (None, ""):
        try:
            duration = float(seconds)
        except (TypeError, ValueError):
            raise ApiError(400, "invalid_value", f"seconds must be a number, got {seconds!r}", "seconds") from None
    spec = JobSpec(prompt=prompt.strip(), duration=duration, fps=service.native_fps, seed=secrets.randbelow(2**31))
    if size not in (None, ""):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(size))
        if not match:
            raise ApiError(400, "invalid_value", f"size must look like 256x256 (width x height), got {size!r}", "size")
        spec = replace(spec, width=int(match[1]), height=int(match[2]))
    return spec


def _owned(service: Service, owner: str, video_id: str) -> Job:
    job = service.store.get(video_id)
    if job is None or job.owner != owner or job.api != "openai":
        raise ApiError(404, "video_not_found", f"no video {video_id!r}", "video_id")
    return job


async def _reference(value: Any, limits: InputLimits, field: str) -> str | None:
    """`input_reference` as a URL the input loader takes (uploads become data: URLs)."""
    if value is None or value == "":
        return None
    if isinstance(value, UploadFile):
        try:
            data = await run_in_threadpool(read_upload, value.file, limits, field)
        except InputError as e:
            raise ApiError(e.http_status, "invalid_value", str(e), field) from None
        return "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    if isinstance(value, dict):
        if isinstance(value.get("image_url"), str):
            return value["image_url"]
        if "file_id" in value:
            raise ApiError(400, "invalid_value", "input_reference.file_id is not supported; upload the image or "
                           "give input_reference.image_url", "input_reference")  # fmt: skip
    if isinstance(value, str):
        return value
    raise ApiError(400, "invalid_value", "input_reference must be an image upload or {image_url}", "input_reference")


async def _body(request: Request) -> dict[str, Any]:
    """A multipart / form body (as the client sends files) or a JSON one."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data") or kind.startswith("application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as e:  # malformed multipart: the parser's own exceptions vary
            raise ApiError(400, "invalid_value", f"could not read the form body: {e}") from None
        return dict(form)
    return await read_json(request)


@router.post("/videos")
async def create_video(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    body = await _body(request)
    settings = _settings(service, body.get("prompt"), body.get("seconds"), body.get("size"))
    reference = await _reference(body.get("input_reference"), service.settings.limits, "input_reference")
    refs = [("image", "first_frame", reference, "input_reference")] if reference else []
    model = body.get("model") or "openseedance"
    if not isinstance(model, str):
        raise ApiError(400, "invalid_value", "model must be a string", "model")
    fields = {"model": model, "priority": 0, "expires_after": None}
    job = await service.submit("openai", owner, settings, refs, fields, base_url=str(request.base_url))
    return render(job)


@router.get("/videos/{video_id}")
async def retrieve_video(video_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    return render(_owned(service, service.authorize(request), video_id))


@router.get("/videos")
async def list_videos(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "invalid_value", f"order must be asc or desc, got {order!r}", "order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise ApiError(400, "invalid_value", "limit must be an integer", "limit") from None
    if not 1 <= limit <= 100:
        raise ApiError(400, "invalid_value", f"limit must be 1..100, got {limit}", "limit")
    try:
        jobs, _ = service.store.list(owner, api="openai", after=query.get("after") or None,
                                     descending=order == "desc", limit=limit + 1)  # fmt: skip
    except JobError as e:
        raise ApiError(400, "invalid_value", str(e), "after") from None
    data = [render(j) for j in jobs[:limit]]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(jobs) > limit}  # fmt: skip


@router.delete("/videos/{video_id}")
async def delete_video(video_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    job = _owned(service, service.authorize(request), video_id)
    try:
        if job.status == "queued":
            service.store.cancel(video_id)
            job = service.store.get(video_id)
        if job.status not in FINISHED:
            raise JobError("conflict", f"video {video_id} is in progress; delete it once it has finished")
        service.remove(job)
    except JobError as e:
        raise ApiError(409 if e.code == "conflict" else 404, "video_in_progress", str(e), "video_id") from None
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get("/videos/{video_id}/content")
async def download_content(video_id: str, request: Request) -> Response:
    service: Service = request.app.state.service
    job = _owned(service, service.authorize(request), video_id)
    variant = request.query_params.get("variant", "video")
    if variant not in _VARIANTS:
        raise ApiError(400, "invalid_value", f"variant must be one of {', '.join(_VARIANTS)}", "variant")
    files = (job.result or {}).get("files") or {}
    if job.status != "succeeded":
        raise ApiError(409, "video_not_ready", f"video {video_id} is {_STATUS[job.status]}, not completed", "video_id")
    name, media_type = _VARIANTS[variant]
    found = None
    if name in files:
        found = file_response(service.folder(job.id) / files[name], request.headers.get("range"), media_type)
    if found is None:
        raise ApiError(404, "content_expired", f"the {variant} of video {video_id} has expired", "video_id")
    return found


@router.post("/videos/{video_id}/remix")
async def remix_video(video_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    source = _owned(service, owner, video_id)
    body = await read_json(request)
    files = (source.result or {}).get("files") or {}
    if source.status != "succeeded" or "video" not in files:
        raise ApiError(409, "video_not_ready", f"video {video_id} must be completed (and not expired) to remix it",
                       "video_id")  # fmt: skip
    settings = _settings(service, body.get("prompt"), source.spec.duration, f"{source.spec.width}x{source.spec.height}")
    settings = replace(settings, seed=source.spec.seed, echo={"remixed_from_video_id": video_id})
    first = media.read_video(service.folder(source.id) / files["video"]).video[0]
    refs = [("image", "first_frame", _png_url(first), "video_id")]
    fields = {"model": source.model, "priority": 0, "expires_after": None}
    job = await service.submit("openai", owner, settings, refs, fields, base_url=str(request.base_url))
    return render(job)


def _png_url(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@router.post("/videos/extensions")
async def extend_video(request: Request) -> dict[str, Any]:
    """A clip continued by `seconds` more: an upload, or `{"id"}` of a completed video. The result is
    the whole clip, the source kept as it was."""
    service: Service = request.app.state.service
    owner = service.authorize(request)
    body = await _body(request)
    video = body.get("video")
    if video is None and "video[id]" in body:  # a nested object sent as multipart
        video = {"id": body["video[id]"]}
    if isinstance(video, dict) and isinstance(video.get("id"), str):
        source = _owned(service, owner, video["id"])
        files = (source.result or {}).get("files") or {}
        if source.status != "succeeded" or "video" not in files:
            raise ApiError(409, "video_not_ready", f"video {video['id']} must be completed to extend it", "video")
        url, model = service.stored_url(source, files["video"]), source.model
    elif isinstance(video, UploadFile):
        url, model = await _reference(video, service.settings.limits, "video"), body.get("model") or "openseedance"
    else:
        raise ApiError(400, "invalid_value", "video must be an uploaded clip or {id} of a completed video", "video")
    settings = _settings(service, body.get("prompt"), body.get("seconds"), None)
    settings = replace(settings, extend="forward", extend_by=settings.duration)
    refs = [("video", "source_video", url, "video")]
    fields = {"model": model, "priority": 0, "expires_after": None}
    job = await service.submit("openai", owner, settings, refs, fields, base_url=str(request.base_url))
    return render(job)
