// reshape(x){shape}: same elements, new shape (one -1 is inferred). The CPU kernel copies into
// the output the executor allocated; the gradient reshapes back.
#include <cstring>

#include "ops/op_util.h"

namespace minidl {
namespace {

Shape reshape_target(const Shape& x, const std::vector<int64_t>& target) {
  Shape out = target;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == -1) {
      MINIDL_CHECK(infer < 0, "reshape: attribute 'shape' ", shape_str(target), " has more than one -1");
      infer = static_cast<int>(i);
    } else {
      MINIDL_CHECK(target[i] >= 0, "reshape: attribute 'shape' ", shape_str(target), " has a negative size");
      known *= target[i];
    }
  }
  const int64_t n = shape_numel(x);
  if (infer >= 0) {
    MINIDL_CHECK(known > 0 && n % known == 0, "reshape: input 'x' with shape ", shape_str(x), " (", n,
                 " elements) cannot be viewed as ", shape_str(target));
    out[static_cast<size_t>(infer)] = n / known;
  } else {
    MINIDL_CHECK(known == n, "reshape: input 'x' with shape ", shape_str(x), " (", n, " elements) cannot be viewed as ",
                 shape_str(target), " (", known, " elements)");
  }
  return out;
}

}  // namespace

void register_reshape_ops(OpRegistry& r) {
  OpSchema s;
  s.name = "reshape";
  s.input_names = {"x"};
  s.num_required_inputs = 1;
  s.output_names = {"y"};
  s.attrs = {{"shape", AttrKind::Ints, std::nullopt}};
  s.shape_rule = [](const ops::TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& x = require_input("reshape", in, 0, "x");
    return {TensorType{reshape_target(x.shape, a.get_ints("shape")), x.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    if (ctx.out(0).nbytes() > 0) std::memcpy(ctx.out(0).raw_data(), ctx.in(0).raw_data(), ctx.out(0).nbytes());
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    if (!ctx.grad_out(0)) return {nullptr};
    return {ops::grad_reshape(ctx.graph, ctx.grad_out(0), ctx.in(0)->shape())};
  };
  r.add(std::move(s));
}

}  // namespace minidl
