// Attempt (not kept, not correct): two output rows per wgmma (N = 72) for pad_w = 1, W = 32, one
// accumulator set. Its check failed (flagship y rel 4.5e-3 against float64; single-row pairs and
// block edges wrong) and it ran 0.807 ms against the kept kernel's 0.737 in the same run, so it
// was not debugged further (bench/NOTES.md). Kept for the TMA layout it describes.
// Two output rows per wgmma for the flagship geometry (pad_w = 1, W = 32): the TF32 kernel of
// fused_conv_transpose3d_ln_gelu_scale_kernel.cuh with N = 72 instead of 32.
//  * Rows oh and oh + 2 of the same (class, n, od) read input rows ih0 - b and ih0 + 1 - b for tap
//    b. A TMA box of x laid out as [ci/4][ih0-1 .. ih0+1][iw -1 .. 31][ci%4] (33 rows per input
//    row, the row iw = -1 zero-filled out of range) puts both in one N = 72 window per k-step:
//    columns 0-31 are row oh's u = 0..31, column 32 garbage, columns 33-64 row oh+2's u = 0..31,
//    65-71 garbage. The zero row iw = -1 of each input row is also the zero row iw = 32 of the one
//    before, which is what the taps of both parities need.
//  * Half the wgmma instructions per row, 12.5% more tensor work; one accumulator set (36 + 128
//    weight registers), so the epilogue, staging and statistics code of the N = 32 kernel is reused
//    row by row.
#pragma once
#include "ops/fused_conv_transpose3d_ln_gelu_scale_kernel.cuh"

namespace minidl {
namespace fused_conv_detail {

constexpr int kPairIwRows = 33;                 // iw = -1 .. 31
constexpr int kPairLoadStages = 3;              // row pairs whose inputs are in flight or in use
constexpr uint32_t pair_box_bytes(int cin) { return (uint32_t)(cin / 4) * 3 * kPairIwRows * 16; }
// Input for the pair kernel: xp[n*(D+2) + id+1][ci/4][ih][iw][ci%4], W = 32, TF32-rounded, with
// zero volumes at id = -1 and id = D (TMA zero-fills out-of-range ih and iw, but (n, id) is one
// dimension, so its ends are written out).
inline size_t pair_workspace_bytes(int64_t N, int64_t Cin, int64_t D, int64_t H) {
  return (size_t)N * (D + 2) * (Cin / 4) * H * 32 * 16;
}

template <int CIN>
__global__ void relayout_pair_kernel(const float* __restrict__ x, float4* __restrict__ xp, const Geometry g) {
  const int n = blockIdx.x / (g.D + 2), idp = blockIdx.x % (g.D + 2), id = idp - 1;
  const int per_ci4 = g.H * 32;
  float4* dst = xp + (int64_t)blockIdx.x * (CIN / 4) * per_ci4;
  const bool ok = id >= 0 && id < g.D;
  const int64_t chan = (int64_t)g.D * g.H * 32;
  const float* xs = x + ((int64_t)n * CIN * g.D + (ok ? id : 0)) * g.H * 32;
#pragma unroll 4
  for (int i = threadIdx.x; i < (CIN / 4) * per_ci4; i += blockDim.x) {
    const int ci4 = i / per_ci4, r = i - ci4 * per_ci4;  // r = ih * 32 + iw
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (ok) {
      const float* s = xs + 4 * ci4 * chan + r;
      v = make_float4(tf32_round(__ldg(s)), tf32_round(__ldg(s + chan)), tf32_round(__ldg(s + 2 * chan)),
                      tf32_round(__ldg(s + 3 * chan)));
    }
    dst[i] = v;
  }
}

// D[64 x 72] (+)= A[64 x 8] (registers, tf32) * B[8 x 72] (shared memory, K-major, descriptor).
template <int ScaleD>
__device__ __forceinline__ void wgmma_m64n72k8(float (&d)[36], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k8.f32.tf32.tf32 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
      "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}, "
      "{%36, %37, %38, %39}, %40, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "n"(ScaleD)
      : "memory");
}

__device__ __forceinline__ void tma_load_5d(uint32_t dst, const void* map, int c0, int c1, int c2, int c3, int c4,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
      "%5, %6}], [%7];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(bar)
      : "memory");
}

