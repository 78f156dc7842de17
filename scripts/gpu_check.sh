#!/usr/bin/env bash
# The GPU check: one command on a bare machine with an NVIDIA GPU, PyTorch and nvcc, and no network.
#
#   bash scripts/gpu_wheels.sh               # once, on a machine with the package registry: .gpu_wheels/
#   bash scripts/gpu_check.sh [OUT_DIR]      # on the GPU machine, with .gpu_wheels/ beside the code
#   bash scripts/gpu_check.sh --dry-run      # the same steps at toy sizes on this machine (CPU), in ~2 min
#
# Installs the project and .gpu_wheels/ (--no-deps, into a folder of its own), builds gsplat's and our
# CUDA kernels while it makes the scenes, then: the CUDA tests (every kernel against its torch twin,
# forward and backward; training, resume and export on the GPU), the rasterizer benchmark against gsplat,
# and `ns-train insideout` on a from-CT scene (100 photographs at 512^2, 100 cone-beam projections at
# 256^2) for a reduced number of steps, with `ns-eval`, `insideout-export`, `ns-render` and the viewer's
# start. Everything lands in OUT_DIR ($OUT, else gpu_check_out/): summary.txt (the table printed last),
# check.log (every step's output), eval.json, rasterizers_cuda.json, train.json, pytest-*.xml.
# Options (environment): STEPS (default 2000), SCENES (views of each kind, default 100), CAPTURE (studio, the
# default, or table: the object on a table without masks, Poisson noise at 2e4 photons, the detector off centre,
# as benchmarks/quality.py's table rows), TRAIN_TIMEOUT (s,
# default 170: the run is cut there, its last checkpoint evaluated), DEADLINE (s, default 520: later steps skip),
# SKIP (names of steps to leave out, e.g. SKIP="benchmark tests-kernels" when a run checks fixes only).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
OUT_DIR=${OUT:-gpu_check_out}
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n 2,19p "$0"; exit 0 ;;
    *) OUT_DIR=$arg ;;
  esac
done
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=${WORK:-/tmp/insideout_gpu_check}
rm -rf "$WORK" && mkdir -p "$WORK"
LOG=$OUT_DIR/check.log
: > "$LOG"
: > "$WORK/steps.tsv"
T0=$(date +%s)
if [ $DRY = 1 ]; then
  STEPS=${STEPS:-60} VIEWS=${SCENES:-12} RGB_RES=64 XRAY_RES=48 BENCH=(--quick) PRESET=insideout-lite
  PY=${PYTHON:-.venv/bin/python}
else
  STEPS=${STEPS:-2000} VIEWS=${SCENES:-100} RGB_RES=512 XRAY_RES=256 BENCH=() PRESET=insideout
  PY=${PYTHON:-python3}
fi
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-170}
DEADLINE=${DEADLINE:-520}

# step NAME COMMAND...: runs COMMAND with its output appended to check.log; records status and seconds.
# Past DEADLINE seconds from the start a step is skipped (exit 124), so the summary always comes back.
step() {
  local name=$1; shift
  local start; start=$(date +%s)
  if [[ " ${SKIP:-} " == *" $name "* ]]; then
    echo "[$(( start - T0 )) s] $name: skipped (SKIP)" | tee -a "$LOG"
    return 0
  fi
  if [ $(( start - T0 )) -gt "$DEADLINE" ]; then
    printf '%s\t124\t0\n' "$name" >> "$WORK/steps.tsv"
    echo "[$(( start - T0 )) s] $name: skipped, past the ${DEADLINE} s deadline" | tee -a "$LOG"
    return 124
  fi
  echo "=== $name: $*" >> "$LOG"
  "$@" >> "$LOG" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$WORK/steps.tsv"
  echo "[$(( $(date +%s) - T0 )) s] $name: exit $rc" | tee -a "$LOG"
  return $rc
}

# 1. Install: the wheels and the project into a folder of their own (the machine's Python stays as it is)
SITE=$WORK/site
if ! $PY -P -c "import insideout_ns, nerfstudio, gsplat" 2>/dev/null; then
  if [ ! -d .gpu_wheels ]; then
    echo "no .gpu_wheels/ here and nerfstudio is not installed: run scripts/gpu_wheels.sh where the registry is reachable" | tee -a "$LOG"
    exit 2
  fi
  step install $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" \
    .gpu_wheels/*.whl . || exit 2
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PATH=$SITE/bin:$PATH
else
  export PATH=$(dirname "$(command -v $PY)"):$PATH
