"""The CUDA kernels compile with nvcc even where no GPU is present (CI compile-checks them)."""

import pytest

from insideout_ns.kernels._backend import BackendUnavailable, _cuda_home, load_extension


@pytest.mark.skipif(_cuda_home() is None, reason="no CUDA toolkit (nvcc) on this machine")
def test_cuda_kernels_compile():
    try:
        module = load_extension("cuda")
    except BackendUnavailable as err:
        pytest.fail(str(err))
    for fn in ("xray_forward", "xray_backward", "voxelize_forward", "voxelize_backward"):
        assert hasattr(module, fn)
