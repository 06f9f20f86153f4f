// Checks the CUDA conv_transpose3d kernels (forward, grad_input, grad_weight) against a direct
// float64 evaluation of the definition on the host, over a sweep of shapes (tile-aligned and
// not; the stride-2 / kernel-4 fast paths and the general path), one process, no test
// framework. Prints one line per case. Then, at the flagship size, checks sampled outputs of
// each op against float64, checks that repeated calls are bit-identical, and times each op
// (CUDA events, 3 warm-ups, median of 20), the fast paths and the general path
// (MINIDL_CONV_GENERAL=1) in the same run. `conv_check --no-bench` skips the flagship part.
// Build: bench/standalone/build.sh OUTDIR; run OUTDIR/conv_check.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "graph/graph.h"
#include "ops/registry.h"

using namespace minidl;

namespace {

struct Cfg {
  int N, Cin, Cout, D, H, W, k, s, p;
};

std::vector<float> host(const Tensor& t) {
  Tensor c = t.cpu();
  return std::vector<float>(c.data<float>(), c.data<float>() + c.numel());
}

double rel(const std::vector<float>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - r[i]) * (a[i] - r[i]);
    den += r[i] * r[i];
  }
  return std::sqrt(num / den);
}

int run(const Cfg& c) {
  const int OD = (c.D - 1) * c.s - 2 * c.p + c.k, OH = (c.H - 1) * c.s - 2 * c.p + c.k, OW = (c.W - 1) * c.s - 2 * c.p + c.k;
  const Shape xs{c.N, c.Cin, c.D, c.H, c.W}, ws{c.Cin, c.Cout, c.k, c.k, c.k}, ys{c.N, c.Cout, OD, OH, OW};
  Tensor x = Tensor::uniform(xs, 0, 1, 1), w = Tensor::uniform(ws, -1, 1, 2), dy = Tensor::uniform(ys, -1, 1, 3);
  std::vector<float> X(x.data<float>(), x.data<float>() + x.numel()), Wt(w.data<float>(), w.data<float>() + w.numel()),
      DY(dy.data<float>(), dy.data<float>() + dy.numel());
  std::vector<double> y(size_t(shape_numel(ys)), 0), dx(X.size(), 0), dw(Wt.size(), 0);
  auto xi = [&](int n, int ci, int d, int h, int ww) { return ((size_t(n) * c.Cin + ci) * c.D + d) * c.H * c.W + size_t(h) * c.W + ww; };
  auto wi = [&](int ci, int co, int a, int b, int e) { return ((size_t(ci) * c.Cout + co) * c.k + a) * c.k * c.k + size_t(b) * c.k + e; };
  auto yi = [&](int n, int co, int d, int h, int ww) { return ((size_t(n) * c.Cout + co) * OD + d) * size_t(OH) * OW + size_t(h) * OW + ww; };
  for (int n = 0; n < c.N; ++n)
    for (int ci = 0; ci < c.Cin; ++ci)
      for (int d = 0; d < c.D; ++d)
        for (int h = 0; h < c.H; ++h)
          for (int ww = 0; ww < c.W; ++ww)
            for (int co = 0; co < c.Cout; ++co)
              for (int a = 0; a < c.k; ++a)
                for (int b = 0; b < c.k; ++b)
                  for (int e = 0; e < c.k; ++e) {
                    const int od = d * c.s - c.p + a, oh = h * c.s - c.p + b, ow = ww * c.s - c.p + e;
                    if (od < 0 || oh < 0 || ow < 0 || od >= OD || oh >= OH || ow >= OW) continue;
                    const size_t xo = xi(n, ci, d, h, ww), wo = wi(ci, co, a, b, e), yo = yi(n, co, od, oh, ow);
                    y[yo] += double(X[xo]) * Wt[wo];
                    dx[xo] += double(DY[yo]) * Wt[wo];
                    dw[wo] += double(DY[yo]) * X[xo];
                  }
  Graph g;
  Value* xv = g.add_input("x", xs);
  Value* wv = g.add_input("w", ws);
  Value* dyv = g.add_input("dy", ys);
  const auto S = AttrValue::IntList({c.s, c.s, c.s}), P = AttrValue::IntList({c.p, c.p, c.p});
  Node* f = g.add_node("conv_transpose3d", {xv, wv}, Attrs{{"stride", S}, {"padding", P}});
  Node* gi = g.add_node("conv_transpose3d_grad_input", {dyv, wv}, Attrs{{"stride", S}, {"padding", P}, {"input_shape", AttrValue::IntList(xs)}});
  Node* gw = g.add_node("conv_transpose3d_grad_weight", {xv, dyv},
                        Attrs{{"stride", S}, {"padding", P}, {"kernel_size", AttrValue::IntList({c.k, c.k, c.k})}});
  Tensor xd = x.to(Device::cuda()), wd = w.to(Device::cuda()), dyd = dy.to(Device::cuda());
  auto nan = [](const Shape& s) { return Tensor::full(s, NAN, DType::F32, Device::cuda()); };
  KernelContext c1{*f, {xd, wd}, {nan(ys)}}, c2{*gi, {dyd, wd}, {nan(xs)}}, c3{*gw, {xd, dyd}, {nan(ws)}};
  op_schema("conv_transpose3d").cuda_kernel(c1);
  op_schema("conv_transpose3d_grad_input").cuda_kernel(c2);
  op_schema("conv_transpose3d_grad_weight").cuda_kernel(c3);
  cuda::synchronize();
  const double e1 = rel(host(c1.out(0)), y), e2 = rel(host(c2.out(0)), dx), e3 = rel(host(c3.out(0)), dw);
  const bool ok = e1 < 2e-3 && e2 < 2e-3 && e3 < 2e-3;
  std::printf("N%d Cin%d Cout%d in %dx%dx%d k%d s%d p%d: fwd %.2e  grad_input %.2e  grad_weight %.2e  %s\n", c.N, c.Cin,
              c.Cout, c.D, c.H, c.W, c.k, c.s, c.p, e1, e2, e3, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}


struct Timing {
  double med, lo, hi;
};

Timing time_it(const std::function<void()>& f) {
  for (int i = 0; i < 3; ++i) f();
  cuda::synchronize();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    cudaEventRecord(a, cuda::stream());
    f();
    cudaEventRecord(b, cuda::stream());
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

// Flagship x [32,32,16,32,32], w [32,64,4,4,4], stride 2, padding 1 -> y [32,64,32,64,64].
int flagship() {
  const int N = 32, CI = 32, CO = 64, D = 16, H = 32, W = 32, OD = 32, OH = 64, OW = 64;
  const Shape xs{N, CI, D, H, W}, ws{CI, CO, 4, 4, 4}, ys{N, CO, OD, OH, OW};
  const double flops = 2.0 * N * CI * D * H * W * CO * 64.0;
  Graph g;
  Value* xv = g.add_input("x", xs);
  Value* wv = g.add_input("w", ws);
  Value* bv = g.add_input("b", {CO});
  Value* dyv = g.add_input("dy", ys);
  const auto S = AttrValue::IntList({2, 2, 2}), P = AttrValue::IntList({1, 1, 1});
  Node* f = g.add_node("conv_transpose3d", {xv, wv, bv}, Attrs{{"stride", S}, {"padding", P}});
  Node* gi = g.add_node("conv_transpose3d_grad_input", {dyv, wv},
                        Attrs{{"stride", S}, {"padding", P}, {"input_shape", AttrValue::IntList(xs)}});
  Node* gw = g.add_node("conv_transpose3d_grad_weight", {xv, dyv},
                        Attrs{{"stride", S}, {"padding", P}, {"kernel_size", AttrValue::IntList({4, 4, 4})}});
  Tensor x = Tensor::uniform(xs, 0, 1, 21, DType::F32, Device::cuda());
  Tensor w = Tensor::uniform(ws, -0.1, 0.1, 22, DType::F32, Device::cuda());
  Tensor b = Tensor::uniform({CO}, -1, 1, 23, DType::F32, Device::cuda());
  Tensor dy = Tensor::uniform(ys, -1, 1, 24, DType::F32, Device::cuda());
  auto nan = [](const Shape& s) { return Tensor::full(s, NAN, DType::F32, Device::cuda()); };
  KernelContext c1{*f, {x, w, b}, {nan(ys)}}, c2{*gi, {dy, w}, {nan(xs)}}, c3{*gw, {x, dy}, {nan(ws)}};
  auto fwd = [&] { op_schema("conv_transpose3d").cuda_kernel(c1); };
  auto gin = [&] { op_schema("conv_transpose3d_grad_input").cuda_kernel(c2); };
  auto gwt = [&] { op_schema("conv_transpose3d_grad_weight").cuda_kernel(c3); };
  fwd();
  gin();
  gwt();
  cuda::synchronize();
  const std::vector<float> X = host(x), Wt = host(w), B = host(b), DY = host(dy);
  const std::vector<float> Y = host(c1.out(0)), DX = host(c2.out(0)), DW = host(c3.out(0));
  auto xi = [&](int n, int ci, int d, int h, int ww) { return ((size_t(n) * CI + ci) * D + d) * H * W + size_t(h) * W + ww; };
  auto wi = [&](int ci, int co, int a, int bb, int e) { return ((size_t(ci) * CO + co) * 4 + a) * 16 + size_t(bb) * 4 + e; };
  auto yi = [&](int n, int co, int d, int h, int ww) { return ((size_t(n) * CO + co) * OD + d) * size_t(OH) * OW + size_t(h) * OW + ww; };
  int bad = 0;
  // NaN anywhere means an unwritten output.
  auto all_finite = [](const std::vector<float>& v) {
    for (float e : v)
      if (!std::isfinite(e)) return false;
    return true;
  };
  std::mt19937_64 rng(5);
  struct Err {
    double num = 0, den = 0, maxabs = 0;
    void add(double got, double ref) {
      num += (got - ref) * (got - ref);
      den += ref * ref;
      maxabs = std::max(maxabs, std::fabs(got - ref));
    }
    double rel() const { return std::sqrt(num / den); }
  };
  Err ef, ei, ew;
  for (int s = 0; s < 4096; ++s) {  // forward samples
    const int n = int(rng() % N), co = int(rng() % CO), od = int(rng() % OD), oh = int(rng() % OH), ow = int(rng() % OW);
    double ref = B[co];
    for (int kd = 0; kd < 4; ++kd)
      for (int kh = 0; kh < 4; ++kh)
        for (int kw = 0; kw < 4; ++kw) {
          const int td = od + 1 - kd, th = oh + 1 - kh, tw = ow + 1 - kw;
          if (td < 0 || th < 0 || tw < 0 || td % 2 || th % 2 || tw % 2 || td / 2 >= D || th / 2 >= H || tw / 2 >= W) continue;
          for (int ci = 0; ci < CI; ++ci) ref += double(X[xi(n, ci, td / 2, th / 2, tw / 2)]) * Wt[wi(ci, co, kd, kh, kw)];
        }
    ef.add(Y[yi(n, co, od, oh, ow)], ref);
  }
  for (int s = 0; s < 2048; ++s) {  // grad_input samples
    const int n = int(rng() % N), ci = int(rng() % CI), id = int(rng() % D), ih = int(rng() % H), iw = int(rng() % W);
    double ref = 0;
    for (int co = 0; co < CO; ++co)
      for (int kd = 0; kd < 4; ++kd)
        for (int kh = 0; kh < 4; ++kh)
          for (int kw = 0; kw < 4; ++kw) {
            const int od = 2 * id - 1 + kd, oh = 2 * ih - 1 + kh, ow = 2 * iw - 1 + kw;
            if (od < 0 || oh < 0 || ow < 0 || od >= OD || oh >= OH || ow >= OW) continue;
            ref += double(DY[yi(n, co, od, oh, ow)]) * Wt[wi(ci, co, kd, kh, kw)];
          }
    ei.add(DX[xi(n, ci, id, ih, iw)], ref);
  }
  for (int s = 0; s < 48; ++s) {  // grad_weight samples (each a sum over 0.5 M positions)
    const int ci = int(rng() % CI), co = int(rng() % CO), kd = int(rng() % 4), kh = int(rng() % 4), kw = int(rng() % 4);
    double ref = 0;
    for (int n = 0; n < N; ++n)
      for (int id = 0; id < D; ++id)
        for (int ih = 0; ih < H; ++ih)
          for (int iw = 0; iw < W; ++iw) {
            const int od = 2 * id - 1 + kd, oh = 2 * ih - 1 + kh, ow = 2 * iw - 1 + kw;
            if (od < 0 || oh < 0 || ow < 0 || od >= OD || oh >= OH || ow >= OW) continue;
            ref += double(DY[yi(n, co, od, oh, ow)]) * X[xi(n, ci, id, ih, iw)];
          }
    ew.add(DW[wi(ci, co, kd, kh, kw)], ref);
  }
  auto verdict = [&](const char* what, const Err& e, bool finite) {
    const bool ok = finite && e.rel() < 2e-3;
    std::printf("flagship %-12s rel L2 %.2e  max abs %.2e  all written %s  %s\n", what, e.rel(), e.maxabs,
                finite ? "yes" : "NO", ok ? "ok" : "FAILED");
    bad += ok ? 0 : 1;
  };
  verdict("forward", ef, all_finite(Y));
  verdict("grad_input", ei, all_finite(DX));
  verdict("grad_weight", ew, all_finite(DW));
  // Determinism: the same inputs again give the same bits.
  fwd();
  gin();
  gwt();
  cuda::synchronize();
  const bool same = host(c1.out(0)) == Y && host(c2.out(0)) == DX && host(c3.out(0)) == DW;
  std::printf("flagship repeated calls bit-identical: %s\n", same ? "yes" : "NO (FAILED)");
  bad += same ? 0 : 1;

  const Timing tf = time_it(fwd), ti = time_it(gin), tw = time_it(gwt);
  setenv("MINIDL_CONV_GENERAL", "1", 1);
  const Timing gf = time_it(fwd), gi2 = time_it(gin), gw2 = time_it(gwt);
  unsetenv("MINIDL_CONV_GENERAL");
  std::printf("\nflagship timings (median of 20, min..max), %.1f GFLOP each\n", flops / 1e9);
  auto row = [&](const char* name, Timing t) {
    std::printf("  %-34s %8.3f ms (%.3f..%.3f)  %6.1f TFLOP/s\n", name, t.med, t.lo, t.hi, flops / (t.med * 1e-3) / 1e12);
  };
  row("forward (fast path)", tf);
  row("grad_input (fast path)", ti);
  row("grad_weight (fast path)", tw);
  row("forward (general path)", gf);
  row("grad_input (general path)", gi2);
  row("grad_weight (general path)", gw2);
  std::printf("  fwd + grad_input + grad_weight: fast %.3f ms, general %.3f ms\n", tf.med + ti.med + tw.med,
              gf.med + gi2.med + gw2.med);
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda::cuda_available()) return 1;
  const std::vector<Cfg> cfgs = {
      {1, 32, 64, 4, 8, 32, 4, 2, 1}, {1, 32, 64, 2, 4, 16, 4, 2, 1}, {1, 32, 64, 3, 4, 5, 4, 2, 1},
      {1, 32, 40, 3, 4, 6, 4, 2, 1},  {2, 8, 16, 3, 4, 5, 4, 2, 1},   {1, 64, 64, 2, 4, 32, 4, 2, 1},
      {1, 32, 32, 2, 4, 32, 4, 2, 1}, {2, 5, 32, 4, 3, 5, 3, 1, 1},   {1, 16, 64, 4, 4, 4, 2, 2, 0},
      // fast paths (C_in 32, C_out 64, W 32, stride 2, kernel 4, padding 1): odd D and H,
      // H not a multiple of the 4-row groups, a single row, batch > 1
      {2, 32, 64, 3, 5, 32, 4, 2, 1}, {1, 32, 64, 1, 1, 32, 4, 2, 1}, {3, 32, 64, 2, 6, 32, 4, 2, 1},
  };
  int bad = 0;
  for (const Cfg& c : cfgs) bad += run(c);
  std::printf("%s\n", bad ? "SOME CASES FAILED" : "all cases ok");
  if (!(argc > 1 && std::strcmp(argv[1], "--no-bench") == 0)) bad += flagship();
  return bad ? 1 : 0;
}
