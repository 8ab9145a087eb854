"""Result files served from a handle opened before the response starts, so a file deleted by
expiry while it is being sent still arrives whole (or, if already gone, is a clean 404), with
single byte ranges for players that seek."""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fastapi.responses import Response, StreamingResponse

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 1 << 16


def _chunks(handle: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(start)
        while length > 0:
            data = handle.read(min(_CHUNK, length))
            if not data:
                break
            length -= len(data)
            yield data
    finally:
        handle.close()


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of one satisfiable `bytes=` range; None means the whole file.
    Raises ValueError for a range that lies past the end."""
    m = _RANGE.fullmatch((header or "").strip())
    if m is None or not (m[1] or m[2]):
        return None  # absent, multi-range or malformed: RFC 9110 lets us send the whole file
    if not m[1]:  # suffix: the last N bytes
        n = int(m[2])
        if n == 0:
            raise ValueError
        return max(0, size - n), size - 1
    start = int(m[1])
    end = min(int(m[2]), size - 1) if m[2] else size - 1
    if start >= size or end < start:
        raise ValueError
    return start, end


def file_response(path: Path, range_header: str | None = None, media_type: str | None = None,
                  head: bool = False) -> Response | None:  # fmt: skip
    """The file at `path`, whole or one range of it (`head`: its headers only); None when there is no
    such file."""
    try:
        handle = path.open("rb")
    except (OSError, ValueError):  # missing, a folder, a name the file system refuses
        return None
    size = os.fstat(handle.fileno()).st_size
    media_type = media_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"accept-ranges": "bytes"}
    try:
        span = _span(range_header, size)
    except ValueError:
        handle.close()
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    start, end = span if span is not None else (0, size - 1)
    headers["content-length"] = str(end - start + 1)
    if span is not None:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    if head:
        handle.close()
        return Response(status_code=206 if span else 200, headers=headers, media_type=media_type)
    return StreamingResponse(_chunks(handle, start, end - start + 1), status_code=206 if span else 200,
                             headers=headers, media_type=media_type)  # fmt: skip
