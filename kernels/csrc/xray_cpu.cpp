// C++ CPU kernels (OpenMP) of the X-ray rasterizer and the voxeliser: the maths of xray_math.h, looped
// over tiles (forward: each tile owns its pixels) and over (tile, Gaussian) pairs (backward: each pair
// owns its gradient row). Atomic-free both ways. Twin: kernels/_torch_impl.py. Bound in cpu_ext.cpp.
#include <ATen/ops/zeros.h>

#include "cpu_checks.h"
#include "cpu_kernels.h"
#include "xray_math.h"

using insideout::Vec3;

constexpr int MAX_TILE_PIXELS = 32 * 32;

// Pixel (u, v)'s normalised image coordinates (its centre), in double: where the footprint conic is tested
inline void image_xy(int64_t u, int64_t v, const float *kc, double &x, double &y) {
    x = ((double)u + 0.5 - kc[2]) / kc[0];
    y = ((double)v + 0.5 - kc[3]) / kc[1];
}

// The pixel rectangle [u0, u1) x [v0, v1) of one tile, cut down to the box of a Gaussian's footprint conic
struct PixelRect {
    int64_t u0, u1, v0, v1;

    PixelRect(int64_t tx, int64_t ty, int64_t tile_size, int64_t width, int64_t height)
        : u0(tx * tile_size), u1(std::min((tx + 1) * tile_size, width)), v0(ty * tile_size),
          v1(std::min((ty + 1) * tile_size, height)) {}

    PixelRect within(const insideout::Conic &conic, const float *kc) const {
        PixelRect r = *this;
        int bu0, bu1, bv0, bv1;
        if (insideout::conic_pixel_box(conic, kc[0], kc[1], kc[2], kc[3], bu0, bu1, bv0, bv1)) {
            r.u0 = std::max<int64_t>(u0, bu0), r.u1 = std::min<int64_t>(u1, (int64_t)bu1 + 1);
            r.v0 = std::max<int64_t>(v0, bv0), r.v1 = std::min<int64_t>(v1, (int64_t)bv1 + 1);
        }
        return r;
    }
};

// The pixels of one tile, row-major: normalised image coordinates (double, for the footprint conic) and rays
struct TilePixels {
    PixelRect rect;
    int64_t cols;
    double x[MAX_TILE_PIXELS], y[MAX_TILE_PIXELS];
    Vec3 o[MAX_TILE_PIXELS], d[MAX_TILE_PIXELS];

    TilePixels(const float *kc, const PixelRect &r, bool parallel) : rect(r), cols(r.u1 - r.u0) {
        for (int64_t vv = r.v0; vv < r.v1; ++vv)
            for (int64_t uu = r.u0; uu < r.u1; ++uu) {
                const int64_t n = index(uu, vv);
                image_xy(uu, vv, kc, x[n], y[n]);
                insideout::pixel_ray((int)uu, (int)vv, kc[0], kc[1], kc[2], kc[3], parallel, o[n], d[n]);
            }
    }

    int64_t index(int64_t uu, int64_t vv) const { return (vv - rect.v0) * cols + (uu - rect.u0); }
};

at::Tensor xray_forward_cpu(at::Tensor means_c,       // [C, N, 3]
                            at::Tensor prec_c,        // [C, N, 6]
                            at::Tensor densities,     // [N]
                            at::Tensor intrinsics,    // [C, 4]
                            int64_t width, int64_t height, int64_t tile_size, bool parallel, double cutoff,
                            at::Tensor tile_offsets,  // [C * TH * TW + 1] int64
                            at::Tensor pair_gauss     // [M] int64 in [0, C * N)
) {
    insideout::check_cpu(means_c, "means_c", at::kFloat);
    insideout::check_cpu(prec_c, "prec_c", at::kFloat);
    insideout::check_cpu(densities, "densities", at::kFloat);
    insideout::check_cpu(intrinsics, "intrinsics", at::kFloat);
    insideout::check_cpu(tile_offsets, "tile_offsets", at::kLong);
    insideout::check_cpu(pair_gauss, "pair_gauss", at::kLong);
    const int64_t C = means_c.size(0), N = means_c.size(1);
    const int64_t th = (height + tile_size - 1) / tile_size, tw = (width + tile_size - 1) / tile_size;
    auto out = at::zeros({C, height, width}, means_c.options());
    const float *m = means_c.data_ptr<float>(), *p = prec_c.data_ptr<float>(), *rho = densities.data_ptr<float>();
    const float *k = intrinsics.data_ptr<float>();
    const int64_t *off = tile_offsets.data_ptr<int64_t>(), *gid = pair_gauss.data_ptr<int64_t>();
    float *img = out.data_ptr<float>();
    const float cutoff2 = (float)(cutoff * cutoff);
    const double k2 = insideout::conic_k2(cutoff2);
    TORCH_CHECK(tile_size * tile_size <= MAX_TILE_PIXELS, "tile_size at most 32 on the CPU, got ", tile_size);
#pragma omp parallel for schedule(dynamic)
    for (int64_t tile = 0; tile < C * th * tw; ++tile) {
        const int64_t c = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw;
        const float *kc = k + 4 * c;
        const TilePixels px(kc, PixelRect(tx, ty, tile_size, width, height), parallel);
        float acc[MAX_TILE_PIXELS] = {0.f};
        // Gaussian by Gaussian (its conic made once), over the pixels of its footprint's box: each pixel still
        // sums the tile's Gaussians in their order
        for (int64_t i = off[tile]; i < off[tile + 1]; ++i) {
            const int64_t g = gid[i];
            const Vec3 mean = {m[3 * g], m[3 * g + 1], m[3 * g + 2]};
            const insideout::Conic conic = insideout::footprint_conic(mean, p + 6 * g, k2, parallel);
            const PixelRect box = px.rect.within(conic, kc);
            for (int64_t vv = box.v0; vv < box.v1; ++vv)
                for (int64_t uu = box.u0; uu < box.u1; ++uu) {
                    const int64_t j = px.index(uu, vv);
                    if (insideout::outside_conic(conic, px.x[j], px.y[j])) continue;
                    const insideout::LineGeom t = insideout::line_geometry(px.o[j], px.d[j], mean, p + 6 * g);
                    if (t.q > cutoff2) continue;
                    acc[j] += rho[g % N] * insideout::unit_line_integral(t);
                }
        }
        const PixelRect &r = px.rect;
        for (int64_t vv = r.v0; vv < r.v1; ++vv)
            for (int64_t uu = r.u0; uu < r.u1; ++uu) img[(c * height + vv) * width + uu] = acc[px.index(uu, vv)];
    }
    return out;
}

