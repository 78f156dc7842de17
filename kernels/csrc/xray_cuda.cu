// CUDA kernels of the X-ray rasterizer and the voxeliser: the maths of xray_math.h plus thread indexing,
// tiles and shared memory. Forward: one block per tile, one thread per pixel, Gaussians staged through
// shared memory in batches. Backward: one block per (tile, Gaussian) pair, one thread per pixel, a block
// reduction writes the pair's own gradient row (atomic-free; rows are summed per Gaussian in torch).
// Twin: kernels/_torch_impl.py; same interface as xray_cpu.cpp.
// Only ATen's Tensor and zeros here: nvcc never sees pybind11, torch/extension.h or all of ATen (the bindings
// are xray_cuda_ext.cpp, which the host compiler builds beside this file).
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "xray_cuda.h"
#include "xray_math.h"

using insideout::Vec3;

namespace {

constexpr int kMaxBlock = 1024;

void check(const at::Tensor &t, const char *name, at::ScalarType type) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
    TORCH_CHECK(t.scalar_type() == type, name, " has the wrong dtype");
}

// Sums `vals[0..9]` over the block; thread 0 gets the totals in `out`.
__device__ void block_sum10(float vals[10], float *out) {
    __shared__ float partial[kMaxBlock / 32][10];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = (blockDim.x + 31) / 32;
#pragma unroll
    for (int k = 0; k < 10; ++k) {
        float v = vals[k];
        for (int s = 16; s > 0; s >>= 1) v += __shfl_down_sync(0xffffffff, v, s);
        if (lane == 0) partial[warp][k] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 0; k < 10; ++k) {
            float t = 0.f;
            for (int w = 0; w < nwarps; ++w) t += partial[w][k];
            out[k] = t;
        }
    }
}

__global__ void xray_forward_kernel(const float *__restrict__ m, const float *__restrict__ p,
                                    const float *__restrict__ rho, const float *__restrict__ k, int64_t N,
                                    int width, int height, int tile_size, int th, int tw, bool parallel,
                                    float cutoff2, const int64_t *__restrict__ off, const int64_t *__restrict__ gid,
                                    float *__restrict__ img) {
    __shared__ float batch[kMaxBlock][10];  // mean (3), precision (6), density (1) of a batch of Gaussians
    const int64_t tile = blockIdx.x;
    const int64_t c = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw;
    const int u = tx * tile_size + threadIdx.x % tile_size, v = ty * tile_size + threadIdx.x / tile_size;
    const bool inside = u < width && v < height;
    const float *kc = k + 4 * c;
    Vec3 o, d;
    insideout::pixel_ray(u, v, kc[0], kc[1], kc[2], kc[3], parallel, o, d);
    float acc = 0.f;
    for (int64_t start = off[tile]; start < off[tile + 1]; start += blockDim.x) {
        const int64_t i = start + threadIdx.x;
        __syncthreads();
        if (i < off[tile + 1]) {  // each thread stages one Gaussian
            const int64_t g = gid[i];
            for (int q = 0; q < 3; ++q) batch[threadIdx.x][q] = m[3 * g + q];
            for (int q = 0; q < 6; ++q) batch[threadIdx.x][3 + q] = p[6 * g + q];
            batch[threadIdx.x][9] = rho[g % N];
        }
        __syncthreads();
        const int n = (int)min((int64_t)blockDim.x, off[tile + 1] - start);
        for (int j = 0; j < n; ++j) {
            const float *b = batch[j];
            const insideout::LineGeom t = insideout::line_geometry(o, d, {b[0], b[1], b[2]}, b + 3);
            if (t.q <= cutoff2) acc += b[9] * insideout::unit_line_integral(t);
        }
    }
    if (inside) img[(c * height + v) * width + u] = acc;
}

__global__ void xray_backward_kernel(const float *__restrict__ m, const float *__restrict__ p,
                                     const float *__restrict__ rho, const float *__restrict__ k, int64_t N,
                                     int width, int height, int tile_size, int th, int tw, bool parallel,
                                     float cutoff2, const int64_t *__restrict__ tid, const int64_t *__restrict__ gid,
                                     const float *__restrict__ v_img, float *__restrict__ v_pairs) {
    const int64_t i = blockIdx.x;
    const int64_t tile = tid[i], g = gid[i];
    const int64_t c = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw;
    const int u = tx * tile_size + threadIdx.x % tile_size, v = ty * tile_size + threadIdx.x / tile_size;
    float vals[10] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (u < width && v < height) {
        const float gpix = v_img[(c * height + v) * width + u];
        if (gpix != 0.f) {
            const float *kc = k + 4 * c;
            Vec3 o, d;
            insideout::pixel_ray(u, v, kc[0], kc[1], kc[2], kc[3], parallel, o, d);
            const Vec3 mean = {m[3 * g], m[3 * g + 1], m[3 * g + 2]};
            const insideout::LineGeom t = insideout::line_geometry(o, d, mean, p + 6 * g);
            if (t.q <= cutoff2)
                insideout::line_integral_vjp(d, rho[g % N], t, gpix, vals, vals + 3, vals + 9);
        }
    }
    block_sum10(vals, v_pairs + 10 * i);
}

