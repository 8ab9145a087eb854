"""Result files: whole, by byte range, and whole even when expiry deletes them mid-send."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openseedance.serve.files import file_response

DATA = bytes(range(256)) * 600  # 153,600 bytes: several chunks


def _body(response) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.body_iterator])

    return asyncio.run(collect())


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(DATA)
    return path


def test_whole_file(clip: Path) -> None:
    r = file_response(clip)
    assert r.status_code == 200 and r.media_type == "video/mp4"
    assert r.headers["content-length"] == str(len(DATA)) and r.headers["accept-ranges"] == "bytes"
    assert _body(r) == DATA


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=10-19", 10, 19), ("bytes=100000-", 100000, len(DATA) - 1), ("bytes=-5", len(DATA) - 5, len(DATA) - 1),
    ("bytes=0-999999999", 0, len(DATA) - 1), ("bytes=-999999", 0, len(DATA) - 1),
])  # fmt: skip
def test_one_range(clip: Path, header: str, start: int, end: int) -> None:
    r = file_response(clip, header)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert _body(r) == DATA[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-3", "bytes=-", "nonsense"])
def test_ranges_we_do_not_serve_give_the_whole_file(clip: Path, header: str) -> None:
    r = file_response(clip, header)
    assert r.status_code == 200 and _body(r) == DATA


@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", "bytes=20-10", "bytes=-0"])
def test_unsatisfiable_range(clip: Path, header: str) -> None:
    r = file_response(clip, header)
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(DATA)}"


def test_deleted_while_sending_still_arrives_whole(clip: Path) -> None:
    r = file_response(clip)
    clip.unlink()  # what result expiry does
    assert _body(r) == DATA


def test_missing_file(tmp_path: Path) -> None:
    assert file_response(tmp_path / "gone.mp4") is None
    assert file_response(tmp_path) is None  # a folder is not a file
