// conv_transpose3d CUDA fast paths: stride 2, kernel 4, padding 1.
//
// The flagship geometry (C_in 32, C_out 64, input width 32, output = 2 x input in every dim) on
// mma.sync m16n8k8 TF32 with operands in shared memory. With o + 1 = 2a + r, output o receives
// tap k = r + 2t of input i = a - t (t in {0, 1}), so each parity class r = (rd, rh, rw) is a
// dense GEMM with K = 8 taps x 32 channels = 256. The three kernels:
//  - forward: a persistent block per (rd, rh) keeps both rw's packed weights (128 KB) in shared
//    memory and walks groups of 4 output rows (n, od, 4 oh of that parity); per group it stages
//    the 2 x 5 input rows it needs (all 32 channels) and writes the rows with float2 stores that
//    pair ow = 2j (rw = 1) with ow = 2j + 1 (rw = 0).
//  - grad_input: dx = conv3d(dy, w, stride 2), M = input positions, N = C_in, K = C_out x 64 taps.
//    A block owns 2 id x 4 ih x 32 iw positions; dy is staged in its natural layout (6 x 10 rows
//    per channel, chunks of 2 channels, cp.async double buffering). With kw as the innermost
//    K index, an A fragment element (iw = g, kw = t) sits at column 2g + t of one dy row, so the
//    fragments read the natural layout without bank conflicts.
//  - grad_weight: the forward's phase GEMM transposed, dW_class[k = (t, ci)][co] =
//    sum over the class's output positions of x_gather[pos][k] * dy[pos][co]: dy is read once,
//    in whole rows. A persistent block per (rd, rh) holds all 2 x 256 x 64 accumulators in
//    registers (16 warps x 64), walks the class's output rows in pairs, in a fixed interleaved order, and
//    writes its partial sums; a second kernel adds the partials of each class in a fixed order.
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/conv_transpose3d_fast.h"
#include "ops/cuda_kernels.h"

namespace minidl {
namespace conv_cuda {
namespace fast {

constexpr int CI = 32, CO = 64, WI = 32;

bool disabled_by_env() {
  const char* v = std::getenv("MINIDL_CONV_GENERAL");
  return v && v[0] == '1';
}

bool applies(const Geo& g) {
  for (int d = 0; d < 3; ++d)
    if (g.s[d] != 2 || g.k[d] != 4 || g.p[d] != 1 || g.out[d] != 2 * g.in[d]) return false;
  return g.Cin == CI && g.Cout == CO && g.in[2] == WI && g.N > 0 && g.in[0] > 0 && g.in[1] > 0 &&
         !disabled_by_env();
}

// The weights are rounded to TF32 once when packed, exactly as the general path rounds them.
__device__ __forceinline__ float to_tf32(float v) { return nvcuda::wmma::__float_to_tf32(v); }

__device__ __forceinline__ uint32_t tf32_bits(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}
__device__ __forceinline__ float tf32r(float v) { return __uint_as_float(tf32_bits(v)); }
__device__ __forceinline__ float4 tf32r4(float4 v) { return make_float4(tf32r(v.x), tf32r(v.y), tf32r(v.z), tf32r(v.w)); }

// d += A(16x8, row) * B(8x8, col); fragments as in the PTX ISA's m16n8k8 .tf32 layout:
// a = {A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]}, b = {B[t][g], B[t+4][g]},
// d = {D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]} with g = lane / 4, t = lane % 4.
__device__ __forceinline__ void mma8(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                     uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool ok) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int n>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n));
}

// ---- forward ----
constexpr int F_THREADS = 256;
constexpr int F_ROWS = 4;              // output rows (one oh parity) per group
constexpr int F_RP = 36;               // slab row pitch; iw at column iw + 4, columns 3 and 36 (= next row's 0) stay 0
constexpr int F_CP = 376;              // slab channel pitch: 10 rows + pad, == 24 mod 32 (conflict-free A loads)
constexpr int F_BFLOATS = 32768;       // one (rd, rh) class: 2 rw x 8 taps x 32 ci x 64 co
constexpr int F_SMEM = (F_BFLOATS + CI * F_CP) * 4;
constexpr int F_STAGE = CI * 10 * 8 / F_THREADS;  // float4 loads per thread per group (10)

