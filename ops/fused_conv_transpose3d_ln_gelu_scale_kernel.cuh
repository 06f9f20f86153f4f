// Kernels behind fused_conv_transpose3d_ln_gelu_scale: ConvTranspose3d (stride 2, kernel 4,
// Cout 64) -> + bias -> LayerNorm over the last dim (W_out = 64) -> GELU -> * factor, in one pass
// that writes y once plus the per-row mean and rstd. Included by
// ops/fused_conv_transpose3d_ln_gelu_scale.cu and by the standalone check
// bench/standalone/fused_conv_check.cu; it needs only the CUDA runtime (the driver's tensor-map
// encoder is reached through cudaGetDriverEntryPointByVersion).
//
// How the TF32 kernel works (numbers for Cin = 32; bench/NOTES.md has the measurements):
//  * Phases. Output od receives x[id] through tap kd = td - 2 id with td = od + pad_d, so only
//    kd in {td&1, (td&1)+2} (id = td>>1 and id = (td>>1)-1) contribute; the same in h and w. The
//    parity class (td&1, th&1) of an output row fixes its 4 (kd, kh) taps. Along w, outputs
//    ow = 2u + q (u = 0..31, q = ow parity) use taps kw = ((q+pw)&1) + 2c, c in {0,1}, at
//    iw = u + ((q+pw)>>1) - c.
//  * Work item = one output row (n, od, oh): all 64 co x all 64 ow, K = Cin x 8 taps = 256.
//    Per ow parity q it is the GEMM D[co 64][u 32] = W_q[co][k] * X[k][u]; wgmma m64n32k8 with
//    A (weights) from registers and B (inputs) from shared memory (32 k-steps per row and q).
//  * Input re-layout (v7). A small pre-kernel writes x once more as planes, one per (n, id, ih):
//    [ci/4][rho][ci%4] with rho = iw - iw_min over 34 rows (zeros outside [0, W)), TF32-rounded.
//    That is exactly the K-major, no-swizzle layout wgmma wants (a core matrix = 8 u-rows x 4
//    channels = 128 contiguous bytes; the next 4 channels are LBO on), so one plane is one
//    contiguous 4352-byte bulk copy (cp.async.bulk, completing on an mbarrier), issued by one
//    lane, and the shift by tap c or parity q is a 16-byte offset of the descriptor's start
//    address: an implicit im2col with no copies. A zero plane at the end stands in for every
//    out-of-range (id, ih).
//  * Warp specialization. Warpgroups 0 and 1 (q = 0, 1) keep the A fragments of their parity for
//    all of K (128 registers) and run the tensor cores with two accumulator sets: row r's wgmmas
//    are issued before row r-1's results are reduced and staged, so the tensor pipe is fed across
//    rows. Warp 0 also issues the bulk copies kAhead rows ahead. Warpgroups 2 and 3 run
//    LayerNorm / GELU / scale, write the finished 64 x 64 tile to shared memory and one thread
//    stores it with a single TMA tensor store (4-D box: 64 ow x 64 co). setmaxnreg splits the
//    register file 192 / 64. The roles meet in a double-buffered staging tile handed over with
//    mbarriers (full / empty). Weights are loaded once per class change (a persistent block walks
//    a contiguous range of items sorted by class).
//  * Inputs: an item needs 4 input planes (id0 - a, ih0 - b), a, b in {0, 1}, kept as two plane
//    pairs (one per ih) in a ring of kPairSlots slots; row oh + 2 of the same (class, n, od) has
//    ih0 + 1, so it reuses one pair and loads one new pair.
//  * LayerNorm statistics: each MMA warpgroup reduces its 32 accumulators per row to (sum, sum of
//    squared deviations) and stores them beside the tile; the epilogue merges the two parities
//    (Chan et al.), so it needs no shuffles.
//  * All element offsets into x, y, mean and rstd are 64-bit.
// The precise (FP32) kernel is a plain direct convolution per row with the same epilogue.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/smem_sync.cuh"
#include "ops/fused_conv_support.h"