fi
# -P: the repository root (the cwd) must not shadow the installed package (its subpackages live elsewhere)
PY="$PY -P"
# ns-render refuses to start without ffmpeg on PATH even when it writes images; where there is none, a stub
# that fails if it is ever run (the check renders images only)
if ! command -v ffmpeg >/dev/null; then
  mkdir -p "$WORK/bin" && printf '#!/bin/sh\necho "ffmpeg stub of scripts/gpu_check.sh: no ffmpeg here" >&2; exit 1\n' > "$WORK/bin/ffmpeg"
  chmod +x "$WORK/bin/ffmpeg" && export PATH=$PATH:$WORK/bin FFMPEG_STUB=1
fi
export TORCH_EXTENSIONS_DIR=$WORK/torch_extensions MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")}
step environment $PY -c "import torch, platform; print(platform.python_version(), torch.__version__, torch.version.cuda,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

# 2. gsplat's JIT build in the background (nothing may import its CUDA backend meanwhile: a second
#    importer deletes the build folder), with our build, the kernel tests and the scene beside it
CT=${CT:-data/ct/headsq.mha}
BUILD_GSPLAT="from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat has no CUDA backend'"
BUILD_OURS="from insideout_ns.kernels._backend import load_extension; load_extension('cpu'); import torch
if torch.cuda.is_available(): load_extension('cuda')"
[ $DRY = 1 ] && BUILD_GSPLAT="import gsplat"
( step build-gsplat $PY -c "$BUILD_GSPLAT" ) &
case ${CAPTURE:=studio} in
  studio) CAPTURE_ARGS=() ;;
  table) CAPTURE_ARGS=(--capture table --photons 2e4 --detector-offset 6 -3) ;;
  *) echo "CAPTURE must be studio or table, got '$CAPTURE'" | tee -a "$LOG"; exit 2 ;;
esac
( step scene insideout-synth from-ct "$CT" "$WORK/head" --rgb-views "$VIEWS" --xray-views "$VIEWS" \
    --rgb-res $RGB_RES --xray-res $XRAY_RES "${CAPTURE_ARGS[@]}" ) &
step build-ours $PY -c "$BUILD_OURS"
# every kernel against its torch twin, forward and backward, and the compile check
step tests-kernels $PY -m pytest -q -p no:cacheprovider --junitxml="$OUT_DIR/pytest-kernels.xml" \
  tests/test_xray.py tests/test_voxelize.py tests/test_backend.py tests/test_cuda_build.py
wait

# 3. The rasterizer benchmark, X-ray against gsplat's RGB on the same grid (timed: it runs alone)
step benchmark $PY benchmarks/rasterizers.py --device "$([ $DRY = 1 ] && echo cpu || echo cuda)" "${BENCH[@]}" \
  --json "$OUT_DIR/rasterizers_cuda.json"

# 4. ns-train on the scene (timed: it runs alone)
PHASE1=$(( STEPS / 2 )) STOP=$(( STEPS * 5 / 6 )) EVERY=$(( STEPS / 60 > 10 ? STEPS / 60 : 10 ))
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$WORK/gpu_memory.txt" 2>/dev/null &
  SMI=$!
fi
step train timeout "$TRAIN_TIMEOUT" ns-train $PRESET --data "$WORK/head" --output-dir "$WORK/outputs" \
  --max-num-iterations "$STEPS" --steps-per-save $(( STEPS / 6 )) --steps-per-eval-all-images "$STEPS" \
  --pipeline.model.phase1-steps $PHASE1 --pipeline.model.strategy.refine-stop-iter $STOP \
  --pipeline.model.strategy.refine-every $EVERY --vis tensorboard --timestamp check
[ -n "${SMI:-}" ] && kill $SMI 2>/dev/null

# 5. Untimed, side by side (each into a log of its own, appended to check.log after): the tests that train
#    on the GPU (gsplat's RGB path in the model, rendering, resume, the presets), then what a user does with
#    the run. Without a real ffmpeg the video case of ns-render cannot run: it is left out, and the log says so.
mkdir -p "$WORK/logs"
side() { local name=$1; shift; ( LOG=$WORK/logs/$name.log; step "$name" "$@" ) & }
NO_VIDEO=()
if [ -n "${FFMPEG_STUB:-}" ]; then
  NO_VIDEO=(--deselect "tests/test_render.py::test_ns_render_writes_rgb_and_xray[interpolate-video]")
  echo "no ffmpeg here: the video case of tests/test_render.py is left out" | tee -a "$LOG"