// LayerNorm partial statistics (sum, M2) of this thread's quad for one row half: `n` values.
__device__ __forceinline__ float2 quad_stats(const float (&v)[8], const bool (&ok)[8], float inv_count) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s += ok[i] ? v[i] : 0.f;
  s += __shfl_xor_sync(0xffffffffu, s, 1);
  s += __shfl_xor_sync(0xffffffffu, s, 2);
  const float m = s * inv_count;
  float d = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float dv = v[i] - m;
    d = ok[i] ? fmaf(dv, dv, d) : d;
  }
  d += __shfl_xor_sync(0xffffffffu, d, 1);
  d += __shfl_xor_sync(0xffffffffu, d, 2);
  return make_float2(s, d);
}

template <int CIN, bool TANH>
__global__ void __launch_bounds__(kThreads, 1)
    fused_conv_pair_kernel(const Params p, const __grid_constant__ CUtensorMap ymap,
                           const __grid_constant__ CUtensorMap xmap) {
  constexpr uint32_t kBoxBytes = pair_box_bytes(CIN);
  constexpr uint32_t kStageBytes = 2 * kBoxBytes;  // a = 0, 1
  constexpr int kStageFloats = 64 * kStageLd;
  constexpr int KS = CIN, KC = CIN / 8;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  float* const outs = reinterpret_cast<float*>(smem_raw);
  float* const stages = outs + kOutTiles * 64 * 64;
  unsigned char* const slabs = reinterpret_cast<unsigned char*>(stages + kStageTiles * kStageFloats);
  // + 256 bytes: the last k-step window of a box reads up to 7 rows past it (garbage columns)
  const uint32_t stage_bars = smem_u32(slabs + kPairLoadStages * kStageBytes + 256);
  const uint32_t load_bars = stage_bars + 8 * 2 * kStageTiles;
  const Geometry& g = p.g;

  const int it0 = (int)((int64_t)blockIdx.x * g.total / gridDim.x);
  const int it1 = (int)((int64_t)(blockIdx.x + 1) * g.total / gridDim.x);
  if (it0 >= it1) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = tid >> 7;
  init_stage_bars(stage_bars, tid);
  if (tid < kPairLoadStages) mbar_init(load_bars + 8 * tid, 1);
  mbar_init_fence();
  __syncthreads();
  const int n_items = it1 - it0;

  if (wg >= 2) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kEpiRegsDb));
    fused_conv_epilogue<TANH, 0, true, true>(p, &ymap, stages, kStageFloats, outs, stage_bars, it0, it1, warp - 8,
                                             lane, tid - 256);
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kMmaRegsDb));
  const int q = __shfl_sync(0xffffffffu, wg, 0), wtid = tid & 127;
  const bool producer = __shfl_sync(0xffffffffu, warp, 0) == 0;
  const uint32_t slab_s = smem_u32(slabs);

  // Row pairs: the block's rows in walk order, two at a time when the second is row oh + 2 of
  // the same (class, n, od), else one (the other half of the window is computed and dropped).
  auto next_pair = [&](Item& it, int& k) {  // it = first row of the pair at block row k -> next pair
    Item b = it;
    const bool two = k + 1 < n_items && advance_item(g, b);
    if (two) {
      it = b;
      advance_item(g, it);
      k += 2;
    } else {
      advance_item(g, it);
      k += 1;
    }
  };
  auto load_pair = [&](const Item& it, int m) {  // pair m (first row `it`) into stage m % kPairLoadStages
    const int st = m % kPairLoadStages;
    const uint32_t bar = load_bars + 8 * st;
    const int ih0 = (it.oh + g.ph) >> 1, id0 = (it.od + g.pd) >> 1;
    if (lane == 0) {
      mbar_arrive_expect(bar, kStageBytes);
#pragma unroll
      for (int a = 0; a < 2; ++a)
        tma_load_5d(slab_s + st * kStageBytes + a * kBoxBytes, &xmap, 0, -1, ih0 - 1, 0,
                    it.n * (g.D + 2) + id0 - a + 1, bar);
    }
  };
  Item pre = decode_item(g, it0);
  int kpre = 0, mpre = 0;
  if (producer)
    for (int j = 0; j < kPairLoadStages - 1 && kpre < n_items; ++j) {
      load_pair(pre, mpre++);
      next_pair(pre, kpre);
    }

  constexpr uint32_t kLbo = 3 * kPairIwRows * 16, kSbo = 128;
  const uint32_t desc_w0 = (kLbo >> 4) << 16;
  const uint32_t desc_w1 = kSbo >> 4;
  const int rho0 = ((q + 1) >> 1) + 1;  // pad_w = 1: plane row (iw + 1) of u = 0, tap c = 0

  uint32_t wa[KS * 4];
  float acc[36];
