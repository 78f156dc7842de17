// Argument checks shared by the C++ CPU kernels (xray_cpu.cpp, rgb_cpu.cpp).
#pragma once
#include <torch/extension.h>

namespace insideout {

inline void check_cpu(const torch::Tensor &t, const char *name, torch::ScalarType type) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.scalar_type() == type, name, " has the wrong dtype");
}

}  // namespace insideout
