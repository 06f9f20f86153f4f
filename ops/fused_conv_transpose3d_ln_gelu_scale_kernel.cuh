// Kernels behind fused_conv_transpose3d_ln_gelu_scale: ConvTranspose3d (stride 2, kernel 4,
// Cout 64) -> + bias -> LayerNorm over the last dim (W_out = 64) -> GELU -> * factor, in one pass
// that writes y once plus, when they are wanted, the per-row mean and rstd. Included by
// ops/fused_conv_transpose3d_ln_gelu_scale.cu and by the standalone check
// bench/standalone/fused_conv_check.cu; it needs only the CUDA runtime (the driver's tensor-map
// encoder is reached through cudaGetDriverEntryPointByVersion).
//
// Operands: FP16 (K = 16 per wgmma step) or TF32 (K = 8), both accumulated in FP32; FP16 has
// TF32's 10-bit mantissa, so the two round the same, but its exponent range is narrow. The FP16
// weights are scaled by a power of two into FP16's range (and the accumulators back), so any
// weights work; for x, by default the FP16 kernels measure max|x| on the device and the FP16
// result stands when it lies in [2^-8, 2^15]; otherwise a TF32 pre-pass and kernel run after it
// (launched always, they return at once when not needed). FP16 halves the operand bytes everywhere
// (weights 64 KB instead of 128, input planes, wgmma operand reads) and doubles the tensor rate:
// TF32 is bound by the H100's 700 W power cap at 0.615 ms (bench/NOTES.md). The FP16 kernel also
// reads x itself (DIRECT: FP32 rows by TMA, converted in shared memory by the producer warpgroup),
// so only the weights need a pre-pass: 0.48 ms for the flagship. Below, sizes are the TF32 ones;
// FP16 halves every operand byte count.
//
// How the tensor-core kernel works (v9; numbers for Cin = 32; bench/NOTES.md has the measurements):
//  * Phases. Output od receives x[id] through tap kd = td - 2 id with td = od + pad_d, so only
//    kd in {td&1, (td&1)+2} (id = td>>1 and id = (td>>1)-1) contribute; the same in h and w. The
//    parity class (td&1, th&1) of an output row fixes its 4 (kd, kh) taps. Along w, outputs
//    ow = 2u + q (u = 0..31, q = ow parity) use taps kw = ((q+pw)&1) + 2c, c in {0,1}, at
//    iw = u + ((q+pw)>>1) - c.
//  * Work unit = a row pair: rows A = (n, od, oh) and B = (n, od + 2, oh) of one parity class,
//    all 64 co x all 64 ow of both, K = Cin x 8 taps = 256. Per ow parity q it is the GEMM
//    D[co 64][n 64] = W_q[co][k] * X[k][n] with n = 2u + r (r = 0: row A, 1: row B), one wgmma
//    m64n64k8 per k-step, both operands from shared memory (SS): 64 wgmmas per unit.
//  * Input re-layout. A pre-pass kernel (which also re-lays out the weights) writes x once more
//    as planes, one per (n, id, ih):
//    [ci/4][rho][ci%4] with rho = iw - iw_min over 34 rows (zeros outside [0, W)), TF32-rounded.
//    A TMA tensor load then takes the planes id and id + 1 of one ih and interleaves them row by
//    row: [ci/4][rho][r][ci%4], 16-byte rows. That is the K-major, no-swizzle layout wgmma wants
//    for B (a core matrix = 8 n-rows x 4 channels = 128 contiguous bytes, the next 4 channels are
//    LBO on), and the shift by tap c or parity q is a 32-byte offset of the descriptor's start
//    address: an implicit im2col for two rows at once, with no copies. Out-of-range id / ih come
//    back as zeros from the TMA unit.
//  * Direct input (FP16, the default path where x allows it): no input pre-pass. The TMA unit
//    brings one input row ih of the three planes id0 - 1 .. id0 + 1 straight from x (FP32, whole
//    W-wide rows) into a staging ring, and producer warps 1-3 write the ring slot's two
//    interleaved plane pairs from it (convert_input_row), the FP16 conversion and the shift by
//    iw_min included. The slot layout the consumers see is the same.
//  * Inputs of a unit: for tap (a, b) it reads the interleaved pair (id0 - a, id0 - a + 1) of
//    input row ih0 - b. A ring slot holds one input row ih (both a); the next unit of the same
//    (n, od) has ih0 + 1, so it reuses one slot and loads one. One producer thread issues them.
//  * Weights of the block's parity class (both q, all of K: 128 KB) stay in shared memory, in
//    the A operand's core-matrix layout, loaded once: each block works on one class only.
//  * Warp specialization. Warpgroup 0 is the producer (one thread used); warpgroups 1-3 are
//    consumers that take the block's units in turn: wait for the unit's two ring slots, issue its
//    64 wgmmas, wait, release the slots, then run bias-free LayerNorm -> GELU -> scale on the 64
//    accumulators in registers. While one consumer runs its epilogue the others keep the tensor
//    cores busy. setmaxnreg: 40 registers for the producer, 152 for the consumers.
//  * Stores. Each warp turns 8 rows x 64 values at a time around in a 2 KB shared scratch, so that
//    every 16-byte store instruction writes two whole 256-byte rows of y.
//  * LayerNorm statistics: a thread holds 16 of a row's 64 values (both parities); the row's
//    four threads are one quad, so two shuffles finish each sum (two passes: mean, then squared
//    deviations). When mean or rstd is wanted, the (mean, rstd) pairs go to a unit-ordered
//    scratch in the workspace (64-byte runs) and a small second kernel transposes them into
//    mean / rstd [n][co][od][oh] with whole-line writes: written in place they were 4-byte writes
//    into sectors shared with the other oh parity's block, and cost 0.19 ms of the kernel's time
//    (bench/NOTES.md). When neither is wanted (nothing reads them: inference, and the training
//    step, whose backward recomputes them) both steps are skipped: 0.035 ms less.
//  * Shared memory per unit: 2048 wavefronts of wgmma operands (SS m64n64k8 reads 4 KB per 32
//    tensor cycles), 512 of store scratch, 136 of input loads. The operand reads travel the L1's
//    LSU data pipe, which Nsight Compute shows as the busiest unit (82% of its peak): the kernel's
//    floor is there.
//  * All element offsets into x, y, mean and rstd are 64-bit.
// The precise (FP32) kernel is a plain direct convolution per row with the same epilogue.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/smem_sync.cuh"
#include "ops/fused_conv_support.h"