#pragma unroll
  for (int i = 0; i < 36; ++i) acc[i] = 0.f;
  int cur_cls = -1;
  Item cur = decode_item(g, it0);
  for (int k = 0, m = 0; k < n_items; ++m) {
    Item b = cur;
    const bool two = k + 1 < n_items && advance_item(g, b);
    const int st = m % kPairLoadStages;
    mbar_wait(load_bars + 8 * st, (uint32_t)((m / kPairLoadStages) & 1));
    bar_sync(kBarMma, 256);  // both warpgroups are past pair m-1, so its stage may be refilled
    if (producer && kpre < n_items) {
      load_pair(pre, mpre++);
      next_pair(pre, kpre);
    }
    if (cur.cls != cur_cls) {
      const float4* src = g_wprep + (size_t)(cur.cls * 2 + q) * CIN * 128 + wtid;
#pragma unroll
      for (int s = 0; s < KS; ++s) {
        const float4 v = src[s * 128];
        wa[4 * s + 0] = __float_as_uint(v.x);
        wa[4 * s + 1] = __float_as_uint(v.y);
        wa[4 * s + 2] = __float_as_uint(v.z);
        wa[4 * s + 3] = __float_as_uint(v.w);
      }
      cur_cls = cur.cls;
    }
    const uint32_t base = slab_s + st * kStageBytes + rho0 * 16;
#pragma unroll
    for (int i = 0; i < 36; ++i) reg_fence(acc[i]);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < KS; ++s) {
      const int ci8 = s % KC, t3 = s / KC, c = t3 & 1, bb = (t3 >> 1) & 1, a = t3 >> 2;
      // box a, channel group 2*ci8, input row ih0 - bb (box row 1 - bb), tap shift -c
      const uint32_t addr = base + a * kBoxBytes + ci8 * 2 * kLbo + ((1 - bb) * kPairIwRows - c) * 16;
      const uint64_t desc = ((uint64_t)desc_w1 << 32) | (uint64_t)(((addr >> 4) & 0x3FFF) | desc_w0);
      if (s == 0)
        wgmma_m64n72k8<0>(acc, wa[0], wa[1], wa[2], wa[3], desc);
      else
        wgmma_m64n72k8<1>(acc, wa[4 * s], wa[4 * s + 1], wa[4 * s + 2], wa[4 * s + 3], desc);
    }
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 36; ++i) reg_fence(acc[i]);

    const int co = 16 * (warp & 3) + (lane >> 2), t = lane & 3;
    // Row oh: columns 8j + 2t (+1), j = 0..3, as in the N = 32 kernel.
    {
      float vA[8], vB[8];
      bool ok[8];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        vA[2 * j] = acc[4 * j];
        vA[2 * j + 1] = acc[4 * j + 1];
        vB[2 * j] = acc[4 * j + 2];
        vB[2 * j + 1] = acc[4 * j + 3];
        ok[2 * j] = ok[2 * j + 1] = true;
      }
      const float2 sa = quad_stats(vA, ok, 1.f / 32.f), sb = quad_stats(vB, ok, 1.f / 32.f);
      wait_stage_empty(stage_bars, k);
      float* stg = stages + stage_tile(k) * kStageFloats;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        *reinterpret_cast<float2*>(stg + co * kStageLd + q * 32 + 8 * j + 2 * t) = make_float2(vA[2 * j], vA[2 * j + 1]);
        *reinterpret_cast<float2*>(stg + (co + 8) * kStageLd + q * 32 + 8 * j + 2 * t) =
            make_float2(vB[2 * j], vB[2 * j + 1]);
      }
      if (t == 0) {
        *reinterpret_cast<float2*>(stg + co * kStageLd + 64 + 2 * q) = sa;
        *reinterpret_cast<float2*>(stg + (co + 8) * kStageLd + 64 + 2 * q) = sb;
      }
      signal_stage_full(stage_bars, k);
    }
    // Row oh + 2: columns 33..64 -> u = column - 33, held at j = 4..8.
    if (two) {
      float vA[8], vB[8];
      bool ok[8];
      int u[8];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {  // slots: (j = 4 + jj, e) for jj < 4; the column-64 value at j = 8
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = 8 * (4 + jj) + 2 * t + e;
          u[2 * jj + e] = col - 33;
          ok[2 * jj + e] = col >= 33;
          vA[2 * jj + e] = acc[4 * (4 + jj) + e];
          vB[2 * jj + e] = acc[4 * (4 + jj) + 2 + e];
        }
      }
      // column 64 (u = 31) sits in slot (j = 8, e = 0) of t = 0; it replaces the unused column 32.
      if (t == 0) {
        u[0] = 31;
        ok[0] = true;
        vA[0] = acc[32];
        vB[0] = acc[34];
      }
      const float2 sa = quad_stats(vA, ok, 1.f / 32.f), sb = quad_stats(vB, ok, 1.f / 32.f);
      wait_stage_empty(stage_bars, k + 1);
      float* stg = stages + stage_tile(k + 1) * kStageFloats;
