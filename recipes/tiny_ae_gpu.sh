#!/usr/bin/env bash
# The tiny autoencoders on one GPU within a time budget, four runs side by side:
#   video-ae, audio-ae        from nothing (a new latent space: a generator must be trained on it)
#   video-dec, audio-dec      the decoders alone, from the bundled autoencoders with their encoders
#                             frozen (the bundled transformer keeps working and decodes sharper)
#
#   BUDGET=450 bash recipes/tiny_ae_gpu.sh runs/gpu-ae
#
# Each run first trains a few steps to measure its speed beside the others, then takes as many
# steps as fit in BUDGET seconds; worker processes render the Stage clips ahead of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-ae}
BUDGET=${BUDGET:-450}
DEVICE=${DEVICE:-cuda}
PROBE=${PROBE:-30}
W=src/openseedance/weights/tiny
mkdir -p "$OUT"

declare -A ARGS=(
  [video-ae]="video-ae --batch-size 32 --lr 1e-3 --workers 5"
  [video-dec]="video-ae --batch-size 32 --lr 5e-4 --workers 5 --init $W/video_ae --decoder-only --seed 1"
  [audio-ae]="audio-ae --batch-size 32 --seconds 0.5 --lr 1e-3 --workers 2"
  [audio-dec]="audio-ae --batch-size 32 --seconds 0.5 --lr 5e-4 --workers 2 --init $W/audio_ae --decoder-only --seed 1"
)
train() {  # name steps folder
  # shellcheck disable=SC2086
  openseedance train ${ARGS[$1]} --preset tiny --device "$DEVICE" --steps "$2" --out "$3" \
    --checkpoint-every 500 >"$3.out" 2>&1
}

for name in "${!ARGS[@]}"; do
  (start=$(date +%s%N); train "$name" "$PROBE" "$OUT/probe-$name"
   echo $((($(date +%s%N) - start) / 1000000)) >"$OUT/probe-$name.ms") &
done
wait
for name in "${!ARGS[@]}"; do
  ms=$(cat "$OUT/probe-$name.ms")
  steps=$((PROBE * BUDGET * 1000 / ms))
  steps=$((steps > PROBE ? steps : PROBE))
  echo "$name: $PROBE steps in $ms ms beside the others (start-up included) -> $steps steps"
  (train "$name" "$steps" "$OUT/$name") &
done
wait
for name in "${!ARGS[@]}"; do
  echo "$name: $(tail -n 1 "$OUT/$name/log.jsonl")"
done
