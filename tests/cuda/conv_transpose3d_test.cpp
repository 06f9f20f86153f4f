// CUDA conv_transpose3d and its gradient ops (TF32 tensor cores) against the CPU kernels in f64:
// the flagship's stride-2 / kernel-4 / padding-1 configuration at small sizes, including the
// mma fast paths (C_in 32, C_out 64, input width 32: odd D, H not a multiple of the kernels'
// 4-row groups) and the same channels with an output padding (which must take the general
// path), the channel counts that take the general path's fast gather (multiples of 32) and ones
// that do not, and other strides, kernels, paddings and output paddings (phases with no taps).
// The forward of every C_out 64 / W_out 64 configuration runs on the fused conv -> LayerNorm
// kernel with a bias-only epilogue: checked over its channel counts, paddings and operand
// formats (the range fallback included), and against the mma.sync kernel it replaced.
#include <cstdlib>

#include "cuda_op_check.h"

using namespace minidl;
using namespace minidl_cuda_test;

namespace {

struct ConvCase {
  Shape x;    // [N, Cin, D, H, W]
  Shape w;    // [Cin, Cout, kD, kH, kW]
  std::vector<int64_t> s, p, op;
  bool bias;
};

Attrs fwd_attrs(const ConvCase& c) {
  return Attrs{{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
               {"output_padding", AttrValue::IntList(c.op)}};
}

std::vector<ConvCase> cases() {
  return {
      {{2, 8, 3, 4, 5}, {8, 16, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, true},   // flagship geometry
      {{1, 32, 3, 4, 6}, {32, 40, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, true},  // fast path, Cout % 64 != 0
      {{2, 5, 4, 3, 5}, {5, 32, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, false},   // stride 1
      {{1, 3, 3, 4, 2}, {3, 7, 2, 3, 2}, {3, 2, 3}, {0, 1, 0}, {1, 1, 2}, true},     // taps-free phases, out padding
      {{1, 6, 2, 3, 4}, {6, 4, 5, 4, 3}, {2, 3, 1}, {2, 1, 0}, {1, 0, 0}, false},    // mixed
      {{2, 32, 3, 5, 32}, {32, 64, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, true},  // mma fast paths
      {{1, 32, 2, 2, 32}, {32, 64, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {1, 0, 1}, false}, // out padding: general
  };
}

}  // namespace

TEST_SUITE("cuda/conv_transpose3d") {
  TEST_CASE("forward matches the CPU (TF32)") {
    if (!minidl_test::require_gpu()) return;
    uint64_t seed = 100;
    for (const ConvCase& c : cases()) {
      const std::string what = "conv_transpose3d x" + shape_str(c.x) + " w" + shape_str(c.w);
      Tensor x = rand_f32(c.x, seed++, 0.0, 1.0), w = rand_f32(c.w, seed++), b = rand_f32({c.w[1]}, seed++);
      check_op(what,
               [&](Graph& g, DType t) {
                 std::vector<Value*> in{g.add_input("x", c.x, t), g.add_input("w", c.w, t)};
                 if (c.bias) in.push_back(g.add_input("b", {c.w[1]}, t));
                 return g.add_node("conv_transpose3d", in, fwd_attrs(c));
               },
               c.bias ? std::vector<Tensor>{x, w, b} : std::vector<Tensor>{x, w}, {kTf32Tol});
    }
  }

  TEST_CASE("forward on the fused kernel (C_out 64, W_out 64) matches the CPU and the mma.sync kernel") {
    if (!minidl_test::require_gpu()) return;
    // C_in 32 and 16 take FP16 operands (x read directly where W is a multiple of 4, through the
    // pre-pass for W_in 33), C_in 8 and 24 TF32; out padding 1 in D and H, none in W.
    const std::vector<ConvCase> cs = {
        {{2, 32, 3, 5, 32}, {32, 64, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, true},
        {{1, 16, 4, 3, 32}, {16, 64, 4, 4, 4}, {2, 2, 2}, {0, 1, 1}, {1, 1, 0}, false},
        {{2, 8, 2, 4, 32}, {8, 64, 4, 4, 4}, {2, 2, 2}, {1, 2, 1}, {0, 0, 0}, true},
        {{1, 24, 3, 3, 32}, {24, 64, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 1, 0}, true},
        {{2, 32, 3, 4, 33}, {32, 64, 4, 4, 4}, {2, 2, 2}, {1, 0, 2}, {1, 0, 0}, true},
    };
    uint64_t seed = 900;
    for (const ConvCase& c : cs) {
      const std::string what = "conv_transpose3d on the fused kernel x" + shape_str(c.x) + " w" + shape_str(c.w);
      auto build = [&](Graph& g, DType t) {
        std::vector<Value*> in{g.add_input("x", c.x, t), g.add_input("w", c.w, t)};
        if (c.bias) in.push_back(g.add_input("b", {c.w[1]}, t));
        return g.add_node("conv_transpose3d", in, fwd_attrs(c));
      };
      Tensor x = rand_f32(c.x, seed++, 0.0, 1.0), w = rand_f32(c.w, seed++), b = rand_f32({c.w[1]}, seed++);
      const std::vector<Tensor> ins = c.bias ? std::vector<Tensor>{x, w, b} : std::vector<Tensor>{x, w};
      check_op(what, build, ins, {kTf32Tol});
      // x far outside FP16's range: the TF32 fallback must run (FP16 would overflow to inf).
      std::vector<Tensor> big = ins;
      big[0] = x.clone();
      float* xs = big[0].data<float>();
      for (int64_t i = 0; i < big[0].numel(); ++i) xs[i] *= 1e6f;
      check_op(what + ", x * 1e6", build, big, {kTf32Tol});
      if (c.x[1] == 32 && c.x[4] == 32) {  // the configuration the mma.sync forward also takes
        const RunResult fused = run_cpu_vs_cuda(build, ins);
        setenv("MINIDL_CONV_MMA_SYNC", "1", 1);
        const RunResult mma = run_cpu_vs_cuda(build, ins);
        unsetenv("MINIDL_CONV_MMA_SYNC");
        INFO(what);
        CHECK(rel_l2_error(mma.gpu[0], mma.ref[0]) <= kTf32Tol);
        CHECK(rel_l2_error(fused.gpu[0], mma.gpu[0]) <= 2 * kTf32Tol);
        CHECK(max_abs_diff(fused.gpu[0], mma.gpu[0]) > 0.0);  // two different kernels ran
      }
    }
  }

  TEST_CASE("grad_input, grad_weight and grad_bias match the CPU") {
    if (!minidl_test::require_gpu()) return;
    uint64_t seed = 200;
    std::vector<ConvCase> cs = cases();
    cs.push_back({{2, 16, 3, 4, 4}, {16, 32, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, true});  // Cout % 32 == 0
    for (const ConvCase& c : cs) {
      // The output shape from the forward shape rule.
      Shape y;
      {
        Graph g;
        y = g.add("conv_transpose3d", {g.add_input("x", c.x), g.add_input("w", c.w)}, fwd_attrs(c))->shape();
      }
      const std::string what = "x" + shape_str(c.x) + " w" + shape_str(c.w);
      Tensor x = rand_f32(c.x, seed++, 0.0, 1.0), w = rand_f32(c.w, seed++), dy = rand_f32(y, seed++);
      Attrs gi{{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
               {"input_shape", AttrValue::IntList(c.x)}};
      check_op("grad_input " + what,
               [&](Graph& g, DType t) {
                 return g.add_node("conv_transpose3d_grad_input", {g.add_input("dy", y, t), g.add_input("w", c.w, t)}, gi);
               },
               {dy, w}, {kTf32Tol});
      Attrs gw{{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
               {"kernel_size", AttrValue::IntList({c.w[2], c.w[3], c.w[4]})}};
      check_op("grad_weight " + what,
               [&](Graph& g, DType t) {
                 return g.add_node("conv_transpose3d_grad_weight", {g.add_input("x", c.x, t), g.add_input("dy", y, t)}, gw);
               },
               {x, dy}, {kTf32Tol});
      check_op("grad_bias " + what,
               [&](Graph& g, DType t) { return g.add_node("conv_transpose3d_grad_bias", {g.add_input("dy", y, t)}); },
               {rand_f32(y, seed++, 0.0, 1.0)}, {kFp32Tol});
    }
  }

  TEST_CASE("grad_weight is deterministic") {
    if (!minidl_test::require_gpu()) return;
    ConvCase c{{2, 8, 3, 4, 5}, {8, 16, 4, 4, 4}, {2, 2, 2}, {1, 1, 1}, {0, 0, 0}, false};
    const Shape y{2, 16, 6, 8, 10};
    Attrs gw{{"stride", AttrValue::IntList(c.s)}, {"padding", AttrValue::IntList(c.p)},
             {"kernel_size", AttrValue::IntList({4, 4, 4})}};
    auto b = [&](Graph& g, DType t) {
      return g.add_node("conv_transpose3d_grad_weight", {g.add_input("x", c.x, t), g.add_input("dy", y, t)}, gw);
    };
    Tensor x = rand_f32(c.x, 301), dy = rand_f32(y, 302);
    RunResult r1 = run_cpu_vs_cuda(b, {x, dy}), r2 = run_cpu_vs_cuda(b, {x, dy});
    CHECK(max_abs_diff(r1.gpu[0], r2.gpu[0]) == 0.0);
  }

  TEST_CASE("fast-path grad_weight and grad_input are deterministic") {
    if (!minidl_test::require_gpu()) return;
    const Shape xs{2, 32, 2, 3, 32}, ws{32, 64, 4, 4, 4}, y{2, 64, 4, 6, 64};
    const Attrs gw{{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})},
                   {"kernel_size", AttrValue::IntList({4, 4, 4})}};
    const Attrs gi{{"stride", AttrValue::IntList({2, 2, 2})}, {"padding", AttrValue::IntList({1, 1, 1})},
                   {"input_shape", AttrValue::IntList(xs)}};
    auto bw = [&](Graph& g, DType t) {
      return g.add_node("conv_transpose3d_grad_weight", {g.add_input("x", xs, t), g.add_input("dy", y, t)}, gw);
    };
    auto bi = [&](Graph& g, DType t) {
      return g.add_node("conv_transpose3d_grad_input", {g.add_input("dy", y, t), g.add_input("w", ws, t)}, gi);
    };
    Tensor x = rand_f32(xs, 311, 0.0, 1.0), dy = rand_f32(y, 312), w = rand_f32(ws, 313);
    RunResult r1 = run_cpu_vs_cuda(bw, {x, dy}), r2 = run_cpu_vs_cuda(bw, {x, dy});
    CHECK(max_abs_diff(r1.gpu[0], r2.gpu[0]) == 0.0);
    RunResult s1 = run_cpu_vs_cuda(bi, {dy, w}), s2 = run_cpu_vs_cuda(bi, {dy, w});
    CHECK(max_abs_diff(s1.gpu[0], s2.gpu[0]) == 0.0);
  }
}
