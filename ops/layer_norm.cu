// CUDA kernels for layer_norm and layer_norm_backward, and the row kernels that
// fused_ln_gelu_scale.cu reuses (a template flag adds the GELU and scale epilogue / prologue).
//
// Rows of 64 (the flagship's normalized dim) take a fast path built for memory bandwidth:
//  - Persistent blocks (exactly the resident count) walk tiles of 64 rows (16 KB per tensor).
//    One thread per block streams the block's next tiles into a ring of 3 shared-memory stages
//    with the bulk copy engine (cp.async.bulk, completing on an mbarrier), so 2-3 tiles per block
//    (~100+ KB per SM) are always in flight whatever the compute is doing. The earlier
//    register-load versions kept loads in flight only between a warp's compute phases and
//    topped out at ~2.4 TB/s (bench/NOTES.md).
//  - 16 threads own a row, 4 consecutive floats each (conflict-free 16-byte shared loads); the
//    row sums are 4 xor-shuffles inside the 16-lane group; y / dx go back into the stage in place
//    and leave as one bulk copy of the whole tile.
// Other sizes use one warp per row with strided loops. Backward parameter gradients are
// deterministic: per-thread accumulators (float per tile, folded into double), a fixed-order
// block reduction into per-block partials, then a fixed-order sum of the partials.
#include <algorithm>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "core/smem_sync.cuh"
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

// Mean and rstd of a 64-wide row held as one float4 per lane of a 16-lane group.
__device__ __forceinline__ void row64_stats(const F4& x, float eps, float& mean, float& rstd) {
  mean = sum16((x.v[0] + x.v[1]) + (x.v[2] + x.v[3])) * (1.0f / 64);
  float sq = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) sq = fmaf(x.v[j] - mean, x.v[j] - mean, sq);
  rstd = rsqrtf(sum16(sq) * (1.0f / 64) + eps);
}

// Mean and rstd of a row of n values read by the 32 lanes of a warp (every lane gets both).
__device__ __forceinline__ void warp_row_stats(const float* x, int64_t n, float eps, int lane, float& mean,
                                               float& rstd) {
  float s = 0;
  for (int64_t i = lane; i < n; i += 32) s += x[i];
  mean = sum32(s) / float(n);
  float sq = 0;
  for (int64_t i = lane; i < n; i += 32) {
    const float d = x[i] - mean;
    sq += d * d;
  }
  rstd = rsqrtf(sum32(sq) / float(n) + eps);
}
__device__ __forceinline__ F4 ld4(const float* p) {
  const float4 t = __ldg(reinterpret_cast<const float4*>(p));
  return F4{{t.x, t.y, t.z, t.w}};
}
__device__ __forceinline__ F4 lds4(const float* p) {  // 16-byte shared-memory load
  const float4 t = *reinterpret_cast<const float4*>(p);
  return F4{{t.x, t.y, t.z, t.w}};
}

// ---- bulk copies into shared memory (sm_90) ------------------------------------------------------
using ptx::fence_proxy_async_smem;
using ptx::mbar_arrive_expect;
using ptx::mbar_init;
using ptx::mbar_init_fence;
using ptx::mbar_wait;
using ptx::smem_u32;
using ptx::bulk_commit;
using ptx::bulk_load;
using ptx::bulk_store;
using ptx::bulk_wait_all;
using ptx::bulk_wait_read;
using ptx::policy_evict_first;
// Bulk copies out of shared memory (y / dx tiles written in place into their stage): see
// core/smem_sync.cuh for the fence / barrier / wait_group.read protocol.
// Thread 0, after committing tile t's store from stage s: once the previous tile's store has read
// its stage out of shared memory, refill that stage with the tile kS - 1 tiles ahead.
template <int kS, class Issue>
__device__ __forceinline__ void refill_previous_stage(int64_t t, int64_t ntiles, int s, Issue& issue) {
  if (t == blockIdx.x) return;  // the block's first tile: no previous stage
  bulk_wait_read<1>();
  const int64_t tn = t + int64_t(kS - 1) * gridDim.x;
  if (tn < ntiles) issue(tn, s == 0 ? kS - 1 : s - 1);
}
__device__ __forceinline__ void sts4(float* p, const F4& a) {
  *reinterpret_cast<float4*>(p) = make_float4(a.v[0], a.v[1], a.v[2], a.v[3]);
}

