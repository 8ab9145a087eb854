"""The `openseedance` command: `generate`, `stage sample | render | probe`, `train video-ae | audio-ae | generator`,
`bench stage`, `verify`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from openseedance import __version__
from openseedance.media import MediaError
from openseedance.train.config import CHECKPOINTING, AETrainConfig, DistillConfig, GenTrainConfig

log = logging.getLogger("openseedance")


class UsageError(Exception):
    """A bad command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, got {text!r}") from None
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise argparse.ArgumentTypeError(f"width and height must be 16..4096 pixels, got {text!r}")
    return w, h


def _window(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must look like 1.5:3 (seconds A:B), got {text!r}") from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"window must have 0 <= A < B, got {text!r}")
    return a, b


def _positive(kind: type) -> object:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0 or value != value:
            raise argparse.ArgumentTypeError(f"must be greater than zero, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _writable_file(path: Path) -> Path:
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {path}: directory {parent} is not writable")
    return path


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output directory {path}: {err.strerror or err}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"cannot write to output directory {path}: permission denied")
    return path


def _render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_size, default=(64, 64), help="WIDTHxHEIGHT in pixels (default 64x64)")
    p.add_argument("--fps", type=_positive(float), default=12.0, help="frames per second (default 12)")
    p.add_argument("--sample-rate", type=_positive(int), default=16000, help="audio sample rate in Hz (default 16000)")
    p.add_argument("--duration", type=_positive(float), default=4.0, help="seconds per clip (default 4)")


def _config(args: argparse.Namespace):
    from openseedance.stage.render import RenderConfig

    return RenderConfig(width=args.size[0], height=args.size[1], fps=args.fps, sample_rate=args.sample_rate)


def _model_options(p: argparse.ArgumentParser) -> None:
    """What `generate` and `stream` both take: the model, the sampler, the clip's format, a first
    frame and references, where and in what precision it runs, and the marks."""
    p.add_argument("--model", type=Path, default=None, help="a model folder: this project's, or LTX-2 in diffusers "
                   "layout (default: the bundled tiny model)")  # fmt: skip
    p.add_argument("--teacher", action="store_true", help="run the model a distilled model learnt from (kept in "
                   "its folder; the bundled model keeps its 8-step teacher)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); the same seed gives the same clip")
    p.add_argument("--steps", type=_positive(int), default=None,
                   help="sampling steps (default: the model's; the bundled model 2, its --teacher 8)")
    p.add_argument("--guidance", type=float, default=None, help="text guidance scale for the video (default: the "
                   "model's; 1, none, for a distilled model, 3 for its teacher)")  # fmt: skip
    p.add_argument("--audio-guidance", type=float, default=None, help="text guidance scale for the audio (default: the "
                   "model's, as for the video)")  # fmt: skip
    p.add_argument("--reference-guidance", type=float, default=None,
                   help="guidance towards the --image/--audio references (default: the model's, 1: none)")  # fmt: skip
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's, 64x64)")
    shape.add_argument("--ratio", default=None, help="aspect ratio such as 16:9 at the model's pixel count")
    p.add_argument("--fps", type=_positive(float), default=None, help="frames per second (default: the model's, 12)")
    p.add_argument("--no-audio", action="store_true", help="write the video without a sound track")
    p.add_argument("--first-frame", type=Path, default=None, help="an image the clip starts from")
    p.add_argument("--image", type=Path, action="append", default=[], metavar="FILE",
                   help="a reference image (repeat up to 9): the first is @image1 in the prompt, and so on")
    p.add_argument("--audio", type=Path, action="append", default=[], metavar="FILE",
                   help="a reference voice, 2-15 s (repeat up to 3): @audio1, @audio2, @audio3")
    p.add_argument("--precision", type=_precision, default=None, dest="bf16", metavar="{auto,bf16,fp32}",
                   help="bfloat16 or float32 arithmetic (default auto: bfloat16 on GPUs and on CPUs that multiply it "
                        "natively, float32 elsewhere)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--visible-watermark", action="store_true", help='also draw a small "AI" label into the frames')
    p.add_argument("--allow-faces", action="store_true", help="accept references that show real people (with consent)")


