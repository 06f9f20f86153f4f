// CUDA kernels of gelu, layer_norm and fused_ln_gelu_scale (forward and backward) against the CPU
// kernels, on the 64-wide fast path and on general row sizes; row counts that end in a partial
// tile (including tiles whose statistics cannot come with the bulk copy) and enough rows that
// every block cycles through its shared-memory stages more than once; bitwise determinism of
// the parameter gradients; plus one forward + backward case past 2^31 bytes.
#include <cstring>

#include "cuda_op_check.h"

using namespace minidl;
using namespace minidl_cuda_test;
using minidl::Value;

namespace {

Attrs ln_attrs(const Shape& ns) { return Attrs{{"normalized_shape", AttrValue::IntList(ns)}}; }
Attrs fused_attrs(const char* approx, double factor) {
  return Attrs{{"eps", AttrValue::Float(1e-5)}, {"approximate", AttrValue::Str(approx)},
               {"factor", AttrValue::Float(factor)}};
}

Shape lead(const Shape& s, size_t drop) { return Shape(s.begin(), s.end() - static_cast<long>(drop)); }

}  // namespace

TEST_SUITE("cuda/gelu") {
  TEST_CASE("gelu and gelu_backward, exact and tanh") {
    if (!minidl_test::require_gpu()) return;
    for (const Shape& s : {Shape{1003}, Shape{16, 64}, Shape{3, 5, 7}}) {
      for (const char* approx : {"none", "tanh"}) {
        Attrs a{{"approximate", AttrValue::Str(approx)}};
        check_op(std::string("gelu ") + approx + shape_str(s),
                 [&](Graph& g, DType t) { return g.add_node("gelu", {g.add_input("x", s, t)}, a); },
                 {rand_f32(s, 41, -4.0, 4.0)}, {kFp32Tol});
        check_op(std::string("gelu_backward ") + approx + shape_str(s),
                 [&](Graph& g, DType t) {
                   return g.add_node("gelu_backward", {g.add_input("dy", s, t), g.add_input("x", s, t)}, a);
                 },
                 {rand_f32(s, 42), rand_f32(s, 43, -4.0, 4.0)}, {kFp32Tol});
      }
    }
  }
}

TEST_SUITE("cuda/layer_norm") {
  TEST_CASE("layer_norm forward and backward") {
    if (!minidl_test::require_gpu()) return;
    struct C {
      Shape x, ns;
      bool affine;
    };
    const std::vector<C> cases = {{{5, 7, 64}, {64}, true},    {{5, 7, 64}, {64}, false}, {{11, 37}, {37}, true},
                                  {{3, 5, 37}, {5, 37}, true},  {{2, 3000}, {3000}, true}, {{9, 64}, {64}, true},
                                  {{150003, 64}, {64}, true},   {{1026, 64}, {64}, false}, {{2, 8, 256}, {8, 256}, true}};
    for (const C& c : cases) {
      const Shape L = lead(c.x, c.ns.size());
      const std::string what = "layer_norm " + shape_str(c.x) + " over " + shape_str(c.ns) + (c.affine ? "" : " no affine");
      Tensor x = rand_f32(c.x, 51, 0.5, 3.0), w = rand_f32(c.ns, 52, 0.5, 1.5), b = rand_f32(c.ns, 53);
      const NodeBuilder fwd = [&](Graph& g, DType t) {
        std::vector<Value*> in{g.add_input("x", c.x, t)};
        if (c.affine) {
          in.push_back(g.add_input("w", c.ns, t));
          in.push_back(g.add_input("b", c.ns, t));
        }
        return g.add_node("layer_norm", in, ln_attrs(c.ns));
      };
      const std::vector<Tensor> fwd_in = c.affine ? std::vector<Tensor>{x, w, b} : std::vector<Tensor>{x};
      check_op(what, fwd, fwd_in, {kFp32Tol});
      check_optional_outputs_skipped(what, fwd, fwd_in);  // inference: mean / rstd unread
      // Backward from the reference statistics (computed on the CPU in f64, rounded to f32).
      RunResult fw = run_cpu_vs_cuda(
          [&](Graph& g, DType t) { return g.add_node("layer_norm", {g.add_input("x", c.x, t)}, ln_attrs(c.ns)); }, {x});
      Tensor mean = fw.ref[1].to(DType::F32), rstd = fw.ref[2].to(DType::F32);
      Tensor dy = rand_f32(c.x, 54);
      check_op(what + " backward",
               [&](Graph& g, DType t) {
                 std::vector<Value*> in{g.add_input("dy", c.x, t), g.add_input("x", c.x, t), g.add_input("mean", L, t),
                                        g.add_input("rstd", L, t)};
                 if (c.affine) in.push_back(g.add_input("w", c.ns, t));
                 return g.add_node("layer_norm_backward", in, ln_attrs(c.ns));
               },
               c.affine ? std::vector<Tensor>{dy, x, mean, rstd, w} : std::vector<Tensor>{dy, x, mean, rstd},
               {kFp32Tol});
    }
  }
}