namespace minidl {
namespace fused_conv_detail {

constexpr int kThreads = 512;   // warpgroups 0, 1: tensor cores (q = ow parity); 2, 3: epilogue
// setmaxnreg split of the register file (2 * mma + 2 * epi = 4 * 128): the MMA warps hold 128
// weight registers, 16 accumulators per set and addressing.
constexpr int kMmaRegsDb = 192, kEpiRegsDb = 64;  // two accumulator sets
constexpr int kMmaRegs1 = 176, kEpiRegs1 = 80;    // one accumulator set
// Build options of the TF32 kernel (template parameter OPT, bit mask; 0 = the default build). They
// exist to measure the alternatives in the same run (bench/standalone/fused_conv_check.cu).
constexpr int kOptDirectStores = 1;  // epilogue stores y with st.global.cs instead of TMA tile stores
constexpr int kOptOneAccSet = 2;     // one accumulator set: each row's wgmmas complete before it is staged
constexpr int kPlaneRows = 34;  // input plane rows per channel group: rho = iw - iw_min, 32 u + 2 taps
constexpr int kPairSlots = 16;  // ring of input plane pairs
constexpr int kAhead = 4;       // rows whose inputs are loaded ahead of the row being computed
constexpr int kStageLd = 72;    // staging row per co: [q0: 32 u][q1: 32 u][8 pad] (bank-conflict free)
constexpr int kOutTiles = 3;    // finished 64 x 64 tiles waiting for their TMA store
constexpr int kMaxCin = 32;
// Bytes of one re-laid-out input plane (n, id, ih): [Cin/4][kPlaneRows][4] floats.
constexpr uint32_t plane_bytes(int cin) { return (uint32_t)(cin / 4) * kPlaneRows * 16; }
// Slots hold the pairs of rows r-1 .. r+kAhead (at most 2 new pairs per row, plus one shared).
static_assert(2 * (kAhead + 1) + 1 < kPairSlots, "pair ring too small for the load-ahead distance");
static_assert((kPairSlots & (kPairSlots - 1)) == 0, "kPairSlots must be a power of two");
// Bit 0: alternative A-fragment k order; bit 1: swapped LBO/SBO. The standalone check probes all
// four on the device; 0 is the documented PTX layout.
constexpr int kDefaultVariant = 0;

// Weights re-laid out per (class, q, k-step, thread) in exactly the A-fragment register order
// (and rounded to TF32), so each thread loads its 128 registers with 32 coalesced 16-byte loads.
__device__ float4 g_wprep[4 * 2 * kMaxCin * 128];

struct Geometry {
  int N, Cin, D, H, W, Dout, Hout;
  int pd, ph, pw;
  int cntD0, cntD1, cntH0, cntH1;  // rows per parity of (od + pd), (oh + ph)
  int od00, od01, oh00, oh01;      // first od (oh) of each parity
  int b1, b2, b3, total;           // items of class c are [b_c, b_{c+1}), class = pd_par*2 + ph_par
};

struct Params {
  Geometry g;
  const float* x;
  float* xt;  // re-laid-out input planes (workspace_bytes()), written by relayout_input_kernel
  const float* bias;
  const float* gamma;
  const float* beta;
  float* y;
  float* mean;
  float* rstd;
  float eps, factor;
  int variant;
};

struct Item {
  int cls, n, od, oh;
};

__device__ __forceinline__ Item decode_item(const Geometry& g, int i) {
  const int cls = (i >= g.b1) + (i >= g.b2) + (i >= g.b3);
  const int begin = cls == 0 ? 0 : cls == 1 ? g.b1 : cls == 2 ? g.b2 : g.b3;
  const int pdp = cls >> 1, php = cls & 1;
  const int cd = pdp ? g.cntD1 : g.cntD0;
  const int ch = php ? g.cntH1 : g.cntH0;
  int j = i - begin;
  const int ohi = j % ch;
  j /= ch;
  const int odi = j % cd;
  Item it;
  it.cls = cls;
  it.n = j / cd;
  it.od = (pdp ? g.od01 : g.od00) + 2 * odi;
  it.oh = (php ? g.oh01 : g.oh00) + 2 * ohi;
  return it;
}

// The item after `it` in the same order as decode_item (oh fastest, then od, n, class): a few
// compares instead of the divisions of decode_item.
// Returns true when the new item is row oh + 2 of the same (class, n, od) (its input slab
// overlaps the previous one by half).
__device__ __forceinline__ bool advance_item(const Geometry& g, Item& it) {
  it.oh += 2;
  if (it.oh < g.Hout) return true;
  it.od += 2;
  it.oh = (it.cls & 1) ? g.oh01 : g.oh00;
  if (it.od < g.Dout) return false;
  it.od = (it.cls >> 1) ? g.od01 : g.od00;
  if (++it.n < g.N) return false;
  it.n = 0;
  do {  // next non-empty class
    ++it.cls;
  } while (it.cls < 3 && ((it.cls >> 1) ? g.cntD1 : g.cntD0) * ((it.cls & 1) ? g.cntH1 : g.cntH0) == 0);
  it.od = (it.cls >> 1) ? g.od01 : g.od00;
  it.oh = (it.cls & 1) ? g.oh01 : g.oh00;
  return false;
}

// ---------------------------------------------------------------- small PTX wrappers
using ptx::bulk_commit;
using ptx::bulk_load;
using ptx::bulk_wait_all;
using ptx::bulk_wait_read;
using ptx::fence_proxy_async_smem;
using ptx::mbar_arrive;
using ptx::mbar_arrive_expect;
using ptx::mbar_init;
using ptx::mbar_init_fence;
using ptx::mbar_wait;
using ptx::policy_evict_first;
using ptx::smem_u32;
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across the wgmma fence/wait.
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// TMA tensor store of the box at coordinates (c0..c3) from shared memory, as a bulk group, with an
// L2 policy. `map` is the address of a __grid_constant__ CUtensorMap kernel parameter.
__device__ __forceinline__ void tma_store_4d(const void* map, uint32_t src, int c0, int c1, int c2, int c3,
                                             uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.global.shared::cta.bulk_group.L2::cache_hint [%0, {%2, %3, %4, %5}], [%1], %6;\n" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(src), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "l"(policy)
      : "memory");
}

__device__ __forceinline__ float tf32_round(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
}

// D[64 x 32] (+)= A[64 x 8] (registers, tf32) * B[8 x 32] (shared memory, K-major, descriptor).
template <int ScaleD>
__device__ __forceinline__ void wgmma_m64n32k8(float (&d)[16], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "{%16, %17, %18, %19}, %20, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "n"(ScaleD)
      : "memory");
}

template <bool TANH>
__device__ __forceinline__ float gelu_f(float v) {
  if (TANH) {
    const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    return 0.5f * v * (1.f + tanhf(u));
  }
  return 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
}

// ---------------------------------------------------------------- weight re-layout (TF32 path)
// g_wprep[((cls*2 + q)*CIN + s)*128 + thread].e = A fragment register e of k-step s for that
// thread of warpgroup q. k order: k-step s = ((a*2 + b)*2 + c)*(CIN/8) + ci8 covers taps
// (kd, kh, kw) = (pd_par + 2a, ph_par + 2b, ((q+pw)&1) + 2c) and channels ci = 8 ci8 + kcol,
// kcol = 0..7 (the slab's 16-byte core-matrix rows hold 4 consecutive channels).
template <int CIN>
__global__ void prep_weights_kernel(const float* __restrict__ w, int pw, int variant) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= 8 * CIN * 128 * 4) return;
  const int e = idx & 3;
  const int thr = (idx >> 2) & 127;
  const int s = (idx >> 9) % CIN;
  const int cq = (idx >> 9) / CIN;
  const int q = cq & 1, cls = cq >> 1;
  const int pdp = cls >> 1, php = cls & 1;
  const int wq = thr >> 5, lane = thr & 31, g = lane >> 2, t = lane & 3;
  const int co = 16 * wq + g + 8 * (e & 1);                              // rows g / g+8
  const int kcol = (variant & 1) ? (2 * t + (e >> 1)) : (t + 4 * (e >> 1));  // cols t / t+4
  const int ci8 = s % (CIN / 8), t3 = s / (CIN / 8);
  const int c = t3 & 1, b = (t3 >> 1) & 1, a = t3 >> 2;
  const int ci = 8 * ci8 + kcol;
  const int kd = pdp + 2 * a, kh = php + 2 * b, kw = ((q + pw) & 1) + 2 * c;
  const float v = w[(((ci * 64 + co) * 4 + kd) * 4 + kh) * 4 + kw];
  reinterpret_cast<float*>(g_wprep)[idx] = tf32_round(v);
}

// ---------------------------------------------------------------- TF32 tensor-core kernel
__device__ __forceinline__ float ex2_approx(float v) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(v));
  return r;
}

