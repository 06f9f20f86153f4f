// CUDA kernels for conv_transpose3d and its three gradient ops, on TF32 tensor cores (fp32
// accumulation), the precision PyTorch uses for convolutions by default.
//
// Two paths. Stride 2 / kernel 4 / padding 1 with C_in 32, C_out 64 and input width 32 (the
// model's convolution) takes the mma.sync kernels of namespace `fast` below (their comment says
// how they work; bench/NOTES.md has the measurements). Everything else -- or any geometry with
// MINIDL_CONV_GENERAL=1 -- takes the general path described here, on wmma m16n16k8.
//
// General path: forward as implicit GEMMs, one per output phase. Output position o = s*a + r - p (r in [0,s))
// receives tap kk of input i exactly when kk = r + s*t and i = a - t. So for a fixed residue
// class (rd, rh, rw) -- a "phase" -- every output is a dense dot product over (t, ci): a GEMM with
// M = output positions of that phase, N = C_out, K = C_in * taps(phase). For stride 2, kernel 4
// this is the 8-phase split with K = 8 taps * C_in (DESIGN.md §3); any stride/kernel/padding
// works the same way (a phase may have zero taps: its outputs are just the bias).
// The weights are packed once per call into per-phase [K][C_out] panels (already TF32-rounded),
// so B tiles are contiguous loads; A tiles are gathered from x by address arithmetic.
//
// grad_input is the strided conv3d of dy: the same kernel with M = input positions, N = C_in,
// K = k^3 * C_out (gathering dy at i*s - p + kk). grad_weight is a GEMM with M = C_out*k^3,
// N = C_in and K = N * input positions, split along K into chunks whose partial results are
// summed in a fixed order (deterministic). grad_bias is a two-stage fixed-order reduction.
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"
#include "ops/op_util.h"

