"""Can a decoder draw what the probes need at all, given the best latents for it?

    python benchmarks/decoder_reach.py --video-ae DIR --audio-ae DIR [--clips 4] [--iterations 150]

A reconstruction can miss a feature because the encoder does not put it into the latents or
because the decoder cannot draw it from any latents. This tells the two apart: with the decoder
frozen, it starts from the encoder's latents and fits them to the original by gradient descent
(Adam on the autoencoder's own reconstruction distance), then measures the feature again.

- video: how much of the speakers' mouth movement is kept (the probes' dark-fraction measure),
  within the frames that share a latent and between latents, on held-out Stage clips;
- audio: the harmonic levels of hollow voices (odd harmonics only; the voice probe's timbre
  check), the voices' own reference samples at each pitch.

If fitted latents bring a feature back, the encoder is what loses it; if they do not, the decoder
(or the latent layout) cannot express it, and no encoder will.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from openseedance.audio_vae import AudioAutoencoder, harmonic_distance, multi_resolution_stft_distance
from openseedance.checkpoint import load_component
from openseedance.conditioning import frames_to_tensor, tensor_to_frames
from openseedance.stage import detect, world
from openseedance.stage.probes import BETWEEN, WITHIN, measure_voice, mouth_moves, movement_kept
from openseedance.stage.render import RenderConfig, render, voice_sample
from openseedance.stage.scene import Voice, sample_scene
from openseedance.video_vae import VideoAutoencoder, high_pass

HELD_OUT_SEED = 700_000  # training scenes start at 10_000_000
LEVELS = 5  # harmonics shown in the audio table


def fit_latents(decode, loss, start: torch.Tensor, iterations: int, lr: float) -> torch.Tensor:
    """Latents that minimise `loss(decode(z))`, from `start`, by Adam; the decoder is not changed."""
    z = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(iterations):
        opt.zero_grad()
        loss(decode(z)).backward()
        opt.step()
    return z.detach()


def speaking_scenes(clips: int) -> list:
    """The first `clips` held-out scenes in which a character speaks."""
    out, seed = [], HELD_OUT_SEED
    while len(out) < clips:
        scene = sample_scene(seed, duration=4.0)
        if scene.speech():
            out.append(scene)
        seed += 1
    return out


def video_reach(model: VideoAutoencoder, clips: int, iterations: int) -> dict:
    for p in model.parameters():
        p.requires_grad_(False)
    factor = model.config.temporal_factor
    moves = {"encoder": [], "fitted": []}
    for scene in speaking_scenes(clips):
        r = render(scene, RenderConfig(64, 64, 12.0, 16000))
        frames = r.clip.video[: 1 + factor * ((len(r.clip.video) - 1) // factor)]
        x = frames_to_tensor(frames)[None]

        def distance(y: torch.Tensor, x: torch.Tensor = x) -> torch.Tensor:
            return (y - x).abs().mean() + (y - x).pow(2).mean() + (high_pass(y) - high_pass(x)).abs().mean()

        with torch.no_grad():
            start = model.encode(x)
        fitted = fit_latents(model.decode, distance, start, iterations, lr=0.05)
        for name, z in (("encoder", start), ("fitted", fitted)):
            with torch.no_grad():
                out = tensor_to_frames(model.decode(z)[0].clamp(-1, 1))
            moves[name].append(mouth_moves(scene, r.truth, frames, out, factor))
    result = {}
    for name, rows in moves.items():
        rows = np.concatenate(rows)
        result[name] = {"within_latent": movement_kept(rows, WITHIN), "between_latents": movement_kept(rows, BETWEEN),
                        "frames": int((rows[:, 0] == WITHIN).sum())}  # fmt: skip
    return result


def audio_reach(model: AudioAutoencoder, iterations: int) -> dict:
    for p in model.parameters():
        p.requires_grad_(False)
    sr, hop = model.config.sample_rate, model.config.hop
    result = {}
    for pitch in sorted(world.PITCHES, key=world.PITCHES.get):
        audio = voice_sample(Voice(pitch, "hollow"), sr)
        audio = audio[:, : audio.shape[1] // hop * hop]
        x = torch.from_numpy(audio)[None]

        def distance(y: torch.Tensor, x: torch.Tensor = x) -> torch.Tensor:
            return (multi_resolution_stft_distance(y, x, sr) + harmonic_distance(y, x, sr)).mean()

        with torch.no_grad():
            start = model.encode(x)
        fitted = fit_latents(model.decode, distance, start, iterations, lr=0.05)
        row = {"f0": world.PITCHES[pitch], "original": _levels(audio, sr)}
        for name, z in (("encoder", start), ("fitted", fitted)):
            with torch.no_grad():
                row[name] = _levels(model.decode(z)[0].clamp(-1, 1).numpy(), sr)
        result[pitch] = row
    return result


def _levels(audio: np.ndarray, sr: int) -> list[float]:
    """The first harmonics' levels (dB, loudest 0, floor -40) where the voice is loud."""
    times = np.arange(0.05, audio.shape[1] / sr - 0.05, 0.01)
    env = detect.voice_envelope(audio, sr, times)
    _, profile = measure_voice(audio, sr, times[env > 0.3 * env.max()])
    return [round(float(v), 1) for v in profile[:LEVELS]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video-ae", help="a saved video autoencoder folder")
    parser.add_argument("--audio-ae", help="a saved audio autoencoder folder")
    parser.add_argument("--clips", type=int, default=4, help="held-out speaking scenes for the video part")
    parser.add_argument("--iterations", type=int, default=150, help="Adam steps fitting the latents")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/decoder_reach/decoder_reach.json"))
    args = parser.parse_args()
    if not (args.video_ae or args.audio_ae):
        parser.error("give --video-ae, --audio-ae or both")
    torch.manual_seed(0)
    result: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                    "iterations": args.iterations}  # fmt: skip
    if args.video_ae:
        v = video_reach(load_component(VideoAutoencoder, args.video_ae), args.clips, args.iterations)
        result["video"] = {"model": args.video_ae, "clips": args.clips, **v}
        print(f"mouth movement kept, {args.clips} held-out speaking scenes, {args.video_ae}\n"
              "| latents | within a latent's frames | between latents | frames |\n|---|---|---|---|")  # fmt: skip
        for name, m in v.items():
            print(f"| {name} | {m['within_latent']:.3f} | {m['between_latents']:.3f} | {m['frames']} |")
    if args.audio_ae:
        a = audio_reach(load_component(AudioAutoencoder, args.audio_ae), args.iterations)
        result["audio"] = {"model": args.audio_ae, **a}
        print(f"hollow voices' first {LEVELS} harmonic levels (dB; the check floors at -40), {args.audio_ae}\n"
              "| pitch | f0 Hz | original | encoder's latents | fitted latents |\n|---|---|---|---|---|")  # fmt: skip
        for pitch, row in a.items():
            cells = [" ".join(f"{v:.0f}" for v in row[k]) for k in ("original", "encoder", "fitted")]
            print(f"| {pitch} | {row['f0']:.0f} | {cells[0]} | {cells[1]} | {cells[2]} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
