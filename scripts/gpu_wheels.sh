#!/usr/bin/env bash
# Makes .gpu_wheels/: the wheels that scripts/gpu_check.sh installs on a GPU machine without network.
#
#   bash scripts/gpu_wheels.sh [DEST] [PYTHON_VERSION]      # defaults: .gpu_wheels 3.12
#
# Such a machine has PyTorch, nvcc and the scientific stack (numpy, scipy, scikit-image, matplotlib,
# opencv, tensorboard, rich, h5py, tifffile, imageio, jaxtyping, ...) but none of Nerfstudio, gsplat,
# viser, tyro, nerfacc. Listed here: those, and what `ns-train`, `ns-eval`, `ns-render` and the
# insideout-* commands import that such an image lacks (found by importing every command's module in
# .venv and subtracting the image's package list). --no-deps: nothing else is pulled in. Compiled
# wheels are fetched for PYTHON_VERSION on x86-64 Linux, the GPU machine's, not this machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu_wheels}
PYV=${2:-3.12}
PACKAGES=(
  # the plugin's frameworks (versions as pyproject.toml pins them, or as scripts/setup.sh installs them)
  nerfstudio==1.1.5 gsplat==1.4.0 viser==0.2.7 tyro==1.0.17 nerfacc==0.5.2
  # what they import at start-up
  typeguard==4.6.1 docstring-parser==0.18.0 msgspec==0.22.0 websockets==17.4 trimesh==5.2.0 plyfile==1.1.5
  appdirs==1.4.4 defusedxml==0.7.1 pyquaternion==0.9.9 pysocks==1.7.1 pytorch-msssim==1.0.0 splines==0.3.0
  tensorly==0.10.0 rawpy==0.28.0 pathos==0.3.5 dill==0.4.1 multiprocess==0.70.19 ppft==1.7.8 pox==0.3.7
  fpsample==0.3.3  # 1.0.x has no wheel for Python 3.12 on manylinux; 0.3.3 has the same sampling functions
  # ns-render: mediapy and the IPython it imports
  mediapy==1.2.7 ipython==9.18.1 ipython-pygments-lexers==1.1.1 traitlets==5.16.1 decorator==5.3.1
  jedi==0.20.1 parso==0.8.7 matplotlib-inline==0.2.2 prompt-toolkit==3.0.53 wcwidth==0.9.4 pexpect==4.9.0
  ptyprocess==0.7.0 stack-data==0.6.3 asttokens==3.0.2 executing==2.3.0 pure-eval==0.2.4
  # the plugin's own readers
  nibabel==5.4.2
)
PLATFORMS=()
for n in 17 24 27 28 31 34 35; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${PACKAGES[@]}"
du -sh "$DEST"
echo "wrote $DEST: carry it to the GPU machine beside the repository and run: bash scripts/gpu_check.sh"
