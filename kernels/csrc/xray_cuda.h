// The CUDA backend's entry points (xray_cuda.cu), bound to Python in xray_cuda_ext.cpp: the interface of
// xray_cpu.cpp (shapes in kernels/xray.py and kernels/voxelize.py); each backward returns one gradient row
// [M, 10] per (tile or block, Gaussian) pair.
#pragma once
#include <ATen/core/Tensor.h>

at::Tensor xray_forward_cuda(at::Tensor means_c, at::Tensor prec_c, at::Tensor densities, at::Tensor intrinsics,
                             int64_t width, int64_t height, int64_t tile_size, bool parallel, double cutoff,
                             at::Tensor tile_offsets, at::Tensor pair_gauss);
at::Tensor xray_backward_cuda(at::Tensor means_c, at::Tensor prec_c, at::Tensor densities, at::Tensor intrinsics,
                              int64_t width, int64_t height, int64_t tile_size, bool parallel, double cutoff,
                              at::Tensor pair_tile, at::Tensor pair_gauss, at::Tensor v_image);
at::Tensor voxelize_forward_cuda(at::Tensor means, at::Tensor prec, at::Tensor densities, at::Tensor origin,
                                 at::Tensor spacing, int64_t nx, int64_t ny, int64_t nz, int64_t block,
                                 at::Tensor block_offsets, at::Tensor pair_gauss, at::Tensor boxes);
at::Tensor voxelize_backward_cuda(at::Tensor means, at::Tensor prec, at::Tensor densities, at::Tensor origin,
                                  at::Tensor spacing, int64_t nx, int64_t ny, int64_t nz, int64_t block,
                                  at::Tensor pair_block, at::Tensor pair_gauss, at::Tensor boxes, at::Tensor v_volume);