// gelu(x), exact-erf GELU with one MUFU op: with a = min(|x|, 6), Q(a) = erfc(a/sqrt2)/2 = 2^-P(a)
// and gelu(x) = max(x, 0) - a Q(a) for either sign. P is a degree-5 polynomial fitted (weighted
// minimax, weight a Q(a) ln 2, i.e. the error it makes in gelu) to -log2 Q on [0, 6]: fit error
// 4.4e-7 there, 5.0e-7 evaluated in float; beyond 6, a Q(a) < 6e-9, and the clamp keeps
// gelu(+inf) = +inf.
// 9 instructions (5 FFMA, MUFU.EX2, 2 FMNMX, 1 FFMA) against 14 with two MUFU ops for
// Abramowitz & Stegun 7.1.26 (kernels_history/fused_conv_v7.cu); bench/NOTES.md has the fit.
__device__ __forceinline__ float gelu_erf_fast(float x) {
  const float a = fminf(fabsf(x), 6.0f);
  float e = fmaf(a, -0.00047329801600426435f, 0.007084488403052092f);  // e = -P(a)
  e = fmaf(a, e, -0.05182723328471184f);
  e = fmaf(a, e, -0.45999258756637573f);
  e = fmaf(a, e, -1.1507878303527832f);
  e = fmaf(a, e, -1.000037670135498f);
  return fmaf(-a, ex2_approx(e), fmaxf(x, 0.f));
}
template <bool TANH>
__device__ __forceinline__ float gelu_unscaled(float u) {
  return TANH ? gelu_f<true>(u) : gelu_erf_fast(u);
}

// ---------------------------------------------------------------- input re-layout (TF32 path)
// xt plane (n, id, ih) at index (n*D + id)*H + ih holds [ci/4][rho][ci%4] = x[n][ci][id][ih][iw]
// with iw = iw_min + rho, zero outside [0, W), rounded to TF32; plane N*D*H is all zeros. One block
// per (n, id); consecutive threads take consecutive rho, so each read is a coalesced run of one
// channel's row and each write a 16-byte store.
template <int CIN>
__global__ void relayout_input_kernel(const float* __restrict__ x, float4* __restrict__ xt, const Geometry g) {
  constexpr int kPlaneF4 = CIN / 4 * kPlaneRows;
  const int64_t nd = blockIdx.x;
  const int64_t planes = (int64_t)g.N * g.D;
  if (nd == planes) {  // the zero plane
    for (int i = threadIdx.x; i < kPlaneF4; i += blockDim.x)
      xt[planes * g.H * kPlaneF4 + i] = make_float4(0.f, 0.f, 0.f, 0.f);
    return;
  }
  const int n = (int)(nd / g.D), id = (int)(nd % g.D);
  const int iw_min = (g.pw >> 1) - 1;
  const int64_t chan = (int64_t)g.D * g.H * g.W;
  const float* xs = x + ((int64_t)n * CIN * g.D + id) * g.H * g.W;
  float4* dst = xt + nd * g.H * kPlaneF4;
#pragma unroll 4
  for (int i = threadIdx.x; i < g.H * kPlaneF4; i += blockDim.x) {
    const int ih = i / kPlaneF4, e = i - ih * kPlaneF4;
    const int ci4 = e / kPlaneRows, iw = iw_min + (e - ci4 * kPlaneRows);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (iw >= 0 && iw < g.W) {
      const float* s = xs + 4 * ci4 * chan + ih * g.W + iw;
      v = make_float4(tf32_round(__ldg(s)), tf32_round(__ldg(s + chan)), tf32_round(__ldg(s + 2 * chan)),
                      tf32_round(__ldg(s + 3 * chan)));
    }
    dst[i] = v;
  }
}

// Named barrier among a subset of the block's threads.
__device__ __forceinline__ void bar_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
constexpr int kBarMma = 1;  // the two MMA warpgroups, once per row: both passed the previous row
constexpr int kBarEpi = 2;  // the two epilogue warpgroups, once per row: the output tile is written
// The staging tiles are handed between the roles with mbarriers on which every thread of the
// handing role arrives: full[b] (count 256: the MMA threads, after writing tile b) and empty[b]
// (count 256: the epilogue threads, after reading it). Named barriers with bar.arrive are just as
// correct, but compute-sanitizer racecheck then reports hazards on correct code
// (bench/standalone/racecheck_probe.cu), which would hide real ones.
constexpr int kStageTiles = 2;                    // staging tiles in the ring (3 measured no faster)
constexpr int kBarBytes = 8 * (2 * kStageTiles + kPairSlots);  // stage full/empty, slab pair full
__device__ __forceinline__ void init_stage_bars(uint32_t bars, int tid) {
  if (tid < 2 * kStageTiles) mbar_init(bars + 8 * tid, 256);
}
// Item k uses tile k % kStageTiles for the (k / kStageTiles)-th time.
__device__ __forceinline__ int stage_tile(int k) { return k % kStageTiles; }
__device__ __forceinline__ void signal_stage_full(uint32_t bars, int k) { mbar_arrive(bars + 8 * stage_tile(k)); }
__device__ __forceinline__ void wait_stage_full(uint32_t bars, int k) {
  mbar_wait(bars + 8 * stage_tile(k), (uint32_t)((k / kStageTiles) & 1));
}
__device__ __forceinline__ void signal_stage_empty(uint32_t bars, int k) {
  mbar_arrive(bars + 8 * (kStageTiles + stage_tile(k)));
}
// The MMA side, before writing item k into its tile: the epilogue has read item k - kStageTiles.
__device__ __forceinline__ void wait_stage_empty(uint32_t bars, int k) {
  if (k >= kStageTiles) mbar_wait(bars + 8 * (kStageTiles + stage_tile(k)), (uint32_t)((k / kStageTiles - 1) & 1));
}

