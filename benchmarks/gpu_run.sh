#!/usr/bin/env bash
# On the device machine (after benchmarks/gpu_prepare.sh here): install the carried wheels
# beside the machine's own torch, then measure embedding throughput on its GPU. Extra
# arguments go to gpu_embedding.py. Writes $OUT/gpu_embedding.json (or /tmp/… without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
site=/tmp/vitrine-site
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu/whl/*.whl
export PYTHONPATH="$site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$python" benchmarks/gpu_embedding.py --weights .gpu/mobilenet_v2_imagenet.pth \
    --catalog .gpu/demo-catalog --out "${OUT:-/tmp/vitrine-gpu}/gpu_embedding.json" "$@"
