// conv_transpose3d and its gradient ops against naive loops written here from the definition
// (each output gathers the input positions i with o = i*s - p + k).
#include <chrono>

#include "op_test_util.h"

using namespace minidl;
using namespace op_test;
using minidl_test::check_close;

namespace {

struct ConvCase {
  Shape x;  // [N, Cin, D, H, W]
  int64_t cout;
  std::vector<int64_t> k, s, p, op;
  bool bias;
};

std::vector<ConvCase> conv_cases() {
  return {
      {{1, 2, 3, 4, 5}, 3, {2, 3, 2}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, true},
      {{2, 3, 5, 3, 4}, 2, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 0, 1}, false},
      {{2, 2, 3, 5, 3}, 4, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, true},
      {{1, 3, 3, 3, 3}, 2, {3, 2, 5}, {3, 2, 1}, {2, 0, 1}, {2, 1, 0}, true},
      {{1, 1, 4, 3, 2}, 1, {1, 1, 1}, {3, 3, 3}, {0, 0, 0}, {2, 2, 2}, false},
      {{3, 2, 2, 2, 2}, 3, {5, 4, 3}, {3, 1, 2}, {2, 1, 0}, {1, 0, 1}, true},
      {{1, 2, 1, 1, 1}, 2, {2, 2, 2}, {2, 3, 1}, {0, 0, 0}, {1, 2, 0}, true},
  };
}