// The epilogue warpgroups of the TF32 kernel: for each item, wait for its staging tile, read
// it, hand the tile back, then bias-free LayerNorm (statistics merged from the MMA warps' partial
// sums) -> GELU -> scale into an output tile [co][ow] in shared memory, which thread 0 of the
// role stores with one TMA tensor store; the row's mean and rstd are stored directly.
// 8 lanes own one co row of 64 values (lane l8: ow = 4*l8..+3 and 32+4*l8..+3), two rows per
// thread and item; rows co and co+2 share a half warp (disjoint banks with kStageLd = 72).
// Output tile k % kOutTiles is rewritten only after the TMA store that last read it has finished
// reading (thread 0 waits for that before the per-row barrier).
template <bool TANH, int MODE, bool kEpi, bool TMA_STORE>
__device__ __forceinline__ void fused_conv_epilogue(const Params& p, const void* ymap, const float* stages,
                                                    int stage_floats, float* outs, uint32_t stage_bars, int it0,
                                                    int it1, int ew, int lane, int etid) {
  const Geometry& g = p.g;
  const int qq = lane >> 3, l8 = lane & 7;
  const int rsub = ((qq & 1) << 1) | (qq >> 1);
  const int co_r0 = ew * 8 + rsub;  // rows co_r0 and co_r0 + 4
  float gam[8], bet[8];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    gam[j] = p.gamma ? p.gamma[4 * l8 + j] : 1.f;
    gam[4 + j] = p.gamma ? p.gamma[32 + 4 * l8 + j] : 1.f;
    bet[j] = p.beta ? p.beta[4 * l8 + j] : 0.f;
    bet[4 + j] = p.beta ? p.beta[32 + 4 * l8 + j] : 0.f;
  }
  float bias_r[2];
  bias_r[0] = p.bias ? p.bias[co_r0] : 0.f;
  bias_r[1] = p.bias ? p.bias[co_r0 + 4] : 0.f;
  const int64_t plane = (int64_t)g.Dout * g.Hout;
  const uint64_t policy = policy_evict_first();
  const bool scaled = p.factor != 1.f;  // one multiply per element saved for the default factor
  const int n_items = it1 - it0;
  Item cur = decode_item(g, it0);
  for (int k = 0; k < n_items; ++k) {
    wait_stage_full(stage_bars, k);
    const float* stage = stages + stage_tile(k) * stage_floats;
    float v[2][8];
    float4 stt[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      stt[i] = *reinterpret_cast<const float4*>(stage + (co_r0 + 4 * i) * kStageLd + 64);
      const float* st = stage + (co_r0 + 4 * i) * kStageLd + 2 * l8;
      const float2 a0 = *reinterpret_cast<const float2*>(st);
      const float2 a1 = *reinterpret_cast<const float2*>(st + 32);
      const float2 b0 = *reinterpret_cast<const float2*>(st + 16);
      const float2 b1 = *reinterpret_cast<const float2*>(st + 48);
      v[i][0] = a0.x; v[i][1] = a1.x; v[i][2] = a0.y; v[i][3] = a1.y;
      v[i][4] = b0.x; v[i][5] = b1.x; v[i][6] = b0.y; v[i][7] = b1.y;
    }
    if (k + kStageTiles < n_items) signal_stage_empty(stage_bars, k);  // the MMA may refill this tile
    if (kEpi) {
      float* out = outs + (k % kOutTiles) * 64 * 64;
      const int64_t row0 = ((int64_t)cur.n * 64 * g.Dout + cur.od) * g.Hout + cur.oh + co_r0 * plane;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float o[8];
        if (MODE == 2) {  // profiling: staged values stored as they are
#pragma unroll
          for (int j = 0; j < 8; ++j) o[j] = v[i][j];
        } else {
          // Merge of the two parities' (sum, M2) over 32 values each: M2 = M2_0 + M2_1 + (S0 - S1)^2 / 64.
          const float mu = (stt[i].x + stt[i].z) * (1.f / 64.f);
          const float dS = stt[i].x - stt[i].z;
          const float m2 = fmaf(dS * dS, 1.f / 64.f, stt[i].y + stt[i].w);
          const float rs = rsqrtf(m2 * (1.f / 64.f) + p.eps);
          const float nmrs = -mu * rs;  // (v - mu) * rs as one FMA
#pragma unroll
          for (int j = 0; j < 8; ++j) o[j] = gelu_unscaled<TANH>(fmaf(fmaf(v[i][j], rs, nmrs), gam[j], bet[j]));
          if (scaled) {
#pragma unroll
            for (int j = 0; j < 8; ++j) o[j] *= p.factor;
          }
          if (l8 == 0) {
            const int64_t row = row0 + 4 * i * plane;
            p.mean[row] = mu + bias_r[i];  // the bias shifts z, so it shifts the mean and nothing else
            p.rstd[row] = rs;
          }
        }
        if (TMA_STORE) {
          float* orow = out + (co_r0 + 4 * i) * 64 + 4 * l8;
          *reinterpret_cast<float4*>(orow) = make_float4(o[0], o[1], o[2], o[3]);
          *reinterpret_cast<float4*>(orow + 32) = make_float4(o[4], o[5], o[6], o[7]);
        } else {
          float* yrow = p.y + (row0 + 4 * i * plane) * 64 + 4 * l8;
          __stcs(reinterpret_cast<float4*>(yrow), make_float4(o[0], o[1], o[2], o[3]));
          __stcs(reinterpret_cast<float4*>(yrow + 32), make_float4(o[4], o[5], o[6], o[7]));
        }
      }
      if (!TMA_STORE) {
        advance_item(g, cur);
        continue;
      }
      fence_proxy_async_smem();  // the tile is read by the TMA store (async proxy)
      if (etid == 0) bulk_wait_read<kOutTiles - 2>();  // the store of item k-1 has read its tile
      bar_sync(kBarEpi, 256);
      if (etid == 0 && MODE != 8 && MODE != 9) {  // MODE 8, 9: profiling without the y stores
        tma_store_4d(ymap, smem_u32(out), 0, cur.oh, cur.od, cur.n * 64, policy);
        bulk_commit();
      }
    }
    advance_item(g, cur);
  }
  if (TMA_STORE && etid == 0) bulk_wait_all<0>();  // the stores read shared memory until they are done
}

