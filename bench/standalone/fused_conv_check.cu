// Standalone check and benchmark of the fused ConvTranspose3d -> LayerNorm -> GELU -> scale
// kernel (ops/fused_conv_transpose3d_ln_gelu_scale_kernel.cuh), independent of the minidl build:
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -I. \
//        bench/standalone/fused_conv_check.cu -o fc
//   ./fc            probe + correctness at small, odd and mid shapes + flagship + batch 128 + timing
//   ./fc --small    one small case per mode (for compute-sanitizer)
//   ./fc --prof     one flagship launch and nothing else (for ncu); --prof-epilogue: the same
//                   with only the epilogue warps' work (profiling mode 5)
//   ./fc --loop S   flagship launches (no statistics) back to back for S seconds, for power and
//                   clock sampling (bench/standalone/power_probe.sh); --loop-epilogue S: mode 5
//   a trailing --tf32 or --f16 forces the tensor-core operand format (default: the op's choice)
// Reference: a direct transposed convolution written from the definition
// (od = id*2 - pad + kd, every tap tested) in float64 and in float32 on the GPU, followed by a
// row-wise LayerNorm/GELU/scale in the same precision. Outputs are NaN-poisoned before each run,
// inputs are fresh random data (x uniform [0,1), weights uniform +-1/sqrt(fan_in)).
#define FUSED_CONV_STANDALONE
#include "ops/fused_conv_transpose3d_ln_gelu_scale.cu"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define CK(expr)                                                                                     \
  do {                                                                                               \
    cudaError_t e_ = (expr);                                                                         \
    if (e_ != cudaSuccess) {                                                                         \
      fprintf(stderr, "CUDA error %s (%s) at %s:%d: %s\n", cudaGetErrorName(e_), cudaGetErrorString(e_), \
              __FILE__, __LINE__, #expr);                                                            \
      exit(1);                                                                                       \
    }                                                                                                \
  } while (0)

namespace {

// ------------------------------------------------------------------ inputs
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__global__ void fill_uniform(float* p, int64_t n, float lo, float hi, uint64_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const double u = (double)(mix64(seed * 0x100000001B3ull + (uint64_t)i) >> 11) * (1.0 / 9007199254740992.0);
    p[i] = (float)(lo + (hi - lo) * u);
  }
}
__global__ void fill_nan(float* p, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = __int_as_float(0x7fc00000);
}

// ------------------------------------------------------------------ reference
struct RefDims {
  int N, Cin, D, H, W, Cout, Dout, Hout, Wout, pd, ph, pw;
};

template <class T>
__global__ void ref_conv(const float* x, const float* w, const float* bias, T* z, RefDims d) {
  const int64_t total = (int64_t)d.N * d.Cout * d.Dout * d.Hout * d.Wout;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = idx;
    const int ow = r % d.Wout; r /= d.Wout;
    const int oh = r % d.Hout; r /= d.Hout;
    const int od = r % d.Dout; r /= d.Dout;
    const int co = r % d.Cout;
    const int n = (int)(r / d.Cout);
    T acc = bias ? (T)bias[co] : (T)0;
    for (int kd = 0; kd < 4; ++kd) {
      const int td = od + d.pd - kd;  // = id * 2
      if (td < 0 || (td & 1)) continue;
      const int id = td / 2;
      if (id >= d.D) continue;
      for (int kh = 0; kh < 4; ++kh) {
        const int th = oh + d.ph - kh;
        if (th < 0 || (th & 1)) continue;
        const int ih = th / 2;
        if (ih >= d.H) continue;
        for (int kw = 0; kw < 4; ++kw) {
          const int tw = ow + d.pw - kw;
          if (tw < 0 || (tw & 1)) continue;
          const int iw = tw / 2;
          if (iw >= d.W) continue;
          for (int ci = 0; ci < d.Cin; ++ci) {
            const T xv = x[((((int64_t)n * d.Cin + ci) * d.D + id) * d.H + ih) * d.W + iw];
            const T wv = w[(((ci * d.Cout + co) * 4 + kd) * 4 + kh) * 4 + kw];
            acc += xv * wv;
          }
        }
      }
    }
    z[idx] = acc;
  }
}

__device__ inline double gelu_ref(double v, bool tanh_mode) {
  if (tanh_mode) return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
  return 0.5 * v * (1.0 + erf(v * 0.7071067811865476));
}
__device__ inline float gelu_ref(float v, bool tanh_mode) {
  if (tanh_mode) return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  return 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
}