namespace minidl {
namespace fused_conv_detail {

constexpr int kThreads = 512;   // warpgroup 0: producer (warp 0); warpgroups 1-3: consumers
constexpr int kConsumers = 3;
// setmaxnreg split of the register file (128 * 40 + 384 * 152 <= 64K): the consumers hold 64
// accumulators, the 32 gamma / beta values of their columns and the epilogue's temporaries.
constexpr int kProducerRegs = 40, kConsumerRegs = 152;
constexpr int kPlaneRows = 34;  // input plane rows per channel group: rho = iw - iw_min, 32 u + 2 taps
constexpr int kSlots = 4;       // ring of input rows (one ih, both kd taps), 17 KB each at Cin 32
// Direct input (FP16 only, see fused_conv_tc_kernel): a staging ring of FP32 input rows as the
// TMA unit brings them from x, [ci][3 planes][W] (W <= kStageW), and the threads that convert them.
constexpr int kStages = 3;
constexpr int kStageW = 36;  // widest W staged (W_out = 64 allows W = 32 and 36 with W % 4 == 0)
constexpr int kConverters = 96;  // warps 1-3 of the producer warpgroup
constexpr int kProducerRegsDirect = 56;  // 128 * 56 + 384 * 152 = 64K
constexpr int kMaxCin = 32;
// Operand formats. TF32: a 16-byte row holds 4 channels and a wgmma step has K = 8. F16 (FP16
// operands, FP32 accumulation; same 10-bit mantissa as TF32, narrower exponent range): 8
// channels per row, K = 16 per step, half the operand bytes.
constexpr int chan_per_row(bool f16) { return f16 ? 8 : 4; }
constexpr int k_per_step(bool f16) { return f16 ? 16 : 8; }
// Bytes of one re-laid-out input plane (n, id, ih): [Cin/c][kPlaneRows][c] with c = chan_per_row.
constexpr uint32_t plane_bytes(int cin, bool f16 = false) {
  return (uint32_t)(cin / chan_per_row(f16)) * kPlaneRows * 16;
}
// Two planes (id, id + 1) interleaved row by row, one ring slot (taps a = 0, 1), the weights of a
// class (both parities, K = 8 Cin, 64 co: 2 KB per wgmma step), and the rows of one TMA box (at
// most 256 per box).
constexpr uint32_t pair_bytes(int cin, bool f16 = false) { return 2 * plane_bytes(cin, f16); }
constexpr uint32_t slot_bytes(int cin, bool f16 = false) { return 2 * pair_bytes(cin, f16); }
constexpr uint32_t stage_bytes(int cin) { return (uint32_t)cin * 3 * kStageW * 4; }
constexpr int ksteps(int cin, bool f16 = false) { return 8 * cin / k_per_step(f16); }  // per parity
constexpr uint32_t weight_bytes(int cin, bool f16 = false) { return 2u * ksteps(cin, f16) * 2048; }
constexpr int plane_rows(int cin, bool f16 = false) { return cin / chan_per_row(f16) * kPlaneRows; }
constexpr int box_count(int cin, bool f16 = false) { return plane_rows(cin, f16) > 256 ? 2 : 1; }
constexpr int box_rows(int cin, bool f16 = false) { return plane_rows(cin, f16) / box_count(cin, f16); }
// Bit 1: swapped LBO/SBO in the descriptors. The standalone check probes the variants on the
// device; 0 is the documented PTX layout (bit 0 had a meaning for register A fragments only).
constexpr int kDefaultVariant = 0;

// Weights re-laid out per (class, q, k-step) as the A operand's shared-memory image: 2 KB per
// k-step, [kc 2][co/8][co%8][4 channels], TF32-rounded. A block copies its class's 128 KB once.
__device__ float4 g_wsmem[4 * 2 * kMaxCin * 128];

struct Geometry {
  int N, Cin, D, H, W, Dout, Hout;
  int pd, ph, pw;
  int cntD0, cntD1, cntH0, cntH1;  // rows per parity of (od + pd), (oh + ph)
  int od00, od01, oh00, oh01;      // first od (oh) of each parity
  int b1, b2, b3, total;           // rows of class c are [b_c, b_{c+1}), class = pd_par*2 + ph_par
  int units[4];                    // row pairs (od, od + 2) per class
  int unit0[4];                    // index of class c's first unit among all units
  int block0[5];                   // blocks of class c are [block0[c], block0[c+1]) (TF32 kernel)
};

// The input range that FP16 keeps as exact as TF32 (the same 10-bit mantissa): the F16 result
// stands only when max|x| lies in [2^-8, 2^15]. Above, values would overflow (65504); below 2^-14
// they lose mantissa bits, which the 2^-8 floor keeps at least 64x smaller than the rounding
// error of the largest values. Otherwise the TF32 path runs. The weights need no such test: the
// F16 path scales each output channel's weights by a power of two into [2^14, 2^15)
// (weight_scale_exp, relayout_weights_f16_channel) and the epilogue scales its rows back, exactly.
constexpr float kF16RangeMin = 0x1p-8f, kF16RangeMax = 0x1p15f;
// Which launches of a call run: the F16 kernel when the pre-pass found the operands in range,
// the TF32 pre-pass and kernel when it did not. kAlways: no range test (forced operand format).
enum RangeGate : int { kAlways = 0, kIfF16Range = 1, kIfNotF16Range = 2 };

struct Params {
  Geometry g;
  const float* x;
  unsigned* range;  // max|x| as float bits in range[0] (the range test; zeroed before the call when
                    // it is used), then from word kWeightExpWord the F16 weights' scale exponents
                    // [class][co] (the first kRangeBytes of the workspace)
  int range_gate;   // RangeGate of the launch
  float* xt;  // re-laid-out input planes (workspace_bytes()), written by prepass_kernel
  float2* stats;  // (mean, rstd) per row in unit order [unit][r][co], in the workspace after xt;
                  // null when neither mean nor rstd is wanted (both null): no statistics stored
  const float* bias;
  const float* gamma;
  const float* beta;
  float* y;
  float* mean;  // either may be null: that output is not written
  float* rstd;
  float eps, factor;
  int variant;
};

__device__ __forceinline__ bool f16_range_ok(const unsigned* range) {
  const float mx = __uint_as_float(range[0]);
  return mx >= kF16RangeMin && mx <= kF16RangeMax;
}
// k with m * 2^k in [2^14, 2^15), m = max|w| over one output channel's weights of a class: those
// FP16 weights are w * 2^k (an exact scaling, so they round as TF32 would whatever the weights'
// magnitude) and the channel's accumulators are scaled by 2^-k. 0 for zero, infinite or NaN
// weights; clamped so that 2^k and 2^-k stay normal floats.
constexpr int kWeightExpWord = 64;  // p.range[kWeightExpWord + cls * 64 + co]: k as an int
__device__ __forceinline__ int weight_scale_exp(float m) {
  if (!(m > 0.f) || isinf(m)) return 0;
  int e;
  frexpf(m, &e);  // m in [2^(e-1), 2^e)
  return max(-120, min(120, 15 - e));
}
// True when this launch has nothing to do (its gate is closed); uniform over the grid.
__device__ __forceinline__ bool gate_closed(const Params& p) {
  if (p.range_gate == kAlways) return false;
  return f16_range_ok(p.range) != (p.range_gate == kIfF16Range);
}

// One output row (n, od, oh) of parity class cls: the precise kernel's work item (one block per
// row, in the order oh fastest, then od, n, class).
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

// A unit of the TF32 kernel: rows (n, od, oh) and (n, od + 2, oh) of one class. Units of a class
// are ordered oh fastest, then od pairs (od advances by 4), then n.
struct Unit {
  int n, od, oh;
};
__device__ __forceinline__ int first_od(const Geometry& g, int cls) { return (cls >> 1) ? g.od01 : g.od00; }
__device__ __forceinline__ int first_oh(const Geometry& g, int cls) { return (cls & 1) ? g.oh01 : g.oh00; }
__device__ __forceinline__ Unit decode_unit(const Geometry& g, int cls, int j) {
  const int ch = (cls & 1) ? g.cntH1 : g.cntH0;
  const int cdp = (((cls >> 1) ? g.cntD1 : g.cntD0) + 1) >> 1;
  Unit u;
  u.oh = first_oh(g, cls) + 2 * (j % ch);
  j /= ch;
  u.od = first_od(g, cls) + 4 * (j % cdp);
  u.n = j / cdp;
  return u;
}
// The next unit; true when it is row oh + 2 of the same (n, od) pair (one input row shared).
__device__ __forceinline__ bool advance_unit(const Geometry& g, int cls, Unit& u) {
  u.oh += 2;
  if (u.oh < g.Hout) return true;
  u.oh = first_oh(g, cls);
  u.od += 4;
  if (u.od < g.Dout) return false;
  u.od = first_od(g, cls);
  ++u.n;
  return false;
}

// The input rows of a block's units [u0, u0 + n_units) of class cls, in the order the ring takes
// them: f(unit, ih, P) for pair counter P = 0, 1, 2, ... (see fused_conv_tc_kernel). A unit that
// continues the previous one (same n and od pair, oh + 2) needs one new row, ih0; another needs
// two, ih0 - 1 and ih0.
template <class F>
__device__ __forceinline__ void for_each_input_row(const Geometry& g, int cls, int u0, int n_units, F&& f) {
  Unit u = decode_unit(g, cls, u0);
  int P = 1;
  for (int k = 0; k < n_units; ++k) {
    bool cont = false;
    if (k > 0) {
      cont = advance_unit(g, cls, u);
      P += cont ? 1 : 2;
    }
    const int ih0 = (u.oh + g.ph) >> 1;
    if (!cont) f(u, ih0 - 1, P - 1);
    f(u, ih0, P);
  }
}

// ---------------------------------------------------------------- small PTX wrappers
using ptx::bulk_load;
using ptx::mbar_arrive;
using ptx::mbar_arrive_expect;
using ptx::mbar_init;
using ptx::mbar_init_fence;
using ptx::mbar_wait;
using ptx::smem_u32;
// Programmatic dependent launch (a kernel launched with programmatic stream serialization may
// start while its predecessor drains): wait until the predecessor has completed and its writes
// are visible (a no-op in a kernel launched normally; every block runs it before anything else,
// so no block can finish ahead of the predecessor), and let this kernel's dependent start early.
__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void griddep_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across the wgmma fence/wait.
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// TMA tensor load of the 5-D box at coordinates (c0..c4) into shared memory, completing its bytes
// on the mbarrier `bar`; out-of-range elements are filled with zeros. `map` is the address of a
// __grid_constant__ CUtensorMap kernel parameter.
__device__ __forceinline__ void tma_load_5d(const void* map, uint32_t dst, uint32_t bar, int c0, int c1, int c2,
                                            int c3, int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6, "
      "%7}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
      : "memory");
}

__device__ __forceinline__ float tf32_round(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
}

// The 32 accumulator registers of an m64n64 wgmma: as the instruction's register list, and as
// the asm statement's read-write operands %0 .. %31.
#define FC_WGMMA_ACC_REGS                                                                        \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FC_WGMMA_ACC_OPERANDS(d)                                                                       \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),       \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),          \
      "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),        \
      "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),        \
      "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
