// Times minidl's CUDA kernels at the flagship sizes and spot-checks them against a float64
// computation on the host. Each kernel is called through its op's registered CUDA kernel, the
// way the executor calls it. CUDA events, 3 warm-ups, median (min, max) of 20 runs.
// Build: bench/standalone/build.sh OUTDIR; run OUTDIR/kernel_bench [ln|conv] (default: both).
#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "graph/graph.h"
#include "ops/registry.h"

using namespace minidl;

namespace {

struct Timing {
  double med, lo, hi;
};

Timing time_it(const std::function<void()>& f, int warm = 3, int reps = 20) {
  for (int i = 0; i < warm; ++i) f();
  cuda::synchronize();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a, cuda::stream());
    f();
    cudaEventRecord(b, cuda::stream());
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cuda::synchronize();
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

void report(const char* name, Timing t, double bytes, double flops) {
  std::printf("%-44s median %8.3f ms (min %.3f, max %.3f)", name, t.med, t.lo, t.hi);
  if (bytes > 0) std::printf("  %7.0f GB/s", bytes / (t.med * 1e-3) / 1e9);
  if (flops > 0) std::printf("  %6.1f TFLOP/s", flops / (t.med * 1e-3) / 1e12);
  std::printf("\n");
}

Tensor dev_uniform(const Shape& s, double lo, double hi, uint64_t seed) {
  return Tensor::uniform(s, lo, hi, seed, DType::F32, Device::cuda());
}

Attrs fused_attrs() {
  return Attrs{{"eps", AttrValue::Float(1e-5)}, {"approximate", AttrValue::Str("none")}, {"factor", AttrValue::Float(1.0)}};
}

double gelu_d(double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }

double gelu_grad_d(double v) {
  return 0.5 * (1 + std::erf(v / std::sqrt(2.0))) + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
}

std::vector<float> to_host(const Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  cuda::memcpy_d2h(h.data(), t.raw_data(), h.size() * 4);
  return h;
}

// dweight / dbias of the fused backward (exact GELU, factor 1) in float64 over every row, from
// the given per-row statistics; rows split over host threads, each summing its rows in order.
void fused_bwd_params_ref(const std::vector<float>& x, const std::vector<float>& dy, const std::vector<float>& mean,
                          const std::vector<float>& rstd, const std::vector<float>& w, const std::vector<float>& b,
                          std::vector<double>& dw, std::vector<double>& db) {
  const int64_t W = int64_t(w.size()), rows = int64_t(mean.size());
  const int nt = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  std::vector<std::vector<double>> pw(static_cast<size_t>(nt), std::vector<double>(static_cast<size_t>(W)));
  std::vector<std::vector<double>> pb = pw;
  std::vector<std::thread> th;
  for (int t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      for (int64_t r = rows * t / nt; r < rows * (t + 1) / nt; ++r)
        for (int64_t j = 0; j < W; ++j) {
          const size_t e = size_t(r * W + j);
          const double xh = (double(x[e]) - mean[size_t(r)]) * rstd[size_t(r)];
          const double dz = dy[e] * gelu_grad_d(xh * w[size_t(j)] + b[size_t(j)]);
          pw[size_t(t)][size_t(j)] += dz * xh;
          pb[size_t(t)][size_t(j)] += dz;
        }
    });
  for (auto& t : th) t.join();
  dw.assign(size_t(W), 0.0);
  db.assign(size_t(W), 0.0);
  for (int t = 0; t < nt; ++t)
    for (int64_t j = 0; j < W; ++j) {
      dw[size_t(j)] += pw[size_t(t)][size_t(j)];
      db[size_t(j)] += pb[size_t(t)][size_t(j)];
    }
}

