"""Memory under hostile inputs: a few kilobytes of H.264 that decode to gigabytes, a container that
understates its frame size, a 16000x16000 PNG and long or many-channel audio. Decoding to the size the
model uses stays within a small budget (each decode measured in a process of its own, by its peak
resident memory), and a real server answers such requests, accepted or refused, within 512 MiB of idle
in the server and in its worker."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

import hostile_media
from serve_util import KEY, Server, wait_for

MiB = 1 << 20
SMALL = 96 * MiB  # a decode at the model's size (pillow still holds a 4096x4096 picture whole: 64 MiB)
DECODE_BUDGET = 256 * MiB + SMALL  # any decode: InputLimits.max_decoded_bytes, and the decoder's own
SERVER_BUDGET = 512 * MiB  # a request's peak above idle, in the server and in the worker
FIELD = "content[1].video_url.url"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    return {
        "solid": hostile_media.solid_video(folder / "solid.mp4"),  # 1280x720, 60 fps, 10 s
        "lying": hostile_media.lying_video(folder / "lying.mkv"),
        "huge_png": hostile_media.solid_png(folder / "huge.png", 16000),
        "big_png": hostile_media.solid_png(folder / "big.png", 4096),
        "wide_flac": hostile_media.quiet_audio(folder / "wide.flac", 15, rate=192000, channels=8),
        "long_wav": hostile_media.quiet_audio(folder / "long.wav", 60),
    }


def decode_in_child(call: str, path: Path) -> dict:
    """Run `call` (on `data`, the file's bytes) in a fresh interpreter; its outcome and the peak resident
    memory the call added."""
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import hostile_media
        from openseedance.serve.decode import decode_audio, decode_image, decode_video
        from openseedance.serve.limits import InputError, InputLimits
        limits, data = InputLimits(), Path(sys.argv[1]).read_bytes()
        idle = hostile_media.reset_peak()
        try:
            out = {call}
            result = {{"shape": list(getattr(out, "video", out[0] if isinstance(out, tuple) else out).shape)}}
        except InputError as e:
            result = {{"refused": str(e)}}
        result["added"] = hostile_media.peak() - idle
        print(json.dumps(result))
    """)
    path_var = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": path_var})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


DECODES = [
    # (file, call, expected shape or refusal fragment)
    ("solid", 'decode_video(data, limits, "v", size=(64, 64), fps=12, sample_rate=16000, channels=1)',
     [120, 64, 64, 3]),
    ("solid", 'decode_video(data, limits, "v")', "MiB decoded"),
    ("lying", 'decode_video(data, limits, "v", size=(64, 64), fps=12)', [168, 64, 64, 3]),
    ("lying", 'decode_video(data, limits, "v")', "more when decoded than its header says"),
    ("huge_png", 'decode_image(data, limits, "i", size=(64, 64))', "scale it down"),
    ("big_png", 'decode_image(data, limits, "i")', [4096, 4096, 3]),
    ("big_png", 'decode_image(data, limits, "i", size=(64, 64))', [64, 64, 3]),
    ("wide_flac", 'decode_audio(data, limits, "a", sample_rate=16000, channels=1)', [1, 240000]),
    ("long_wav", 'decode_audio(data, limits, "a", sample_rate=16000, channels=1)', "longer than"),
]  # fmt: skip


@pytest.mark.parametrize("case", DECODES, ids=[f"{c[0]}-{'ok' if isinstance(c[2], list) else 'refused'}"
                                               for c in DECODES])  # fmt: skip
def test_decoding_hostile_media_stays_within_budget(hostile: dict[str, Path], case) -> None:
    name, call, expected = case
    result = decode_in_child(call, hostile[name])
    if isinstance(expected, list):
        assert result.get("shape") == expected, result
    else:
        assert expected in result.get("refused", ""), result
    bound = SMALL if "size=" in call else DECODE_BUDGET
    assert result["added"] < bound, f"{name}: {result['added'] / MiB:.0f} MiB"


def test_declared_sizes_are_priced_before_decoding(hostile: dict[str, Path]) -> None:
    """The full-size decode is refused from the header alone: almost nothing is allocated."""
    result = decode_in_child('decode_video(data, limits, "v")', hostile["solid"])
    assert "1280x720" in result["refused"] and result["added"] < 32 * MiB, result


