// The fused conv_transpose3d -> LayerNorm -> GELU -> scale CUDA kernel against the CPU backend
// (the unfused CPU kernels, composed, in f64): y and the saved row statistics, with FP16 and TF32
// tensor-core operands (forced and automatic) and in the precise mode, over batch 1, odd
// depth/height, channel counts the tile supports, the flagship size, and batch 128 (a 4 GiB
// output, checked on its first and last items); the automatic choice's fallback to TF32 for x
// outside FP16's range; weights of any magnitude (scaled into FP16's range); and the FP16 input
// read straight from x against the pre-pass path, bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "cuda_op_check.h"

using namespace minidl;
using namespace minidl_cuda_test;

namespace {

const char* kOp = "fused_conv_transpose3d_ln_gelu_scale";

Attrs fused_conv_attrs(bool precise, const char* approx = "none", double factor = 1.0,
                       std::vector<int64_t> padding = {1, 1, 1}, std::vector<int64_t> out_pad = {0, 0, 0},
                       const char* operands = "auto") {
  return {{"stride", AttrValue::IntList({2, 2, 2})},   {"padding", AttrValue::IntList(padding)},
          {"output_padding", AttrValue::IntList(out_pad)}, {"approximate", AttrValue::Str(approx)},
          {"factor", AttrValue::Float(factor)},          {"precise", AttrValue::Bool(precise)},
          {"operands", AttrValue::Str(operands)}};
}
// The tensor-core operand formats a C_in can run: f16 needs a multiple of 16.
std::vector<const char*> operand_modes(int64_t cin) {
  if (cin % 16 == 0) return {"auto", "f16", "tf32"};
  return {"auto", "tf32"};
}

// The normalized size is W_out, 64 for every case here.
NodeBuilder fused_conv_node(const Shape& x, int64_t cout, bool bias, const Attrs& attrs) {
  return [=](Graph& g, DType t) {
    const int64_t W = 64;
    return g.add_node(kOp,
                      {g.add_input("x", x, t), g.add_input("w", {x[1], cout, 4, 4, 4}, t),
                       bias ? g.add_input("cb", {cout}, t) : nullptr, g.add_input("g", {W}, t),
                       g.add_input("b", {W}, t)},
                      attrs);
  };
}

std::vector<Tensor> fused_conv_inputs(const Shape& x, int64_t cout, bool bias, uint64_t seed) {
  const int64_t W = 64;
  const double bound = 1.0 / std::sqrt(static_cast<double>(cout * 64));
  return {Tensor::uniform(x, 0, 1, seed, DType::F32),  // like torch.rand
          rand_f32({x[1], cout, 4, 4, 4}, seed + 1, -bound, bound),
          bias ? rand_f32({cout}, seed + 2, -bound, bound) : Tensor(), rand_f32({W}, seed + 3, 0.5, 1.5),
          rand_f32({W}, seed + 4, -0.5, 0.5)};
}

}  // namespace