namespace minidl {
namespace {

using namespace nvcuda;

constexpr int BM = 128, BN = 64, BK = 32, NT = 256;
constexpr int LDA = BM + 4;  // As[k][m]: column-major A tile (m contiguous)
constexpr int LDB = BN + 4;  // Bs[k][n]: row-major B tile
constexpr int LDC = BM + 4;  // Cs[n][m]: column-major C tile
constexpr int SMEM_FLOATS = (BK * LDA + BK * LDB) > (BN * LDC) ? (BK * LDA + BK * LDB) : (BN * LDC);

struct Geo {
  int N, Cin, Cout;
  int in[3], out[3], k[3], s[3], p[3];
};

Geo make_geo(const ops::ConvGeom& g) {
  Geo o;
  o.N = int(g.N);
  o.Cin = int(g.Cin);
  o.Cout = int(g.Cout);
  for (int d = 0; d < 3; ++d) {
    o.in[d] = int(g.in[d]);
    o.out[d] = int(g.out[d]);
    o.k[d] = int(g.k[d]);
    o.s[d] = int(g.stride[d]);
    o.p[d] = int(g.pad[d]);
  }
  return o;
}

__host__ __device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
// Taps of a kernel of size k that land on residue r of stride s: kk = r, r+s, ... < k.
__host__ __device__ __forceinline__ int phase_taps(int k, int s, int r) { return r < k ? (k - r + s - 1) / s : 0; }
__host__ __device__ __forceinline__ int max_taps(int k, int s) { return (k + s - 1) / s; }

__device__ __forceinline__ float to_tf32(float v) { return wmma::__float_to_tf32(v); }

// What one block of the gather GEMM needs: the m grid, the gather and the store rules.
struct GatherDesc {
  int64_t M = 0;
  int K = 0;
  int G[3], lo[3];           // m -> (batch, a0, a1, a2), a_d = lo_d + index_d, index_d < G_d
  int T[3];                  // taps per dim; K = T0*T1*T2 * Csrc, k = tap * Csrc + c
  int gmul[3], gadd[3], gsign;  // gathered coordinate = gmul*a + gadd + gsign*t
  int S[3], Csrc;            // gathered tensor: channels and spatial dims
  int omul[3], oadd[3], O[3];  // stored coordinate = omul*a + oadd, in a tensor of spatial dims O
  const float* B = nullptr;  // packed [K][Ncols]
};

struct GatherArgs {
  Geo g;
  int mode;                  // 0: forward (per-phase), 1: grad_input
  const float* src;          // x (forward) or dy (grad_input)
  const float* Bpack;        // packed weights
  int64_t phase_stride;      // floats between phase panels (forward)
  const float* bias;         // forward only, may be null
  float* dst;                // y or dx
  int Ncols;                 // C_out (forward) or C_in (grad_input)
};

__device__ GatherDesc make_desc(const GatherArgs& a, int z) {
  GatherDesc d;
  const Geo& g = a.g;
  if (a.mode == 0) {
    int r[3];
    r[2] = z % g.s[2];
    r[1] = (z / g.s[2]) % g.s[1];
    r[0] = z / (g.s[2] * g.s[1]);
    int64_t M = g.N;
    int taps = 1;
    for (int i = 0; i < 3; ++i) {
      d.lo[i] = floor_div(g.p[i] - r[i] + g.s[i] - 1, g.s[i]);   // ceil((p - r) / s)
      const int hi = floor_div(g.out[i] - 1 + g.p[i] - r[i], g.s[i]);
      d.G[i] = hi >= d.lo[i] ? hi - d.lo[i] + 1 : 0;
      d.T[i] = phase_taps(g.k[i], g.s[i], r[i]);
      d.gmul[i] = 1;
      d.gadd[i] = 0;
      d.S[i] = g.in[i];
      d.omul[i] = g.s[i];
      d.oadd[i] = r[i] - g.p[i];
      d.O[i] = g.out[i];
      M *= d.G[i];
      taps *= d.T[i];
    }
    d.gsign = -1;
    d.Csrc = g.Cin;
    d.M = M;
    d.K = taps * g.Cin;
    d.B = a.Bpack + z * a.phase_stride;
  } else {
    int64_t M = g.N;
    for (int i = 0; i < 3; ++i) {
      d.lo[i] = 0;
      d.G[i] = g.in[i];
      d.T[i] = g.k[i];
      d.gmul[i] = g.s[i];
      d.gadd[i] = -g.p[i];
      d.S[i] = g.out[i];
      d.omul[i] = 1;
      d.oadd[i] = 0;
      d.O[i] = g.in[i];
      M *= g.in[i];
    }
    d.gsign = 1;
    d.Csrc = g.Cout;
    d.M = M;
    d.K = g.k[0] * g.k[1] * g.k[2] * g.Cout;
    d.B = a.Bpack;
  }
  return d;
}

// acc += As(:, 0:BK) * Bs(0:BK, :) for this warp's 32x32 sub-tile.
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

__device__ __forceinline__ void mma_tile(const float* As, const float* Bs, FragC (&acc)[2][2], int wm, int wn) {
#pragma unroll
  for (int kk = 0; kk < BK; kk += 8) {
    FragA fa[2];
    FragB fb[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], As + kk * LDA + wm * 32 + i * 16, LDA);
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], Bs + kk * LDB + wn * 32 + j * 16, LDB);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
  }
}

__device__ __forceinline__ void store_acc(float* Cs, FragC (&acc)[2][2], int wm, int wn) {
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wn * 32 + j * 16) * LDC + wm * 32 + i * 16, acc[i][j], LDC, wmma::mem_col_major);
}