# ---------------------------------------------------------------------------------------------------------------
# Through a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve-memory"))
    yield srv.start()
    srv.stop()


def _processes(srv: Server) -> dict[str, int]:
    return {"server": srv.process.pid, **{f"worker {pid}": pid for pid in srv.workers()}}


def _data_url(path: Path) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(path.read_bytes()).decode()


def _measured(srv: Server, send) -> tuple[httpx.Response, dict[str, int]]:
    """`send()`'s response once its job (if any) is finished, and each process's peak above idle."""
    pids = _processes(srv)
    idle = {name: hostile_media.reset_peak(pid) for name, pid in pids.items()}
    response = send()
    if response.status_code == 200:
        job = response.json()["id"]
        wait_for(lambda: httpx.get(f"{srv.url}/v1/videos/{job}", headers=_auth(), timeout=30).json()["status"]
                 in ("completed", "failed"), 300)  # fmt: skip
    return response, {name: hostile_media.peak(pid) - idle[name] for name, pid in pids.items()}


def _auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}"}


def test_a_huge_reference_video_is_refused_before_decoding(server, warm, hostile: dict[str, Path]) -> None:
    body = {"model": "m", "content": [{"type": "text", "text": "x"},
                                      {"type": "video_url", "video_url": {"url": _data_url(hostile["solid"])},
                                       "role": "reference_video"}]}  # fmt: skip
    response, added = _measured(server, lambda: httpx.post(f"{server.url}/api/v3/contents/generations/tasks",
                                                           json=body, headers=_auth(), timeout=120))  # fmt: skip
    assert response.status_code == 400 and FIELD in response.json()["error"]["message"], response.text
    assert all(v < SERVER_BUDGET for v in added.values()), added


def _extend(srv: Server, clip: Path) -> httpx.Response:
    files = {"video": ("clip.mp4", clip.read_bytes(), "video/mp4")}
    return httpx.post(f"{srv.url}/v1/videos/extensions", data={"prompt": "and on", "seconds": "1"},
                      files=files, headers=_auth(), timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def warm(server, tmp_path_factory) -> None:
    """A worker's first job pays one-time costs (hundreds of MiB, whatever the input): paid here, with a plain
    64x64 clip to extend, so that the measured jobs show what their input costs."""
    clip = hostile_media.solid_video(tmp_path_factory.mktemp("plain") / "plain.mp4", 64, 64, 12, 10.0)
    response, _ = _measured(server, lambda: _extend(server, clip))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", ["solid", "lying"])
def test_a_huge_clip_to_extend_is_decoded_small(server, warm, hostile: dict[str, Path], name: str) -> None:
    response, added = _measured(server, lambda: _extend(server, hostile[name]))
    assert response.status_code == 200, response.text
    done = httpx.get(f"{server.url}/v1/videos/{response.json()['id']}", headers=_auth(), timeout=30).json()
    assert done["status"] == "completed" and done["size"] == "64x64", done  # not the source's 1280x720
    assert all(v < SERVER_BUDGET for v in added.values()), added


@pytest.mark.parametrize("name, kind, role, fragment", [
    ("huge_png", "image_url", "reference_image", "scale it down"),
    ("long_wav", "audio_url", "reference_audio", "longer than"),
])  # fmt: skip
def test_huge_images_and_long_audio_are_refused_by_their_headers(server, warm, hostile, name, kind, role,
                                                                   fragment) -> None:
    body = {"model": "m", "content": [{"type": "text", "text": "x"},
                                      {"type": kind, kind: {"url": _data_url(hostile[name])}, "role": role}]}
    response, added = _measured(server, lambda: httpx.post(f"{server.url}/api/v3/contents/generations/tasks",
                                                           json=body, headers=_auth(), timeout=120))  # fmt: skip
    message = response.json()["error"]["message"]
    assert response.status_code == 400 and f"content[1].{kind}.url" in message and fragment in message, message
    assert all(v < SERVER_BUDGET for v in added.values()), added
