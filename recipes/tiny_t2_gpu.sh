#!/usr/bin/env bash
# A candidate next bundle on one GPU, in one call: a `tiny-t2` video autoencoder (a latent per 2
# frames, which keeps the mouth movement that `tiny` loses within a latent), then the bundled
# transformer trained further on its latents (the bundled audio autoencoder stays, so the sound
# side keeps what it learnt), exported in bfloat16 and packed into parts under 16 MiB.
#
#   bash recipes/tiny_t2_gpu.sh runs/t2 "$OUT"          # about 9 minutes on one H100/H200
#   cat "$OUT"/bundle.tar.part-* | tar -x -C runs/t2    # then: runs/t2/bundle is a model folder
#
# Each training stage first trains a few steps to measure its speed, then takes the steps that fit
# its budget in seconds. The autoencoder is warm-started from the bundled `tiny` one (which it
# matches before its first step); VIDEO_AE=FOLDER starts it from a trained tiny-t2 one instead
# (AE_BUDGET=0: use it as it is). AE_LR is its peak learning rate: 1e-3 by default, which at
# batch 16 measured better than 3e-4 on the same clips (benchmarks/video_ae/, "Batch 16").
# The generator stage is the `tiny-gpu` recipe (src/openseedance/train/recipes.py); GEN_BATCH, CLIPS
# and TASKS (TASK=W,...) override its batch size, latent-cache clips and task mix, and GEN_FLAGS
# adds options to it (e.g. GEN_FLAGS="--lr 3e-4"). On a CPU, small budgets run the same path as a
# check:
#   DEVICE=cpu AE_BUDGET=20 GEN_BUDGET=20 AE_BATCH=2 GEN_BATCH=2 CLIPS=8 PROBE=3 WORKERS=1 \
#     bash recipes/tiny_t2_gpu.sh runs/t2-check runs/t2-check/out
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/t2}
OUT=${2:-$RUN/out}
DEVICE=${DEVICE:-cuda}
AE_BUDGET=${AE_BUDGET:-170}
GEN_BUDGET=${GEN_BUDGET:-200}
AE_BATCH=${AE_BATCH:-32}
PROBE=${PROBE:-30}
WORKERS=${WORKERS:-12}
W=src/openseedance/weights/tiny
mkdir -p "$RUN" "$OUT"

steps_for() {  # BUDGET LOG: the steps that fit BUDGET seconds at the probe's median step time (+10%)
  python - "$1" "$2" "$PROBE" <<'EOF'
import json, statistics, sys
budget, log, probe = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
seconds = statistics.median(json.loads(line)["seconds"] for line in open(log))
print(max(probe, int(budget / (1.1 * seconds))))
EOF
}

video_ae=(openseedance train video-ae --preset tiny-t2 --batch-size "$AE_BATCH" --lr "${AE_LR:-1e-3}" --workers "$WORKERS"
          --device "$DEVICE" --checkpoint-every 200)
if [ -n "${VIDEO_AE:-}" ]; then video_ae+=(--init "$VIDEO_AE"); else video_ae+=(--warm-start "$W/video_ae"); fi
if [ "$AE_BUDGET" -gt 0 ]; then
  "${video_ae[@]}" --steps "$PROBE" --out "$RUN/probe-video-ae" >"$RUN/probe-video-ae.out" 2>&1
  AE_STEPS=$(steps_for "$AE_BUDGET" "$RUN/probe-video-ae/log.jsonl")
  echo "video-ae: $AE_STEPS steps"
  "${video_ae[@]}" --steps "$AE_STEPS" --out "$RUN/video-ae" >"$RUN/video-ae.out" 2>&1
  VAE="$RUN/video-ae/model"
else
  VAE=${VIDEO_AE:?AE_BUDGET=0 needs VIDEO_AE=FOLDER}
fi

generator=(openseedance train generator --recipe tiny-gpu --init "$W" --video-ae "$VAE" --audio-ae "$W/audio_ae"
           --cache "$RUN/latents" --device "$DEVICE" ${CLIPS:+--clips "$CLIPS"} ${GEN_BATCH:+--batch-size "$GEN_BATCH"}
           ${TASKS:+--tasks "$TASKS"})
read -r -a extra <<<"${GEN_FLAGS:-}"
generator+=("${extra[@]}")
# the probe also encodes the latent cache, which the run then reads
"${generator[@]}" --steps "$PROBE" --out "$RUN/probe-generator" >"$RUN/probe-generator.out" 2>&1
GEN_STEPS=$(steps_for "$GEN_BUDGET" "$RUN/probe-generator/log.jsonl")
echo "generator: $GEN_STEPS steps"
"${generator[@]}" --steps "$GEN_STEPS" --out "$RUN/generator" >"$RUN/generator.out" 2>&1

rm -rf "$RUN/bundle"
openseedance export "$RUN/generator/pipeline" "$RUN/bundle" --dtype bfloat16 --reference-guidance 12
tar -C "$RUN" -cf - bundle | split -b 15M - "$OUT/bundle.tar.part-"
tail -n 1 "$RUN/video-ae/log.jsonl" "$RUN/generator/log.jsonl" 2>/dev/null >"$OUT/last-steps.txt" || true
ls -l "$OUT"
