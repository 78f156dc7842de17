// The CPU backend's entry points (xray_cpu.cpp, rgb_cpu.cpp), bound to Python in cpu_ext.cpp: the X-ray
// rasterizer's and the voxeliser's interface is xray_cuda.h's (shapes in kernels/xray.py and
// kernels/voxelize.py); the RGB compositor's is `_composite`'s in kernels/rgb.py.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

at::Tensor xray_forward_cpu(at::Tensor means_c, at::Tensor prec_c, at::Tensor densities, at::Tensor intrinsics,
                            int64_t width, int64_t height, int64_t tile_size, bool parallel, double cutoff,
                            at::Tensor tile_offsets, at::Tensor pair_gauss);
at::Tensor xray_backward_cpu(at::Tensor means_c, at::Tensor prec_c, at::Tensor densities, at::Tensor intrinsics,
                             int64_t width, int64_t height, int64_t tile_size, bool parallel, double cutoff,
                             at::Tensor pair_tile, at::Tensor pair_gauss, at::Tensor v_image);
at::Tensor voxelize_forward_cpu(at::Tensor means, at::Tensor prec, at::Tensor densities, at::Tensor origin,
                                at::Tensor spacing, int64_t nx, int64_t ny, int64_t nz, int64_t block,
                                at::Tensor block_offsets, at::Tensor pair_gauss, at::Tensor boxes);
at::Tensor voxelize_backward_cpu(at::Tensor means, at::Tensor prec, at::Tensor densities, at::Tensor origin,
                                 at::Tensor spacing, int64_t nx, int64_t ny, int64_t nz, int64_t block,
                                 at::Tensor pair_block, at::Tensor pair_gauss, at::Tensor boxes, at::Tensor v_volume);
std::vector<at::Tensor> rgb_composite_forward_cpu(at::Tensor means2d, at::Tensor conics, at::Tensor opacities,
                                                  at::Tensor colors, at::Tensor tile_offsets, at::Tensor pair_gauss,
                                                  int64_t C, int64_t width, int64_t height, int64_t tile_size);
at::Tensor rgb_composite_backward_cpu(at::Tensor means2d, at::Tensor conics, at::Tensor opacities, at::Tensor colors,
                                      at::Tensor tile_offsets, at::Tensor pair_gauss, int64_t C, int64_t width,
                                      int64_t height, int64_t tile_size, at::Tensor trans, at::Tensor last,
                                      at::Tensor v_img, at::Tensor v_alpha);