// packed[cls][rw][td][th][tw][cs][p][lane][4]: the B fragments of n-tiles 2p and 2p+1 for
// channel step cs (ci = 8cs + ...), TF32-rounded; tap (rd + 2td, rh + 2th, rw + 2tw).
__global__ void pack_fast_forward(const float* __restrict__ w, float* __restrict__ out) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= 4 * F_BFLOATS) return;
  const int q = e & 3, lane = (e >> 2) & 31, p = (e >> 7) & 3, cs = (e >> 9) & 3, tw = (e >> 11) & 1,
            th = (e >> 12) & 1, td = (e >> 13) & 1, rw = (e >> 14) & 1, cls = e >> 15;
  const int rd = cls >> 1, rh = cls & 1, g = lane >> 2, t = lane & 3;
  const int ci = cs * 8 + t + 4 * (q & 1), co = (2 * p + (q >> 1)) * 8 + g;
  const int kd = rd + 2 * td, kh = rh + 2 * th, kw = rw + 2 * tw;
  out[e] = to_tf32(w[((ci * CO + co) * 4 + kd) * 16 + kh * 4 + kw]);
}

__global__ void __launch_bounds__(F_THREADS, 1)
    fwd_fast_kernel(const float* __restrict__ x, const float* __restrict__ bpack, const float* __restrict__ bias,
                    float* __restrict__ y, int N, int D, int H) {
  extern __shared__ __align__(16) float sm[];
  float* Bs = sm;
  float* Xs = sm + F_BFLOATS;
  const int cls = blockIdx.x & 3, rd = cls >> 1, rh = cls & 1;
  const int P = gridDim.x >> 2, bi = blockIdx.x >> 2;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int ch = warp & 1, jh = (warp >> 1) & 1, rp = warp >> 2;
  {
    const float4* src = reinterpret_cast<const float4*>(bpack + cls * F_BFLOATS);
    float4* dst = reinterpret_cast<float4*>(Bs);
    for (int i = tid; i < F_BFLOATS / 4; i += F_THREADS) dst[i] = __ldg(src + i);
    for (int i = tid; i < CI * F_CP; i += F_THREADS) Xs[i] = 0.0f;
  }
  float bv[4][2];
#pragma unroll
  for (int nf = 0; nf < 4; ++nf)
#pragma unroll
    for (int c = 0; c < 2; ++c) bv[nf][c] = bias ? __ldg(bias + 32 * ch + 8 * nf + 2 * t + c) : 0.0f;

  const int HQ = (H + F_ROWS - 1) / F_ROWS;
  const int64_t G = int64_t(N) * D * HQ;
  const int OD = 2 * D, OH = 2 * H;
  const int64_t plane = int64_t(OD) * OH * 64;  // floats between output channels

  float4 st[F_STAGE];
  auto load = [&](int64_t grp) {
    const bool live = grp < G;
    const int q = live ? int(grp % HQ) : 0;
    const int64_t nd = live ? grp / HQ : 0;
    const int adi = int(nd % D);
    const int64_t n = nd / D;
    const int ad = adi + 1 - rd, ah0 = F_ROWS * q + 1 - rh;
#pragma unroll
    for (int i = 0; i < F_STAGE; ++i) {
      const int e = tid + F_THREADS * i, quad = e & 7, row = e >> 3, ci = row / 10, rr = row - ci * 10;
      const int tdr = rr / 5, ihr = rr - tdr * 5;
      const int id = ad - tdr, ih = ah0 - 1 + ihr;
      const bool ok = live && id >= 0 && id < D && ih >= 0 && ih < H;
      st[i] = ok ? __ldg(reinterpret_cast<const float4*>(x + (((n * CI + ci) * D + id) * H + ih) * WI) + quad)
                 : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };
  auto store = [&]() {
#pragma unroll
    for (int i = 0; i < F_STAGE; ++i) {
      const int e = tid + F_THREADS * i, quad = e & 7, row = e >> 3, ci = row / 10, rr = row - ci * 10;
      *reinterpret_cast<float4*>(Xs + ci * F_CP + rr * F_RP + 4 + 4 * quad) = tf32r4(st[i]);
    }
  };

  int64_t grp = bi;
  load(grp);
  __syncthreads();  // the zero fill above is done before the first store
  store();
  __syncthreads();
  load(grp + P);
  const uint32_t* Xu = reinterpret_cast<const uint32_t*>(Xs) + t * F_CP + (2 * rp + 1) * F_RP + 16 * jh + g + 5;
  const float4* Bq = reinterpret_cast<const float4*>(Bs) + 2 * ch * 32 + lane;
  for (; grp < G; grp += P) {
    float acc[2][2][4][4];
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int rw = 0; rw < 2; ++rw)
#pragma unroll
        for (int nf = 0; nf < 4; ++nf)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[r][rw][nf][c] = 0.0f;
#pragma unroll
    for (int td = 0; td < 2; ++td)
#pragma unroll
      for (int th = 0; th < 2; ++th)
#pragma unroll
        for (int cs = 0; cs < 4; ++cs) {
          uint32_t a[2][3][4];
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int u = 0; u < 3; ++u) {
              const uint32_t* p = Xu + cs * 8 * F_CP + (td * 5 + r - th) * F_RP - u;
              a[r][u][0] = p[0];
              a[r][u][1] = p[8];
              a[r][u][2] = p[4 * F_CP];
              a[r][u][3] = p[4 * F_CP + 8];
            }
#pragma unroll
          for (int rw = 0; rw < 2; ++rw)
#pragma unroll
            for (int tw = 0; tw < 2; ++tw) {
              const float4* bp = Bq + ((((rw * 2 + td) * 2 + th) * 2 + tw) * 4 + cs) * 128;
              const float4 b01 = bp[0], b23 = bp[32];
#pragma unroll
              for (int r = 0; r < 2; ++r) {
                const uint32_t(&A)[4] = a[r][rw + tw];
                mma8(acc[r][rw][0], A[0], A[1], A[2], A[3], __float_as_uint(b01.x), __float_as_uint(b01.y));
                mma8(acc[r][rw][1], A[0], A[1], A[2], A[3], __float_as_uint(b01.z), __float_as_uint(b01.w));
                mma8(acc[r][rw][2], A[0], A[1], A[2], A[3], __float_as_uint(b23.x), __float_as_uint(b23.y));
                mma8(acc[r][rw][3], A[0], A[1], A[2], A[3], __float_as_uint(b23.z), __float_as_uint(b23.w));
              }
            }
        }
    __syncthreads();  // every warp is done with this group's slab
    store();          // the next group's slab
    __syncthreads();
    load(grp + 2 * P);  // in flight during the next group's math
    // Epilogue: rows of this group, float2 {ow = 2j (rw 1), ow = 2j + 1 (rw 0)}.
    const int q = int(grp % HQ);
    const int64_t nd = grp / HQ;
    const int adi = int(nd % D);
    const int64_t n = nd / D;
    const int od = 2 * adi + 1 - rd;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int ahi = F_ROWS * q + 2 * rp + r;
      if (ahi >= H) continue;
      const int oh = 2 * ahi + 1 - rh;
#pragma unroll
      for (int nf = 0; nf < 4; ++nf) {
        const int co = 32 * ch + 8 * nf + 2 * t;
        float* base = y + ((n * CO + co) * OD + od) * int64_t(OH) * 64 + int64_t(oh) * 64 + 2 * (16 * jh + g);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int cc = 0; cc < 2; ++cc) {
            const int c = hh * 2 + cc;
            *reinterpret_cast<float2*>(base + cc * plane + hh * 16) =
                make_float2(acc[r][1][nf][c] + bv[nf][cc], acc[r][0][nf][c] + bv[nf][cc]);
          }
      }
    }
  }
}

