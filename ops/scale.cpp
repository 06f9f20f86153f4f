// scale(x){factor}: y = x * factor. Its gradient is the same scale of the incoming gradient.
#include "ops/op_util.h"

namespace minidl {

void register_scale_ops(OpRegistry& r) {
  OpSchema s;
  s.name = "scale";
  s.input_names = {"x"};
  s.num_required_inputs = 1;
  s.output_names = {"y"};
  s.attrs = {{"factor", AttrKind::Float, AttrValue::Float(1.0)}};
  s.shape_rule = [](const ops::TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const double f = a.get_float("factor");
    MINIDL_CHECK(std::isfinite(f), "scale: attribute 'factor' must be finite, got ", f);
    return {require_input("scale", in, 0, "x")};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    ops::dispatch_float(ctx.out(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T f = static_cast<T>(ctx.attrs().get_float("factor"));
      const T* x = ctx.in(0).data<T>();
      T* y = ctx.out(0).data<T>();
      const int64_t n = ctx.out(0).numel();
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] * f;
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    if (!ctx.grad_out(0)) return {nullptr};
    return {ops::grad_scale(ctx.graph, ctx.grad_out(0), ctx.attrs().get_float("factor"))};
  };
  r.add(std::move(s));
}

}  // namespace minidl
