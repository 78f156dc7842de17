// The per-ray and per-Gaussian maths of the X-ray rasterizer and the voxeliser, written once and
// compiled twice: into the CUDA kernels (xray_cuda.cu) and into the C++ CPU kernels (xray_cpu.cpp).
// The pure-PyTorch twin of every function here is in kernels/_torch_impl.py.
//
// A Gaussian is given in camera coordinates (OpenCV axes: x right, y down, z forward) by its mean m,
// its precision P = Sigma^-1 (symmetric; stored as xx, xy, xz, yy, yz, zz) and its density rho.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define IO_HD __host__ __device__ __forceinline__
#else
#define IO_HD inline
#endif

namespace insideout {

struct Vec3 {
    float x, y, z;
};

IO_HD Vec3 sub(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }

// P v for the symmetric precision stored as (xx, xy, xz, yy, yz, zz)
IO_HD Vec3 prec_mul(const float *p, Vec3 v) {
    return {p[0] * v.x + p[1] * v.y + p[2] * v.z, p[1] * v.x + p[3] * v.y + p[4] * v.z,
            p[2] * v.x + p[4] * v.y + p[5] * v.z};
}

IO_HD float inv_sqrt(float x) {
#if defined(__CUDA_ARCH__)
    return rsqrtf(x);
#else
    return 1.f / sqrtf(x);
#endif
}

IO_HD float dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }

// The ray of pixel (u, v) (its centre is (u + 0.5, v + 0.5)).
// Cone beam: from the source (the origin) along the unit direction of ((u+.5-cx)/fx, (v+.5-cy)/fy, 1).
// Parallel beam: from ((u+.5-cx)/fx, (v+.5-cy)/fy, 0) along +z (fx = 1 / pixel size).
IO_HD void pixel_ray(int u, int v, float fx, float fy, float cx, float cy, bool parallel, Vec3 &o, Vec3 &d) {
    const float x = ((float)u + 0.5f - cx) / fx;
    const float y = ((float)v + 0.5f - cy) / fy;
    if (parallel) {
        o = {x, y, 0.f};
        d = {0.f, 0.f, 1.f};
    } else {
        const float inv = 1.f / sqrtf(x * x + y * y + 1.f);
        o = {0.f, 0.f, 0.f};
        d = {x * inv, y * inv, inv};
    }
}

// Exact integral over the half-line t >= 0 of rho exp(-1/2 (o + t d - m)^T P (o + t d - m)), |d| = 1:
//   a = d^T P d, b = d^T P (o - m), q = min_t Mahalanobis^2 = |w|_P^2 with w = (o - m) - (b / a) d
//   value = rho sqrt(pi / (2a)) erfc(b / sqrt(2a)) exp(-q / 2)
// (the whole line would give rho sqrt(2 pi / a) exp(-q / 2): erfc -> 2 when the Gaussian is in front).
// The footprint rule, the same in every backend: a ray contributes only if q <= cutoff^2, i.e. it passes
// within Mahalanobis distance `cutoff` of the mean.
struct LineGeom {
    float a, b, q;
    Vec3 delta, pd, w, pw;  // o - m, P d, the residual w and P w: kept for the vector-Jacobian product
};

IO_HD LineGeom line_geometry(Vec3 o, Vec3 d, Vec3 m, const float *p) {
    LineGeom t;
    t.delta = sub(o, m);
    t.pd = prec_mul(p, d);
    t.a = dot(d, t.pd);
    t.b = dot(t.delta, t.pd);
    const float tstar = t.b / t.a;  // o + t d is closest (in P) to m at t = -b/a
    t.w = {t.delta.x - tstar * d.x, t.delta.y - tstar * d.y, t.delta.z - tstar * d.z};
    t.pw = prec_mul(p, t.w);
    t.q = fmaxf(dot(t.w, t.pw), 0.f);  // the residual form: no cancellation of large terms
    return t;
}

// The footprint of one Gaussian as a conic of the image plane, for a cheap test per pixel before
// line_geometry: with h = (x, y, 1) the pixel's normalised image coordinates ((u + .5 - cx) / fx, ...),
// h^T Q h = a' (q - k2) for a cone beam (a' = h^T P h > 0: Q = (m^T P m - k2) P - (P m)(P m)^T, since
// q = m^T P m - (h.Pm)^2 / a' for the ray along h from the source) and h^T Q h = q - k2 for a parallel
// beam (q = D^T S D, D = (x - mx, y - my), S the Schur complement P_xy - P_xz P_zx / P_zz). Either way
// h^T Q h > 0 exactly when q > k2. In double, so that the large terms of the cone's form cancel without
// loss; callers pass k2 a little above the exact rule's cutoff^2 (CONIC_MARGIN), so that the float32
// rule keeps the last word on every pixel the conic lets through. Q is stored as (xx, xy, x1, yy, y1, 11).
struct Conic {
    double xx, xy, x1, yy, y1, c;
};

