"""`openseedance serve` with the official clients: `volcenginesdkarkruntime.Ark` and `openai.OpenAI`
against a real server process on loopback, from request to a playable mp4 with audio; bad input
answered with a 4xx in each API's shape."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import av
import httpx
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import ArkAPIStatusError

from openseedance import provenance
from serve_util import KEY, Server, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Hooks(BaseHTTPRequestHandler):
    """A callback receiver: records each POSTed body; answers 500 to the first one."""

    received: ClassVar[list[dict]] = []
    failed_once = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        cls = type(self)
        if not cls.failed_once:
            cls.failed_once = True
            self.send_response(500)
        else:
            cls.received.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def hooks():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"), args=("--callback-host", "127.0.0.1", "--max-pending", "4"))
    yield srv.start()
    srv.stop()


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    """No workers: jobs stay queued (for cancelling, limits and expiry)."""
    srv = Server(tmp_path_factory.mktemp("idle"), args=("--workers", "0", "--max-pending", "3"))
    yield srv.start()
    srv.stop()


def ark(srv: Server, key: str = KEY) -> Ark:
    return Ark(base_url=f"{srv.url}/api/v3", api_key=key, max_retries=0)


def openai(srv: Server, key: str = KEY) -> OpenAI:
    return OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0)


def _png_url(rgb=(200, 40, 40), size=(64, 64)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _check_mp4(data: bytes, seconds: float, size: tuple[int, int]) -> None:
    """H.264 video and AAC audio of the expected length and size."""
    with av.open(io.BytesIO(data)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.codec_context.width, video.codec_context.height) == size
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert abs(len(frames) / float(video.average_rate) - seconds) < 0.1
    assert np.std(np.stack(frames)) > 1.0  # a picture, not a blank


def _wait_ark(client: Ark, task_id: str, timeout: float = 180.0):
    return wait_for(lambda: (t := client.content_generation.tasks.get(task_id=task_id)).status
                    not in ("queued", "running") and t, timeout)  # fmt: skip


def test_ark_client_from_request_to_mp4(server, hooks, tmp_path):
    client = ark(server)
    created = client.content_generation.tasks.create(
        model="openseedance",
        content=[{"type": "text", "text": "a red circle bounces and a bell rings --dur 2 --seed 7 --rt 16:9"}],
        generate_audio=True, return_last_frame=True, callback_url=hooks,
    )  # fmt: skip
    assert created.id.startswith("cgt-")
    task = _wait_ark(client, created.id)
    assert task.status == "succeeded", task.error
    assert (task.seed, task.duration, task.ratio, task.generate_audio) == (7, 2, "16:9", True)
    assert task.usage.completion_tokens > 0
    video = httpx.get(task.content.video_url, timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as c:
        size = (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height)
    assert size[0] > size[1]  # 16:9
    _check_mp4(video.content, 2.0, size)
    clip_path = tmp_path / "clip.mp4"
    clip_path.write_bytes(video.content)
    report = provenance.verify(clip_path)  # marked with this task's id, and signed
    assert report.video.found and report.audio.found and report.manifest.intact
    assert provenance.Payload.from_hex(report.payload) == provenance.Payload.make("bundled:tiny", created.id)
    last = httpx.get(task.content.last_frame_url, timeout=30)
    assert last.status_code == 200 and Image.open(io.BytesIO(last.content)).size == size

    listed = client.content_generation.tasks.list(page_size=10, status="succeeded", task_ids=[created.id])
    assert listed.total == 1 and listed.items[0].id == created.id
    # callbacks: queued, running, succeeded in order (the first delivery failed once and was retried)
    statuses = wait_for(lambda: [b["status"] for b in Hooks.received if b["id"] == created.id]
                        if len([b for b in Hooks.received if b["id"] == created.id]) >= 3 else None, 30)  # fmt: skip
    assert statuses == ["queued", "running", "succeeded"]

    client.content_generation.tasks.delete(created.id)  # finished: the record goes
    with pytest.raises(ArkAPIStatusError) as e:
        client.content_generation.tasks.get(task_id=created.id)
    assert e.value.status_code == 404
    assert httpx.get(task.content.video_url).status_code == 404  # and its files


def test_ark_first_frame_and_draft(server):
    client = ark(server)
    created = client.content_generation.tasks.create(
        model="openseedance", duration=1, ratio="adaptive", draft=True,
        content=[{"type": "text", "text": "a blue square slides"},
                 {"type": "image_url", "image_url": {"url": _png_url((30, 60, 220), (96, 64))}}],
    )  # fmt: skip
    draft = _wait_ark(client, created.id)
    assert draft.status == "succeeded", draft.error
    width, height = (int(v) for v in draft.ratio.split(":"))
    assert draft.draft is True and width > height  # the first frame's landscape shape
    final = client.content_generation.tasks.create(
        model="openseedance", content=[{"type": "draft_task", "draft_task": {"id": created.id}}])
    task = _wait_ark(client, final.id)
    assert task.status == "succeeded" and task.seed == draft.seed and not task.draft


def openai_api_json(srv: Server, path: str, body: dict):
    """A JSON call the client cannot make (it sends `video` only as a file upload)."""
    response = httpx.post(srv.url + path, json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    return openai(srv).videos.retrieve(response.json()["id"])


def test_openai_client_from_request_to_mp4(server):
    client = openai(server)
    video = client.videos.create(prompt="a green triangle spins and a drum beats", seconds="2", size="64x64")
    assert video.status == "queued" and video.object == "video"
    done = wait_for(lambda: (v := client.videos.retrieve(video.id)).status in ("completed", "failed") and v, 180)
    assert done.status == "completed" and done.progress == 100, done.error
    content = client.videos.download_content(video.id)
    _check_mp4(content.read(), 2.0, (64, 64))
    thumb = client.videos.download_content(video.id, variant="thumbnail").read()
    assert Image.open(io.BytesIO(thumb)).format == "JPEG"

    remix = client.videos.remix(video.id, prompt="a green triangle spins faster")
    assert remix.remixed_from_video_id == video.id
    later = client.videos.create(prompt="a yellow star", seconds="1", size="64x64",
                                 input_reference=("first.png", base64.b64decode(_png_url().split(",")[1]), "image/png"))
    ids = [v.id for v in client.videos.list(limit=100)]
    assert ids[:3] == [later.id, remix.id, video.id]  # newest first
    page = client.videos.list(limit=1, after=remix.id)
    assert [v.id for v in page.data] == [video.id]
    for v in (remix, later):
        assert wait_for(lambda v=v: client.videos.retrieve(v.id).status in ("completed", "failed")
                        and client.videos.retrieve(v.id), 180).status == "completed"  # fmt: skip
    longer = openai_api_json(server, "/v1/videos/extensions",
                             {"prompt": "the triangle keeps spinning", "seconds": "1", "video": {"id": video.id}})
    uploaded = client.videos.extend(prompt="and then stops", seconds="1",
                                    video=("clip.mp4", client.videos.download_content(video.id).read(), "video/mp4"))
    for v in (longer, uploaded):
        v = wait_for(lambda v=v: (r := client.videos.retrieve(v.id)).status in ("completed", "failed") and r, 180)
        assert v.status == "completed" and v.seconds == "3", v.error  # the whole clip: 2 s given + 1 s new
        _check_mp4(client.videos.download_content(v.id).read(), 3.0, (64, 64))
    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    with pytest.raises(Exception) as e:
        client.videos.retrieve(video.id)
    assert getattr(e.value, "status_code", None) == 404


def test_cancel_limits_and_expiry_on_an_idle_server(idle):
    client = ark(idle)
    text = [{"type": "text", "text": "a bell rings"}]
    first = client.content_generation.tasks.create(model="m", content=text)
    soon = client.content_generation.tasks.create(model="m", content=text, execution_expires_after=1)
    client.content_generation.tasks.create(model="m", content=text)
    with pytest.raises(ArkAPIStatusError) as e:  # a fourth pending task is one too many
        client.content_generation.tasks.create(model="m", content=text)
    assert e.value.status_code == 429 and e.value.code == "RateLimitExceeded.QueuedTasks"
    client.content_generation.tasks.delete(first.id)
    assert client.content_generation.tasks.get(task_id=first.id).status == "cancelled"
    assert wait_for(lambda: client.content_generation.tasks.get(task_id=soon.id).status == "expired", 20)
    listed = client.content_generation.tasks.list(status="queued")
    assert listed.total == 1
    assert client.content_generation.tasks.list(page_num=2, page_size=2).items  # 3 tasks, 2 per page


BROKEN_PNG = b"\x89PNG\r\n\x1a\nxx"
HOSTILE = [
    # (description, request kwargs, expected status, words the message must contain)
    ("no key", {"json": {"model": "m", "content": [{"type": "text", "text": "x"}]}, "headers": {}}, 401, "API key"),
    ("bad key", {"json": {"model": "m", "content": [{"type": "text", "text": "x"}]},
                 "headers": {"authorization": "Bearer nope"}}, 401, "not valid"),
    ("not json", {"content": b"{model", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ("json list", {"json": [1, 2]}, 400, "object"),
    ("no model", {"json": {"content": [{"type": "text", "text": "x"}]}}, 400, "model"),
    ("no content", {"json": {"model": "m", "content": []}}, 400, "content"),
    ("unknown type", {"json": {"model": "m", "content": [{"type": "pdf_url"}]}}, 400, "pdf_url"),
    ("wrong role", {"json": {"model": "m", "content": [{"type": "text", "text": "x"}, {"type": "audio_url",
                    "audio_url": {"url": "data:audio/wav;base64,AAAA"}, "role": "first_frame"}]}}, 400, "role"),
    ("seed as text", {"json": {"model": "m", "seed": "abc", "content": [{"type": "text", "text": "x"}]}}, 400, "seed"),
    ("duration 100", {"json": {"model": "m", "duration": 100, "content": [{"type": "text", "text": "x"}]}}, 400,
     "duration"),
    ("huge resolution", {"json": {"model": "m", "resolution": "1080p", "content": [{"type": "text", "text": "x"}]}},
     400, "multiple of"),
    ("bad ratio", {"json": {"model": "m", "ratio": "wide", "content": [{"type": "text", "text": "x"}]}}, 400, "ratio"),
    ("unknown @ref", {"json": {"model": "m", "content": [{"type": "text", "text": "@image1 waves"}]}}, 400,
     "@image1"),
    ("corrupt image", {"json": {"model": "m", "content": [{"type": "text", "text": "x"}, {"type": "image_url",
                       "image_url": {"url": "data:image/png;base64," + base64.b64encode(BROKEN_PNG).decode()}}]}},
     400, "image"),
    ("png as video", {"json": {"model": "m", "content": [{"type": "text", "text": "x"}, {"type": "video_url",
                      "video_url": {"url": _png_url()}}]}}, 400, "video"),
    ("metadata url", {"json": {"model": "m", "content": [{"type": "text", "text": "x"}, {"type": "image_url",
                      "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}]}}, 400, "http"),
    ("file url", {"json": {"model": "m", "content": [{"type": "text", "text": "x"}, {"type": "image_url",
                  "image_url": {"url": "file:///etc/passwd"}}]}}, 400, "file"),
    ("private callback", {"json": {"model": "m", "callback_url": "http://10.0.0.1/hook",
                                   "content": [{"type": "text", "text": "x"}]}}, 400, "callback_url"),
    ("tools", {"json": {"model": "m", "tools": [{"type": "web_search"}], "content": [{"type": "text", "text": "x"}]}},
     400, "tools"),
]  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_ark_requests_get_a_clear_4xx(idle, case):
    _, kwargs, status, words = case
    kwargs = {"headers": {"authorization": f"Bearer {KEY}"}, **kwargs}
    if "authorization" not in kwargs["headers"] and kwargs["headers"] != {}:
        kwargs["headers"] = {**kwargs["headers"], "authorization": f"Bearer {KEY}"}
    response = httpx.post(f"{idle.url}/api/v3/contents/generations/tasks", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and words.lower() in error["message"].lower(), error


def test_oversized_bodies_and_unknown_ids(idle):
    auth = {"authorization": f"Bearer {KEY}"}
    huge = b"x" * (65 * 2**20)
    response = httpx.post(f"{idle.url}/api/v3/contents/generations/tasks", content=huge, headers=auth, timeout=60)
    assert response.status_code == 413
    response = httpx.post(f"{idle.url}/v1/videos", content=huge, timeout=60,
                          headers={**auth, "content-type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert response.status_code == 413 and response.json()["error"]["type"] == "invalid_request_error"
    for path in ("/api/v3/contents/generations/tasks/cgt-nope", "/v1/videos/video_nope", "/v1/videos/x/content"):
        response = httpx.get(idle.url + path, headers=auth, timeout=30)
        assert response.status_code == 404 and response.json()["error"]["message"]
    response = httpx.get(f"{idle.url}/api/v3/contents/generations/tasks?page_size=0", headers=auth, timeout=30)
    assert response.status_code == 400


def test_hostile_openai_requests(idle):
    client = openai(idle)
    for kwargs, words in (({"prompt": ""}, "prompt"), ({"prompt": "x", "size": "huge"}, "size"),
                          ({"prompt": "x", "size": "1000x1000"}, "multiple of"),
                          ({"prompt": "x", "seconds": "soon"}, "seconds"),
                          ({"prompt": "x", "input_reference": ("a.png", b"not an image", "image/png")}, "image")):
        with pytest.raises(Exception) as e:
            client.videos.create(**kwargs)
        assert e.value.status_code == 400 and words in str(e.value).lower(), e.value
    with pytest.raises(Exception) as e:
        openai(idle, key="wrong").videos.list()
    assert e.value.status_code == 401
    video = client.videos.create(prompt="a bell rings", seconds="1", size="64x64")
    with pytest.raises(Exception) as e:
        client.videos.download_content(video.id)
    assert e.value.status_code == 409  # not ready
    assert client.videos.delete(video.id).deleted  # a queued video is cancelled and removed


def test_real_faces_are_refused_as_references(idle):
    data = pytest.importorskip("skimage.data")
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((256, 256)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(ArkAPIStatusError) as e:
        ark(idle).content_generation.tasks.create(model="m", content=[
            {"type": "text", "text": "she waves"}, {"type": "image_url", "image_url": {"url": url}}])  # fmt: skip
    assert e.value.status_code == 400 and "face" in e.value.message


def _data_url(path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def test_ark_reference_image_and_voice(server, tmp_path):
    from openseedance import media
    from openseedance.stage.render import portrait, voice_sample
    from openseedance.stage.scene import Identity, Voice

    image = media.write_image(tmp_path / "p.png", portrait(Identity("yellow", "triangle", "striped", "round")))
    voice = media.write_audio(tmp_path / "v.wav", voice_sample(Voice("deep", "hollow"), seconds=2.5), 16000)
    client = ark(server)
    content = [{"type": "text", "text": "@image1 jumps twice and says hello in the voice of @audio1 --dur 2"},
               {"type": "image_url", "image_url": {"url": _data_url(image, "image/png")}, "role": "reference_image"},
               {"type": "audio_url", "audio_url": {"url": _data_url(voice, "audio/wav")}, "role": "reference_audio"}]
    created = client.content_generation.tasks.create(model="openseedance", content=content)
    task = _wait_ark(client, created.id)
    assert task.status == "succeeded", task.error
    _check_mp4(httpx.get(task.content.video_url, timeout=30).content, 2.0, (64, 64))


def test_references_the_model_cannot_use_are_refused(idle, tmp_path):
    from openseedance import media
    from openseedance.media import Clip

    moving = media.write_video(tmp_path / "m.mp4", Clip(np.full((36, 64, 64, 3), 120, np.uint8), None))
    short = media.write_audio(tmp_path / "s.wav", np.zeros((1, 8000), np.float32), 16000)
    for item, message in (
        ({"type": "video_url", "video_url": {"url": _data_url(moving, "video/mp4")}}, "reference videos"),
        ({"type": "audio_url", "audio_url": {"url": _data_url(short, "audio/wav")}}, "@audio1 lasts 0.50 s"),
    ):
        with pytest.raises(ArkAPIStatusError) as e:
            ark(idle).content_generation.tasks.create(model="m", content=[{"type": "text", "text": "x"}, item])
        assert e.value.status_code == 400 and message in e.value.message, e.value.message


def test_web_page_is_served(idle):
    page = httpx.get(idle.url + "/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_results_keep_until_their_time(server):
    job = openai(server).videos.create(prompt="a bell rings", seconds="1", size="64x64")
    done = wait_for(lambda: (v := openai(server).videos.retrieve(job.id)).status == "completed" and v, 180)
    assert done.expires_at is not None and done.expires_at > time.time() + 3600
