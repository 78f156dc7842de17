#!/usr/bin/env bash
# Creates .venv (once) and installs the project with its pinned dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import insideout_ns, nerfstudio, gsplat, pytest, playwright, imageio_ffmpeg" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  # torch first, at the release nerfstudio 1.1.5 works with here (it comes from local disk on these machines)
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip install -q -e ".[test]"
fi
# ns-render looks for ffmpeg on PATH (Nerfstudio's check); our own videos use imageio-ffmpeg's binary
if ! command -v ffmpeg >/dev/null; then
  bash scripts/apt.sh ffmpeg || echo "note: no ffmpeg on PATH: ns-render needs it for videos (apt install ffmpeg)"
fi