// Warpgroups 0 and 1 (ow parity q = warpgroup) keep the A fragments of their parity for all of K
// (Cin x 8 taps: 128 registers) and run the tensor cores; warpgroups 2 and 3 run LayerNorm / GELU /
// scale / stores. The two roles meet in a double-buffered staging tile, handed over with
// mbarriers, so one item's epilogue overlaps the next items' matrix work.
//   MMA, item k: slab pairs of k landed (mbarrier) -> barrier of both MMA warpgroups -> issue 32
//   async wgmmas into accumulator set k&1 -> warp 0: bulk copies of item k + kAhead -> wait for
//   item k-1's wgmmas -> item k-1: LN partial statistics, (staging tile free) -> write its 64x32
//   half of the tile -> signal full.
//   Epilogue, item k: wait full -> read the 64x64 tile -> signal empty -> LN/GELU into the output
//   tile -> barrier -> one TMA store.
// Inputs: the slab of an item is two plane pairs, one per input row ih (b = 0: ih0, b = 1:
// ih0 - 1), each pair holding id0 and id0 - 1 (a = 0, 1). Row oh + 2 of the same class has
// ih0 + 1, so it reuses the pair ih0 and loads one new pair. Pairs live in a ring of kPairSlots
// slots, indexed by a running pair counter P (item: b = 0 -> P, b = 1 -> P-1); every P is loaded
// exactly once, so slot P % kPairSlots completes its full barrier for the (P / kPairSlots)-th time.
// The copy for item k + kAhead is issued after both warpgroups passed item k's barrier, so items
// <= k-2 have completed their wgmmas, and its slots differ from those of items k-1 .. k+kAhead
// (static_assert on kPairSlots).
// MODE (profiling only, bench/standalone): 0 = the kernel; 1 = no wgmma; 2 = no epilogue math
// (staged values stored as they are); 3 = no input loads; 4 = wgmma only; 5 = epilogue only;
// 6 = input loads only; 7 = epilogue only, without the MMA warps' statistics and staging writes;
// 8 = epilogue only, without the y stores; 9 = the kernel without the y stores.
template <int CIN, bool TANH, int MODE = 0, int OPT = 0>
__global__ void __launch_bounds__(kThreads, 1)
    fused_conv_tc_kernel(const Params p, const __grid_constant__ CUtensorMap ymap) {
  constexpr bool kMma = MODE != 1 && MODE != 5 && MODE != 6 && MODE != 7 && MODE != 8;
  constexpr bool kLoad = MODE != 3 && MODE != 4 && MODE != 5 && MODE != 7 && MODE != 8;
  constexpr bool kEpi = MODE != 4 && MODE != 6;
  constexpr bool kStats = MODE != 7;  // the MMA warps' statistics and staging writes
  constexpr bool kTmaStore = (OPT & kOptDirectStores) == 0;
  constexpr bool kDbAcc = (OPT & kOptOneAccSet) == 0;
  constexpr uint32_t kPlaneBytes = plane_bytes(CIN);
  constexpr uint32_t kPairBytes = 2 * kPlaneBytes;
  constexpr int kStageFloats = 64 * kStageLd;  // [co][q][u] + pad
  constexpr int KS = CIN;                      // k-steps of 8 (K = 8 Cin)
  constexpr int KC = CIN / 8;                  // k-steps per tap (a, b, c)
  // Shared memory: output tiles | staging tiles | input pair slots | mbarriers.
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  float* const outs = reinterpret_cast<float*>(smem_raw);
  float* const stages = outs + kOutTiles * 64 * 64;
  unsigned char* const slabs = reinterpret_cast<unsigned char*>(stages + kStageTiles * kStageFloats);
  const uint32_t stage_bars = smem_u32(slabs + kPairSlots * kPairBytes);
  const uint32_t slab_bars = stage_bars + 8 * 2 * kStageTiles;
  const Geometry& g = p.g;

  const int it0 = (int)((int64_t)blockIdx.x * g.total / gridDim.x);
  const int it1 = (int)((int64_t)(blockIdx.x + 1) * g.total / gridDim.x);
  if (it0 >= it1) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = tid >> 7;
  init_stage_bars(stage_bars, tid);
  if (tid < kPairSlots) mbar_init(slab_bars + 8 * tid, 1);
  mbar_init_fence();
  __syncthreads();
  const int n_items = it1 - it0;

  if (wg < 2) {
    // ======================================================== MMA warpgroups
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kDbAcc ? kMmaRegsDb : kMmaRegs1));
    // The warpgroup index through a shuffle from lane 0: the compiler then knows it is the same
    // in the whole warp and keeps what derives from it (the wgmma descriptors) in uniform
    // registers; from threadIdx.x directly every wgmma waited for two R2UR moves (NOTES.md).
    const int q = __shfl_sync(0xffffffffu, wg, 0), wtid = tid & 127;
    const uint32_t slab_s = smem_u32(slabs);
    // Warp 0 runs the load schedule (every lane the same, so the copy operands stay in uniform
    // registers) and its lane 0 issues the copies.
    const bool producer = __shfl_sync(0xffffffffu, warp, 0) == 0;

    // ---- loads (warp 0 only): pair P of item `it` for input row ih, into slot P % kPairSlots
    const char* const xt = reinterpret_cast<const char*>(p.xt);
    const int64_t zero_plane = (int64_t)g.N * g.D * g.H;
    auto load_pair = [&](const Item& it, int ih, int P) {
      const int slot = P & (kPairSlots - 1);
      const uint32_t bar = slab_bars + 8 * slot;
      const int id0 = (it.od + g.pd) >> 1;
      const bool ihok = ih >= 0 && ih < g.H;
      const int64_t pl0 = ihok && id0 >= 0 && id0 < g.D ? ((int64_t)it.n * g.D + id0) * g.H + ih : zero_plane;
      const int64_t pl1 = ihok && id0 >= 1 && id0 <= g.D ? ((int64_t)it.n * g.D + id0 - 1) * g.H + ih : zero_plane;
      if (lane != 0) return;
      if (!kLoad) {
        mbar_arrive(bar);
        return;
      }
      mbar_arrive_expect(bar, kPairBytes);
      bulk_load(slab_s + slot * kPairBytes, xt + pl0 * kPlaneBytes, kPlaneBytes, bar);  // a = 0: id0
      bulk_load(slab_s + slot * kPairBytes + kPlaneBytes, xt + pl1 * kPlaneBytes, kPlaneBytes, bar);  // a = 1
    };
    // Item with pair counter P: loads its b = 0 pair (ih0); a restart also loads ih0 - 1.
    auto load_item = [&](const Item& it, int P, bool restart) {
      const int ih0 = (it.oh + g.ph) >> 1;
      load_pair(it, ih0, P);
      if (restart) load_pair(it, ih0 - 1, P - 1);
    };
    Item pre = decode_item(g, it0);  // next item to load (warp 0)
    int Pp = 1;
    if (producer) {
      load_item(pre, Pp, true);
      for (int j = 1; j < kAhead && j < n_items; ++j) {
        const bool cont = advance_item(g, pre);
        Pp += cont ? 1 : 2;
        load_item(pre, Pp, !cont);
      }
    }

    // B descriptor (no swizzle, K-major): LBO = next 4 k (next ci4 group), SBO = next 8 rows of u.
    constexpr uint32_t kLbo = kPlaneRows * 16, kSbo = 128;
    const uint32_t desc_w0 = ((p.variant & 2) ? (kSbo >> 4) : (kLbo >> 4)) << 16;
    const uint32_t desc_w1 = (p.variant & 2) ? (kLbo >> 4) : (kSbo >> 4);
    const int rho0 = ((q + g.pw) >> 1) - (g.pw >> 1) + 1;  // plane row of u = 0, tap c = 0
    const uint32_t row_base = slab_s + rho0 * 16;

    // Item k - 1 done: LayerNorm partial statistics of this parity's 32 values of rows g and g+8
    // (sum and sum of squared deviations from the partial mean; the epilogue merges the two
    // parities, Chan), then the 64x32 half-tile into staging tile (k-1) % kStageTiles.
    auto finish = [&](float(&acc)[16], int kk) {
#pragma unroll
      for (int i = 0; i < 16; ++i) reg_fence(acc[i]);
      if (!kStats) {
        wait_stage_empty(stage_bars, kk);
        signal_stage_full(stage_bars, kk);
        return;
      }
      float sA = 0.f, sB = 0.f, dA = 0.f, dB = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        sA += acc[4 * j] + acc[4 * j + 1];
        sB += acc[4 * j + 2] + acc[4 * j + 3];
      }
      sA += __shfl_xor_sync(0xffffffffu, sA, 1);
      sB += __shfl_xor_sync(0xffffffffu, sB, 1);
      sA += __shfl_xor_sync(0xffffffffu, sA, 2);
      sB += __shfl_xor_sync(0xffffffffu, sB, 2);
      {
        const float mA = sA * (1.f / 32.f), mB = sB * (1.f / 32.f);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float a0 = acc[4 * j] - mA, a1 = acc[4 * j + 1] - mA;
          const float b0 = acc[4 * j + 2] - mB, b1 = acc[4 * j + 3] - mB;
          dA = fmaf(a0, a0, fmaf(a1, a1, dA));
          dB = fmaf(b0, b0, fmaf(b1, b1, dB));
        }
      }
      dA += __shfl_xor_sync(0xffffffffu, dA, 1);
      dB += __shfl_xor_sync(0xffffffffu, dB, 1);
      dA += __shfl_xor_sync(0xffffffffu, dA, 2);
      dB += __shfl_xor_sync(0xffffffffu, dB, 2);
      wait_stage_empty(stage_bars, kk);
      {  // accumulator fragment: rows co = 16*wq + g (+8), cols u = 8j + 2t (+1)
        float* st = stages + stage_tile(kk) * kStageFloats;
        const int co = 16 * (warp & 3) + (lane >> 2);
        const int u = 2 * (lane & 3);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          *reinterpret_cast<float2*>(st + co * kStageLd + q * 32 + 8 * j + u) = make_float2(acc[4 * j], acc[4 * j + 1]);
          *reinterpret_cast<float2*>(st + (co + 8) * kStageLd + q * 32 + 8 * j + u) =
              make_float2(acc[4 * j + 2], acc[4 * j + 3]);
        }
        if ((lane & 3) == 0) {  // [S_q, M2_q] in the row's padding: [64 + 2q, 65 + 2q]
          *reinterpret_cast<float2*>(st + co * kStageLd + 64 + 2 * q) = make_float2(sA, dA);
          *reinterpret_cast<float2*>(st + (co + 8) * kStageLd + 64 + 2 * q) = make_float2(sB, dB);
        }
      }
      signal_stage_full(stage_bars, kk);
    };

    uint32_t wa[KS * 4];
    float acc0[16], acc1[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) acc0[i] = acc1[i] = 0.f;
    Item cur = decode_item(g, it0);
    int Pc = 1;
    // Item k: wait for its two pairs, issue its wgmmas into `acc`, issue the loads of item
    // k + kAhead, then (has_prev) finish item k - 1 from `prev` once its wgmmas are done.
    auto step = [&](float(&acc)[16], float(&prev)[16], int k, bool has_prev) {
      mbar_wait(slab_bars + 8 * (Pc & (kPairSlots - 1)), (uint32_t)((Pc / kPairSlots) & 1));
      mbar_wait(slab_bars + 8 * ((Pc - 1) & (kPairSlots - 1)), (uint32_t)(((Pc - 1) / kPairSlots) & 1));
      bar_sync(kBarMma, 256);
      const uint32_t lo0 = (((row_base + (uint32_t)((Pc & (kPairSlots - 1)) * kPairBytes)) >> 4) & 0x3FFF) | desc_w0;
      const uint32_t lo1 =
          (((row_base + (uint32_t)(((Pc - 1) & (kPairSlots - 1)) * kPairBytes)) >> 4) & 0x3FFF) | desc_w0;
#pragma unroll
      for (int i = 0; i < 16; ++i) reg_fence(acc[i]);
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < (kMma ? KS : 0); ++s) {
        // k-step s = ((a*2 + b)*2 + c)*KC + ci8: channels 8 ci8 .. +7 of tap (a, b, c).
        const int ci8 = s % KC, t3 = s / KC, c = t3 & 1, b = (t3 >> 1) & 1, a = t3 >> 2;
        const int off = (int)(a * kPlaneBytes + ci8 * 2 * kLbo) / 16 - c;
        const uint32_t lo = (b ? lo1 : lo0) + (uint32_t)off;
        const uint64_t desc = ((uint64_t)desc_w1 << 32) | (uint64_t)lo;
        if (s == 0)
          wgmma_m64n32k8<0>(acc, wa[0], wa[1], wa[2], wa[3], desc);
        else
          wgmma_m64n32k8<1>(acc, wa[4 * s], wa[4 * s + 1], wa[4 * s + 2], wa[4 * s + 3], desc);
      }
      wgmma_commit();
      if (producer && k + kAhead < n_items) {
        const bool cont = advance_item(g, pre);
        Pp += cont ? 1 : 2;
        load_item(pre, Pp, !cont);
      }
      wgmma_wait<1>();
      if (has_prev) finish(prev, k - 1);
      const bool cont = advance_item(g, cur);
      Pc += cont ? 1 : 2;
    };

    int k = 0;
    while (k < n_items) {  // one segment of items per class: the weights change between segments
      const int cls_end = cur.cls == 0 ? g.b1 : cur.cls == 1 ? g.b2 : cur.cls == 2 ? g.b3 : g.total;
      const int k_end = min(it1, cls_end) - it0;
      {
        const float4* src = g_wprep + (size_t)(cur.cls * 2 + q) * CIN * 128 + wtid;
#pragma unroll
        for (int s = 0; s < KS; ++s) {
          const float4 v = src[s * 128];
          wa[4 * s + 0] = __float_as_uint(v.x);
          wa[4 * s + 1] = __float_as_uint(v.y);
          wa[4 * s + 2] = __float_as_uint(v.z);
          wa[4 * s + 3] = __float_as_uint(v.w);
        }
      }
      // Four items per iteration, alternating the accumulator sets, so that each row's wgmmas
      // are issued before the previous row is finished. The loop's back edge comes after a full
      // wait: with wgmmas in flight across it, ptxas serializes every wgmma (C7514), so one row
      // in four is finished with the tensor pipe idle.
      for (; kDbAcc && k + 4 <= k_end; k += 4) {
        step(acc0, acc1, k, false);
        step(acc1, acc0, k + 1, true);
        step(acc0, acc1, k + 2, true);
        step(acc1, acc0, k + 3, true);
        wgmma_wait<0>();
        finish(acc1, k + 3);
      }
      for (; k < k_end; ++k) {  // the segment's last 0-3 items, one at a time
        step(acc0, acc1, k, false);
        wgmma_wait<0>();
        finish(acc0, k);
      }
    }
  } else {
    // ======================================================== epilogue warpgroups
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kDbAcc ? kEpiRegsDb : kEpiRegs1));
    fused_conv_epilogue<TANH, MODE, kEpi, kTmaStore>(p, &ymap, stages, kStageFloats, outs, stage_bars, it0, it1,
                                                     warp - 8, lane, tid - 256);
  }
}