// D[64 x 64] (+)= A[64 x 8] * B[8 x 64], TF32, both operands from shared memory (descriptors).
template <int ScaleD>
__device__ __forceinline__ void wgmma_m64n64k8_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 "
      FC_WGMMA_ACC_REGS ", "
      "%32, %33, p, 1, 1;\n}\n"
      : FC_WGMMA_ACC_OPERANDS(d)
      : "l"(desc_a), "l"(desc_b), "n"(ScaleD)
      : "memory");
}
// D[64 x 64] (+)= A[64 x 16] * B[16 x 64], FP16 operands, FP32 accumulation, both K-major in
// shared memory: the same 2 KB operand images as the TF32 step (8 halves per 16-byte row).
template <int ScaleD>
__device__ __forceinline__ void wgmma_m64n64k16_f16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      FC_WGMMA_ACC_REGS ", "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : FC_WGMMA_ACC_OPERANDS(d)
      : "l"(desc_a), "l"(desc_b), "n"(ScaleD)
      : "memory");
}
template <bool F16, int ScaleD>
__device__ __forceinline__ void wgmma_step(float (&d)[32], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (F16)
    wgmma_m64n64k16_f16_ss<ScaleD>(d, desc_a, desc_b);
  else
    wgmma_m64n64k8_ss<ScaleD>(d, desc_a, desc_b);
}
// Shared-memory matrix descriptor, no swizzle: start address, LBO (next core matrix along K),
// SBO (next 8 rows along M or N); variant bit 1 swaps the two (layout probe only).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo, int variant) {
  const uint32_t l = (variant & 2) ? sbo : lbo, s = (variant & 2) ? lbo : sbo;
  return (uint64_t)((addr >> 4) & 0x3FFF) | ((uint64_t)(l >> 4) << 16) | ((uint64_t)(s >> 4) << 32);
}

template <bool TANH>
__device__ __forceinline__ float gelu_f(float v) {
  if (TANH) {
    const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    return 0.5f * v * (1.f + tanhf(u));
  }
  return 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
}

// ---------------------------------------------------------------- weight re-layout
// g_wsmem: per (class, q, k-step s) one 2 KB A operand of a wgmma step (K-major, no swizzle:
// LBO 1024 = the next row of channels, SBO 128 = the next 8 co), [kc 2][co/8][co%8][c] with
// c = chan_per_row channels per 16-byte row (TF32: 4 floats; F16: 8 halves), holding W of channel
// ci = K s' + c kc + j (K = k_per_step, s' = s % (CIN/K)), output channel co, taps (kd, kh, kw) =
// (pd_par + 2a, ph_par + 2b, ((q+pw)&1) + 2c) where s = ((a*2 + b)*2 + c)*(CIN/K) + s'. Rounded to
// TF32 (relayout_weight, one element per call, idx < kWeightElems) or converted to FP16 after a
// scaling by 2^k per class and output channel (relayout_weights_f16_channel).
template <int CIN, bool F16>
constexpr int kWeightElems = 4 * weight_bytes(CIN, F16) / (F16 ? 2 : 4);
// The weight that element idx of g_wsmem holds.
template <int CIN, bool F16>
__device__ __forceinline__ float weight_at(const float* __restrict__ w, int pw, int idx) {
  constexpr int C = chan_per_row(F16), K = k_per_step(F16), KS = ksteps(CIN, F16);
  const int j = idx % C, r = (idx / C) % 8, mg = (idx / (8 * C)) % 8, kc = (idx / (64 * C)) % 2;
  const int step = idx / (128 * C), s = step % KS, cq = step / KS;
  const int q = cq & 1, cls = cq >> 1;
  const int cis = s % (CIN / K), t3 = s / (CIN / K);
  const int c = t3 & 1, b = (t3 >> 1) & 1, a = t3 >> 2;
  const int co = 8 * mg + r, ci = K * cis + C * kc + j;
  const int kd = (cls >> 1) + 2 * a, kh = (cls & 1) + 2 * b, kw = ((q + pw) & 1) + 2 * c;
  return w[(((ci * 64 + co) * 4 + kd) * 4 + kh) * 4 + kw];
}
template <int CIN>
__device__ __forceinline__ void relayout_weight(const float* __restrict__ w, int pw, int idx) {
  reinterpret_cast<float*>(g_wsmem)[idx] = tf32_round(weight_at<CIN, false>(w, pw, idx));
}
// The maximum of v >= 0 over the block (256 threads), returned to every thread.
__device__ __forceinline__ float block_max256(float v) {
  __shared__ float part[8], result;
  v = __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(v)));
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = part[0];
    for (int i = 1; i < 8; ++i) m = fmaxf(m, part[i]);
    result = m;
  }
  __syncthreads();
  return result;
}
// The F16 weights of class cls and output channel co (both q, all k-steps: 16 x Cin values) by one
// block of 256 threads: scaled by 2^k, k = weight_scale_exp(their max |w|), then converted; k goes
// to exps[cls * 64 + co] for the epilogue.
template <int CIN>
__device__ __forceinline__ void relayout_weights_f16_channel(const float* __restrict__ w, int pw, int cls, int co,
                                                             int* exps) {
  constexpr int KS = ksteps(CIN, true), kPer = 2 * KS * 2 * 8, kPerThread = (kPer + 255) / 256;
  int idx[kPerThread];
  float v[kPerThread], m = 0.f;
#pragma unroll
  for (int t = 0; t < kPerThread; ++t) {
    const int i = threadIdx.x + 256 * t;  // (q, s, kc, j), j fastest
    idx[t] = -1;
    v[t] = 0.f;
    if (i < kPer) {
      const int j = i % 8, kc = (i / 8) % 2, s = (i / 16) % KS, q = i / (16 * KS);
      idx[t] = (((((cls * 2 + q) * KS + s) * 2 + kc) * 8 + (co >> 3)) * 8 + (co & 7)) * 8 + j;
      v[t] = weight_at<CIN, true>(w, pw, idx[t]);
      m = fmaxf(m, fabsf(v[t]));
    }
  }
  const int k = weight_scale_exp(block_max256(m));
  const float scale = ldexpf(1.f, k);
#pragma unroll
  for (int t = 0; t < kPerThread; ++t)
    if (idx[t] >= 0) reinterpret_cast<__half*>(g_wsmem)[idx[t]] = __float2half_rn(v[t] * scale);
  if (threadIdx.x == 0) exps[cls * 64 + co] = k;
}

__device__ __forceinline__ float ex2_approx(float v) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(v));
  return r;
}

// gelu(x), exact-erf GELU with one MUFU op: with a = min(|x|, 6), Q(a) = erfc(a/sqrt2)/2 = 2^-P(a)
// and gelu(x) = max(x, 0) - a Q(a) for either sign. P is a degree-5 polynomial fitted (weighted
// minimax, weight a Q(a) ln 2, i.e. the error it makes in gelu) to -log2 Q on [0, 6]: |gelu error|
// <= 4.4e-7 there; beyond 6, a Q(a) < 6e-9 and the clamp keeps inf finite (gelu(+inf) = +inf).
// 9 instructions (5 FFMA, MUFU.EX2, 2 FMNMX, 1 FFMA) against 14 with two MUFU ops for
// Abramowitz & Stegun 7.1.26 (kernels_history/fused_conv_v7.cu). bench/NOTES.md has the fit.
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

// ---------------------------------------------------------------- direct input
// One FP32 input row as the TMA unit stages it, stage[ci][d][iw] (W columns) with planes d = 0,
// 1, 2 = id0 - 1, id0, id0 + 1 (zeros outside x), into an FP16 ring slot, rho = iw - iw_min with
// zeros where iw is outside [0, W) (the box is the whole row from column 0; a box shifted by
// iw_min = -1 and padded to 36 columns made the TMA load fault, bench/NOTES.md v25):
// the two interleaved plane pairs the pre-pass path's TMA would have built, pair a rows
// [ci/8][rho][r][ci%8] of plane id0 - a + r. Converter ctid takes items (channel group, rho);
// lanes take consecutive rho, so each of an item's 24 reads is a conflict-free 128-byte warp read
// and the plane id0, used by both pairs, is read once. Returns max(amax, |values read|).
template <int CIN>
__device__ __forceinline__ float convert_input_row(const float* __restrict__ stage, unsigned char* slot, int ctid,
                                                   int W, int iw_min, float amax) {
  constexpr int kItems = CIN / 8 * kPlaneRows;
  constexpr uint32_t kPair = pair_bytes(CIN, true);
  for (int i = ctid; i < kItems; i += kConverters) {
    const int cig = i / kPlaneRows, rho = i - cig * kPlaneRows, iw = iw_min + rho;
    uint32_t h[3][4] = {};
    if (iw >= 0 && iw < W) {
      const float* src = stage + 8 * cig * 3 * W + iw;
#pragma unroll
      for (int d = 0; d < 3; ++d)
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float v0 = src[((2 * k) * 3 + d) * W], v1 = src[((2 * k + 1) * 3 + d) * W];
          amax = fmaxf(amax, fmaxf(fabsf(v0), fabsf(v1)));
          const __half2 p2 = __floats2half2_rn(v0, v1);
          h[d][k] = *reinterpret_cast<const uint32_t*>(&p2);
        }
    }
    uint4* dst = reinterpret_cast<uint4*>(slot + (size_t)(cig * kPlaneRows + rho) * 32);
    dst[0] = make_uint4(h[1][0], h[1][1], h[1][2], h[1][3]);  // pair 0 (id0, id0 + 1)
    dst[1] = make_uint4(h[2][0], h[2][1], h[2][2], h[2][3]);
    dst += kPair / 16;                                         // pair 1 (id0 - 1, id0)
    dst[0] = make_uint4(h[0][0], h[0][1], h[0][2], h[0][3]);
    dst[1] = make_uint4(h[1][0], h[1][1], h[1][2], h[1][3]);
  }
  return amax;
}