// Tiling of the 64-column path: a block of 256 threads covers 16 rows per pass, kRpt passes per
// tile. Tile t of a block is t = blockIdx.x + i * gridDim.x (i = 0, 1, ...), stage i % kStages.
// Thread 0 issues every copy. y / dx leave through the bulk copy engine too: each thread writes
// its result into the stage in place (over its own 16 bytes of x, already in registers), fences
// it towards the async proxy, and after the block barrier thread 0 writes the whole tile (its
// rows are contiguous in global memory) with one bulk copy, L2 evict-first like the streaming
// stores it replaces. A stage can be refilled only once its store has been read out of shared
// memory: thread 0 refills the previous tile's stage after wait_group.read 1, which the store
// committed one tile earlier has passed by then (waiting for the current one, read 0, stalls the
// block: +1-2% forward). Against v4 (16-byte streaming stores from registers, 32-row tiles,
// bench/kernels_history/layer_norm_v4.cu) this is -2.5% forward, -2% backward. In the forward the
// 64-row tiles and the bulk stores each gain ~1.5% alone; in the backward 64-row tiles with
// register stores are slower (80 registers and spills), so both go together (NOTES.md, v6).
// Tried and slower: a dedicated producer warp with per-stage `empty` barriers (v5), plain instead
// of streaming stores, an evict-first hint on the loads, bulk stores without the L2 hint,
// 5 stages of 32 rows (5 blocks/SM), 4 stages of 64 rows (same), 128-row tiles (same median,
// wider spread).
// Forward (GELU): 48 registers, 49.5 KB of stages, 4 blocks/SM; backward (GELU): 91 registers
// (101 without), 97.5 KB, 2 blocks/SM.
constexpr int kRowsPerPass = kBlock / 16;
constexpr int kRpt = 4;
constexpr int kTileRows = kRowsPerPass * kRpt;  // 64 rows = 16 KB per tensor
constexpr int kFwdStages = 3;
constexpr int kBwdStages = 3;
constexpr size_t kFwdStageFloats = size_t(kTileRows) * (64 + 2);   // x (then y), mean, rstd
constexpr size_t kBwdStageFloats = size_t(kTileRows) * (128 + 2);  // x (then dx), dy, mean, rstd
constexpr size_t kFwdSmem = kFwdStages * kFwdStageFloats * sizeof(float);
constexpr size_t kBwdSmem = kBwdStages * kBwdStageFloats * sizeof(float);
static_assert(kFwdStageFloats % 4 == 0 && kBwdStageFloats % 4 == 0, "stages must stay 16-byte aligned");