// In place: z row -> y row; one thread per row of Wout values.
template <class T>
__global__ void ref_epilogue(T* z, T* mean, T* rstd, const float* gamma, const float* beta, int64_t rows, int wout,
                             float eps, bool tanh_mode, float factor) {
  for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
    T* v = z + r * wout;
    T s = 0;
    for (int i = 0; i < wout; ++i) s += v[i];
    const T mu = s / (T)wout;
    T ss = 0;
    for (int i = 0; i < wout; ++i) ss += (v[i] - mu) * (v[i] - mu);
    const T rs = (T)1 / sqrt(ss / (T)wout + (T)eps);
    for (int i = 0; i < wout; ++i) v[i] = gelu_ref((v[i] - mu) * rs * (T)gamma[i] + (T)beta[i], tanh_mode) * (T)factor;
    mean[r] = mu;
    rstd[r] = rs;
  }
}

// sum (out-ref)^2, sum ref^2, max |out-ref|, count of non-finite outputs.
struct CmpAcc {
  double se, sr, maxd;
  unsigned long long bad;
};
template <class T>
__global__ void compare_kernel(const float* out, const T* ref, int64_t n, CmpAcc* acc) {
  double se = 0, sr = 0, mx = 0;
  unsigned long long bad = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const double o = out[i], r = (double)ref[i];
    if (!isfinite(o)) { ++bad; continue; }
    const double d = o - r;
    se += d * d;
    sr += r * r;
    mx = fmax(mx, fabs(d));
  }
  for (int o = 16; o; o >>= 1) {
    se += __shfl_xor_sync(~0u, se, o);
    sr += __shfl_xor_sync(~0u, sr, o);
    mx = fmax(mx, __shfl_xor_sync(~0u, mx, o));
    bad += __shfl_xor_sync(~0u, bad, o);
  }
  if ((threadIdx.x & 31) == 0) {
    atomicAdd(&acc->se, se);
    atomicAdd(&acc->sr, sr);
    atomicMax(reinterpret_cast<unsigned long long*>(&acc->maxd), (unsigned long long)__double_as_longlong(mx));
    atomicAdd(&acc->bad, bad);
  }
}

struct Cmp {
  double rel, maxd;
  unsigned long long bad;
};
template <class T>
Cmp compare(const float* out, const T* ref, int64_t n) {
  CmpAcc* d;
  CK(cudaMalloc(&d, sizeof(CmpAcc)));
  CK(cudaMemset(d, 0, sizeof(CmpAcc)));
  compare_kernel<T><<<1024, 256>>>(out, ref, n, d);
  CK(cudaGetLastError());
  CmpAcc h;
  CK(cudaMemcpy(&h, d, sizeof(CmpAcc), cudaMemcpyDeviceToHost));
  CK(cudaFree(d));
  return {std::sqrt(h.se / std::max(h.sr, 1e-300)), h.maxd, h.bad};
}

// ------------------------------------------------------------------ one configuration
struct Case {
  const char* name;
  int N, Cin, D, H, W, pd, ph, pw, opd, oph, opw;
  bool bias, tanh_mode;
  float factor;
};

struct Buffers {
  float *x = nullptr, *w = nullptr, *b = nullptr, *gam = nullptr, *bet = nullptr;
  float *y = nullptr, *mean = nullptr, *rstd = nullptr;
  int64_t nx = 0, ny = 0, rows = 0;
  RefDims d{};
};

uint64_t g_seed = 0;