// ---- forward and grad_input: gather GEMM ------------------------------------------------------
template <int kMinBlocks>
__global__ void __launch_bounds__(NT, kMinBlocks) gather_gemm_kernel(GatherArgs args) {
  __shared__ __align__(128) float smem[SMEM_FLOATS];
  float* As = smem;
  float* Bs = smem + BK * LDA;
  float* Cs = smem;
  const GatherDesc d = make_desc(args, blockIdx.z);
  const int64_t m0 = int64_t(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;
  if (m0 >= d.M) return;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp & 3, wn = warp >> 2;

  // This thread's A row (one m for the whole K loop) and B column.
  const int a_ml = tid & (BM - 1), a_kq = tid >> 7;  // k rows a_kq + 2j
  const int b_nl = tid & (BN - 1), b_kq = tid >> 6;  // k rows b_kq + 4j
  const int64_t m = m0 + a_ml;
  const bool m_ok = m < d.M;
  int a[3];
  int64_t nb;
  {
    int64_t rem = m_ok ? m : 0;
    for (int i = 2; i >= 0; --i) {
      const int64_t q = rem / d.G[i];
      a[i] = int(rem - q * d.G[i]) + d.lo[i];
      rem = q;
    }
    nb = rem;
  }
  const int64_t Psrc = int64_t(d.S[0]) * d.S[1] * d.S[2];
  const float* src_n = args.src + nb * d.Csrc * Psrc;
  int gbase[3];
  for (int i = 0; i < 3; ++i) gbase[i] = d.gmul[i] * a[i] + d.gadd[i];
  const int T12 = d.T[1] * d.T[2];
  const bool fast_k = (d.Csrc % BK) == 0;
  const bool n_ok = n0 + b_nl < args.Ncols;

  float ra[BK / 2], rb[BK / 4];
  auto load_tiles = [&](int k0) {
    if (fast_k) {
      // The whole BK slice shares one tap: one bounds check, then a constant channel stride.
      const int tap = k0 / d.Csrc, c0 = k0 - tap * d.Csrc + a_kq;
      const int t0 = tap / T12, t1 = (tap / d.T[2]) % d.T[1], t2 = tap % d.T[2];
      const int c_0 = gbase[0] + d.gsign * t0, c_1 = gbase[1] + d.gsign * t1, c_2 = gbase[2] + d.gsign * t2;
      const bool ok = m_ok && c_0 >= 0 && c_0 < d.S[0] && c_1 >= 0 && c_1 < d.S[1] && c_2 >= 0 && c_2 < d.S[2];
      const float* p = src_n + c0 * Psrc + (int64_t(c_0) * d.S[1] + c_1) * d.S[2] + c_2;
#pragma unroll
      for (int j = 0; j < BK / 2; ++j) ra[j] = ok ? __ldg(p + 2 * j * Psrc) : 0.0f;
    } else {
#pragma unroll 4
      for (int j = 0; j < BK / 2; ++j) {
        const int k = k0 + a_kq + 2 * j;
        float v = 0.0f;
        if (m_ok && k < d.K) {
          const int tap = k / d.Csrc, c = k - tap * d.Csrc;
          const int t0 = tap / T12, t1 = (tap / d.T[2]) % d.T[1], t2 = tap % d.T[2];
          const int c_0 = gbase[0] + d.gsign * t0, c_1 = gbase[1] + d.gsign * t1, c_2 = gbase[2] + d.gsign * t2;
          if (c_0 >= 0 && c_0 < d.S[0] && c_1 >= 0 && c_1 < d.S[1] && c_2 >= 0 && c_2 < d.S[2])
            v = __ldg(src_n + c * Psrc + (int64_t(c_0) * d.S[1] + c_1) * d.S[2] + c_2);
        }
        ra[j] = v;
      }
    }
#pragma unroll
    for (int j = 0; j < BK / 4; ++j) {
      const int k = k0 + b_kq + 4 * j;
      rb[j] = (n_ok && k < d.K) ? __ldg(d.B + int64_t(k) * args.Ncols + n0 + b_nl) : 0.0f;
    }
  };

  FragC acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  if (d.K > 0) load_tiles(0);
  for (int k0 = 0; k0 < d.K; k0 += BK) {
    __syncthreads();
#pragma unroll
    for (int j = 0; j < BK / 2; ++j) As[(a_kq + 2 * j) * LDA + a_ml] = to_tf32(ra[j]);
#pragma unroll
    for (int j = 0; j < BK / 4; ++j) Bs[(b_kq + 4 * j) * LDB + b_nl] = rb[j];  // packed already TF32
    __syncthreads();
    if (k0 + BK < d.K) load_tiles(k0 + BK);  // next tile's loads overlap this tile's math
    mma_tile(As, Bs, acc, wm, wn);
  }
  __syncthreads();
  store_acc(Cs, acc, wm, wn);
  __syncthreads();

  if (!m_ok) return;
  int o[3];
  for (int i = 0; i < 3; ++i) o[i] = d.omul[i] * a[i] + d.oadd[i];
  const int64_t Pout = int64_t(d.O[0]) * d.O[1] * d.O[2];
  float* dst = args.dst + nb * args.Ncols * Pout + (int64_t(o[0]) * d.O[1] + o[1]) * d.O[2] + o[2];
  for (int j = 0; j < BN / 2; ++j) {
    const int nl = a_kq + 2 * j;
    const int col = n0 + nl;
    if (col < args.Ncols) {
      float v = Cs[nl * LDC + a_ml];
      if (args.bias) v += __ldg(args.bias + col);
      dst[col * Pout] = v;
    }
  }
}

// Forward weights w[ci][co][kd][kh][kw] -> per phase z: panel[k][co], k = tap * Cin + ci, with
// tap = (td * Th + th) * Tw + tw over the phase's taps; rows past the phase's K are zero.
__global__ void pack_forward_weights(const float* __restrict__ w, float* __restrict__ out, Geo g, int kmax,
                                     int phases) {
  const int64_t total = int64_t(phases) * kmax * g.Cout;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int co = int(idx % g.Cout);
    const int k = int((idx / g.Cout) % kmax);
    const int z = int(idx / (int64_t(g.Cout) * kmax));
    int r[3], T[3];
    r[2] = z % g.s[2];
    r[1] = (z / g.s[2]) % g.s[1];
    r[0] = z / (g.s[2] * g.s[1]);
    for (int i = 0; i < 3; ++i) T[i] = phase_taps(g.k[i], g.s[i], r[i]);
    const int K = T[0] * T[1] * T[2] * g.Cin;
    float v = 0.0f;
    if (k < K) {
      const int tap = k / g.Cin, ci = k % g.Cin;
      const int t0 = tap / (T[1] * T[2]), t1 = (tap / T[2]) % T[1], t2 = tap % T[2];
      const int kd = r[0] + g.s[0] * t0, kh = r[1] + g.s[1] * t1, kw = r[2] + g.s[2] * t2;
      v = to_tf32(w[((int64_t(ci) * g.Cout + co) * g.k[0] + kd) * g.k[1] * g.k[2] + kh * g.k[2] + kw]);
    }
    out[idx] = v;
  }
}