IO_HD Conic footprint_conic(Vec3 m, const float *p, double k2, bool parallel) {
    const double P[6] = {p[0], p[1], p[2], p[3], p[4], p[5]};
    const double mx = m.x, my = m.y, mz = m.z;
    if (parallel) {
        const double sxx = P[0] - P[2] * P[2] / P[5], sxy = P[1] - P[2] * P[4] / P[5], syy = P[3] - P[4] * P[4] / P[5];
        return {sxx, sxy, -(sxx * mx + sxy * my), syy, -(sxy * mx + syy * my),
                sxx * mx * mx + 2.0 * sxy * mx * my + syy * my * my - k2};
    }
    const double nx = P[0] * mx + P[1] * my + P[2] * mz, ny = P[1] * mx + P[3] * my + P[4] * mz,
                 nz = P[2] * mx + P[4] * my + P[5] * mz;
    const double e = mx * nx + my * ny + mz * nz - k2;
    return {e * P[0] - nx * nx, e * P[1] - nx * ny, e * P[2] - nx * nz, e * P[3] - ny * ny, e * P[4] - ny * nz,
            e * P[5] - nz * nz};
}

IO_HD bool outside_conic(const Conic &q, double x, double y) {
    return q.xx * x * x + 2.0 * q.xy * x * y + q.yy * y * y + 2.0 * (q.x1 * x + q.y1 * y) + q.c > 0.0;
}

// The pixels (u0..u1, v0..v1, inclusive) that can lie inside the footprint conic: the box around the ellipse
// h^T Q h <= 0, widened by a pixel each way. With M the upper 2x2 block of Q (positive definite for an
// ellipse) and c = -M^-1 (x1, y1) its centre, f(c) = c_ + (x1, y1).c and the half-extents are
// sqrt(-f(c) (M^-1)_xx), sqrt(-f(c) (M^-1)_yy). Returns false (no box: test the whole tile) where the conic
// is not a bounded ellipse (a cone-beam Gaussian about the source); an empty box where f(c) > 0.
IO_HD bool conic_pixel_box(const Conic &q, float fx, float fy, float cx, float cy, int &u0, int &u1, int &v0,
                           int &v1) {
    const double det = q.xx * q.yy - q.xy * q.xy;
    if (!(q.xx > 0.0 && det > 0.0 && fx > 0.f && fy > 0.f)) return false;
    const double x0 = -(q.yy * q.x1 - q.xy * q.y1) / det, y0 = -(q.xx * q.y1 - q.xy * q.x1) / det;
    const double fc = q.c + q.x1 * x0 + q.y1 * y0;
    if (fc > 0.0) {
        u0 = v0 = 1, u1 = v1 = 0;
        return true;
    }
    const double hx = sqrt(-fc * q.yy / det), hy = sqrt(-fc * q.xx / det);
    // pixel u's centre is at x = (u + 0.5 - cx) / fx
    const double ua = (x0 - hx) * fx + cx - 0.5, ub = (x0 + hx) * fx + cx - 0.5;
    const double va = (y0 - hy) * fy + cy - 0.5, vb = (y0 + hy) * fy + cy - 0.5;
    if (!(fabs(ua) < 1e8 && fabs(ub) < 1e8 && fabs(va) < 1e8 && fabs(vb) < 1e8)) return false;
    u0 = (int)floor(ua) - 1, u1 = (int)ceil(ub) + 1, v0 = (int)floor(va) - 1, v1 = (int)ceil(vb) + 1;
    return true;
}

// k2 of the conic test for the rule q <= cutoff^2: a margin far above float32's error on q, far below
// what would let much more through
IO_HD double conic_k2(double cutoff2) { return cutoff2 * 1.001 + 1e-3; }

// erfc(s) and erfc'(s) = -2/sqrt(pi) exp(-s^2). s = -t* / (sqrt(2) sigma_ray), with t* the distance along
// the ray to the closest point and sigma_ray = 1 / sqrt(a): below s = -3.9 (that point more than 5.5
// sigma_ray in front of the source: nearly always) they are 2 and 0 to float32 precision (errors 3.5e-8
// and 2.8e-7), and skipping erfcf and expf there is most of the backward's saving.
IO_HD float erfc_front(float s) { return s < -3.9f ? 2.f : erfcf(s); }
IO_HD float erfc_front_derivative(float s) { return s < -3.9f ? 0.f : -1.1283791670955126f * expf(-s * s); }

// The integral per unit density, given the ray's geometry
IO_HD float unit_line_integral(LineGeom t) {
    return sqrtf(1.5707963267948966f / t.a) * erfc_front(t.b * inv_sqrt(2.f * t.a)) * expf(-0.5f * t.q);
}

