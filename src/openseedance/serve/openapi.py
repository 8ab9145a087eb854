"""The server's OpenAPI document (`/openapi.json`), written by hand: the routes read their bodies
themselves (JSON with bounds, multipart with bracket fields), so FastAPI can infer nothing about them.
Each operation here names its body, its parameters, whether it needs the bearer key, and every status
it answers with, in its API's error shape. The bounds come from `bounds`, `ark` and the model's card,
so the document says what this server accepts.

Which 4xx name no field (`param` is null): 401 (the key), 413 (the body over the byte limit), 429
(the pending-task limit), 404/405 of a path or method that does not exist, and a 400 for a body that is
not a JSON object at all (not JSON, nested deeper than `bounds.MAX_DEPTH`, or a form that cannot be
read). Every other 4xx names the field at fault, the path parameter of a missing job included.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from openseedance.engines import Capabilities
from openseedance.serve import ark, bounds
from openseedance.serve.jobs import STATUSES
from openseedance.serve.spec import ROLES

VERSION = "3.1.0"
_ABOUT = ("Two APIs over one job store: ModelArk's content-generation tasks (/api/v3, Ark error shape "
          "{error: {code, message, param, type}}) and OpenAI's videos (/v1, OpenAI error shape "
          "{error: {message, type, param, code}}). A 4xx names the field at fault in `param`, except 401, 413, "
          "429 and a body that is not a JSON object or a readable form. Any path answers a method it does not "
          "take with 405 and an Allow header; any body over the server's byte limit is refused with 413.")
_REASONS = {
    200: "OK", 204: "No content", 206: "One byte range of the file",
    400: "A field is invalid; `param` names it (null when the body is not a JSON object or a readable form)",
    401: "The API key is missing or not valid",
    404: "No such job (for this key), `param` naming its id; or no such file, naming none",
    409: "The job is in a state that does not allow this (running, not completed)",
    413: "The body, or one input in it, is over this server's limit",
    416: "The byte range lies past the end of the file",
    429: "This key has too many tasks queued or running; retry after `Retry-After` seconds",
}  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _integer(low: int, high: int, what: str = "") -> dict[str, Any]:
    """An integer in low..high, which the server also takes as its decimal text."""
    text = {"type": "string", "pattern": rf"^\s*-?\d{{1,{bounds.MAX_DIGITS}}}\s*$", "description": "as decimal text"}
    return {"anyOf": [{"type": "integer", "minimum": low, "maximum": high}, text, {"type": "null"}],
            "description": f"{what} ({low} to {high})".strip()}  # fmt: skip


_STRING_OR_NULL = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_INTEGER_OR_NULL = {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def _text(max_chars: int, what: str, **extra: Any) -> dict[str, Any]:
    return _nullable({"type": "string", "maxLength": max_chars, "description": what, **extra})


_BOOLEAN = {"anyOf": [{"type": "boolean"}, {"type": "string", "pattern": "^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"},
                      {"type": "null"}]}  # fmt: skip
_NUMBER_TEXT = {"type": "string", "maxLength": 32, "pattern": r"^\s*[-+]?[\d_.]+(?:[eE][-+]?[\d_]+)?\s*$"}
_PROMPT = {"type": "string", "minLength": 1, "maxLength": bounds.MAX_PROMPT_CHARS, "pattern": r"\S",
           "description": "what the video shows and sounds like"}  # fmt: skip


def _ark_schemas() -> dict[str, Any]:
    def media(kind: str) -> dict[str, Any]:
        roles = [role for role, k in ROLES.items() if k == kind]
        return {
            "type": "object", "additionalProperties": False, "required": ["type", f"{kind}_url"],
            "properties": {
                "type": {"const": f"{kind}_url"},
                f"{kind}_url": {"type": "object", "additionalProperties": False, "required": ["url"],
                                "properties": {"url": {"type": "string", "minLength": 1,
                                                       "description": "an https: or data: URL"}}},
                "role": _nullable({"enum": roles}),
            },
            "description": f"an {kind} input; without a role a lone image is the first frame, other media references",
        }  # fmt: skip

    fields = {
        "generate_audio": _BOOLEAN, "ratio": _text(16, "width:height, adaptive or keep_ratio",
                                                   pattern=r"^\s*(?:\d{1,4}(?:\.\d{1,3})?:\d{1,4}(?:\.\d{1,3})?|"
                                                   r"adaptive|keep_ratio)\s*$"),
        "resolution": _text(16, "the short side, such as 480p", pattern=r"^\s*\d{1,4}[pP]\s*$"),
        "duration": _integer(*ark._FIELDS["duration"], "seconds, -1 for the default; not 0"),
        "frames": _integer(*ark._FIELDS["frames"], "the clip's length in frames (wins over duration)"),
        "framespersecond": _integer(*ark._FIELDS["framespersecond"]),
        "seed": _integer(*ark._FIELDS["seed"], "-1 for a random seed"),
        "watermark": _BOOLEAN, "camera_fixed": _BOOLEAN, "return_last_frame": _BOOLEAN, "draft": _BOOLEAN,
        "callback_url": _text(bounds.MAX_URL_CHARS, "POSTed the task when its status changes"),
        "execution_expires_after": _integer(*ark._FIELDS["execution_expires_after"], "seconds the task may wait"),
        "priority": _integer(*ark._FIELDS["priority"]),
        "service_tier": _text(64, "echoed back"), "safety_identifier": _text(bounds.MAX_NAME_CHARS, "echoed back"),
        "output_format": _nullable({"const": "mp4"}), "omni_reference_task_type": _text(64, "echoed back"),
        "tools": _nullable({"type": "array", "maxItems": 0, "description": "no tools are supported"}),
    }  # fmt: skip
    assert set(fields) | {"model", "content"} == ark._BODY, "every field the Ark API takes is described"
    text = {"type": "object", "additionalProperties": False, "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
            "description": "prompt text, which may end in commands such as --ratio 16:9 --dur 5 --seed 11 --wm true; "
                           f"all text items together hold at most {bounds.MAX_PROMPT_CHARS} characters"}  # fmt: skip
    draft = {"type": "object", "additionalProperties": False, "required": ["type", "draft_task"],
             "properties": {"type": {"const": "draft_task"},
                            "draft_task": {"type": "object", "additionalProperties": False, "required": ["id"],
                                           "properties": {"id": {"type": "string", "maxLength": 128}}}},
             "description": "a finished draft task to generate again at full quality"}  # fmt: skip
    body = {"type": "object", "additionalProperties": False, "required": ["model", "content"],
            "properties": {"model": {"type": "string", "minLength": 1, "maxLength": bounds.MAX_NAME_CHARS,
                                     "pattern": r"\S"},
                           "content": {"type": "array", "minItems": 1, "items": {"oneOf": [
                               _ref("ArkText"), _ref("ArkImage"), _ref("ArkVideo"), _ref("ArkAudio"),
                               _ref("ArkDraftTask")]}},
                           **fields},
            "description": "fields given as JSON null are unset; a field set here wins over the same text command"}
    task = {"type": "object", "required": ["id", "model", "status", "created_at", "updated_at"],
            "properties": {"id": {"type": "string"}, "model": {"type": "string"}, "status": {"enum": list(STATUSES)},
                           "error": _nullable({"type": "object"}), "content": _nullable({"type": "object"}),
                           "usage": _nullable({"type": "object"}), "created_at": {"type": "integer"},
                           "updated_at": {"type": "integer"}, "seed": {"type": "integer"},
                           "duration": {"type": "number"}, "frames": {"type": "integer"},
                           "framespersecond": {"type": "integer"}, "progress": {"type": "integer"},
                           "priority": {"type": "integer"}}}  # fmt: skip
    error = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "param", "type"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "param": _STRING_OR_NULL,
                       "type": {"type": "string"}}}}}  # fmt: skip
    job = {"allOf": [_ref("ArkTask"), {"type": "object", "required": ["api", "prompt"], "properties": {
        "api": {"enum": ["ark", "openai"]}, "prompt": {"type": "string"}}}]}  # fmt: skip
    return {"ArkTaskCreate": body, "ArkText": text, "ArkImage": media("image"), "ArkVideo": media("video"),
            "ArkAudio": media("audio"), "ArkDraftTask": draft, "ArkTask": task, "ArkError": error,
            "ArkTaskList": {"type": "object", "required": ["items", "total"], "properties": {
                "items": {"type": "array", "items": _ref("ArkTask")}, "total": {"type": "integer"}}},
            "ArkTaskId": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "Job": job, "JobList": {"type": "object", "required": ["items", "total"], "properties": {
                "items": {"type": "array", "items": _ref("Job")}, "total": {"type": "integer"}}}}  # fmt: skip


def _openai_schemas(card: Capabilities) -> dict[str, Any]:
    def seconds(least: float) -> dict[str, Any]:
        return {"anyOf": [{"type": "number", "minimum": least, "maximum": card.max_duration}, _NUMBER_TEXT,
                          {"type": "null"}],
                "description": f"the length in seconds, {least:g} to {card.max_duration:g} (as a number or text)"}

    size = {"anyOf": [{"type": "string", "pattern": r"^\s*\d{1,5}\s*[xX]\s*\d{1,5}\s*$"}, {"const": ""},
                      {"type": "null"}],
            "description": f"WIDTHxHEIGHT, each side a multiple of {card.size_step} from {card.size_step} to "
                           f"{card.max_side}; default {card.width}x{card.height}"}  # fmt: skip
    model = _text(bounds.MAX_NAME_CHARS, "a name echoed back")
    url = {"type": "string", "description": "an https: or data: URL of an image"}
    reference = {"anyOf": [url, {"type": "object", "additionalProperties": False, "required": ["image_url"],
                                 "properties": {"image_url": url}}, {"type": "null"}],
                 "description": "the first frame"}  # fmt: skip
    by_id = {"type": "object", "additionalProperties": False, "required": ["id"],
             "properties": {"id": {"type": "string", "description": "a completed video of this key"}}}
    create = {"prompt": _PROMPT, "model": model, "seconds": seconds(card.min_duration), "size": size}
    extend = {"prompt": _PROMPT, "model": model, "seconds": seconds(0.0)}

    def body(properties: dict[str, Any], *required: str) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "required": list(required), "properties": properties}

    # multipart (and urlencoded) fields are all text or files; `a[b]` is the JSON body's {"a": {"b": ...}}
    text = {"prompt": _PROMPT, "model": {"type": "string", "maxLength": bounds.MAX_NAME_CHARS}}
    number = {**_NUMBER_TEXT, "pattern": f"^(?:{_NUMBER_TEXT['pattern'][1:-1]})?$"}
    file = {"type": "string", "contentMediaType": "application/octet-stream"}
    upload = {"type": "string", "description": "an uploaded image, or an image URL as text"}
    by_id_text = {"type": "string", "description": "a completed video of this key"}
    form_create = {**text, "seconds": {**number, "description": create["seconds"]["description"]},
                   "size": {"type": "string", "pattern": r"^(?:\s*\d{1,5}\s*[xX]\s*\d{1,5}\s*)?$",
                            "description": size["description"]},
                   "input_reference": upload, "input_reference[image_url]": url}  # fmt: skip
    form_extend = {**text, "seconds": {**number, "description": extend["seconds"]["description"]}, "video": file,
                   "video[id]": by_id_text}  # fmt: skip

    video = {"type": "object", "required": ["id", "object", "status", "created_at", "model", "prompt", "seconds",
                                             "size", "progress"],
             "properties": {"id": {"type": "string"}, "object": {"const": "video"},
                            "status": {"enum": ["queued", "in_progress", "completed", "failed"]},
                            "created_at": {"type": "integer"}, "model": {"type": "string"},
                            "progress": {"type": "integer"}, "prompt": {"type": "string"},
                            "seconds": {"type": "string"}, "size": {"type": "string"},
                            "completed_at": _INTEGER_OR_NULL, "expires_at": _INTEGER_OR_NULL,
                            "error": _nullable({"type": "object"}),
                            "remixed_from_video_id": _nullable({"type": "string"})}}  # fmt: skip
    error = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "param": _STRING_OR_NULL,
                       "code": {"type": "string"}}}}}  # fmt: skip
    return {
        "VideoCreate": body({**create, "input_reference": reference}, "prompt"),
        "VideoCreateForm": body(form_create, "prompt"),
        "VideoRemix": body({"prompt": _PROMPT}, "prompt"), "VideoRemixForm": body({"prompt": _PROMPT}, "prompt"),
        "VideoEdit": body({"prompt": _PROMPT, "video": by_id}, "prompt", "video"),
        "VideoEditForm": body({"prompt": _PROMPT, "video": file, "video[id]": by_id_text}, "prompt"),
        "VideoExtend": body({**extend, "video": by_id}, "prompt", "video"),
        "VideoExtendForm": body(form_extend, "prompt"),
        "Video": video, "OpenAIError": error,
        "VideoList": {"type": "object", "required": ["object", "data", "first_id", "last_id", "has_more"],
                      "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Video")},
                                     "first_id": _STRING_OR_NULL, "last_id": _STRING_OR_NULL,
                                     "has_more": {"type": "boolean"}}},
        "VideoDeleted": {"type": "object", "required": ["id", "object", "deleted"],
                         "properties": {"id": {"type": "string"}, "object": {"const": "video.deleted"},
                                        "deleted": {"const": True}}},
    }  # fmt: skip


def _live_schemas() -> dict[str, Any]:
    prompt = {"type": "string", "minLength": 1, "maxLength": 2000}
    timeline = {"type": "array", "items": {"type": "object", "required": ["start", "prompt"], "properties": {
        "start": {"type": "number", "description": "seconds into the stream"}, "prompt": {"type": "string"}}}}
    return {
        "LiveCreate": {"type": "object", "additionalProperties": False, "required": ["prompt"], "properties": {
            "prompt": {**prompt, "description": "what happens first (one shot at a time)"},
            "seed": {"type": "integer", "minimum": -1, "maximum": 2**32 - 1, "default": 0},
            "max_seconds": {"type": "number", "minimum": 1, "description": "the longest it may run (default and "
                            "maximum: the server's limit)"},
            "chunk": {"type": "number", "minimum": 0.5, "maximum": 4, "default": 1,
                      "description": "seconds made at a time; a new prompt takes effect from the next chunk"},
            "size": {"type": "string", "pattern": "^[0-9]{1,5}x[0-9]{1,5}$", "description": "WIDTHxHEIGHT"},
            "generate_audio": {"type": "boolean", "default": True}, "model": {"type": "string"}}},
        "LivePrompt": {"type": "object", "additionalProperties": False, "required": ["prompt"],
                       "properties": {"prompt": prompt}},
        "LiveSteered": {"type": "object", "required": ["id", "next_prompt", "seq"], "properties": {
            "id": {"type": "string"}, "next_prompt": {"type": "string"}, "seq": {"type": "integer"}}},
        "Live": {"type": "object", "required": ["id", "object", "status", "stream_url", "seconds", "prompts"],
                 "properties": {
            "id": {"type": "string"}, "object": {"const": "live"}, "status": {"enum": list(STATUSES)},
            "created_at": {"type": "integer"}, "prompt": {"type": "string"}, "max_seconds": {"type": "number"},
            "chunk": {"type": "number"}, "seconds": {"type": "number", "description": "seconds made so far"},
            "prompts": timeline, "stream_url": {"type": "string"},
            "video_url": {"type": "string", "description": "the finished, signed file"},
            "stopped_by": {"enum": ["stop", "length", "idle", "worker"]},
            "error": {"type": "object"}}},
    }  # fmt: skip


@dataclass(frozen=True)
class Operation:
    """One method of one path: its id, the error shape it answers in, its 2xx and error statuses."""

    id: str
    summary: str
    ok: dict[int, dict[str, Any]]  # status -> response object
    errors: tuple[int, ...] = (401,)
    api: str = "ark"  # whose error shape: ark (also the page's and files' routes) or openai
    body: tuple[str, ...] = ()  # JSON schema name, and (OpenAI) the multipart one
    query: tuple[dict[str, Any], ...] = ()
    headers: tuple[dict[str, Any], ...] = field(default=())
    auth: bool = True


def _json(schema: str, what: str) -> dict[str, Any]:
    return {"description": what, "content": {"application/json": {"schema": _ref(schema)}}}


def _query(name: str, schema: dict[str, Any], what: str, explode: bool = False) -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": False, "schema": schema, "description": what}
    return {**param, "style": "form", "explode": True} if explode else param


_RANGE = {"name": "range", "in": "header", "required": False, "schema": {"type": "string"},
          "description": "one byte range, bytes=START-END or bytes=-N"}  # fmt: skip
_FILE = {"description": "the file", "headers": {"accept-ranges": {"schema": {"const": "bytes"}}},
         "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
_PART = {**_FILE, "description": "one byte range of the file"}
_HEAD = {200: {"description": "the file's headers"}, 206: {"description": "one range's headers"}}
_TASKS, _VIDEOS = "/api/v3/contents/generations/tasks", "/v1/videos"
_PAGE = {"type": "integer", "minimum": 1, "maximum": 500, "default": 1}


def operations() -> dict[tuple[str, str], Operation]:
    made = ("Made: queued for a worker. Fetching and checking the inputs happen before this answer; "
            "generating happens after it.")  # fmt: skip
    creates = (400, 401, 413, 429)
    content = (400, 401, 404, 409, 416)
    return {
        ("post", _TASKS): Operation("createContentGenerationTask", "Queue a video generation task",
                                    {200: _json("ArkTaskId", made)}, (*creates, 404), body=("ArkTaskCreate",)),
        ("get", _TASKS): Operation("listContentGenerationTasks", "This key's tasks, newest first",
                                   {200: _json("ArkTaskList", "one page of tasks")}, (400, 401), query=(
            _query("page_num", _PAGE, "the page, from 1"),
            _query("page_size", {**_PAGE, "default": 10}, "tasks per page"),
            _query("filter.status", {"type": "array", "items": {"enum": list(STATUSES)}}, "only these", True),
            _query("filter.task_ids", {"type": "array", "items": {"type": "string"}}, "only these ids", True),
            _query("filter.model", {"type": "string"}, "only tasks of this model"))),
        ("get", _TASKS + "/{task_id}"): Operation("getContentGenerationTask", "A task's status and result",
                                                  {200: _json("ArkTask", "the task")}, (401, 404)),
        ("delete", _TASKS + "/{task_id}"): Operation(
            "deleteContentGenerationTask", "Cancel a queued task or delete a finished one",
            {200: {"description": "done", "content": {"application/json": {"schema": {"type": "object",
                                                                                       "maxProperties": 0}}}}},
            (401, 404, 409)),
        ("post", _VIDEOS): Operation("createVideo", "Queue a video", {200: _json("Video", made)}, creates,
                                     "openai", ("VideoCreate", "VideoCreateForm")),
        ("get", _VIDEOS): Operation("listVideos", "This key's videos", {200: _json("VideoList", "one page")},
                                    (400, 401), "openai", query=(
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "videos per page"),
            _query("after", {"type": "string", "maxLength": bounds.MAX_NAME_CHARS}, "the id to list after"),
            _query("order", {"enum": ["asc", "desc"], "default": "desc"}, "by creation time"))),
        ("get", _VIDEOS + "/{video_id}"): Operation("retrieveVideo", "A video's status",
                                                    {200: _json("Video", "the video")}, (401, 404), "openai"),
        ("delete", _VIDEOS + "/{video_id}"): Operation("deleteVideo", "Cancel a queued video or delete a finished one",
                                                       {200: _json("VideoDeleted", "deleted")}, (401, 404, 409),
                                                       "openai"),
        ("get", _VIDEOS + "/{video_id}/content"): Operation(
            "downloadVideoContent", "The clip, its thumbnail or its spritesheet", {200: _FILE, 206: _PART}, content,
            "openai", query=(_query("variant", {"enum": ["video", "thumbnail", "spritesheet"], "default": "video"},
                                    "which file"),), headers=(_RANGE,)),
        ("head", _VIDEOS + "/{video_id}/content"): Operation(
            "headVideoContent", "The headers of the content", _HEAD, content, "openai",
            query=(_query("variant", {"enum": ["video", "thumbnail", "spritesheet"], "default": "video"},
                          "which file"),), headers=(_RANGE,)),
        ("post", _VIDEOS + "/{video_id}/remix"): Operation(
            "remixVideo", "A new take of a completed video (its first frame, size, length and seed) with a new prompt",
            {200: _json("Video", made)}, (*creates, 404, 409), "openai", ("VideoRemix", "VideoRemixForm")),
        ("post", _VIDEOS + "/edits"): Operation(
            "editVideo", "A completed or uploaded video made again from its first frame with a new prompt",
            {200: _json("Video", made)}, (*creates, 404, 409), "openai", ("VideoEdit", "VideoEditForm")),
        ("post", _VIDEOS + "/extensions"): Operation(
            "extendVideo", "A completed or uploaded video continued by `seconds` more",
            {200: _json("Video", made)}, (*creates, 404, 409), "openai", ("VideoExtend", "VideoExtendForm")),
        ("get", "/api/jobs"): Operation("listJobs", "This key's jobs of both APIs, for the web page",
                                        {200: _json("JobList", "one page")}, (400, 401), query=(
            _query("page_num", _PAGE, "the page, from 1"),
            _query("page_size", {**_PAGE, "maximum": 100, "default": 20}, "jobs per page"))),
        ("get", "/api/jobs/{job_id}"): Operation("getJob", "One job, of either API",
                                                 {200: _json("Job", "the job")}, (401, 404)),
        ("delete", "/api/jobs/{job_id}"): Operation(
            "deleteJob", "Cancel a queued job or delete a finished one",
            {200: {"description": "done", "content": {"application/json": {"schema": {"type": "object",
                                                                                       "maxProperties": 0}}}}},
            (401, 404, 409)),
        ("post", "/api/live"): Operation(
            "createLive", "Start a live stream: made chunk by chunk while it plays, until stopped, its max_seconds, "
            "or nobody has watched it for the server's idle time", {201: _json("Live", "started: queued for a worker; "
            "play stream_url")}, (400, 401, 413, 429), body=("LiveCreate",)),
        ("get", "/api/live/{job_id}"): Operation("getLive", "A live stream's status, seconds made and prompts",
                                                 {200: _json("Live", "the live stream")}, (401, 404)),
        ("post", "/api/live/{job_id}/prompt"): Operation(
            "steerLive", "The prompt from the next chunk on (a prompt starting with [shot] cuts to a new shot)",
            {200: _json("LiveSteered", "asked")}, (400, 401, 404, 409), body=("LivePrompt",)),
        ("post", "/api/live/{job_id}/stop"): Operation("stopLive", "End the stream after the chunk being made",
                                                       {200: _json("Live", "stopping")}, (401, 404)),
        ("get", "/live/{job_id}/stream.mp4"): Operation(
            "streamLive", "The live stream as a fragmented mp4, sent while it is made (from its start); its random id "
            "is the capability. Once it has ended: a redirect to the finished, signed file",
            {200: {"description": "the stream, until it ends", "content": {"video/mp4": {"schema": {
                "type": "string", "contentMediaType": "video/mp4"}}}},
             307: {"description": "it has ended: the finished file", "headers": {"location": {
                 "schema": {"type": "string"}}}}}, (404,), auth=False),
        ("get", "/files/{job_id}/{name}"): Operation(
            "getFile", "A finished job's file; its random id is the capability, as with a signed URL",
            {200: _FILE, 206: _PART}, (404, 416), headers=(_RANGE,), auth=False),
        ("head", "/files/{job_id}/{name}"): Operation("headFile", "A file's headers", _HEAD, (404, 416),
                                                      headers=(_RANGE,), auth=False),
        ("get", "/health"): Operation("health", "Up, and how many workers run", {200: {
            "description": "up", "content": {"application/json": {"schema": {
                "type": "object", "required": ["status", "workers"],
                "properties": {"status": {"const": "ok"}, "workers": {"type": "integer", "minimum": 0}}}}}}},
            (), auth=False),
        ("get", "/favicon.ico"): Operation("favicon", "No icon", {204: {"description": "none"}}, (), auth=False),
        ("get", "/"): Operation("page", "The web page", {200: {"description": "the page", "content": {
            "text/html": {"schema": {"type": "string"}}}}}, (), auth=False),
    }


_FILE_NAMES = ["video.mp4", "last_frame.png", "thumbnail.jpg", "spritesheet.jpg"]


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    schemas = {"job_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "name": {"enum": _FILE_NAMES}}
    files = path.startswith(("/files/", "/live/"))  # other ids are only looked up: any text, a 404 if unknown
    return [{"name": n, "in": "path", "required": True, "schema": schemas[n] if files else {"type": "string"}}
            for n in names]


def _operation(path: str, op: Operation, description: str | None) -> dict[str, Any]:
    error = "OpenAIError" if op.api == "openai" else "ArkError"
    responses: dict[str, Any] = {str(s): r for s, r in op.ok.items()}
    for status in sorted(op.errors):
        if status == 416:  # sent by the file server with no body
            responses["416"] = {"description": _REASONS[416], "headers": {"content-range": {"schema": {
                "type": "string"}, "description": "bytes */SIZE"}}}  # fmt: skip
            continue
        response = {"description": _REASONS[status], "content": {"application/json": {"schema": _ref(error)}}}
        if status == 429:
            response["headers"] = {"retry-after": {"schema": {"type": "integer"}, "description": "seconds"}}
        responses[str(status)] = response
    out: dict[str, Any] = {"operationId": op.id, "summary": op.summary, "tags": [op.api if op.auth else "server"],
                           "parameters": [*_path_parameters(path), *op.query, *op.headers], "responses": responses}
    if description:
        out["description"] = description
    if op.body:
        types = {"application/json": {"schema": _ref(op.body[0])}}
        if len(op.body) > 1:
            types["multipart/form-data"] = {"schema": _ref(op.body[1])}
            types["application/x-www-form-urlencoded"] = {"schema": _ref(op.body[1])}
        out["requestBody"] = {"required": True, "content": types}
    out["security"] = [{"bearer": []}] if op.auth else []
    return out


def document(app: FastAPI, card: Capabilities) -> dict[str, Any]:
    """The OpenAPI document of `app`; every route of the app must be described in `operations()`."""
    described = operations()
    with warnings.catch_warnings():  # FastAPI repeats an operation id for a GET + HEAD route; ours replace them
        warnings.simplefilter("ignore")
        inferred = get_openapi(title=app.title, version=app.version, routes=app.routes)["paths"]
    paths: dict[str, dict[str, Any]] = {}
    for path, methods in inferred.items():
        for method, found in methods.items():
            op = described.get((method, path))
            if op is None:
                raise KeyError(f"{method.upper()} {path} is not described in openseedance.serve.openapi")
            paths.setdefault(path, {})[method] = _operation(path, op, found.get("description"))
    return {
        "openapi": VERSION,
        "info": {"title": app.title, "version": app.version, "description": _ABOUT},
        "paths": paths,
        "components": {
            "schemas": {**_ark_schemas(), **_openai_schemas(card), **_live_schemas()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key of this server"}},
        },
    }