// grad_input weights -> panel[k][ci], k = tap * Cout + co, tap over the full kernel.
__global__ void pack_grad_input_weights(const float* __restrict__ w, float* __restrict__ out, Geo g) {
  const int k3 = g.k[0] * g.k[1] * g.k[2];
  const int64_t total = int64_t(k3) * g.Cout * g.Cin;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int ci = int(idx % g.Cin);
    const int k = int(idx / g.Cin);
    const int tap = k / g.Cout, co = k % g.Cout;
    out[idx] = to_tf32(w[(int64_t(ci) * g.Cout + co) * k3 + tap]);
  }
}

// Blocks per SM the GEMM kernels are compiled for: 2 (up to 128 registers, the default) or 3
// (up to 80 registers, more warps to hide the gather latency). MINIDL_CONV_MINBLOCKS=3 picks the
// second; bench/NOTES.md has the measurements.
int conv_min_blocks() {
  const char* v = std::getenv("MINIDL_CONV_MINBLOCKS");
  return v && v[0] == '3' ? 3 : 2;
}

void launch_gather(const dim3& grid, const GatherArgs& a) {
  if (conv_min_blocks() == 3)
    gather_gemm_kernel<3><<<grid, NT, 0, cuda::stream()>>>(a);
  else
    gather_gemm_kernel<2><<<grid, NT, 0, cuda::stream()>>>(a);
}

// ---- stride 2, kernel 4, padding 1: the fast paths -----------------------------------------------
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

