#!/usr/bin/env bash
# GPU figures for the README: engine step vs bare forward and batched throughput,
# GPT-2 and GPT-2 Medium configs (random weights), bf16 on CUDA.
#   bash bench/gpu.sh            (on a machine with an NVIDIA GPU, after `uv sync`)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${RUN:-uv run --frozen python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for model in gpt2 gpt2-medium; do
    echo "== $model"
    $RUN bench/engine.py --model "$model" --device cuda --steps 50
    $RUN bench/batching.py --model "$model" --device cuda --sessions 1,8,32 --steps 30
done
