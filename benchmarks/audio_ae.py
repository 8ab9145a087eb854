"""How well and how fast does an audio autoencoder reconstruct held-out Stage sound?

    python benchmarks/audio_ae.py --model runs/audio-ae-tiny/model [--clips 16] [--out FILE]
    python benchmarks/audio_ae.py --model OLD,NEW          # two models side by side

Prints: quality (SI-SDR, multi-resolution STFT distance, onsets kept within 10 ms and which way
the missed ones went, and the Stage voice/sync probes with reconstructed audio against the
original), beside a peer: the same clips through AAC at 128 kb/s in an mp4, as `write_video`
writes them; then how precisely the onset detector times the original audio's sounds against
the scenes' own event times (the ruler the onset column is read with); then speed (encode and
decode audio seconds per wall second, float32 and bfloat16 autocast).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from openseedance.audio_vae import AudioAutoencoder, multi_resolution_stft_distance, si_sdr
from openseedance.checkpoint import load_component
from openseedance.media import Clip, read_audio, write_video
from openseedance.stage.detect import onsets
from openseedance.stage.probes import Report, probe
from openseedance.stage.render import RenderConfig, Rendering, render
from openseedance.stage.scene import sample_scene

HELD_OUT_SEED = 700_000  # training scenes start at 10_000_000
TOLERANCE = 0.010  # seconds
AAC_PEER = "AAC 128 kb/s (peer)"


def onset_match(reference: np.ndarray, estimate: np.ndarray, tol: float = TOLERANCE) -> tuple[int, int, int, list]:
    """(matched, missed, extra, errors in s) pairing each reference onset with the nearest unused
    estimated onset within `tol`."""
    used = np.zeros(len(estimate), dtype=bool)
    errors = []
    for t in reference:
        if len(estimate) == 0:
            break
        d = np.abs(estimate - t) + used * 1e9
        j = int(d.argmin())
        if d[j] <= tol:
            used[j] = True
            errors.append(float(estimate[j] - t))
    return len(errors), len(reference) - len(errors), int((~used).sum()), errors


def autoencoder(model: AudioAutoencoder) -> Callable[[Clip], np.ndarray]:
    """A clip -> its (C, S) audio reconstructed through `model`."""

    @torch.no_grad()
    def reconstruct(clip: Clip) -> np.ndarray:
        x = torch.from_numpy(clip.audio)[None]
        return model.decode(model.encode(x), length=x.shape[-1]).clamp(-1, 1)[0].numpy()

    return reconstruct


def aac(clip: Clip) -> np.ndarray:
    """`clip`'s audio after a round trip through an mp4 (H.264 + AAC at 128 kb/s)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "clip.mp4", clip)
        audio, _ = read_audio(path, sample_rate=clip.sample_rate, channels=clip.audio.shape[0])
    return audio[:, : clip.audio.shape[1]]


PROBES = ("sync", "voice")


@dataclass(frozen=True)
class HeldOut:
    """A held-out clip with what is measured on its original audio, once for every model."""

    rendering: Rendering
    onsets: np.ndarray
    report: Report


def held_out(clips: int, sr: int) -> list[HeldOut]:
    out = []
    for i in range(clips):
        r = render(sample_scene(HELD_OUT_SEED + i, duration=4.0), RenderConfig(64, 64, 12.0, sr))
        out.append(HeldOut(r, onsets(r.clip.audio[0], sr), probe(r.clip, r.scene, only=PROBES)))
    return out


def quality(reconstruct: Callable[[Clip], np.ndarray], clips: list[HeldOut]) -> dict:
    sdr, stft, matched, missed, extra, errors = [], [], 0, 0, 0, []
    early = late = 0
    truth = {p: [] for p in PROBES}
    recon = {p: [] for p in PROBES}
    by_timbre: dict[str, dict[str, list[int]]] = {}  # timbre -> check -> [passed, total] on reconstructions
    for h in clips:
        original, scene = h.rendering.clip, h.rendering.scene
        sr = original.sample_rate
        out = reconstruct(original)
        x, y = torch.from_numpy(original.audio), torch.from_numpy(out)
        sdr.append(float(si_sdr(y, x).mean()))
        stft.append(float(multi_resolution_stft_distance(y, x, sr).mean()))
        recon_onsets = onsets(out[0], sr)
        m, mi, ex, err = onset_match(h.onsets, recon_onsets)
        matched, missed, extra = matched + m, missed + mi, extra + ex
        errors += err
        for t in h.onsets if len(recon_onsets) else ():  # which way the missed ones went
            nearest = recon_onsets[np.abs(recon_onsets - t).argmin()] - t
            if abs(nearest) > TOLERANCE:
                early, late = early + int(nearest < 0), late + int(nearest > 0)
        report = probe(Clip(video=original.video, audio=out, fps=original.fps, sample_rate=sr), scene, only=PROBES)
        for scores, r in ((truth, h.report), (recon, report)):
            for name in PROBES:
                if r.scores.get(name) is not None:
                    scores[name].append(r.scores[name])
        for check in report.checks:  # the reconstruction's voice checks, by the speaker's timbre
            if check["probe"] == "voice":
                tally = by_timbre.setdefault(scene.characters[check["character"]].voice.timbre, {})
                tally.setdefault(check["check"], [0, 0])
                tally[check["check"]][0] += int(check["ok"])
                tally[check["check"]][1] += 1
    return {
        "si_sdr_db": float(np.mean(sdr)),
        "stft_distance": float(np.mean(stft)),
        "onsets_kept": matched / max(1, matched + missed),
        "onsets_extra": extra,
        "missed_early": early,  # missed: the nearest reconstructed onset is over 10 ms early
        "missed_late": late,
        "onset_error_ms_median": 1000 * float(np.median(np.abs(errors))) if errors else None,
        "voice_checks_by_timbre": dict(sorted(by_timbre.items())),
        "probes": {
            p: {"truth": float(np.mean(truth[p])), "recon": float(np.mean(recon[p]))} for p in PROBES if truth[p]
        },
    }


