// CUDA kernels for layer_norm and layer_norm_backward, and the row kernels that
// fused_ln_gelu_scale.cu reuses (a template flag adds the GELU and scale epilogue / prologue).
//
// Rows of 64 (the flagship's normalized dim) take a fast path: 16 threads own a row, 4
// consecutive floats each, so every load and store is 16 bytes and a warp covers two rows with
// fully coalesced 256-byte runs; the row sums are 4 xor-shuffles inside the 16-lane group.
// Other sizes use one warp per row with strided loops. Backward parameter gradients are
// deterministic: per-thread double accumulators, a fixed-order block reduction into per-block
// partials, then a fixed-order sum of the partials.
#include <algorithm>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"
#include "ops/gelu_math.h"

namespace minidl {
namespace cudak {
namespace {

constexpr int kBlock = 256;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float sum16(float v) {  // sum over the 16-lane half-warp
  v += __shfl_xor_sync(kFull, v, 8);
  v += __shfl_xor_sync(kFull, v, 4);
  v += __shfl_xor_sync(kFull, v, 2);
  v += __shfl_xor_sync(kFull, v, 1);
  return v;
}

__device__ __forceinline__ float sum32(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

struct F4 {
  float v[4];
};
__device__ __forceinline__ F4 ld4(const float* p) {
  const float4 t = __ldg(reinterpret_cast<const float4*>(p));
  return F4{{t.x, t.y, t.z, t.w}};
}
__device__ __forceinline__ F4 ld4_stream(const float* p) {
  const float4 t = __ldcs(reinterpret_cast<const float4*>(p));
  return F4{{t.x, t.y, t.z, t.w}};
}
__device__ __forceinline__ void st4_stream(float* p, const F4& a) {
  __stcs(reinterpret_cast<float4*>(p), make_float4(a.v[0], a.v[1], a.v[2], a.v[3]));
}

constexpr int kFwdRows = 4;  // row pairs per warp per iteration (loads in flight per thread)

// ---- forward, 64 columns ----------------------------------------------------------------------
// Each warp handles row pairs (2*wg, 2*wg+1) for wg = global warp id, id + W, ...; the loop
// bounds are warp-uniform so every lane reaches every shuffle. Four row pairs per iteration keep
// four 16-byte loads in flight per thread.
template <bool kGelu>
__global__ void __launch_bounds__(kBlock) ln_fwd_d64(LnForwardArgs a) {
  const int lane16 = threadIdx.x & 15;
  const int half = (threadIdx.x >> 4) & 1;
  const int c0 = lane16 * 4;
  F4 w{{1, 1, 1, 1}}, b{{0, 0, 0, 0}};
  if (a.w) w = ld4(a.w + c0);
  if (a.b) b = ld4(a.b + c0);
  const int64_t W = int64_t(gridDim.x) * (kBlock / 32);
  const int64_t pairs = (a.rows + 1) / 2;
  for (int64_t wg = blockIdx.x * int64_t(kBlock / 32) + (threadIdx.x >> 5); wg < pairs; wg += kFwdRows * W) {
    int64_t row[kFwdRows];
    bool ok[kFwdRows];
    F4 x[kFwdRows];
#pragma unroll
    for (int u = 0; u < kFwdRows; ++u) {
      row[u] = 2 * (wg + u * W) + half;
      ok[u] = row[u] < a.rows;
      x[u] = ok[u] ? ld4_stream(a.x + row[u] * 64 + c0) : F4{{0, 0, 0, 0}};
    }
#pragma unroll
    for (int u = 0; u < kFwdRows; ++u) {
      const float mean = sum16(x[u].v[0] + x[u].v[1] + x[u].v[2] + x[u].v[3]) * (1.0f / 64);
      float d[4], sq = 0;
      for (int j = 0; j < 4; ++j) {
        d[j] = x[u].v[j] - mean;
        sq += d[j] * d[j];
      }
      const float rstd = rsqrtf(sum16(sq) * (1.0f / 64) + a.eps);
      F4 y;
      for (int j = 0; j < 4; ++j) {
        const float v = d[j] * rstd * w.v[j] + b.v[j];
        y.v[j] = kGelu ? a.factor * gelu_value<float>(v, a.tanh_approx) : v;
      }
      if (ok[u]) {
        st4_stream(a.y + row[u] * 64 + c0, y);
        if (lane16 == 0) {
          if (a.mean) a.mean[row[u]] = mean;
          if (a.rstd) a.rstd[row[u]] = rstd;
        }
      }
    }
  }
}

// ---- forward, any number of columns: one warp per row ------------------------------------------
template <bool kGelu>
__global__ void __launch_bounds__(kBlock) ln_fwd_rows(LnForwardArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t W = int64_t(gridDim.x) * (kBlock / 32);
  const int64_t n = a.cols;
  for (int64_t r = blockIdx.x * int64_t(kBlock / 32) + (threadIdx.x >> 5); r < a.rows; r += W) {
    const float* x = a.x + r * n;
    float s = 0;
    for (int64_t i = lane; i < n; i += 32) s += x[i];
    const float mean = sum32(s) / float(n);
    float sq = 0;
    for (int64_t i = lane; i < n; i += 32) {
      const float d = x[i] - mean;
      sq += d * d;
    }
    const float rstd = rsqrtf(sum32(sq) / float(n) + a.eps);
    float* y = a.y + r * n;
    for (int64_t i = lane; i < n; i += 32) {
      const float v = (x[i] - mean) * rstd * (a.w ? a.w[i] : 1.0f) + (a.b ? a.b[i] : 0.0f);
      y[i] = kGelu ? a.factor * gelu_value<float>(v, a.tanh_approx) : v;
    }
    if (lane == 0) {
      if (a.mean) a.mean[r] = mean;
      if (a.rstd) a.rstd[r] = rstd;
    }
  }
}

// ---- backward helpers ----------------------------------------------------------------------------
// dz: the gradient reaching the LayerNorm output (after the GELU/scale derivative when fused).
// Exact-GELU derivative Phi(u) + u*phi(u) from a single exponential: erf by Abramowitz & Stegun
// 7.1.26 (|error| <= 1.5e-7, which shares exp(-u^2/2) with phi). About half the instructions of
// erff + expf; the fused backward is otherwise bound by this arithmetic (bench/NOTES.md).
__device__ __forceinline__ float gelu_grad_fast(float u) {
  const float z = fabsf(u) * 0.70710678118654752f;
  const float t = __fdividef(1.0f, 1.0f + 0.3275911f * z);
  const float e = __expf(-z * z);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float erf_abs = 1.0f - poly * e;
  const float cdf = 0.5f * (1.0f + copysignf(erf_abs, u));
  return cdf + u * e * 0.39894228040143268f;
}

template <bool kGelu>
__device__ __forceinline__ float ln_dz(float dy, float xhat, float w, float b, float factor, bool tanh_approx) {
  if (!kGelu) return dy;
  const float u = xhat * w + b;
  return dy * factor * (tanh_approx ? gelu_grad<float>(u, true) : gelu_grad_fast(u));
}

// ---- backward, 64 columns ------------------------------------------------------------------------
// Writes dx, and (if dw_part) per-block partial sums of dz*xhat and dz per column into
// dw_part[block][64] / db_part[block][64] (double).
template <bool kGelu>
__global__ void __launch_bounds__(kBlock, 4) ln_bwd_d64(LnBackwardArgs a, double* dw_part, double* db_part) {
  __shared__ double sh_dw[kBlock / 16][64];
  __shared__ double sh_db[kBlock / 16][64];
  const int lane16 = threadIdx.x & 15;
  const int half = (threadIdx.x >> 4) & 1;
  const int c0 = lane16 * 4;
  F4 w{{1, 1, 1, 1}}, b{{0, 0, 0, 0}};
  if (a.w) w = ld4(a.w + c0);
  if (a.b) b = ld4(a.b + c0);
  double acc_w[4] = {0, 0, 0, 0}, acc_b[4] = {0, 0, 0, 0};
  float part_w[4] = {0, 0, 0, 0}, part_b[4] = {0, 0, 0, 0};  // flushed into the doubles every 8 steps
  int steps = 0;
  const int64_t W = int64_t(gridDim.x) * (kBlock / 32);
  const int64_t pairs = (a.rows + 1) / 2;
  for (int64_t wg = blockIdx.x * int64_t(kBlock / 32) + (threadIdx.x >> 5); wg < pairs; wg += 2 * W) {
    if (++steps == 8) {
      steps = 0;
      for (int j = 0; j < 4; ++j) {
        acc_w[j] += double(part_w[j]);
        acc_b[j] += double(part_b[j]);
        part_w[j] = part_b[j] = 0.0f;
      }
    }
    int64_t row[2];
    bool ok[2];
    F4 x[2], dy[2];
    float mean[2], rstd[2];
    for (int u = 0; u < 2; ++u) {
      row[u] = 2 * (wg + u * W) + half;
      ok[u] = row[u] < a.rows;
      if (ok[u]) {
        x[u] = ld4_stream(a.x + row[u] * 64 + c0);
        dy[u] = ld4_stream(a.dy + row[u] * 64 + c0);
        mean[u] = __ldg(a.mean + row[u]);
        rstd[u] = __ldg(a.rstd + row[u]);
      } else {
        x[u] = dy[u] = F4{{0, 0, 0, 0}};
        mean[u] = rstd[u] = 0;
      }
    }
    for (int u = 0; u < 2; ++u) {
      float xh[4], g[4], s1 = 0, s2 = 0;
      for (int j = 0; j < 4; ++j) {
        xh[j] = (x[u].v[j] - mean[u]) * rstd[u];
        const float dz = ln_dz<kGelu>(dy[u].v[j], xh[j], w.v[j], b.v[j], a.factor, a.tanh_approx);
        part_w[j] += dz * xh[j];
        part_b[j] += dz;
        g[j] = dz * w.v[j];
        s1 += g[j];
        s2 += g[j] * xh[j];
      }
      s1 = sum16(s1) * (1.0f / 64);
      s2 = sum16(s2) * (1.0f / 64);
      F4 dx;
      for (int j = 0; j < 4; ++j) dx.v[j] = rstd[u] * (g[j] - s1 - xh[j] * s2);
      if (ok[u]) st4_stream(a.dx + row[u] * 64 + c0, dx);
    }
  }
  if (!dw_part) return;
  const int grp = threadIdx.x >> 4;  // 16 groups of 16 threads
  for (int j = 0; j < 4; ++j) {
    acc_w[j] += double(part_w[j]);
    acc_b[j] += double(part_b[j]);
    sh_dw[grp][c0 + j] = acc_w[j];
    sh_db[grp][c0 + j] = acc_b[j];
  }
  __syncthreads();
  if (threadIdx.x < 64) {
    double sw = 0, sb = 0;
    for (int gi = 0; gi < kBlock / 16; ++gi) {
      sw += sh_dw[gi][threadIdx.x];
      sb += sh_db[gi][threadIdx.x];
    }
    dw_part[int64_t(blockIdx.x) * 64 + threadIdx.x] = sw;
    db_part[int64_t(blockIdx.x) * 64 + threadIdx.x] = sb;
  }
}

// ---- backward, any number of columns: dx with one warp per row -----------------------------------
template <bool kGelu>
__global__ void __launch_bounds__(kBlock) ln_bwd_dx_rows(LnBackwardArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t W = int64_t(gridDim.x) * (kBlock / 32);
  const int64_t n = a.cols;
  for (int64_t r = blockIdx.x * int64_t(kBlock / 32) + (threadIdx.x >> 5); r < a.rows; r += W) {
    const float* x = a.x + r * n;
    const float* dy = a.dy + r * n;
    const float mean = a.mean[r], rstd = a.rstd[r];
    float s1 = 0, s2 = 0;
    for (int64_t i = lane; i < n; i += 32) {
      const float xh = (x[i] - mean) * rstd;
      const float w = a.w ? a.w[i] : 1.0f;
      const float g = ln_dz<kGelu>(dy[i], xh, w, a.b ? a.b[i] : 0.0f, a.factor, a.tanh_approx) * w;
      s1 += g;
      s2 += g * xh;
    }
    s1 = sum32(s1) / float(n);
    s2 = sum32(s2) / float(n);
    float* dx = a.dx + r * n;
    for (int64_t i = lane; i < n; i += 32) {
      const float xh = (x[i] - mean) * rstd;
      const float w = a.w ? a.w[i] : 1.0f;
      const float g = ln_dz<kGelu>(dy[i], xh, w, a.b ? a.b[i] : 0.0f, a.factor, a.tanh_approx) * w;
      dx[i] = rstd * (g - s1 - xh * s2);
    }
  }
}

// ---- backward, any number of columns: dw/db partials ---------------------------------------------
// Block (ct, chunk): lanes own 32 consecutive columns, the 8 warps walk the chunk's rows.
template <bool kGelu>
__global__ void __launch_bounds__(kBlock) ln_bwd_cols(LnBackwardArgs a, int64_t rows_per_chunk, double* dw_part,
                                                      double* db_part) {
  __shared__ double sw[kBlock / 32][32], sb[kBlock / 32][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t col = int64_t(blockIdx.x) * 32 + lane;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(a.rows, r0 + rows_per_chunk);
  double aw = 0, ab = 0;
  if (col < a.cols) {
    const float w = a.w ? a.w[col] : 1.0f, b = a.b ? a.b[col] : 0.0f;
    for (int64_t r = r0 + warp; r < r1; r += kBlock / 32) {
      const float xh = (a.x[r * a.cols + col] - a.mean[r]) * a.rstd[r];
      const float dz = ln_dz<kGelu>(a.dy[r * a.cols + col], xh, w, b, a.factor, a.tanh_approx);
      aw += double(dz * xh);
      ab += double(dz);
    }
  }
  sw[warp][lane] = aw;
  sb[warp][lane] = ab;
  __syncthreads();
  if (warp == 0 && col < a.cols) {
    double tw = 0, tb = 0;
    for (int i = 0; i < kBlock / 32; ++i) {
      tw += sw[i][lane];
      tb += sb[i][lane];
    }
    dw_part[int64_t(blockIdx.y) * a.cols + col] = tw;
    db_part[int64_t(blockIdx.y) * a.cols + col] = tb;
  }
}

// Sums nparts partial rows in order: dw[c] = sum_p dw_part[p][c].
__global__ void sum_parts(const double* __restrict__ dw_part, const double* __restrict__ db_part, int64_t nparts,
                          int64_t cols, float* __restrict__ dw, float* __restrict__ db) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    double sw = 0, sb = 0;
    for (int64_t p = 0; p < nparts; ++p) {
      sw += dw_part[p * cols + c];
      sb += db_part[p * cols + c];
    }
    if (dw) dw[c] = static_cast<float>(sw);
    if (db) db[c] = static_cast<float>(sb);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Exactly the blocks that fit on the GPU at once (never more than the work needs): the
// grid-stride loops then run in one wave with no half-empty second wave at the end.
template <class K>
unsigned resident_grid(K kernel, int64_t work_blocks) {
  int per_sm = 0;
  MINIDL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBlock, 0), "layer_norm: occupancy");
  const int64_t cap = int64_t(per_sm > 0 ? per_sm : 1) * cuda::num_sms();
  return unsigned(std::max<int64_t>(1, std::min(cap, work_blocks)));
}

}  // namespace

void launch_ln_forward(const char* op, const LnForwardArgs& a) {
  if (a.rows == 0) return;
  MINIDL_CHECK(a.cols > 0, op, ": normalized size is 0");
  cudaStream_t st = cuda::stream();
  const bool fast = a.cols == 64 && aligned16(a.x) && aligned16(a.y) && (!a.w || aligned16(a.w)) &&
                    (!a.b || aligned16(a.b));
  if (fast) {
    const int64_t work = ((a.rows + 1) / 2 + kBlock / 32 - 1) / (kBlock / 32);
    if (a.gelu)
      ln_fwd_d64<true><<<resident_grid(ln_fwd_d64<true>, work), kBlock, 0, st>>>(a);
    else
      ln_fwd_d64<false><<<resident_grid(ln_fwd_d64<false>, work), kBlock, 0, st>>>(a);
  } else {
    const unsigned grid = grid_for(a.rows, kBlock / 32, 8);
    if (a.gelu)
      ln_fwd_rows<true><<<grid, kBlock, 0, st>>>(a);
    else
      ln_fwd_rows<false><<<grid, kBlock, 0, st>>>(a);
  }
  MINIDL_LAUNCH_CHECK(op);
}

void launch_ln_backward(const char* op, const LnBackwardArgs& a) {
  if (a.rows == 0) {
    // No rows: the parameter gradients are sums of nothing.
    if (a.dw) cuda::fill_f32(a.dw, size_t(a.cols), 0.0f);
    if (a.db) cuda::fill_f32(a.db, size_t(a.cols), 0.0f);
    return;
  }
  cudaStream_t st = cuda::stream();
  const bool want_params = a.dw || a.db;
  const bool fast = a.cols == 64 && aligned16(a.x) && aligned16(a.dy) && aligned16(a.dx) && (!a.w || aligned16(a.w)) &&
                    (!a.b || aligned16(a.b));
  if (fast) {
    const int64_t work = ((a.rows + 1) / 2 + kBlock / 32 - 1) / (kBlock / 32);
    const unsigned grid = a.gelu ? resident_grid(ln_bwd_d64<true>, work) : resident_grid(ln_bwd_d64<false>, work);
    DeviceBuffer parts(want_params ? size_t(grid) * 64 * 2 * sizeof(double) : 8);
    double* dwp = want_params ? parts.as<double>() : nullptr;
    double* dbp = want_params ? parts.as<double>() + size_t(grid) * 64 : nullptr;
    if (a.gelu)
      ln_bwd_d64<true><<<grid, kBlock, 0, st>>>(a, dwp, dbp);
    else
      ln_bwd_d64<false><<<grid, kBlock, 0, st>>>(a, dwp, dbp);
    MINIDL_LAUNCH_CHECK(op);
    if (want_params) {
      sum_parts<<<1, 64, 0, st>>>(dwp, dbp, grid, 64, a.dw, a.db);
      MINIDL_LAUNCH_CHECK(op);
    }
    return;
  }
  const unsigned grid = grid_for(a.rows, kBlock / 32, 8);
  if (a.gelu)
    ln_bwd_dx_rows<true><<<grid, kBlock, 0, st>>>(a);
  else
    ln_bwd_dx_rows<false><<<grid, kBlock, 0, st>>>(a);
  MINIDL_LAUNCH_CHECK(op);
  if (!want_params) return;
  const int64_t col_tiles = (a.cols + 31) / 32;
  MINIDL_CHECK(col_tiles <= int64_t(1) << 30, op, ": too many columns");
  int64_t chunks = (int64_t(cuda::num_sms()) * 4 + col_tiles - 1) / col_tiles;
  const int64_t max_chunks = (a.rows + 63) / 64;  // at least 64 rows per chunk
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks > 65535) chunks = 65535;
  if (chunks < 1) chunks = 1;
  const int64_t per = (a.rows + chunks - 1) / chunks;
  chunks = (a.rows + per - 1) / per;
  DeviceBuffer parts(size_t(chunks) * size_t(a.cols) * 2 * sizeof(double));
  double* dwp = parts.as<double>();
  double* dbp = dwp + size_t(chunks) * size_t(a.cols);
  const dim3 g2{unsigned(col_tiles), unsigned(chunks), 1u};
  if (a.gelu)
    ln_bwd_cols<true><<<g2, kBlock, 0, st>>>(a, per, dwp, dbp);
  else
    ln_bwd_cols<false><<<g2, kBlock, 0, st>>>(a, per, dwp, dbp);
  MINIDL_LAUNCH_CHECK(op);
  sum_parts<<<grid_for(a.cols, 128, 4), 128, 0, st>>>(dwp, dbp, chunks, a.cols, a.dw, a.db);
  MINIDL_LAUNCH_CHECK(op);
}

}  // namespace cudak

