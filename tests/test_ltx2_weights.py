"""A smoke run on real LTX-2 weights, for whoever has them: skipped unless LTX2_WEIGHTS names an LTX-2
folder in diffusers layout (nothing is downloaded). Runs on the first CUDA GPU when there is one.

    LTX2_WEIGHTS=/models/LTX-2 pytest tests/test_ltx2_weights.py -s

Text -> video + audio, a first frame, a forward extension that keeps the given picture and sound,
and soundtrack -> video, each written as an mp4 (LTX2_OUT, default a temporary folder) and checked
for its marks and manifest; seconds per clip are printed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

WEIGHTS = os.environ.get("LTX2_WEIGHTS")
pytestmark = [pytest.mark.skipif(not WEIGHTS, reason="set LTX2_WEIGHTS=DIR (an LTX-2 folder) to run"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]  # fmt: skip


@pytest.fixture(scope="module")
def pipe():
    import torch

    from openseedance.pipeline import Pipeline

    return Pipeline.from_pretrained(WEIGHTS).to("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LTX2_OUT") or tmp_path_factory.mktemp("ltx2-smoke"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_real_weights_smoke(pipe, out):
    from openseedance import provenance
    from openseedance.media import Clip
    from openseedance.request import GenerationRequest

    c = pipe.capabilities
    base = {"duration": 2.0, "width": c.width, "height": c.height, "fps": c.fps, "sample_rate": c.sample_rate}
    t2av = GenerationRequest("A woman in a red coat says hello on a windy beach; waves crash.", seed=1, **base)
    runs = {"t2av": t2av}
    clip = None
    for name in ("t2av", "i2av", "extend", "a2v"):
        if clip is not None:
            given = Clip(video=clip.video[: round(c.fps)], audio=clip.audio[:, : c.sample_rate], fps=c.fps,
                         sample_rate=c.sample_rate)  # fmt: skip
            runs = {"i2av": GenerationRequest(t2av.prompt, first_frame=clip.video[0], **base),
                    "extend": GenerationRequest("she keeps talking", source=given, extend="forward", **base),
                    "a2v": GenerationRequest("a woman talks on a beach", audio=clip.audio[0], **base)}  # fmt: skip
        clock = time.perf_counter()
        result = pipe(runs[name], progress=True)
        seconds = time.perf_counter() - clock
        path = result.write(out / f"{name}.mp4")
        report = provenance.verify(path)
        print(f"{name}: {seconds:.1f} s -> {path}; marks video {report.video.found} audio {report.audio.found}")
        assert report.manifest.intact and (report.audio.found or name == "a2v")  # a given soundtrack is not marked
        assert result.clip.video.shape == (round(2.0 * c.fps), c.height, c.width, 3)
        if name == "t2av":
            clip = result.clip
        if name == "a2v":  # the soundtrack kept as given (a given stream is not marked)
            assert np.array_equal(result.clip.audio, clip.audio[:, : result.clip.audio.shape[1]])