Buffers make_buffers(const Case& c) {
  Buffers B;
  RefDims& d = B.d;
  d = {c.N, c.Cin, c.D, c.H, c.W, 64, (c.D - 1) * 2 - 2 * c.pd + 4 + c.opd, (c.H - 1) * 2 - 2 * c.ph + 4 + c.oph,
       (c.W - 1) * 2 - 2 * c.pw + 4 + c.opw, c.pd, c.ph, c.pw};
  B.nx = (int64_t)c.N * c.Cin * c.D * c.H * c.W;
  B.rows = (int64_t)c.N * 64 * d.Dout * d.Hout;
  B.ny = B.rows * d.Wout;
  CK(cudaMalloc(&B.x, B.nx * 4));
  CK(cudaMalloc(&B.w, (size_t)c.Cin * 64 * 64 * 4));
  CK(cudaMalloc(&B.b, 64 * 4));
  CK(cudaMalloc(&B.gam, 64 * 4));
  CK(cudaMalloc(&B.bet, 64 * 4));
  CK(cudaMalloc(&B.y, B.ny * 4));
  CK(cudaMalloc(&B.mean, B.rows * 4));
  CK(cudaMalloc(&B.rstd, B.rows * 4));
  const float bound = 1.0f / std::sqrt(64.0f * 64.0f);  // PyTorch: fan_in = weight.size(1) * k^3
  ++g_seed;
  fill_uniform<<<2048, 256>>>(B.x, B.nx, 0.f, 1.f, g_seed * 7 + 1);
  fill_uniform<<<256, 256>>>(B.w, (int64_t)c.Cin * 64 * 64, -bound, bound, g_seed * 7 + 2);
  fill_uniform<<<1, 64>>>(B.b, 64, -bound, bound, g_seed * 7 + 3);
  fill_uniform<<<1, 64>>>(B.gam, 64, 0.5f, 1.5f, g_seed * 7 + 4);
  fill_uniform<<<1, 64>>>(B.bet, 64, -0.5f, 0.5f, g_seed * 7 + 5);
  CK(cudaGetLastError());
  return B;
}
void free_buffers(Buffers& B) {
  for (float* p : {B.x, B.w, B.b, B.gam, B.bet, B.y, B.mean, B.rstd}) CK(cudaFree(p));
}

// Workspace of the TF32 kernel (re-laid-out input), grown as needed.
void* g_ws = nullptr;
size_t g_ws_bytes = 0;
void* workspace_for(const Case& c) {
  const size_t need = minidl::fused_conv_detail::workspace_bytes(c.N, c.Cin, c.D, c.H);
  if (need > g_ws_bytes) {
    CK(cudaDeviceSynchronize());
    if (g_ws) CK(cudaFree(g_ws));
    CK(cudaMalloc(&g_ws, need));
    g_ws_bytes = need;
  }
  return g_ws;
}

// stats = false: mean and rstd not wanted (null), as when nothing reads them.
// Operand format of the tensor-core path (--tf32 / --f16 force one; default: what the op picks).
minidl::FusedConvOperands g_operands = minidl::FusedConvOperands::kAuto;
// FP16 input path: false (--prepass) re-lays out x in a pre-pass instead of reading it directly.
bool g_direct_input = true;
void run_kernel(const Case& c, const Buffers& B, bool precise, int variant, bool stats = true) {
  void* ws = workspace_for(c);
  minidl::fused_conv_detail::launch(B.x, B.w, c.bias ? B.b : nullptr, B.gam, B.bet, B.y, stats ? B.mean : nullptr,
                                    stats ? B.rstd : nullptr, c.N, c.Cin,
                                    c.D, c.H, c.W, 64, c.pd, c.ph, c.pw, c.opd, c.oph, c.opw, 1e-5f, c.tanh_mode,
                                    c.factor, precise, ws, 0, variant, g_operands, g_direct_input);
  CK(cudaGetLastError());
}

// The workspace into Params: the header's attach_workspace (range words, then the re-laid-out
// input and the statistics' scratch) where it has one; `xt` alone before the range words; or
// `workspace` in the v11 attempt snapshot, which has no re-laid-out copy.
template <int N>
struct Rank : Rank<N - 1> {};
template <>
struct Rank<0> {};
template <class P>
auto attach_workspace(P& p, void* ws, Rank<2>) -> decltype(p.range = nullptr, void()) {
  minidl::fused_conv_detail::attach_workspace(p, ws);
}
template <class P>
auto attach_workspace(P& p, void* ws, Rank<1>) -> decltype(p.xt = static_cast<float*>(ws), void()) {
  p.xt = static_cast<float*>(ws);
}
template <class P>
void attach_workspace(P& p, void* ws, Rank<0>) {
  p.workspace = ws;
}

// Parameters of the tensor-core kernel for a case, its workspace attached (for launching launch_tc
// directly: profiling modes and build options).
minidl::fused_conv_detail::Params tc_params(const Case& c, const Buffers& B, int variant) {
  namespace fc = minidl::fused_conv_detail;
  fc::Params p = fc::make_params(B.x, c.bias ? B.b : nullptr, B.gam, B.bet, B.y, B.mean, B.rstd, c.N, c.Cin, c.D,
                                 c.H, c.W, 64, c.pd, c.ph, c.pw, c.opd, c.oph, c.opw, 1e-5f, c.factor, variant);
  attach_workspace(p, workspace_for(c), Rank<2>{});
  return p;
}

