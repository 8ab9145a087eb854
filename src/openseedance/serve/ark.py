"""The ModelArk content-generation tasks API (`/api/v3/contents/generations/tasks`), the one the
`volcenginesdkarkruntime.Ark` client speaks.

A body's `content` holds one or more `text` items (the prompt, optionally ending in legacy commands
such as `--ratio 16:9 --dur 5 --seed 11 --wm true`) and media items `image_url` / `video_url` /
`audio_url` with a `role`. Fields set in the body win over the same setting given as a command;
fields sent as JSON null count as unset. Status, errors and listings come back in Ark's shapes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from openseedance.serve import bounds
from openseedance.serve.api import ApiError, Service, read_json
from openseedance.serve.bounds import shown
from openseedance.serve.jobs import FINISHED, STATUSES, Job, JobError
from openseedance.serve.spec import ROLES, JobSpec

router = APIRouter(prefix="/api/v3")

DEFAULT_EXPIRES_AFTER = 172_800  # seconds
DRAFT_STEPS = 2
# legacy text command -> body field, with the short forms
_COMMANDS = {
    "ratio": "ratio", "rt": "ratio",
    "resolution": "resolution", "rs": "resolution",
    "duration": "duration", "dur": "duration",
    "framespersecond": "framespersecond", "framepersecond": "framespersecond", "fps": "framespersecond",
    "seed": "seed",
    "watermark": "watermark", "wm": "watermark",
    "camerafixed": "camera_fixed", "cf": "camera_fixed",
    "frames": "frames",
}  # fmt: skip
_ECHOED = ("camera_fixed", "service_tier", "safety_identifier", "draft", "omni_reference_task_type")
_COMMAND = re.compile(r"(?<!\S)--([a-z_]+)\s+(\S+)", re.IGNORECASE)


def error(status: int, code: str, message: str, param: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    kind = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
            413: "BadRequest", 429: "TooManyRequests"}.get(status, "InternalServiceError")  # fmt: skip
    body = {"error": {"code": code, "message": message, "param": param, "type": kind}}
    return JSONResponse(body, status_code=status, headers={**(headers or {}), "x-request-id": secrets.token_hex(8)})


def _commands(text: str) -> tuple[str, dict[str, str]]:
    """Split `--name value` commands off the prompt; unknown names stay part of the prompt."""
    found: dict[str, str] = {}

    def take(match: re.Match) -> str:
        name = match[1].lower()
        if name not in _COMMANDS:
            return match[0]
        found[_COMMANDS[name]] = match[2]
        return " "

    return " ".join(_COMMAND.sub(take, text).split()), found


def _typed(value: Any, kind: type | tuple[int, int] | int, name: str) -> Any:
    """`value` as the field's type: bool, an int in (low, high), or a string of at most `kind` chars."""
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ApiError(400, "InvalidParameter", f"{name} must be true or false, got {shown(value)}", name)
        return value
    if isinstance(kind, tuple):
        return bounds.integer(value, name, *kind)
    return bounds.text(value, name, kind)


_FIELDS = {
    "generate_audio": bool, "ratio": 16, "resolution": 16, "duration": (-1, 3600), "frames": (1, 100_000),
    "framespersecond": (1, 120), "seed": (-1, 2**32 - 1), "watermark": bool, "camera_fixed": bool,
    "return_last_frame": bool, "callback_url": bounds.MAX_URL_CHARS, "execution_expires_after": (1, 259_200),
    "priority": (-1000, 1000), "service_tier": 64, "safety_identifier": bounds.MAX_NAME_CHARS, "draft": bool,
    "output_format": 16, "omni_reference_task_type": 64,
}  # fmt: skip
_BODY = frozenset({"model", "content", "tools", *_FIELDS})
_ITEM = {"text": {"type", "text"}, "draft_task": {"type", "draft_task"},
         **{kind: {"type", kind, "role"} for kind in ("image_url", "video_url", "audio_url")}}  # fmt: skip