// ---- forward, 64 columns ----------------------------------------------------------------------
// stats_bulk: mean / rstd are null or 16-byte aligned, so whole tiles of them can go in bulk too.
template <bool kGelu>
__global__ void __launch_bounds__(kBlock) ln_fwd_d64(LnForwardArgs a, int64_t ntiles, bool stats_bulk) {
  constexpr int kT = kTileRows, kR = kRpt, kS = kFwdStages;
  constexpr size_t kSF = kFwdStageFloats;
  extern __shared__ __align__(128) float stage_mem[];
  __shared__ uint64_t full[kS];
  const int lane16 = threadIdx.x & 15;
  const int grp = threadIdx.x >> 4;  // row within a pass
  const int c0 = lane16 * 4;
  // Thread 0 owns the copies: tile t -> stage s, expecting exactly the tile's bytes.
  auto issue = [&](int64_t t, int s) {
    const int64_t r0 = t * kT;
    const uint32_t bytes = uint32_t(min(int64_t(kT), a.rows - r0)) * 256u;
    mbar_arrive_expect(&full[s], bytes);
    bulk_load(stage_mem + s * kSF, a.x + r0 * 64, bytes, &full[s]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < kS; ++s) mbar_init(&full[s], 1);
    mbar_init_fence();
    for (int s = 0; s < kS; ++s)
      if (blockIdx.x + int64_t(s) * gridDim.x < ntiles) issue(blockIdx.x + int64_t(s) * gridDim.x, s);
  }
  __syncthreads();
  F4 w{{1, 1, 1, 1}}, b{{0, 0, 0, 0}};
  if (a.w) w = ld4(a.w + c0);
  if (a.b) b = ld4(a.b + c0);
  // gelu(v) * factor = (0.5 * factor * v) * (1 + erf(v / sqrt 2)); the tanh form goes through
  // the shared helper.
  const float half_factor = 0.5f * a.factor;
  int s = 0;
  uint32_t parity = 0;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    mbar_wait(&full[s], parity);
    float* tile = stage_mem + s * kSF;
    const int64_t r0 = t * kT;
    const int n = int(min(int64_t(kT), a.rows - r0));
    const bool st = stats_bulk && (n & 3) == 0;  // n * 4 bytes must be a multiple of 16
    F4 x[kR];
#pragma unroll
    for (int k = 0; k < kR; ++k) x[k] = lds4(tile + (grp + k * kRowsPerPass) * 64 + c0);
#pragma unroll
    for (int k = 0; k < kR; ++k) {
      const int r = grp + k * kRowsPerPass;
      const int64_t row = r0 + r;
      float mean, rstd;
      row64_stats(x[k], a.eps, mean, rstd);
      F4 y;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float v = fmaf((x[k].v[j] - mean) * rstd, w.v[j], b.v[j]);
        if (!kGelu)
          y.v[j] = v;
        else if (a.tanh_approx)
          y.v[j] = a.factor * gelu_value<float>(v, true);
        else
          y.v[j] = (half_factor * v) * (1.0f + erff(v * 0.7071067811865476f));
      }
      sts4(tile + r * 64 + c0, y);  // rows past the end are computed but never stored
      if (lane16 == 0) {
        if (st) {
          tile[kT * 64 + r] = mean;
          tile[kT * 65 + r] = rstd;
        } else if (row < a.rows) {
          if (a.mean) a.mean[row] = mean;
          if (a.rstd) a.rstd[row] = rstd;
        }
      }
    }
    fence_proxy_async_smem();  // this thread's stage writes, visible to the bulk store
    __syncthreads();           // every warp is done with stage s
    if (threadIdx.x == 0) {
      const uint64_t pol = policy_evict_first();
      bulk_store(a.y + r0 * 64, tile, uint32_t(n) * 256u, pol);
      if (st) {
        if (a.mean) bulk_store(a.mean + r0, tile + kT * 64, uint32_t(n) * 4u, pol);
        if (a.rstd) bulk_store(a.rstd + r0, tile + kT * 65, uint32_t(n) * 4u, pol);
      }
      bulk_commit();
      refill_previous_stage<kS>(t, ntiles, s, issue);
    }
    if (++s == kS) {
      s = 0;
      parity ^= 1u;
    }
  }
  if (threadIdx.x == 0) bulk_wait_all<0>();  // the stores read shared memory until done
}