struct Result {
  Cmp y64, y32, mean64, rstd64;
};

template <class T>
struct Ref {
  T *y = nullptr, *mean = nullptr, *rstd = nullptr;
};
template <class T>
Ref<T> make_ref(const Case& c, const Buffers& B) {
  Ref<T> R;
  CK(cudaMalloc(&R.y, B.ny * sizeof(T)));
  CK(cudaMalloc(&R.mean, B.rows * sizeof(T)));
  CK(cudaMalloc(&R.rstd, B.rows * sizeof(T)));
  ref_conv<T><<<4096, 256>>>(B.x, B.w, c.bias ? B.b : nullptr, R.y, B.d);
  CK(cudaGetLastError());
  ref_epilogue<T><<<1024, 128>>>(R.y, R.mean, R.rstd, B.gam, B.bet, B.rows, B.d.Wout, 1e-5f, c.tanh_mode, c.factor);
  CK(cudaGetLastError());
  return R;
}
template <class T>
void free_ref(Ref<T>& R) {
  CK(cudaFree(R.y));
  CK(cudaFree(R.mean));
  CK(cudaFree(R.rstd));
}

Result check(const Case& c, const Buffers& B, const Ref<double>& r64, const Ref<float>& r32, bool precise,
             int variant) {
  fill_nan<<<2048, 256>>>(B.y, B.ny);
  fill_nan<<<256, 256>>>(B.mean, B.rows);
  fill_nan<<<256, 256>>>(B.rstd, B.rows);
  CK(cudaGetLastError());
  run_kernel(c, B, precise, variant);
  CK(cudaDeviceSynchronize());
  Result res;
  res.y64 = compare(B.y, r64.y, B.ny);
  res.y32 = compare(B.y, r32.y, B.ny);
  res.mean64 = compare(B.mean, r64.mean, B.rows);
  res.rstd64 = compare(B.rstd, r64.rstd, B.rows);
  return res;
}

int g_failures = 0;

void report(const char* what, const Case& c, bool precise, const Result& r) {
  const double tol_rel = precise ? 1e-5 : 2e-3;
  const double tol_abs = precise ? 1e-4 : 1e-2;
  const bool ok = r.y64.bad == 0 && r.mean64.bad == 0 && r.rstd64.bad == 0 && r.y64.rel <= tol_rel &&
                  r.y32.maxd <= tol_abs && r.mean64.rel <= tol_rel && r.rstd64.rel <= tol_rel;
  if (!ok) ++g_failures;
  printf("%-6s %-22s %-7s %-4s y rel=%.3e max|y-y32|=%.3e mean rel=%.3e rstd rel=%.3e nonfinite=%llu/%llu/%llu  %s\n",
         what, c.name, precise ? "precise" : "tf32", c.tanh_mode ? "tanh" : "erf", r.y64.rel, r.y32.maxd,
         r.mean64.rel, r.rstd64.rel, r.y64.bad, r.mean64.bad, r.rstd64.bad, ok ? "PASS" : "FAIL");
  fflush(stdout);
}

struct Timing {
  float med, mn, mx;
};
template <class F>
Timing time_it(F f, int warm = 3, int reps = 20) {
  for (int i = 0; i < warm; ++i) f();
  CK(cudaDeviceSynchronize());
  std::vector<float> ts;
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  CK(cudaGetLastError());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ts.begin(), ts.end());
  return {ts[ts.size() / 2], ts.front(), ts.back()};
}