_RATIO = re.compile(r"\d{1,4}(\.\d{1,3})?:\d{1,4}(\.\d{1,3})?|adaptive|keep_ratio")
_RESOLUTION = re.compile(r"\d{1,4}p", re.IGNORECASE)


def parse(body: dict[str, Any], service: Service,
          owner: str) -> tuple[JobSpec, list[tuple[str, str, str, str]], dict]:  # fmt: skip
    """-> (the spec as asked, references as (kind, role, url, where), job fields). Raises ApiError."""
    bounds.known(body, _BODY)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "MissingParameter", "model is required: the name of the model to run", "model")
    bounds.text(model, "model", bounds.MAX_NAME_CHARS)
    content = body.get("content")
    if not isinstance(content, list) or not content:
        raise ApiError(400, "MissingParameter", "content must be a non-empty list of text and media items", "content")
    texts, refs, draft_of = [], [], None
    for i, item in enumerate(content):
        where = f"content[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ApiError(400, "InvalidParameter", f"{where} must be an object with a type", where)
        kind = item["type"]
        if kind in _ITEM:
            bounds.known(item, _ITEM[kind], where)
        if kind == "text":
            if not isinstance(item.get("text"), str):
                raise ApiError(400, "InvalidParameter", f"{where}.text must be a string", f"{where}.text")
            texts.append(item["text"])
        elif kind in ("image_url", "video_url", "audio_url"):
            media = item.get(kind)
            if isinstance(media, dict):
                bounds.known(media, {"url"}, f"{where}.{kind}")
            url = media.get("url") if isinstance(media, dict) else None
            role = item.get("role")
            if role is not None and (not isinstance(role, str) or role not in ROLES):
                raise ApiError(400, "InvalidParameter", f"{where}.role must be one of {', '.join(ROLES)}, got "
                               f"{shown(role)}", f"{where}.role")  # fmt: skip
            if not isinstance(url, str) or not url:
                raise ApiError(400, "InvalidParameter", f"{where}.{kind}.url must be a URL string", f"{where}.{kind}")
            refs.append((kind.removesuffix("_url"), item.get("role"), url, f"{where}.{kind}.url"))
        elif kind == "draft_task":
            draft = item.get("draft_task")
            if isinstance(draft, dict):
                bounds.known(draft, {"id"}, f"{where}.draft_task")
            draft_of = draft.get("id") if isinstance(draft, dict) else None
            if not isinstance(draft_of, str) or len(draft_of) > bounds.MAX_NAME_CHARS:
                raise ApiError(400, "InvalidParameter", f"{where}.draft_task.id must be a task id", where)
        else:
            raise ApiError(400, "InvalidParameter", f"{where}.type {shown(kind)} is not one of text, image_url, "
                           "video_url, audio_url, draft_task", f"{where}.type")  # fmt: skip
    if body.get("tools"):
        raise ApiError(400, "InvalidParameter", "tools are not supported by this model", "tools")
    if body.get("output_format") not in (None, "mp4"):
        raise ApiError(400, "InvalidParameter", "output_format must be mp4", "output_format")

    prompt, commands = _commands(" ".join(texts))
    bounds.text(prompt, "content", bounds.MAX_PROMPT_CHARS)
    given = {name: _typed(body.get(name), kind, name) for name, kind in _FIELDS.items()}
    for name, value in commands.items():
        if given.get(name) is None:
            given[name] = _typed(value, _FIELDS[name], f"--{name}")
    for name, pattern, example in (("ratio", _RATIO, "16:9 or adaptive"), ("resolution", _RESOLUTION, "480p")):
        if given[name] is not None and not pattern.fullmatch(given[name].strip()):
            raise ApiError(400, "InvalidParameter", f"{name} must look like {example}, got {shown(given[name])}",
                           name)  # fmt: skip
    references = _roles(refs)
    if draft_of is not None:
        return _from_draft(service, owner, draft_of, model, given)
    return _settings(prompt, given, service), references, _job_fields(model, given)