def detector_precision(clips: list[HeldOut]) -> dict:
    """How far the onsets found in the original audio lie from the scenes' own event times
    (landings and syllable starts): the resolution the onsets column can be trusted to."""
    errors = []
    for h in clips:
        events = np.array([e["time"] for e in h.rendering.truth.events])
        errors += [float(t - events[np.abs(events - t).argmin()]) for t in h.onsets if len(events)]
    e = np.abs(np.asarray(errors))
    return {"onsets": len(e), "within_5ms": float(np.mean(e <= 0.005)) if len(e) else None,
            "within_10ms": float(np.mean(e <= TOLERANCE)) if len(e) else None,
            "error_ms_median": 1000 * float(np.median(e)) if len(e) else None}  # fmt: skip


@torch.no_grad()
def speed(model: AudioAutoencoder, seconds: float = 4.0) -> dict:
    sr = model.config.sample_rate
    x = torch.from_numpy(render(sample_scene(HELD_OUT_SEED, duration=seconds), RenderConfig(sample_rate=sr)).clip.audio)
    x = x[None]
    out = {}
    for name, bf16 in (("float32", False), ("bfloat16", True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.decode(model.encode(x))  # warm up
            t0 = time.perf_counter()
            z = model.encode(x)
            t1 = time.perf_counter()
            model.decode(z)
            t2 = time.perf_counter()
        out[name] = {"encode_x_realtime": seconds / (t1 - t0), "decode_x_realtime": seconds / (t2 - t1),
                     "decode_4s_seconds": t2 - t1}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved audio autoencoder folder, or several, comma-separated")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/audio_ae/audio_ae.json"))
    args = parser.parse_args()
    folders = args.model.split(",")
    models = {folder: load_component(AudioAutoencoder, folder) for folder in folders}
    rate = next(iter(models.values())).config.sample_rate
    clips = held_out(args.clips, rate)
    quals = {folder: quality(autoencoder(model), clips) for folder, model in models.items()}
    quals[AAC_PEER] = quality(aac, clips)
    ruler = detector_precision(clips)
    speeds = {folder: speed(model) for folder, model in models.items()}
    result: dict = {"models": folders, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                    "quality": quals, "onset_detector": ruler, "speed": speeds}  # fmt: skip
    print(f"quality on {args.clips} held-out Stage clips (4 s, {rate} Hz)")
    print("| model | SI-SDR dB | STFT distance | onsets kept (±10 ms) | missed: early / late | extra onsets | "
          "median onset error |\n|---|---|---|---|---|---|---|")
    for folder, q in quals.items():
        err = "-" if q["onset_error_ms_median"] is None else f"{q['onset_error_ms_median']:.1f} ms"
        print(f"| {folder} | {q['si_sdr_db']:.2f} | {q['stft_distance']:.3f} | {100 * q['onsets_kept']:.1f}% | "
              f"{q['missed_early']} / {q['missed_late']} | {q['onsets_extra']} | {err} |")  # fmt: skip
    print(f"onset detector on the original audio against the scenes' event times: {ruler['onsets']} onsets, "
          f"{100 * ruler['within_5ms']:.1f}% within 5 ms, {100 * ruler['within_10ms']:.1f}% within 10 ms, "
          f"median error {ruler['error_ms_median']:.1f} ms")  # fmt: skip
    print("| model | probe | original | reconstruction | ratio |\n|---|---|---|---|---|")
    for folder, q in quals.items():
        for p, s in q["probes"].items():
            print(f"| {folder} | {p} | {100 * s['truth']:.1f}% | {100 * s['recon']:.1f}% | "
                  f"{s['recon'] / max(s['truth'], 1e-9):.3f} |")  # fmt: skip
    print("voice checks passed on reconstructions, by the speaker's timbre\n"
          "| model | timbre | pitch | timbre |\n|---|---|---|---|")  # fmt: skip
    for folder, q in quals.items():
        for timbre, tally in q["voice_checks_by_timbre"].items():
            cells = [f"{tally[c][0]} / {tally[c][1]}" if c in tally else "-" for c in ("pitch", "timbre")]
            print(f"| {folder} | {timbre} | {cells[0]} | {cells[1]} |")
    print("| model | precision | encode x real time | decode x real time | decode 4 s |\n|---|---|---|---|---|")
    for folder, sp in speeds.items():
        for name, v in sp.items():
            print(f"| {folder} | {name} | {v['encode_x_realtime']:.0f} | {v['decode_x_realtime']:.0f} | "
                  f"{v['decode_4s_seconds']:.3f} s |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