void check_geo_fits(const char* op, const ops::ConvGeom& g) {
  const int64_t lim = int64_t(1) << 30;
  MINIDL_CHECK(g.N < lim && g.Cin < lim && g.Cout < lim && g.Cin * g.k[0] * g.k[1] * g.k[2] < lim &&
                   g.Cout * g.k[0] * g.k[1] * g.k[2] < lim,
               op, ": sizes too large for the CUDA kernel");
}

void conv_forward_cuda(KernelContext& ctx) {
  const char* op = "conv_transpose3d";
  cudak::check_cuda_tensors(op, ctx);
  cudak::require_f32(op, ctx);
  if (ctx.attrs().has("groups"))
    MINIDL_CHECK(ctx.attrs().get_int("groups") == 1, op, ": only groups=1 is supported");
  const Tensor &x = ctx.in(0), &w = ctx.in(1);
  const Tensor* bias = ctx.inputs.size() > 2 && ctx.in(2).defined() ? &ctx.in(2) : nullptr;
  Tensor& y = ctx.out(0);
  const ops::ConvGeom cg = ops::conv_geom(x.shape(), w.shape(), y.shape(), ctx.attrs());
  check_geo_fits(op, cg);
  if (y.numel() == 0) return;
  const Geo g = make_geo(cg);
  if (fast::applies(g) && fast::forward(g, x.data<float>(), w.data<float>(), bias ? bias->data<float>() : nullptr,
                                        y.data<float>()))
    return;
  const int phases = g.s[0] * g.s[1] * g.s[2];
  const int kmax = max_taps(g.k[0], g.s[0]) * max_taps(g.k[1], g.s[1]) * max_taps(g.k[2], g.s[2]) * g.Cin;
  const int64_t panel = int64_t(kmax) * g.Cout;
  cudak::DeviceBuffer packed(size_t(panel) * phases * sizeof(float));
  cudaStream_t st = cuda::stream();
  pack_forward_weights<<<cudak::grid_for(panel * phases, 256), 256, 0, st>>>(w.data<float>(), packed.as<float>(), g,
                                                                            kmax, phases);
  MINIDL_LAUNCH_CHECK(op);
  // The largest phase sets grid.x; blocks past a smaller phase's M return at once.
  int64_t max_m = 0;
  for (int z = 0; z < phases; ++z) {
    const int r[3] = {z / (g.s[2] * g.s[1]), (z / g.s[2]) % g.s[1], z % g.s[2]};
    int64_t m = g.N;
    for (int i = 0; i < 3; ++i) {
      const int lo = floor_div(g.p[i] - r[i] + g.s[i] - 1, g.s[i]);
      const int hi = floor_div(g.out[i] - 1 + g.p[i] - r[i], g.s[i]);
      m *= hi >= lo ? hi - lo + 1 : 0;
    }
    max_m = std::max(max_m, m);
  }
  MINIDL_CHECK(phases <= 65535 && (g.Cout + BN - 1) / BN <= 65535, op, ": stride or channels too large");
  GatherArgs a;
  a.g = g;
  a.mode = 0;
  a.src = x.data<float>();
  a.Bpack = packed.as<float>();
  a.phase_stride = panel;
  a.bias = bias ? bias->data<float>() : nullptr;
  a.dst = y.data<float>();
  a.Ncols = g.Cout;
  const dim3 grid{unsigned((max_m + BM - 1) / BM), unsigned((g.Cout + BN - 1) / BN), unsigned(phases)};
  launch_gather(grid, a);
  MINIDL_LAUNCH_CHECK(op);
}

