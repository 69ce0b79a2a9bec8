#!/usr/bin/env bash
# The GPU figures of the performance suite in one short run (fits well inside 10 minutes on one H200):
#   1. a random-initialised Qwen2.5-VL-3B-shaped checkpoint (built from its config on the GPU; no download),
#   2. eval items/s through the HF backend, and vLLM when it is installed there (same requests, bf16),
#   3. Vision-OPD steps (full weights and LoRA) with the seconds per phase and the peak GPU memory,
#   4. with vLLM in BACKENDS: Vision-OPD steps with rollouts from a colocated vLLM engine (bf16 on CUDA), full
#      weights and LoRA (merged-weight sync), the importance correction on: the sampler/learner mismatch
#      (mean |log ratio|, fraction clipped at is_clip 2, max ratio), weight-sync seconds, peak GPU memory;
#      VLLM_SLEEP=1 (default on CUDA) also puts the engine to sleep between rollout and update.
# CPU check of the same script (tiny shape, a few items; tests/test_benchmarks.py runs it):
#   SHAPE=tiny DEVICE=cpu PY=.venv/bin/python N=4 STEPS=1 BACKENDS=hf bash benchmarks/gpu.sh
# On the device machine the repository root is the working directory and python3 holds torch + transformers.
set -euo pipefail
SHAPE=${SHAPE:-qwen2_5_vl_3b}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
OUT=${OUT:-/tmp/vopd-gpu}
N=${N:-64}            # requests (items x views) for the eval timing
STEPS=${STEPS:-2}     # timed training steps (after one warm-up step)
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
MODEL="$OUT/model-$SHAPE"
echo "== machine: $(uname -m), $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')"
$PY benchmarks/make_sized_model.py --shape "$SHAPE" --out "$MODEL" --dtype bfloat16 --device "$DEVICE"
if [ -z "${BACKENDS:-}" ]; then
  BACKENDS=hf
  if $PY -c 'import vllm' 2>/dev/null; then BACKENDS=hf,vllm; else echo "vllm: not installed here (HF backend only)"; fi
fi
echo "== eval throughput ($BACKENDS, bfloat16, $N requests)"
$PY benchmarks/backends.py --model "$MODEL" --backends "$BACKENDS" --n "$N" --batch-size 16 --dtype bfloat16 \
    --json "$OUT/backends.json"
echo "== Vision-OPD step (full weights, LoRA)"
if [ "$SHAPE" = tiny ]; then SIZES=(--prompts 2 --rollouts 2 --eval-items 2); else SIZES=(--prompts 8 --rollouts 4 --eval-items 8); fi
$PY benchmarks/train_step.py --model "$MODEL" --steps "$STEPS" --modes full,lora --max-new-tokens 32 \
    --teacher ema --anchor 0 "${SIZES[@]}"   # the paper's recipe: EMA teacher, no anchor
if [[ ",$BACKENDS," == *",vllm,"* ]]; then
  if [ "$DEVICE" = cuda ]; then SLEEP=${VLLM_SLEEP:-1}; else SLEEP=${VLLM_SLEEP:-0}; fi
  echo "== Vision-OPD step with vLLM rollouts (importance correction on, sleep level $SLEEP)"
  $PY benchmarks/train_step.py --model "$MODEL" --steps "$STEPS" --modes vllm,vllm_lora --max-new-tokens 32 \
      --teacher ema --anchor 0 --vllm-sleep-level "$SLEEP" --vllm-gpu-memory-utilization 0.3 "${SIZES[@]}"
fi