// Vector-Jacobian product of rho * unit_line_integral for an upstream gradient g, from the ray's direction d
// and its geometry t (line_geometry's intermediates): adds d/dm, d/dP (6 unique
// entries, off-diagonals counted twice as P is symmetric) and d/drho. a, b and q are taken as the
// independent variables, so that every term is small where the result is (float32-safe):
//   f = rho A(a) E(s) G(q),  A = sqrt(pi / 2a), s = b / sqrt(2a), E = erfc(s), G = exp(-q/2)
//   df/da = rho G [-A E / (2a) - A E'(s) b (2a)^(-3/2)],  E'(s) = -2/sqrt(pi) exp(-s^2)
//   df/db = rho G A E'(s) / sqrt(2a),   df/dq = -f / 2
//   da/dP = d d^T, db/dP = sym(d (o-m)^T), db/dm = -P d
//   q = (o-m)^T P (o-m) - b^2 / a, so dq/dP = w w^T and dq/dm = -2 P w with w = (o-m) - (b/a) d: the
//   residual at the closest point. (Written as (o-m)(o-m)^T minus the b terms, the same gradient is a
//   difference of terms |o-m|^2 / |w|^2 times larger, which float32 loses for small Gaussians.)
IO_HD void line_integral_vjp(Vec3 d, float rho, const LineGeom &t, float g, float *v_m, float *v_p, float *v_rho) {
    const float A = sqrtf(1.5707963267948966f / t.a);
    const float s = t.b * inv_sqrt(2.f * t.a);
    const float E = erfc_front(s), G = expf(-0.5f * t.q);
    const float f0 = A * E * G;  // value per unit density
    *v_rho += g * f0;
    const float dE = erfc_front_derivative(s);
    const float two_a = 2.f * t.a;
    const float ga = g * rho * G * (-A * E / two_a - A * dE * t.b / (two_a * sqrtf(two_a)));
    const float gb = g * rho * G * A * dE / sqrtf(two_a);
    const float gq = -0.5f * g * rho * f0;
    const Vec3 &delta = t.delta, &w = t.w, &pd = t.pd, &pw = t.pw;
    v_m[0] += -gb * pd.x - 2.f * gq * pw.x;
    v_m[1] += -gb * pd.y - 2.f * gq * pw.y;
    v_m[2] += -gb * pd.z - 2.f * gq * pw.z;
    // symmetric storage: diagonal entries once, off-diagonal entries for both (i, j) and (j, i)
    v_p[0] += ga * d.x * d.x + gb * d.x * delta.x + gq * w.x * w.x;
    v_p[1] += 2.f * ga * d.x * d.y + gb * (d.x * delta.y + d.y * delta.x) + 2.f * gq * w.x * w.y;
    v_p[2] += 2.f * ga * d.x * d.z + gb * (d.x * delta.z + d.z * delta.x) + 2.f * gq * w.x * w.z;
    v_p[3] += ga * d.y * d.y + gb * d.y * delta.y + gq * w.y * w.y;
    v_p[4] += 2.f * ga * d.y * d.z + gb * (d.y * delta.z + d.z * delta.y) + 2.f * gq * w.y * w.z;
    v_p[5] += ga * d.z * d.z + gb * d.z * delta.z + gq * w.z * w.z;
}

// Whether voxel (i, j, k) lies in a Gaussian's cutoff box: box = lo i, j, k, hi i, j, k (inclusive voxel indices;
// kernels/voxelize.py's block_pairs). The voxeliser evaluates a Gaussian there only.
IO_HD bool in_voxel_box(const int *box, int i, int j, int k) {
    return i >= box[0] && i <= box[3] && j >= box[1] && j <= box[4] && k >= box[2] && k <= box[5];
}

// Density of one Gaussian at a point: rho exp(-1/2 (x - m)^T P (x - m)), and its vector-Jacobian product.
IO_HD float point_density(Vec3 x, Vec3 m, const float *p, float rho) {
    const Vec3 delta = sub(x, m);
    return rho * expf(-0.5f * dot(delta, prec_mul(p, delta)));
}

IO_HD void point_density_vjp(Vec3 x, Vec3 m, const float *p, float rho, float g, float *v_m, float *v_p,
                             float *v_rho) {
    const Vec3 delta = sub(x, m);
    const Vec3 pdelta = prec_mul(p, delta);
    const float e = expf(-0.5f * dot(delta, pdelta));
    *v_rho += g * e;
    const float gf = g * rho * e;  // d/dm = f P (x - m); d/dP = -f/2 (x-m)(x-m)^T
    v_m[0] += gf * pdelta.x;
    v_m[1] += gf * pdelta.y;
    v_m[2] += gf * pdelta.z;
    v_p[0] += -0.5f * gf * delta.x * delta.x;
    v_p[1] += -gf * delta.x * delta.y;
    v_p[2] += -gf * delta.x * delta.z;
    v_p[3] += -0.5f * gf * delta.y * delta.y;
    v_p[4] += -gf * delta.y * delta.z;
    v_p[5] += -0.5f * gf * delta.z * delta.z;
}

}  // namespace insideout