// ---------------------------------------------------------------- FP32 kernel (precise mode)
// One block of 64 threads per output row; thread (cg, og) computes co = 4cg..4cg+3 for
// ow = 16og..16og+15 by FP32 FMA from a shared slab S[ci][ab][34 rows].
template <bool TANH>
__global__ void __launch_bounds__(64) fused_conv_fp32_kernel(const Params p, const float* __restrict__ w) {
  extern __shared__ float S[];
  const Geometry& g = p.g;
  const Item it = decode_item(g, blockIdx.x);
  const int tid = threadIdx.x;
  const int iw_min = (g.pw >> 1) - 1;
  const int td = it.od + g.pd, th = it.oh + g.ph;
  const int64_t chan = (int64_t)g.D * g.H * g.W;
  for (int i = tid; i < g.Cin * 4 * 34; i += 64) {
    const int ci = i / 136, rem = i % 136, ab = rem / 34, row = rem % 34;
    const int id = (td >> 1) - (ab >> 1), ih = (th >> 1) - (ab & 1), iw = iw_min + row;
    const bool ok = id >= 0 && id < g.D && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
    S[i] = ok ? p.x[((int64_t)it.n * g.Cin + ci) * chan + ((int64_t)id * g.H + ih) * g.W + iw] : 0.f;
  }
  __syncthreads();

  const int cg = tid >> 2, og = tid & 3;
  const int pdp = td & 1, php = th & 1;
  float acc[4][16];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int i = 0; i < 16; ++i) acc[j][i] = 0.f;
  for (int ci = 0; ci < g.Cin; ++ci) {
#pragma unroll
    for (int ab = 0; ab < 4; ++ab) {
      const int kd = pdp + 2 * (ab >> 1), kh = php + 2 * (ab & 1);
      const float* srow = S + (ci * 4 + ab) * 34 + 8 * og;
#pragma unroll
      for (int q = 0; q < 2; ++q) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int kw = ((q + g.pw) & 1) + 2 * c;
          const int off = ((q + g.pw) >> 1) - (g.pw >> 1) + 1 - c;
          float xv[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) xv[i] = srow[i + off];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float wv = __ldg(w + (((ci * 64 + 4 * cg + j) * 4 + kd) * 4 + kh) * 4 + kw);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[j][2 * i + q] = fmaf(wv, xv[i], acc[j][2 * i + q]);
          }
        }
      }
    }
  }

  const int64_t plane = (int64_t)g.Dout * g.Hout;
  const int64_t row0 = ((int64_t)it.n * 64 * g.Dout + it.od) * g.Hout + it.oh;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int co = 4 * cg + j;
    const float b = p.bias ? p.bias[co] : 0.f;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      acc[j][i] += b;
      s += acc[j][i];
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    const float mu = s * (1.f / 64.f);
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      acc[j][i] -= mu;
      ss = fmaf(acc[j][i], acc[j][i], ss);
    }
    ss += __shfl_xor_sync(0xffffffffu, ss, 1);
    ss += __shfl_xor_sync(0xffffffffu, ss, 2);
    const float rs = rsqrtf(ss * (1.f / 64.f) + p.eps);
    const int64_t row = row0 + co * plane;
    float* yrow = p.y + row * 64 + 16 * og;