// ---- grad_input ----
// A block owns 2 id x 4 ih x 32 iw input positions, 8 warps with one (id, ih) row each. Per
// output channel (the K chunk) it stages the 6 x 10 dy rows through registers (TF32-rounded on
// the way) and the packed weights by cp.async, double-buffered, one barrier per chunk.
constexpr int GI_THREADS = 256;
constexpr int GI_RP = 72;                                // dy row pitch: ow at column ow + 4
constexpr int GI_OHR = 10;                               // oh rows per channel (od rows: 6)
template <int CC>                                        // output channels per K chunk
struct GiCfg {
  static constexpr int DY = CC * 6 * GI_OHR * GI_RP;
  static constexpr int W = CC * 2048;                    // packed weights per chunk
  static constexpr int STAGE = DY + W;
  static constexpr int SMEM = 2 * STAGE * 4;
  static constexpr int DYU = CC * 6 * GI_OHR * 16;       // 16-byte dy pieces per chunk
  static constexpr int SLOTS = (DYU + GI_THREADS - 1) / GI_THREADS;
};

// packed[co][kd][khp][p][lane][4]: B fragments (ci = 8 nf + g, k = (kh = 2 khp + {0, 1}, kw = t))
// of n-tiles 2p and 2p + 1, TF32-rounded.
__global__ void pack_fast_grad_input(const float* __restrict__ w, float* __restrict__ out) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= CO * 2048) return;
  const int q = e & 3, lane = (e >> 2) & 31, p = (e >> 7) & 1, khp = (e >> 8) & 1, kd = (e >> 9) & 3, co = e >> 11;
  const int g = lane >> 2, t = lane & 3;
  const int ci = (2 * p + (q >> 1)) * 8 + g, kh = 2 * khp + (q & 1), kw = t;
  out[e] = to_tf32(w[((ci * CO + co) * 4 + kd) * 16 + kh * 4 + kw]);
}

