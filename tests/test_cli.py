"""The `openseedance` command: every --help, real files out, one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

from openseedance.cli import UsageError, build_parser, main

HELP = [
    [],
    ["generate"],
    ["stream"],
    ["stage"],
    ["stage", "sample"],
    ["stage", "render"],
    ["stage", "probe"],
    ["train"],
    ["train", "video-ae"],
    ["train", "audio-ae"],
    ["train", "generator"],
    ["export"],
    ["bench"],
    ["bench", "stage"],
    ["serve"],
    ["worker"],
]


@pytest.mark.parametrize("words", HELP, ids=lambda w: " ".join(w) or "top")
def test_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage: openseedance" in capsys.readouterr().out


def test_serve_and_worker_refuse_an_unknown_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "worker"):
        assert main([command, "--device", "tpu", "--data", str(tmp_path / "data")]) == 2
        assert "unknown device 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_serve_and_worker_name_a_bad_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [("redis://h/0", "unsupported database redis://"), ("postgresql://u@[::1/jobs", "malformed database URL"),
             ("postgresql://u:pw@127.0.0.1:1/jobs", "cannot reach the PostgreSQL database postgresql://u:***@127.0.0.1:1")]
    for command in ("serve", "worker"):
        for db, message in cases:
            assert main([command, "--db", db, "--data", str(tmp_path / "data")]) == 1
            err = capsys.readouterr().err
            assert message in err and ":pw@" not in err
    assert not (tmp_path / "data").exists()


TRAIN = [["train", "video-ae"], ["train", "audio-ae"], ["train", "generator", "--video-ae", "v", "--audio-ae", "a"]]


@pytest.mark.parametrize("words", TRAIN, ids=lambda w: w[1])
def test_train_refuses_a_device_it_cannot_use(words: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    devices = ["tpu", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        assert main([*words, "--out", str(tmp_path / "run"), "--device", device]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert ("unknown device" in err) if device != "cuda" else ("PyTorch sees no CUDA GPU" in err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("words", "message"), [
    (["video-ae", "--loss-weights", "transient=1"], "video-ae has no loss term 'transient'"),
    (["audio-ae", "--loss-weights", "transient"], "'transient': give TERM=WEIGHT"),
    (["audio-ae", "--loss-weights", "kl=-1"], "loss weight kl=-1.0: give a number >= 0"),
])  # fmt: skip
def test_train_refuses_bad_loss_weights(words: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["train", *words, "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["video-ae", "audio-ae"])
def test_loss_weights_help_names_every_term(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    from openseedance.train.autoencoders import loss_terms

    with pytest.raises(SystemExit):
        main(["train", kind, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = text[text.rindex("--loss-weights TERM=W,..."):]  # the option's entry, not the usage line
    assert all(term in listed.split("e.g.")[0] for term in loss_terms(kind))


@pytest.mark.parametrize("kind", ["video-ae", "audio-ae"])
def test_preset_help_names_every_preset(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    # the help lists the presets as fixed text, to keep torch out of building the parser
    from openseedance.audio_vae import PRESETS as AUDIO_PRESETS
    from openseedance.video_vae import PRESETS as VIDEO_PRESETS

    with pytest.raises(SystemExit):
        main(["train", kind, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = text[text.rindex("--preset PRESET"):].split("--out")[0]
    assert all(name in listed for name in (VIDEO_PRESETS if kind == "video-ae" else AUDIO_PRESETS))


def test_recipe_and_task_help_name_every_recipe_and_task(capsys: pytest.CaptureFixture[str]) -> None:
    # both listed as fixed text, like the presets
    from openseedance.conditioning import TRAINING_TASKS as TASKS
    from openseedance.train.recipes import RECIPES

    with pytest.raises(SystemExit):
        main(["train", "generator", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at hyphens
    recipes = text[text.rindex("--recipe NAME"):].split("--out")[0]
    tasks = text[text.rindex("--tasks TASK=W,..."):].split("--init")[0]
    assert all(name in recipes for name in RECIPES) and all(task in tasks for task in TASKS)


def test_building_the_parser_loads_no_torch() -> None:
    code = "import sys; from openseedance.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def _as_options(cfg, skip: tuple[str, ...] = ()) -> list[str]:
    """A run config written as the command-line options that give each of its fields (but `skip`)."""
    from openseedance.conditioning import TRAINING_TASKS as TASKS

    words = []
    for field in dataclasses.fields(cfg):
        name, value, flag = field.name, getattr(cfg, field.name), "--" + field.name.replace("_", "-")
        if name in skip:
            continue
        if name == "width":
            words += ["--size", f"{cfg.width}x{cfg.height}"]
        elif name == "bf16" and not isinstance(field.default, bool):
            words += ["--precision", {None: "auto", True: "bf16", False: "fp32"}[value]]
        elif name == "tasks":
            words += [flag, ",".join(f"{task}={w!r}" for task, w in zip(TASKS, value, strict=True))]
        elif name == "loss_weights":
            words += [flag, ",".join(f"{term}={w!r}" for term, w in value)]
        elif isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif name not in ("height", "kind"):  # height: with --size; kind: the subcommand
            words += [flag, str(value)]
    return words


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list:
    """The run configs the train commands would have trained, in place of training."""
    from openseedance.train import autoencoders, generator

    configs = []

    def train(cfg, out, progress=True, stop_after=None):
        configs.append(cfg)
        return Path(out)

    monkeypatch.setattr(generator, "train", train)
    monkeypatch.setattr(autoencoders, "train", train)
    return configs


def test_every_generator_field_is_set_from_the_command_line(trained: list, tmp_path: Path) -> None:
    from openseedance.train.config import GenTrainConfig

    changed = GenTrainConfig(
        preset="debug", video_ae="v", audio_ae="a", text_encoder="encoder", data="clips", clips=3, cache="lat",
        duration=2.5, width=96, height=48, fps=8.0, sample_rate=22050, steps=7, batch_size=3, lr=1e-4, warmup=5,
        min_lr_ratio=0.2, weight_decay=0.05, grad_clip=0.5, ema_decay=0.9, bf16=True, text_dropout=0.2,
        tasks=(0.5, 0.0, 0.0, 0.0, 0.0, 0.25, 0.25), init="model", shots=False,
        seed=4, checkpoint_every=5, log_every=2, device="cpu:0", fsdp=True, activation_checkpointing="full",
        compile=True,
    )  # fmt: skip
    assert [f.name for f in dataclasses.fields(changed) if getattr(changed, f.name) == f.default] == []
    assert main(["train", "generator", "--out", str(tmp_path / "run"), *_as_options(changed)]) == 0
    assert trained == [changed]


@pytest.mark.parametrize("kind", ["video-ae", "audio-ae"])
def test_every_autoencoder_field_is_set_from_the_command_line(kind: str, trained: list, tmp_path: Path) -> None:
    from openseedance.train.config import AETrainConfig

    window = {"width": 96, "height": 48, "fps": 8.0, "frames": 13} if kind == "video-ae" else {"seconds": 0.5}
    changed = AETrainConfig(
        kind=kind, preset="debug", data="clips", steps=7, batch_size=3, lr=1e-4, warmup=5, min_lr_ratio=0.2,
        weight_decay=0.05, grad_clip=0.5, seed=4, bf16=True, checkpoint_every=5, log_every=2, device="cpu:0",
        init="model", decoder_only=True, workers=2, loss_weights=(("kl", 0.0),), **window,
    )  # fmt: skip
    # every field is changed but the other kind's window, which this kind has no option for, and the
    # warm start, which cannot go with --init (below)
    other = ("seconds",) if kind == "video-ae" else ("width", "height", "fps", "frames")
    unchanged = [f.name for f in dataclasses.fields(changed) if getattr(changed, f.name) == f.default]
    assert unchanged == [*other, "warm_start"]
    assert main(["train", kind, "--out", str(tmp_path / "run"), *_as_options(changed, skip=other)]) == 0
    assert trained == [changed]
    wrong = ["--seconds", "1"] if kind == "video-ae" else ["--size", "96x48"]
    with pytest.raises(UsageError, match=f"unrecognized arguments: {wrong[0]}"):
        build_parser().parse_args(["train", kind, "--out", "run", *wrong])
    assert main(["train", kind, "--out", str(tmp_path / "run"), "--warm-start", "other"]) == 0
    assert trained[-1].warm_start == "other"


def test_a_recipe_round_trips_through_the_command_line(trained: list, tmp_path: Path) -> None:
    from openseedance.train.recipes import RECIPES

    places = {"video_ae": "v", "audio_ae": "a"}
    for name, recipe in RECIPES.items():
        expected = dataclasses.replace(recipe, **places)
        assert main(["train", "generator", "--recipe", name, "--out", str(tmp_path), "--video-ae", "v",
                     "--audio-ae", "a", "--device", "cpu"]) == 0  # fmt: skip
        assert trained.pop() == dataclasses.replace(expected, device="cpu")
        # every value of it, written out as options, gives it again without the recipe
        assert main(["train", "generator", "--out", str(tmp_path), *_as_options(expected), "--device", "cpu"]) == 0
        assert trained.pop() == dataclasses.replace(expected, device="cpu")
    # options override the recipe's values
    assert main(["train", "generator", "--recipe", "tiny-shots", "--out", str(tmp_path), "--video-ae", "v",
                 "--audio-ae", "a", "--steps", "5", "--no-shots"]) == 0  # fmt: skip
    assert trained.pop() == dataclasses.replace(RECIPES["tiny-shots"], **places, steps=5, shots=False)


@pytest.mark.parametrize(("words", "message"), [
    (["--recipe", "tiny-large"], "unknown recipe 'tiny-large'; recipes: debug, tiny-scratch"),
    (["--size", "64"], "argument --size: size must look like 64x64, got '64'"),
    (["--precision", "half"], "argument --precision: choose auto, bf16 or fp32, got 'half'"),
    (["--tasks", "t2av=1,dance=1"], "argument --tasks: unknown task 'dance'"),
    (["--warmup", "ten"], "argument --warmup: invalid int value: 'ten'"),
    (["--fps", "-12"], "argument --fps: must be greater than zero"),
    (["--ema-decay", "1.5"], "ema_decay must be within 0..1, got 1.5"),
    (["--shots", "no"], "unrecognized arguments: no"),
])  # fmt: skip
def test_train_generator_refuses_bad_options(words: list[str], message: str, tmp_path: Path, trained: list,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["train", "generator", "--out", str(tmp_path / "run"), "--video-ae", "v", "--audio-ae", "a",
                 *words]) != 0  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() and not trained


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "openseedance.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("openseedance ")


def test_stage_sample_writes_a_dataset_folder(tmp_path: Path) -> None:
    assert main(["stage", "sample", "-n", "2", "--out", str(tmp_path / "ds"), "--seed", "7", "--references"]) == 0
    for seed in (7, 8):
        stem = tmp_path / "ds" / f"clip_{seed:06d}"
        with av.open(str(stem.with_suffix(".mp4"))) as f:
            assert f.streams.video[0].codec_context.name == "h264"
            assert f.streams.audio[0].codec_context.name == "aac"
        record = json.loads(stem.with_suffix(".json").read_text())
        assert record["caption"] == stem.with_suffix(".txt").read_text().strip()
        assert record["scene"]["seed"] == seed
        assert len(record["truth"]["centers"]) == 48
        refs = Path(f"{stem}.refs")
        n = len(record["scene"]["characters"])
        assert sorted(p.name for p in refs.iterdir()) == sorted(
            [*(f"image{i}.png" for i in range(1, n + 1)), *(f"audio{i}.wav" for i in range(1, n + 1)), "video1.mp4"]
        )


def test_stage_render_then_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clip.mp4"
    assert main(["stage", "render", "--seed", "3", "-o", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert main(["stage", "sample", "-n", "1", "--seed", "3", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["stage", "probe", str(out), "--scene", str(tmp_path / "clip_000003.json"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(v is None or v >= 0.9 for v in report["scores"].values())


def test_bench_stage_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = main(
        ["bench", "stage", "--generator", "truth", "--cases", "1", "--capabilities", "t2av,a2v", "--out", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "| t2av |" in text and "| a2v |" in text
    rows = json.loads(out.read_text())["rows"]
    assert rows["t2av"]["attribute"] >= 0.99


BAD = [
    (["stage", "render", "--duration", "0"], "greater than zero"),
    (["stage", "render", "--duration", "-2"], "greater than zero"),
    (["stage", "render", "--duration", "0.5"], "at least 1 second"),
    (["stage", "render", "--size", "8x8"], "16..4096"),
    (["stage", "render", "--size", "big"], "size must look like"),
    (["stage", "render", "--fps", "abc"], "expected a number"),
    (["stage", "render", "--shots", "9"], "num_shots"),
    (["stage", "render", "-o", "/nonexistent-dir/x.mp4"], "does not exist"),
    (["stage", "sample", "-n", "0", "--out", "x"], "greater than zero"),
    (["stage", "render", "--frobnicate"], "unrecognized arguments"),
    (["paint"], "invalid choice"),
    (["bench", "stage", "--generator", "nonsense"], "unknown generator"),
    (["bench", "stage", "--capabilities", "t2av,teleport"], "unknown capabilities"),
]


@pytest.mark.parametrize(("words", "message"), BAD, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_bad_input_gets_one_line(words: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(words) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1, err


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["stage", "sample", "-n", "1", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot create output directory" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def debug_model(tmp_path_factory) -> Path:
    from openseedance.pipeline import Pipeline

    return Pipeline.untrained("debug").engine.save_pretrained(tmp_path_factory.mktemp("model") / "debug")


def test_generate_writes_mp4_with_audio(debug_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen.mp4"
    code = main(["generate", "a green square hops", "--model", str(debug_model), "-o", str(out), "--duration", "1",
                 "--steps", "1", "--ratio", "2:1", "--seed", "5", "--guidance-rescale", "0.5"])  # fmt: skip
    assert code == 0 and "real time" in capsys.readouterr().out
    with av.open(str(out)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        meta = json.loads(container.metadata["openseedance"])
    assert kinds == {"video": "h264", "audio": "aac"}
    assert meta["seed"] == 5 and meta["width"] == 88 and meta["height"] == 48 and meta["guidance_rescale"] == 0.5


GENERATE_BAD = [
    (["generate", ""], "prompt is empty"),
    (["generate", "x", "--duration", "99"], "duration must be"),
    (["generate", "x", "--size", "60x60"], "multiple of 8"),
    (["generate", "x", "--ratio", "wide"], "ratio must look like"),
    (["generate", "x", "-o", "clip.gif"], "must be an .mp4"),
    (["generate", "@image2 waves"], "cites @image2 but no reference images were given"),
    (["generate", "x", "--device", "tpu"], "unknown device 'tpu'"),
    (["generate", "x", "--guidance-rescale", "2"], "rescale must be in [0, 1]"),
    (["generate", "x", "--reference-guidance", "-1"], "reference guidance must be >= 0"),
    (["generate", "x", "--guidance", "nan"], "video guidance must be >= 0, got nan"),
    (["generate", "x", "--shift", "0"], "shift must be > 0"),
    *([(["generate", "x", "--device", "cuda"], "PyTorch sees no CUDA GPU")] if not torch.cuda.is_available() else []),
]


@pytest.mark.parametrize(("words", "message"), GENERATE_BAD, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_generate_bad_input_leaves_no_file(
    words: list[str], message: str, debug_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["-o", str(tmp_path / "out.mp4")] if "-o" not in words else []
    args = [*words[:1], *words[1:], *target, "--model", str(debug_model)]
    if "-o" in words:
        args[args.index("-o") + 1] = str(tmp_path / words[words.index("-o") + 1])
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_generate_with_reference_image_and_voice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from openseedance import media
    from openseedance.stage.render import portrait, voice_sample
    from openseedance.stage.scene import Identity, Voice

    image = media.write_image(tmp_path / "me.png", portrait(Identity("pink", "diamond", "spotted", "big")))
    voice = media.write_audio(tmp_path / "me.wav", voice_sample(Voice("high", "nasal"), seconds=2.5), 16000)
    out = tmp_path / "refs.mp4"
    code = main(["generate", "image 1 hops and says hello in the voice of @audio1", "--image", str(image),
                 "--audio", str(voice), "-o", str(out), "--duration", "2", "--steps", "2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    meta = json.loads(media.read_metadata(out)["openseedance"])
    assert meta["task"] == "references" and meta["prompt"].startswith("image 1 hops")
    short = media.write_audio(tmp_path / "short.wav", voice_sample(Voice("high", "nasal"), seconds=1.0), 16000)
    assert main(["generate", "@image1 hops", "--image", str(image), "--audio", str(short), "-o", str(out)]) != 0
    assert "@audio1 lasts 1.00 s; reference audio must last 2-15 s" in capsys.readouterr().err


def test_generate_missing_model_and_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "x", "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "a.mp4")]) == 1
    assert "not a model folder" in capsys.readouterr().err
    assert main(["generate", "x", "-o", str(tmp_path / "missing" / "a.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_halves_the_weights(debug_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from openseedance.pipeline import Pipeline

    assert main(["export", str(debug_model), str(tmp_path / "half")]) == 0
    size = sum(f.stat().st_size for f in (tmp_path / "half").rglob("*.safetensors"))
    full = sum(f.stat().st_size for f in debug_model.rglob("*.safetensors"))
    assert size < 0.6 * full
    half = Pipeline.from_pretrained(tmp_path / "half").engine
    assert half.transformer.inputs["video"].weight.dtype.is_floating_point


def test_export_stores_sampler_defaults_and_refuses_bad_ones(debug_model: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from openseedance.engines import RunOptions
    from openseedance.pipeline import Pipeline

    assert main(["export", str(debug_model), str(tmp_path / "s"), "--shift", "4"]) == 0
    assert Pipeline.from_pretrained(tmp_path / "s").engine.sampler(RunOptions()).shift == 4.0
    assert main(["export", str(debug_model), str(tmp_path / "bad"), "--shift", "-1"]) == 1
    assert "shift must be > 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["export", str(debug_model), str(tmp_path / "bad"), "--reference-guidance", "-1"]) == 1
    assert "reference guidance must be >= 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_export_with_a_fine_tuned_decoder(debug_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`export --video-decoder DIR` takes a decoder trained on the model's own encoder; an
    autoencoder with another encoder is refused and nothing is written."""
    from openseedance.checkpoint import load_component, save_component
    from openseedance.video_vae import VideoAutoencoder

    tuned = load_component(VideoAutoencoder, debug_model / "video_ae")
    with torch.no_grad():
        for param in tuned.decoder.parameters():
            param.add_(0.01)
    save_component(tuned, tmp_path / "tuned")
    assert main(["export", str(debug_model), str(tmp_path / "new"), "--video-decoder", str(tmp_path / "tuned"),
                 "--reference-guidance", "5"]) == 0
    assert json.loads((tmp_path / "new" / "pipeline.json").read_text())["reference_guidance"] == 5.0
    assert json.loads((tmp_path / "new" / "pipeline.json").read_text())["shift"] is None
    new = load_component(VideoAutoencoder, tmp_path / "new" / "video_ae")
    assert torch.equal(new.decoder.conv_out.conv.weight, tuned.decoder.conv_out.conv.weight.bfloat16().float())
    assert torch.equal(new.encoder.conv_out.conv.weight, tuned.encoder.conv_out.conv.weight.bfloat16().float())

    with torch.no_grad():
        tuned.encoder.conv_in.conv.weight.add_(0.01)
    save_component(tuned, tmp_path / "other")
    capsys.readouterr()
    assert main(["export", str(debug_model), str(tmp_path / "no"), "--video-decoder", str(tmp_path / "other")]) == 1
    assert "encodes differently" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_bundled_model_is_small_and_half_precision() -> None:
    from safetensors import safe_open

    from openseedance.engines.bundled import BUNDLED

    files = list(BUNDLED.rglob("*.safetensors"))
    assert {f.parent.name for f in files} == {"transformer", "video_ae", "audio_ae"}
    assert sum(f.stat().st_size for f in BUNDLED.rglob("*") if f.is_file()) < 50 * 2**20
    for f in files:
        with safe_open(str(f), "pt") as weights:
            names = list(weights.keys())
            assert all(weights.get_slice(k).get_dtype() == "BF16" for k in names)


