// fused_conv_transpose3d_ln_gelu_scale(x, conv_weight, conv_bias?, ln_weight, ln_bias)
//   {stride, padding, output_padding, eps, approximate, factor, precise, operands} -> y, mean, rstd
// mean and rstd are optional outputs, computed only when something reads them (the gradient rule
// does not: it recomputes them).
// = fused_ln_gelu_scale(conv_transpose3d(x, conv_weight, conv_bias)). The CPU kernel runs the two
// CPU kernels back to back through a temporary; `precise` and `operands` only matter to the CUDA
// kernel (FP32 FMA instead of tensor cores; FP16 or TF32 tensor-core operands, see
// ops/fused_conv_support.h). The gradient rule recomputes the conv output z as a graph node
// instead of keeping it, then emits the fused epilogue backward and the conv gradients (the conv
// bias gradient is exactly zero; see the rule).
#include "ops/fused_conv_support.h"
#include "ops/op_util.h"

namespace minidl {
namespace {

using ops::TypeList;
const char* const kOp = "fused_conv_transpose3d_ln_gelu_scale";

OpSchema schema() {
  OpSchema s;
  s.name = kOp;
  s.input_names = {"x", "conv_weight", "conv_bias", "ln_weight", "ln_bias"};
  // conv_bias may be omitted (nullptr); the shape rule requires ln_weight and ln_bias itself.
  s.num_required_inputs = 2;
  s.output_names = {"y", "mean", "rstd"};
  s.num_required_outputs = 1;  // mean / rstd only when read (the gradient rule recomputes them)
  s.attrs = {{"stride", AttrKind::Ints, AttrValue::IntList({1, 1, 1})},
             {"padding", AttrKind::Ints, AttrValue::IntList({0, 0, 0})},
             {"output_padding", AttrKind::Ints, AttrValue::IntList({0, 0, 0})},
             {"eps", AttrKind::Float, AttrValue::Float(1e-5)},
             {"approximate", AttrKind::String, AttrValue::Str("none")},
             {"factor", AttrKind::Float, AttrValue::Float(1.0)},
             {"precise", AttrKind::Bool, AttrValue::Bool(false)},
             {"operands", AttrKind::String, AttrValue::Str("auto")}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& x = require_input(kOp, in, 0, "x");
    const TensorType& cw = require_input(kOp, in, 1, "conv_weight");
    const TensorType& lw = require_input(kOp, in, 3, "ln_weight");
    const TensorType& lb = require_input(kOp, in, 4, "ln_bias");
    TensorType z = ops::conv_transpose3d_out_type(kOp, x, cw, ops::optional_input(in, 2), a);
    auto types = ops::fused_ln_gelu_scale_out_types(kOp, z, lw, lb);
    ops::ln_gelu_scale_params(kOp, a, z.shape);
    FusedConvOperands operands;
    const std::string why = fused_conv_operands_reason(a.get_str("operands"), a.get_bool("precise"), x.shape[1], &operands);
    MINIDL_CHECK(why.empty(), kOp, ": ", why, " (x ", shape_str(x.shape), ")");
    return types;
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const Tensor& x = ctx.in(0);
    const Tensor& cw = ctx.in(1);
    ops::ConvGeom g = ops::conv_geom(x.shape(), cw.shape(), ctx.out(0).shape(), ctx.attrs());
    ops::LnGeluScaleParams p = ops::ln_gelu_scale_params(kOp, ctx.attrs(), ctx.out(0).shape());
    Tensor z = Tensor::empty(ctx.out(0).shape(), x.dtype());
    ops::dispatch_float(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      ops::conv_transpose3d_cpu<T>(x.data<T>(), cw.data<T>(), ctx.in_data_or_null<T>(2), z.data<T>(), g);
      ops::ln_gelu_scale_forward_cpu<T>(z.data<T>(), ctx.in(3).data<T>(), ctx.in(4).data<T>(), ctx.out(0).data<T>(),
                                        ctx.out_data_or_null<T>(1), ctx.out_data_or_null<T>(2), p);
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    ops::require_only_output0_grad(ctx, {"y", "mean", "rstd"});
    if (!ctx.grad_out(0)) return std::vector<Value*>(ctx.node.inputs.size(), nullptr);
    Graph& g = ctx.graph;
    Value* x = ctx.in(0);
    Value* cw = ctx.in(1);
    Value* cb = ctx.in(2);
    std::vector<Value*> conv_in = {x, cw};
    if (cb) conv_in.push_back(cb);
    Value* z = g.add("conv_transpose3d", conv_in, ops::pick_attrs(ctx.attrs(), {"stride", "padding", "output_padding"}));
    // The backward recomputes the row statistics from this z rather than using the saved ones:
    // the forward kernel's z rounds differently (TF32, another summation order), and mixing the
    // two doubles the gradients' error.
    Node* bw = g.add_node("fused_ln_gelu_scale_backward", {ctx.grad_out(0), z, ctx.in(3), ctx.in(4)},
                          ops::pick_attrs(ctx.attrs(), {"eps", "approximate", "factor"}));
    std::vector<Value*> conv = ops::conv_transpose3d_grads(g, bw->output(0), x, cw, nullptr, ctx.attrs());
    // The conv bias varies over channels only, so it is constant along every normalized (last-dim)
    // row and the LayerNorm subtracts it again: y does not depend on it, and its gradient is
    // exactly zero. Writing zeros saves a reduction over the whole 1 GiB dZ.
    Value* dcb = cb ? g.add("full", {}, Attrs{{"shape", AttrValue::IntList(cb->shape())}, {"value", AttrValue::Float(0)},
                                             {"dtype", AttrValue::Str(dtype_name(cb->dtype()))}})
                    : nullptr;
    return {conv[0], conv[1], dcb, bw->output(1), bw->output(2)};
  };
  return s;
}

}  // namespace

void register_fused_conv_transpose3d_ln_gelu_scale_ops(OpRegistry& r) { r.add(schema()); }

}  // namespace minidl