double rel_l2(const std::vector<float>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

int failures = 0;
void expect(bool ok, const char* what, double err, double tol) {
  std::printf("  check %-40s err %.3g (tol %.1g) %s\n", what, err, tol, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  if (!cuda::cuda_available()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  std::printf("device: %s\n", cuda::device_name().c_str());
  const int64_t N = 32, C = 64, D = 32, H = 64, W = 64;
  const Shape ys{N, C, D, H, W};
  const int64_t ny = N * C * D * H * W, rows = ny / W;
  const double gib = double(ny) * 4;

  // Copy speed, the yardstick for the memory-bound kernels.
  {
    Tensor a = dev_uniform({ny}, 0, 1, 1), b = Tensor::empty({ny}, DType::F32, Device::cuda());
    Timing t = time_it([&] { cuda::memcpy_d2d(b.raw_data(), a.raw_data(), size_t(gib)); });
    report("device copy 1 GiB (read+write)", t, 2 * gib, 0);
  }

  // ---- fused LayerNorm-GELU-scale, forward and backward -------------------------------------------
  if (only.empty() || only == "ln") {
    Graph g;
    Value* x = g.add_input("x", ys);
    Value* w = g.add_input("w", {W});
    Value* b = g.add_input("b", {W});
    Node* f = g.add_node("fused_ln_gelu_scale", {x, w, b}, fused_attrs());
    Value* dyv = g.add_input("dy", ys);
    Node* fb = g.add_node("fused_ln_gelu_scale_backward", {dyv, x, w, b, f->output(1), f->output(2)}, fused_attrs());
    Tensor X = dev_uniform(ys, -2, 3, 2), Wt = dev_uniform({W}, 0.5, 1.5, 3), B = dev_uniform({W}, -1, 1, 4);
    Tensor Y = Tensor::empty(ys, DType::F32, Device::cuda());
    Tensor M = Tensor::empty({N, C, D, H}, DType::F32, Device::cuda()), R = Tensor::empty({N, C, D, H}, DType::F32, Device::cuda());
    KernelContext ctx{*f, {X, Wt, B}, {Y, M, R}};
    const auto& kf = op_schema("fused_ln_gelu_scale").cuda_kernel;
    Timing t = time_it([&] { kf(ctx); });
    report("fused_ln_gelu_scale fwd [32,64,32,64,64]", t, 2 * gib + rows * 8.0, 0);
    // Spot check 64 rows spread over the tensor (including the last) against float64.
    {
      std::vector<float> xh(static_cast<size_t>(W)), yh(static_cast<size_t>(W)), wh(static_cast<size_t>(W)), bh(static_cast<size_t>(W));
      cuda::memcpy_d2h(wh.data(), Wt.raw_data(), W * 4);
      cuda::memcpy_d2h(bh.data(), B.raw_data(), W * 4);
      double num = 0, den = 0;
      for (int i = 0; i < 64; ++i) {
        const int64_t r = i == 63 ? rows - 1 : (rows / 64) * i + i * 7;
        cuda::memcpy_d2h(xh.data(), X.data<float>() + r * W, W * 4);
        cuda::memcpy_d2h(yh.data(), Y.data<float>() + r * W, W * 4);
        double m = 0, v = 0;
        for (float e : xh) m += e;
        m /= W;
        for (float e : xh) v += (e - m) * (e - m);
        v /= W;
        for (int j = 0; j < W; ++j) {
          const double ref = gelu_d((xh[j] - m) / std::sqrt(v + 1e-5) * wh[j] + bh[j]);
          num += (yh[j] - ref) * (yh[j] - ref);
          den += ref * ref;
        }
      }
      const double err = std::sqrt(num / den);
      expect(err < 1e-5, "fused fwd rel L2 (64 rows)", err, 1e-5);
    }
    Tensor DY = dev_uniform(ys, -1, 1, 5), DX = Tensor::empty(ys, DType::F32, Device::cuda());
    Tensor DW = Tensor::empty({W}, DType::F32, Device::cuda()), DB = Tensor::empty({W}, DType::F32, Device::cuda());
    KernelContext bctx{*fb, {DY, X, Wt, B, M, R}, {DX, DW, DB}};
    const auto& kb = op_schema("fused_ln_gelu_scale_backward").cuda_kernel;
    t = time_it([&] { kb(bctx); });
    report("fused_ln_gelu_scale bwd [32,64,32,64,64]", t, 3 * gib + rows * 8.0, 0);
    {
      // Determinism: dweight and dbias bit-identical over a second call.
      const std::vector<float> dw1 = to_host(DW), db1 = to_host(DB);
      kb(bctx);
      const std::vector<float> dw2 = to_host(DW), db2 = to_host(DB);
      expect(dw1 == dw2 && db1 == db2, "fused bwd dweight/dbias deterministic", dw1 == dw2 && db1 == db2 ? 0.0 : 1.0, 0);
      // dx on 64 rows (the last one included) and dweight/dbias over all rows, against float64.
      const std::vector<float> xh = to_host(X), dyh = to_host(DY), mh = to_host(M), rh = to_host(R), wh = to_host(Wt),
                               bh = to_host(B), dxh = to_host(DX);
      double num = 0, den = 0;
      for (int i = 0; i < 64; ++i) {
        const int64_t r = i == 63 ? rows - 1 : (rows / 64) * i + i * 5;
        double g[64], xhat[64], s1 = 0, s2 = 0;
        for (int j = 0; j < W; ++j) {
          const size_t e = size_t(r * W + j);
          xhat[j] = (double(xh[e]) - mh[size_t(r)]) * rh[size_t(r)];
          g[j] = dyh[e] * gelu_grad_d(xhat[j] * wh[size_t(j)] + bh[size_t(j)]) * wh[size_t(j)];
          s1 += g[j];
          s2 += g[j] * xhat[j];
        }
        for (int j = 0; j < W; ++j) {
          const double ref = rh[size_t(r)] * (g[j] - s1 / W - xhat[j] * s2 / W);
          const double d = dxh[size_t(r * W + j)] - ref;
          num += d * d;
          den += ref * ref;
        }
      }
      const double err = std::sqrt(num / den);
      expect(err < 1e-5, "fused bwd dx rel L2 (64 rows)", err, 1e-5);
      std::vector<double> rdw, rdb;
      fused_bwd_params_ref(xh, dyh, mh, rh, wh, bh, rdw, rdb);
      const double ew = rel_l2(dw1, rdw), eb = rel_l2(db1, rdb);
      expect(ew < 1e-5, "fused bwd dweight rel L2 (all rows)", ew, 1e-5);
      expect(eb < 1e-5, "fused bwd dbias rel L2 (all rows)", eb, 1e-5);
    }

    // The unfused chain's kernels on the same data.
    Node* ln = g.add_node("layer_norm", {x, w, b}, Attrs{{"normalized_shape", AttrValue::IntList({W})}});
    KernelContext lctx{*ln, {X, Wt, B}, {Y, M, R}};
    t = time_it([&] { op_schema("layer_norm").cuda_kernel(lctx); });
    report("layer_norm fwd", t, 2 * gib + rows * 8.0, 0);
    Node* gl = g.add_node("gelu", {x});
    KernelContext gctx{*gl, {X}, {Y}};
    t = time_it([&] { op_schema("gelu").cuda_kernel(gctx); });
    report("gelu fwd", t, 2 * gib, 0);
    Node* sc = g.add_node("scale", {x}, Attrs{{"factor", AttrValue::Float(2.0)}});
    KernelContext sctx{*sc, {X}, {Y}};
    t = time_it([&] { op_schema("scale").cuda_kernel(sctx); });
    report("scale", t, 2 * gib, 0);
    Node* lb = g.add_node("layer_norm_backward", {dyv, x, ln->output(1), ln->output(2), w},
                          Attrs{{"normalized_shape", AttrValue::IntList({W})}});
    KernelContext lbctx{*lb, {DY, X, M, R, Wt}, {DX, DW, DB}};
    t = time_it([&] { op_schema("layer_norm_backward").cuda_kernel(lbctx); });
    report("layer_norm bwd", t, 3 * gib + rows * 8.0, 0);
    {
      const std::vector<float> dw1 = to_host(DW), db1 = to_host(DB);
      op_schema("layer_norm_backward").cuda_kernel(lbctx);
      const std::vector<float> dw2 = to_host(DW), db2 = to_host(DB);
      expect(dw1 == dw2 && db1 == db2, "layer_norm bwd dweight/dbias deterministic", dw1 == dw2 && db1 == db2 ? 0.0 : 1.0, 0);
    }
    Node* gb = g.add_node("gelu_backward", {dyv, x});
    KernelContext gbctx{*gb, {DY, X}, {DX}};
    t = time_it([&] { op_schema("gelu_backward").cuda_kernel(gbctx); });
    report("gelu bwd", t, 3 * gib, 0);
    Node* gbias = g.add_node("conv_transpose3d_grad_bias", {dyv});
    KernelContext gbias_ctx{*gbias, {DY}, {DB}};
    t = time_it([&] { op_schema("conv_transpose3d_grad_bias").cuda_kernel(gbias_ctx); });
    report("conv_transpose3d_grad_bias", t, gib, 0);
  }

  // ---- conv_transpose3d at the flagship size -------------------------------------------------------
  if (only.empty() || only == "conv") {
    const Shape xs{32, 32, 16, 32, 32}, ws{32, 64, 4, 4, 4};
    const double flops = 2.0 * 32 * 64 * 64 * double(32 * 16 * 32 * 32);  // 137 GFLOP
    Graph g;
    Value* x = g.add_input("x", xs);
    Value* w = g.add_input("w", ws);
    Value* b = g.add_input("b", {64});
    Attrs ca{{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})}};
    Node* cv = g.add_node("conv_transpose3d", {x, w, b}, ca);
    Tensor X = dev_uniform(xs, 0, 1, 10), Wt = dev_uniform(ws, -0.1, 0.1, 11), B = dev_uniform({64}, -1, 1, 12);
    Tensor Y = Tensor::empty(ys, DType::F32, Device::cuda());
    KernelContext ctx{*cv, {X, Wt, B}, {Y}};
    Timing t = time_it([&] { op_schema("conv_transpose3d").cuda_kernel(ctx); });
    report("conv_transpose3d fwd (TF32)", t, gib + 64.0 * (1 << 20), flops);
    // Spot check 4096 random outputs against float64.
    {
      std::vector<float> xh(static_cast<size_t>(shape_numel(xs))), wh(static_cast<size_t>(shape_numel(ws))), bh(64), yh(static_cast<size_t>(ny));
      cuda::memcpy_d2h(xh.data(), X.raw_data(), xh.size() * 4);
      cuda::memcpy_d2h(wh.data(), Wt.raw_data(), wh.size() * 4);
      cuda::memcpy_d2h(bh.data(), B.raw_data(), 256);
      cuda::memcpy_d2h(yh.data(), Y.raw_data(), yh.size() * 4);
      std::mt19937_64 rng(7);
      double num = 0, den = 0, maxabs = 0;
      for (int i = 0; i < 4096; ++i) {
        const int64_t e = int64_t(rng() % uint64_t(ny));
        int64_t r = e;
        const int ow = int(r % 64); r /= 64;
        const int oh = int(r % 64); r /= 64;
        const int od = int(r % 32); r /= 32;
        const int co = int(r % 64); r /= 64;
        const int n = int(r);
        double ref = bh[co];
        for (int kd = 0; kd < 4; ++kd)
          for (int kh = 0; kh < 4; ++kh)
            for (int kw = 0; kw < 4; ++kw) {
              const int td = od + 1 - kd, th = oh + 1 - kh, tw = ow + 1 - kw;
              if (td < 0 || th < 0 || tw < 0 || td % 2 || th % 2 || tw % 2) continue;
              const int id = td / 2, ih = th / 2, iw = tw / 2;
              if (id >= 16 || ih >= 32 || iw >= 32) continue;
              for (int ci = 0; ci < 32; ++ci)
                ref += double(xh[size_t((((int64_t(n) * 32 + ci) * 16 + id) * 32 + ih) * 32 + iw)]) *
                       wh[size_t(((ci * 64 + co) * 4 + kd) * 16 + kh * 4 + kw)];
            }
        num += (yh[size_t(e)] - ref) * (yh[size_t(e)] - ref);
        den += ref * ref;
        maxabs = std::max(maxabs, std::fabs(yh[size_t(e)] - ref));
      }
      const double err = std::sqrt(num / den);
      expect(err < 2e-3, "conv fwd rel L2 (4096 samples)", err, 2e-3);
      expect(maxabs < 1e-2, "conv fwd max abs (4096 samples)", maxabs, 1e-2);
    }
    Attrs gi{{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})},
             {"input_shape", AttrValue::IntList(xs)}};
    Value* dyv = g.add_input("dy", ys);
    Node* gin = g.add_node("conv_transpose3d_grad_input", {dyv, w}, gi);
    Tensor DY = dev_uniform(ys, -1, 1, 13), DX = Tensor::empty(xs, DType::F32, Device::cuda());
    KernelContext gctx{*gin, {DY, Wt}, {DX}};
    t = time_it([&] { op_schema("conv_transpose3d_grad_input").cuda_kernel(gctx); });
    report("conv_transpose3d_grad_input (TF32)", t, gib + 64.0 * (1 << 20), flops);
    Attrs gw{{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})},
             {"kernel_size", AttrValue::IntList({4, 4, 4})}};
    Node* gwn = g.add_node("conv_transpose3d_grad_weight", {x, dyv}, gw);
    Tensor DW = Tensor::empty(ws, DType::F32, Device::cuda());
    KernelContext wctx{*gwn, {X, DY}, {DW}};
    t = time_it([&] { op_schema("conv_transpose3d_grad_weight").cuda_kernel(wctx); });
    report("conv_transpose3d_grad_weight (TF32)", t, gib + 64.0 * (1 << 20), flops);
    // The same three with the GEMM kernels compiled for 3 blocks per SM.
    setenv("MINIDL_CONV_MINBLOCKS", "3", 1);
    t = time_it([&] { op_schema("conv_transpose3d").cuda_kernel(ctx); });
    report("conv_transpose3d fwd (TF32, 3 blocks/SM)", t, gib + 64.0 * (1 << 20), flops);
    t = time_it([&] { op_schema("conv_transpose3d_grad_input").cuda_kernel(gctx); });
    report("conv_transpose3d_grad_input (3 blocks/SM)", t, gib + 64.0 * (1 << 20), flops);
    t = time_it([&] { op_schema("conv_transpose3d_grad_weight").cuda_kernel(wctx); });
    report("conv_transpose3d_grad_weight (3 blocks/SM)", t, gib + 64.0 * (1 << 20), flops);
    unsetenv("MINIDL_CONV_MINBLOCKS");
  }
  std::printf("peak minidl device memory: %.2f GiB\n", cuda::peak_bytes_in_use() / double(1 << 30));
  std::printf("%s\n", failures ? "SOME CHECKS FAILED" : "all checks passed");
  return failures ? 1 : 0;
}