// ---------------------------------------------------------------- pre-pass
// The input re-layout and the weight re-layout in one launch. xt plane (n, id, ih) at index
// (n*D + id)*H + ih holds [ci/c][rho][ci%c] (c = chan_per_row) = x[n][ci][id][ih][iw] with
// iw = iw_min + rho, zero outside [0, W), rounded to TF32 or converted to FP16. A work block takes
// kRelayoutRows rows ih of one (n, id) (2048 at the flagship: 15 per SM, so the last wave is
// short); consecutive threads take consecutive rho, so each read is a coalesced run of one
// channel's row and each write a 16-byte store. The work blocks past `relayout_blocks` re-lay out
// the weights (256 elements each). Blocks stride over the work blocks, so a launch whose gate is
// closed can use a small grid.
constexpr int kRelayoutRows = 8;
inline int relayout_blocks(const Geometry& g) {
  return g.N * g.D * ((g.H + kRelayoutRows - 1) / kRelayoutRows);
}
// F16: one work block per (class, output channel); TF32: 256 elements per block.
template <int CIN, bool F16>
constexpr int kWeightBlocks = F16 ? 4 * 64 : (kWeightElems<CIN, F16> + 255) / 256;
// The F16 pre-pass records max|x| in p.range[0] (zeroed before it) for the range test and the
// weights' scale exponents; the TF32 pre-pass obeys p.range_gate.
template <int CIN, bool F16>
__global__ void __launch_bounds__(256) prepass_kernel(const Params p, const float* __restrict__ w,
                                                      int relayout_blocks) {
  // Let the main kernel launch (its input loads need nothing from here) before waiting for the
  // kernel before this one (the maximum the gate reads).
  griddep_launch_dependents();
  griddep_wait();
  if (!F16 && gate_closed(p)) return;
  constexpr int C = chan_per_row(F16);
  constexpr int kPlaneF4 = plane_rows(CIN, F16);  // 16-byte rows per plane
  const Geometry& g = p.g;
  const int hb = (g.H + kRelayoutRows - 1) / kRelayoutRows;
  const int iw_min = (g.pw >> 1) - 1;
  const int64_t chan = (int64_t)g.D * g.H * g.W;
  float amax_x = 0.f;  // F16: max |x| this thread converted
  for (int b = blockIdx.x; b < relayout_blocks + kWeightBlocks<CIN, F16>; b += gridDim.x) {
    if (b >= relayout_blocks) {  // uniform over the block
      const int wb = b - relayout_blocks;
      if constexpr (F16) {
        relayout_weights_f16_channel<CIN>(w, g.pw, wb >> 6, wb & 63,
                                          reinterpret_cast<int*>(p.range) + kWeightExpWord);
      } else {
        const int idx = wb * 256 + threadIdx.x;
        if (idx < kWeightElems<CIN, F16>) relayout_weight<CIN>(w, g.pw, idx);
      }
      continue;
    }
    const int64_t nd = b / hb;
    const int ih0 = (b % hb) * kRelayoutRows, rows = min(kRelayoutRows, g.H - ih0);
    const int n = (int)(nd / g.D), id = (int)(nd % g.D);
    const float* xs = p.x + (((int64_t)n * CIN * g.D + id) * g.H + ih0) * g.W;
    uint4* dst = reinterpret_cast<uint4*>(p.xt) + (nd * g.H + ih0) * kPlaneF4;
#pragma unroll 4
    for (int i = threadIdx.x; i < rows * kPlaneF4; i += blockDim.x) {
      const int ih = i / kPlaneF4, e = i - ih * kPlaneF4;
      const int cig = e / kPlaneRows, iw = iw_min + (e - cig * kPlaneRows);
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (iw >= 0 && iw < g.W) {
        const float* s = xs + C * cig * chan + ih * g.W + iw;
        if constexpr (F16) {
          uint32_t h[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float v0 = __ldg(s + 2 * k * chan), v1 = __ldg(s + (2 * k + 1) * chan);
            amax_x = fmaxf(amax_x, fmaxf(fabsf(v0), fabsf(v1)));
            const __half2 p2 = __floats2half2_rn(v0, v1);
            h[k] = *reinterpret_cast<const uint32_t*>(&p2);
          }
          v = make_uint4(h[0], h[1], h[2], h[3]);
        } else {
          v = make_uint4(__float_as_uint(tf32_round(__ldg(s))), __float_as_uint(tf32_round(__ldg(s + chan))),
                         __float_as_uint(tf32_round(__ldg(s + 2 * chan))),
                         __float_as_uint(tf32_round(__ldg(s + 3 * chan))));
        }
      }
      dst[i] = v;
    }
  }
  if constexpr (F16) {
    const float m = block_max256(amax_x);
    if (threadIdx.x == 0 && m > 0.f) atomicMax(p.range, __float_as_uint(m));  // float bits order as floats
  }
}

// The consumer's epilogue for one unit, from the accumulators (rows co0 = 16 w4 + g8 and co0 + 8,
// columns n = 8j + 2t + r of both parities): LayerNorm statistics by quad shuffles, then per
// output row group (8 co of one row) LN -> GELU -> scale into the warp's 2 KB scratch and back
// out as float4 along ow, so that every 16-byte store instruction writes two whole rows (8-byte
// stores straight from the fragment hit eight rows each, and took longer). The scratch's 8-byte
// slots are XOR-swizzled by row: conflict-free both ways.
// BIAS_ONLY: y = conv + bias, no LayerNorm (the plain conv_transpose3d on this kernel). The
// accumulators of output channel half h are conv / winv[h] (the FP16 weights' scale of that
// channel, a power of two; 1 for TF32): the statistics are taken from them and winv folded into
// rstd (exact).
template <bool TANH, bool kMath, bool kYStore, bool BIAS_ONLY>
__device__ __forceinline__ void unit_epilogue(const Params& p, const float (&acc0)[32], const float (&acc1)[32],
                                              const Unit& u, const float (&gam)[16], const float (&bet)[16],
                                              const float (&bias_r)[2], float* scratch, int w4, int lane,
                                              int ustat, const float (&winv)[2]) {
  const Geometry& g = p.g;
  const int g8 = lane >> 2, t = lane & 3;
  // LayerNorm statistics of the thread's four rows e = (co half, r): 16 values each here, the
  // other 48 in the three other lanes of the quad; two passes (mean, then squared deviations).
  float mu[4] = {}, rs[4] = {};
#pragma unroll
  for (int e = 0; e < 4 && !BIAS_ONLY; ++e) {
    float sm = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) sm += acc0[4 * j + e] + acc1[4 * j + e];
    sm += __shfl_xor_sync(0xffffffffu, sm, 1);
    sm += __shfl_xor_sync(0xffffffffu, sm, 2);
    const float m = sm * (1.f / 64.f);
    float d2 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float d0 = acc0[4 * j + e] - m, d1 = acc1[4 * j + e] - m;
      d2 = fmaf(d0, d0, fmaf(d1, d1, d2));
    }
    d2 += __shfl_xor_sync(0xffffffffu, d2, 1);
    d2 += __shfl_xor_sync(0xffffffffu, d2, 2);
    mu[e] = m;
    const float wi = winv[e >> 1];
    rs[e] = rsqrtf(d2 * wi * wi * (1.f / 64.f) + p.eps) * wi;  // applies to the accumulators
  }
  const bool row_b = u.od + 2 < g.Dout;  // the last od pair of an odd count has one row
  const bool scaled = p.factor != 1.f;   // one multiply per element saved for the default factor
  const int64_t plane = (int64_t)g.Dout * g.Hout;
  const int rr = lane >> 4, c4 = lane & 15;  // read-back: rows rr + 2i, 16 bytes at column 4 c4
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if ((e & 1) && !row_b) continue;
    const int co_base = 16 * w4 + 8 * (e >> 1);
    const int64_t row0 = ((int64_t)(u.n * 64 + co_base) * g.Dout + u.od + 2 * (e & 1)) * g.Hout + u.oh;
    // (mean, rstd) into the unit-ordered scratch: 8 lanes write 64 contiguous bytes. Stored
    // straight into mean / rstd ([n][co][od][oh]) they were 4-byte writes to 8 rows each, and
    // every 32-byte sector shared with the other oh parity's block: 0.19 ms of the kernel.
    if (!BIAS_ONLY && t == 0 && p.stats)
      p.stats[(int64_t)ustat * 128 + (e & 1) * 64 + co_base + g8] =
          make_float2(fmaf(mu[e], winv[e >> 1], bias_r[e >> 1]), rs[e] / winv[e >> 1]);  // bias: mean only
    const float nmrs = -mu[e] * rs[e];  // (v - mu) * rs as one FMA
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float o0 = acc0[4 * j + e], o1 = acc1[4 * j + e];
      if (BIAS_ONLY) {
        o0 = fmaf(o0, winv[e >> 1], bias_r[e >> 1]);
        o1 = fmaf(o1, winv[e >> 1], bias_r[e >> 1]);
      } else if (kMath) {
        o0 = gelu_unscaled<TANH>(fmaf(fmaf(o0, rs[e], nmrs), gam[2 * j], bet[2 * j]));
        o1 = gelu_unscaled<TANH>(fmaf(fmaf(o1, rs[e], nmrs), gam[2 * j + 1], bet[2 * j + 1]));
        if (scaled) {
          o0 *= p.factor;
          o1 *= p.factor;
        }
      }
      // ow = 8j + 2t (+1): 8-byte slot 4j + t of row g8, swizzled
      const int slot = (4 * j + t) ^ (4 * (g8 & 3));
      *reinterpret_cast<float2*>(scratch + g8 * 64 + 2 * slot) = make_float2(o0, o1);
    }
    __syncwarp();
    float4 v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = rr + 2 * i;
      const int slot = (2 * c4) ^ (4 * (r & 3));
      v[i] = *reinterpret_cast<const float4*>(scratch + r * 64 + 2 * slot);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (kYStore) __stcs(reinterpret_cast<float4*>(p.y + (row0 + (rr + 2 * i) * plane) * 64 + 4 * c4), v[i]);
  }
}