def _roles(refs: list[tuple[str, Any, str, str]]) -> list[tuple[str, str, str, str]]:
    images = sum(kind == "image" for kind, *_ in refs)
    out = []
    for kind, role, url, where in refs:
        if role is None:  # one image alone is a first frame; otherwise media are references
            role = "first_frame" if kind == "image" and images == 1 else f"reference_{kind}"
        if ROLES.get(role) != kind:
            allowed = [r for r, k in ROLES.items() if k == kind]
            raise ApiError(400, "InvalidParameter", f"role {role!r} is not valid for {kind}_url; use one of "
                           f"{', '.join(allowed)}", where.rsplit(".", 1)[0] + ".role")  # fmt: skip
        out.append((kind, role, url, where))
    for role in ("first_frame", "last_frame"):
        if sum(r == role for _, r, _, _ in out) > 1:
            raise ApiError(400, "InvalidParameter", f"only one {role} may be given", "content")
    return out


def _settings(prompt: str, given: dict[str, Any], service: Service) -> JobSpec:
    fps = given["framespersecond"] or service.native_fps
    duration = given["duration"]
    if given["frames"] is not None:
        if given["frames"] <= 0:
            raise ApiError(400, "InvalidParameter", "frames must be positive", "frames")
        duration = given["frames"] / fps
    elif duration in (None, -1):
        duration = service.default_duration
    elif duration <= 0:
        raise ApiError(400, "InvalidParameter", f"duration must be positive seconds or -1, got {duration}", "duration")
    seed = given["seed"]
    if seed is None or seed == -1:
        seed = secrets.randbelow(2**31)
    elif not 0 <= seed < 2**32:
        raise ApiError(400, "InvalidParameter", f"seed must be -1 or 0..4294967295, got {seed}", "seed")
    return JobSpec(
        prompt=prompt, duration=float(duration), fps=float(fps), seed=seed,
        generate_audio=True if given["generate_audio"] is None else given["generate_audio"],
        visible_watermark=bool(given["watermark"]), steps=DRAFT_STEPS if given["draft"] else None,
        return_last_frame=bool(given["return_last_frame"]), ratio=given["ratio"], resolution=given["resolution"],
        echo={k: given[k] for k in _ECHOED if given[k] is not None},
    )  # fmt: skip


def _job_fields(model: str, given: dict[str, Any]) -> dict[str, Any]:
    expires = given["execution_expires_after"]
    if expires is not None and expires <= 0:
        raise ApiError(400, "InvalidParameter", "execution_expires_after must be positive seconds",
                       "execution_expires_after")  # fmt: skip
    return {"model": model, "priority": given["priority"] or 0, "callback_url": given["callback_url"],
            "expires_after": expires or DEFAULT_EXPIRES_AFTER}  # fmt: skip


def _from_draft(service: Service, owner: str, draft_id: str, model: str, given: dict) -> tuple[JobSpec, list, dict]:
    """A draft task's prompt, references and seed, generated again at full quality."""
    job = service.owned(owner, draft_id, "ark")
    if job is None:
        raise ApiError(404, "NotFound", f"no draft task {shown(draft_id)}", "content")
    if not job.spec.echo.get("draft") or job.status != "succeeded":
        raise ApiError(400, "InvalidParameter", f"task {draft_id} is not a finished draft", "content")
    spec = replace(job.spec, references=(), width=None, height=None, steps=None,
                   echo={**job.spec.echo, "draft": False, "draft_task_id": draft_id})  # fmt: skip
    refs = [(r.kind, r.role, service.stored_url(job, r.file), "content") for r in job.spec.references]
    return spec, refs, _job_fields(model, given)