def test_the_bundled_model_is_a_student_with_its_teacher_one_flag_away(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from openseedance import media
    from openseedance.engines import read_card
    from openseedance.engines.bundled import BUNDLED
    from openseedance.pipeline import Pipeline

    student, teacher = Pipeline.from_pretrained(), Pipeline.from_pretrained(teacher=True)
    assert (student.model_id, teacher.model_id) == ("bundled:tiny", "bundled:tiny/teacher")
    assert (student.engine.config.steps, student.engine.config.guidance) == (2, 1.0)
    assert student.engine.config.distilled_from == teacher.model_id
    assert (teacher.engine.config.steps, teacher.engine.config.reference_guidance) == (8, 12.0)
    assert teacher.engine.video_ae is not student.engine.video_ae  # loaded apart, from the same files
    assert read_card(BUNDLED / "teacher") == teacher.capabilities  # read without loading, like any model folder
    assert dataclasses.replace(teacher.capabilities, steps=2) == student.capabilities  # the same tasks
    out = tmp_path / "teacher.mp4"
    assert main(["generate", "a red circle jumps", "-o", str(out), "--teacher", "--steps", "1", "--duration", "1"]) == 0
    meta = json.loads(media.read_metadata(out)["openseedance"])
    assert (meta["model"], meta["steps"]) == ("bundled:tiny/teacher", 1)
    capsys.readouterr()
    assert main(["verify", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "bundled:tiny/teacher"


def test_generate_with_no_other_argument(tmp_path: Path) -> None:
    """The README's main job: the console script, the bundled model, only a prompt and -o."""
    done = subprocess.run(["openseedance", "generate", "a red circle jumps and says hello", "-o", "out.mp4"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with av.open(str(tmp_path / "out.mp4")) as container:
        video = container.streams.video[0]
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert (video.codec_context.width, video.codec_context.height) == (64, 64)
        assert abs(float(container.duration / av.time_base) - 4.0) < 0.2