TEST_SUITE("cuda/fused_conv_transpose3d_ln_gelu_scale") {
  TEST_CASE("matches the CPU with FP16 and TF32 operands and in precise mode over several shapes") {
    if (!minidl_test::require_gpu()) return;
    struct C {
      Shape x;
      bool bias;
      const char* approx;
      double factor;
    };
    const std::vector<C> cases = {{{1, 32, 2, 2, 32}, true, "none", 1.0},  // batch 1
                                  {{2, 32, 3, 5, 32}, true, "tanh", 0.5},  // odd depth and height
                                  {{1, 8, 5, 3, 32}, false, "none", 2.0},  // C_in 8, no conv bias
                                  {{3, 16, 1, 7, 32}, true, "none", -1.0}};
    uint64_t seed = 500;
    for (const C& c : cases) {
      // y and the statistics: tensor cores within the TF32 bound (FP16 operands have TF32's
      // mantissa), precise within FP32's.
      for (const char* ops : operand_modes(c.x[1])) {
        const std::string what = std::string(kOp) + " x " + shape_str(c.x) + " operands " + ops;
        check_op(what, fused_conv_node(c.x, 64, c.bias, fused_conv_attrs(false, c.approx, c.factor, {1, 1, 1}, {0, 0, 0}, ops)),
                 fused_conv_inputs(c.x, 64, c.bias, seed), {kTf32Tol});
        seed += 10;
      }
      check_op(std::string(kOp) + " x " + shape_str(c.x) + " precise",
               fused_conv_node(c.x, 64, c.bias, fused_conv_attrs(true, c.approx, c.factor)),
               fused_conv_inputs(c.x, 64, c.bias, seed), {kFp32Tol});
      seed += 10;
    }
  }

  TEST_CASE("other paddings and output paddings (W_in 31, 33, 34, 36) match the CPU") {
    if (!minidl_test::require_gpu()) return;
    // W_out = 2 (W_in - 1) - 2 pad_w + 4 + out_pad_w = 64 in each case; the input re-layout pads
    // W differently for each pad_w.
    struct C {
      Shape x;
      std::vector<int64_t> pad, out_pad;
    };
    // W_in 36 (pad_w 5) is the other width whose rows the FP16 kernel reads straight from x.
    const std::vector<C> cases = {{{2, 32, 4, 6, 33}, {0, 3, 2}, {1, 1, 0}},
                                  {{1, 24, 3, 3, 34}, {1, 1, 3}, {0, 0, 0}},
                                  {{2, 32, 3, 4, 31}, {2, 0, 0}, {1, 0, 0}},
                                  {{1, 32, 3, 4, 36}, {1, 2, 5}, {0, 1, 0}}};
    uint64_t seed = 550;
    for (const C& c : cases)
      for (const char* ops : operand_modes(c.x[1])) {
        const std::string what = std::string(kOp) + " x " + shape_str(c.x) + " padding " +
                                 std::to_string(c.pad[0]) + "," + std::to_string(c.pad[1]) + "," +
                                 std::to_string(c.pad[2]) + " operands " + ops;
        check_op(what, fused_conv_node(c.x, 64, true, fused_conv_attrs(false, "none", 1.0, c.pad, c.out_pad, ops)),
                 fused_conv_inputs(c.x, 64, true, seed), {kTf32Tol});
        seed += 10;
      }
  }

  TEST_CASE("FP16 input read straight from x and through the pre-pass: the same outputs, bit for bit") {
    if (!minidl_test::require_gpu()) return;
    // Where W is a multiple of 4 the FP16 kernel converts x itself (TMA rows of x, converted in
    // shared memory); MINIDL_FUSED_CONV_INPUT=prepass forces the input pre-pass. Both round each
    // value to FP16 once and feed the same operand images, so y, mean and rstd must agree exactly.
    struct C {
      Shape x;
      std::vector<int64_t> pad, out_pad;
    };
    const std::vector<C> cases = {{{2, 32, 3, 5, 32}, {1, 1, 1}, {0, 0, 0}},
                                  {{3, 16, 4, 3, 32}, {0, 1, 1}, {1, 0, 0}},
                                  {{1, 32, 3, 4, 36}, {1, 2, 5}, {0, 1, 0}},
                                  {{2, 32, 8, 32, 32}, {1, 1, 1}, {0, 0, 0}}};
    uint64_t seed = 1200;
    for (const C& c : cases)
      for (const char* ops : {"auto", "f16"}) {
        const NodeBuilder node =
            fused_conv_node(c.x, 64, true, fused_conv_attrs(false, "none", 1.0, c.pad, c.out_pad, ops));
        const std::vector<Tensor> ins = fused_conv_inputs(c.x, 64, true, seed);
        seed += 10;
        const RunResult direct = run_cpu_vs_cuda(node, ins);
        setenv("MINIDL_FUSED_CONV_INPUT", "prepass", 1);
        const RunResult prepass = run_cpu_vs_cuda(node, ins);
        unsetenv("MINIDL_FUSED_CONV_INPUT");
        const std::string what = std::string(kOp) + " x " + shape_str(c.x) + " operands " + ops;
        REQUIRE(direct.gpu.size() == prepass.gpu.size());
        for (size_t i = 0; i < direct.gpu.size(); ++i) {
          INFO(what << ", output " << i);
          CHECK(all_finite(direct.gpu[i]));
          CHECK(max_abs_diff(direct.gpu[i], prepass.gpu[i]) == 0.0);
        }
        INFO(what);
        CHECK(rel_l2_error(direct.gpu[0], direct.ref[0]) <= kTf32Tol);
      }
  }

  TEST_CASE("without mean and rstd (nothing reads them) y is the same, bit for bit") {
    if (!minidl_test::require_gpu()) return;
    // The executor leaves unread optional outputs undefined; the kernels then skip the
    // statistics (the TF32 path also skips its scratch and second kernel).
    const Shape x{2, 32, 3, 5, 32};
    for (const char* ops : operand_modes(x[1]))
      check_optional_outputs_skipped(std::string(kOp) + " operands " + ops,
                                     fused_conv_node(x, 64, true, fused_conv_attrs(false, "none", 1.0, {1, 1, 1}, {0, 0, 0}, ops)),
                                     fused_conv_inputs(x, 64, true, 650));
    check_optional_outputs_skipped(std::string(kOp) + " precise", fused_conv_node(x, 64, true, fused_conv_attrs(true)),
                                   fused_conv_inputs(x, 64, true, 650));
  }

  TEST_CASE("operands outside FP16's range: auto falls back to TF32 and stays within the bound") {
    if (!minidl_test::require_gpu()) return;
    // x scaled far above FP16's range (max 65504: x overflows) and far below it (1e-6: FP16
    // subnormals keep ~4 bits); forced f16 is far off in both, and "auto" must notice on the
    // device and run the TF32 kernels instead. Weights scaled the other way keep the conv output
    // at its usual size (their own magnitude does not matter: the next test).
    const Shape x{2, 32, 3, 5, 32};
    for (double scale : {1e6, 1e-6}) {
      std::vector<Tensor> ins = fused_conv_inputs(x, 64, true, 800);
      float* xs = ins[0].data<float>();
      for (int64_t i = 0; i < ins[0].numel(); ++i) xs[i] = static_cast<float>(xs[i] * scale);
      float* ws = ins[1].data<float>();
      for (int64_t i = 0; i < ins[1].numel(); ++i) ws[i] = static_cast<float>(ws[i] / scale);
      const std::string what = std::string(kOp) + " x * " + std::to_string(scale);
      check_op(what + " operands auto", fused_conv_node(x, 64, true, fused_conv_attrs(false)), ins, {kTf32Tol});
      RunResult forced = run_cpu_vs_cuda(
          fused_conv_node(x, 64, true, fused_conv_attrs(false, "none", 1.0, {1, 1, 1}, {0, 0, 0}, "f16")), ins);
      INFO(what << " operands f16 (no range test): the case must be outside FP16's reach");
      CHECK_FALSE((all_finite(forced.gpu[0]) && rel_l2_error(forced.gpu[0], forced.ref[0]) <= 10 * kTf32Tol));
    }
  }

  TEST_CASE("weights of any magnitude: the FP16 weights are scaled into range") {
    if (!minidl_test::require_gpu()) return;
    // max|w| ~ 1e-6 (subnormal in FP16 unscaled: ~5% error) and ~1e6 (overflows FP16 unscaled):
    // FP16 operands, forced or automatic, must stay within the TF32 bound, through both input
    // paths (W 32 reads x directly, W 33 through the pre-pass).
    struct C {
      Shape x;
      std::vector<int64_t> pad;
    };
    const std::vector<C> cases = {{{2, 32, 3, 5, 32}, {1, 1, 1}}, {{1, 16, 3, 4, 33}, {1, 1, 2}}};
    for (const C& c : cases)
      for (double scale : {1e-4, 1e8}) {
        std::vector<Tensor> ins = fused_conv_inputs(c.x, 64, true, 1300);
        float* ws = ins[1].data<float>();
        for (int64_t i = 0; i < ins[1].numel(); ++i) ws[i] = static_cast<float>(ws[i] * scale);
        for (const char* ops : {"f16", "auto"})
          check_op(std::string(kOp) + " x " + shape_str(c.x) + " w * " + std::to_string(scale) + " operands " + ops,
                   fused_conv_node(c.x, 64, true, fused_conv_attrs(false, "none", 1.0, c.pad, {0, 0, 0}, ops)), ins,
                   {kTf32Tol});
      }
  }

  TEST_CASE("the flagship size matches the CPU") {
    if (!minidl_test::require_gpu()) return;
    const Shape x{32, 32, 16, 32, 32};
    check_op(std::string(kOp) + " flagship", fused_conv_node(x, 64, true, fused_conv_attrs(false)),
             fused_conv_inputs(x, 64, true, 600), {kTf32Tol});
  }

  TEST_CASE("batch 128 (4 GiB output): first and last items match the CPU") {
    if (!minidl_test::require_gpu()) return;
    const Shape x{128, 32, 16, 32, 32};
    const Shape y{128, 64, 32, 64, 64};
    std::vector<Tensor> ins = fused_conv_inputs(x, 64, true, 700);
    Graph g("big");
    Node* n = fused_conv_node(x, 64, true, fused_conv_attrs(false))(g, DType::F32);
    std::vector<Tensor> dev_ins;
    for (const Tensor& t : ins) dev_ins.push_back(t.to(Device::cuda()));
    std::vector<Tensor> outs;
    for (const Value* v : n->outputs) outs.push_back(minidl_test::poisoned(v->shape(), DType::F32, Device::cuda()));
    KernelContext ctx{*n, dev_ins, outs};
    op_schema(kOp).cuda_kernel(ctx);
    cuda::synchronize();
    Tensor y_gpu = ctx.outputs[0].cpu();
    dev_ins.clear();
    ctx.outputs.clear();
    // The CPU reference on a batch of items 0 and 127.
    const int64_t item = shape_numel(x) / 128, out_item = shape_numel(y) / 128;
    Tensor x2 = Tensor::empty({2, 32, 16, 32, 32});
    std::copy(ins[0].data<float>(), ins[0].data<float>() + item, x2.data<float>());
    std::copy(ins[0].data<float>() + 127 * item, ins[0].data<float>() + 128 * item, x2.data<float>() + item);
    std::vector<Tensor> ref_ins = ins;
    ref_ins[0] = x2;
    RunResult ref = run_cpu_vs_cuda(fused_conv_node({2, 32, 16, 32, 32}, 64, true, fused_conv_attrs(false)), ref_ins);
    Tensor got = Tensor::empty({2, 64, 32, 64, 64});
    std::copy(y_gpu.data<float>(), y_gpu.data<float>() + out_item, got.data<float>());
    std::copy(y_gpu.data<float>() + 127 * out_item, y_gpu.data<float>() + 128 * out_item, got.data<float>() + out_item);
    minidl_test::check_close(got, ref.ref[0], kTf32Tol, "batch 128, items 0 and 127");
    CHECK(all_finite(y_gpu));  // every element of the 4 GiB output was written
  }
}
