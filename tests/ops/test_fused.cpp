// The fused ops equal the unfused chains they replace, forward and backward:
//   fused_ln_gelu_scale                  == layer_norm(last dim) -> gelu -> scale
//   fused_conv_transpose3d_ln_gelu_scale == conv_transpose3d -> that chain
#include "op_test_util.h"

using namespace minidl;
using namespace op_test;
using minidl_test::check_close;

namespace {

struct Epilogue {
  double eps = 1e-5;
  std::string approximate = "none";
  double factor = 1.0;
};

struct ConvSpec {
  Shape x;
  int64_t cout;
  std::vector<int64_t> k, s, p, op;
};

// Forward (and optionally backward) of either form. Inputs fed by name: x, cw, cb (optional),
// lw, lb; r weights the output in the loss sum(y * r). Returns {y, mean, rstd, grads...}.
std::vector<Tensor> run_chain(bool fused, const ConvSpec* conv, const Epilogue& e, const std::map<std::string, Tensor>& feeds,
                              bool backward) {
  Graph g;
  Value* x = g.add_input("x", feeds.at("x").shape(), feeds.at("x").dtype());
  Value* lw = g.add_param("lw", feeds.at("lw").shape(), feeds.at("lw").dtype());
  Value* lb = g.add_param("lb", feeds.at("lb").shape(), feeds.at("lb").dtype());
  Value* cw = conv ? g.add_param("cw", feeds.at("cw").shape(), feeds.at("cw").dtype()) : nullptr;
  Value* cb = conv && feeds.count("cb") ? g.add_param("cb", feeds.at("cb").shape(), feeds.at("cb").dtype()) : nullptr;
  Attrs conv_attrs;
  if (conv)
    conv_attrs = {{"stride", AttrValue::IntList(conv->s)}, {"padding", AttrValue::IntList(conv->p)},
                  {"output_padding", AttrValue::IntList(conv->op)}};
  Attrs ep = {{"eps", AttrValue::Float(e.eps)}, {"approximate", AttrValue::Str(e.approximate)},
              {"factor", AttrValue::Float(e.factor)}};
  Node* last = nullptr;
  Value* y = nullptr;
  if (fused && conv) {
    Attrs a = conv_attrs;
    for (const auto& kv : ep.items()) a.set(kv.first, kv.second);
    last = g.add_node("fused_conv_transpose3d_ln_gelu_scale", {x, cw, cb, lw, lb}, a);
    y = last->output(0);
  } else {
    Value* z = x;
    if (conv) {
      std::vector<Value*> ins = {x, cw};
      if (cb) ins.push_back(cb);
      z = g.add("conv_transpose3d", ins, conv_attrs);
    }
    if (fused) {
      last = g.add_node("fused_ln_gelu_scale", {z, lw, lb}, ep);
      y = last->output(0);
    } else {
      last = g.add_node("layer_norm", {z, lw, lb},
                        {{"normalized_shape", AttrValue::IntList({z->shape().back()})}, {"eps", AttrValue::Float(e.eps)}});
      y = g.add("gelu", {last->output(0)}, {{"approximate", AttrValue::Str(e.approximate)}});
      y = g.add("scale", {y}, {{"factor", AttrValue::Float(e.factor)}});
    }
  }
  std::vector<Value*> outs = {y, last->output(1), last->output(2)};
  if (backward) {
    Value* r = g.add_input("r", y->shape(), y->dtype());
    Value* loss = g.add("sum", {g.add("mul", {y, r})});
    std::vector<Value*> wrt = {x, lw, lb};
    if (cw) wrt.push_back(cw);
    if (cb) wrt.push_back(cb);
    std::vector<Value*> grads = append_backward(g, {loss}, {nullptr}, wrt);
    outs.insert(outs.end(), grads.begin(), grads.end());
    if (fused) {
      CHECK(g.count_op("fused_ln_gelu_scale_backward") == 1);  // one fused backward node
      CHECK(g.count_op("layer_norm_backward") == 0);
      CHECK(g.count_op("gelu_backward") == 0);
    }
  }
  g.set_outputs(outs);
  std::map<std::string, Tensor> f = feeds;
  if (!backward) f.erase("r");
  return Executor(g, Device::cpu()).run(f);
}

const char* kOutNames[] = {"y", "mean", "rstd", "dx", "dlw", "dlb", "dcw", "dcb"};

void compare_chains(const ConvSpec* conv, const Epilogue& e, const std::map<std::string, Tensor>& feeds, double tol) {
  std::vector<Tensor> a = run_chain(true, conv, e, feeds, true);
  std::vector<Tensor> b = run_chain(false, conv, e, feeds, true);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (i == 7) {
      // The conv bias cancels under LayerNorm: its gradient is zero up to rounding (DESIGN.md), so
      // compare its size against the weight gradient's instead of by relative error.
      const double ref = max_abs_diff(b[6], Tensor::zeros(b[6].shape(), b[6].dtype()));
      const double rel = a[i].dtype() == DType::F64 ? 1e-10 : 1e-4;
      CHECK(max_abs_diff(a[i], Tensor::zeros(a[i].shape(), a[i].dtype())) <= rel * ref);
      CHECK(max_abs_diff(b[i], Tensor::zeros(b[i].shape(), b[i].dtype())) <= rel * ref);
      continue;
    }
    check_close(a[i], b[i], tol, std::string("fused vs unfused ") + kOutNames[i]);
  }
}

