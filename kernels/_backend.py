"""Lazy JIT compilation of the kernels in csrc/: importing this package never compiles anything.

Two extensions are built from the same maths header (csrc/xray_math.h): `cpu` (C++ with OpenMP; it
also holds the RGB compositor, csrc/rgb_cpu.cpp, which gsplat provides on CUDA) and `cuda` (nvcc). Each is compiled on first use with `torch.utils.cpp_extension.load` and cached by torch
(in TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Dict, Literal

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
_LOADED: Dict[str, ModuleType] = {}
_FAILED: Dict[str, str] = {}
_WARNED: set = set()  # kinds whose fallback to torch has been logged (once per process)
log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "cpu", "cuda"]
BACKENDS = ("auto", "torch", "cpu", "cuda")


class BackendUnavailable(RuntimeError):
    """A compiled backend cannot be built or run here (no compiler, no GPU, a build error)."""


def _cuda_home() -> str | None:
    """CUDA_HOME, else the toolkit that holds the nvcc on PATH, else /usr/local/cuda; None without nvcc."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if shutil.which("nvcc"):
        candidates.append(str(Path(shutil.which("nvcc")).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if home and (Path(home) / "bin" / "nvcc").is_file() and (Path(home) / "include" / "cuda_runtime.h").is_file():
            return home
    return None


def load_extension(kind: Literal["cpu", "cuda"]) -> ModuleType:
    """The compiled module for `kind`, building it on first use; BackendUnavailable if it cannot be built."""
    if kind in _LOADED:
        return _LOADED[kind]
    if kind in _FAILED:
        raise BackendUnavailable(_FAILED[kind])
    from torch.utils import cpp_extension

    if kind == "cuda":
        home = _cuda_home()
        if home is None:
            _FAILED[kind] = "the 'cuda' backend needs nvcc: install the CUDA toolkit or set CUDA_HOME"
            raise BackendUnavailable(_FAILED[kind])
        os.environ.setdefault("CUDA_HOME", home)
        cpp_extension.CUDA_HOME = home  # torch reads it at import time; a later CUDA_HOME must win
        if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0+PTX"  # no GPU to query: sm_80 and PTX newer GPUs can load
        sources, flags = [CSRC / "xray_cuda.cu", CSRC / "xray_cuda_ext.cpp"], {"extra_cuda_cflags": ["-O3"]}
    else:
        sources = [CSRC / "xray_cpu.cpp", CSRC / "rgb_cpu.cpp", CSRC / "cpu_ext.cpp"]  # kernels, bindings
        flags = {"extra_cflags": ["-O3", "-fopenmp"], "extra_ldflags": ["-fopenmp"]}
    log.info("compiling the InsideOut %s kernels (first use only)", kind)
    try:
        module = cpp_extension.load(
            name=f"insideout_xray_{kind}",
            sources=[str(s) for s in sources],
            extra_include_paths=[str(CSRC)],
            verbose=os.environ.get("INSIDEOUT_VERBOSE_BUILD") == "1",
            **flags,
        )
    except Exception as err:  # a compiler error is reported, not raised from deep inside a training step
        _FAILED[kind] = f"could not build the '{kind}' kernels: {type(err).__name__}: {err}"
        raise BackendUnavailable(_FAILED[kind]) from err
    _LOADED[kind] = module
    return module


def resolve(backend: str, device: torch.device) -> str:
    """Picks the backend for tensors on `device`: 'auto' is the CUDA kernels on a GPU and the C++ kernels on
    a CPU, each when it builds, else pure torch (said once in the log). An explicit choice that cannot
    run raises a clear error."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        kind = {"cuda": "cuda", "cpu": "cpu"}.get(device.type)
        if kind is None:
            return "torch"
        try:
            load_extension(kind)
            return kind
        except BackendUnavailable as err:
            if kind not in _WARNED:
                _WARNED.add(kind)
                log.warning("%s; falling back to the pure-torch backend", err)
            return "torch"
    if backend == "cuda" and device.type != "cuda":
        raise BackendUnavailable(f"backend 'cuda' needs CUDA tensors, got tensors on {device}")
    if backend == "cpu" and device.type != "cpu":
        raise BackendUnavailable(f"backend 'cpu' needs CPU tensors, got tensors on {device}")
    return backend