// ---------------------------------------------------------------- TF32 tensor-core kernel
// Warpgroup 0, warp 0, lane 0: loads the class's weights once, then for every unit of the block
// in order its new input rows (TMA, two boxes of interleaved plane pairs per row and kd tap).
// Warpgroups 1-3: consumer c takes units k with k % 3 == c: waits for its two ring slots, issues
// 64 wgmmas (32 k-steps per parity q into acc0 / acc1), waits for them, releases the slots, then
// LayerNorm / GELU / scale / stores from the accumulators.
// Ring slots: unit k has a pair counter P_k (P of its b = 0 row ih0; b = 1, ih0 - 1, is P_k - 1),
// P advances by 1 when the unit continues the previous one (same n, od pair, oh + 2) and by 2
// otherwise; every P is loaded once, into slot P % kSlots. A slot is used by two units (as b = 0,
// then b = 1) or by one (then it arrives twice), so its empty barrier counts 4 warps x 2.
// MODE (profiling only, bench/standalone): 0 = the kernel; 1 = no wgmma; 2 = no LayerNorm/GELU
// math (accumulators stored as they are); 3 = no input loads; 4 = wgmma only (no epilogue);
// 5 = epilogue only (no loads, no wgmma); 6 = input loads only; 9 = no y stores.
// DIRECT (FP16 only): no input pre-pass. The TMA unit loads each input row straight from x (FP32,
// one box of Cin x 3 planes x W) into a staging ring; producer warps 1-3 convert it into the
// ring slot (convert_input_row) and fold max|x| into p.range[0] at the end. Only the weights come
// from a pre-pass (weights only), and only they wait for it: the input loads start at once.
// BIAS_ONLY: the epilogue writes conv + bias (no LayerNorm, GELU or scale; no statistics).
template <int CIN, bool TANH, int MODE = 0, bool F16 = false, bool DIRECT = false, bool BIAS_ONLY = false>
__global__ void __launch_bounds__(kThreads, 1)
    fused_conv_tc_kernel(const Params p, const __grid_constant__ CUtensorMap xmap) {
  static_assert(!DIRECT || F16, "direct input is converted to FP16");
  constexpr bool kMma = MODE != 1 && MODE != 5 && MODE != 6;
  constexpr bool kLoad = MODE != 3 && MODE != 4 && MODE != 5;
  constexpr bool kEpi = MODE != 4 && MODE != 6;
  constexpr bool kMath = MODE != 2;
  constexpr bool kYStore = MODE != 9;
  constexpr uint32_t kPair = pair_bytes(CIN, F16), kSlot = slot_bytes(CIN, F16), kW = weight_bytes(CIN, F16);
  constexpr uint32_t kBox = (uint32_t)box_rows(CIN, F16) * 32;  // one TMA box: rows x 2 planes x 16 bytes
  constexpr int KS = ksteps(CIN, F16);                          // wgmma steps per parity (K = 8 Cin)
  constexpr int KC = CIN / k_per_step(F16);                     // steps per tap (a, b, c)
  constexpr uint32_t kLbo = kPlaneRows * 32;               // B: the next row of channels
  // Shared memory: weights | input ring | store scratch (2 KB per consumer warp) | DIRECT: staging
  // ring | mbarriers (full[kSlots], empty[kSlots], weights) | issued counter | DIRECT: mbarriers
  // stage_full[kStages], stage_empty[kStages].
  constexpr uint32_t kStage = stage_bytes(CIN);
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t w_s = smem_u32(smem_raw);
  const uint32_t ring_s = w_s + kW;
  const uint32_t stage_s = ring_s + kSlots * kSlot + kConsumers * 4 * 2048;
  const uint32_t full_bar = stage_s + (DIRECT ? kStages * kStage : 0);
  const uint32_t empty_bar = full_bar + 8 * kSlots;
  const uint32_t w_bar = empty_bar + 8 * kSlots;
  const uint32_t stage_full = w_bar + 16, stage_empty = stage_full + 8 * kStages;
  // The last pair counter P whose load the producer has issued. A consumer skips the units of
  // the others, so it could reach the full barrier of slot P % kSlots while the slot's previous
  // load (P - kSlots) is still under way; a parity wait would then pass on that earlier phase. It
  // waits for this counter first: once P is issued, phase P / kSlots is the slot's current one.
  // Shared-memory atomics on both sides (a plain flag would be a data race, and racecheck says so).
  int* const issued = reinterpret_cast<int*>(smem_raw + (w_bar + 8 - w_s));
  const Geometry& g = p.g;
  // DIRECT: the threads that read what the kernel before wrote (the weights) wait for it below.
  if (!DIRECT) griddep_wait();
  griddep_launch_dependents();
  if (!DIRECT && gate_closed(p)) return;  // DIRECT always runs (launch_tc)

  // The block's class and its contiguous range of that class's units.
  const int blk = blockIdx.x;
  const int cls = (blk >= g.block0[1]) + (blk >= g.block0[2]) + (blk >= g.block0[3]);
  const int nblk = g.block0[cls + 1] - g.block0[cls], lblk = blk - g.block0[cls];
  const int u0 = (int)((int64_t)g.units[cls] * lblk / nblk);
  const int u1 = (int)((int64_t)g.units[cls] * (lblk + 1) / nblk);
  if (u0 >= u1) return;
  const int n_units = u1 - u0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = tid >> 7;
  if (tid < kSlots) {
    mbar_init(full_bar + 8 * tid, DIRECT ? kConverters : 1);
    mbar_init(empty_bar + 8 * tid, 8);
  }
  if (tid == kSlots) {
    mbar_init(w_bar, 1);
    atomicExch(issued, -1);
  }
  if (DIRECT && tid >= 32 && tid < 32 + kStages) {
    mbar_init(stage_full + 8 * (tid - 32), 1);
    mbar_init(stage_empty + 8 * (tid - 32), kConverters);
  }
  mbar_init_fence();
  __syncthreads();

  if (DIRECT && wg == 0) {
    // ======================================================== producer, direct input
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegsDirect));
    if (warp == 0) {
      // Lane 0 issues the TMA loads of x into the staging ring, and the weights' load once the
      // first kStages rows are under way (it waits for the weight pre-pass first).
      if (lane != 0) return;
      bool weights_issued = false;
      auto issue_weights = [&] {
        weights_issued = true;
        griddep_wait();
        if (!kMma) {
          mbar_arrive(w_bar);
          return;
        }
        mbar_arrive_expect(w_bar, kW);
        const char* src = reinterpret_cast<const char*>(g_wsmem) + (size_t)cls * kW;
        for (int i = 0; i < 4; ++i) bulk_load(w_s + i * (kW / 4), src + i * (kW / 4), kW / 4, w_bar);
      };
      const uint32_t box_bytes = (uint32_t)g.W * 3 * CIN * 4;
      for_each_input_row(g, cls, u0, n_units, [&](const Unit& u, int ih, int P) {
        if (P == kStages) issue_weights();
        const int st = P % kStages;
        if (P >= kStages) mbar_wait(stage_empty + 8 * st, (uint32_t)((P / kStages - 1) & 1));
        if (!kLoad) {
          mbar_arrive(stage_full + 8 * st);
          return;
        }
        mbar_arrive_expect(stage_full + 8 * st, box_bytes);
        tma_load_5d(&xmap, stage_s + st * kStage, stage_full + 8 * st, 0, ih, ((u.od + g.pd) >> 1) - 1, 0, u.n);
      });
      if (!weights_issued) issue_weights();
      return;
    }
    // Warps 1-3 convert each staged row into its ring slot once the slot is free.
    const int ctid = tid - 32, iw_min = (g.pw >> 1) - 1;
    float amax = 0.f;
    for_each_input_row(g, cls, u0, n_units, [&](const Unit&, int, int P) {
      const int st = P % kStages, s = P % kSlots;
      if (P >= kSlots) mbar_wait(empty_bar + 8 * s, (uint32_t)((P / kSlots - 1) & 1));
      if (ctid == 0) atomicExch(issued, P);  // the slot's previous phase is complete
      mbar_wait(stage_full + 8 * st, (uint32_t)((P / kStages) & 1));
      amax = convert_input_row<CIN>(reinterpret_cast<const float*>(smem_raw + (stage_s - w_s) + st * kStage),
                                    smem_raw + (ring_s - w_s) + s * kSlot, ctid, g.W, iw_min, amax);
      // The slot is read by wgmma (the async proxy) and the stage rewritten by TMA: order this
      // thread's generic accesses before both.
      ptx::fence_proxy_async_smem();
      mbar_arrive(full_bar + 8 * s);
      mbar_arrive(stage_empty + 8 * st);
    });
    // max|x| for the range test (unguarded calls leave the word uncleared and never read it).
    if (p.range) {
      const unsigned m = __reduce_max_sync(0xffffffffu, __float_as_uint(amax));
      if (lane == 0 && m != 0u) atomicMax(p.range, m);
    }
    return;
  }
  if (wg == 0) {
    // ======================================================== producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    if (warp != 0 || lane != 0) return;
    if (kMma) {
      mbar_arrive_expect(w_bar, kW);
      const char* src = reinterpret_cast<const char*>(g_wsmem) + (size_t)cls * kW;
      for (int i = 0; i < 4; ++i) bulk_load(w_s + i * (kW / 4), src + i * (kW / 4), kW / 4, w_bar);
    } else {
      mbar_arrive(w_bar);
    }
    // Input row ih of unit u (taps a = 0, 1: planes (id0 - a, id0 - a + 1)) into slot P % kSlots.
    auto load_row = [&](const Unit& u, int ih, int P) {
      const int s = P % kSlots;
      if (P >= kSlots) mbar_wait(empty_bar + 8 * s, (uint32_t)((P / kSlots - 1) & 1));
      const uint32_t bar = full_bar + 8 * s;
      if (!kLoad) {
        mbar_arrive(bar);
        atomicExch(issued, P);
        return;
      }
      mbar_arrive_expect(bar, kSlot);
      const int id0 = (u.od + g.pd) >> 1;
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int h = 0; h < box_count(CIN, F16); ++h)
          tma_load_5d(&xmap, ring_s + s * kSlot + a * kPair + h * kBox, bar, 0, id0 - a, h * box_rows(CIN, F16),
                      ih, u.n);
      atomicExch(issued, P);
    };
    for_each_input_row(g, cls, u0, n_units, load_row);
    return;
  }

  // ======================================================== consumers
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  if (DIRECT) griddep_wait();  // as every thread of the other paths
  // The consumer index through a shuffle from lane 0: the compiler then knows it is warp-uniform
  // and keeps the descriptor arithmetic in uniform registers.
  const int cons = __shfl_sync(0xffffffffu, wg, 0) - 1;
  const int g8 = lane >> 2, t = lane & 3;
  const int co0 = 16 * (warp & 3) + g8;  // accumulator rows co0 and co0 + 8
  // Columns of this thread: n = 8j + 2t + r, i.e. u = 4j + t of rows A (r = 0) and B (r = 1);
  // with both parities, ow = 8j + 2t + q.
  float gam[16], bet[16];
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int ow = 8 * j + 2 * t + q;
      gam[2 * j + q] = p.gamma ? p.gamma[ow] : 1.f;
      bet[2 * j + q] = p.beta ? p.beta[ow] : 0.f;
    }
  const float bias_r[2] = {p.bias ? p.bias[co0] : 0.f, p.bias ? p.bias[co0 + 8] : 0.f};
  float* const scratch = reinterpret_cast<float*>(smem_raw + kW + kSlots * kSlot) + (warp - 4) * 512;
  // Descriptors: A = weights (LBO 1024: the next 4 channels; SBO 128: the next 8 co), B = ring
  // (LBO: the next 4 channels; SBO 128: the next 8 interleaved rows). Start addresses in 16 bytes.
  const uint32_t a_w0 = (uint32_t)smem_desc(w_s, 1024, 128, p.variant);
  const uint32_t a_w1 = (uint32_t)(smem_desc(w_s, 1024, 128, p.variant) >> 32);
  const uint32_t b_w0 = (uint32_t)smem_desc(ring_s, kLbo, 128, p.variant);
  const uint32_t b_w1 = (uint32_t)(smem_desc(ring_s, kLbo, 128, p.variant) >> 32);
  // Plane row of u = 0 for tap c = 0, per parity; in the interleaved slot a row pair is 32 bytes.
  const int rho0 = ((0 + g.pw) >> 1) - (g.pw >> 1) + 1, rho1 = ((1 + g.pw) >> 1) - (g.pw >> 1) + 1;

  mbar_wait(w_bar, 0);
  // F16: the weights of channels co0 and co0 + 8 were scaled by 2^k (weight_scale_exp); the
  // epilogue scales their rows back.
  float winv[2] = {1.f, 1.f};
  if (F16) {
    const int* exps = reinterpret_cast<const int*>(p.range) + kWeightExpWord + cls * 64;
    winv[0] = ldexpf(1.f, -exps[co0]);
    winv[1] = ldexpf(1.f, -exps[co0 + 8]);
  }
  Unit u = decode_unit(g, cls, u0);
  int P = 1;
  for (int k = 0; k < n_units; ++k) {
    bool cont = false;
    if (k > 0) {
      cont = advance_unit(g, cls, u);
      P += cont ? 1 : 2;
    }
    if (k % kConsumers != cons) continue;
    bool next_cont = false;
    if (k + 1 < n_units) {
      Unit nx = u;
      next_cont = advance_unit(g, cls, nx);
    }
    const int s0 = P % kSlots, s1 = (P - 1) % kSlots;  // rows ih0 (b = 0) and ih0 - 1 (b = 1)
    while (atomicAdd(issued, 0) < P) {
    }
    mbar_wait(full_bar + 8 * s0, (uint32_t)((P / kSlots) & 1));
    mbar_wait(full_bar + 8 * s1, (uint32_t)(((P - 1) / kSlots) & 1));
    float acc0[32], acc1[32];
    if (kMma) {
      const uint32_t lo_b0 = b_w0 + (uint32_t)(s0 * (kSlot >> 4)), lo_b1 = b_w0 + (uint32_t)(s1 * (kSlot >> 4));
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        reg_fence(acc0[i]);
        reg_fence(acc1[i]);
      }
      wgmma_fence();
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int rho = q ? rho1 : rho0;
#pragma unroll
        for (int s = 0; s < KS; ++s) {
          // step s = ((a*2 + b)*2 + c)*KC + cis: channels K cis .. K cis + K - 1 of tap (a, b, c),
          // two 16-byte rows of channels (LBO apart) per step.
          const int cis = s % KC, t3 = s / KC, c = t3 & 1, b = (t3 >> 1) & 1, a = t3 >> 2;
          const uint32_t off = (a * kPair + cis * 2 * kLbo) / 16;
          const uint32_t lo_b = (b ? lo_b1 : lo_b0) + off + 2 * (rho - c);
          const uint64_t db = ((uint64_t)b_w1 << 32) | lo_b;
          const uint64_t da = ((uint64_t)a_w1 << 32) | (a_w0 + (uint32_t)((q * KS + s) * 128));
          if (q == 0) {
            if (s == 0)
              wgmma_step<F16, 0>(acc0, da, db);
            else
              wgmma_step<F16, 1>(acc0, da, db);
          } else {
            if (s == 0)
              wgmma_step<F16, 0>(acc1, da, db);
            else
              wgmma_step<F16, 1>(acc1, da, db);
          }
        }
      }
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        reg_fence(acc0[i]);
        reg_fence(acc1[i]);
      }
    } else {  // profiling: stand-in values that the compiler cannot fold
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        acc0[i] = (float)(lane + i) * 0.01f + (float)k;
        acc1[i] = (float)(lane - i) * 0.01f + (float)k;
      }
    }
    // The wgmmas are complete: hand the two ring slots back (twice where no other unit uses one).
    __syncwarp();
    if (lane == 0) {
      mbar_arrive(empty_bar + 8 * s0);
      if (!next_cont) mbar_arrive(empty_bar + 8 * s0);
      mbar_arrive(empty_bar + 8 * s1);
      if (!cont) mbar_arrive(empty_bar + 8 * s1);
    }
    if (kEpi) {
      unit_epilogue<TANH, kMath, kYStore, BIAS_ONLY>(p, acc0, acc1, u, gam, bet, bias_r, scratch, warp & 3, lane,
                                                     g.unit0[cls] + u0 + k, winv);
    } else {  // profiling (wgmma only): keep the accumulators alive, or ptxas drops the wgmmas
      float sm = 0.f;
#pragma unroll
      for (int i = 0; i < 32; ++i) sm += acc0[i] + acc1[i];
      if (sm == 1234.5f) p.y[0] = sm;
    }
  }
}

