// Checks the CUDA conv_transpose3d kernels (forward, grad_input, grad_weight) against a direct
// float64 evaluation of the definition on the host, over a sweep of shapes (tile-aligned and
// not), one process, no test framework. Prints one line per case.
// Build: bench/standalone/build.sh OUTDIR; run OUTDIR/conv_check.
#include <cmath>
#include <cstdio>
#include <vector>

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

}  // namespace

int main() {
  if (!cuda::cuda_available()) return 1;
  const std::vector<Cfg> cfgs = {
      {1, 32, 64, 4, 8, 32, 4, 2, 1}, {1, 32, 64, 2, 4, 16, 4, 2, 1}, {1, 32, 64, 3, 4, 5, 4, 2, 1},
      {1, 32, 40, 3, 4, 6, 4, 2, 1},  {2, 8, 16, 3, 4, 5, 4, 2, 1},   {1, 64, 64, 2, 4, 32, 4, 2, 1},
      {1, 32, 32, 2, 4, 32, 4, 2, 1}, {2, 5, 32, 4, 3, 5, 3, 1, 1},   {1, 16, 64, 4, 4, 4, 2, 2, 0},
  };
  int bad = 0;
  for (const Cfg& c : cfgs) bad += run(c);
  std::printf("%s\n", bad ? "SOME CASES FAILED" : "all cases ok");
  return bad ? 1 : 0;
}
