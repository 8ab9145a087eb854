"""Server media inputs: data: URLs, real media files, corrupt and hostile bytes, and http(s) fetches guarded
against requests to private addresses (a real local server for redirects, size caps and timeouts)."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote_from_bytes

import numpy as np
import pytest

from openseedance import media
from openseedance.serve import fetch
from openseedance.serve.decode import decode_audio, decode_image, decode_video, load_image
from openseedance.serve.fetch import load_bytes, post_json, read_upload
from openseedance.serve.limits import InputError, InputLimits, InputTooLarge

FIELD = "content[1].image_url.url"
LIMITS = InputLimits()


def data_url(data: bytes, media_type: str = "application/octet-stream") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def make_clip(seconds: float = 1.0, fps: int = 12, size: tuple[int, int] = (32, 48), sr: int = 16000) -> media.Clip:
    h, w = size
    n = round(seconds * fps)
    video = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        video[i, :, :, 0] = 20 * i % 256
        video[i, h // 4 : h // 2, (2 * i) % (w - 8) : (2 * i) % (w - 8) + 8] = (220, 200, 40)
    t = np.arange(round(seconds * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)
    return media.Clip(video, audio, fps=fps, sample_rate=sr)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real media written by openseedance.media, as bytes by name."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    clip, long_clip = make_clip(), make_clip(seconds=2.0)
    paths = {
        "png": media.write_image(folder / "a.png", image),
        "jpg": media.write_image(folder / "a.jpg", image),
        "bmp": media.write_image(folder / "a.bmp", image),
        "webp": media.write_image(folder / "a.webp", image),
        "mp4": media.write_video(folder / "a.mp4", clip, preset="ultrafast"),
        "mkv": media.write_video(folder / "a.mkv", clip, preset="ultrafast"),
        "mov": media.write_video(folder / "a.mov", clip, preset="ultrafast"),
        "silent_mp4": media.write_video(folder / "s.mp4", media.Clip(clip.video, None, fps=12), preset="ultrafast"),
        "long_mp4": media.write_video(folder / "long.mp4", long_clip, preset="ultrafast"),
        "wav": media.write_audio(folder / "a.wav", clip.audio, 16000),
        "flac": media.write_audio(folder / "a.flac", clip.audio, 16000),
        "ogg": media.write_audio(folder / "a.ogg", clip.audio, 16000),
        "long_wav": media.write_audio(folder / "long.wav", long_clip.audio, 16000),
    }
    out = {name: Path(path).read_bytes() for name, path in paths.items()}
    out["image"] = image.tobytes()
    return out


def raises_input_error(exc: pytest.ExceptionInfo[InputError], *fragments: str, field: str = FIELD) -> None:
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ")
    for fragment in fragments:
        assert fragment in exc.value.message, exc.value.message


# ---------------------------------------------------------------------------------------------------------------
# data: URLs


def test_data_url_base64_round_trip(files: dict[str, bytes]) -> None:
    data, media_type = load_bytes(data_url(files["png"], "image/png"), LIMITS, FIELD)
    assert data == files["png"] and media_type == "image/png"


def test_data_url_forms() -> None:
    raw = bytes(range(256))
    b64 = base64.b64encode(raw).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    assert load_bytes(f"data:application/octet-stream;base64,{wrapped}", LIMITS, FIELD)[0] == raw
    assert load_bytes(f"DATA:;BASE64,{b64.rstrip('=')}", LIMITS, FIELD) == (raw, None)
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    assert load_bytes(f"data:image/png;base64,{urlsafe}", LIMITS, FIELD)[0] == raw
    escaped = b64.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert load_bytes(f"data:image/png;base64,{escaped}", LIMITS, FIELD)[0] == raw
    assert load_bytes("data:text/plain;charset=utf-8,hello%20world", LIMITS, FIELD) == (b"hello world", "text/plain")
    assert load_bytes(f"data:,{quote_from_bytes(raw)}", LIMITS, FIELD) == (raw, None)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("data:image/png;base64", "no ','"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        ("data:image/png;base64,AAA=A", "not valid base64"),
        ("data:image/png;base64,AAAA-+//", "not valid base64"),
        ("data:not a type;base64,AAAA", "not a media type"),
        ("data:image/png;base64,", "holds no data"),
        ("data:,", "holds no data"),
    ],
)
def test_malformed_data_urls(url: str, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        load_bytes(url, LIMITS, FIELD)
    raises_input_error(exc, fragment)


def test_oversized_data_url_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = InputLimits(max_bytes=1000)
    monkeypatch.setattr(fetch.base64, "b64decode", lambda *a, **k: pytest.fail("decoded an oversized input"))
    with pytest.raises(InputTooLarge) as exc:
        load_bytes(data_url(bytes(1001)), limits, FIELD)
    raises_input_error(exc, "1000 bytes")
    assert exc.value.http_status == 413 and exc.value.too_large
    with pytest.raises(InputTooLarge):
        load_bytes("data:," + "%00" * 1001, limits, FIELD)
    monkeypatch.undo()
    assert len(load_bytes(data_url(bytes(1000)), limits, FIELD)[0]) == 1000


def test_read_upload_caps_size() -> None:
    limits = InputLimits(max_bytes=100_000)
    assert read_upload(io.BytesIO(bytes(100_000)), limits, "input_reference") == bytes(100_000)
    with pytest.raises(InputTooLarge) as exc:
        read_upload(io.BytesIO(bytes(100_001)), limits, "input_reference")
    raises_input_error(exc, field="input_reference")
    with pytest.raises(InputError, match="empty"):
        read_upload(io.BytesIO(b""), limits, "input_reference")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://example.com:70/_x",
        "javascript:alert(1)",
        "dict://127.0.0.1:11211/stats",
        "jar:http://example.com/a.jar!/x",
        "/etc/passwd",
        "./a.png",
        "C:\\Windows\\win.ini",
        "a.png",
        "",
        "   ",
    ],
)
def test_other_schemes_and_paths_are_refused(url: str) -> None:
    with pytest.raises(InputError) as exc:
        load_bytes(url, InputLimits(allow_http=True), FIELD)
    raises_input_error(exc, "expected")


def test_non_string_url_is_refused() -> None:
    with pytest.raises(InputError, match="expected a URL string"):
        load_bytes(None, LIMITS, FIELD)  # type: ignore[arg-type]


def test_http_is_refused_unless_enabled(no_network: list) -> None:
    for url in ("http://example.com/a.png", "HTTPS://example.com/a.png"):
        with pytest.raises(InputError) as exc:
            load_bytes(url, LIMITS, FIELD)
        raises_input_error(exc, "does not fetch http(s) URLs", "data: URL")
    assert no_network == []


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        InputLimits(max_bytes=0)
    with pytest.raises(ValueError, match="max_redirects"):
        InputLimits(max_redirects=-1)
    assert InputLimits(allow_hosts={"[::1]", "LocalHost"}).allow_hosts == frozenset({"::1", "localhost"})


# ---------------------------------------------------------------------------------------------------------------
# Decoding real media


@pytest.mark.parametrize("name", ["png", "jpg", "bmp", "webp"])
def test_decode_image(files: dict[str, bytes], name: str) -> None:
    image = decode_image(files[name], LIMITS, FIELD)
    assert image.shape == (24, 40, 3) and image.dtype == np.uint8
    if name in ("png", "bmp"):  # lossless
        assert image.tobytes() == files["image"]


def test_load_image_from_data_url(files: dict[str, bytes]) -> None:
    image = load_image(data_url(files["png"], "image/jpeg"), LIMITS, FIELD)  # the declared type is not trusted
    assert image.tobytes() == files["image"]


@pytest.mark.parametrize("name", ["mp4", "mkv", "mov"])
def test_decode_video(files: dict[str, bytes], name: str) -> None:
    clip = decode_video(files[name], LIMITS, FIELD)
    assert clip.video.shape == (12, 32, 48, 3) and clip.fps == pytest.approx(12)
    assert clip.audio is not None and clip.audio.shape == (1, 16000) and clip.sample_rate == 16000


def test_decode_video_resizes_and_resamples(files: dict[str, bytes]) -> None:
    clip = decode_video(files["mp4"], LIMITS, FIELD, fps=6, size=(16, 24), sample_rate=8000, need_audio=True)
    assert clip.video.shape == (6, 16, 24, 3) and clip.audio.shape == (1, 8000)


@pytest.mark.parametrize("name", ["wav", "flac", "ogg", "mp4", "mkv"])
def test_decode_audio(files: dict[str, bytes], name: str) -> None:
    audio, rate = decode_audio(files[name], LIMITS, FIELD)
    assert rate == 16000 and audio.dtype == np.float32 and audio.shape[0] == 1
    assert 16000 <= audio.shape[1] <= 16000 + 1024  # mkv keeps the last AAC frame's padding
    peak = np.abs(audio).max()
    assert 0.2 < peak < 0.4


def test_wrong_types(files: dict[str, bytes]) -> None:
    cases = [
        (decode_video, "png", "expected a video", "got a PNG image"),
        (decode_video, "wav", "expected a video", "got a WAV audio file"),
        (decode_image, "mp4", "expected an image", "got an MP4 file"),
        (decode_image, "flac", "expected an image", "got a FLAC audio file"),
        (decode_audio, "jpg", "expected audio", "got a JPEG image"),
        (decode_audio, "silent_mp4", "expected audio", "no sound track"),
    ]
    for decode, name, *fragments in cases:
        with pytest.raises(InputError) as exc:
            decode(files[name], LIMITS, FIELD)
        raises_input_error(exc, *fragments)


def test_unrecognised_and_empty_bytes() -> None:
    noise = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for decode in (decode_image, decode_video, decode_audio):
        with pytest.raises(InputError) as exc:
            decode(b"\x00\x01" + noise, LIMITS, FIELD)
        raises_input_error(exc, "not in a media format")
        with pytest.raises(InputError, match="no data"):
            decode(b"", LIMITS, FIELD)
        with pytest.raises(InputError, match="as bytes"):
            decode("not bytes", LIMITS, FIELD)  # type: ignore[arg-type]


def test_corrupt_media(files: dict[str, bytes]) -> None:
    noise = np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    cases = [
        (decode_image, files["png"][:16] + noise, "cannot read a PNG image"),
        (decode_image, files["png"][: len(files["png"]) // 2], "cannot read a PNG image"),
        (decode_image, b"\xff\xd8\xff\xe0" + noise, "cannot read a JPEG image"),
        (decode_video, files["mp4"][:12] + noise, "cannot read an MP4 file"),
        (decode_video, files["mp4"][: len(files["mp4"]) * 2 // 3], "truncated"),
        (decode_audio, files["mp4"][: len(files["mp4"]) * 2 // 3], "truncated"),
        (decode_video, files["mkv"][:40] + noise, "cannot read a Matroska (MKV) file"),
        (decode_audio, files["flac"][:8] + noise, "cannot read a FLAC audio file"),
        (decode_audio, b"ID3\x04\x00\x00\x00\x00\x00\x00" + noise, "cannot read an MP3"),
    ]
    for decode, data, fragment in cases:
        with pytest.raises(InputError) as exc:
            decode(data, LIMITS, FIELD)
        raises_input_error(exc, fragment)
        assert "/tmp" not in str(exc.value) and "openseedance-input" not in str(exc.value)


def test_damaged_video_never_raises_anything_but_input_error(files: dict[str, bytes]) -> None:
    data = files["mp4"]
    rng = np.random.default_rng(3)
    for cut in (100, 700, len(data) - 100):
        variants = [data[:cut], data[:cut] + bytes(64)]
        damaged = bytearray(data)
        damaged[cut : cut + 50] = rng.integers(0, 256, 50, dtype=np.uint8).tobytes()
        variants.append(bytes(damaged))
        for variant in variants:
            for decode in (decode_video, decode_audio):
                try:
                    decode(variant, LIMITS, FIELD)
                except InputError as err:
                    assert err.field == FIELD


def test_duration_limits(files: dict[str, bytes]) -> None:
    short = InputLimits(max_video_seconds=1.5, max_audio_seconds=1.5)
    with pytest.raises(InputError) as exc:
        decode_video(files["long_mp4"], short, FIELD)
    raises_input_error(exc, "the video lasts over 1.", "longer than this server's limit of 1.5 s")
    for name in ("long_wav", "long_mp4"):
        with pytest.raises(InputError) as exc:
            decode_audio(files[name], short, FIELD)
        raises_input_error(exc, "the audio lasts ", "limit of 1.5 s")
    assert decode_video(files["mp4"], short, FIELD).num_frames == 12
    assert decode_audio(files["wav"], short, FIELD)[0].shape == (1, 16000)


def test_pixel_limits(files: dict[str, bytes]) -> None:
    small = InputLimits(max_pixels=900)
    with pytest.raises(InputError) as exc:
        decode_image(files["png"], small, FIELD)
    raises_input_error(exc, "40x24", "scale it down")
    with pytest.raises(InputError) as exc:
        decode_video(files["mp4"], small, FIELD)
    raises_input_error(exc, "48x32")


def test_oversized_media_bytes(files: dict[str, bytes]) -> None:
    limits = InputLimits(max_bytes=len(files["png"]) - 1)
    with pytest.raises(InputTooLarge):
        decode_image(files["png"], limits, FIELD)


# ---------------------------------------------------------------------------------------------------------------
# http(s): refusals that must happen before any lookup or connection


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record (and fail) every name lookup and connection the code under test attempts."""
    attempts: list = []

    def lookup(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise OSError("lookups are blocked in this test")

    def connect(address, port, timeout):
        attempts.append(("connect", str(address), port))
        raise OSError("connections are blocked in this test")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(fetch, "_open_socket", connect)
    return attempts


HTTP = InputLimits(allow_http=True, fetch_timeout=2.0)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1./", "loopback"),
        ("http://127.255.255.254:8080/x", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/admin", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://169.254.169.254:443/", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://100.100.100.200/", "cloud metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://0.1.2.3/", "only public addresses are fetched"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "only public addresses are fetched"),
        ("http://[::1]/", "loopback"),
        ("http://[::]/", "unspecified"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "private"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://[::127.0.0.1]/", "loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "cloud metadata"),
        ("http://[2002:7f00:1::]/", "loopback"),
        ("http://[2002:a9fe:a9fe::]/", "cloud metadata"),
        ("http://[fe80::1%25eth0]/", "'%'"),
        ("http://2130706433/", "unusual numeric form"),
        ("http://0x7f.1/", "unusual numeric form"),
        ("http://0x7f000001/", "unusual numeric form"),
        ("http://017700000001/", "unusual numeric form"),
        ("http://0177.0.0.1/", "unusual numeric form"),
        ("http://127.1/", "unusual numeric form"),
        ("http://127.000.000.001/", "unusual numeric form"),
        ("http://0xA9.0xFE.0xA9.0xFE/", "unusual numeric form"),
        ("http://2852039166/latest/meta-data/", "unusual numeric form"),
        ("http://１２７.０.０.１/", "loopback"),
        ("http://①②⑦.0.0.1/", "loopback"),
        ("http://０ｘ７ｆ.１/", "unusual numeric form"),
        ("http://ｌｏｃａｌｈｏｓｔ/", "local or internal name"),
        ("http://localhost/", "local or internal name"),
        ("http://LOCALHOST./", "local or internal name"),
        ("http://app.localhost:8000/", "local or internal name"),
        ("http://metadata.google.internal/computeMetadata/v1/", "local or internal name"),
        ("http://metadata/", "local or internal name"),
        ("http://printer.local/", "local or internal name"),
        ("http://intranet/", "local or internal name"),
        ("http://user@example.com/a.png", "user name or password"),
        ("http://user:secret@127.0.0.1/", "user name or password"),
        ("http://example.com@127.0.0.1/", "user name or password"),
        ("http://example.com:99999/", "malformed"),
        ("http://[::1/", "malformed"),
        ("http:///a.png", "no host"),
        ("http://exa mple.com/", "spaces"),
        ("http://example.com\\@127.0.0.1/", "backslashes"),
        ("http://bad_host-.example..com/", "not a valid host name"),
    ],
)
def test_ssrf_forms_are_refused_without_touching_the_network(no_network: list, url: str, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        load_bytes(url, HTTP, FIELD)
    raises_input_error(exc, fragment)
    assert no_network == []


def fake_resolver(answers: dict[str, list[str]], calls: list[str]):
    def getaddrinfo(host, port, *args, **kwargs):
        calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for address in answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    return getaddrinfo


@pytest.mark.parametrize(
    ("answers", "fragment"),
    [
        (["93.184.216.34", "10.0.0.5"], "resolves to 10.0.0.5, is a private address"),
        (["2606:2800:220:1::1", "::1"], "resolves to ::1, is a loopback address"),
        (["::ffff:169.254.169.254"], "cloud metadata"),
        (["100.64.1.1"], "carrier-grade NAT"),
    ],
)
def test_names_resolving_to_any_private_address_are_refused(
    no_network: list, monkeypatch: pytest.MonkeyPatch, answers: list[str], fragment: str
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"media.example.com": answers}, calls))
    with pytest.raises(InputError) as exc:
        load_bytes("https://media.example.com/a.png", HTTP, FIELD)
    raises_input_error(exc, "'media.example.com'", fragment)
    assert calls == ["media.example.com"] and no_network == []