// (mean, rstd) from the unit-ordered scratch into mean / rstd [n][co][od][oh]: for one (n, od)
// the scratch holds [oh][co] (a unit per oh, the two oh parities in different classes) and the
// outputs want [co][oh], so each 32 x 8 block transposes a 32 oh x 32 co tile through shared
// memory: 256-byte reads and 128-byte writes. Blocks: (n, od, 32-oh tile, co half).
__global__ void __launch_bounds__(256) scatter_row_stats_kernel(const Params p) {
  __shared__ float2 tile[32][33];
  const Geometry& g = p.g;
  const int tx = threadIdx.x, ty = threadIdx.y;
  int64_t b = blockIdx.x;
  const int co0 = 32 * (int)(b & 1);
  b >>= 1;
  const int oh_tiles = (g.Hout + 31) / 32;
  const int oh0 = 32 * (int)(b % oh_tiles);
  b /= oh_tiles;
  const int od = (int)(b % g.Dout), n = (int)(b / g.Dout);
  const int pdp = (od + g.pd) & 1;
  const int odi = (od - (pdp ? g.od01 : g.od00)) >> 1;
  const int cdp = ((pdp ? g.cntD1 : g.cntD0) + 1) >> 1;
  for (int y = ty; y < 32; y += 8) {
    const int oh = oh0 + y;
    if (oh >= g.Hout) break;
    const int php = (oh + g.ph) & 1, cls = pdp * 2 + php;
    const int ohi = (oh - (php ? g.oh01 : g.oh00)) >> 1, ch = php ? g.cntH1 : g.cntH0;
    const int64_t unit = g.unit0[cls] + ((int64_t)n * cdp + (odi >> 1)) * ch + ohi;
    tile[y][tx] = p.stats[unit * 128 + (odi & 1) * 64 + co0 + tx];
  }
  __syncthreads();
  const int oh = oh0 + tx;
  if (oh >= g.Hout) return;
  for (int y = ty; y < 32; y += 8) {
    const int64_t row = (((int64_t)n * 64 + co0 + y) * g.Dout + od) * g.Hout + oh;
    const float2 v = tile[tx][y];
    if (p.mean) p.mean[row] = v.x;
    if (p.rstd) p.rstd[row] = v.y;
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
    if (og == 0 && p.mean) p.mean[row] = mu;
    if (og == 0 && p.rstd) p.rstd[row] = rs;
  }
}

