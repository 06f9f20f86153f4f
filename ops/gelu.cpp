// gelu(x){approximate}: exact erf form or tanh approximation; gelu_backward(dy, x) = dy * gelu'(x).
// The element math lives in ops/gelu_math.h, shared with the fused ops and the CUDA kernels.
#include "ops/gelu_math.h"
#include "ops/op_util.h"

namespace minidl {
namespace {

using ops::TypeList;

OpSchema forward_schema() {
  OpSchema s;
  s.name = "gelu";
  s.input_names = {"x"};
  s.num_required_inputs = 1;
  s.output_names = {"y"};
  s.attrs = {{"approximate", AttrKind::String, AttrValue::Str("none")}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    ops::gelu_approximate_attr("gelu", a);
    return {require_input("gelu", in, 0, "x")};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const bool tanh_approx = ops::gelu_approximate_attr("gelu", ctx.attrs());
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* x = ctx.in(0).data<T>();
      T* y = ctx.out(0).data<T>();
      const int64_t n = ctx.out(0).numel();
      for (int64_t i = 0; i < n; ++i) y[i] = gelu_value<T>(x[i], tanh_approx);
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    if (!ctx.grad_out(0)) return {nullptr};
    return {ctx.graph.add("gelu_backward", {ctx.grad_out(0), ctx.in(0)},
                          ops::pick_attrs(ctx.attrs(), {"approximate"}))};
  };
  return s;
}

OpSchema backward_schema() {
  OpSchema s;
  s.name = "gelu_backward";
  s.input_names = {"dy", "x"};
  s.num_required_inputs = 2;
  s.output_names = {"dx"};
  s.attrs = {{"approximate", AttrKind::String, AttrValue::Str("none")}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& dy = require_input("gelu_backward", in, 0, "dy");
    const TensorType& x = require_input("gelu_backward", in, 1, "x");
    require_same_type("gelu_backward", dy, "dy", x, "x");
    ops::gelu_approximate_attr("gelu_backward", a);
    return {x};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const bool tanh_approx = ops::gelu_approximate_attr("gelu_backward", ctx.attrs());
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* dy = ctx.in(0).data<T>();
      const T* x = ctx.in(1).data<T>();
      T* dx = ctx.out(0).data<T>();
      const int64_t n = ctx.out(0).numel();
      for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_grad<T>(x[i], tanh_approx);
    });
  };
  return s;
}

}  // namespace

void register_gelu_ops(OpRegistry& r) {
  r.add(forward_schema());
  r.add(backward_schema());
}

}  // namespace minidl