template <int GI_CC>
__global__ void __launch_bounds__(GI_THREADS, 2)
    grad_input_fast_kernel(const float* __restrict__ dy, const float* __restrict__ wpack, float* __restrict__ dx,
                           int D, int H) {
  using C = GiCfg<GI_CC>;
  constexpr int GI_DY = C::DY, GI_W = C::W, GI_STAGE = C::STAGE, GI_DYU = C::DYU, GI_SLOTS = C::SLOTS;
  extern __shared__ __align__(16) float sm[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int HQ = (H + 3) / 4, DP = (D + 1) / 2;
  const int hq = blockIdx.x % HQ, ip = (blockIdx.x / HQ) % DP;
  const int64_t n = blockIdx.x / (int64_t(HQ) * DP);
  const int OD = 2 * D, OH = 2 * H;
  const int od0 = 4 * ip - 1, oh0 = 8 * hq - 1;
  const int idl = warp >> 2, ihl = warp & 3;
  for (int i = tid; i < 2 * GI_STAGE; i += GI_THREADS) sm[i] = 0.0f;
  __syncthreads();

  float4 sd[GI_SLOTS];
  auto load_dy = [&](int c) {
    const int co0 = c * GI_CC;
#pragma unroll
    for (int i = 0; i < GI_SLOTS; ++i) {
      const int u = tid + GI_THREADS * i;
      const int quad = u & 15, row = u >> 4, cc = row / (6 * GI_OHR), rr = row - cc * (6 * GI_OHR),
                odr = rr / GI_OHR, ohr = rr - odr * GI_OHR;
      const int od = od0 + odr, oh = oh0 + ohr;
      const bool ok = u < GI_DYU && od >= 0 && od < OD && oh >= 0 && oh < OH;
      sd[i] = ok ? __ldg(reinterpret_cast<const float4*>(dy + (((n * CO + co0 + cc) * OD + od) * OH + oh) * 64) + quad)
                 : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };
  auto store_dy = [&](int stage) {
    float* s = sm + stage * GI_STAGE;
#pragma unroll
    for (int i = 0; i < GI_SLOTS; ++i) {
      const int u = tid + GI_THREADS * i;
      if (u < GI_DYU) *reinterpret_cast<float4*>(s + (u >> 4) * GI_RP + 4 + 4 * (u & 15)) = tf32r4(sd[i]);
    }
  };
  auto issue_w = [&](int c, int stage) {
    float* s = sm + stage * GI_STAGE + GI_DY;
    const float* wsrc = wpack + c * GI_CC * 2048;
#pragma unroll
    for (int i = 0; i < GI_W / 4 / GI_THREADS; ++i) {
      const int v = tid + GI_THREADS * i;
      cp_async16(s + 4 * v, wsrc + 4 * v, true);
    }
    cp_async_commit();
  };

  float acc[2][4][4];
#pragma unroll
  for (int mf = 0; mf < 2; ++mf)
#pragma unroll
    for (int nf = 0; nf < 4; ++nf)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[mf][nf][c] = 0.0f;

  constexpr int NC = CO / GI_CC;
  issue_w(0, 0);
  load_dy(0);
  store_dy(0);
  issue_w(1, 1);
  load_dy(1);
  cp_async_wait<1>();  // chunk 0's weights
  __syncthreads();
  const int aoff = (2 * idl * GI_OHR + 2 * ihl) * GI_RP + 3 + 2 * g + t;
  for (int c = 0; c < NC; ++c) {
    const float* s = sm + (c & 1) * GI_STAGE;
    const uint32_t* Au = reinterpret_cast<const uint32_t*>(s) + aoff;
    const float4* Bq = reinterpret_cast<const float4*>(s + GI_DY) + lane;
#pragma unroll
    for (int cc = 0; cc < GI_CC; ++cc)
#pragma unroll
      for (int kd = 0; kd < 4; ++kd)
#pragma unroll
        for (int khp = 0; khp < 2; ++khp) {
          const uint32_t* pa = Au + ((cc * 6 + kd) * GI_OHR + 2 * khp) * GI_RP;
          const float4* pb = Bq + ((cc * 4 + kd) * 2 + khp) * 64;
          const float4 b01 = pb[0], b23 = pb[32];
#pragma unroll
          for (int mf = 0; mf < 2; ++mf) {
            const uint32_t a0 = pa[32 * mf], a1 = pa[32 * mf + 16], a2 = pa[32 * mf + GI_RP],
                           a3 = pa[32 * mf + GI_RP + 16];
            mma8(acc[mf][0], a0, a1, a2, a3, __float_as_uint(b01.x), __float_as_uint(b01.y));
            mma8(acc[mf][1], a0, a1, a2, a3, __float_as_uint(b01.z), __float_as_uint(b01.w));
            mma8(acc[mf][2], a0, a1, a2, a3, __float_as_uint(b23.x), __float_as_uint(b23.y));
            mma8(acc[mf][3], a0, a1, a2, a3, __float_as_uint(b23.z), __float_as_uint(b23.w));
          }
        }
    // Stage (c+1)&1 was last read in chunk c - 1, before the barrier that ended it.
    if (c + 1 < NC) store_dy((c + 1) & 1);
    if (c + 2 < NC) load_dy(c + 2);  // in flight during chunk c + 1's math
    cp_async_wait<0>();              // chunk c + 1's weights
    __syncthreads();
    if (c + 2 < NC) issue_w(c + 2, c & 1);  // every warp is done with stage c&1
  }
  const int id = 2 * ip + idl, ih = 4 * hq + ihl;
  if (id >= D || ih >= H) return;
#pragma unroll
  for (int mf = 0; mf < 2; ++mf)
#pragma unroll
    for (int nf = 0; nf < 4; ++nf) {
      const int ci = 8 * nf + 2 * t, iw = 16 * mf + g;
      float* p = dx + (((n * CI + ci) * D + id) * H + ih) * WI + iw;
      const int64_t cstride = int64_t(D) * H * WI;
      p[0] = acc[mf][nf][0];
      p[cstride] = acc[mf][nf][1];
      p[8] = acc[mf][nf][2];
      p[cstride + 8] = acc[mf][nf][3];
    }
}

// ---- grad_weight ----
// Each step handles a pair of output rows (n, od, oh = 2ah + rh - 1 for ah, ah + 1): x rows
// id in {ad, ad - 1} x ih in {ah - 1, ah, ah + 1} arrive by cp.async in their natural layout
// (TF32-rounded in place by the thread that copied them), dy rows through registers, split by ow
// parity into [co][rw][j] so the B fragments read consecutive words.
constexpr int GW_THREADS = 512;
constexpr int GW_XP = 44;                      // x row pitch (== 4 mod 8: conflict-free A loads); iw at iw + 4
constexpr int GW_XS = 2 * 3 * CI * GW_XP;      // [td][ihr][ci][col]
constexpr int GW_DP = 68;                      // dy pitch per channel: [rw][j] (2 x 32) + 4
constexpr int GW_DS = 2 * CO * GW_DP;          // [row][co][rw][j]
constexpr int GW_STAGE = GW_XS + GW_DS;
constexpr int GW_SMEM = 2 * GW_STAGE * 4;
constexpr int GW_XU = 2 * 3 * CI * 8 / GW_THREADS;  // 16-byte x copies per thread per pair (3)
constexpr int GW_PART = 512 * CO;              // one block's partial sums: [m = (rw, td, th, tw, ci)][co]

__global__ void __launch_bounds__(GW_THREADS, 1)
    grad_weight_fast_kernel(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ part,
                            int N, int D, int H) {
  extern __shared__ __align__(16) float sm[];
  const int cls = blockIdx.x & 3, rd = cls >> 1, rh = cls & 1;
  const int P = gridDim.x >> 2, bi = blockIdx.x >> 2;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int ch = warp & 1, td = (warp >> 2) & 1, th = (warp >> 1) & 1, rw = warp >> 3;
  const int OD = 2 * D, OH = 2 * H, HP = (H + 1) / 2;
  const int64_t R = int64_t(N) * D * HP;  // row pairs of this class
  for (int i = tid; i < 2 * GW_STAGE; i += GW_THREADS) sm[i] = 0.0f;
  __syncthreads();

  // Pair -> (n, adi, first ahi); a second row past H gets zero dy (it adds nothing).
  auto decode = [&](int64_t pr, int64_t& n, int& adi, int& ahi) {
    ahi = 2 * int(pr % HP);
    const int64_t nd = pr / HP;
    adi = int(nd % D);
    n = nd / D;
  };
  auto issue_x = [&](int64_t pr, int stage) {
    float* s = sm + stage * GW_STAGE;
    const bool live = pr < R;
    int64_t n = 0;
    int adi = 0, ahi = 0;
    if (live) decode(pr, n, adi, ahi);
    const int ad = adi + 1 - rd, ah = ahi + 1 - rh;
#pragma unroll
    for (int i = 0; i < GW_XU; ++i) {
      const int u = tid + GW_THREADS * i, xq = u & 7, row = u >> 3;  // row = (td * 3 + ihr) * 32 + ci
      const int ci = row & 31, tr = row >> 5, xtd = tr / 3, ihr = tr - 3 * xtd;
      const int id = ad - xtd, ih = ah - 1 + ihr;
      const bool ok = live && id >= 0 && id < D && ih >= 0 && ih < H;
      const float* src = ok ? x + (((n * CI + ci) * D + id) * H + ih) * WI + 4 * xq : x;
      cp_async16(s + row * GW_XP + 4 + 4 * xq, src, ok);
    }
    cp_async_commit();
  };
  auto round_x = [&](int stage) {
    float* s = sm + stage * GW_STAGE;
#pragma unroll
    for (int i = 0; i < GW_XU; ++i) {
      const int u = tid + GW_THREADS * i;
      float4* p = reinterpret_cast<float4*>(s + (u >> 3) * GW_XP + 4 + 4 * (u & 7));
      *p = tf32r4(*p);
    }
  };
  float4 sd[4];
  auto load_dy = [&](int64_t pr) {
    const bool live = pr < R;
    int64_t n = 0;
    int adi = 0, ahi = 0;
    if (live) decode(pr, n, adi, ahi);
    const int od = 2 * adi + 1 - rd;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int u = tid + GW_THREADS * i, quad = u & 15, co = (u >> 4) & 63, r = u >> 10;
      const bool ok = live && ahi + r < H;
      const int oh = 2 * (ahi + r) + 1 - rh;
      const float4* src = reinterpret_cast<const float4*>(dy + (((n * CO + co) * OD + od) * OH + oh) * 64) + quad;
      sd[i] = ok ? __ldg(src) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };
  auto store_dy = [&](int stage) {
    float* s = sm + stage * GW_STAGE + GW_XS;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int u = tid + GW_THREADS * i, quad = u & 15, rc = u >> 4;  // rc = r * 64 + co
      const float4 v = tf32r4(sd[i]);
      // ow = 4 quad + {0, 2} are rw = 1 (j = 2 quad + {0, 1}); ow = 4 quad + {1, 3} are rw = 0.
      *reinterpret_cast<float2*>(s + rc * GW_DP + 32 + 2 * quad) = make_float2(v.x, v.z);
      *reinterpret_cast<float2*>(s + rc * GW_DP + 2 * quad) = make_float2(v.y, v.w);
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int mf = 0; mf < 4; ++mf)
#pragma unroll
    for (int nf = 0; nf < 4; ++nf)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[mf][nf][c] = 0.0f;

  int64_t pr = bi;
  issue_x(pr, 0);
  load_dy(pr);
  store_dy(0);
  cp_async_wait<0>();
  round_x(0);
  issue_x(pr + P, 1);
  load_dy(pr + P);
  __syncthreads();
  // A (x): row (td, ihr = r + 1 - th), channel 16 cih + g (+8), column j + 5 - (rw + tw).
  const int xoff = ((td * 3 + 1 - th) * CI + g) * GW_XP + t + 5 - rw;
  // B (dy): row r, channel 32 ch + 8 nf + g, plane rw, column j.
  const int doff = GW_XS + (32 * ch + g) * GW_DP + 32 * rw + t;
  for (int k = 0; pr < R; ++k, pr += P) {
    const uint32_t* s = reinterpret_cast<const uint32_t*>(sm + (k & 1) * GW_STAGE);
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j0 = 0; j0 < 32; j0 += 8) {
        uint32_t b[4][2];
#pragma unroll
        for (int nf = 0; nf < 4; ++nf) {
          const uint32_t* pb = s + doff + (r * CO + nf * 8) * GW_DP + j0;
          b[nf][0] = pb[0];
          b[nf][1] = pb[4];
        }
#pragma unroll
        for (int tw = 0; tw < 2; ++tw)
#pragma unroll
          for (int cih = 0; cih < 2; ++cih) {
            const uint32_t* pa = s + xoff + (r * CI + cih * 16) * GW_XP + j0 - tw;
            const uint32_t a0 = pa[0], a1 = pa[8 * GW_XP], a2 = pa[4], a3 = pa[8 * GW_XP + 4];
#pragma unroll
            for (int nf = 0; nf < 4; ++nf) mma8(acc[tw * 2 + cih][nf], a0, a1, a2, a3, b[nf][0], b[nf][1]);
          }
      }
    // Stage (k+1)&1 was last read in step k - 1; its x copies were issued at the end of step k - 1.
    store_dy((k + 1) & 1);
    cp_async_wait<0>();
    round_x((k + 1) & 1);
    load_dy(pr + 2 * P);
    __syncthreads();
    issue_x(pr + 2 * P, k & 1);  // every warp is done with stage k&1
  }
  cp_async_wait<0>();
  // Partial sums: part[block][m = (rw, td, th, tw, ci)][co].
  float* pz = part + int64_t(blockIdx.x) * GW_PART;
#pragma unroll
  for (int tw = 0; tw < 2; ++tw)
#pragma unroll
    for (int cih = 0; cih < 2; ++cih)
#pragma unroll
      for (int nf = 0; nf < 4; ++nf) {
        const int m = (((rw * 2 + td) * 2 + th) * 2 + tw) * 32 + 16 * cih + g, co = 32 * ch + 8 * nf + 2 * t;
        const float(&c)[4] = acc[tw * 2 + cih][nf];
        *reinterpret_cast<float2*>(pz + m * CO + co) = make_float2(c[0], c[1]);
        *reinterpret_cast<float2*>(pz + (m + 8) * CO + co) = make_float2(c[2], c[3]);
      }
}

// dw[ci][co][kd][kh][kw] = sum over the class's blocks, in block order, of their partials.
__global__ void grad_weight_fast_sum(const float* __restrict__ part, int P, float* __restrict__ dw) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= CI * CO * 64) return;
  const int kw = e & 3, kh = (e >> 2) & 3, kd = (e >> 4) & 3, co = (e >> 6) & 63, ci = e >> 12;
  const int cls = (kd & 1) * 2 + (kh & 1);
  const int m = ((((kw & 1) * 2 + (kd >> 1)) * 2 + (kh >> 1)) * 2 + (kw >> 1)) * 32 + ci;
  double s = 0;
  for (int b = 0; b < P; ++b) s += part[int64_t(b * 4 + cls) * GW_PART + m * CO + co];
  dw[e] = static_cast<float>(s);
}

