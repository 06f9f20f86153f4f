// Finite-difference checks (float64, central differences) of every differentiable op's gradient
// rule, through autograd and the executor, plus the whole flagship chain.
#include "op_test_util.h"

using namespace minidl;
using namespace op_test;

namespace {

GradInput in(const std::string& name, const Shape& s, uint64_t seed, double lo = -1, double hi = 1) {
  return {name, Tensor::uniform(s, lo, hi, seed, DType::F64), true};
}
GradInput omitted(const std::string& name) { return {name, Tensor(), true}; }

Attrs conv_attrs(std::vector<int64_t> s, std::vector<int64_t> p, std::vector<int64_t> op) {
  return {{"stride", AttrValue::IntList(s)}, {"padding", AttrValue::IntList(p)}, {"output_padding", AttrValue::IntList(op)}};
}

}  // namespace

TEST_SUITE("ops/gradcheck") {
  TEST_CASE("elementwise, scale, reshape") {
    gradcheck_op("add", {in("a", {3, 4}, 1), in("b", {3, 4}, 2)}, {});
    gradcheck_op("sub", {in("a", {3, 4}, 3), in("b", {3, 4}, 4)}, {});
    gradcheck_op("mul", {in("a", {3, 4}, 5), in("b", {3, 4}, 6)}, {});
    gradcheck_op("scale", {in("x", {2, 5}, 7)}, {{"factor", AttrValue::Float(-1.7)}});
    gradcheck_op("reshape", {in("x", {2, 6}, 8)}, {{"shape", AttrValue::IntList({3, -1})}});
  }

  TEST_CASE("sum, mean, expand") {
    const std::vector<std::vector<int64_t>> dim_sets = {{}, {1}, {-1, 0}};
    uint64_t seed = 20;
    for (const auto& dims : dim_sets)
      for (bool keepdim : {false, true})
        for (const char* op : {"sum", "mean"}) {
          INFO(op << " dims " << shape_str(dims) << " keepdim " << keepdim);
          gradcheck_op(op, {in("x", {2, 3, 4}, seed++)},
                       {{"dims", AttrValue::IntList(dims)}, {"keepdim", AttrValue::Bool(keepdim)}});
        }
    gradcheck_op("expand", {in("x", {3, 1, 2}, 30)}, {{"shape", AttrValue::IntList({2, 3, 4, 2})}});
    gradcheck_op("expand", {in("x", {}, 31)}, {{"shape", AttrValue::IntList({3})}});
    gradcheck_op("expand", {in("x", {2, 3}, 32)}, {{"shape", AttrValue::IntList({2, 3})}});
  }

  TEST_CASE("mse_loss (input and target), gelu") {
    for (const char* red : {"mean", "sum"})
      gradcheck_op("mse_loss", {in("input", {3, 5}, 40), in("target", {3, 5}, 41, 0, 1)},
                   {{"reduction", AttrValue::Str(red)}});
    for (const char* approx : {"none", "tanh"})
      gradcheck_op("gelu", {in("x", {4, 9}, 42, -3, 3)}, {{"approximate", AttrValue::Str(approx)}});
  }

  TEST_CASE("layer_norm with and without weight / bias, one and two normalized dims") {
    Attrs last = {{"normalized_shape", AttrValue::IntList({4})}};
    Attrs two = {{"normalized_shape", AttrValue::IntList({3, 4})}, {"eps", AttrValue::Float(1e-3)}};
    gradcheck_op("layer_norm", {in("x", {2, 3, 4}, 50, -2, 3), in("w", {4}, 51, 0.5, 1.5), in("b", {4}, 52)}, last);
    gradcheck_op("layer_norm", {in("x", {2, 3, 4}, 53, -2, 3), in("w", {3, 4}, 54, 0.5, 1.5)}, two);
    gradcheck_op("layer_norm", {in("x", {5, 4}, 55, -2, 3)}, last);
    gradcheck_op("layer_norm", {in("x", {5, 4}, 56, -2, 3), omitted("w"), in("b", {4}, 57)}, last);
  }

  TEST_CASE("conv_transpose3d (strides, paddings, output_padding, with and without bias)") {
    gradcheck_op("conv_transpose3d", {in("x", {1, 2, 3, 2, 3}, 60), in("w", {2, 2, 3, 2, 2}, 61), in("b", {2}, 62)},
                 conv_attrs({1, 1, 1}, {0, 0, 0}, {0, 0, 0}));
    gradcheck_op("conv_transpose3d", {in("x", {2, 2, 2, 3, 2}, 63), in("w", {2, 3, 4, 4, 4}, 64)},
                 conv_attrs({2, 2, 2}, {1, 1, 1}, {0, 0, 0}));
    gradcheck_op("conv_transpose3d", {in("x", {1, 3, 2, 2, 3}, 65), in("w", {3, 2, 3, 2, 1}, 66), in("b", {2}, 67)},
                 conv_attrs({3, 2, 1}, {2, 0, 0}, {1, 1, 0}));
  }

  TEST_CASE("fused ops") {
    for (const char* approx : {"none", "tanh"})
      gradcheck_op("fused_ln_gelu_scale", {in("x", {3, 2, 6}, 70, -2, 3), in("w", {6}, 71, 0.5, 1.5), in("b", {6}, 72)},
                   {{"approximate", AttrValue::Str(approx)}, {"factor", AttrValue::Float(0.8)}});
    for (bool bias : {true, false}) {
      Attrs a = conv_attrs({2, 2, 2}, {1, 1, 1}, {0, 0, 0});
      a.set("factor", AttrValue::Float(1.4));
      gradcheck_op("fused_conv_transpose3d_ln_gelu_scale",
                   {in("x", {1, 2, 2, 2, 3}, 73, 0, 1), in("cw", {2, 2, 4, 4, 4}, 74),
                    bias ? in("cb", {2}, 75) : omitted("cb"), in("lw", {6}, 76, 0.5, 1.5), in("lb", {6}, 77)},
                   a);
    }
  }

  TEST_CASE("whole chain: conv_transpose3d -> layer_norm -> gelu -> scale -> mse_loss") {
    LossBuilder build = [](Graph& g, const std::map<std::string, Value*>& v) {
      Value* y = g.add("conv_transpose3d", {v.at("x"), v.at("w"), v.at("b")}, conv_attrs({2, 2, 2}, {1, 1, 1}, {1, 0, 0}));
      y = g.add("layer_norm", {y, v.at("lw"), v.at("lb")}, {{"normalized_shape", AttrValue::IntList({4})}});
      y = g.add("gelu", {y});
      y = g.add("scale", {y}, {{"factor", AttrValue::Float(0.9)}});
      return g.add("mse_loss", {y, v.at("t")});
    };
    // x [1,2,2,3,2] -> y [1,3,5,6,4]
    gradcheck("flagship chain", build,
              {in("x", {1, 2, 2, 3, 2}, 80, 0, 1), in("w", {2, 3, 4, 4, 4}, 81), in("b", {3}, 82),
               in("lw", {4}, 83, 0.5, 1.5), in("lb", {4}, 84), {"t", Tensor::uniform({1, 3, 5, 6, 4}, 0, 1, 85, DType::F64), false}});
  }
}
