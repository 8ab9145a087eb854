#!/usr/bin/env bash
# The bundled `tiny` model, from nothing: the two autoencoders and the transformer trained on the
# Stage, then exported in bfloat16 to src/openseedance/weights/tiny.
#
#   bash recipes/tiny.sh                 # CPU (each step resumes if stopped and re-run)
#   DEVICE=cuda bash recipes/tiny.sh     # one GPU
#
# Steps and batch sizes here and in the generator recipes (src/openseedance/train/recipes.py) are
# what the bundled weights were trained with; GEN_STEPS and V2_STEPS change the steps of the first
# and the third generator stage.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
RUNS=${RUNS:-runs}
VIDEO_STEPS=${VIDEO_STEPS:-1300}
AUDIO_STEPS=${AUDIO_STEPS:-2200}

openseedance train video-ae --preset tiny --out "$RUNS/video-ae-tiny" --steps "$VIDEO_STEPS" --batch-size 4 \
  --lr 1e-3 --checkpoint-every 50 --device "$DEVICE"
openseedance train audio-ae --preset tiny --out "$RUNS/audio-ae-tiny" --steps "$AUDIO_STEPS" --batch-size 8 \
  --lr 1e-3 --seconds 0.5 --checkpoint-every 100 --device "$DEVICE"
# The generator stages are named runs of src/openseedance/train/recipes.py (`--recipe`); each line
# adds where its inputs and outputs are. Two processes (DDP) of one thread each: on a 2-core CPU
# this measured faster than one process of two.
generator() {
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} torchrun --standalone --nproc_per_node="${NPROC:-2}" -m openseedance.cli \
    train generator --device "$DEVICE" "$@"
}
generator --recipe tiny-scratch --out "$RUNS/generator-tiny" --video-ae "$RUNS/video-ae-tiny/model" \
  --audio-ae "$RUNS/audio-ae-tiny/model" --cache "$RUNS/latents" ${GEN_STEPS:+--steps "$GEN_STEPS"}
# references (portraits and voices) joined the task mix: 200 steps of a 900-step schedule
generator --recipe tiny-references --out "$RUNS/generator-tiny-refs" --video-ae "$RUNS/video-ae-tiny/model" \
  --audio-ae "$RUNS/audio-ae-tiny/model" --cache "$RUNS/latents" --init "$RUNS/generator-tiny/pipeline" \
  --stop-after 200
# then per-shot captions for multi-shot clips as well
generator --recipe tiny-shots --out "$RUNS/generator-tiny-v2" --video-ae "$RUNS/video-ae-tiny/model" \
  --audio-ae "$RUNS/audio-ae-tiny/model" --cache "$RUNS/latents" --init "$RUNS/generator-tiny-refs/pipeline" \
  ${V2_STEPS:+--steps "$V2_STEPS"}
# the decoders alone, trained further with the encoders frozen (the latents the transformer learnt
# stay exactly the same); the bundled ones were started with 2200 / 4000 steps and shortened to
# these totals when resumed at steps 300 / 600
openseedance train video-ae --preset tiny --init "$RUNS/video-ae-tiny/model" --decoder-only \
  --out "$RUNS/video-dec-tiny" --steps "${VIDEO_DEC_STEPS:-1600}" --batch-size 4 --lr 5e-4 --seed 1 \
  --checkpoint-every 100 --device "$DEVICE"
openseedance train audio-ae --preset tiny --init "$RUNS/audio-ae-tiny/model" --decoder-only \
  --out "$RUNS/audio-dec-tiny" --steps "${AUDIO_DEC_STEPS:-3000}" --batch-size 8 --seconds 0.5 --lr 5e-4 \
  --seed 1 --checkpoint-every 100 --device "$DEVICE"
openseedance export "$RUNS/generator-tiny-v2/pipeline" src/openseedance/weights/tiny --dtype bfloat16 \
  --video-decoder "$RUNS/video-dec-tiny/model" --audio-decoder "$RUNS/audio-dec-tiny/model" --reference-guidance 12