void conv_grad_input_cuda(KernelContext& ctx) {
  const char* op = "conv_transpose3d_grad_input";
  cudak::check_cuda_tensors(op, ctx);
  cudak::require_f32(op, ctx);
  const Tensor &dy = ctx.in(0), &w = ctx.in(1);
  Tensor& dx = ctx.out(0);
  const ops::ConvGeom cg = ops::conv_geom(dx.shape(), w.shape(), dy.shape(), ctx.attrs());
  check_geo_fits(op, cg);
  if (dx.numel() == 0) return;
  const Geo g = make_geo(cg);
  if (fast::applies(g) && fast::grad_input(g, dy.data<float>(), w.data<float>(), dx.data<float>())) return;
  const int64_t k3 = int64_t(g.k[0]) * g.k[1] * g.k[2];
  cudak::DeviceBuffer packed(size_t(k3 * g.Cout * g.Cin) * sizeof(float));
  cudaStream_t st = cuda::stream();
  pack_grad_input_weights<<<cudak::grid_for(k3 * g.Cout * g.Cin, 256), 256, 0, st>>>(w.data<float>(),
                                                                                     packed.as<float>(), g);
  MINIDL_LAUNCH_CHECK(op);
  GatherArgs a;
  a.g = g;
  a.mode = 1;
  a.src = dy.data<float>();
  a.Bpack = packed.as<float>();
  a.phase_stride = 0;
  a.bias = nullptr;
  a.dst = dx.data<float>();
  a.Ncols = g.Cin;
  const int64_t M = int64_t(g.N) * g.in[0] * g.in[1] * g.in[2];
  MINIDL_CHECK((g.Cin + BN - 1) / BN <= 65535, op, ": too many input channels");
  const dim3 grid{unsigned((M + BM - 1) / BM), unsigned((g.Cin + BN - 1) / BN), 1u};
  launch_gather(grid, a);
  MINIDL_LAUNCH_CHECK(op);
}

// ---- grad_weight: split-K GEMM, both operands loaded along K ------------------------------------
// C[m = (co, tap), n = ci] = sum over k = (batch, input position) of
//   dy[b, co, i*s - p + kk(tap)] * x[b, ci, i]; block z covers k in [z*chunk, (z+1)*chunk) and writes
// its tile to part[z][ci][m].
template <int kMinBlocks>
__global__ void __launch_bounds__(NT, kMinBlocks) grad_weight_kernel(Geo g, const float* __restrict__ x,
                                                         const float* __restrict__ dy, float* __restrict__ part,
                                                         int64_t chunk) {
  __shared__ __align__(128) float smem[SMEM_FLOATS];
  __shared__ int tab_co[BM], tab_k[BM][3];
  float* As = smem;
  float* Bs = smem + BK * LDA;
  float* Cs = smem;
  const int k3 = g.k[0] * g.k[1] * g.k[2];
  const int M = g.Cout * k3, Ncols = g.Cin;
  const int64_t Pin = int64_t(g.in[0]) * g.in[1] * g.in[2];
  const int64_t Pout = int64_t(g.out[0]) * g.out[1] * g.out[2];
  const int64_t K = int64_t(g.N) * Pin;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int64_t kbeg = int64_t(blockIdx.z) * chunk;
  const int64_t kend = min(K, kbeg + chunk);
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp & 3, wn = warp >> 2;
  if (tid < BM) {
    const int m = m0 + tid;
    const int mm = m < M ? m : 0;
    const int tap = mm % k3;
    tab_co[tid] = m < M ? mm / k3 : -1;
    tab_k[tid][0] = tap / (g.k[1] * g.k[2]);
    tab_k[tid][1] = (tap / g.k[2]) % g.k[1];
    tab_k[tid][2] = tap % g.k[2];
  }
  __syncthreads();

  const int kl = tid & (BK - 1), q = tid >> 5;  // k column kl; m rows q + 8j, n cols q + 8j
  float ra[BM / 8], rb[BN / 8];
  auto load_tiles = [&](int64_t k0) {
    const int64_t k = k0 + kl;
    const bool k_ok = k < kend;
    int64_t b = 0;
    int i0 = 0, i1 = 0, i2 = 0;
    if (k_ok) {
      int64_t rem = k;
      i2 = int(rem % g.in[2]);
      rem /= g.in[2];
      i1 = int(rem % g.in[1]);
      rem /= g.in[1];
      i0 = int(rem % g.in[0]);
      b = rem / g.in[0];
    }
    const int o0 = i0 * g.s[0] - g.p[0], o1 = i1 * g.s[1] - g.p[1], o2 = i2 * g.s[2] - g.p[2];
    const float* dyb = dy + b * g.Cout * Pout;
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
      const int ml = q + 8 * j;
      const int co = tab_co[ml];
      const int d0 = o0 + tab_k[ml][0], d1 = o1 + tab_k[ml][1], d2 = o2 + tab_k[ml][2];
      const bool ok = k_ok && co >= 0 && d0 >= 0 && d0 < g.out[0] && d1 >= 0 && d1 < g.out[1] && d2 >= 0 &&
                      d2 < g.out[2];
      ra[j] = ok ? __ldg(dyb + co * Pout + (int64_t(d0) * g.out[1] + d1) * g.out[2] + d2) : 0.0f;
    }
    const float* xb = x + b * g.Cin * Pin + (int64_t(i0) * g.in[1] + i1) * g.in[2] + i2;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int ci = n0 + q + 8 * j;
      rb[j] = (k_ok && ci < Ncols) ? __ldg(xb + ci * Pin) : 0.0f;
    }
  };

  FragC acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  if (kbeg < kend) load_tiles(kbeg);
  for (int64_t k0 = kbeg; k0 < kend; k0 += BK) {
    __syncthreads();
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) As[kl * LDA + q + 8 * j] = to_tf32(ra[j]);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) Bs[kl * LDB + q + 8 * j] = to_tf32(rb[j]);
    __syncthreads();
    if (k0 + BK < kend) load_tiles(k0 + BK);
    mma_tile(As, Bs, acc, wm, wn);
  }
  __syncthreads();
  store_acc(Cs, acc, wm, wn);
  __syncthreads();
  float* pz = part + int64_t(blockIdx.z) * Ncols * M;
  for (int idx = tid; idx < BM * BN; idx += NT) {
    const int ml = idx % BM, nl = idx / BM;
    const int m = m0 + ml, n = n0 + nl;
    if (m < M && n < Ncols) pz[int64_t(n) * M + m] = Cs[nl * LDC + ml];
  }
}