// ---------------------------------------------------------------- host side
inline int device_sm_count() {
  int dev = 0, n = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
  return n > 0 ? n : 1;
}

// Scratch bytes the tensor-core path needs: kRangeBytes for the range word and the FP16 weights'
// scale exponents, the re-laid-out input (N*D*H planes, sized for TF32; F16 uses half), then,
// when mean or rstd is wanted (`stats`), the row statistics in unit order, 1 KB per unit.
// Units: N x (od pairs of both d classes, at most D + 3 in all, since D_out <= 2D + 3) x H_out
// (<= 2H + 3).
constexpr size_t kRangeBytes = 1536;  // range word, then 4 x 64 weight scale exponents
inline size_t stats_offset(int64_t N, int64_t Cin, int64_t D, int64_t H) {
  return ((size_t)(N * D * H) * plane_bytes((int)Cin) + 255) / 256 * 256;
}
inline size_t workspace_bytes(int64_t N, int64_t Cin, int64_t D, int64_t H, bool stats = true) {
  return kRangeBytes + stats_offset(N, Cin, D, H) +
         (stats ? (size_t)N * (D + 3) * (2 * H + 3) * 128 * sizeof(float2) : 0);
}
// Points p's range words and re-laid-out input into `workspace` (workspace_bytes(), 256-aligned).
inline void attach_workspace(Params& p, void* workspace) {
  p.range = static_cast<unsigned*>(workspace);
  p.xt = reinterpret_cast<float*>(static_cast<char*>(workspace) + kRangeBytes);
}

// The driver's tensor-map encoder, reached through the runtime (no link against libcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
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
  return encode;
}