// Random inputs for run_chain; LayerNorm runs over the last dim of the (conv) output.
std::map<std::string, Tensor> make_feeds(const Shape& x_shape, const ConvSpec* conv, bool conv_bias, DType t,
                                         uint64_t seed) {
  std::map<std::string, Tensor> f;
  f["x"] = Tensor::uniform(x_shape, 0, 1, seed, t);  // like torch.rand
  Shape y = x_shape;
  if (conv) {
    f["cw"] = Tensor::uniform({x_shape[1], conv->cout, conv->k[0], conv->k[1], conv->k[2]}, -0.3, 0.3, seed + 3, t);
    if (conv_bias) f["cb"] = Tensor::uniform({conv->cout}, -0.2, 0.2, seed + 4, t);
    y = {x_shape[0], conv->cout, 0, 0, 0};
    for (size_t d = 0; d < 3; ++d)
      y[d + 2] = (x_shape[d + 2] - 1) * conv->s[d] - 2 * conv->p[d] + conv->k[d] + conv->op[d];
  }
  f["lw"] = Tensor::uniform({y.back()}, 0.5, 1.5, seed + 1, t);
  f["lb"] = Tensor::uniform({y.back()}, -0.5, 0.5, seed + 2, t);
  f["r"] = Tensor::normal(y, 0.3, 1.0, seed + 5, t);
  return f;
}

}  // namespace