#pragma unroll
    for (int i4 = 0; i4 < 4; ++i4) {
      float o[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = 4 * i4 + e, ow = 16 * og + i;
        const float gm = p.gamma ? p.gamma[ow] : 1.f, bt = p.beta ? p.beta[ow] : 0.f;
        o[e] = gelu_f<TANH>(fmaf(acc[j][i] * rs, gm, bt)) * p.factor;
      }
      __stcs(reinterpret_cast<float4*>(yrow + 4 * i4), make_float4(o[0], o[1], o[2], o[3]));
    }
    if (og == 0) {
      p.mean[row] = mu;
      p.rstd[row] = rs;
    }
  }
}

// ---------------------------------------------------------------- host side
inline int device_sm_count() {
  int dev = 0, n = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
  return n > 0 ? n : 1;
}

// Scratch bytes the TF32 kernel needs for the re-laid-out input: N*D*H planes plus a zero plane.
inline size_t workspace_bytes(int64_t N, int64_t Cin, int64_t D, int64_t H) {
  return (size_t)(N * D * H + 1) * plane_bytes((int)Cin);
}

// The TMA descriptor of y for the epilogue's tile stores: y as the 4-D tensor
// [n*64 + co][od][oh][ow] and a box of 64 ow x 1 x 1 x 64 co (one output row of every channel).
inline CUtensorMap make_y_tensor_map(const Params& p) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (!encode)
    throw std::runtime_error(
        "fused_conv_transpose3d_ln_gelu_scale: the CUDA driver has no cuTensorMapEncodeTiled (needs CUDA 12+)");
  const Geometry& g = p.g;
  const cuuint64_t row = 64 * sizeof(float);
  const cuuint64_t dims[4] = {64, (cuuint64_t)g.Hout, (cuuint64_t)g.Dout, (cuuint64_t)g.N * 64};
  const cuuint64_t strides[3] = {row, row * g.Hout, row * g.Hout * g.Dout};
  const cuuint32_t box[4] = {64, 1, 1, 64};
  const cuuint32_t estrides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, p.y, dims, strides, box, estrides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                            CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error(
        "fused_conv_transpose3d_ln_gelu_scale: cuTensorMapEncodeTiled failed for output 'y' (error " +
        std::to_string((int)r) + ")");
  return map;
}

