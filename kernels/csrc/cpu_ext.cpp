// Python bindings of the CPU backend (xray_cpu.cpp, rgb_cpu.cpp). Only this file includes pybind11 and
// torch's Tensor caster (not torch/extension.h, 43 s of headers a file on two cores): the kernels include
// ATen's Tensor alone, and the three files build side by side.
#include <torch/csrc/utils/pybind.h>

#include "cpu_kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
    mod.def("xray_forward", &xray_forward_cpu);
    mod.def("xray_backward", &xray_backward_cpu);
    mod.def("voxelize_forward", &voxelize_forward_cpu);
    mod.def("voxelize_backward", &voxelize_backward_cpu);
    mod.def("rgb_composite_forward", &rgb_composite_forward_cpu);
    mod.def("rgb_composite_backward", &rgb_composite_backward_cpu);
}
