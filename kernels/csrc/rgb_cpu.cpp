// C++ CPU kernels (OpenMP) of the RGB compositor: gsplat's front-to-back alpha compositing of each
// tile's depth-sorted Gaussians, with its constants (alpha clamp 0.999, skip below 1/255, a pixel stops
// before the Gaussian that would take its transmittance to 1e-4 or below). Both passes loop over tiles:
// a tile owns its pixels and the gradient rows of its (tile, Gaussian) pairs, so nothing is shared
// between threads. Twin: `_composite` in kernels/rgb.py. Bound in cpu_ext.cpp.
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include "cpu_checks.h"
#include "cpu_kernels.h"

#include <cmath>

namespace {

constexpr float ALPHA_MIN = 1.f / 255.f, ALPHA_MAX = 0.999f, T_MIN = 1e-4f;

// Opacity of one Gaussian at a pixel: sigma (the conic's quadratic form at the offset mean - pixel) and
// alpha; false where the Gaussian is skipped there.
inline bool pixel_alpha(const float *mean2d, const float *conic, float opacity, float px, float py, float &dx,
                        float &dy, float &vis, float &alpha) {
    dx = mean2d[0] - px;
    dy = mean2d[1] - py;
    const float sigma = 0.5f * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy;
    if (sigma < 0.f) return false;
    vis = std::exp(-sigma);
    alpha = std::min(ALPHA_MAX, opacity * vis);
    return alpha >= ALPHA_MIN;
}

}  // namespace

// Returns colours [C, H, W, D], final transmittance [C, H, W] and, per pixel, the end (exclusive) of the
// pairs it composited [C, H, W] (int64), which the backward pass starts from.
std::vector<at::Tensor> rgb_composite_forward_cpu(at::Tensor means2d,       // [C * N, 2]
                                                  at::Tensor conics,        // [C * N, 3]
                                                  at::Tensor opacities,     // [C * N]
                                                  at::Tensor colors,        // [C * N, D]
                                                  at::Tensor tile_offsets,  // [C * TH * TW + 1] int64
                                                  at::Tensor pair_gauss,    // [M] int64, front to back per tile
                                                  int64_t C, int64_t width, int64_t height, int64_t tile_size) {
    insideout::check_cpu(means2d, "means2d", at::kFloat);
    insideout::check_cpu(conics, "conics", at::kFloat);
    insideout::check_cpu(opacities, "opacities", at::kFloat);
    insideout::check_cpu(colors, "colors", at::kFloat);
    insideout::check_cpu(tile_offsets, "tile_offsets", at::kLong);
    insideout::check_cpu(pair_gauss, "pair_gauss", at::kLong);
    const int64_t D = colors.size(1);
    const int64_t th = (height + tile_size - 1) / tile_size, tw = (width + tile_size - 1) / tile_size;
    TORCH_CHECK(tile_offsets.size(0) == C * th * tw + 1, "tile_offsets has the wrong length");
    auto img = at::zeros({C, height, width, D}, colors.options());
    auto trans = at::ones({C, height, width}, colors.options());
    auto last = at::zeros({C, height, width}, tile_offsets.options());
    const float *m = means2d.data_ptr<float>(), *con = conics.data_ptr<float>(), *op = opacities.data_ptr<float>();
    const float *col = colors.data_ptr<float>();
    const int64_t *off = tile_offsets.data_ptr<int64_t>(), *gid = pair_gauss.data_ptr<int64_t>();
    float *out = img.data_ptr<float>(), *out_t = trans.data_ptr<float>();
    int64_t *out_last = last.data_ptr<int64_t>();
#pragma omp parallel for schedule(dynamic)
    for (int64_t tile = 0; tile < C * th * tw; ++tile) {
        const int64_t c = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw;
        for (int64_t v = ty * tile_size; v < std::min((ty + 1) * tile_size, height); ++v) {
            for (int64_t u = tx * tile_size; u < std::min((tx + 1) * tile_size, width); ++u) {
                const int64_t pix = (c * height + v) * width + u;
                const float px = u + 0.5f, py = v + 0.5f;
                float T = 1.f;
                float *acc = out + D * pix;
                int64_t i = off[tile];
                for (; i < off[tile + 1]; ++i) {
                    const int64_t g = gid[i];
                    float dx, dy, vis, alpha;
                    if (!pixel_alpha(m + 2 * g, con + 3 * g, op[g], px, py, dx, dy, vis, alpha)) continue;
                    const float next_T = T * (1.f - alpha);
                    if (next_T <= T_MIN) break;  // this Gaussian would end the pixel: stop before it
                    for (int64_t k = 0; k < D; ++k) acc[k] += alpha * T * col[D * g + k];
                    T = next_T;
                }
                out_t[pix] = T;
                out_last[pix] = i;
            }
        }
    }
    return {img, trans, last};
}