template <int CIN>
constexpr size_t tc_smem_bytes() {
  return (size_t)kOutTiles * 64 * 64 * sizeof(float) + (size_t)kStageTiles * 64 * kStageLd * sizeof(float) +
         (size_t)kPairSlots * 2 * plane_bytes(CIN) + kBarBytes;
}

// Input re-layout + weight re-layout + the fused kernel. p.xt must point to workspace_bytes().
template <int CIN, bool TANH, int MODE = 0, int OPT = 0>
void launch_tc(const Params& p, const float* w, cudaStream_t stream) {
  constexpr size_t smem = tc_smem_bytes<CIN>();
  static_assert(smem <= 227 * 1024, "shared memory over the sm_90 limit");
  static const bool configured = [] {
    cudaFuncSetAttribute(fused_conv_tc_kernel<CIN, TANH, MODE, OPT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         (int)smem);
    return true;
  }();
  (void)configured;
  const Geometry& g = p.g;
  relayout_input_kernel<CIN>
      <<<(unsigned)((int64_t)g.N * g.D + 1), 256, 0, stream>>>(p.x, reinterpret_cast<float4*>(p.xt), g);
  const int prep_n = 8 * CIN * 128 * 4;
  prep_weights_kernel<CIN><<<(prep_n + 255) / 256, 256, 0, stream>>>(w, p.g.pw, p.variant);
  const CUtensorMap ymap = make_y_tensor_map(p);
  const int sms = device_sm_count();
  const int grid = g.total < sms ? g.total : sms;
  fused_conv_tc_kernel<CIN, TANH, MODE, OPT><<<grid, kThreads, smem, stream>>>(p, ymap);
}

template <bool TANH>
void launch_tc_cin(const Params& p, const float* w, cudaStream_t stream) {
  switch (p.g.Cin) {
    case 8: launch_tc<8, TANH>(p, w, stream); break;
    case 16: launch_tc<16, TANH>(p, w, stream); break;
    case 24: launch_tc<24, TANH>(p, w, stream); break;
    default: launch_tc<32, TANH>(p, w, stream); break;
  }
}

// Geometry and pointers for one call; throws std::invalid_argument for an unsupported shape.
inline Params make_params(const float* x, const float* conv_bias, const float* gamma, const float* beta, float* y,
                          float* mean, float* rstd, int64_t N, int64_t Cin, int64_t D, int64_t H, int64_t W,
                          int64_t Cout, int pad_d, int pad_h, int pad_w, int out_pad_d, int out_pad_h, int out_pad_w,
                          float eps, float factor, int variant) {
  const std::string why = fused_conv_unsupported_reason(
      {N, Cin, D, H, W}, {Cin, Cout, 4, 4, 4}, {2, 2, 2}, {pad_d, pad_h, pad_w}, {out_pad_d, out_pad_h, out_pad_w},
      fused_conv_limits::kWout);
  if (!why.empty()) throw std::invalid_argument("fused_conv_transpose3d_ln_gelu_scale: " + why);
  Params p{};
  Geometry& g = p.g;
  g.N = (int)N;
  g.Cin = (int)Cin;
  g.D = (int)D;
  g.H = (int)H;
  g.W = (int)W;
  g.Dout = (int)((D - 1) * 2 - 2 * pad_d + 4 + out_pad_d);
  g.Hout = (int)((H - 1) * 2 - 2 * pad_h + 4 + out_pad_h);
  g.pd = pad_d;
  g.ph = pad_h;
  g.pw = pad_w;
  // od with (od + pd) & 1 == par: od = od0 + 2i, od0 = (par + pd) & 1.
  g.od00 = pad_d & 1;
  g.od01 = (1 + pad_d) & 1;
  g.oh00 = pad_h & 1;
  g.oh01 = (1 + pad_h) & 1;
  g.cntD0 = (g.Dout - g.od00 + 1) / 2;
  g.cntD1 = (g.Dout - g.od01 + 1) / 2;
  g.cntH0 = (g.Hout - g.oh00 + 1) / 2;
  g.cntH1 = (g.Hout - g.oh01 + 1) / 2;
  g.b1 = g.N * g.cntD0 * g.cntH0;
  g.b2 = g.b1 + g.N * g.cntD0 * g.cntH1;
  g.b3 = g.b2 + g.N * g.cntD1 * g.cntH0;
  g.total = g.b3 + g.N * g.cntD1 * g.cntH1;
  p.x = x;
  p.bias = conv_bias;
  p.gamma = gamma;
  p.beta = beta;
  p.y = y;
  p.mean = mean;
  p.rstd = rstd;
  p.eps = eps;
  p.factor = factor;
  p.variant = variant;
  return p;
}

// The launcher behind launch_fused_conv_transpose3d_ln_gelu_scale; `variant` exists for the
// standalone check's layout probe only. `workspace` (workspace_bytes(), 16-byte aligned) is used
// by the TF32 kernel only; the precise kernel ignores it.
inline void launch(const float* x, const float* w, const float* conv_bias, const float* gamma, const float* beta,
                   float* y, float* mean, float* rstd, int64_t N, int64_t Cin, int64_t D, int64_t H, int64_t W,
                   int64_t Cout, int pad_d, int pad_h, int pad_w, int out_pad_d, int out_pad_h, int out_pad_w,
                   float eps, bool tanh_gelu, float factor, bool precise, void* workspace,
                   cudaStream_t stream, int variant = kDefaultVariant) {
  Params p = make_params(x, conv_bias, gamma, beta, y, mean, rstd, N, Cin, D, H, W, Cout, pad_d, pad_h, pad_w,
                               out_pad_d, out_pad_h, out_pad_w, eps, factor, variant);
  const Geometry& g = p.g;
  if (g.total == 0) return;
  if (precise) {
    const size_t smem = (size_t)Cin * 4 * 34 * sizeof(float);
    if (tanh_gelu)
      fused_conv_fp32_kernel<true><<<g.total, 64, smem, stream>>>(p, w);
    else
      fused_conv_fp32_kernel<false><<<g.total, 64, smem, stream>>>(p, w);
    return;
  }
  if (workspace == nullptr)
    throw std::invalid_argument("fused_conv_transpose3d_ln_gelu_scale: the TF32 kernel needs a workspace of " +
                                std::to_string(workspace_bytes(N, Cin, D, H)) + " bytes");
  p.xt = static_cast<float*>(workspace);
  if (tanh_gelu)
    launch_tc_cin<true>(p, w, stream);
  else
    launch_tc_cin<false>(p, w, stream);
}

}  // namespace fused_conv_detail
}  // namespace minidl
