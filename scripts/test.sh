#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The viewer test drives Debian's Chromium (no browser download)
if ! command -v chromium >/dev/null; then
  bash scripts/apt.sh chromium || echo "note: no chromium: the browser test of the viewer will be skipped"
fi
# On a machine with nvcc but no GPU, torch cannot find the toolkit by itself: name it so the CUDA
# kernels are compile-checked (tests/test_cuda_build.py).
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
# Without a GPU to ask, compile for sm_80 plus its PTX, which newer GPUs (sm_90: H100, H200) JIT-load;
# with one, torch builds for the GPU present.
if ! nvidia-smi -L >/dev/null 2>&1; then export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0+PTX}; fi
# The 15 slowest tests are listed at the end: the suite must stay under 15 minutes on the CI machine
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