__global__ void voxelize_forward_kernel(const float *__restrict__ m, const float *__restrict__ p,
                                        const float *__restrict__ rho, const float *__restrict__ o,
                                        const float *__restrict__ s, int nx, int ny, int nz, int block, int by, int bz,
                                        const int64_t *__restrict__ off, const int64_t *__restrict__ gid,
                                        const int *__restrict__ boxes, float *__restrict__ vol) {
    const int64_t b = blockIdx.x;
    const int i = (b / (by * bz)) * block + threadIdx.x / (block * block);
    const int j = ((b / bz) % by) * block + (threadIdx.x / block) % block;
    const int kk = (b % bz) * block + threadIdx.x % block;
    const Vec3 x = {o[0] + i * s[0], o[1] + j * s[1], o[2] + kk * s[2]};
    float acc = 0.f;
    for (int64_t q = off[b]; q < off[b + 1]; ++q) {
        const int64_t g = gid[q];
        if (insideout::in_voxel_box(boxes + 6 * g, i, j, kk))
            acc += insideout::point_density(x, {m[3 * g], m[3 * g + 1], m[3 * g + 2]}, p + 6 * g, rho[g]);
    }
    if (i < nx && j < ny && kk < nz) vol[((int64_t)i * ny + j) * nz + kk] = acc;
}

__global__ void voxelize_backward_kernel(const float *__restrict__ m, const float *__restrict__ p,
                                         const float *__restrict__ rho, const float *__restrict__ o,
                                         const float *__restrict__ s, int nx, int ny, int nz, int block, int by,
                                         int bz, const int64_t *__restrict__ bid, const int64_t *__restrict__ gid,
                                         const int *__restrict__ boxes, const float *__restrict__ v_vol,
                                         float *__restrict__ v_pairs) {
    const int64_t q = blockIdx.x;
    const int64_t b = bid[q], g = gid[q];
    const int i = (b / (by * bz)) * block + threadIdx.x / (block * block);
    const int j = ((b / bz) % by) * block + (threadIdx.x / block) % block;
    const int kk = (b % bz) * block + threadIdx.x % block;
    float vals[10] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (i < nx && j < ny && kk < nz && insideout::in_voxel_box(boxes + 6 * g, i, j, kk)) {
        const float gv = v_vol[((int64_t)i * ny + j) * nz + kk];
        if (gv != 0.f) {
            const Vec3 x = {o[0] + i * s[0], o[1] + j * s[1], o[2] + kk * s[2]};
            insideout::point_density_vjp(x, {m[3 * g], m[3 * g + 1], m[3 * g + 2]}, p + 6 * g, rho[g], gv, vals,
                                         vals + 3, vals + 9);
        }
    }
    block_sum10(vals, v_pairs + 10 * q);
}

}  // namespace