// ---- forward, any number of columns: one warp per row ------------------------------------------
template <bool kGelu>
__global__ void __launch_bounds__(kBlock) ln_fwd_rows(LnForwardArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t W = int64_t(gridDim.x) * (kBlock / 32);
  const int64_t n = a.cols;
  for (int64_t r = blockIdx.x * int64_t(kBlock / 32) + (threadIdx.x >> 5); r < a.rows; r += W) {
    const float* x = a.x + r * n;
    float mean, rstd;
    warp_row_stats(x, n, a.eps, lane, mean, rstd);
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
// erff + expf.
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
// Stage layout: x tile, dy tile (kT x 64 each), then mean and rstd (kT each). The statistics come
// with the bulk copy when the tile's byte count allows it (a multiple of 16, aligned pointers:
// stats_bulk); otherwise each thread reads its row's pair from global memory. dx overwrites the
// stage's x and leaves by one bulk copy per tile (see the tiling note above).
// Writes dx, and (if dw_part) per-block partial sums of dz*xhat and dz per column into
// dw_part[block][64] / db_part[block][64] (double).
template <bool kGelu>
__global__ void __launch_bounds__(kBlock) ln_bwd_d64(LnBackwardArgs a, int64_t ntiles, bool stats_bulk,
                                                     double* dw_part, double* db_part) {
  constexpr int kT = kTileRows, kR = kRpt, kS = kBwdStages;
  constexpr size_t kSF = kBwdStageFloats;
  extern __shared__ __align__(128) float stage_mem[];
  __shared__ uint64_t full[kS];
  const int lane16 = threadIdx.x & 15;
  const int grp = threadIdx.x >> 4;
  const int c0 = lane16 * 4;
  auto tile_stats_bulk = [&](int64_t t) { return stats_bulk && ((min(int64_t(kT), a.rows - t * kT)) & 3) == 0; };
  auto issue = [&](int64_t t, int s) {
    const int64_t r0 = t * kT;
    const uint32_t n = uint32_t(min(int64_t(kT), a.rows - r0));
    const bool st = tile_stats_bulk(t);
    float* base = stage_mem + s * kSF;
    mbar_arrive_expect(&full[s], n * 512u + (st ? n * 8u : 0u));
    bulk_load(base, a.x + r0 * 64, n * 256u, &full[s]);
    bulk_load(base + kT * 64, a.dy + r0 * 64, n * 256u, &full[s]);
    if (st) {
      bulk_load(base + kT * 128, a.mean + r0, n * 4u, &full[s]);
      bulk_load(base + kT * 129, a.rstd + r0, n * 4u, &full[s]);
    }
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < kS; ++s) mbar_init(&full[s], 1);
    mbar_init_fence();
    for (int s = 0; s < kS; ++s)
      if (blockIdx.x + int64_t(s) * gridDim.x < ntiles) issue(blockIdx.x + int64_t(s) * gridDim.x, s);
  }
  __syncthreads();
  F4 w{{1, 1, 1, 1}}, b{{0, 0, 0, 0}};
  if (a.w) w = ld4(a.w + c0);
  if (a.b) b = ld4(a.b + c0);
  double acc_w[4] = {0, 0, 0, 0}, acc_b[4] = {0, 0, 0, 0};
  int s = 0;
  uint32_t parity = 0;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const bool st = tile_stats_bulk(t);
    float mean[kR], rstd[kR];
    if (!st && a.mean) {  // rare (last tile or unaligned statistics): read them while the copies land
#pragma unroll
      for (int k = 0; k < kR; ++k) {
        const int64_t row = min(t * kT + grp + k * kRowsPerPass, a.rows - 1);
        mean[k] = __ldg(a.mean + row);
        rstd[k] = __ldg(a.rstd + row);
      }
    }
    mbar_wait(&full[s], parity);
    float* tile = stage_mem + s * kSF;
    F4 x[kR], dy[kR];
#pragma unroll
    for (int k = 0; k < kR; ++k) {
      const int r = grp + k * kRowsPerPass;
      x[k] = lds4(tile + r * 64 + c0);
      dy[k] = lds4(tile + kT * 64 + r * 64 + c0);
      if (st) {
        mean[k] = tile[kT * 128 + r];
        rstd[k] = tile[kT * 129 + r];
      } else if (!a.mean) {  // no saved statistics: recompute them from the row, as the forward does
        row64_stats(x[k], a.eps, mean[k], rstd[k]);
      }
    }
    float part_w[4] = {0, 0, 0, 0}, part_b[4] = {0, 0, 0, 0};
#pragma unroll
    for (int k = 0; k < kR; ++k) {
      const int r = grp + k * kRowsPerPass;
      const int64_t row = t * kT + r;
      const bool ok = row < a.rows;  // rows past the end hold stale shared memory: keep them out
      float xh[4], g[4], s1 = 0, s2 = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        xh[j] = (x[k].v[j] - mean[k]) * rstd[k];
        const float dz = ok ? ln_dz<kGelu>(dy[k].v[j], xh[j], w.v[j], b.v[j], a.factor, a.tanh_approx) : 0.0f;
        part_w[j] = fmaf(dz, ok ? xh[j] : 0.0f, part_w[j]);
        part_b[j] += dz;
        g[j] = dz * w.v[j];
        s1 += g[j];
        s2 = fmaf(g[j], xh[j], s2);
      }
      s1 = sum16(s1) * (1.0f / 64);
      s2 = sum16(s2) * (1.0f / 64);
      F4 dx;
#pragma unroll
      for (int j = 0; j < 4; ++j) dx.v[j] = rstd[k] * (g[j] - s1 - xh[j] * s2);
      sts4(tile + r * 64 + c0, dx);  // rows past the end are never stored
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // one tile's kR rows in float, then into double
      acc_w[j] += double(part_w[j]);
      acc_b[j] += double(part_b[j]);
    }
    fence_proxy_async_smem();  // this thread's dx, visible to the bulk store
    __syncthreads();           // stage s fully read and dx written into it
    if (threadIdx.x == 0) {
      const int64_t r0 = t * kT;
      bulk_store(a.dx + r0 * 64, tile, uint32_t(min(int64_t(kT), a.rows - r0)) * 256u, policy_evict_first());
      bulk_commit();
      refill_previous_stage<kS>(t, ntiles, s, issue);
    }
    if (++s == kS) {
      s = 0;
      parity ^= 1u;
    }
  }
  if (threadIdx.x == 0) bulk_wait_all<0>();  // the stores read shared memory until done, and the
  __syncthreads();                             // reduction below reuses it
  if (!dw_part) return;
  // Block partials in a fixed order: the two row groups of a warp (xor 16), then the 8 warps in
  // order. Reuses the stage memory: every copy issued was waited for, then a barrier.
  static_assert(kBwdSmem >= 2 * (kBlock / 32) * 64 * sizeof(double), "the final reduction reuses the stages");
  double* red = reinterpret_cast<double*>(stage_mem);  // [2][8 warps][64]
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    acc_w[j] += __shfl_xor_sync(kFull, acc_w[j], 16);
    acc_b[j] += __shfl_xor_sync(kFull, acc_b[j], 16);
  }
  if ((threadIdx.x & 31) < 16) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      red[warp * 64 + c0 + j] = acc_w[j];
      red[(kBlock / 32 + warp) * 64 + c0 + j] = acc_b[j];
    }
  }
  __syncthreads();
  if (threadIdx.x < 64) {
    double sw = 0, sb = 0;
    for (int wi = 0; wi < kBlock / 32; ++wi) {
      sw += red[wi * 64 + threadIdx.x];
      sb += red[(kBlock / 32 + wi) * 64 + threadIdx.x];
    }
    dw_part[int64_t(blockIdx.x) * 64 + threadIdx.x] = sw;
    db_part[int64_t(blockIdx.x) * 64 + threadIdx.x] = sb;
  }
}

