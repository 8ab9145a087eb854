"""The real-face guard: references that show a real human face are refused unless faces are allowed."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import numpy as np


class FaceError(ValueError):
    """A reference shows a real human face and faces are not allowed."""


_SKIN_SHARE = 0.5  # of the face box's pixels in the skin-tone range
_SKIN_SPREAD = 40.0  # grey levels between the 10th and 90th percentile of those pixels' brightness


@functools.cache
def _cascades() -> tuple[Any, Any]:
    try:
        import cv2
    except ImportError:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            "the face check needs opencv-python-headless<5 (pip install 'opencv-python-headless<5')"
        ) from None
    folder = Path(cv2.data.haarcascades)
    cascades = tuple(
        cv2.CascadeClassifier(str(folder / f"haarcascade_{n}.xml")) for n in ("frontalface_default", "frontalface_alt2")
    )
    if any(c.empty() for c in cascades):
        raise RuntimeError(f"OpenCV's face cascades are missing from {folder} (opencv-python-headless<5 ships them)")
    return cascades


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def find_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) of real human faces in an (H, W, 3) uint8 image.

    A face must be found by two of OpenCV's bundled Haar cascades, and the box must look like a
    photograph of skin: mostly skin tones with natural shading. Drawn faces, such as the Stage's
    characters, have flat colours and fail the second test."""
    import cv2

    scale = max(1.0, 256 / min(image.shape[:2]))
    if scale > 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    side = max(24, int(0.08 * min(grey.shape)))
    found = [c.detectMultiScale(cv2.equalizeHist(grey), 1.1, 5, minSize=(side, side)) for c in _cascades()]
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.int16)
    skin = (ycc[..., 1] >= 135) & (ycc[..., 1] <= 173) & (ycc[..., 2] >= 80) & (ycc[..., 2] <= 125)
    faces = []
    for box in found[0]:
        if not any(_overlap(box, other) > 0.3 for other in found[1]):
            continue
        x, y, w, h = (int(v) for v in box)
        region = skin[y : y + h, x : x + w]
        if region.mean() < _SKIN_SHARE:
            continue
        shades = grey[y : y + h, x : x + w][region]
        if np.percentile(shades, 90) - np.percentile(shades, 10) >= _SKIN_SPREAD:
            faces.append(tuple(round(v / scale) for v in (x, y, w, h)))
    return faces


_NEIGHBOURS = (-2, -1, 1, 2)  # frames around a sampled one that show a video's face again


def _reference_images(request: Any) -> list[tuple[str, np.ndarray]]:
    named = [("the first frame", request.first_frame), ("the last frame", request.last_frame)]
    named += [(f"@image{i}", image) for i, image in enumerate(request.images, start=1)]
    return [(name, image) for name, image in named if image is not None]


def _reference_videos(request: Any) -> list[tuple[str, np.ndarray]]:
    named = [(f"@video{i}", clip.video) for i, clip in enumerate(request.videos, start=1)]
    if request.source is not None:
        named.append(("the source clip", request.source.video))
    return [(name, video) for name, video in named if video is not None and len(video)]


def video_shows_face(video: np.ndarray, samples: int = 6) -> bool:
    """Whether a (T, H, W, 3) uint8 clip shows a real human face.

    Looks at `samples` frames spread over the clip. A face found in one of them counts when a frame
    next to it (within two) shows it too: a real face stays a while, while the chance pattern that
    fools the face finder in one generated frame is gone in the next. A one-frame clip is an image."""
    video = np.asarray(video, np.uint8)
    for i in np.linspace(0, len(video) - 1, min(samples, len(video))).astype(int):
        if not find_faces(video[i]):
            continue
        near = [i + d for d in _NEIGHBOURS if 0 <= i + d < len(video)]
        if not near or any(find_faces(video[j]) for j in near):
            return True
    return False


def check_references(request: Any) -> None:
    """Raise FaceError when a reference image or video of `request` shows a real human face."""
    stills = (name for name, image in _reference_images(request) if find_faces(np.asarray(image, np.uint8)))
    clips = (name for name, video in _reference_videos(request) if video_shows_face(video))
    name = next(itertools.chain(stills, clips), None)  # stops at the first one found
    if name is not None:
        raise FaceError(f"{name} shows a real human face; references of real people are refused by default. "
                        "If you have their consent, allow it: --allow-faces on the command line, "
                        "Pipeline.allow_faces = True in Python, or the server's allow-faces setting")  # fmt: skip