Attrs conv_attrs(const ConvCase& c) {
  return Attrs{{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
               {"output_padding", AttrValue::IntList(c.op)}};
}

Shape out_shape(const ConvCase& c) {
  Shape o = {c.x[0], c.cout, 0, 0, 0};
  for (size_t d = 0; d < 3; ++d) o[d + 2] = (c.x[d + 2] - 1) * c.s[d] - 2 * c.p[d] + c.k[d] + c.op[d];
  return o;
}

// Flat index helpers for 5-d row-major shapes.
int64_t idx5(const Shape& s, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
  return (((a * s[1] + b) * s[2] + c) * s[3] + d) * s[4] + e;
}

// Input index i for output o and tap k, or -1 when that tap does not reach o.
int64_t tap_source(int64_t o, int64_t k, int64_t s, int64_t p, int64_t n_in) {
  const int64_t t = o + p - k;
  if (t < 0 || t % s != 0 || t / s >= n_in) return -1;
  return t / s;
}

Tensor naive_conv_t(const Tensor& x, const Tensor& w, const Tensor& b, const ConvCase& c) {
  const Shape os = out_shape(c), xs = x.shape(), ws = w.shape();
  std::vector<double> xv = x.to_vector(), wv = w.to_vector(), bv = b.defined() ? b.to_vector() : std::vector<double>();
  std::vector<double> y(static_cast<size_t>(shape_numel(os)));
  for (int64_t n = 0; n < os[0]; ++n)
    for (int64_t co = 0; co < os[1]; ++co)
      for (int64_t od = 0; od < os[2]; ++od)
        for (int64_t oh = 0; oh < os[3]; ++oh)
          for (int64_t ow = 0; ow < os[4]; ++ow) {
            double acc = b.defined() ? bv[co] : 0.0;
            for (int64_t ci = 0; ci < xs[1]; ++ci)
              for (int64_t a = 0; a < ws[2]; ++a) {
                const int64_t id = tap_source(od, a, c.s[0], c.p[0], xs[2]);
                if (id < 0) continue;
                for (int64_t bb = 0; bb < ws[3]; ++bb) {
                  const int64_t ih = tap_source(oh, bb, c.s[1], c.p[1], xs[3]);
                  if (ih < 0) continue;
                  for (int64_t cc = 0; cc < ws[4]; ++cc) {
                    const int64_t iw = tap_source(ow, cc, c.s[2], c.p[2], xs[4]);
                    if (iw < 0) continue;
                    acc += xv[idx5(xs, n, ci, id, ih, iw)] * wv[idx5(ws, ci, co, a, bb, cc)];
                  }
                }
              }
            y[idx5(os, n, co, od, oh, ow)] = acc;
          }
  return Tensor::from_vector(y, os);
}

// dx[n, ci, i] = sum_{co, k} w[ci, co, k] dy[n, co, i*s - p + k]
Tensor naive_grad_input(const Tensor& dy, const Tensor& w, const ConvCase& c) {
  const Shape ys = dy.shape(), ws = w.shape(), xs = c.x;
  std::vector<double> dv = dy.to_vector(), wv = w.to_vector(), dx(static_cast<size_t>(shape_numel(xs)), 0.0);
  for (int64_t n = 0; n < xs[0]; ++n)
    for (int64_t ci = 0; ci < xs[1]; ++ci)
      for (int64_t id = 0; id < xs[2]; ++id)
        for (int64_t ih = 0; ih < xs[3]; ++ih)
          for (int64_t iw = 0; iw < xs[4]; ++iw) {
            double acc = 0;
            for (int64_t co = 0; co < ys[1]; ++co)
              for (int64_t a = 0; a < ws[2]; ++a)
                for (int64_t bb = 0; bb < ws[3]; ++bb)
                  for (int64_t cc = 0; cc < ws[4]; ++cc) {
                    const int64_t od = id * c.s[0] - c.p[0] + a, oh = ih * c.s[1] - c.p[1] + bb,
                                  ow = iw * c.s[2] - c.p[2] + cc;
                    if (od < 0 || od >= ys[2] || oh < 0 || oh >= ys[3] || ow < 0 || ow >= ys[4]) continue;
                    acc += wv[idx5(ws, ci, co, a, bb, cc)] * dv[idx5(ys, n, co, od, oh, ow)];
                  }
            dx[idx5(xs, n, ci, id, ih, iw)] = acc;
          }
  return Tensor::from_vector(dx, xs);
}

// dw[ci, co, k] = sum_{n, i} x[n, ci, i] dy[n, co, i*s - p + k]
Tensor naive_grad_weight(const Tensor& x, const Tensor& dy, const ConvCase& c) {
  const Shape ys = dy.shape(), xs = x.shape();
  const Shape ws = {xs[1], ys[1], c.k[0], c.k[1], c.k[2]};
  std::vector<double> dv = dy.to_vector(), xv = x.to_vector(), dw(static_cast<size_t>(shape_numel(ws)), 0.0);
  for (int64_t n = 0; n < xs[0]; ++n)
    for (int64_t ci = 0; ci < xs[1]; ++ci)
      for (int64_t co = 0; co < ys[1]; ++co)
        for (int64_t a = 0; a < ws[2]; ++a)
          for (int64_t bb = 0; bb < ws[3]; ++bb)
            for (int64_t cc = 0; cc < ws[4]; ++cc)
              for (int64_t id = 0; id < xs[2]; ++id)
                for (int64_t ih = 0; ih < xs[3]; ++ih)
                  for (int64_t iw = 0; iw < xs[4]; ++iw) {
                    const int64_t od = id * c.s[0] - c.p[0] + a, oh = ih * c.s[1] - c.p[1] + bb,
                                  ow = iw * c.s[2] - c.p[2] + cc;
                    if (od < 0 || od >= ys[2] || oh < 0 || oh >= ys[3] || ow < 0 || ow >= ys[4]) continue;
                    dw[idx5(ws, ci, co, a, bb, cc)] += xv[idx5(xs, n, ci, id, ih, iw)] * dv[idx5(ys, n, co, od, oh, ow)];
                  }
  return Tensor::from_vector(dw, ws);
}

std::string case_name(const ConvCase& c) {
  return "x " + shape_str(c.x) + " cout " + std::to_string(c.cout) + " k " + shape_str(c.k) + " s " + shape_str(c.s) +
         " p " + shape_str(c.p) + " op " + shape_str(c.op) + (c.bias ? " bias" : " no bias");
}

}  // namespace