// ---- backward without saved statistics, any number of columns: recompute them first ----------
__global__ void __launch_bounds__(kBlock) ln_row_stats(const float* x, int64_t rows, int64_t n, float eps,
                                                      float* mean_out, float* rstd_out) {
  const int lane = threadIdx.x & 31;
  const int64_t W = int64_t(gridDim.x) * (kBlock / 32);
  for (int64_t r = blockIdx.x * int64_t(kBlock / 32) + (threadIdx.x >> 5); r < rows; r += W) {
    float mean, rstd;
    warp_row_stats(x + r * n, n, eps, lane, mean, rstd);
    if (lane == 0) {
      mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
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


// Sums nparts partial rows per column in a fixed order, whatever the launch: each column's parts
// are split into 16 interleaved slices (slice k takes parts k, k+16, ... in order), then the 16
// slice sums are added in order. Block = 64 columns x 16 slices.
__global__ void __launch_bounds__(1024) sum_parts(const double* __restrict__ dw_part, const double* __restrict__ db_part,
                                                  int64_t nparts, int64_t cols, float* __restrict__ dw,
                                                  float* __restrict__ db) {
  __shared__ double sw[16][64], sb[16][64];
  const int cl = threadIdx.x & 63, k = threadIdx.x >> 6;
  const int64_t c = int64_t(blockIdx.x) * 64 + cl;
  double aw = 0, ab = 0;
  if (c < cols)
    for (int64_t p = k; p < nparts; p += 16) {
      aw += dw_part[p * cols + c];
      ab += db_part[p * cols + c];
    }
  sw[k][cl] = aw;
  sb[k][cl] = ab;
  __syncthreads();
  if (k == 0 && c < cols) {
    double tw = 0, tb = 0;
    for (int i = 0; i < 16; ++i) {
      tw += sw[i][cl];
      tb += sb[i][cl];
    }
    if (dw) dw[c] = static_cast<float>(tw);
    if (db) db[c] = static_cast<float>(tb);
  }
}

void launch_sum_parts(const char* op, const double* dwp, const double* dbp, int64_t nparts, int64_t cols, float* dw,
                      float* db) {
  const int64_t blocks = (cols + 63) / 64;
  MINIDL_CHECK(blocks <= int64_t(0x7fffffff), op, ": too many columns (", cols, ")");
  sum_parts<<<unsigned(blocks), 1024, 0, cuda::stream()>>>(dwp, dbp, nparts, cols, dw, db);
  MINIDL_LAUNCH_CHECK(op);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Exactly the blocks that fit on the GPU at once (never more than the work needs): the
// persistent loops then run in one wave with no half-empty second wave at the end.
template <class K>
unsigned resident_grid(K kernel, size_t smem, int64_t work_blocks) {
  int per_sm = 0;
  MINIDL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBlock, smem),
                    "layer_norm: occupancy");
  const int64_t cap = int64_t(per_sm > 0 ? per_sm : 1) * cuda::num_sms();
  return unsigned(std::max<int64_t>(1, std::min(cap, work_blocks)));
}

// Kernels whose dynamic plus static shared memory (the mbarriers) passes 48 KB must say so once
// before their first launch; asking for any size at or near the limit costs nothing.
template <class K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes > 47 * 1024)
    MINIDL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
                      "layer_norm: shared memory limit");
}