namespace {

const Tensor* opt_input(const KernelContext& ctx, size_t i) {
  return i < ctx.inputs.size() && ctx.inputs[i].defined() ? &ctx.inputs[i] : nullptr;
}

void layer_norm_cuda(KernelContext& ctx) {
  const char* op = "layer_norm";
  cudak::check_cuda_tensors(op, ctx);
  cudak::require_f32(op, ctx);
  const Tensor& x = ctx.in(0);
  const int64_t n = shape_numel(ctx.attrs().get_ints("normalized_shape"));
  MINIDL_CHECK(n > 0 && x.numel() % n == 0, op, ": normalized_shape ", ctx.attrs().get("normalized_shape").str(),
               " does not divide input 'x' ", x.describe());
  cudak::LnForwardArgs a;
  a.x = x.data<float>();
  const Tensor* w = opt_input(ctx, 1);
  const Tensor* b = opt_input(ctx, 2);
  a.w = w ? w->data<float>() : nullptr;
  a.b = b ? b->data<float>() : nullptr;
  a.y = ctx.out(0).data<float>();
  a.mean = ctx.outputs.size() > 1 && ctx.out(1).defined() ? ctx.out(1).data<float>() : nullptr;
  a.rstd = ctx.outputs.size() > 2 && ctx.out(2).defined() ? ctx.out(2).data<float>() : nullptr;
  a.rows = x.numel() / n;
  a.cols = n;
  a.eps = static_cast<float>(ctx.attrs().get_float("eps"));
  cudak::launch_ln_forward(op, a);
}

void layer_norm_backward_cuda(KernelContext& ctx) {
  const char* op = "layer_norm_backward";
  cudak::check_cuda_tensors(op, ctx);
  cudak::require_f32(op, ctx);
  const Tensor& x = ctx.in(1);
  const int64_t n = shape_numel(ctx.attrs().get_ints("normalized_shape"));
  MINIDL_CHECK(n > 0 && x.numel() % n == 0, op, ": normalized_shape ", ctx.attrs().get("normalized_shape").str(),
               " does not divide input 'x' ", x.describe());
  cudak::LnBackwardArgs a;
  a.dy = ctx.in(0).data<float>();
  a.x = x.data<float>();
  a.mean = ctx.in(2).data<float>();
  a.rstd = ctx.in(3).data<float>();
  const Tensor* w = opt_input(ctx, 4);
  a.w = w ? w->data<float>() : nullptr;
  a.dx = ctx.out(0).data<float>();
  a.dw = ctx.outputs.size() > 1 && ctx.out(1).defined() ? ctx.out(1).data<float>() : nullptr;
  a.db = ctx.outputs.size() > 2 && ctx.out(2).defined() ? ctx.out(2).data<float>() : nullptr;
  a.rows = x.numel() / n;
  a.cols = n;
  cudak::launch_ln_backward(op, a);
}

}  // namespace

void register_layer_norm_cuda(OpRegistry& r) {
  cudak::set_cuda_kernel(r, "layer_norm", layer_norm_cuda);
  cudak::set_cuda_kernel(r, "layer_norm_backward", layer_norm_backward_cuda);
}

}  // namespace minidl