# Then the decoders of that bundle, continued: first on one GPU at batch 32 (the video-dec and
# audio-dec runs of recipes/tiny_ae_gpu.sh, whose 400 s budget gave 540 and 557 steps; they ran
# before the detail and transient loss terms existed, hence weight 0 here; on a CPU they are slow),
# then on the CPU, one thread each, with those terms in the loss.
W=src/openseedance/weights/tiny
DEC_DEVICE=${DEC_DEVICE:-cuda}
openseedance train video-ae --preset tiny --init "$W/video_ae" --decoder-only --out "$RUNS/gpu-ae/video-dec" \
  --steps 540 --batch-size 32 --lr 5e-4 --seed 1 --workers 5 --checkpoint-every 500 --loss-weights detail=0 \
  --device "$DEC_DEVICE"
openseedance train audio-ae --preset tiny --init "$W/audio_ae" --decoder-only --out "$RUNS/gpu-ae/audio-dec" \
  --steps 557 --batch-size 32 --seconds 0.5 --lr 5e-4 --seed 1 --workers 2 --checkpoint-every 500 \
  --loss-weights transient=0 --device "$DEC_DEVICE"
openseedance train video-ae --preset tiny --init "$RUNS/gpu-ae/video-dec/model" --decoder-only \
  --out "$RUNS/video-dec-detail" --steps 1200 --batch-size 4 --lr 3e-4 --seed 3 --checkpoint-every 50 --device "$DEVICE"
openseedance train audio-ae --preset tiny --init "$RUNS/gpu-ae/audio-dec/model" --decoder-only \
  --out "$RUNS/audio-dec-transient" --steps 2400 --batch-size 8 --seconds 0.5 --lr 3e-4 --seed 2 \
  --checkpoint-every 100 --device "$DEVICE"
openseedance export "$W" "$W" --dtype bfloat16 \
  --video-decoder "$RUNS/video-dec-detail/model" --audio-decoder "$RUNS/audio-dec-transient/model"
# Last, the transformer trained further with references in half the task mix (the autoencoders stay,
# so the latent cache is made with the bundled ones), then exported over the bundle.
generator --recipe tiny-references-half --out "$RUNS/generator-tiny-refs-half" --init "$W" --video-ae "$W/video_ae" \
  --audio-ae "$W/audio_ae" --cache "$RUNS/latents-bundled"
openseedance export "$RUNS/generator-tiny-refs-half/pipeline" "$W" --dtype bfloat16 --reference-guidance 12
# The thin video decoder (widths (8, 32, 128)) trained against the frozen encoder: 5,400 steps on
# 9-frame windows, then 2,400 on 25-frame windows, on one CPU thread each; then the bundle decodes with it.
openseedance train video-ae --preset tiny-thin --init "$W/video_ae" --decoder-only --out "$RUNS/thin" \
  --steps 5400 --checkpoint-every 200 --seed 11 --device "$DEVICE"
openseedance train video-ae --preset tiny-thin --init "$RUNS/thin/model" --decoder-only --out "$RUNS/thin25" \
  --frames 25 --batch-size 2 --steps 2400 --lr 3e-4 --warmup 50 --checkpoint-every 200 --seed 12 --device "$DEVICE"
openseedance export "$W" "$W" --dtype bfloat16 --video-decoder "$RUNS/thin25/model"
# Last, the 2-step student distilled from that model, which it replaces as the default: 384 pairs and
# 300 steps, then the same run continued to 1,536 pairs and 1,100 steps (benchmarks/student/). The
# export carries the teacher along in teacher/ (--teacher).
openseedance train distill --out "$RUNS/student2" --clips 128 --pairs 384 --steps 300 --batch-size 8 --lr 3e-4 \
  --warmup 20 --checkpoint-every 25 --device "$DEVICE"
openseedance train distill --out "$RUNS/student2" --clips 128 --pairs 1536 --steps 1100 --batch-size 8 --lr 3e-4 \
  --warmup 20 --checkpoint-every 25 --device "$DEVICE"
openseedance export "$RUNS/student2/pipeline" "$W" --dtype bfloat16
python -c "import json, sys; p = sys.argv[1]; c = json.load(open(p)); c['distilled_from'] = 'bundled:tiny/teacher'; \
json.dump(c, open(p, 'w'), indent=2)" "$W/pipeline.json"