def test_unknown_host(no_network: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({}, []))
    with pytest.raises(InputError, match=r"cannot find the URL host 'nowhere\.example'"):
        load_bytes("http://nowhere.example/a.png", HTTP, FIELD)


# ---------------------------------------------------------------------------------------------------------------
# http(s) against a real local server


_CHUNK_OUT = 16 * 1024


class _Handler(BaseHTTPRequestHandler):
    routes: dict  # path -> callable(handler)
    seen: list  # (path, Host header)

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host")))
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404, "Not Found")
            return
        with contextlib.suppress(OSError):  # the client hung up, as it should on an oversized or slow answer
            route(self)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.path, self.headers.get("Host"), self.headers.get("Content-Type"), body))
        if self.path == "/hook":
            self.reply(204)
        elif self.path == "/hook-moved":
            self.reply(307, headers={"Location": "/hook"})
        else:
            self.reply(500, b"boom")

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, length: bool = True) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server(files: dict[str, bytes]):
    png = files["png"]
    state: dict = {}

    def redirect(location: str):
        return lambda h: h.reply(302, headers={"Location": location.format(port=state["port"])})

    def drip(h: _Handler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.05)

    def big_stream(h: _Handler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(64):
            h.wfile.write(bytes(_CHUNK_OUT))

    def short(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"0123456789")

    routes = {
        "/image.png": lambda h: h.reply(200, png, {"Content-Type": "image/png; charset=binary"}),
        "/to-image": redirect("/image.png"),
        "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-private": redirect("http://10.0.0.1/image.png"),
        "/to-other-loopback": redirect("http://127.0.0.2:{port}/image.png"),
        "/to-mapped": redirect("http://[::ffff:127.0.0.1]:{port}/image.png"),
        "/to-decimal": redirect("http://2130706433:{port}/image.png"),
        "/to-file": redirect("file:///etc/passwd"),
        "/to-data": redirect("data:image/png;base64,AAAA"),
        "/loop": redirect("/loop"),
        "/no-location": lambda h: h.reply(302),
        "/big": lambda h: h.reply(200, bytes(200_000)),
        "/big-stream": big_stream,
        "/short": short,
        "/slow-headers": lambda h: time.sleep(1.5),
        "/drip": drip,
    }
    _Handler.routes, _Handler.seen = routes, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    state["port"] = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{state['port']}", _Handler.seen
    httpd.shutdown()
    httpd.server_close()


LOCAL = InputLimits(allow_http=True, allow_hosts=frozenset({"127.0.0.1"}), fetch_timeout=2.0, max_bytes=100_000)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every address the fetcher connects to (connections still happen)."""
    made: list = []
    real = fetch._open_socket

    def record(address, port, timeout):
        made.append(str(address))
        return real(address, port, timeout)

    monkeypatch.setattr(fetch, "_open_socket", record)
    return made


def test_fetch_png(server, connections: list, files: dict[str, bytes]) -> None:
    base, seen = server
    data, media_type = load_bytes(f"{base}/image.png?x=1", LOCAL, FIELD)
    assert data == files["png"] and media_type == "image/png"
    assert seen[-1] == ("/image.png?x=1", base.removeprefix("http://"))
    assert connections == ["127.0.0.1"]
    assert load_image(f"{base}/image.png", LOCAL, FIELD).tobytes() == files["image"]


def test_local_server_needs_the_allow_list(server, connections: list) -> None:
    base, _ = server
    with pytest.raises(InputError, match="loopback"):
        load_bytes(f"{base}/image.png", HTTP, FIELD)
    assert connections == []


def test_fetch_connects_to_the_vetted_address_and_keeps_the_name(
    server, connections: list, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]
) -> None:
    """A rebinding resolver answers with a private address on the second lookup; there is no second lookup."""
    base, seen = server
    port = base.rsplit(":", 1)[1]
    calls: list[str] = []
    first = fake_resolver({"media.example.com": ["127.0.0.1"]}, calls)
    later = fake_resolver({"media.example.com": ["10.0.0.1"]}, calls)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (first if not calls else later)(*a, **k))
    data, _ = load_bytes(f"http://media.example.com:{port}/image.png", LOCAL, FIELD)
    assert data == files["png"]
    assert calls == ["media.example.com"] and connections == ["127.0.0.1"]
    assert seen[-1] == ("/image.png", f"media.example.com:{port}")


def test_redirect_within_allowed_host(server, connections: list, files: dict[str, bytes]) -> None:
    base, _ = server
    assert load_bytes(f"{base}/to-image", LOCAL, FIELD)[0] == files["png"]
    assert connections == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/to-metadata", "redirect host 169.254.169.254 is a cloud metadata address"),
        ("/to-private", "redirect host 10.0.0.1 is a private address"),
        ("/to-other-loopback", "redirect host 127.0.0.2 is a loopback address"),
        ("/to-mapped", "loopback"),
        ("/to-decimal", "unusual numeric form"),
        ("/to-file", "leads to a file URL"),
        ("/to-data", "leads to a data URL"),
    ],
)
def test_redirects_are_vetted_before_connecting(server, connections: list, path: str, fragment: str) -> None:
    base, seen = server
    with pytest.raises(InputError) as exc:
        load_bytes(f"{base}{path}", LOCAL, FIELD)
    raises_input_error(exc, fragment)
    assert connections == ["127.0.0.1"]  # the first hop only
    assert seen[-1][0] == path


def test_redirect_limit(server, connections: list) -> None:
    base, _ = server
    with pytest.raises(InputError, match="redirects more than 3 times"):
        load_bytes(f"{base}/loop", LOCAL, FIELD)
    assert len(connections) == 4
    with pytest.raises(InputError, match="without saying where"):
        load_bytes(f"{base}/no-location", LOCAL, FIELD)


def test_oversized_responses_are_cut_off(server) -> None:
    base, _ = server
    for path in ("/big", "/big-stream"):
        with pytest.raises(InputTooLarge) as exc:
            load_bytes(f"{base}{path}", LOCAL, FIELD)
        raises_input_error(exc, "the response is larger")


def test_http_errors(server) -> None:
    base, seen = server
    with pytest.raises(InputError, match="HTTP 404"):
        load_bytes(f"{base}/missing.png", LOCAL, FIELD)
    with pytest.raises(InputError, match="after 10 of 1000 bytes"):
        load_bytes(f"{base}/short", LOCAL, FIELD)
    with pytest.raises(InputError, match="HTTP 404"):
        load_bytes(f"{base}/bild-ü.png", LOCAL, FIELD)
    assert seen[-1][0] == "/bild-%C3%BC.png"
    with pytest.raises(InputError, match=r"cannot reach 127\.0\.0\.1 .*SSL"):
        load_bytes(base.replace("http:", "https:") + "/image.png", LOCAL, FIELD)


@pytest.mark.parametrize("path", ["/slow-headers", "/drip"])
def test_slow_servers_time_out(server, path: str) -> None:
    base, _ = server
    limits = InputLimits(allow_http=True, allow_hosts=frozenset({"127.0.0.1"}), fetch_timeout=0.4)
    start = time.monotonic()
    with pytest.raises(InputError) as exc:
        load_bytes(f"{base}{path}", limits, FIELD)
    raises_input_error(exc, "longer than 0.4 s")
    assert time.monotonic() - start < 1.2


def test_post_json(server, connections: list) -> None:
    base, seen = server
    assert post_json(f"{base}/hook", {"id": "cgt-1", "status": "succeeded"}, LOCAL, "callback_url") == 204
    assert seen[-1] == (
        "/hook",
        base.removeprefix("http://"),
        "application/json",
        b'{"id":"cgt-1","status":"succeeded"}',
    )
    with pytest.raises(InputError, match="redirects"):
        post_json(f"{base}/hook-moved", {}, LOCAL, "callback_url")
    with pytest.raises(InputError, match="HTTP 500"):
        post_json(f"{base}/hook-broken", {}, LOCAL, "callback_url")
    assert connections == ["127.0.0.1"] * 3


@pytest.mark.parametrize("url", ["http://169.254.169.254/hook", "http://[::ffff:10.0.0.1]/", "data:,x", "file:///x"])
def test_post_json_refuses_what_fetches_refuse(no_network: list, url: str) -> None:
    with pytest.raises(InputError) as exc:
        post_json(url, {}, HTTP, "callback_url")
    raises_input_error(exc, field="callback_url")
    assert no_network == []