// dw[e] = sum over z of part[z][e], in order.
__global__ void sum_splits(const float* __restrict__ part, int64_t splits, int64_t n, float* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int64_t z = 0; z < splits; ++z) s += part[z * n + e];
    out[e] = static_cast<float>(s);
  }
}

void conv_grad_weight_cuda(KernelContext& ctx) {
  const char* op = "conv_transpose3d_grad_weight";
  cudak::check_cuda_tensors(op, ctx);
  cudak::require_f32(op, ctx);
  const Tensor &x = ctx.in(0), &dy = ctx.in(1);
  Tensor& dw = ctx.out(0);
  const ops::ConvGeom cg = ops::conv_geom(x.shape(), dw.shape(), dy.shape(), ctx.attrs());
  check_geo_fits(op, cg);
  if (dw.numel() == 0) return;
  const Geo g = make_geo(cg);
  if (fast::applies(g) && fast::grad_weight(g, x.data<float>(), dy.data<float>(), dw.data<float>())) return;
  const int64_t M = int64_t(g.Cout) * g.k[0] * g.k[1] * g.k[2];
  const int64_t K = int64_t(g.N) * g.in[0] * g.in[1] * g.in[2];
  const int64_t mt = (M + BM - 1) / BM, nt = (g.Cin + BN - 1) / BN;
  MINIDL_CHECK(mt < (int64_t(1) << 31) && nt <= 65535, op, ": weight too large for the CUDA kernel");
  // Split K so the grid fills the GPU about 4 times, each split at least 16 BK steps.
  int64_t splits = (int64_t(cuda::num_sms()) * 4 + mt * nt - 1) / (mt * nt);
  splits = std::min<int64_t>(splits, (K + 16 * BK - 1) / (16 * BK));
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, 1024));
  int64_t chunk = (K + splits - 1) / splits;
  chunk = (chunk + BK - 1) / BK * BK;
  splits = (K + chunk - 1) / chunk;
  const int64_t nelem = M * g.Cin;
  cudak::DeviceBuffer part(size_t(splits * nelem) * sizeof(float));
  cudaStream_t st = cuda::stream();
  const dim3 grid{unsigned(mt), unsigned(nt), unsigned(splits)};
  if (conv_min_blocks() == 3)
    grad_weight_kernel<3><<<grid, NT, 0, st>>>(g, x.data<float>(), dy.data<float>(), part.as<float>(), chunk);
  else
    grad_weight_kernel<2><<<grid, NT, 0, st>>>(g, x.data<float>(), dy.data<float>(), part.as<float>(), chunk);
  MINIDL_LAUNCH_CHECK(op);
  sum_splits<<<cudak::grid_for(nelem, 256, 4), 256, 0, st>>>(part.as<float>(), splits, nelem, dw.data<float>());
  MINIDL_LAUNCH_CHECK(op);
}