// The TMA descriptor of the re-laid-out input: p.xt as the 5-D tensor (ci%4, id, row, ih, n) with
// row = (ci/4)*34 + rho, and a box of (4, 2, box_rows, 1, 1). The box lands in shared memory as
// [row][id, id + 1][ci%4]: the two planes interleaved row by row. Out-of-range id / ih read zeros.
template <int CIN, bool F16>
CUtensorMap make_x_tensor_map(const Params& p) {
  const Geometry& g = p.g;
  constexpr cuuint32_t C = chan_per_row(F16);
  const cuuint64_t pb = plane_bytes(CIN, F16);
  const cuuint64_t dims[5] = {C, (cuuint64_t)g.D, (cuuint64_t)plane_rows(CIN, F16), (cuuint64_t)g.H,
                              (cuuint64_t)g.N};
  const cuuint64_t strides[4] = {pb * g.H, 16, pb, pb * g.H * g.D};
  const cuuint32_t box[5] = {C, 2, (cuuint32_t)box_rows(CIN, F16), 1, 1};
  const cuuint32_t estrides[5] = {1, 1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = tensor_map_encoder()(&map, F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
                                          5, p.xt, dims, strides, box,
                                          estrides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                                          CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error(
        "fused_conv_transpose3d_ln_gelu_scale: cuTensorMapEncodeTiled failed for the re-laid-out input (error " +
        std::to_string((int)r) + ")");
  return map;
}

// Units per class and the blocks given to each (at most `sms` in all, so that every block is
// resident at once): proportional to the class's units, at least one for a non-empty class.
inline void plan_blocks(Geometry& g, int sms) {
  int64_t total = 0;
  for (int c = 0; c < 4; ++c) {
    const int cd = (c >> 1) ? g.cntD1 : g.cntD0, ch = (c & 1) ? g.cntH1 : g.cntH0;
    g.units[c] = g.N * ((cd + 1) / 2) * ch;
    total += g.units[c];
  }
  int nb[4] = {0, 0, 0, 0}, sum = 0;
  for (int c = 0; c < 4; ++c) {
    if (g.units[c] == 0) continue;
    nb[c] = (int)std::max<int64_t>(1, (int64_t)sms * g.units[c] / std::max<int64_t>(total, 1));
    nb[c] = std::min(nb[c], g.units[c]);
    sum += nb[c];
  }
  while (sum > sms) {  // only when sms < 4 non-empty classes' minimum; take from the largest
    int c = 0;
    for (int i = 1; i < 4; ++i)
      if (nb[i] > nb[c]) c = i;
    if (nb[c] <= 1) break;
    --nb[c];
    --sum;
  }
  while (sum < sms) {  // the spare blocks to the classes with the most units per block
    int best = -1;
    for (int c = 0; c < 4; ++c)
      if (nb[c] > 0 && nb[c] < g.units[c] &&
          (best < 0 || (int64_t)g.units[c] * nb[best] > (int64_t)g.units[best] * nb[c]))
        best = c;
    if (best < 0) break;
    ++nb[best];
    ++sum;
  }
  g.block0[0] = 0;
  for (int c = 0; c < 4; ++c) g.block0[c + 1] = g.block0[c] + nb[c];
  g.unit0[0] = 0;
  for (int c = 1; c < 4; ++c) g.unit0[c] = g.unit0[c - 1] + g.units[c - 1];
}

template <int CIN, bool F16, bool DIRECT = false>
constexpr size_t tc_smem_bytes() {
  return (size_t)weight_bytes(CIN, F16) + (size_t)kSlots * slot_bytes(CIN, F16) + kConsumers * 4 * 2048 +
         (DIRECT ? (size_t)kStages * stage_bytes(CIN) : 0) + 8 * (2 * kSlots + 2) + 16 * kStages;
}

// The direct path's TMA descriptor: x itself as the 5-D tensor (w, h, d, ci, n), FP32, with a box
// of (W, 1, 3, Cin, 1): the whole input row ih of planes id0 - 1 .. id0 + 1, landing as [ci][d][w].
// Needs x 16-byte aligned and W a multiple of 4 (TMA strides are whole 16-byte units), and W at
// most kStageW: direct_input_possible.
inline bool direct_input_possible(const Params& p) {
  return p.g.W % 4 == 0 && p.g.W <= kStageW && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
}
template <int CIN>
CUtensorMap make_x_direct_map(const Params& p) {
  const Geometry& g = p.g;
  const cuuint64_t row = (cuuint64_t)g.W * 4, plane = row * g.H, chan = plane * g.D;
  const cuuint64_t dims[5] = {(cuuint64_t)g.W, (cuuint64_t)g.H, (cuuint64_t)g.D, (cuuint64_t)CIN, (cuuint64_t)g.N};
  const cuuint64_t strides[4] = {row, plane, chan, chan * CIN};
  const cuuint32_t box[5] = {(cuuint32_t)g.W, 1, 3, (cuuint32_t)CIN, 1};
  const cuuint32_t estrides[5] = {1, 1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 5, const_cast<float*>(p.x), dims,
                                          strides, box, estrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                          CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error(
        "fused_conv_transpose3d_ln_gelu_scale: cuTensorMapEncodeTiled failed for the input x (error " +
        std::to_string((int)r) + ")");
  return map;
}

// The pre-pass (input and weight re-layout) and the main kernel of one operand format.
// The carveout is pinned at the maximum shared memory for every kernel of the path (the main
// kernel needs it), so the SMs are not reconfigured between launches.
template <class Kernel>
void pin_max_smem_carveout(Kernel k) {
  cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared);
}
// Launches kernel<<<grid, block, smem, stream>>>(args...); `pdl`: as a programmatic dependent of
// the kernel before it in the stream (the kernel must begin with griddep_wait). Throws on error.
template <class... Params_, class... Args>
void launch_kernel(bool pdl, void (*kernel)(Params_...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("fused_conv_transpose3d_ln_gelu_scale: kernel launch failed: ") +
                             cudaGetErrorString(e));
}
// `gated`: the launch may find its gate closed (the TF32 fallback); a small grid then costs less.
// `weights_only`: the direct path's pre-pass (no input re-layout).
template <int CIN, bool F16>
void launch_prepass(const Params& p, const float* w, cudaStream_t stream, bool gated = false, bool pdl = false,
                    bool weights_only = false) {
  static const bool configured = (pin_max_smem_carveout(prepass_kernel<CIN, F16>), true);
  (void)configured;
  const int rb = weights_only ? 0 : relayout_blocks(p.g), total = rb + kWeightBlocks<CIN, F16>;
  const int grid = gated ? std::min(total, 4 * device_sm_count()) : total;
  launch_kernel(pdl, prepass_kernel<CIN, F16>, dim3((unsigned)grid), dim3(256), 0, stream, p, w, rb);
}
template <int CIN, bool TANH, int MODE, bool F16, bool DIRECT = false, bool BIAS_ONLY = false>
void launch_main(const Params& p, cudaStream_t stream, bool pdl = false) {
  constexpr size_t smem = tc_smem_bytes<CIN, F16, DIRECT>();
  static_assert(smem <= 227 * 1024, "shared memory over the sm_90 limit");
  auto* const kernel = fused_conv_tc_kernel<CIN, TANH, MODE, F16, DIRECT, BIAS_ONLY>;
  static const bool configured = [kernel] {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    pin_max_smem_carveout(kernel);
    return true;
  }();
  (void)configured;
  const CUtensorMap xmap = DIRECT ? make_x_direct_map<CIN>(p) : make_x_tensor_map<CIN, F16>(p);
  launch_kernel(pdl, kernel, dim3((unsigned)p.g.block0[4]), dim3(kThreads), smem, stream, p, xmap);
}

// The tensor-core path: pre-pass, main kernel and, when mean or rstd is wanted, the statistics
// kernel. p.range and p.xt must point into a workspace of workspace_bytes() (attach_workspace).
// F16 with `guarded`: the F16 kernels record max|x|, the F16 result stands if it is within
// [kF16RangeMin, kF16RangeMax], and a TF32 pre-pass and kernel run otherwise (launched
// always, they return at once when not needed). F16 unguarded: F16 regardless (tests).
// F16 with `direct_input` (and direct_input_possible): the main kernel reads x itself and the
// pre-pass re-lays out the weights only; the range then is known only after the F16 kernel, which
// always runs (out of range, both formats' kernels run). Otherwise the F16 pre-pass re-lays out x
// and the F16 kernel returns at once when the range is wrong.
// BIAS_ONLY: the plain convolution (conv + bias) on the same kernels; p.mean / p.rstd must be null.
template <int CIN, bool TANH, int MODE = 0, bool F16 = false, bool BIAS_ONLY = false>
void launch_tc(const Params& p_in, const float* w, cudaStream_t stream, bool guarded = true,
               bool direct_input = true) {
  static_assert(!F16 || CIN % 16 == 0, "FP16 operands need Cin a multiple of 16");
  Params p = p_in;
  Geometry& g = p.g;
  const bool stats = !BIAS_ONLY && (p.mean || p.rstd);
  p.stats = stats ? reinterpret_cast<float2*>(reinterpret_cast<char*>(p.xt) + stats_offset(g.N, CIN, g.D, g.H))
                  : nullptr;
  const bool gate = F16 && guarded;
  const bool direct = F16 && direct_input && direct_input_possible(p);
  p.range_gate = gate && !direct ? kIfF16Range : kAlways;
  if (gate) {  // max|x| for the range test (unguarded, the maxima land in a word nobody reads)
    const cudaError_t e = cudaMemsetAsync(p.range, 0, sizeof(unsigned), stream);
    if (e != cudaSuccess)
      throw std::runtime_error(std::string("fused_conv_transpose3d_ln_gelu_scale: clearing the range word: ") +
                               cudaGetErrorString(e));
  }
  // The pre-pass first (it needs no block plan), so that the host's remaining work (block plan,
  // tensor maps, launches) overlaps it instead of leaving the GPU idle. Each launch after it is a
  // programmatic dependent of the one before: its launch and prologue overlap the predecessor's
  // last wave (the gated launches cost little more than that).
  launch_prepass<CIN, F16>(p, w, stream, /*gated=*/false, /*pdl=*/false, /*weights_only=*/direct);
  plan_blocks(g, device_sm_count());
  if constexpr (F16) {
    if (direct)
      launch_main<CIN, TANH, MODE, true, true, BIAS_ONLY>(p, stream, /*pdl=*/true);
    else
      launch_main<CIN, TANH, MODE, true, false, BIAS_ONLY>(p, stream, /*pdl=*/true);
  } else {
    launch_main<CIN, TANH, MODE, false, false, BIAS_ONLY>(p, stream, /*pdl=*/true);
  }
  if (gate) {  // the TF32 fallback, run only when the operands are outside the F16 range
    p.range_gate = kIfNotF16Range;
    launch_prepass<CIN, false>(p, w, stream, /*gated=*/true, /*pdl=*/true);
    launch_main<CIN, TANH, MODE, false, false, BIAS_ONLY>(p, stream, /*pdl=*/true);
  }
  if (!stats) return;
  const int64_t scatter_blocks = (int64_t)g.N * g.Dout * ((g.Hout + 31) / 32) * 2;
  scatter_row_stats_kernel<<<(unsigned)scatter_blocks, dim3(32, 8), 0, stream>>>(p);
}

// Operand format (FusedConvOperands, ops/fused_conv_support.h): kAuto takes FP16 where Cin
// allows it (a multiple of 16) and the operands' range does (TF32 otherwise, decided on the
// device); the others force one, with no range test.
inline bool use_f16(int cin, FusedConvOperands ops) {
  return fused_conv_f16_supported(cin) && ops != FusedConvOperands::kTf32;
}

template <bool TANH, bool BIAS_ONLY = false>
void launch_tc_cin(const Params& p, const float* w, cudaStream_t stream, FusedConvOperands ops, bool direct_input) {
  const bool f16 = use_f16(p.g.Cin, ops), guarded = ops == FusedConvOperands::kAuto;
  switch (p.g.Cin) {
    case 8: launch_tc<8, TANH, 0, false, BIAS_ONLY>(p, w, stream); break;
    case 16:
      if (f16)
        launch_tc<16, TANH, 0, true, BIAS_ONLY>(p, w, stream, guarded, direct_input);
      else
        launch_tc<16, TANH, 0, false, BIAS_ONLY>(p, w, stream);
      break;
    case 24: launch_tc<24, TANH, 0, false, BIAS_ONLY>(p, w, stream); break;
    default:
      if (f16)
        launch_tc<32, TANH, 0, true, BIAS_ONLY>(p, w, stream, guarded, direct_input);
      else
        launch_tc<32, TANH, 0, false, BIAS_ONLY>(p, w, stream);
      break;
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
// standalone check's layout probe only. `workspace` (workspace_bytes(..., mean || rstd), 16-byte
// aligned) is used by the TF32 kernel only; the precise kernel ignores it. mean and rstd may be
// null: that output is then not computed.
inline void launch(const float* x, const float* w, const float* conv_bias, const float* gamma, const float* beta,
                   float* y, float* mean, float* rstd, int64_t N, int64_t Cin, int64_t D, int64_t H, int64_t W,
                   int64_t Cout, int pad_d, int pad_h, int pad_w, int out_pad_d, int out_pad_h, int out_pad_w,
                   float eps, bool tanh_gelu, float factor, bool precise, void* workspace,
                   cudaStream_t stream, int variant = kDefaultVariant,
                   FusedConvOperands ops = FusedConvOperands::kAuto, bool direct_input = true) {
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
                                std::to_string(workspace_bytes(N, Cin, D, H, mean || rstd)) + " bytes");
  attach_workspace(p, workspace);
  if (tanh_gelu)
    launch_tc_cin<true>(p, w, stream, ops, direct_input);
  else
    launch_tc_cin<false>(p, w, stream, ops, direct_input);
}

// The plain convolution y = conv_transpose3d(x, w) + bias on the tensor-core path (FP16 operands
// with the range test and the TF32 fallback, as kAuto): for the configurations
// fused_conv_unsupported_reason accepts with normalized size W_out = 64. `workspace`:
// workspace_bytes(N, Cin, D, H, false).
inline void launch_conv_only(const float* x, const float* w, const float* conv_bias, float* y, int64_t N,
                             int64_t Cin, int64_t D, int64_t H, int64_t W, int pad_d, int pad_h, int pad_w,
                             int out_pad_d, int out_pad_h, int out_pad_w, void* workspace, cudaStream_t stream,
                             bool direct_input = true) {
  Params p = make_params(x, conv_bias, nullptr, nullptr, y, nullptr, nullptr, N, Cin, D, H, W, 64, pad_d, pad_h,
                         pad_w, out_pad_d, out_pad_h, out_pad_w, 0.f, 1.f, kDefaultVariant);
  if (p.g.total == 0) return;
  if (workspace == nullptr)
    throw std::invalid_argument("conv_transpose3d (tensor-core path): needs a workspace of " +
                                std::to_string(workspace_bytes(N, Cin, D, H, false)) + " bytes");
  attach_workspace(p, workspace);
  launch_tc_cin<false, true>(p, w, stream, FusedConvOperands::kAuto, direct_input);
}

}  // namespace fused_conv_detail
}  // namespace minidl
