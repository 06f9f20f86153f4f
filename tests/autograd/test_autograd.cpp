#include "autograd/autograd.h"
#include "graph/executor.h"
#include "ops/registry.h"
#include "test_util.h"

using namespace minidl;

TEST_SUITE("autograd") {
  TEST_CASE("gradients of a value used twice are accumulated with add") {
    // loss = sum(x * x + x): d/dx = 2x + 1, with x reaching the loss along three paths.
    Graph g("acc");
    Value* x = g.add_input("x", {5}, DType::F64);
    Value* sq = g.add("mul", {x, x});
    Value* loss = g.add("sum", {g.add("add", {sq, x})});
    size_t adds_before = g.count_op("add");
    std::vector<Value*> grads = append_backward(g, {loss}, {nullptr}, {x});
    REQUIRE(grads[0] != nullptr);
    CHECK(g.count_op("add") > adds_before);  // accumulation nodes were emitted
    g.set_outputs({loss, grads[0]});
    Tensor tx = Tensor::normal({5}, 0.5, 1, 3, DType::F64);
    auto outs = Executor(g, Device::cpu()).run({{"x", tx}});
    for (int64_t i = 0; i < 5; ++i) CHECK(outs[1].get(i) == doctest::Approx(2 * tx.get(i) + 1).epsilon(1e-12));
  }

  TEST_CASE("an explicit seed gradient for a non-scalar output") {
    Graph g("seed");
    Value* x = g.add_input("x", {2, 3}, DType::F64);
    Value* gy = g.add_input("gy", {2, 3}, DType::F64);
    Value* y = g.add("scale", {x}, {{"factor", AttrValue::Float(-3.0)}});
    auto grads = append_backward(g, {y}, {gy}, {x});
    g.set_outputs({grads[0]});
    Tensor tg = Tensor::normal({2, 3}, 0, 1, 5, DType::F64);
    auto outs = Executor(g, Device::cpu()).run({{"x", Tensor::normal({2, 3}, 0, 1, 4, DType::F64)}, {"gy", tg}});
    for (int64_t i = 0; i < 6; ++i) CHECK(outs[0].get(i) == doctest::Approx(-3 * tg.get(i)));
    Graph h("noseed");
    Value* hx = h.add_input("x", {2, 3});
    Value* hy = h.add("gelu", {hx});
    CHECK_THROWS_WITH_AS(append_backward(h, {hy}, {nullptr}, {hx}), doctest::Contains("not a scalar"), Error);
  }

  TEST_CASE("values off the path get no gradient and no nodes") {
    Graph g("off");
    Value* x = g.add_input("x", {3}, DType::F64);
    Value* c = g.add_input("c", {3}, DType::F64);
    Value* loss = g.add("sum", {g.add("mul", {x, x})});
    size_t before = g.num_nodes();
    auto grads = append_backward(g, {loss}, {nullptr}, {x, c});
    CHECK(grads[0] != nullptr);
    CHECK(grads[1] == nullptr);
    CHECK(g.num_nodes() > before);
  }

  TEST_CASE("an op without a gradient rule fails loudly when differentiated") {
    // Register a throwaway op with no gradient rule.
    OpRegistry& r = OpRegistry::instance();
    if (!r.has("test_no_grad")) {
      OpSchema s;
      s.name = "test_no_grad";
      s.input_names = {"x"};
      s.num_required_inputs = 1;
      s.output_names = {"y"};
      s.shape_rule = [](const std::vector<const TensorType*>& in, const Attrs&) {
        return std::vector<TensorType>{*in[0]};
      };
      s.cpu_kernel = [](KernelContext& ctx) { ctx.out(0).copy_from(ctx.in(0)); };
      r.add(s);
    }
    Graph g("nograd");
    Value* x = g.add_input("x", {3});
    Value* loss = g.add("sum", {g.add("test_no_grad", {x})});
    CHECK_THROWS_WITH_AS(append_backward(g, {loss}, {nullptr}, {x}),
                         doctest::Contains("op 'test_no_grad' has no gradient rule"), Error);
  }
}
