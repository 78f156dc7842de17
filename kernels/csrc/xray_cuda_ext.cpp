// Python bindings of the CUDA backend (xray_cuda.cu), compiled by the host compiler; as cpu_ext.cpp, only
// pybind11 and torch's Tensor caster, not torch/extension.h.
#include <torch/csrc/utils/pybind.h>

#include "xray_cuda.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
    mod.def("xray_forward", &xray_forward_cuda);
    mod.def("xray_backward", &xray_backward_cuda);
    mod.def("voxelize_forward", &voxelize_forward_cuda);
    mod.def("voxelize_backward", &voxelize_backward_cuda);
}