int persistent_blocks_per_class() { return std::max(1, cuda::num_sms() / 4); }

bool smem_ok(int bytes) {
  int dev = 0, lim = 0;
  MINIDL_CUDA_CHECK(cudaGetDevice(&dev), "conv_transpose3d: cudaGetDevice");
  MINIDL_CUDA_CHECK(cudaDeviceGetAttribute(&lim, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "conv_transpose3d: shared memory limit");
  return bytes <= lim;
}

bool forward(const Geo& g, const float* x, const float* w, const float* bias, float* y) {
  static const bool ok = smem_ok(F_SMEM) &&
                         cudaFuncSetAttribute(fwd_fast_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, F_SMEM) ==
                             cudaSuccess;
  if (!ok) return false;
  cudaStream_t st = cuda::stream();
  cudak::DeviceBuffer packed(size_t(4) * F_BFLOATS * sizeof(float));
  pack_fast_forward<<<4 * F_BFLOATS / 256, 256, 0, st>>>(w, packed.as<float>());
  MINIDL_LAUNCH_CHECK("conv_transpose3d");
  fwd_fast_kernel<<<4 * persistent_blocks_per_class(), F_THREADS, F_SMEM, st>>>(x, packed.as<float>(), bias, y, g.N,
                                                                                g.in[0], g.in[1]);
  MINIDL_LAUNCH_CHECK("conv_transpose3d");
  return true;
}

template <int CC>
bool grad_input_cc(const Geo& g, const float* dy, const float* w, float* dx) {
  constexpr int smem = GiCfg<CC>::SMEM;
  static const bool ok = smem_ok(smem) && cudaFuncSetAttribute(grad_input_fast_kernel<CC>,
                                                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                               smem) == cudaSuccess;
  if (!ok) return false;
  const int64_t blocks = int64_t(g.N) * ((g.in[0] + 1) / 2) * ((g.in[1] + 3) / 4);
  if (blocks >= (int64_t(1) << 31)) return false;
  cudaStream_t st = cuda::stream();
  cudak::DeviceBuffer packed(size_t(CO) * 2048 * sizeof(float));
  pack_fast_grad_input<<<CO * 2048 / 256, 256, 0, st>>>(w, packed.as<float>());
  MINIDL_LAUNCH_CHECK("conv_transpose3d_grad_input");
  grad_input_fast_kernel<CC><<<unsigned(blocks), GI_THREADS, smem, st>>>(dy, packed.as<float>(), dx, g.in[0],
                                                                         g.in[1]);
  MINIDL_LAUNCH_CHECK("conv_transpose3d_grad_input");
  return true;
}

// K chunks of one output channel: 2 channels per chunk measured 5% slower (its 32 staging
// registers push the kernel past 128 registers into spills; bench/NOTES.md).
bool grad_input(const Geo& g, const float* dy, const float* w, float* dx) { return grad_input_cc<1>(g, dy, w, dx); }

bool grad_weight(const Geo& g, const float* x, const float* dy, float* dw) {
  static const bool ok = smem_ok(GW_SMEM) && cudaFuncSetAttribute(grad_weight_fast_kernel,
                                                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                                  GW_SMEM) == cudaSuccess;
  if (!ok) return false;
  const int P = persistent_blocks_per_class();
  cudaStream_t st = cuda::stream();
  cudak::DeviceBuffer part(size_t(4) * P * GW_PART * sizeof(float));
  grad_weight_fast_kernel<<<4 * P, GW_THREADS, GW_SMEM, st>>>(x, dy, part.as<float>(), g.N, g.in[0], g.in[1]);
  MINIDL_LAUNCH_CHECK("conv_transpose3d_grad_weight");
  grad_weight_fast_sum<<<CI * CO * 64 / 256, 256, 0, st>>>(part.as<float>(), P, dw);
  MINIDL_LAUNCH_CHECK("conv_transpose3d_grad_weight");
  return true;
}

}  // namespace fast
}  // namespace conv_cuda
}  // namespace minidl
