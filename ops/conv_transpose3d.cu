// CUDA kernels for conv_transpose3d and its three gradient ops, on TF32 tensor cores (fp32
// accumulation), the precision PyTorch uses for convolutions by default.
//
// Three paths. The forward of stride 2 / kernel 4 with C_out 64 and W_out 64 (the model's
// convolution among them) runs on the fused conv -> LayerNorm kernel's tensor-core path with a
// bias-only epilogue (forward_on_fused_kernel). Stride 2 / kernel 4 / padding 1 with C_in 32,
// C_out 64 and input width 32 takes the mma.sync kernels of conv_transpose3d_fast.cu for the
// gradients (and for the forward with MINIDL_CONV_MMA_SYNC=1; its comment says how they work;
// bench/NOTES.md has the measurements). Everything else -- or any geometry with
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
#include "ops/conv_transpose3d_fast.h"
#include "ops/fused_conv_support.h"
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

using conv_cuda::Geo;

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


void check_geo_fits(const char* op, const ops::ConvGeom& g) {
  const int64_t lim = int64_t(1) << 30;
  MINIDL_CHECK(g.N < lim && g.Cin < lim && g.Cout < lim && g.Cin * g.k[0] * g.k[1] * g.k[2] < lim &&
                   g.Cout * g.k[0] * g.k[1] * g.k[2] < lim,
               op, ": sizes too large for the CUDA kernel");
}

// The configurations the fused conv -> LayerNorm kernel takes (stride 2, kernel 4, C_out 64,
// W_out 64; the flagship's among them) run on its tensor-core path with a bias-only epilogue: FP16
// operands (TF32's mantissa) under its range test, TF32 otherwise, 0.50 ms against 0.89 for the
// mma.sync kernel at the flagship size (bench/NOTES.md). MINIDL_CONV_MMA_SYNC=1 keeps them on the
// mma.sync kernels; MINIDL_CONV_GENERAL=1 on the general path. False when it does not apply.
bool forward_on_fused_kernel(const Geo& g, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const char* v = std::getenv("MINIDL_CONV_MMA_SYNC");
  if ((v && v[0] == '1') || conv_cuda::fast::disabled_by_env()) return false;
  std::vector<int64_t> stride(3), pad(3), out_pad(3);
  for (int d = 0; d < 3; ++d) {
    stride[d] = g.s[d];
    pad[d] = g.p[d];
    out_pad[d] = g.out[d] - ((int64_t)(g.in[d] - 1) * g.s[d] - 2 * g.p[d] + g.k[d]);
  }
  if (!fused_conv_unsupported_reason(x.shape(), w.shape(), stride, pad, out_pad, y.shape().back()).empty() ||
      reinterpret_cast<uintptr_t>(y.raw_data()) % 16 != 0)
    return false;
  cudak::DeviceBuffer workspace(fused_conv_transpose3d_ln_gelu_scale_workspace_bytes(g.N, g.Cin, g.in[0], g.in[1],
                                                                                     false, false));
  launch_conv_transpose3d_on_fused_kernel(x.data<float>(), w.data<float>(), bias ? bias->data<float>() : nullptr,
                                          y.data<float>(), g.N, g.Cin, g.in[0], g.in[1], g.in[2], g.p[0], g.p[1],
                                          g.p[2], (int)out_pad[0], (int)out_pad[1], (int)out_pad[2],
                                          workspace.as<void>(), cuda::stream());
  return true;
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
  if (forward_on_fused_kernel(g, x, w, bias, y)) {
    MINIDL_LAUNCH_CHECK(op);
    return;
  }
  if (conv_cuda::fast::applies(g) && conv_cuda::fast::forward(g, x.data<float>(), w.data<float>(), bias ? bias->data<float>() : nullptr,
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
  if (conv_cuda::fast::applies(g) && conv_cuda::fast::grad_input(g, dy.data<float>(), w.data<float>(), dx.data<float>())) return;
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
  if (conv_cuda::fast::applies(g) && conv_cuda::fast::grad_weight(g, x.data<float>(), dy.data<float>(), dw.data<float>())) return;
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
