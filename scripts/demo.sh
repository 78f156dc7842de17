#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the CPU demo on built-in data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/insideout-demo "$@"
