// Argument checks shared by the C++ CPU kernels (xray_cpu.cpp, rgb_cpu.cpp).
#pragma once
#include <ATen/core/Tensor.h>

namespace insideout {

inline void check_cpu(const at::Tensor &t, const char *name, at::ScalarType type) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.scalar_type() == type, name, " has the wrong dtype");
}

}  // namespace insideout