TEST_SUITE("cuda/fused_ln_gelu_scale") {
  TEST_CASE("fused forward and backward, fast and general row sizes") {
    if (!minidl_test::require_gpu()) return;
    struct C {
      Shape x;
      const char* approx;
      double factor;
    };
    const std::vector<C> cases = {{{3, 5, 64}, "none", 1.0},    {{2, 3, 7, 64}, "tanh", 0.7}, {{7, 33}, "none", -1.3},
                                  {{4, 200}, "tanh", 2.0},      {{1, 64}, "none", 1.0},       {{4097, 64}, "none", 0.5},
                                  {{1000, 64}, "none", 1.0},    {{33, 64}, "tanh", 1.5},      {{140001, 64}, "none", 0.8},
                                  {{3, 70001, 64}, "tanh", 1.0}, {{301, 129}, "none", 1.0}};
    for (const C& c : cases) {
      const int64_t D = c.x.back();
      const Shape L = lead(c.x, 1);
      const std::string what = "fused_ln_gelu_scale " + shape_str(c.x) + " " + c.approx;
      Tensor x = rand_f32(c.x, 61, -2.0, 3.0), w = rand_f32({D}, 62, 0.5, 1.5), b = rand_f32({D}, 63);
      auto fwd = [&](Graph& g, DType t) {
        return g.add_node("fused_ln_gelu_scale", {g.add_input("x", c.x, t), g.add_input("w", {D}, t),
                                                  g.add_input("b", {D}, t)},
                          fused_attrs(c.approx, c.factor));
      };
      check_op(what, fwd, {x, w, b}, {kFp32Tol});
      check_optional_outputs_skipped(what, fwd, {x, w, b});  // inference: mean / rstd unread
      RunResult fw = run_cpu_vs_cuda(fwd, {x, w, b});
      Tensor mean = fw.ref[1].to(DType::F32), rstd = fw.ref[2].to(DType::F32);
      check_op(what + " backward",
               [&](Graph& g, DType t) {
                 return g.add_node("fused_ln_gelu_scale_backward",
                                   {g.add_input("dy", c.x, t), g.add_input("x", c.x, t), g.add_input("w", {D}, t),
                                    g.add_input("b", {D}, t), g.add_input("mean", L, t), g.add_input("rstd", L, t)},
                                   fused_attrs(c.approx, c.factor));
               },
               {rand_f32(c.x, 64), x, w, b, mean, rstd}, {kFp32Tol});
      // Without saved statistics the kernels recompute them from x (the fused conv's backward).
      check_op(what + " backward, statistics recomputed",
               [&](Graph& g, DType t) {
                 return g.add_node("fused_ln_gelu_scale_backward",
                                   {g.add_input("dy", c.x, t), g.add_input("x", c.x, t), g.add_input("w", {D}, t),
                                    g.add_input("b", {D}, t)},
                                   fused_attrs(c.approx, c.factor));
               },
               {rand_f32(c.x, 64), x, w, b}, {kFp32Tol});
    }
  }

  TEST_CASE("parameter gradients are bitwise deterministic") {
    if (!minidl_test::require_gpu()) return;
    // Enough rows for every block of the 64-wide path to accumulate many tiles, and a general
    // row size for the column-chunked path.
    for (const Shape& s : {Shape{200003, 64}, Shape{20001, 96}}) {
      const int64_t D = s.back();
      const Shape L = lead(s, 1);
      Tensor x = rand_f32(s, 81, -2.0, 3.0).to(Device::cuda()), dy = rand_f32(s, 82).to(Device::cuda());
      Tensor w = rand_f32({D}, 83, 0.5, 1.5).to(Device::cuda()), b = rand_f32({D}, 84).to(Device::cuda());
      Graph g;
      Value* xv = g.add_input("x", s);
      Value* wv = g.add_input("w", {D});
      Value* bv = g.add_input("b", {D});
      Node* f = g.add_node("fused_ln_gelu_scale", {xv, wv, bv}, fused_attrs("none", 1.0));
      Node* fb = g.add_node("fused_ln_gelu_scale_backward", {g.add_input("dy", s), xv, wv, bv, f->output(1), f->output(2)},
                            fused_attrs("none", 1.0));
      Node* lb = g.add_node("layer_norm_backward", {fb->inputs[0], xv, f->output(1), f->output(2), wv}, ln_attrs({D}));
      Tensor mean = Tensor::empty(L, DType::F32, Device::cuda()), rstd = Tensor::empty(L, DType::F32, Device::cuda());
      KernelContext fc{*f, {x, w, b}, {Tensor::empty(s, DType::F32, Device::cuda()), mean, rstd}};
      op_schema("fused_ln_gelu_scale").cuda_kernel(fc);
      for (Node* n : {fb, lb}) {
        std::vector<Tensor> first;
        for (int rep = 0; rep < 2; ++rep) {
          std::vector<Tensor> outs;
          for (int o = 0; o < 3; ++o)
            outs.push_back(minidl_test::poisoned(o == 0 ? s : Shape{D}, DType::F32, Device::cuda()));
          std::vector<Tensor> ins = n == fb ? std::vector<Tensor>{dy, x, w, b, mean, rstd}
                                            : std::vector<Tensor>{dy, x, mean, rstd, w};
          KernelContext c{*n, ins, outs};
          op_schema(n->op).cuda_kernel(c);
          cuda::synchronize();
          if (rep == 0) {
            for (int o = 1; o < 3; ++o) first.push_back(outs[size_t(o)].cpu());
            continue;
          }
          for (int o = 1; o < 3; ++o) {
            Tensor h = outs[size_t(o)].cpu();
            CHECK(all_finite(h));
            CHECK_MESSAGE(std::memcmp(h.data<float>(), first[size_t(o) - 1].data<float>(), size_t(D) * 4) == 0,
                          n->op, " output ", o, " differs between two runs on ", shape_str(s));
          }
        }
      }
    }
  }

  TEST_CASE("fused forward and backward on tensors past 2^31 bytes") {
    if (!minidl_test::require_gpu()) return;
    // 2^23 + 3 rows of 64: 2^29 + 192 floats, 2 GiB + 768 bytes per tensor.
    const int64_t rows = (int64_t(1) << 23) + 3, D = 64;
    Tensor x, y, mean, rstd;
    Tensor xh;
    try {
      xh = Tensor::uniform({rows, D}, -2.0, 3.0, 71);
      x = xh.to(Device::cuda());
      y = minidl_test::poisoned({rows, D}, DType::F32, Device::cuda());
      mean = minidl_test::poisoned({rows}, DType::F32, Device::cuda());
      rstd = minidl_test::poisoned({rows}, DType::F32, Device::cuda());
    } catch (const minidl::Error& e) {
      MESSAGE("skipped the > 2^31-byte case: " << e.what());
      return;
    }
    Tensor w = rand_f32({D}, 72, 0.5, 1.5), b = rand_f32({D}, 73);
    Graph g;
    Node* n = g.add_node("fused_ln_gelu_scale", {g.add_input("x", {rows, D}), g.add_input("w", {D}), g.add_input("b", {D})},
                         fused_attrs("none", 1.0));
    KernelContext ctx{*n, {x, w.to(Device::cuda()), b.to(Device::cuda())}, {y, mean, rstd}};
    op_schema("fused_ln_gelu_scale").cuda_kernel(ctx);
    cuda::synchronize();
    Tensor yh = y.cpu();
    y = Tensor();
    CHECK(all_finite(yh));
    // Check rows at the start, around the 2^31-byte boundary and at the end against the CPU.
    for (int64_t r0 : {int64_t(0), (int64_t(1) << 23) - 2, rows - 4}) {
      const int64_t nr = 4;
      Tensor xs = Tensor::empty({nr, D}), ys = Tensor::empty({nr, D});
      std::memcpy(xs.data<float>(), xh.data<float>() + r0 * D, sizeof(float) * nr * D);
      std::memcpy(ys.data<float>(), yh.data<float>() + r0 * D, sizeof(float) * nr * D);
      Graph g2;
      Node* n2 = g2.add_node("fused_ln_gelu_scale",
                             {g2.add_input("x", {nr, D}, DType::F64), g2.add_input("w", {D}, DType::F64),
                              g2.add_input("b", {D}, DType::F64)},
                             fused_attrs("none", 1.0));
      KernelContext c2{*n2, {xs.to(DType::F64), w.to(DType::F64), b.to(DType::F64)},
                       {Tensor::empty({nr, D}, DType::F64), Tensor::empty({nr}, DType::F64),
                        Tensor::empty({nr}, DType::F64)}};
      op_schema("fused_ln_gelu_scale").cpu_kernel(c2);
      minidl_test::check_close(ys, c2.out(0), kFp32Tol, "rows from " + std::to_string(r0));
    }
    yh = Tensor();

    // Backward on the same rows, from the statistics the forward saved.
    Tensor dyh, dx, dw, db;
    try {
      dyh = Tensor::uniform({rows, D}, -1.0, 1.0, 74);
      dx = minidl_test::poisoned({rows, D}, DType::F32, Device::cuda());
      dw = minidl_test::poisoned({D}, DType::F32, Device::cuda());
      db = minidl_test::poisoned({D}, DType::F32, Device::cuda());
    } catch (const minidl::Error& e) {
      MESSAGE("skipped the > 2^31-byte backward: " << e.what());
      return;
    }
    Node* nb = g.add_node("fused_ln_gelu_scale_backward",
                          {g.add_input("dy", {rows, D}), n->inputs[0], n->inputs[1], n->inputs[2], n->output(1), n->output(2)},
                          fused_attrs("none", 1.0));
    {
      KernelContext bctx{*nb, {dyh.to(Device::cuda()), x, ctx.in(1), ctx.in(2), mean, rstd}, {dx, dw, db}};
      op_schema("fused_ln_gelu_scale_backward").cuda_kernel(bctx);
      cuda::synchronize();
    }
    x = Tensor();
    Tensor dxh = dx.cpu();
    dx = Tensor();
    Tensor mh = mean.cpu(), rh = rstd.cpu();
    CHECK(all_finite(dxh));
    CHECK(all_finite(dw.cpu()));
    CHECK(all_finite(db.cpu()));
    for (int64_t r0 : {int64_t(0), (int64_t(1) << 23) - 2, rows - 4}) {
      const int64_t nr = 4;
      auto rows_of = [&](const Tensor& t, int64_t width) {
        Tensor o = Tensor::empty(width == 1 ? Shape{nr} : Shape{nr, width});
        std::memcpy(o.data<float>(), t.data<float>() + r0 * width, sizeof(float) * size_t(nr * width));
        return o.to(DType::F64);
      };
      Graph g2;
      Node* n2 = g2.add_node("fused_ln_gelu_scale_backward",
                             {g2.add_input("dy", {nr, D}, DType::F64), g2.add_input("x", {nr, D}, DType::F64),
                              g2.add_input("w", {D}, DType::F64), g2.add_input("b", {D}, DType::F64),
                              g2.add_input("mean", {nr}, DType::F64), g2.add_input("rstd", {nr}, DType::F64)},
                             fused_attrs("none", 1.0));
      KernelContext c2{*n2,
                       {rows_of(dyh, D), rows_of(xh, D), w.to(DType::F64), b.to(DType::F64), rows_of(mh, 1), rows_of(rh, 1)},
                       {Tensor::empty({nr, D}, DType::F64), Tensor::empty({D}, DType::F64), Tensor::empty({D}, DType::F64)}};
      op_schema("fused_ln_gelu_scale_backward").cpu_kernel(c2);
      Tensor dxs = Tensor::empty({nr, D});
      std::memcpy(dxs.data<float>(), dxh.data<float>() + r0 * D, sizeof(float) * size_t(nr * D));
      minidl_test::check_close(dxs, c2.out(0), kFp32Tol, "dx rows from " + std::to_string(r0));
    }
  }
}