TEST_SUITE("ops/fused") {
  TEST_CASE("fused_ln_gelu_scale equals layer_norm -> gelu -> scale (forward and backward)") {
    uint64_t seed = 200;
    for (const char* approx : {"none", "tanh"})
      for (DType t : {DType::F32, DType::F64}) {
        INFO(approx << " " << dtype_name(t));
        Epilogue e{1e-5, approx, 0.7};
        compare_chains(nullptr, e, make_feeds({3, 4, 16}, nullptr, false, t, seed), t == DType::F32 ? 1e-6 : 1e-12);
        compare_chains(nullptr, e, make_feeds({5, 33}, nullptr, false, t, seed + 10), t == DType::F32 ? 1e-6 : 1e-12);
        seed += 20;
      }
  }

  TEST_CASE("fused_ln_gelu_scale kernels write every output") {
    for (DType t : {DType::F32, DType::F64}) {
      Tensor x = Tensor::normal({4, 3, 10}, 1.0, 2.0, 300, t);
      Tensor w = Tensor::uniform({10}, 0.5, 1.5, 301, t), b = Tensor::uniform({10}, -1, 1, 302, t);
      Attrs a = {{"approximate", AttrValue::Str("tanh")}, {"factor", AttrValue::Float(2.0)}};
      std::vector<Tensor> f = run_kernel_poisoned("fused_ln_gelu_scale", {x, w, b}, a);
      CHECK(f[1].shape() == Shape{4, 3});
      Tensor dy = Tensor::normal({4, 3, 10}, 0, 1, 303, t);
      std::vector<Tensor> bw = run_kernel_poisoned("fused_ln_gelu_scale_backward", {dy, x, w, b, f[1], f[2]}, a);
      CHECK(bw[1].shape() == Shape{10});
      // Without saved statistics the backward recomputes them from x: the same gradients.
      std::vector<Tensor> bw_recomputed = run_kernel_poisoned("fused_ln_gelu_scale_backward", {dy, x, w, b}, a);
      for (size_t i = 0; i < 3; ++i)
        check_close(bw_recomputed[i], bw[i], t == DType::F32 ? 1e-6 : 1e-13, "backward with recomputed statistics");
      CHECK_THROWS_WITH_AS(run_op("fused_ln_gelu_scale_backward", {dy, x, w, b, f[1]}, a),
                           doctest::Contains("pass both 'mean' and 'rstd' or neither"), Error);
      // Same numbers through the executor.
      check_close(run_op("fused_ln_gelu_scale", {x, w, b}, a)[0], f[0], 0.0, "executor vs direct kernel");
    }
  }

  TEST_CASE("fused_conv_transpose3d_ln_gelu_scale equals the unfused chain (forward and backward)") {
    const std::vector<ConvSpec> specs = {{{2, 3, 2, 3, 3}, 4, {4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}},
                                         {{1, 2, 3, 2, 3}, 3, {3, 2, 3}, {1, 2, 3}, {0, 1, 1}, {0, 1, 2}}};
    uint64_t seed = 400;
    for (const ConvSpec& c : specs)
      for (bool bias : {true, false})
        for (DType t : {DType::F32, DType::F64}) {
          INFO("x " << shape_str(c.x) << " bias " << bias << " " << dtype_name(t));
          Epilogue e{1e-5, "none", 1.3};
          std::map<std::string, Tensor> feeds = make_feeds(c.x, &c, bias, t, seed);
          compare_chains(&c, e, feeds, t == DType::F32 ? 1e-6 : 1e-12);
          // The fused op's own kernel writes every output.
          std::vector<Tensor> ins = {feeds["x"], feeds["cw"], bias ? feeds["cb"] : Tensor(), feeds["lw"], feeds["lb"]};
          Attrs a = {{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
                     {"output_padding", AttrValue::IntList(c.op)}, {"factor", AttrValue::Float(1.3)}};
          run_kernel_poisoned("fused_conv_transpose3d_ln_gelu_scale", ins, a);
          seed += 20;
        }
  }

  TEST_CASE("the fused conv op's gradient recomputes the conv and emits one fused backward and the conv grads") {
    for (bool bias : {false, true}) {
      Graph g;
      Value* x = g.add_input("x", {1, 2, 2, 2, 2});
      Value* cw = g.add_param("cw", {2, 3, 4, 4, 4});
      Value* cb = bias ? g.add_param("cb", {3}) : nullptr;
      Value* lw = g.add_param("lw", {4});
      Value* lb = g.add_param("lb", {4});
      Value* y = g.add("fused_conv_transpose3d_ln_gelu_scale", {x, cw, cb, lw, lb},
                       {{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})}});
      CHECK(y->shape() == Shape{1, 3, 4, 4, 4});
      std::vector<Value*> wrt = {x, cw, lw, lb};
      if (cb) wrt.push_back(cb);
      std::vector<Value*> grads = append_backward(g, {g.add("sum", {y})}, {nullptr}, wrt);
      CHECK(g.count_op("conv_transpose3d") == 1);  // z recomputed, not stored
      CHECK(g.count_op("fused_ln_gelu_scale_backward") == 1);
      CHECK(g.count_op("conv_transpose3d_grad_input") == 1);
      CHECK(g.count_op("conv_transpose3d_grad_weight") == 1);
      // The bias cancels under the LayerNorm: its gradient is a constant zero, not a reduction.
      CHECK(g.count_op("conv_transpose3d_grad_bias") == 0u);
      if (bias) CHECK(grads[4]->producer->op == "full");
      for (size_t i = 0; i < wrt.size(); ++i) {
        REQUIRE(grads[i] != nullptr);
        CHECK(grads[i]->type == wrt[i]->type);
      }
    }
  }
}