template <bool kGelu>
void launch_fwd_d64(const LnForwardArgs& a) {
  static const bool ready = (allow_smem(ln_fwd_d64<kGelu>, kFwdSmem), true);
  (void)ready;
  const int64_t ntiles = (a.rows + kTileRows - 1) / kTileRows;
  const bool stats_bulk = (!a.mean || aligned16(a.mean)) && (!a.rstd || aligned16(a.rstd));
  ln_fwd_d64<kGelu><<<resident_grid(ln_fwd_d64<kGelu>, kFwdSmem, ntiles), kBlock, kFwdSmem, cuda::stream()>>>(
      a, ntiles, stats_bulk);
}

template <bool kGelu>
void launch_bwd_d64(const char* op, const LnBackwardArgs& a) {
  static const bool ready = (allow_smem(ln_bwd_d64<kGelu>, kBwdSmem), true);
  (void)ready;
  const int64_t ntiles = (a.rows + kTileRows - 1) / kTileRows;
  const unsigned grid = resident_grid(ln_bwd_d64<kGelu>, kBwdSmem, ntiles);
  const bool want_params = a.dw || a.db;
  DeviceBuffer parts(want_params ? size_t(grid) * 64 * 2 * sizeof(double) : 8);
  double* dwp = want_params ? parts.as<double>() : nullptr;
  double* dbp = want_params ? parts.as<double>() + size_t(grid) * 64 : nullptr;
  const bool stats_bulk = a.mean && aligned16(a.mean) && aligned16(a.rstd);
  ln_bwd_d64<kGelu><<<grid, kBlock, kBwdSmem, cuda::stream()>>>(a, ntiles, stats_bulk, dwp, dbp);
  MINIDL_LAUNCH_CHECK(op);
  if (want_params) launch_sum_parts(op, dwp, dbp, grid, 64, a.dw, a.db);
}

}  // namespace

void launch_ln_forward(const char* op, const LnForwardArgs& a) {
  if (a.rows == 0) return;
  MINIDL_CHECK(a.cols > 0, op, ": normalized size is 0");
  cudaStream_t st = cuda::stream();
  const bool fast = a.cols == 64 && aligned16(a.x) && aligned16(a.y) && (!a.w || aligned16(a.w)) &&
                    (!a.b || aligned16(a.b));
  if (fast) {
    if (a.gelu)
      launch_fwd_d64<true>(a);
    else
      launch_fwd_d64<false>(a);
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
    if (a.gelu)
      launch_bwd_d64<true>(op, a);
    else
      launch_bwd_d64<false>(op, a);
    return;
  }
  const unsigned grid = grid_for(a.rows, kBlock / 32, 8);
  if (!a.mean) {  // the general kernels read saved statistics: make them
    DeviceBuffer stats(size_t(a.rows) * 2 * sizeof(float));
    LnBackwardArgs b = a;
    float* m = stats.as<float>();
    ln_row_stats<<<grid, kBlock, 0, st>>>(a.x, a.rows, a.cols, a.eps, m, m + a.rows);
    MINIDL_LAUNCH_CHECK(op);
    b.mean = m;
    b.rstd = m + a.rows;
    launch_ln_backward(op, b);
    return;
  }
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
  launch_sum_parts(op, dwp, dbp, chunks, a.cols, a.dw, a.db);
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
  a.mean = ctx.out_data_or_null<float>(1);
  a.rstd = ctx.out_data_or_null<float>(2);
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
  a.dw = ctx.out_data_or_null<float>(1);
  a.db = ctx.out_data_or_null<float>(2);
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
