// mse_loss(input, target){reduction}: mean (or sum) of squared differences, a scalar [].
// mse_loss_backward(grad, input, target) gives d input; d target is its negative.
#include "ops/op_util.h"

namespace minidl {
namespace {

using ops::TypeList;

bool is_mean_reduction(const std::string& op, const Attrs& a) {
  const std::string& r = a.get_str("reduction");
  MINIDL_CHECK(r == "mean" || r == "sum", op, ": attribute 'reduction' must be \"mean\" or \"sum\", got \"", r, "\"");
  return r == "mean";
}

OpSchema forward_schema() {
  OpSchema s;
  s.name = "mse_loss";
  s.input_names = {"input", "target"};
  s.num_required_inputs = 2;
  s.output_names = {"loss"};
  s.attrs = {{"reduction", AttrKind::String, AttrValue::Str("mean")}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& x = require_input("mse_loss", in, 0, "input");
    const TensorType& t = require_input("mse_loss", in, 1, "target");
    require_same_type("mse_loss", x, "input", t, "target");
    is_mean_reduction("mse_loss", a);
    return {TensorType{{}, x.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const bool mean = is_mean_reduction("mse_loss", ctx.attrs());
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* x = ctx.in(0).data<T>();
      const T* t = ctx.in(1).data<T>();
      const int64_t n = ctx.in(0).numel();
      double acc = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = static_cast<double>(x[i]) - static_cast<double>(t[i]);
        acc += d * d;
      }
      ctx.out(0).data<T>()[0] = static_cast<T>(mean ? acc / static_cast<double>(n) : acc);
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    if (!ctx.grad_out(0)) return {nullptr, nullptr};
    Value* dx = ctx.graph.add("mse_loss_backward", {ctx.grad_out(0), ctx.in(0), ctx.in(1)},
                              ops::pick_attrs(ctx.attrs(), {"reduction"}));
    return {dx, ops::grad_scale(ctx.graph, dx, -1.0)};
  };
  return s;
}

OpSchema backward_schema() {
  OpSchema s;
  s.name = "mse_loss_backward";
  s.input_names = {"grad", "input", "target"};
  s.num_required_inputs = 3;
  s.output_names = {"grad_input"};
  s.attrs = {{"reduction", AttrKind::String, AttrValue::Str("mean")}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& g = require_input("mse_loss_backward", in, 0, "grad");
    const TensorType& x = require_input("mse_loss_backward", in, 1, "input");
    const TensorType& t = require_input("mse_loss_backward", in, 2, "target");
    require_same_type("mse_loss_backward", x, "input", t, "target");
    ops::check_same_dtype("mse_loss_backward", "grad", g, "input", x);
    MINIDL_CHECK(shape_numel(g.shape) == 1, "mse_loss_backward: input 'grad' must be a scalar, got shape ",
                 shape_str(g.shape));
    is_mean_reduction("mse_loss_backward", a);
    return {x};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const bool mean = is_mean_reduction("mse_loss_backward", ctx.attrs());
    ops::dispatch_float(ctx.in(1).dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* x = ctx.in(1).data<T>();
      const T* t = ctx.in(2).data<T>();
      T* dx = ctx.out(0).data<T>();
      const int64_t n = ctx.in(1).numel();
      // d/dx of sum (x - t)^2 is 2 (x - t); mean divides by n.
      const T k = static_cast<T>(2.0 * static_cast<double>(ctx.in(0).data<T>()[0]) /
                                 (mean ? static_cast<double>(n) : 1.0));
      for (int64_t i = 0; i < n; ++i) dx[i] = k * (x[i] - t[i]);
    });
  };
  return s;
}

}  // namespace

void register_mse_loss_ops(OpRegistry& r) {
  r.add(forward_schema());
  r.add(backward_schema());
}

}  // namespace minidl