at::Tensor xray_backward_cpu(at::Tensor means_c, at::Tensor prec_c, at::Tensor densities,
                             at::Tensor intrinsics, int64_t width, int64_t height, int64_t tile_size,
                             bool parallel, double cutoff,
                             at::Tensor pair_tile,   // [M] int64
                             at::Tensor pair_gauss,  // [M] int64
                             at::Tensor v_image      // [C, H, W]
) {
    insideout::check_cpu(v_image, "v_image", at::kFloat);
    insideout::check_cpu(pair_tile, "pair_tile", at::kLong);
    insideout::check_cpu(pair_gauss, "pair_gauss", at::kLong);
    const int64_t N = means_c.size(1), M = pair_gauss.size(0);
    const int64_t th = (height + tile_size - 1) / tile_size, tw = (width + tile_size - 1) / tile_size;
    auto v_pairs = at::zeros({M, 10}, means_c.options());  // per pair: d/dmean (3), d/dprec (6), d/drho
    const float *m = means_c.data_ptr<float>(), *p = prec_c.data_ptr<float>(), *rho = densities.data_ptr<float>();
    const float *k = intrinsics.data_ptr<float>(), *vimg = v_image.data_ptr<float>();
    const int64_t *tid = pair_tile.data_ptr<int64_t>(), *gid = pair_gauss.data_ptr<int64_t>();
    float *vp = v_pairs.data_ptr<float>();
    const float cutoff2 = (float)(cutoff * cutoff);
    const double k2 = insideout::conic_k2(cutoff2);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < M; ++i) {
        const int64_t tile = tid[i], g = gid[i];
        const int64_t c = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw;
        const float *kc = k + 4 * c;
        const Vec3 mean = {m[3 * g], m[3 * g + 1], m[3 * g + 2]};
        const insideout::Conic conic = insideout::footprint_conic(mean, p + 6 * g, k2, parallel);
        const PixelRect box = PixelRect(tx, ty, tile_size, width, height).within(conic, kc);
        float acc[10] = {0.f};  // summed here, written once: the compiler keeps it in registers
        for (int64_t vv = box.v0; vv < box.v1; ++vv)
            for (int64_t uu = box.u0; uu < box.u1; ++uu) {
                const float gpix = vimg[(c * height + vv) * width + uu];
                if (gpix == 0.f) continue;
                double x, y;
                image_xy(uu, vv, kc, x, y);
                if (insideout::outside_conic(conic, x, y)) continue;
                Vec3 o, d;
                insideout::pixel_ray((int)uu, (int)vv, kc[0], kc[1], kc[2], kc[3], parallel, o, d);
                const insideout::LineGeom t = insideout::line_geometry(o, d, mean, p + 6 * g);
                if (t.q > cutoff2) continue;
                insideout::line_integral_vjp(d, rho[g % N], t, gpix, acc, acc + 3, acc + 9);
            }
        std::copy(acc, acc + 10, vp + 10 * i);
    }
    return v_pairs;
}