#pragma unroll
      for (int i = 0; i < 8; ++i)
        if (ok[i]) {
          stg[co * kStageLd + q * 32 + u[i]] = vA[i];
          stg[(co + 8) * kStageLd + q * 32 + u[i]] = vB[i];
        }
      if (t == 0) {
        *reinterpret_cast<float2*>(stg + co * kStageLd + 64 + 2 * q) = sa;
        *reinterpret_cast<float2*>(stg + (co + 8) * kStageLd + 64 + 2 * q) = sb;
      }
      signal_stage_full(stage_bars, k + 1);
      cur = b;
    }
    advance_item(g, cur);
    k += two ? 2 : 1;
  }
}

// x as the 5-D tensor (ci%4, iw, ih, ci/4, n*(D+2) + id+1) over the pair layout; box (4, 33, 3,
// Cin/4, 1) starting at iw = -1, ih = ih0 - 1, so shared memory holds [ci/4][3 ih][33 iw][ci%4].
inline CUtensorMap make_x_pair_tensor_map(const Params& p, int cin) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (!encode) throw std::runtime_error("fused_conv_transpose3d_ln_gelu_scale: no cuTensorMapEncodeTiled");
  const Geometry& g = p.g;
  const cuuint64_t row = 16;                // one iw: 4 channels
  const cuuint64_t ihs = row * 32;          // one ih
  const cuuint64_t grp = ihs * g.H;         // one ci/4 group
  const cuuint64_t vol = grp * (cin / 4);   // one (n, id)
  const cuuint64_t dims[5] = {4, 32, (cuuint64_t)g.H, (cuuint64_t)cin / 4, (cuuint64_t)g.N * (g.D + 2)};
  const cuuint64_t strides[4] = {row, ihs, grp, vol};
  const cuuint32_t box[5] = {4, (cuuint32_t)kPairIwRows, 3, (cuuint32_t)cin / 4, 1};
  const cuuint32_t estrides[5] = {1, 1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 5, p.xt, dims, strides, box, estrides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error("fused_conv_transpose3d_ln_gelu_scale: cuTensorMapEncodeTiled failed for x (error " +
                             std::to_string((int)r) + ")");
  return map;
}

// p.xt must point to pair_workspace_bytes(); pad_w = 1 and W = 32 only.
template <int CIN, bool TANH>
void launch_pair(const Params& p, const float* w, cudaStream_t stream) {
  constexpr size_t smem = (size_t)kOutTiles * 64 * 64 * sizeof(float) +
                          (size_t)kStageTiles * 64 * kStageLd * sizeof(float) +
                          (size_t)kPairLoadStages * 2 * pair_box_bytes(CIN) + 256 +
                          8 * (2 * kStageTiles + kPairLoadStages);
  static_assert(smem <= 227 * 1024, "shared memory over the sm_90 limit");
  static const bool configured = [] {
    cudaFuncSetAttribute(fused_conv_pair_kernel<CIN, TANH>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    return true;
  }();
  (void)configured;
  const Geometry& g = p.g;
  relayout_pair_kernel<CIN><<<(unsigned)(g.N * (g.D + 2)), 256, 0, stream>>>(p.x, reinterpret_cast<float4*>(p.xt), g);
  const int prep_n = 8 * CIN * 128 * 4;
  prep_weights_kernel<CIN><<<(prep_n + 255) / 256, 256, 0, stream>>>(w, g.pw, p.variant);
  const CUtensorMap ymap = make_y_tensor_map(p);
  const CUtensorMap xmap = make_x_pair_tensor_map(p, CIN);
  const int sms = device_sm_count();
  const int grid = g.total < sms ? g.total : sms;
  fused_conv_pair_kernel<CIN, TANH><<<grid, kThreads, smem, stream>>>(p, ymap, xmap);
}

}  // namespace fused_conv_detail
}  // namespace minidl