fi
# the training tests train on the GPU (tests/run_helpers.py reads INSIDEOUT_TEST_DEVICE; the default is the CPU)
INSIDEOUT_TEST_DEVICE=$([ $DRY = 1 ] && echo cpu || echo cuda) side tests-training $PY -m pytest -q -p no:cacheprovider \
  --junitxml="$OUT_DIR/pytest-training.xml" tests/test_rgb.py tests/test_render.py tests/test_plugin.py tests/test_resume.py \
  tests/test_end_to_end.py tests/test_cli_chain.py \
  tests/test_full_size.py::test_views_beyond_the_device_share_stay_on_the_host "${NO_VIDEO[@]}"
CONFIG=$(ls "$WORK"/outputs/*/*/check/config.yml 2>/dev/null | head -1)
if [ -n "$CONFIG" ]; then
  side eval ns-eval --load-config "$CONFIG" --output-path "$OUT_DIR/eval.json"
  side export-volume insideout-export volume --load-config "$CONFIG" --output "$WORK/volume.nii.gz"
  side export-mesh insideout-export mesh --load-config "$CONFIG" --output "$WORK/surface.ply"
  side export-splat insideout-export splat --load-config "$CONFIG" --output "$WORK/splat.ply"
  side render ns-render interpolate --load-config "$CONFIG" --rendered-output-names rgb xray \
    --pose-source eval --interpolation-steps 1 --output-format images --output-path "$WORK/render"
  side xray-render insideout-render --load-config "$CONFIG" --cameras "$WORK/head/xray/transforms.json" \
    --output-dir "$WORK/xray_render"
  # The viewer starts and serves its page (no browser needed)
  ns-viewer --load-config "$CONFIG" --viewer.websocket-port 7077 > "$WORK/logs/ns-viewer.log" 2>&1 &
  VIEWER=$!
  side viewer $PY -c "
import time, urllib.request
for _ in range(240):
    try:
        print(urllib.request.urlopen('http://localhost:7077', timeout=2).status); break
    except OSError: time.sleep(1)
else: raise SystemExit('the viewer did not answer on port 7077 within 240 s')"
fi
wait $(jobs -p | grep -vx "${VIEWER:-none}")
[ -n "${VIEWER:-}" ] && kill $VIEWER 2>/dev/null
for f in "$WORK"/logs/*.log; do echo "=== $(basename "$f" .log) (side by side)"; cat "$f"; done >> "$LOG"

# 6. The summary: the training's own numbers, then every step; the table goes last
$PY - "$WORK" "$OUT_DIR" "$STEPS" "$CAPTURE" <<'EOF' | tee -a "$LOG" "$OUT_DIR/summary.txt"
import glob, json, sys
from pathlib import Path
work, out, steps, capture = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
steps_run = {l.split("\t")[0]: l.split("\t")[1:] for l in (work / "steps.tsv").read_text().splitlines()}
ckpts = sorted(glob.glob(str(work / "outputs/*/*/check/nerfstudio_models/step-*.ckpt")))
train = {"capture": capture, "steps": steps, "exit": int(steps_run.get("train", [-1, 0])[0]),
         "seconds": int(steps_run.get("train", [0, 0])[1]), "last_checkpoint": Path(ckpts[-1]).name if ckpts else None}
mem = work / "gpu_memory.txt"
if mem.exists() and mem.read_text().split():
    train["peak_gpu_memory_mib"] = max(int(x) for x in mem.read_text().split() if x.isdigit())
(out / "train.json").write_text(json.dumps(train, indent=1))
print("training:", ", ".join(f"{k} {v}" for k, v in train.items()))
if (out / "eval.json").exists():
    results = json.loads((out / "eval.json").read_text()).get("results", {})
    print("metric".ljust(34), "value")
    for k, v in sorted(results.items()):
        if not k.endswith("_std"):
            print(k.ljust(34), f"{v:.4g}" if isinstance(v, float) else v)
if (out / "rasterizers_cuda.json").exists():
    sys.path.insert(0, "benchmarks")
    from rasterizers import print_table

    print_table(json.loads((out / "rasterizers_cuda.json").read_text())["cases"], digits=2)
print(f"\n{'step':<16}{'exit':>5}{'seconds':>9}")
for line in (work / "steps.tsv").read_text().splitlines():
    name, rc, sec = line.split("\t")
    print(f"{name:<16}{rc:>5}{sec:>9}" + ("   FAILED" if rc != "0" else ""))
EOF
FAILED=$(awk -F'\t' '$2 != 0' "$WORK/steps.tsv" | wc -l)
echo "total $(( $(date +%s) - T0 )) s; $FAILED step(s) failed; logs in $OUT_DIR" | tee -a "$LOG" "$OUT_DIR/summary.txt"
[ "$FAILED" = 0 ]
