"""The server's edges, tried as a careless or a hostile client would: every bad field is a 4xx that
names it (never a 500), a refused request stores and writes nothing, the official clients' forms are
read as their JSON forms, and the HTTP details clients rely on are there (Allow, Retry-After, HEAD,
413 for any oversized body, /health without process ids)."""

from __future__ import annotations

import base64
import io
import json
import sqlite3

import httpx
import pytest
from openai import BadRequestError, OpenAI
from PIL import Image

from serve_util import KEY, Server, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AUTH = {"authorization": f"Bearer {KEY}"}
TASKS = "/api/v3/contents/generations/tasks"
HUGE = "9" * 5000
TEXT = [{"type": "text", "text": "a bell rings"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("edges"), args=("--max-pending", "50")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def clip(server, client) -> str:
    """The id of a completed 1 s OpenAI video."""
    video = client.videos.create(prompt="a green triangle spins", seconds="1", size="64x64")
    done = wait_for(lambda: (v := client.videos.retrieve(video.id)).status in ("completed", "failed") and v, 180)
    assert done.status == "completed", done.error
    return video.id


def _png(rgb=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _raw(**fields: str) -> str:
    """An Ark body with `fields` written into it as given (numbers no JSON library would write)."""
    given = "".join(f', "{name}": {value}' for name, value in fields.items())
    return f'{{"model": "m", "content": {json.dumps(TEXT)}{given}}}'


def _post(srv: Server, path: str, body: dict | str | bytes, **kwargs) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = {**AUTH, "content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(srv.url + path, content=content, headers=headers, timeout=60, **kwargs)


def _refused(response: httpx.Response, param: str | None, status: int = 400) -> dict:
    """The error of a refused request: its status, the field it names, and no huge value echoed back."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if param is not None:
        assert error["param"] == param, error
    assert len(response.text) < 1000, response.text[:300]
    return error


def _stored(srv: Server) -> tuple[int, list[str]]:
    """(jobs in the store, folders under the data dir's files folder)."""
    with sqlite3.connect(srv.data / "jobs.db") as db:
        count = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    files = srv.data / "files"
    return count, sorted(p.name for p in files.iterdir()) if files.exists() else []


def test_huge_integers_in_every_field(server):
    cases = [
        (_raw(seed=HUGE), "seed"),  # a JSON number
        (_raw(duration="1e999"), "duration"),  # inf as a float
        ({"model": "m", "content": TEXT, "duration": HUGE}, "duration"),  # numeric strings
        ({"model": "m", "content": TEXT, "frames": HUGE}, "frames"),
        ({"model": "m", "content": TEXT, "framespersecond": HUGE}, "framespersecond"),
        ({"model": "m", "content": TEXT, "seed": HUGE}, "seed"),
        ({"model": "m", "content": [{"type": "text", "text": f"a bell --dur {HUGE}"}]}, "--duration"),
        ({"model": "m", "content": [{"type": "text", "text": f"a bell --fps {HUGE}"}]}, "--framespersecond"),
        ({"model": "m", "content": TEXT, "resolution": HUGE + "p"}, "resolution"),
        ({"model": "m", "content": TEXT, "ratio": HUGE + ":1"}, "ratio"),
        ({"model": "m", "content": TEXT, "ratio": "1:" + "9" * 300}, "ratio"),
    ]
    for body, param in cases:
        _refused(_post(server, TASKS, body), param)
    for body, param in [({"prompt": "x", "size": f"{HUGE}x64"}, "size"), ({"prompt": "x", "seconds": HUGE}, "seconds"),
                        ('{"prompt": "x", "seconds": ' + HUGE + "}", "seconds")]:  # fmt: skip
        error = _refused(_post(server, "/v1/videos", body), param)
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    # and in the query strings of the listings
    _refused(httpx.get(f"{server.url}{TASKS}?page_size={HUGE}", headers=AUTH), "page_size")
    _refused(httpx.get(f"{server.url}/v1/videos?limit={HUGE}", headers=AUTH), "limit")


def test_huge_priority_and_expiry_store_nothing(server):
    before = _stored(server)
    for field in ("priority", "execution_expires_after"):
        for value in (HUGE, str(2**63), str(10**12), "1e308"):
            _refused(_post(server, TASKS, _raw(**{field: value})), field)
        _refused(_post(server, TASKS, {"model": "m", "content": TEXT, field: str(2**63)}), field)
    assert _stored(server) == before


def test_zero_size(server, client):
    for size in ("0x0", "0x64", "64x0"):
        with pytest.raises(BadRequestError) as e:
            client.videos.create(prompt="a bell rings", size=size)
        assert e.value.body["param"] == "size", e.value.body
    for ratio in ("0:0", "0:1"):
        _refused(_post(server, TASKS, {"model": "m", "content": TEXT, "ratio": ratio}), "ratio")


def test_deeply_nested_json(server):
    for path in (TASKS, "/v1/videos"):
        error = _refused(_post(server, path, "[" * 100_000 + "]" * 100_000), None)
        assert "32" in error["message"]
        deep = _raw(prompt='"x"', seed="[" * 40 + "]" * 40)
        assert "32" in _refused(_post(server, path, deep), None)["message"]
    # 32 levels are fine: the request is refused for its field, not its depth
    body = {"model": "m", "content": TEXT, "seed": json.loads("[" * 30 + "]" * 30)}
    _refused(_post(server, TASKS, body), "seed")


def test_odd_files_paths(server):
    for path in ("%00/video.mp4", "a%00b/video.mp4", "x" * 5000 + "/video.mp4", "%ff%fe/video.mp4",
                 "%ED%A0%80/video.mp4", "..%2f..%2fjobs.db/video.mp4", "x/video.mp4%00", "x/..%2f..%2fjobs.db",
                 "%2e%2e/video.mp4"):  # fmt: skip
        response = httpx.get(f"{server.url}/files/{path}", timeout=30)
        assert response.status_code == 404, (path[:40], response.text)


def test_lone_surrogates_are_refused_and_listing_still_works(server, client):
    error = _refused(_post(server, "/v1/videos", '{"prompt": "a bell \\ud800 rings", "seconds": "1"}'), "prompt")
    assert "surrogate" in error["message"]
    _refused(_post(server, TASKS, '{"model": "m", "content": [{"type": "text", "text": "a \\udfff"}]}'),
             "content[0].text")  # fmt: skip
    _refused(_post(server, TASKS, _raw(service_tier='"\\ud800"')), "service_tier")
    assert httpx.get(f"{server.url}/v1/videos", headers=AUTH, timeout=30).status_code == 200
    client.videos.list()


def test_bracket_form_input_reference_is_the_first_frame(server, client):
    png = _png((30, 60, 220))
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    video = client.videos.create(prompt="a blue square", seconds="1", size="64x64",
                                 extra_body={"input_reference": {"image_url": url}})  # fmt: skip
    with sqlite3.connect(server.data / "jobs.db") as db:
        spec = json.loads(db.execute("SELECT spec FROM jobs WHERE id = ?", (video.id,)).fetchone()[0])
    [reference] = spec["references"]
    assert (reference["kind"], reference["role"]) == ("image", "first_frame")
    assert (server.data / "files" / video.id / reference["file"]).read_bytes() == png
    with pytest.raises(BadRequestError) as e:  # and an unknown part of it is named, not dropped
        client.videos.create(prompt="x", extra_body={"input_reference": {"mask_url": url}})
    assert e.value.body["param"] == "input_reference.mask_url"


def test_unknown_fields_are_named(server, client):
    image = {"url": "data:image/png;base64," + base64.b64encode(_png()).decode()}
    for body, param in [
        ({"model": "m", "content": TEXT, "style": "noir"}, "style"),
        ({"model": "m", "content": [{"type": "text", "text": "x", "weight": 2}]}, "content[0].weight"),
        ({"model": "m", "content": [*TEXT, {"type": "image_url", "image_url": {**image, "detail": "high"}}]},
         "content[1].image_url.detail"),
        ({"model": "m", "content": [{"type": "draft_task", "draft_task": {"id": "cgt-x", "of": "y"}}]},
         "content[0].draft_task.of"),
    ]:  # fmt: skip
        error = _refused(_post(server, TASKS, body), param)
        assert "unknown field" in error["message"]
    _refused(_post(server, "/v1/videos", {"prompt": "x", "quality": "hd"}), "quality")
    with pytest.raises(BadRequestError) as e:  # multipart, as the client sends it
        client.videos.create(prompt="x", extra_body={"style": "noir"})
    assert e.value.body["param"] == "style"
    _refused(_post(server, "/v1/videos/video_x/remix", {"prompt": "x", "seconds": "2"}), "seconds")
    # the official Ark client sends every field it knows, unset ones as null: still accepted
    nulls = {name: None for name in ("safety_identifier", "callback_url", "return_last_frame", "service_tier",
                                     "execution_expires_after", "priority", "generate_audio", "draft", "camera_fixed",
                                     "watermark", "seed", "resolution", "ratio", "duration", "frames", "tools",
                                     "output_format", "omni_reference_task_type")}  # fmt: skip
    response = _post(server, TASKS, {"model": "m", "content": [{"type": "text", "text": "a bell --dur 1"}], **nulls})
    assert response.status_code == 200, response.text


def test_sizes_the_sdk_offers_get_an_openai_error_naming_size(client):
    for size in ("720x1280", "1280x720", "1024x1792", "1792x1024"):
        with pytest.raises(BadRequestError) as e:
            client.videos.create(prompt="a bell rings", size=size)
        error = e.value.body
        assert (error["param"], error["code"], error["type"]) == ("size", "invalid_value", "invalid_request_error")
        assert "multiple of 8" in error["message"] and "64x64" in error["message"], error


def test_edit(server, client, clip):
    """The official client uploads the clip to edit; a JSON body may name a video of this server."""
    source = client.videos.download_content(clip).read()
    edited = client.videos.edit(prompt="the triangle turns red", video=("clip.mp4", source, "video/mp4"))
    assert (edited.size, edited.seconds) == ("64x64", "1")
    by_id = _post(server, "/v1/videos/edits", {"prompt": "the triangle turns blue", "video": {"id": clip}})
    assert by_id.status_code == 200 and by_id.json()["remixed_from_video_id"] == clip, by_id.text
    for video in (edited.id, by_id.json()["id"]):
        done = wait_for(lambda v=video: (r := client.videos.retrieve(v)).status in ("completed", "failed") and r, 180)
        assert done.status == "completed", done.error
    with pytest.raises(BadRequestError) as e:
        client.videos.edit(prompt="x", video=("clip.mp4", b"not a clip", "video/mp4"))
    assert e.value.body["param"] == "video"
    _refused(_post(server, "/v1/videos/edits", {"prompt": "x", "video": {"id": "video_nope"}}), "video", 404)
    _refused(_post(server, "/v1/videos/edits", {"prompt": "x", "video": {"id": clip, "at": 1}}), "video.at")


def test_405_names_the_allowed_methods(server):
    for method, path in (("PUT", "/v1/videos"), ("PATCH", TASKS), ("DELETE", "/files/x/video.mp4"),
                         ("POST", "/health")):  # fmt: skip
        response = httpx.request(method, server.url + path, headers=AUTH, timeout=30)
        assert response.status_code == 405 and response.headers.get("allow"), (path, response.headers)
        assert method not in response.headers["allow"]
    assert httpx.put(server.url + "/v1/videos", headers=AUTH).json()["error"]["type"] == "invalid_request_error"


def test_429_says_when_to_retry(tmp_path):
    srv = Server(tmp_path / "srv", args=("--workers", "0", "--max-pending", "1")).start()
    try:
        assert _post(srv, TASKS, {"model": "m", "content": TEXT}).status_code == 200
        for path, body in ((TASKS, {"model": "m", "content": TEXT}), ("/v1/videos", {"prompt": "x", "seconds": "1"})):
            response = _post(srv, path, body)
            assert response.status_code == 429 and int(response.headers["retry-after"]) > 0, response.text
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        srv.stop()


def test_head_on_result_files(server, clip):
    whole = httpx.get(f"{server.url}/files/{clip}/video.mp4", timeout=30)
    assert whole.status_code == 200 and whole.content
    head = httpx.head(f"{server.url}/files/{clip}/video.mp4", timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(whole.content)) and head.headers["content-type"] == "video/mp4"
    part = httpx.head(f"{server.url}/files/{clip}/video.mp4", headers={"range": "bytes=0-9"}, timeout=30)
    assert part.status_code == 206 and part.headers["content-length"] == "10" and part.content == b""
    content = httpx.head(f"{server.url}/v1/videos/{clip}/content", headers=AUTH, timeout=30)
    assert content.status_code == 200 and content.headers["content-length"] == str(len(whole.content))
    assert httpx.head(f"{server.url}/files/{clip}/nope.mp4", timeout=30).status_code == 404


def test_oversized_chunked_multipart_is_413(server):
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="input_reference"; filename="a.png"\r\n\r\n'
        for _ in range(66):
            yield b"\0" * 2**20

    before = _stored(server)
    response = httpx.post(f"{server.url}/v1/videos", content=chunks(), timeout=120,
                          headers={**AUTH, "content-type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert _stored(server) == before


def test_health_shows_no_process_ids(server):
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health == {"status": "ok", "workers": 1}


def test_the_web_page_lists_jobs_of_both_apis(server, client):
    task = _post(server, TASKS, {"model": "m", "content": [{"type": "text", "text": "a drum --dur 1"}]}).json()
    video = client.videos.create(prompt="a cymbal", seconds="1", size="64x64")
    listed = httpx.get(f"{server.url}/api/jobs?page_size=100", headers=AUTH, timeout=30).json()
    by_id = {item["id"]: item for item in listed["items"]}
    assert by_id[task["id"]]["api"] == "ark" and by_id[video.id]["api"] == "openai"
    assert by_id[video.id]["prompt"] == "a cymbal" and listed["total"] >= 2
    one = httpx.get(f"{server.url}/api/jobs/{video.id}", headers=AUTH, timeout=30).json()
    assert one["id"] == video.id
    assert httpx.get(f"{server.url}/api/jobs/{video.id}", timeout=30).status_code == 401