at::Tensor xray_forward_cuda(at::Tensor means_c, at::Tensor prec_c, at::Tensor densities,
                             at::Tensor intrinsics, int64_t width, int64_t height, int64_t tile_size,
                             bool parallel, double cutoff, at::Tensor tile_offsets, at::Tensor pair_gauss) {
    check(means_c, "means_c", at::kFloat);
    check(prec_c, "prec_c", at::kFloat);
    check(densities, "densities", at::kFloat);
    check(intrinsics, "intrinsics", at::kFloat);
    check(tile_offsets, "tile_offsets", at::kLong);
    check(pair_gauss, "pair_gauss", at::kLong);
    TORCH_CHECK(tile_size * tile_size <= kMaxBlock && tile_size * tile_size % 32 == 0,
                "tile_size^2 must be a multiple of 32 and at most 1024");
    const int64_t C = means_c.size(0), N = means_c.size(1);
    const int th = (height + tile_size - 1) / tile_size, tw = (width + tile_size - 1) / tile_size;
    auto out = at::zeros({C, height, width}, means_c.options());
    if (C * th * tw == 0) return out;
    xray_forward_kernel<<<C * th * tw, tile_size * tile_size, 0, c10::cuda::getCurrentCUDAStream()>>>(
        means_c.data_ptr<float>(), prec_c.data_ptr<float>(), densities.data_ptr<float>(),
        intrinsics.data_ptr<float>(), N, width, height, tile_size, th, tw, parallel, (float)(cutoff * cutoff),
        tile_offsets.data_ptr<int64_t>(), pair_gauss.data_ptr<int64_t>(), out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}

at::Tensor xray_backward_cuda(at::Tensor means_c, at::Tensor prec_c, at::Tensor densities,
                              at::Tensor intrinsics, int64_t width, int64_t height, int64_t tile_size,
                              bool parallel, double cutoff, at::Tensor pair_tile, at::Tensor pair_gauss,
                              at::Tensor v_image) {
    check(v_image, "v_image", at::kFloat);
    check(pair_tile, "pair_tile", at::kLong);
    TORCH_CHECK(tile_size * tile_size <= kMaxBlock && tile_size * tile_size % 32 == 0,
                "tile_size^2 must be a multiple of 32 and at most 1024");
    const int64_t N = means_c.size(1), M = pair_gauss.size(0);
    const int th = (height + tile_size - 1) / tile_size, tw = (width + tile_size - 1) / tile_size;
    auto v_pairs = at::zeros({M, 10}, means_c.options());
    if (M == 0) return v_pairs;
    xray_backward_kernel<<<M, tile_size * tile_size, 0, c10::cuda::getCurrentCUDAStream()>>>(
        means_c.data_ptr<float>(), prec_c.data_ptr<float>(), densities.data_ptr<float>(),
        intrinsics.data_ptr<float>(), N, width, height, tile_size, th, tw, parallel, (float)(cutoff * cutoff),
        pair_tile.data_ptr<int64_t>(),
        pair_gauss.data_ptr<int64_t>(), v_image.data_ptr<float>(), v_pairs.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return v_pairs;
}

at::Tensor voxelize_forward_cuda(at::Tensor means, at::Tensor prec, at::Tensor densities,
                                 at::Tensor origin, at::Tensor spacing, int64_t nx, int64_t ny, int64_t nz,
                                 int64_t block, at::Tensor block_offsets, at::Tensor pair_gauss,
                                 at::Tensor boxes) {
    check(means, "means", at::kFloat);
    check(boxes, "boxes", at::kInt);
    check(prec, "prec", at::kFloat);
    check(block_offsets, "block_offsets", at::kLong);
    TORCH_CHECK(block * block * block <= kMaxBlock && block * block * block % 32 == 0,
                "block^3 must be a multiple of 32 and at most 1024");
    const int by = (ny + block - 1) / block, bz = (nz + block - 1) / block;
    const int64_t nblocks = block_offsets.size(0) - 1;
    auto out = at::zeros({nx, ny, nz}, means.options());
    if (nblocks == 0) return out;
    voxelize_forward_kernel<<<nblocks, block * block * block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        means.data_ptr<float>(), prec.data_ptr<float>(), densities.data_ptr<float>(), origin.data_ptr<float>(),
        spacing.data_ptr<float>(), nx, ny, nz, block, by, bz, block_offsets.data_ptr<int64_t>(),
        pair_gauss.data_ptr<int64_t>(), boxes.data_ptr<int>(), out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}

at::Tensor voxelize_backward_cuda(at::Tensor means, at::Tensor prec, at::Tensor densities,
                                  at::Tensor origin, at::Tensor spacing, int64_t nx, int64_t ny, int64_t nz,
                                  int64_t block, at::Tensor pair_block, at::Tensor pair_gauss,
                                  at::Tensor boxes, at::Tensor v_volume) {
    check(v_volume, "v_volume", at::kFloat);
    check(boxes, "boxes", at::kInt);
    TORCH_CHECK(block * block * block <= kMaxBlock && block * block * block % 32 == 0,
                "block^3 must be a multiple of 32 and at most 1024");
    const int by = (ny + block - 1) / block, bz = (nz + block - 1) / block;
    const int64_t M = pair_gauss.size(0);
    auto v_pairs = at::zeros({M, 10}, means.options());
    if (M == 0) return v_pairs;
    voxelize_backward_kernel<<<M, block * block * block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        means.data_ptr<float>(), prec.data_ptr<float>(), densities.data_ptr<float>(), origin.data_ptr<float>(),
        spacing.data_ptr<float>(), nx, ny, nz, block, by, bz, pair_block.data_ptr<int64_t>(),
        pair_gauss.data_ptr<int64_t>(), boxes.data_ptr<int>(), v_volume.data_ptr<float>(), v_pairs.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return v_pairs;
}