// The TF32 kernel's GELU (one MUFU op, fitted polynomial) against the exact erf GELU in double,
// on 2^22 points over [-16, 16) plus +-inf and +-0 (gelu(-inf) is a few 1e-9 below zero). The
// fit's own error is 4.4e-7 on [-6, 6] and float evaluation adds ~6e-8 (5.0e-7 at x = 0.79);
// checked: 6e-7 plus half an ulp of x (the result's own rounding) there, half an ulp beyond.
__global__ void gelu_grid_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = -16.f + 32.f * (float)i / (float)n;
  out[i] = minidl::fused_conv_detail::gelu_erf_fast(x);
}
__global__ void gelu_special_kernel(float* out) {
  const float v[4] = {INFINITY, -INFINITY, 0.f, -0.f};
  for (int i = 0; i < 4; ++i) out[i] = minidl::fused_conv_detail::gelu_erf_fast(v[i]);
}
void check_gelu() {
  const int n = 1 << 22;
  float* d;
  CK(cudaMalloc(&d, (size_t)n * sizeof(float)));
  gelu_grid_kernel<<<n / 256, 256>>>(d, n);
  CK(cudaGetLastError());
  std::vector<float> h(n);
  CK(cudaMemcpy(h.data(), d, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
  double worst = 0, worst_x = 0;
  bool ok = true;
  for (int i = 0; i < n; ++i) {
    const float xf = -16.f + 32.f * (float)i / (float)n;
    const double x = xf, ref = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    const double err = std::fabs((double)h[i] - ref);
    const double half_ulp = 0.5 * std::fabs(std::nextafter(xf, INFINITY) - xf);  // rounding of a result ~ x
    const double bound = (std::fabs(x) <= 6.0 ? 6e-7 : 1e-8) + half_ulp;
    if (!(err <= bound)) ok = false;
    if (err > worst) worst = err, worst_x = x;
  }
  gelu_special_kernel<<<1, 1>>>(d);
  CK(cudaGetLastError());
  float s[4];
  CK(cudaMemcpy(s, d, sizeof(s), cudaMemcpyDeviceToHost));
  const bool special = std::isinf(s[0]) && s[0] > 0 && std::fabs(s[1]) < 1e-8f && s[2] == 0.f && s[3] == 0.f;
  printf("gelu (TF32 kernel's): max |err| %.3e at x = %.5f on [-16, 16); gelu(+inf, -inf, 0, -0) = %g %g %g %g  %s\n",
         worst, worst_x, s[0], s[1], s[2], s[3], ok && special ? "PASS" : "FAIL");
  if (!(ok && special)) ++g_failures;
  CK(cudaFree(d));
}

int probe_variants() {
  // Which descriptor convention the hardware uses (documented: 0). Bit 1 swaps LBO and SBO; bit
  // 0 reorders register A fragments and has no effect on kernels whose operands are all in
  // shared memory, so ties keep the lower variant.
  const Case c = {"probe N1 D3 H5", 1, 32, 3, 5, 32, 1, 1, 1, 0, 0, 0, true, false, 1.0f};
  Buffers B = make_buffers(c);
  Ref<double> r64 = make_ref<double>(c, B);
  Ref<float> r32 = make_ref<float>(c, B);
  int best = -1;
  double best_err = 1e30;
  for (int v = 0; v < 4; ++v) {
    Result r = check(c, B, r64, r32, false, v);
    printf("probe variant %d: y rel=%.3e nonfinite=%llu\n", v, r.y64.rel, r.y64.bad);
    if (r.y64.bad == 0 && r.y64.rel < 0.99 * best_err) {  // ties (bits without effect) keep the lower
      best_err = r.y64.rel;
      best = v;
    }
  }
  free_ref(r64);
  free_ref(r32);
  free_buffers(B);
  printf("probe: best variant %d (rel %.3e); compiled-in default %d %s\n", best, best_err,
         minidl::fused_conv_detail::kDefaultVariant,
         best == minidl::fused_conv_detail::kDefaultVariant ? "OK" : "MISMATCH");
  return best < 0 ? 0 : best;
}

void correctness_case(const Case& c, int variant, bool with_precise = true) {
  Buffers B = make_buffers(c);
  Ref<double> r64 = make_ref<double>(c, B);
  Ref<float> r32 = make_ref<float>(c, B);
  report("check", c, false, check(c, B, r64, r32, false, variant));
  if (with_precise) report("check", c, true, check(c, B, r64, r32, true, variant));
  free_ref(r64);
  free_ref(r32);
  free_buffers(B);
}

struct Row {
  std::string what;
  Timing t;
  double gflop, gbytes;
};
std::vector<Row> g_rows;

void bench_case(const Case& c, int variant, bool precise_too) {
  Buffers B = make_buffers(c);
  {
    Ref<double> r64 = make_ref<double>(c, B);
    Ref<float> r32 = make_ref<float>(c, B);
    report("check", c, false, check(c, B, r64, r32, false, variant));
    if (precise_too) report("check", c, true, check(c, B, r64, r32, true, variant));
    free_ref(r64);
    free_ref(r32);
  }
  const double gflop = 2.0 * B.ny * c.Cin * 8 / 1e9;
  const double gbytes = (B.ny * 4.0 + B.nx * 4.0 + 2.0 * B.rows * 4) / 1e9;
  Timing t = time_it([&] { run_kernel(c, B, false, variant); });
  g_rows.push_back({std::string(c.name) + " tf32", t, gflop, gbytes});
  Timing tn = time_it([&] { run_kernel(c, B, false, variant, false); });
  g_rows.push_back({std::string(c.name) + " tf32 no stats", tn, gflop, gbytes - 2.0 * B.rows * 4 / 1e9});
  if (precise_too) {
    Timing tp = time_it([&] { run_kernel(c, B, true, variant); }, 1, 5);
    g_rows.push_back({std::string(c.name) + " precise", tp, gflop, gbytes});
  }
  free_buffers(B);
}

// Write-bandwidth reference: every output row (n, co, od, oh) written with 16-byte streaming stores
// by the fused kernel's blocks (g after plan_blocks), each walking its units in the kernel's order
// (row pairs (od, od + 2) of one class, oh fastest: 128 rows of 256 bytes, 512 KB apart, per
// unit), with nothing else to do.
__global__ void store_pattern_kernel(minidl::fused_conv_detail::Geometry g, float* y) {
  namespace fc = minidl::fused_conv_detail;
  const int blk = blockIdx.x;
  const int cls = (blk >= g.block0[1]) + (blk >= g.block0[2]) + (blk >= g.block0[3]);
  const int nblk = g.block0[cls + 1] - g.block0[cls], lblk = blk - g.block0[cls];
  const int u0 = (int)((int64_t)g.units[cls] * lblk / nblk);
  const int u1 = (int)((int64_t)g.units[cls] * (lblk + 1) / nblk);
  if (u0 >= u1) return;
  fc::Unit u = fc::decode_unit(g, cls, u0);
  const int64_t plane = (int64_t)g.Dout * g.Hout;
  for (int k = u0; k < u1; ++k) {
    for (int r = 0; r < 2 && u.od + 2 * r < g.Dout; ++r) {
      const int64_t row0 = ((int64_t)u.n * 64 * g.Dout + u.od + 2 * r) * g.Hout + u.oh;
      for (int e = threadIdx.x; e < 64 * 16; e += blockDim.x) {
        const int co = e >> 4, c4 = e & 15;
        __stcs(reinterpret_cast<float4*>(y + (row0 + co * plane) * 64) + c4, make_float4(1.f, 2.f, 3.f, 4.f));
      }
    }
    fc::advance_unit(g, cls, u);
  }
}

// The tensor-core path at C_in 32 (erf GELU) in profiling mode MODE, in the operand format
// g_operands selects.
template <int MODE>
void launch_tc32(const minidl::fused_conv_detail::Params& p, const float* w) {
  namespace fc = minidl::fused_conv_detail;
  if (fc::use_f16(32, g_operands))
    fc::launch_tc<32, false, MODE, true>(p, w, 0, g_operands == minidl::FusedConvOperands::kAuto, g_direct_input);
  else
    fc::launch_tc<32, false, MODE>(p, w, 0);
}

// Where the time goes: the flagship with one part of the kernel switched off at a time.
template <int MODE>
void time_mode(const Case& c, const Buffers& B, const float* w, int variant, const char* what) {
  namespace fc = minidl::fused_conv_detail;
  const fc::Params p = tc_params(c, B, variant);
  Timing t = time_it([&] {
    launch_tc32<MODE>(p, w);
    CK(cudaGetLastError());
  });
  const double gflop = 2.0 * B.ny * c.Cin * 8 / 1e9;
  const double gbytes = (B.ny * 4.0 + B.nx * 4.0 + 2.0 * B.rows * 4) / 1e9;
  g_rows.push_back({std::string("  part: ") + what, t, gflop, gbytes});
}
void profile_parts(const Case& c, int variant) {
  namespace fc = minidl::fused_conv_detail;
  Buffers B = make_buffers(c);
  time_mode<0>(c, B, B.w, variant, "full kernel");
  time_mode<1>(c, B, B.w, variant, "no wgmma");
  time_mode<2>(c, B, B.w, variant, "no LN/GELU math");
  time_mode<3>(c, B, B.w, variant, "no input loads");
  time_mode<4>(c, B, B.w, variant, "wgmma only");
  time_mode<5>(c, B, B.w, variant, "epilogue only");
  time_mode<6>(c, B, B.w, variant, "input loads only");
  time_mode<9>(c, B, B.w, variant, "full, no y stores");
  {
    fc::Params p = tc_params(c, B, variant);
    fc::plan_blocks(p.g, fc::device_sm_count());
    Timing t = time_it([&] {
      store_pattern_kernel<<<p.g.block0[4], 512>>>(p.g, B.y);
      CK(cudaGetLastError());
    });
    g_rows.push_back({"  ref: y stores alone (same order)", t, 0.0, B.ny * 4.0 / 1e9});
    Timing t2 = time_it([&] { CK(cudaMemsetAsync(B.y, 0, B.ny * 4)); });
    g_rows.push_back({"  ref: cudaMemset of y", t2, 0.0, B.ny * 4.0 / 1e9});
  }
  free_buffers(B);
}

}  // namespace

int main(int argc, char** argv) {
  // Trailing flags: --tf32 or --f16 force the tensor-core path's operand format; --prepass makes
  // the FP16 path re-lay out x in a pre-pass instead of reading it directly.
  for (; argc > 1; --argc) {
    if (std::strcmp(argv[argc - 1], "--tf32") == 0)
      g_operands = minidl::FusedConvOperands::kTf32;
    else if (std::strcmp(argv[argc - 1], "--f16") == 0)
      g_operands = minidl::FusedConvOperands::kF16;
    else if (std::strcmp(argv[argc - 1], "--prepass") == 0)
      g_direct_input = false;
    else
      break;
  }
  const bool small = argc > 1 && std::strcmp(argv[1], "--small") == 0;
  const bool notime = argc > 1 && std::strcmp(argv[1], "--check") == 0;
  g_seed = (uint64_t)std::chrono::high_resolution_clock::now().time_since_epoch().count();
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s, %d SMs, L2 %d MB, seed %llu\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
         (unsigned long long)g_seed);

  if (argc > 2 && std::strncmp(argv[1], "--loop", 6) == 0) {  // sustained launches, for power sampling
    const bool epi = std::strcmp(argv[1], "--loop-epilogue") == 0;
    const double secs = std::atof(argv[2]);
    const Case c = {"flagship N32", 32, 32, 16, 32, 32, 1, 1, 1, 0, 0, 0, true, false, 1.0f};
    Buffers B = make_buffers(c);
    namespace fc = minidl::fused_conv_detail;
    fc::Params p = tc_params(c, B, fc::kDefaultVariant);
    p.mean = p.rstd = nullptr;
    const bool f16 = fc::use_f16(32, g_operands);
    auto launch = [&] {
      if (epi)
        launch_tc32<5>(p, B.w);
      else
        launch_tc32<0>(p, B.w);
    };
    const auto t0 = std::chrono::steady_clock::now();
    int iters = 0;
    double el = 0;
    while (el < secs) {
      for (int i = 0; i < 20; ++i) launch();
      CK(cudaDeviceSynchronize());
      iters += 20;
      el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    printf("loop%s (%s operands): %d launches, %.4f ms each\n", epi ? " epilogue only" : "", f16 ? "f16" : "tf32",
           iters, el * 1e3 / iters);
    free_buffers(B);
    return 0;
  }
  if (argc > 1 && std::strncmp(argv[1], "--prof", 6) == 0) {  // one flagship launch, for a profiler
    const Case c = {"flagship N32", 32, 32, 16, 32, 32, 1, 1, 1, 0, 0, 0, true, false, 1.0f};
    Buffers B = make_buffers(c);
    if (std::strcmp(argv[1], "--prof-epilogue") == 0) {  // MODE 5: the epilogue warps' work only
      minidl::fused_conv_detail::launch_tc<32, false, 5>(
          tc_params(c, B, minidl::fused_conv_detail::kDefaultVariant), B.w, 0);
    } else {
      run_kernel(c, B, false, minidl::fused_conv_detail::kDefaultVariant);
    }
    CK(cudaDeviceSynchronize());
    free_buffers(B);
    return 0;
  }
  if (small) {
    // W = 33 (pad_w = 2) and W = 32; 3-4 rows per block, so the staging tiles, output tiles
    // and slab slots are reused
    const Case c2 = {"small N2 D6 H8 W33", 2, 32, 6, 8, 33, 1, 1, 2, 0, 0, 0, true, false, 0.7f};
    correctness_case(c2, minidl::fused_conv_detail::kDefaultVariant);
    const Case c = {"small N2 D6 H9", 2, 32, 6, 9, 32, 1, 1, 1, 0, 0, 0, true, false, 0.7f};
    correctness_case(c, minidl::fused_conv_detail::kDefaultVariant);
    printf("%s\n", g_failures ? "SOME CHECKS FAILED" : "ALL CHECKS PASSED");
    return g_failures ? 1 : 0;
  }

  check_gelu();
  const int variant = probe_variants();

  const Case cases[] = {
      {"N1 D3 H5 p1", 1, 32, 3, 5, 32, 1, 1, 1, 0, 0, 0, true, false, 0.7f},
      {"N1 D3 H5 p1 tanh", 1, 32, 3, 5, 32, 1, 1, 1, 0, 0, 0, true, true, 1.3f},
      {"N2 D4 H6 W33 p0,3,2", 2, 32, 4, 6, 33, 0, 3, 2, 1, 1, 0, false, false, 1.0f},
      {"N1 D5 H3 W32 p2,1,1 op", 1, 32, 5, 3, 32, 2, 1, 1, 1, 0, 0, true, false, 2.0f},
      {"N3 Cin16 D3 H7", 3, 16, 3, 7, 32, 1, 1, 1, 0, 1, 0, true, false, 1.0f},
      {"N2 Cin8 D2 H4", 2, 8, 2, 4, 32, 1, 1, 1, 0, 0, 0, true, true, 1.0f},
      {"N2 Cin24 D3 H3 W34 p3", 2, 24, 3, 3, 34, 1, 1, 3, 0, 0, 0, true, false, 1.0f},
      {"N3 D6 H9 p0,3,1 op1,1", 3, 32, 6, 9, 32, 0, 3, 1, 1, 1, 0, true, false, 1.0f},
      {"N40 D6 H1 Hout1", 40, 32, 6, 1, 32, 1, 2, 1, 0, 1, 0, true, false, 1.0f},
      {"mid N4 D8 H16", 4, 32, 8, 16, 32, 1, 1, 1, 0, 0, 0, true, false, 1.0f},
  };
  for (const Case& c : cases) correctness_case(c, variant);

  // Ceiling for context: device-to-device copy of 1 GiB (bytes read + written).
  {
    float *a, *b;
    const size_t n = size_t(1) << 30;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    Timing t = time_it([&] { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice)); });
    printf("copy 1 GiB d2d: median %.3f ms -> %.0f GB/s (read+write)\n", t.med, 2.0 * n / 1e9 / (t.med * 1e-3));
    CK(cudaFree(a));
    CK(cudaFree(b));
  }

  const Case flagship = {"flagship N32", 32, 32, 16, 32, 32, 1, 1, 1, 0, 0, 0, true, false, 1.0f};
  bench_case(flagship, variant, !notime);
  profile_parts(flagship, variant);
  if (!notime) {
    const Case flag_tanh = {"flagship N32 tanh", 32, 32, 16, 32, 32, 1, 1, 1, 0, 0, 0, true, true, 1.0f};
    bench_case(flag_tanh, variant, false);
    const Case b128 = {"batch N128", 128, 32, 16, 32, 32, 1, 1, 1, 0, 0, 0, true, false, 1.0f};
    bench_case(b128, variant, false);
  }

  printf("\n%-26s %9s %9s %9s %9s %9s\n", "config", "median_ms", "min_ms", "max_ms", "TFLOP/s", "GB/s");
  for (const Row& r : g_rows)
    printf("%-26s %9.4f %9.4f %9.4f %9.1f %9.0f\n", r.what.c_str(), r.t.med, r.t.mn, r.t.mx,
           r.gflop / 1e3 / (r.t.med * 1e-3), r.gbytes / (r.t.med * 1e-3));
  printf("%s (%d failures)\n", g_failures ? "SOME CHECKS FAILED" : "ALL CHECKS PASSED", g_failures);
  return g_failures ? 1 : 0;
}
