// Python bindings of the CUDA backend (xray_cuda.cu), compiled by the host compiler.
#include <torch/extension.h>

#include "xray_cuda.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
    mod.def("xray_forward", &xray_forward_cuda);
    mod.def("xray_backward", &xray_backward_cuda);
    mod.def("voxelize_forward", &voxelize_forward_cuda);
    mod.def("voxelize_backward", &voxelize_backward_cuda);
}
