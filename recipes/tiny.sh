#!/usr/bin/env bash
# The bundled `tiny` model, from nothing: the two autoencoders and the transformer trained on the
# Stage, then exported in bfloat16 to src/openseedance/weights/tiny.
#
#   bash recipes/tiny.sh                 # CPU (each step resumes if stopped and re-run)
#   DEVICE=cuda bash recipes/tiny.sh     # one GPU
#
# Steps and batch sizes below are what the bundled weights were trained with.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
RUNS=${RUNS:-runs}
VIDEO_STEPS=${VIDEO_STEPS:-1300}
AUDIO_STEPS=${AUDIO_STEPS:-2200}
GEN_STEPS=${GEN_STEPS:-3000}

openseedance train video-ae --preset tiny --out "$RUNS/video-ae-tiny" --steps "$VIDEO_STEPS" --batch-size 4 \
  --lr 1e-3 --checkpoint-every 50 --device "$DEVICE"
openseedance train audio-ae --preset tiny --out "$RUNS/audio-ae-tiny" --steps "$AUDIO_STEPS" --batch-size 8 \
  --lr 1e-3 --seconds 0.5 --checkpoint-every 100 --device "$DEVICE"
openseedance train generator --preset tiny --out "$RUNS/generator-tiny" --video-ae "$RUNS/video-ae-tiny/model" \
  --audio-ae "$RUNS/audio-ae-tiny/model" --clips 1024 --steps "$GEN_STEPS" --batch-size 8 --lr 5e-4 \
  --checkpoint-every 100 --device "$DEVICE"
openseedance export "$RUNS/generator-tiny/pipeline" src/openseedance/weights/tiny --dtype bfloat16
