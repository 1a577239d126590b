#!/usr/bin/env bash
# CUDA measurements for issue 17 (not run in CI): MDLM-small bf16 forward tokens/s and MFU with
# xformers vs SDPA, and the time of T = L sampling with and without the x_θ cache and with
# threshold decoding. Run from the repository root on a CUDA machine:
#     bash benchmarks/gpu.sh [extra arguments for benchmarks/gpu_bench.py]
# Writes JSON lines to stdout and to gpu_bench.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python benchmarks/gpu_bench.py "$@" | tee gpu_bench.jsonl