// The voxels [i0, i1) x [j0, j1) x [k0, k1) of block b (a grid of nx x ny x nz voxels in blocks of block^3)
// that lie in a Gaussian's cutoff box (xray_math.h's in_voxel_box): what a (block, Gaussian) pair visits
struct VoxelRange {
    int64_t i0, i1, j0, j1, k0, k1;
    VoxelRange(int64_t b, const int *box, int64_t block, int64_t nx, int64_t ny, int64_t nz) {
        const int64_t by = (ny + block - 1) / block, bz = (nz + block - 1) / block;
        const int64_t bi = (b / (by * bz)) * block, bj = ((b / bz) % by) * block, bk = (b % bz) * block;
        i0 = std::max<int64_t>(bi, box[0]), i1 = std::min<int64_t>({bi + block, nx, box[3] + 1});
        j0 = std::max<int64_t>(bj, box[1]), j1 = std::min<int64_t>({bj + block, ny, box[4] + 1});
        k0 = std::max<int64_t>(bk, box[2]), k1 = std::min<int64_t>({bk + block, nz, box[5] + 1});
    }
};

at::Tensor voxelize_forward_cpu(at::Tensor means,       // [N, 3]
                                at::Tensor prec,        // [N, 6]
                                at::Tensor densities,   // [N]
                                at::Tensor origin,      // [3] centre of voxel (0, 0, 0)
                                at::Tensor spacing,     // [3]
                                int64_t nx, int64_t ny, int64_t nz, int64_t block,
                                at::Tensor block_offsets,  // [BX * BY * BZ + 1] int64
                                at::Tensor pair_gauss,     // [M] int64
                                at::Tensor boxes           // [N, 6] int32: each Gaussian's voxel box
) {
    insideout::check_cpu(means, "means", at::kFloat);
    insideout::check_cpu(prec, "prec", at::kFloat);
    insideout::check_cpu(block_offsets, "block_offsets", at::kLong);
    insideout::check_cpu(boxes, "boxes", at::kInt);
    const int64_t nblocks = block_offsets.size(0) - 1;
    auto out = at::zeros({nx, ny, nz}, means.options());
    const float *m = means.data_ptr<float>(), *p = prec.data_ptr<float>(), *rho = densities.data_ptr<float>();
    const float *o = origin.data_ptr<float>(), *s = spacing.data_ptr<float>();
    const int64_t *off = block_offsets.data_ptr<int64_t>(), *gid = pair_gauss.data_ptr<int64_t>();
    const int *bx = boxes.data_ptr<int>();
    float *vol = out.data_ptr<float>();
#pragma omp parallel for schedule(dynamic)
    for (int64_t b = 0; b < nblocks; ++b) {
        for (int64_t q = off[b]; q < off[b + 1]; ++q) {  // pair by pair, each voxel summing in pair order
            const int64_t g = gid[q];
            const VoxelRange r(b, bx + 6 * g, block, nx, ny, nz);
            const Vec3 mean = {m[3 * g], m[3 * g + 1], m[3 * g + 2]};
            for (int64_t i = r.i0; i < r.i1; ++i)
                for (int64_t j = r.j0; j < r.j1; ++j)
                    for (int64_t kk = r.k0; kk < r.k1; ++kk) {
                        const Vec3 x = {o[0] + i * s[0], o[1] + j * s[1], o[2] + kk * s[2]};
                        vol[(i * ny + j) * nz + kk] += insideout::point_density(x, mean, p + 6 * g, rho[g]);
                    }
        }
    }
    return out;
}

at::Tensor voxelize_backward_cpu(at::Tensor means, at::Tensor prec, at::Tensor densities,
                                 at::Tensor origin, at::Tensor spacing, int64_t nx, int64_t ny, int64_t nz,
                                 int64_t block, at::Tensor pair_block, at::Tensor pair_gauss,
                                 at::Tensor boxes,    // [N, 6] int32
                                 at::Tensor v_volume  // [nx, ny, nz]
) {
    insideout::check_cpu(v_volume, "v_volume", at::kFloat);
    insideout::check_cpu(boxes, "boxes", at::kInt);
    const int64_t M = pair_gauss.size(0);
    auto v_pairs = at::zeros({M, 10}, means.options());
    const float *m = means.data_ptr<float>(), *p = prec.data_ptr<float>(), *rho = densities.data_ptr<float>();
    const float *o = origin.data_ptr<float>(), *s = spacing.data_ptr<float>(), *vv = v_volume.data_ptr<float>();
    const int64_t *bid = pair_block.data_ptr<int64_t>(), *gid = pair_gauss.data_ptr<int64_t>();
    const int *bx = boxes.data_ptr<int>();
    float *vp = v_pairs.data_ptr<float>();
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t q = 0; q < M; ++q) {
        const int64_t g = gid[q];
        const VoxelRange r(bid[q], bx + 6 * g, block, nx, ny, nz);
        const Vec3 mean = {m[3 * g], m[3 * g + 1], m[3 * g + 2]};
        float *row = vp + 10 * q;
        for (int64_t i = r.i0; i < r.i1; ++i)
            for (int64_t j = r.j0; j < r.j1; ++j)
                for (int64_t kk = r.k0; kk < r.k1; ++kk) {
                    const float gv = vv[(i * ny + j) * nz + kk];
                    if (gv == 0.f) continue;
                    const Vec3 x = {o[0] + i * s[0], o[1] + j * s[1], o[2] + kk * s[2]};
                    insideout::point_density_vjp(x, mean, p + 6 * g, rho[g], gv, row, row + 3, row + 9);
                }
    }
    return v_pairs;
}