def _inputs(args: argparse.Namespace, sample_rate: int) -> dict:
    """The first frame and the reference images and voices named on the command line, read."""
    from openseedance import media

    extra = {}
    if args.first_frame is not None:
        extra["first_frame"] = media.read_image(args.first_frame)
    if args.image:
        extra["images"] = tuple(media.read_image(f) for f in args.image)
    if args.audio:
        extra["audios"] = tuple(media.read_audio(f, sample_rate=sample_rate, channels=1)[0] for f in args.audio)
    return extra


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="openseedance", description="Video with synchronized audio, and the Stage that measures it.")
    parser.add_argument("--version", action="version", version=f"openseedance {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("generate", help="generate a clip (video with synchronized audio) from a prompt")
    p.add_argument("prompt", help='what happens, e.g. "a red circle jumps and says hello"')
    p.add_argument("-o", "--output", type=Path, default=Path("out.mp4"), help="output mp4 (default out.mp4)")
    p.add_argument("--duration", type=_positive(float), default=4.0, help="seconds (default 4)")
    _model_options(p)
    p.add_argument("--solver", choices=("euler", "heun"), default=None, help="ODE solver (default euler)")
    p.add_argument("--guidance-rescale", type=float, default=None,
                   help="0-1: pull the guided velocity back to the size of the unguided one (default: the model's, 0)")
    p.add_argument("--shift", type=float, default=None,
                   help="the sampling schedule's shift towards noise (default: the model's, or the one training "
                        "used for the clip's length)")  # fmt: skip
    p.add_argument("--last-frame", type=Path, default=None, help="an image the clip ends on")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--extend", type=Path, default=None,
                        help="a clip to extend by --duration seconds (kept as it is; see --backward)")  # fmt: skip
    source.add_argument("--edit", type=Path, default=None, help="a clip to retake within --window, the rest kept")
    p.add_argument("--backward", action="store_true", help="with --extend: add the new part before the clip")
    p.add_argument("--window", type=_window, default=None, help="with --edit: A:B, the seconds to redo")
    p.add_argument("--video", type=Path, action="append", default=[], metavar="FILE",
                   help="a reference video, 2-15 s (repeat up to 3): @video1... (for models that use them)")
    p.add_argument("--soundtrack", type=Path, default=None, help="audio (or a video's audio) the picture must follow")
    p.add_argument("--for-video", type=Path, default=None, help="a video to make the sound for (video -> audio)")
    p.add_argument("--bf16", action="store_const", const=True, dest="bf16", help="the same as --precision bf16")
    p.set_defaults(func=_generate)

    p = sub.add_parser("stream", help="generate live: a clip of any length, playable while it is made, steered by "
                       "a new prompt on each line of standard input")  # fmt: skip
    p.add_argument("prompt", help='what happens first, e.g. "a red circle bounces"')
    p.add_argument("-o", "--output", default="live.mp4",
                   help="a fragmented mp4, playable while written, or - for standard output (| ffplay -); "
                        "default live.mp4")  # fmt: skip
    p.add_argument("--duration", type=_positive(float), default=None,
                   help="stop after this many seconds (default: run until Ctrl-C)")  # fmt: skip
    p.add_argument("--chunk", type=_positive(float), default=1.0,
                   help="seconds made at a time; a new prompt takes effect from the next chunk (default 1)")
    p.add_argument("--context", type=_positive(float), default=1.0,
                   help="seconds of the recent past each chunk continues (default 1)")
    _model_options(p)
    p.set_defaults(func=_stream)

    stage = sub.add_parser("stage", help="the procedural audio-visual world")
    stage_sub = stage.add_subparsers(dest="stage_command", required=True, parser_class=_Parser)

    p = stage_sub.add_parser("sample", help="write N Stage clips (mp4 + caption + ground truth) to a folder")
    p.add_argument("-n", "--num", type=_positive(int), required=True, help="how many clips")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first clip; clip i uses seed + i")
    p.add_argument("--shots", type=int, default=None, help="shots per clip (default: 1-3 at random)")
    p.add_argument("--wording", choices=("train", "heldout"), default="train", help="caption wording set")
    p.add_argument("--references", action="store_true", help="also write portraits, voice samples, a reference video")
    _render_options(p)
    p.set_defaults(func=_stage_sample)

    p = stage_sub.add_parser("render", help="render one Stage scene to an mp4 file")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument("-o", "--output", type=Path, default=Path("stage.mp4"), help="output mp4 (default stage.mp4)")
    p.add_argument("--shots", type=int, default=None, help="number of shots (default: at random)")
    _render_options(p)
    p.set_defaults(func=_stage_render)

    p = stage_sub.add_parser("probe", help="score a clip against a Stage scene's ground truth")
    p.add_argument("clip", type=Path, help="an mp4 (or mov/webm/mkv) file")
    p.add_argument("--scene", type=Path, required=True, help="the scene JSON written beside a sampled clip")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=_stage_probe)

    train = sub.add_parser("train", help="train a component")
    train_sub = train.add_subparsers(dest="train_command", required=True, parser_class=_Parser)
    for kind, what in (("video-ae", "the causal video autoencoder"), ("audio-ae", "the waveform autoencoder")):
        p = train_sub.add_parser(kind, help=f"train {what}; a stopped run resumes from its --out folder")
        p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.jsonl, model/")
        _run_options(p, AETrainConfig, _ae_help(kind), skip=_AE_SKIP[kind])
        p.set_defaults(func=_train_autoencoder, kind=kind)

    p = train_sub.add_parser("generator", help="train the audio-video transformer on cached latents (resumable)")
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help="start from a named run of train/recipes.py (debug, tiny-scratch, tiny-references, "
                        "tiny-shots, tiny-references-half, tiny-gpu); options given override its values, and "
                        "the defaults shown are those without a recipe")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, logs, latents/, pipeline/")
    _run_options(p, GenTrainConfig, _GEN_HELP, required=("video_ae", "audio_ae"),
                 syntax={"bf16": ("--precision", {"type": _precision, "metavar": "{auto,bf16,fp32}"})})  # fmt: skip
    p.add_argument("--stop-after", type=_positive(int), default=None, metavar="STEP",
                   help="stop (with a checkpoint) at this step; the schedule still spans --steps, and a rerun "
                        "continues it")  # fmt: skip
    p.set_defaults(func=_train_generator)

    p = train_sub.add_parser("distill", help="distil a model into a few-step student (resumable)")
    p.add_argument("--out", type=Path, required=True, help="run folder: pairs/, checkpoint.pt, log.jsonl, pipeline/")
    _run_options(p, DistillConfig, _DISTILL_HELP,
                 syntax={"bf16": ("--precision", {"type": _precision, "metavar": "{auto,bf16,fp32}"})})  # fmt: skip
    p.add_argument("--stop-after", type=_positive(int), default=None, metavar="STEP",
                   help="stop (with a checkpoint) at this step; the schedule still spans --steps, and a rerun "
                        "continues it")  # fmt: skip
    p.set_defaults(func=_train_distill)

    p = sub.add_parser("export", help="copy a model folder, storing its weights in another precision")
    p.add_argument("model", type=Path, help="a model folder (pipeline.json + components)")
    p.add_argument("out", type=Path, help="the new model folder")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="weight precision")
    for kind in ("video", "audio"):
        p.add_argument(f"--{kind}-decoder", type=Path, default=None,
                       help=f"take the decoder of this {kind} autoencoder folder (trained with --decoder-only on "
                            "the model's own encoder)")  # fmt: skip
    p.add_argument("--reference-guidance", type=float, default=None,
                   help="store this as the model's default reference guidance")  # fmt: skip
    p.add_argument("--shift", type=float, default=None, help="store this as the model's default sampling shift")
    p.set_defaults(func=_export)

    for name, what in (("serve", "serve the Ark-compatible and OpenAI-compatible video APIs and the web page"),
                       ("worker", "run generation jobs from a server's job store (no HTTP)")):  # fmt: skip
        p = sub.add_parser(name, help=what)
        p.add_argument("--model", default=None, help="a model folder: this project's, or LTX-2 in diffusers layout "
                       "(default: the bundled model)")  # fmt: skip
        p.add_argument("--teacher", action="store_true", help="serve the model a distilled model learnt from")
        p.add_argument("--data", type=Path, default=Path("openseedance-data"),
                       help="this process's folder: API keys, and by default the job store and the results")
        p.add_argument("--db", default=os.environ.get("OPENSEEDANCE_DB"),
                       help="the job store: a postgresql://user:password@host/dbname URL that servers and workers on "
                       "several hosts share, or a SQLite file (default: $OPENSEEDANCE_DB, else DATA/jobs.db)")
        p.add_argument("--results", type=Path, default=None,
                       help="each job's inputs and results, shared by every server and worker (default DATA/files; "
                       "with several hosts, a folder every one of them mounts)")  # fmt: skip
        p.add_argument("--allow-faces", action="store_true", help="accept references that show real faces")
        p.add_argument("--threads", type=_positive(int), default=None, help="torch threads per worker")
        p.add_argument("--device", default="cpu", help="where workers run the model: cpu, cuda, cuda:N")
        p.add_argument("--live-idle", type=_positive(float), default=15.0,
                       help="a live job nobody has watched for this many seconds stops (default 15)")  # fmt: skip
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
            p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
            p.add_argument("--workers", type=int, default=1, help="generation processes (default 1; 0: API only)")
            p.add_argument("--api-key", action="append", default=[],
                           help="a key clients must send (repeatable; also $OPENSEEDANCE_API_KEYS; default: "
                           "a key made on first start in DATA/api_keys)")  # fmt: skip
            p.add_argument("--max-pending", type=_positive(int), default=8, help="queued+running tasks per key")
            p.add_argument("--result-ttl", type=_positive(float), default=86400.0, help="seconds results are kept")
            p.add_argument("--max-live", type=_positive(int), default=1, help="live jobs per key at once (default 1)")
            p.add_argument("--live-max-seconds", type=_positive(float), default=600.0,
                           help="the longest a live job may run, in seconds (default 600)")  # fmt: skip
            p.add_argument(
                "--allow-http-inputs",
                action="store_true",
                help="fetch http(s) media URLs (public addresses only); default: data: URLs and uploads",
            )
            p.add_argument(
                "--stale-after",
                type=_positive(float),
                default=20.0,
                help="seconds without a heartbeat before a running job is re-queued (default 20)",
            )
            p.add_argument(
                "--callback-host",
                action="append",
                default=[],
                help="a private host callbacks may reach (repeatable; public hosts are always allowed)",
            )
        p.set_defaults(func=_serve)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    p = bench_sub.add_parser("stage", help="stage-bench: score a generator on the fixed Stage suite")
    p.add_argument(
        "--generator",
        default="truth",
        help="truth, shuffled, noise, bundled, a model folder (this project's or LTX-2 in diffusers layout), "
             "or module:callable (default truth)",
    )
    p.add_argument("--cases", type=_positive(int), default=8, help="cases per capability (default 8)")
    p.add_argument("--capabilities", default="all", help="comma-separated capabilities, or all")
    p.add_argument("--size", type=_size, default=(64, 64), help="WIDTHxHEIGHT (default 64x64)")
    p.add_argument("--fps", type=_positive(float), default=12.0, help="frames per second (default 12)")
    p.add_argument("--sample-rate", type=_positive(int), default=16000, help="audio sample rate (default 16000)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.set_defaults(func=_bench_stage)

    p = sub.add_parser("verify", help="check a file for the invisible marks and the signed provenance manifest")
    p.add_argument("file", type=Path, help="a video (mp4, mov, webm, mkv) or audio file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_verify)
    return parser


# ---------------------------------------------------------------- commands


def _stage_sample(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from openseedance import media
    from openseedance.stage.captions import caption
    from openseedance.stage.render import companion_scene, portrait, render, voice_sample
    from openseedance.stage.scene import sample_scene

    out = _writable_dir(args.out)
    config = _config(args)
    for i in tqdm(range(args.num), desc="stage sample", disable=not sys.stderr.isatty()):
        seed = args.seed + i
        scene = sample_scene(seed, duration=args.duration, num_shots=args.shots)
        r = render(scene, config)
        caps = caption(scene, args.wording)
        stem = out / f"clip_{seed:06d}"
        media.write_video(stem.with_suffix(".mp4"), r.clip, metadata={"comment": caps.prompt})
        stem.with_suffix(".txt").write_text(caps.prompt + "\n")
        record = {
            "caption": caps.prompt,
            "captions": {"overall": caps.overall, "shots": list(caps.shots), "wording": caps.wording},
            "render": {
                "width": config.width,
                "height": config.height,
                "fps": config.fps,
                "sample_rate": config.sample_rate,
            },
            "scene": scene.to_dict(),
            "truth": r.truth.to_dict(),
        }
        stem.with_suffix(".json").write_text(json.dumps(record))
        if args.references:
            refs = out / f"clip_{seed:06d}.refs"
            refs.mkdir(exist_ok=True)
            for k, c in enumerate(scene.characters, start=1):
                media.write_image(refs / f"image{k}.png", portrait(c.identity, config.width, config.height))
                media.write_audio(refs / f"audio{k}.wav", voice_sample(c.voice, config.sample_rate, seed=seed),
                                  config.sample_rate)  # fmt: skip
            media.write_video(refs / "video1.mp4", render(companion_scene(scene, seed + 50_000), config).clip)
    print(f"wrote {args.num} clips to {out}")


def _stage_render(args: argparse.Namespace) -> None:
    from openseedance import media
    from openseedance.stage.captions import caption
    from openseedance.stage.render import render
    from openseedance.stage.scene import sample_scene

    output = _writable_file(args.output)
    scene = sample_scene(args.seed, duration=args.duration, num_shots=args.shots)
    prompt = caption(scene).prompt
    media.write_video(output, render(scene, _config(args)).clip, metadata={"comment": prompt})
    print(f"{output}: {prompt}")


def _stage_probe(args: argparse.Namespace) -> None:
    from openseedance.stage.probes import probe
    from openseedance.stage.scene import Scene

    try:
        data = json.loads(args.scene.read_text())
        scene = Scene.from_dict(data.get("scene", data))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"cannot read scene {args.scene}: {err}") from None
    report = probe(args.clip, scene)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return
    for name, score in report.scores.items():
        print(f"{name:10s} {'-' if score is None else f'{100 * score:.1f}%'}")
    print(f"av offset  {report.av_offset_ms} ms\nmouth~voice {report.mouth_voice_corr}")


def _train_autoencoder(args: argparse.Namespace) -> None:
    from openseedance.train.autoencoders import train

    cfg = AETrainConfig(**_given(args, AETrainConfig))
    _device(cfg.device)
    _writable_dir(args.out)
    model_dir = train(cfg, args.out, progress=sys.stderr.isatty())
    print(f"trained {args.kind}: {model_dir}")


def _train_generator(args: argparse.Namespace) -> None:
    from openseedance.train.generator import train

    cfg = _generator_config(args)
    _device(cfg.device)
    _writable_dir(args.out)
    folder = train(cfg, args.out, progress=sys.stderr.isatty(), stop_after=args.stop_after)
    print(f"trained generator: {folder}")


def _train_distill(args: argparse.Namespace) -> None:
    from openseedance.train.distill import train

    cfg = DistillConfig(**_given(args, DistillConfig))
    _device(cfg.device)
    _writable_dir(args.out)
    folder = train(cfg, args.out, progress=sys.stderr.isatty(), stop_after=args.stop_after)
    print(f"student: {folder}")


def _generator_config(args: argparse.Namespace) -> GenTrainConfig:
    """The run config of `train generator`: the recipe's (or the defaults), with the options given."""
    from openseedance.train.recipes import RECIPES

    given = _given(args, GenTrainConfig)
    if args.recipe is not None and args.recipe not in RECIPES:
        raise UsageError(f"unknown recipe {args.recipe!r}; recipes: {', '.join(RECIPES)}")
    return dataclasses.replace(RECIPES[args.recipe] if args.recipe else GenTrainConfig(), **given)


# ---------------------------------------------------------------- training options
# Every field of a run config (train/config.py) is an option named after it, typed from its
# annotation unless a syntax below says otherwise. No option has an argparse default: one left out
# keeps the config's (or the recipe's) value, shown in its help.


def _weight(part: str, what: str) -> float:
    """The number after '=' in 'NAME=WEIGHT', or an argparse error naming the part."""
    try:
        return float(part.partition("=")[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{part!r}: give {what}=WEIGHT") from None


def _loss_weights(text: str) -> tuple[tuple[str, float], ...]:
    """'detail=0,kl=1e-5' -> (("detail", 0.0), ("kl", 1e-5)); the terms are checked with the kind."""
    return tuple((part.partition("=")[0].strip(), _weight(part, "TERM")) for part in text.split(","))


def _task_mix(text: str) -> tuple[float, ...]:
    """'t2av=0.4,references=0.2' -> weights over conditioning.TRAINING_TASKS (tasks not named get 0)."""
    from openseedance.conditioning import TRAINING_TASKS

    weights = dict.fromkeys(TRAINING_TASKS, 0.0)
    for part in text.split(","):
        name = part.partition("=")[0].strip()
        if name not in weights:
            raise argparse.ArgumentTypeError(f"unknown task {name!r}; tasks: {', '.join(TRAINING_TASKS)}")
        weights[name] = _weight(part, "TASK")
    return tuple(weights.values())


def _precision(text: str) -> bool | None:
    """auto, bf16 or fp32 -> GenTrainConfig.bf16 (None, True, False)."""
    choices = {"auto": None, "bf16": True, "fp32": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"choose auto, bf16 or fp32, got {text!r}")
    return choices[text]


class _SetSize(argparse.Action):
    """--size WxH sets the two fields width and height."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.width, namespace.height = values


# fields whose option differs from the plain one of their type: (flag, add_argument keywords), or
# None for a field another option sets
_SYNTAX: dict[str, tuple[str, dict] | None] = {
    "width": ("--size", {"type": _size, "action": _SetSize, "metavar": "WxH"}),
    "height": None,
    "tasks": ("--tasks", {"type": _task_mix, "metavar": "TASK=W,..."}),
    "loss_weights": ("--loss-weights", {"type": _loss_weights, "metavar": "TERM=W,..."}),
    "activation_checkpointing": ("--activation-checkpointing", {"choices": CHECKPOINTING}),
}
_FOLDERS = ("video_ae", "audio_ae", "init", "warm_start", "cache", "teacher")  # shown as FOLDER
_POSITIVE = ("steps", "batch_size", "lr", "clips", "duration", "fps", "sample_rate", "checkpoint_every",
             "log_every", "frames", "seconds", "grad_clip", "pairs", "student_steps")  # fmt: skip

_RUN_HELP = {  # what both trainers' fields mean
    "steps": "total optimiser steps",
    "lr": "peak learning rate",
    "warmup": "learning-rate warmup steps",
    "min_lr_ratio": "the cosine schedule ends at this fraction of the peak learning rate",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "gradients clipped to this norm",
    "seed": "seed of weights, batches and noise",
    "checkpoint_every": "steps between checkpoints",
    "log_every": "steps between records in log.jsonl",
    "device": "cpu, cuda or cuda:N",
    "fps": "frame rate of the training clips",
}
_GEN_HELP = {
    **_RUN_HELP,
    "preset": "transformer preset: debug, tiny, small, 1b",
    "video_ae": "trained video autoencoder folder",
    "audio_ae": "trained audio autoencoder folder",
    "text_encoder": "minilm (bundled in a package) or a local folder",
    "data": "'stage', or a folder of videos with .txt captions",
    "clips": "clips in the latent cache",
    "cache": "latent cache folder (default OUT/latents)",
    "duration": "seconds per training clip",
    "width": "WIDTHxHEIGHT of the training clips, and of the exported model's clips",
    "sample_rate": "audio sample rate of the training clips, in Hz",
    "batch_size": "clips per step and process",
    "ema_decay": "EMA decay per step",
    "bf16": "bfloat16 autocast or float32 (default auto: bf16 on GPUs, fp32 on the CPU, where it measured faster)",
    "text_dropout": "fraction of captions dropped (so the sampler can guide without text)",
    "tasks": "task mix as TASK=WEIGHT,... over t2av, i2av, a2v, v2a, extend, references, motion (e.g. "
    "t2av=0.4,i2av=0.1,references=0.2); tasks not named get 0 (default: every task, weighted as in train/config.py)",
    "init": "start a new run from this model folder's transformer (fine-tune)",
    "shots": "caption multi-shot Stage clips part by part, each shot reading its own part (--no-shots: as one "
    "text, without per-shot parts and masks)",
    "fsdp": "under torchrun: shard with FSDP2 instead of replicating",
    "activation_checkpointing": "recompute block activations in the backward pass (full: every block, "
    "selective: every second one)",
    "compile": "torch.compile each transformer block",
}


_DISTILL_HELP = {
    **_RUN_HELP,
    "teacher": "the model folder to distil (default: the bundled model's teacher)",
    "data": "'stage' (the conditions are drawn from Stage clips)",
    "clips": "Stage clips in the latent cache the conditions are drawn from",
    "cache": "latent cache folder (default OUT/latents)",
    "duration": "seconds per clip",
    "pairs": "(noise, teacher's clip) pairs to make and learn from",
    "teacher_steps": "the teacher's steps per clip (0: its default)",
    "student_steps": "the student's default steps, whose times its training favours",
    "batch_size": "pairs per step",
    "ema_decay": "EMA decay per step",
    "bf16": "bfloat16 autocast or float32 (default auto: bfloat16 where the machine multiplies it natively)",
    "text_dropout": "fraction of conditions drawn without their caption",
    "tasks": "the conditions' task mix as TASK=WEIGHT,... over t2av, i2av, a2v, v2a, extend, references, motion",
    "shots": "draw multi-shot Stage clips captioned shot by shot",
}


_AE_TERMS = {  # as fixed text, to keep torch out of building the parser
    "video-ae": "mse, kl, detail, temporal; L1 always weighs 1",
    "audio-ae": "stft, waveform, transient, harmonic, kl",
}


def _ae_help(kind: str) -> dict[str, str]:
    return {
        **_RUN_HELP,
        "preset": "preset: debug, tiny, base; video also tiny-t2, tiny-c16, tiny-thin; audio also tiny-snake",
        "data": "'stage' (rendered on the fly) or a folder of media files",
        "batch_size": "clips per step",
        "bf16": "bfloat16 autocast (default float32: on CPUs convolutions measured slower in bfloat16)",
        "width": "WIDTHxHEIGHT of the training clips",
        "frames": "frames per window, 1 + 4k",
        "seconds": "seconds per window",
        "init": "start from this trained component folder (same preset)",
        "decoder_only": "with --init: freeze the encoder and train the decoder (latents, and generators on them, "
        "stay valid)",
        "warm_start": "start from a trained component of another preset of this kind: weights that fit are "
        "carried over, the rest start fresh (listed in OUT/warm_start.json)",
        "workers": "processes rendering batches ahead of the training step (0: in the loop); the batches are the "
        "same either way",
        "loss_weights": f"loss weights instead of the preset's (terms: {_AE_TERMS[kind]}), e.g. kl=1e-5",
    }


_AE_SKIP = {"video-ae": ("kind", "seconds"), "audio-ae": ("kind", "width", "height", "fps", "frames")}


def _run_options(p: argparse.ArgumentParser, cls: type, helps: dict[str, str], skip: Sequence[str] = (),
                 required: Sequence[str] = (), syntax: dict[str, tuple[str, dict]] | None = None) -> None:  # fmt: skip
    """Add an option for every field of the run config `cls` that is not in `skip`; `syntax` adds to
    (or overrides) `_SYNTAX` for this command."""
    syntax = {**_SYNTAX, **(syntax or {})}
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, default in defaults.items():
        if name in skip or (name in syntax and syntax[name] is None):
            continue
        flag, keywords = syntax.get(name) or ("--" + name.replace("_", "-"), _typed(cls, name, hints[name]))
        if hints[name] is bool:
            default = "on" if default else "off"
        elif name == "width":
            default = f"{default}x{defaults['height']}"
        text = helps[name]
        if "default" not in text and default not in ("", None, ()):
            text += f" (default {default})"
        if name in _FOLDERS:
            keywords = {"metavar": "FOLDER", **keywords}
        p.add_argument(flag, dest=name, default=argparse.SUPPRESS, required=name in required, help=text, **keywords)


def _typed(cls: type, name: str, hint: object) -> dict:
    """add_argument keywords for a field of a plain type: --flag/--no-flag for a bool."""
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float):
        return {"type": _positive(hint) if name in _POSITIVE else hint}
    if hint is str:
        return {}
    raise TypeError(f"{cls.__name__}.{name}: a field of type {hint} needs its syntax in cli._SYNTAX")


def _given(args: argparse.Namespace, cls: type) -> dict:
    """The fields of `cls` the command line set."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def _device(name: str) -> str:
    import torch

    try:
        kind = torch.device(name).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r}: use cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: PyTorch sees no CUDA GPU on this machine")
    return name


def _generate(args: argparse.Namespace) -> None:
    from openseedance import media
    from openseedance.engines import RunOptions
    from openseedance.pipeline import Pipeline
    from openseedance.request import GenerationRequest

    output = _writable_file(args.output)
    if output.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise UsageError(f"output must be an .mp4, .mov or .mkv file, got {output}")
    device = _device(args.device)
    pipe = Pipeline.from_pretrained(args.model, allow_faces=args.allow_faces, teacher=args.teacher).to(device)
    c = pipe.capabilities
    width, height = args.size or c.resolve_size(args.ratio)
    fps = args.fps or c.fps
    extra = _inputs(args, c.sample_rate)
    if args.soundtrack is not None:
        extra["audio"] = media.read_audio(args.soundtrack, sample_rate=c.sample_rate, channels=1)[0]
    if args.for_video is not None:
        extra["video"] = media.read_video(args.for_video, fps=fps, size=(height, width)).video
    if args.last_frame is not None:
        extra["last_frame"] = media.read_image(args.last_frame)
    if args.video:
        extra["videos"] = tuple(media.read_video(f, fps=fps, size=(height, width)) for f in args.video)
    duration = args.duration
    if (args.edit is None) != (args.window is None):
        raise UsageError("--edit and --window go together: --edit CLIP --window A:B")
    if args.backward and args.extend is None:
        raise UsageError("--backward goes with --extend CLIP")
    if args.extend is not None or args.edit is not None:
        clip = media.read_video(args.extend or args.edit, fps=fps, size=(height, width), sample_rate=c.sample_rate,
                                channels=1)  # fmt: skip
        length = len(clip.video) / fps
        extra["source"] = clip
        if args.extend is not None:  # the output is the whole clip: the source and what is added
            extra["extend"], duration = "backward" if args.backward else "forward", length + args.duration
        else:
            extra["edit_window"], duration = args.window, length
    request = GenerationRequest(prompt=args.prompt, duration=duration, width=width, height=height, fps=fps,
                                sample_rate=c.sample_rate, seed=args.seed, generate_audio=not args.no_audio,
                                visible_watermark=args.visible_watermark, **extra)  # fmt: skip
    options = RunOptions(steps=args.steps, solver=args.solver, guidance=args.guidance,
                         audio_guidance=args.audio_guidance, reference_guidance=args.reference_guidance,
                         guidance_rescale=args.guidance_rescale, shift=args.shift, bf16=args.bf16)  # fmt: skip
    result = pipe(request, options, progress=sys.stderr.isatty())
    result.write(output)
    total = sum(result.seconds.values())
    print(f"{output}: {width}x{height}, {duration:g} s at {fps:g} fps, {result.request['steps']} steps, "
          f"made in {total:.2f} s ({duration / total:.1f}x real time)")  # fmt: skip


def _stream(args: argparse.Namespace) -> None:
    import threading

    from openseedance import media
    from openseedance.engines import RunOptions
    from openseedance.live import Live, LiveConfig
    from openseedance.pipeline import Pipeline
    from openseedance.request import GenerationRequest

    to_stdout = args.output == "-"
    output = None if to_stdout else _writable_file(Path(args.output))
    if output is not None and output.suffix.lower() != ".mp4":
        raise UsageError(f"a live stream is written as a fragmented .mp4, got {output}")
    config = LiveConfig(chunk=args.chunk, context=args.context, duration=args.duration)
    pipe = Pipeline.from_pretrained(args.model, allow_faces=args.allow_faces, teacher=args.teacher).to(
        _device(args.device))
    c = pipe.capabilities
    width, height = args.size or c.resolve_size(args.ratio)
    fps = args.fps or c.fps
    extra = _inputs(args, c.sample_rate)
    request = GenerationRequest(prompt=args.prompt, width=width, height=height, fps=fps, sample_rate=c.sample_rate,
                                seed=args.seed, generate_audio=not args.no_audio,
                                visible_watermark=args.visible_watermark, **extra)  # fmt: skip
    options = RunOptions(steps=args.steps, guidance=args.guidance, audio_guidance=args.audio_guidance,
                         reference_guidance=args.reference_guidance, bf16=args.bf16)  # fmt: skip
    live = Live(pipe, request, config, options)

    def read_prompts() -> None:  # each line read is the prompt from the next chunk on
        for line in sys.stdin:
            if line.strip():
                try:
                    live.steer(line)
                    log.info("next prompt: %s", line.strip())
                except ValueError as err:
                    print(f"openseedance: ignored that prompt: {err}", file=sys.stderr)

    if sys.stdin is not None and not sys.stdin.closed:
        threading.Thread(target=read_prompts, name="prompts", daemon=True).start()
    target = sys.stdout.buffer if to_stdout else output
    interrupted = False
    try:
        with media.FragmentWriter(target, width, height, fps, None if args.no_audio else c.sample_rate) as out:
            try:
                for part in live:
                    out.write(part.clip)
                    log.info("chunk %d: %.2f s from %.2f s in %.2f s", part.index, part.clip.duration, part.start,
                             part.seconds["chunk"])  # fmt: skip
            except KeyboardInterrupt:  # the chunk being made is dropped; what was written is kept
                interrupted = True
    except BrokenPipeError:  # the player went away
        sys.stderr.close()  # nothing more can be reported through a closed pipe's shell
        return
    if output is None:
        print(f"streamed {live.seconds:.2f} s (marked; a manifest needs a file: -o FILE.mp4)", file=sys.stderr)
        return
    live.finish(output)
    stop = "stopped" if interrupted else "done"
    print(f"{output}: {width}x{height}, {live.seconds:.2f} s at {fps:g} fps in {len(live.timeline)} prompt(s), {stop}")


def _export(args: argparse.Namespace) -> None:
    import torch

    from openseedance.audio_vae import AudioAutoencoder
    from openseedance.checkpoint import load_component
    from openseedance.engines import RunOptions
    from openseedance.engines.bundled import TEACHER, BundledEngine
    from openseedance.video_vae import VideoAutoencoder

    engine = BundledEngine.from_pretrained(args.model)
    for folder, cls in ((args.video_decoder, VideoAutoencoder), (args.audio_decoder, AudioAutoencoder)):
        if folder is not None:
            engine.use_decoder(load_component(cls, folder))
    stored = engine.sampler(RunOptions(reference_guidance=args.reference_guidance, shift=args.shift))
    engine.config = dataclasses.replace(engine.config, reference_guidance=stored.reference_guidance,
                                        shift=stored.shift)  # fmt: skip
    _writable_dir(args.out)
    engine.save_pretrained(args.out, dtype=getattr(torch, args.dtype))
    if (args.model / TEACHER / "pipeline.json").is_file():  # a distilled model keeps its teacher
        teacher = BundledEngine.from_pretrained(args.model / TEACHER)
        teacher.save_pretrained(args.out / TEACHER, getattr(torch, args.dtype), autoencoders=False)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {size / 2**20:.1f} MiB ({args.dtype})")


def _bench_stage(args: argparse.Namespace) -> None:
    from openseedance.stage import bench
    from openseedance.stage.render import RenderConfig

    caps = bench.CAPABILITIES if args.capabilities == "all" else tuple(args.capabilities.split(","))
    config = RenderConfig(width=args.size[0], height=args.size[1], fps=args.fps, sample_rate=args.sample_rate)
    if args.out is not None:
        _writable_file(args.out)
    cases = bench.suite(caps, cases=args.cases, config=config)
    folder = Path(args.generator)
    if args.generator == "bundled" or (folder / "pipeline.json").is_file() or (folder / "model_index.json").is_file():
        from openseedance.pipeline import Pipeline, as_generator  # the bench measures a model; it never imports one

        generator = as_generator(Pipeline.from_pretrained(None if args.generator == "bundled" else args.generator))
    else:
        generator = bench.load_generator(args.generator, cases)
    result = bench.run(generator, cases, progress=sys.stderr.isatty())
    result["generator"] = args.generator
    print(bench.table(result, f"(generator: {args.generator}, {config.width}x{config.height}, {config.fps:g} fps)"))
    if args.out is not None:
        bench.save(result, args.out)
        print(f"results: {args.out}")


def _serve(args: argparse.Namespace) -> None:
    from openseedance.serve import server
    from openseedance.serve.api import ServeSettings
    from openseedance.serve.limits import InputLimits

    serving = args.command == "serve"
    if args.db is not None:  # a malformed or unreachable --db is reported before anything is made or started
        from openseedance.serve.jobs import open_store

        open_store(args.db).close()
    model = args.model
    if args.teacher:
        from openseedance.engines.bundled import teacher_folder

        model = str(teacher_folder(args.model))
    settings = ServeSettings(
        data_dir=args.data, model=model, allow_faces=args.allow_faces, threads_per_worker=args.threads,
        device=_device(args.device), db=args.db, results_dir=args.results,
        api_keys=server.api_keys(args.api_key, args.data) if serving else (),
        workers=args.workers if serving else 1,
        max_pending_per_key=args.max_pending if serving else 8,
        result_ttl=args.result_ttl if serving else 86400.0,
        limits=InputLimits(allow_http=serving and args.allow_http_inputs),
        stale_after=args.stale_after if serving else 20.0,
        callback_hosts=frozenset(args.callback_host) if serving else frozenset(),
        max_live_per_key=args.max_live if serving else 1,
        live_max_seconds=args.live_max_seconds if serving else 600.0,
        live_idle=args.live_idle,
    )  # fmt: skip
    if serving:
        if not 0 <= args.port <= 65535:
            raise UsageError(f"port must be 0..65535, got {args.port}")
        server.serve(settings, args.host, args.port)
    else:
        server.work(settings)


def _verify(args: argparse.Namespace) -> None:
    from openseedance.provenance.verify import verify

    report = verify(args.file)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        args.func(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, MediaError) as err:
        print(f"openseedance: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("openseedance: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