TEST_SUITE("ops/conv_transpose3d") {
  TEST_CASE("forward matches a naive loop (f64 and f32, odd sizes, strides 1-3, paddings 0-2)") {
    uint64_t seed = 1;
    for (const ConvCase& c : conv_cases()) {
      INFO(case_name(c));
      Tensor x = rand_uniform(c.x, seed++);
      Tensor w = rand_uniform({c.x[1], c.cout, c.k[0], c.k[1], c.k[2]}, seed++);
      Tensor b = c.bias ? rand_uniform({c.cout}, seed++) : Tensor();
      Tensor ref = naive_conv_t(x, w, b, c);
      std::vector<Tensor> ins = {x, w};
      if (c.bias) ins.push_back(b);
      Tensor y = run_kernel_poisoned("conv_transpose3d", ins, conv_attrs(c))[0];
      check_close(y, ref, 1e-13, "f64 " + case_name(c));
      // f32: same data rounded to float; the reference is the f64 result on the rounded data.
      std::vector<Tensor> ins32;
      for (const Tensor& t : ins) ins32.push_back(t.to(DType::F32));
      Tensor ref32 = naive_conv_t(ins32[0].to(DType::F64), ins32[1].to(DType::F64),
                                  c.bias ? ins32[2].to(DType::F64) : Tensor(), c);
      Tensor y32 = run_kernel_poisoned("conv_transpose3d", ins32, conv_attrs(c))[0];
      CHECK(y32.dtype() == DType::F32);
      check_close(y32, ref32, 1e-6, "f32 " + case_name(c));
      // Through the executor too.
      check_close(run_op("conv_transpose3d", ins, conv_attrs(c))[0], ref, 1e-13, "executor " + case_name(c));
    }
  }

  TEST_CASE("forward with many depth chunks (large planes) matches the naive loop") {
    ConvCase c{{1, 1, 3, 256, 300}, 2, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, true};
    Tensor x = rand_uniform(c.x, 11), w = rand_uniform({1, 2, 4, 4, 4}, 12), b = rand_uniform({2}, 13);
    Tensor y = run_kernel_poisoned("conv_transpose3d", {x, w, b}, conv_attrs(c))[0];
    check_close(y, naive_conv_t(x, w, b, c), 1e-13, "chunked forward");
    Tensor dy = rand_uniform(y.shape(), 14);
    Attrs gi = {{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
                {"input_shape", AttrValue::IntList(c.x)}};
    check_close(run_kernel_poisoned("conv_transpose3d_grad_input", {dy, w}, gi)[0], naive_grad_input(dy, w, c), 1e-13,
                "chunked grad_input");
  }

  TEST_CASE("gradient ops match naive loops") {
    uint64_t seed = 100;
    for (const ConvCase& c : conv_cases()) {
      INFO(case_name(c));
      Tensor x = rand_uniform(c.x, seed++);
      Tensor w = rand_uniform({c.x[1], c.cout, c.k[0], c.k[1], c.k[2]}, seed++);
      Tensor dy = Tensor::normal(out_shape(c), 0.5, 1.0, seed++, DType::F64);
      Attrs gi = {{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
                  {"input_shape", AttrValue::IntList(c.x)}};
      Attrs gw = {{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
                  {"kernel_size", AttrValue::IntList(c.k)}};
      check_close(run_kernel_poisoned("conv_transpose3d_grad_input", {dy, w}, gi)[0], naive_grad_input(dy, w, c), 1e-13,
                  "grad_input");
      check_close(run_kernel_poisoned("conv_transpose3d_grad_weight", {x, dy}, gw)[0], naive_grad_weight(x, dy, c),
                  1e-13, "grad_weight");
      Tensor db = run_kernel_poisoned("conv_transpose3d_grad_bias", {dy})[0];
      REQUIRE(db.shape() == Shape{c.cout});
      std::vector<double> ref(static_cast<size_t>(c.cout), 0.0), dv = dy.to_vector();
      const Shape ys = dy.shape();
      const int64_t inner = ys[2] * ys[3] * ys[4];
      for (int64_t i = 0; i < dy.numel(); ++i) ref[static_cast<size_t>((i / inner) % ys[1])] += dv[static_cast<size_t>(i)];
      check_close(db, Tensor::from_vector(ref, {c.cout}), 1e-13, "grad_bias");
      // f32 versions agree with f64 to float precision.
      check_close(run_kernel_poisoned("conv_transpose3d_grad_input", {dy.to(DType::F32), w.to(DType::F32)}, gi)[0],
                  naive_grad_input(dy, w, c), 1e-5, "grad_input f32");
      check_close(run_kernel_poisoned("conv_transpose3d_grad_weight", {x.to(DType::F32), dy.to(DType::F32)}, gw)[0],
                  naive_grad_weight(x, dy, c), 1e-5, "grad_weight f32");
    }
  }

  TEST_CASE("the gradient rule emits grad_input, grad_weight and (with a bias) grad_bias") {
    for (bool bias : {true, false}) {
      Graph g;
      Value* x = g.add_input("x", {1, 2, 2, 2, 2});
      Value* w = g.add_param("w", {2, 3, 2, 2, 2});
      Value* b = bias ? g.add_param("b", {3}) : nullptr;
      std::vector<Value*> ins = {x, w};
      if (b) ins.push_back(b);
      Value* y = g.add("conv_transpose3d", ins, {{"stride", AttrValue::IntList({2, 2, 2})}});
      Value* loss = g.add("sum", {y});
      std::vector<Value*> wrt = {x, w};
      if (b) wrt.push_back(b);
      std::vector<Value*> grads = append_backward(g, {loss}, {nullptr}, wrt);
      CHECK(g.count_op("conv_transpose3d_grad_input") == 1);
      CHECK(g.count_op("conv_transpose3d_grad_weight") == 1);
      CHECK(g.count_op("conv_transpose3d_grad_bias") == (bias ? 1u : 0u));
      CHECK(grads[0]->shape() == x->shape());
      CHECK(grads[1]->shape() == w->shape());
      if (b) CHECK(grads[2]->shape() == Shape{3});
    }
  }

  TEST_CASE("a training-size step (x [2,8,4,8,8] -> y [2,16,8,16,16]) runs many times per second") {
    Graph g;
    Value* x = g.add_input("x", {2, 8, 4, 8, 8});
    Value* t = g.add_input("t", {2, 16, 8, 16, 16});
    Value* w = g.add_param("w", {8, 16, 4, 4, 4});
    Value* b = g.add_param("b", {16});
    Value* lw = g.add_param("lw", {16});
    Value* lb = g.add_param("lb", {16});
    Value* y = g.add("conv_transpose3d", {x, w, b},
                     {{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})}});
    y = g.add("layer_norm", {y, lw, lb}, {{"normalized_shape", AttrValue::IntList({16})}});
    y = g.add("gelu", {y});
    y = g.add("scale", {y}, {{"factor", AttrValue::Float(0.5)}});
    Value* loss = g.add("mse_loss", {y, t});
    std::vector<Value*> grads = append_backward(g, {loss}, {nullptr}, {w, b, lw, lb});
    std::vector<Value*> outs = {loss};
    outs.insert(outs.end(), grads.begin(), grads.end());
    g.set_outputs(outs);
    Executor ex(g, Device::cpu());
    std::map<std::string, Tensor> feeds = {
        {"x", Tensor::uniform({2, 8, 4, 8, 8}, 0, 1, 1)},        {"t", Tensor::uniform({2, 16, 8, 16, 16}, 0, 1, 2)},
        {"w", Tensor::uniform({8, 16, 4, 4, 4}, -0.1, 0.1, 3)}, {"b", Tensor::uniform({16}, -0.1, 0.1, 4)},
        {"lw", Tensor::uniform({16}, 0.5, 1.5, 5)},             {"lb", Tensor::uniform({16}, -0.1, 0.1, 6)}};
    ex.run(feeds);  // warm-up
    const int steps = 10;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) ex.run(feeds);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
    MESSAGE("training-size forward+backward step on the CPU: " << sec * 1e3 << " ms");
    CHECK(sec < 0.1);  // >= 10 steps per second even on a slow, loaded machine
  }
}