// ---- grad_bias ------------------------------------------------------------------------------------
// Block (chunk, c) sums batch items [chunk*per, ...) of channel c over `inner` positions.
__global__ void bias_partial(const float* __restrict__ dy, double* __restrict__ part, int64_t N, int64_t C,
                             int64_t inner, int64_t per) {
  __shared__ double ws[NT / 32];
  const int64_t c = blockIdx.y, z = blockIdx.x;
  const int64_t r0 = z * per * inner, r1 = min(N * inner, r0 + per * inner);
  double acc = 0;
  for (int64_t r = r0 + threadIdx.x; r < r1; r += NT) {
    const int64_t n = r / inner, i = r - n * inner;
    acc += double(dy[(n * C + c) * inner + i]);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int w = 0; w < NT / 32; ++w) s += ws[w];
    part[c * gridDim.x + z] = s;
  }
}

__global__ void bias_final(const double* __restrict__ part, int64_t C, int64_t Z, float* __restrict__ db) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int64_t z = 0; z < Z; ++z) s += part[c * Z + z];
    db[c] = static_cast<float>(s);
  }
}

void conv_grad_bias_cuda(KernelContext& ctx) {
  const char* op = "conv_transpose3d_grad_bias";
  cudak::check_cuda_tensors(op, ctx);
  cudak::require_f32(op, ctx);
  const Tensor& dy = ctx.in(0);
  const Shape& s = dy.shape();
  MINIDL_CHECK(s.size() >= 2, op, ": input 'dy' must have rank >= 2, got ", dy.describe());
  const int64_t N = s[0], C = s[1];
  if (C == 0) return;
  const int64_t inner = N * C > 0 ? dy.numel() / (N * C) : 0;
  MINIDL_CHECK(C <= 65535, op, ": more than 65535 channels is not supported by the CUDA kernel");
  // Split the batch so there are a few blocks per SM in total.
  int64_t Z = std::max<int64_t>(1, std::min<int64_t>(N, (int64_t(cuda::num_sms()) * 4 + C - 1) / C));
  const int64_t per = N > 0 ? (N + Z - 1) / Z : 1;
  Z = N > 0 ? (N + per - 1) / per : 1;
  cudak::DeviceBuffer part(size_t(C * Z) * sizeof(double));
  cudaStream_t st = cuda::stream();
  bias_partial<<<dim3{unsigned(Z), unsigned(C), 1u}, NT, 0, st>>>(dy.data<float>(), part.as<double>(), N, C, inner,
                                                                 per);
  MINIDL_LAUNCH_CHECK(op);
  bias_final<<<cudak::grid_for(C, 128, 4), 128, 0, st>>>(part.as<double>(), C, Z, ctx.out(0).data<float>());
  MINIDL_LAUNCH_CHECK(op);
}

}  // namespace

void register_conv_transpose3d_cuda(OpRegistry& r) {
  cudak::set_cuda_kernel(r, "conv_transpose3d", conv_forward_cuda);
  cudak::set_cuda_kernel(r, "conv_transpose3d_grad_input", conv_grad_input_cuda);
  cudak::set_cuda_kernel(r, "conv_transpose3d_grad_weight", conv_grad_weight_cuda);
  cudak::set_cuda_kernel(r, "conv_transpose3d_grad_bias", conv_grad_bias_cuda);
}

}  // namespace minidl
