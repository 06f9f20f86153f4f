// full (a constant), and the binary elementwise ops add, sub, mul on equal shapes (broadcasting
// is explicit in this IR: use expand first).
#include "ops/op_util.h"

namespace minidl {
namespace {

using ops::dispatch_float;
using ops::TypeList;

DType parse_dtype(const std::string& op, const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f64") return DType::F64;
  MINIDL_FAIL(op, ": attribute 'dtype' must be \"f32\" or \"f64\", got \"", s, "\"");
}

OpSchema full_schema() {
  OpSchema s;
  s.name = "full";
  s.output_names = {"y"};
  s.attrs = {{"shape", AttrKind::Ints, std::nullopt},
             {"value", AttrKind::Float, std::nullopt},
             {"dtype", AttrKind::String, AttrValue::Str("f32")}};
  s.shape_rule = [](const TypeList&, const Attrs& a) -> std::vector<TensorType> {
    const Shape& shape = a.get_ints("shape");
    for (int64_t d : shape)
      MINIDL_CHECK(d >= 0, "full: attribute 'shape' has a negative dimension: ", shape_str(shape));
    return {TensorType{shape, parse_dtype("full", a.get_str("dtype"))}};
  };
  s.cpu_kernel = [](KernelContext& ctx) { ctx.out(0).fill_(ctx.attrs().get_float("value")); };
  s.grad_rule = [](GradContext&) { return std::vector<Value*>{}; };  // no inputs
  return s;
}

enum class BinOp { Add, Sub, Mul };

template <class T>
void binary_cpu(BinOp op, const T* a, const T* b, T* y, int64_t n) {
  switch (op) {
    case BinOp::Add: for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i]; break;
    case BinOp::Sub: for (int64_t i = 0; i < n; ++i) y[i] = a[i] - b[i]; break;
    case BinOp::Mul: for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i]; break;
  }
}

OpSchema binary_schema(const std::string& name, BinOp op) {
  OpSchema s;
  s.name = name;
  s.input_names = {"a", "b"};
  s.num_required_inputs = 2;
  s.output_names = {"y"};
  s.shape_rule = [name](const TypeList& in, const Attrs&) -> std::vector<TensorType> {
    const TensorType& a = require_input(name, in, 0, "a");
    const TensorType& b = require_input(name, in, 1, "b");
    require_same_type(name, a, "a", b, "b");
    return {a};
  };
  s.cpu_kernel = [op](KernelContext& ctx) {
    dispatch_float(ctx.out(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      binary_cpu<T>(op, ctx.in(0).data<T>(), ctx.in(1).data<T>(), ctx.out(0).data<T>(), ctx.out(0).numel());
    });
  };
  s.grad_rule = [op](GradContext& ctx) -> std::vector<Value*> {
    Value* g = ctx.grad_out(0);
    if (!g) return {nullptr, nullptr};
    switch (op) {
      case BinOp::Add: return {g, g};
      case BinOp::Sub: return {g, ops::grad_scale(ctx.graph, g, -1.0)};
      case BinOp::Mul: return {ctx.graph.add("mul", {g, ctx.in(1)}), ctx.graph.add("mul", {g, ctx.in(0)})};
    }
    return {nullptr, nullptr};
  };
  return s;
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  r.add(full_schema());
  r.add(binary_schema("add", BinOp::Add));
  r.add(binary_schema("sub", BinOp::Sub));
  r.add(binary_schema("mul", BinOp::Mul));
}

}  // namespace minidl