def render(job: Job, base_url: str) -> dict[str, Any]:
    """A job as Ark's task object."""
    spec, result = job.spec, job.result or {}
    files = result.get("files") or {}
    content = {}
    if "video" in files:
        content["video_url"] = f"{base_url}files/{job.id}/{files['video']}"
    if "last_frame" in files:
        content["last_frame_url"] = f"{base_url}files/{job.id}/{files['last_frame']}"
    task = {
        "id": job.id,
        "model": job.model,
        "status": job.status,
        "error": job.error,
        "content": content or None,
        "usage": result.get("usage"),
        "created_at": int(job.created_at),
        "updated_at": int(job.updated_at),
        "seed": spec.seed,
        "resolution": spec.resolution_label,
        "ratio": spec.ratio_label if spec.ratio in (None, "adaptive", "keep_ratio") else spec.ratio,
        "duration": round(spec.duration) if spec.duration >= 1 else spec.duration,
        "frames": round(spec.duration * spec.fps),
        "framespersecond": round(spec.fps),
        "generate_audio": spec.generate_audio,
        "watermark": spec.visible_watermark,
        "return_last_frame": spec.return_last_frame,
        "execution_expires_after": spec.expires_after,
        "priority": job.priority,
        "progress": round(job.progress * 100),
        "fileformat": "mp4",
        **spec.echo,
    }
    if job.deadline is not None and not job.finished:
        task["execution_expires_at"] = int(job.deadline)
    return task


def _owned(service: Service, owner: str, task_id: str) -> Job:
    job = service.owned(owner, task_id, "ark")
    if job is None:
        raise ApiError(404, "ResourceNotFound", f"no task {shown(task_id)}", "task_id")
    return job


@router.post("/contents/generations/tasks")
async def create_task(request: Request) -> dict[str, str]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    body = await read_json(request)
    settings, refs, fields = parse(body, service, owner)
    job = await service.submit("ark", owner, settings, refs, fields, base_url=str(request.base_url))
    return {"id": job.id}


@router.get("/contents/generations/tasks/{task_id}")
async def get_task(task_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    return render(_owned(service, service.authorize(request), task_id), str(request.base_url))


@router.get("/contents/generations/tasks")
async def list_tasks(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    query = request.query_params
    page_num = page_param(query.get("page_num", "1"), "page_num", 1, 500)
    page_size = page_param(query.get("page_size", "10"), "page_size", 1, 500)
    statuses = tuple(query.getlist("filter.status"))
    for status in statuses:
        if status not in STATUSES:
            raise ApiError(400, "InvalidParameter", f"filter.status must be one of {', '.join(STATUSES)}",
                           "filter.status")  # fmt: skip
    items, total = service.store.list(owner, api="ark", statuses=statuses, ids=tuple(query.getlist("filter.task_ids")),
                                      model=query.get("filter.model"), offset=(page_num - 1) * page_size,
                                      limit=page_size)  # fmt: skip
    return {"items": [render(j, str(request.base_url)) for j in items], "total": total}


def page_param(text: str, name: str, low: int, high: int) -> int:
    return bounds.integer(text, name, low, high)


@router.delete("/contents/generations/tasks/{task_id}")
async def delete_task(task_id: str, request: Request) -> Response:
    service: Service = request.app.state.service
    cancel_or_remove(service, _owned(service, service.authorize(request), task_id))
    return Response(status_code=200, content=b"{}", media_type="application/json")


def cancel_or_remove(service: Service, job: Job) -> None:
    """Cancel a queued job, delete a finished one (record and files); a running one is a conflict."""
    try:
        if job.status == "queued":
            service.store.cancel(job.id)
        elif job.status in FINISHED:
            service.remove(job)
        else:
            raise JobError("conflict", f"task {job.id} is running and cannot be cancelled; delete it once finished")
    except JobError as e:
        raise ApiError(409 if e.code == "conflict" else 404, "InvalidAction.TaskRunning"
                       if e.code == "conflict" else "ResourceNotFound", str(e), "task_id") from None  # fmt: skip