// Gradient rows per (tile, Gaussian) pair [M, 2 + 3 + 1 + D + 2]: d/d means2d (2), d/d conic (3),
// d/d opacity (1), d/d colour (D), and |d/d means2d| summed over pixels (2, gsplat's absgrad).
at::Tensor rgb_composite_backward_cpu(at::Tensor means2d, at::Tensor conics, at::Tensor opacities,
                                      at::Tensor colors, at::Tensor tile_offsets, at::Tensor pair_gauss,
                                      int64_t C, int64_t width, int64_t height, int64_t tile_size,
                                      at::Tensor trans,   // [C, H, W] final transmittance
                                      at::Tensor last,    // [C, H, W] int64 from the forward pass
                                      at::Tensor v_img,   // [C, H, W, D]
                                      at::Tensor v_alpha  // [C, H, W]
) {
    insideout::check_cpu(trans, "trans", at::kFloat);
    insideout::check_cpu(last, "last", at::kLong);
    insideout::check_cpu(v_img, "v_img", at::kFloat);
    insideout::check_cpu(v_alpha, "v_alpha", at::kFloat);
    const int64_t D = colors.size(1), M = pair_gauss.size(0), R = 8 + D;
    const int64_t th = (height + tile_size - 1) / tile_size, tw = (width + tile_size - 1) / tile_size;
    auto rows = at::zeros({M, R}, colors.options());
    const float *m = means2d.data_ptr<float>(), *con = conics.data_ptr<float>(), *op = opacities.data_ptr<float>();
    const float *col = colors.data_ptr<float>(), *tr = trans.data_ptr<float>();
    const float *vi = v_img.data_ptr<float>(), *va = v_alpha.data_ptr<float>();
    const int64_t *off = tile_offsets.data_ptr<int64_t>(), *gid = pair_gauss.data_ptr<int64_t>();
    const int64_t *end = last.data_ptr<int64_t>();
    float *vr = rows.data_ptr<float>();
#pragma omp parallel for schedule(dynamic)
    for (int64_t tile = 0; tile < C * th * tw; ++tile) {
        const int64_t c = tile / (th * tw), ty = (tile / tw) % th, tx = tile % tw;
        std::vector<float> behind(D);
        for (int64_t v = ty * tile_size; v < std::min((ty + 1) * tile_size, height); ++v) {
            for (int64_t u = tx * tile_size; u < std::min((tx + 1) * tile_size, width); ++u) {
                const int64_t pix = (c * height + v) * width + u;
                const float px = u + 0.5f, py = v + 0.5f;
                const float T_final = tr[pix], g_alpha = va[pix];
                const float *g_col = vi + D * pix;
                float T = T_final;  // transmittance behind the current Gaussian, walking back to front
                std::fill(behind.begin(), behind.end(), 0.f);  // colour composited behind it, weighted
                for (int64_t i = end[pix] - 1; i >= off[tile]; --i) {
                    const int64_t g = gid[i];
                    float dx, dy, vis, alpha;
                    if (!pixel_alpha(m + 2 * g, con + 3 * g, op[g], px, py, dx, dy, vis, alpha)) continue;
                    const float ra = 1.f / (1.f - alpha);
                    T *= ra;  // now the transmittance in front of this Gaussian
                    const float w = alpha * T;
                    float *row = vr + R * i;
                    // d out / d alpha: its own colour minus what it hides behind it; and the alpha output
                    float v_a = T_final * ra * g_alpha;
                    for (int64_t k = 0; k < D; ++k) {
                        const float ck = col[D * g + k];
                        row[6 + k] += w * g_col[k];
                        v_a += (ck * T - behind[k] * ra) * g_col[k];
                        behind[k] += ck * w;
                    }
                    if (op[g] * vis <= ALPHA_MAX) {  // below the clamp: alpha = o exp(-sigma)
                        const float v_sigma = -op[g] * vis * v_a;
                        const float gx = v_sigma * (con[3 * g] * dx + con[3 * g + 1] * dy);
                        const float gy = v_sigma * (con[3 * g + 1] * dx + con[3 * g + 2] * dy);
                        row[0] += gx;
                        row[1] += gy;
                        row[2] += 0.5f * v_sigma * dx * dx;
                        row[3] += v_sigma * dx * dy;
                        row[4] += 0.5f * v_sigma * dy * dy;
                        row[5] += vis * v_a;
                        row[6 + D] += std::fabs(gx);
                        row[7 + D] += std::fabs(gy);
                    }
                }
            }
        }
    }
    return rows;
}
