"""The OpenAI videos API (`/v1/videos`), the one `openai.OpenAI().videos` speaks.

`POST /videos` takes multipart (as the client sends it) or JSON: `prompt`, `model`, `seconds`,
`size` ("WxH") and `input_reference` (an image: the first frame, an upload or `{image_url}`).
Multipart fields written with brackets (`input_reference[image_url]`) are the JSON body's nested
objects; a field this API does not take is refused by name. A remix keeps the source's settings and
opening frame and follows a new prompt; an edit is made the same way.
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
from openseedance.serve import bounds
from openseedance.serve.api import ApiError, Service, read_json
from openseedance.serve.bounds import shown
from openseedance.serve.fetch import read_upload
from openseedance.serve.files import file_response
from openseedance.serve.jobs import FINISHED, Job, JobError
from openseedance.serve.limits import InputError, InputLimits
from openseedance.serve.spec import JobSpec, decode, size_for

router = APIRouter(prefix="/v1")

_STATUS = {"queued": "queued", "running": "in_progress", "succeeded": "completed", "failed": "failed",
           "cancelled": "failed", "expired": "failed"}  # fmt: skip
_VARIANTS = {"video": ("video", "video/mp4"), "thumbnail": ("thumbnail", "image/jpeg"),
             "spritesheet": ("spritesheet", "image/jpeg")}  # fmt: skip


# the shared submission path speaks of the engine's fields and Ark's codes; this API names its own
_CODES = {"InvalidParameter": "invalid_value", "MissingParameter": "missing_required_parameter",
          "NotFound": "not_found", "ResourceNotFound": "not_found", "MethodNotAllowed": "method_not_allowed",
          "RequestTooLarge": "request_too_large", "RateLimitExceeded.QueuedTasks": "rate_limit_exceeded",
          "AuthenticationError": "invalid_api_key", "InternalServiceError": "server_error",
          "BadRequest": "invalid_request",
          "InputImageSensitiveContentDetected.PrivacyInformation": "moderation_blocked"}  # fmt: skip
_PARAMS = {"width": "size", "height": "size", "duration": "seconds", "first_frame": "input_reference"}
_CREATE = frozenset({"prompt", "model", "seconds", "size", "input_reference"})
_REFERENCE = frozenset({"image_url", "file_id"})
_BRACKETS = re.compile(r"([A-Za-z_]\w*)((?:\[[A-Za-z_]\w*\])+)")


def error(status: int, code: str, message: str, param: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    body = {"message": message, "type": kind, "param": _PARAMS.get(param, param), "code": _CODES.get(code, code)}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


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


def _settings(service: Service, prompt: Any, seconds: Any, size: Any, least: float | None = None) -> JobSpec:
    """The spec as asked; `seconds` from `least` (default: the engine's shortest clip) to its longest."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "invalid_value", "prompt is required: describe the video to generate", "prompt")
    bounds.text(prompt, "prompt", bounds.MAX_PROMPT_CHARS)
    card = service.card
    least = card.min_duration if least is None else least
    duration = bounds.number(seconds, "seconds", least, card.max_duration)
    duration = service.default_duration if duration is None else duration
    spec = JobSpec(prompt=prompt.strip(), duration=duration, fps=service.native_fps, seed=secrets.randbelow(2**31))
    if size not in (None, ""):
        width, height = _size(service, size)
        spec = replace(spec, width=width, height=height)
    return spec


def _size(service: Service, size: Any) -> tuple[int, int]:
    """`size` ("WxH") as a size this engine makes; the error lists what it makes."""
    card, step = service.card, service.step
    native = (card.width, card.height)
    examples = dict.fromkeys([native, *(size_for(None, r, native, step) for r in ("16:9", "9:16"))])
    made = (f"this engine makes sizes whose sides are each a multiple of {step} from {step} to {card.max_side}, "
            f"such as {', '.join(f'{w}x{h}' for w, h in examples if max(w, h) <= card.max_side)}")  # fmt: skip
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", size) if isinstance(size, str) else None
    if not match:
        raise ApiError(400, "invalid_value", f"size must look like WIDTHxHEIGHT, got {shown(size)}; {made}", "size")
    width, height = int(match[1]), int(match[2])
    if any(v % step or not step <= v <= card.max_side for v in (width, height)):
        raise ApiError(400, "invalid_value", f"size {width}x{height} is not one {made}", "size")
    return width, height


def _owned(service: Service, owner: str, video_id: str, param: str = "video_id") -> Job:
    job = service.owned(owner, video_id, "openai")
    if job is None:
        raise ApiError(404, "video_not_found", f"no video {shown(video_id)}", param)
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
        bounds.known(value, _REFERENCE, field)
        if isinstance(value.get("image_url"), str):
            return value["image_url"]
        if "file_id" in value:
            raise ApiError(400, "invalid_value", "input_reference.file_id is not supported; upload the image or "
                           "give input_reference.image_url", "input_reference")  # fmt: skip
    if isinstance(value, str):
        return value
    raise ApiError(400, "invalid_value", "input_reference must be an image upload or {image_url}", "input_reference")


async def _body(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    """A multipart / form body (as the client sends files) or a JSON one, taking only `fields`.
    Form fields named like `input_reference[image_url]` are the JSON body's nested objects."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data") or kind.startswith("application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=1, max_fields=16)
        except ApiError:  # over the body limit: 413
            raise
        except Exception as e:  # malformed multipart: the parser's own exceptions vary
            raise ApiError(400, "invalid_value", f"could not read the form body: {e}") from None
        body = _nested(form.multi_items())
        bounds.check_text(body, "")
    else:
        body = await read_json(request)
    bounds.known(body, fields)
    return body


def _nested(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields as a JSON body: `a[b][c]=v` is {"a": {"b": {"c": v}}}; a field given twice is refused."""
    body: dict[str, Any] = {}
    for key, value in items:
        match = _BRACKETS.fullmatch(key)
        path = [match[1], *match[2][1:-1].split("][")] if match else [key]
        where = body
        for i, part in enumerate(path[:-1]):
            where = where.setdefault(part, {})
            if not isinstance(where, dict):
                raise ApiError(400, "invalid_value", f"{shown('.'.join(path[: i + 1]))} is given both as a "
                               "value and as an object", path[0])  # fmt: skip
        if path[-1] in where:
            raise ApiError(400, "invalid_value", f"form field {shown(key)} is given twice", path[0])
        where[path[-1]] = value
    return body


@router.post("/videos")
async def create_video(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    body = await _body(request, _CREATE)
    settings = _settings(service, body.get("prompt"), body.get("seconds"), body.get("size"))
    model = bounds.text(body.get("model"), "model", bounds.MAX_NAME_CHARS) or "openseedance"
    reference = await _reference(body.get("input_reference"), service.settings.limits, "input_reference")
    refs = [("image", "first_frame", reference, "input_reference")] if reference else []
    return await _submit(service, request, owner, settings, refs, model)


async def _submit(service: Service, request: Request, owner: str, settings: JobSpec,
                  refs: list[tuple[str, str, str, str]], model: str) -> dict[str, Any]:  # fmt: skip
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
        raise ApiError(400, "invalid_value", f"order must be asc or desc, got {shown(order)}", "order")
    limit = bounds.integer(query.get("limit", "20"), "limit", 1, 100)
    try:
        after = bounds.text(query.get("after"), "after", bounds.MAX_NAME_CHARS)
        jobs, _ = service.store.list(owner, api="openai", after=after or None,
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


@router.api_route("/videos/{video_id}/content", methods=["GET", "HEAD"])
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
        found = file_response(service.folder(job.id) / files[name], request.headers.get("range"), media_type,
                              head=request.method == "HEAD")  # fmt: skip
    if found is None:
        raise ApiError(404, "content_expired", f"the {variant} of video {video_id} has expired", "video_id")
    return found


@router.post("/videos/{video_id}/remix")
async def remix_video(video_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    body = await _body(request, frozenset({"prompt"}))
    return await _remix(service, request, owner, video_id, body.get("prompt"), "video_id")


@router.post("/videos/edits")
async def edit_video(request: Request) -> dict[str, Any]:
    """An edit of a video by a new prompt, made as a remix is: a new take that opens on the source's
    first frame, at its length and size, following the new prompt. The source is `{id}` of a completed
    video (its seed is kept too) or an uploaded clip (what the official client sends)."""
    service: Service = request.app.state.service
    owner = service.authorize(request)
    body = await _body(request, frozenset({"prompt", "video"}))
    video = body.get("video")
    if isinstance(video, dict):
        bounds.known(video, frozenset({"id"}), "video")
        if isinstance(video.get("id"), str):
            return await _remix(service, request, owner, video["id"], body.get("prompt"), "video")
    if not isinstance(video, UploadFile):
        raise ApiError(400, "invalid_value", "video must be an uploaded clip or {id} of a completed video", "video")
    limits = service.settings.limits
    try:
        data = await run_in_threadpool(read_upload, video.file, limits, "video")
        clip = await run_in_threadpool(decode, "video", data, limits, "video")
    except InputError as e:
        raise ApiError(e.http_status, "invalid_value", str(e), "video") from None
    card, (height, width) = service.card, clip.video.shape[1:3]
    fits = all(v % service.step == 0 and service.step <= v <= card.max_side for v in (width, height))
    size = f"{width}x{height}" if fits else f"{card.width}x{card.height}"
    length = min(max(len(clip.video) / clip.fps, card.min_duration), card.max_duration)
    settings = _settings(service, body.get("prompt"), length, size)
    first = np.asarray(Image.fromarray(clip.video[0]).resize(_wh(settings)))  # the model's size, as a first frame
    return await _submit(service, request, owner, settings, [("image", "first_frame", _png_url(first), "video")],
                         "openseedance")  # fmt: skip


def _wh(spec: JobSpec) -> tuple[int, int]:
    return spec.width, spec.height


async def _remix(service: Service, request: Request, owner: str, video_id: str, prompt: Any,
                 param: str) -> dict[str, Any]:  # fmt: skip
    source = _owned(service, owner, video_id, param)
    files = (source.result or {}).get("files") or {}
    if source.status != "succeeded" or "video" not in files:
        raise ApiError(409, "video_not_ready", f"video {video_id} must be completed (and not expired) to remix it",
                       param)  # fmt: skip
    settings = _settings(service, prompt, None, f"{source.spec.width}x{source.spec.height}")
    settings = replace(settings, duration=source.spec.duration, seed=source.spec.seed,
                       echo={"remixed_from_video_id": video_id})  # fmt: skip
    first = media.read_video(service.folder(source.id) / files["video"]).video[0]
    refs = [("image", "first_frame", _png_url(first), param)]
    return await _submit(service, request, owner, settings, refs, source.model)


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
    body = await _body(request, frozenset({"prompt", "seconds", "video", "model"}))
    video = body.get("video")
    if isinstance(video, dict):
        bounds.known(video, frozenset({"id"}), "video")
    if isinstance(video, dict) and isinstance(video.get("id"), str):
        source = _owned(service, owner, video["id"], "video")
        files = (source.result or {}).get("files") or {}
        if source.status != "succeeded" or "video" not in files:
            raise ApiError(409, "video_not_ready", f"video {video['id']} must be completed to extend it", "video")
        url, model = service.stored_url(source, files["video"]), source.model
    elif isinstance(video, UploadFile):
        model = bounds.text(body.get("model"), "model", bounds.MAX_NAME_CHARS) or "openseedance"
        url = await _reference(video, service.settings.limits, "video")
    else:
        raise ApiError(400, "invalid_value", "video must be an uploaded clip or {id} of a completed video", "video")
    settings = _settings(service, body.get("prompt"), body.get("seconds"), None, least=0.0)
    settings = replace(settings, extend="forward", extend_by=settings.duration)
    return await _submit(service, request, owner, settings, [("video", "source_video", url, "video")], model)
