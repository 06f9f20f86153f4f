// sum / mean over dims, and expand (numpy-style broadcast). They are each other's gradients:
// the gradient of a reduction is an expand of the incoming gradient, and the gradient of an
// expand is a sum over the broadcast dims.
#include <algorithm>

#include "ops/op_util.h"

namespace minidl {
namespace {

using ops::dispatch_float;
using ops::TypeList;

struct ReduceInfo {
  Shape out;               // the result shape
  Shape keep;              // the result shape with reduced dims kept as 1
  std::vector<bool> reduced;
  int64_t count = 1;       // elements folded into each result
};

ReduceInfo reduce_info(const std::string& op, const Shape& x, const Attrs& a) {
  const int64_t rank = static_cast<int64_t>(x.size());
  ReduceInfo r;
  r.reduced.assign(x.size(), false);
  const std::vector<int64_t>& dims = a.get_ints("dims");
  if (dims.empty()) {
    r.reduced.assign(x.size(), true);  // [] reduces everything
  } else {
    for (int64_t d : dims) {
      const int64_t w = ops::wrap_dim(op, d, rank);
      MINIDL_CHECK(!r.reduced[static_cast<size_t>(w)], op, ": dim ", d, " appears twice in dims ",
                   a.get("dims").str());
      r.reduced[static_cast<size_t>(w)] = true;
    }
  }
  const bool keepdim = a.get_bool("keepdim");
  for (size_t d = 0; d < x.size(); ++d) {
    if (r.reduced[d]) {
      r.count *= x[d];
      r.keep.push_back(1);
      if (keepdim) r.out.push_back(1);
    } else {
      r.keep.push_back(x[d]);
      r.out.push_back(x[d]);
    }
  }
  return r;
}

template <class T>
void reduce_cpu(const T* x, const Shape& xs, const ReduceInfo& info, bool mean, T* y) {
  // Walk x; each element lands in the result slot given by the keep-shape strides, with 0 on
  // the reduced dims. Accumulate in double for accuracy.
  std::vector<int64_t> st = contiguous_strides(info.keep);
  for (size_t d = 0; d < xs.size(); ++d)
    if (info.reduced[d]) st[d] = 0;
  std::vector<double> acc(static_cast<size_t>(shape_numel(info.out)), 0.0);
  ops::walk_strided(xs, st, [&](int64_t lin, int64_t off) { acc[static_cast<size_t>(off)] += x[lin]; });
  const double div = mean ? static_cast<double>(info.count) : 1.0;  // count 0 gives NaN, as in PyTorch
  for (size_t i = 0; i < acc.size(); ++i) y[i] = static_cast<T>(acc[i] / div);
}

OpSchema reduce_schema(const std::string& name, bool mean) {
  OpSchema s;
  s.name = name;
  s.input_names = {"x"};
  s.num_required_inputs = 1;
  s.output_names = {"y"};
  s.attrs = {{"dims", AttrKind::Ints, AttrValue::IntList({})}, {"keepdim", AttrKind::Bool, AttrValue::Bool(false)}};
  s.shape_rule = [name](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& x = require_input(name, in, 0, "x");
    return {TensorType{reduce_info(name, x.shape, a).out, x.dtype}};
  };
  s.cpu_kernel = [name, mean](KernelContext& ctx) {
    const Tensor& x = ctx.in(0);
    ReduceInfo info = reduce_info(name, x.shape(), ctx.attrs());
    dispatch_float(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      reduce_cpu<T>(x.data<T>(), x.shape(), info, mean, ctx.out(0).data<T>());
    });
  };
  s.grad_rule = [name, mean](GradContext& ctx) -> std::vector<Value*> {
    Value* g = ctx.grad_out(0);
    if (!g) return {nullptr};
    const Shape& xs = ctx.in(0)->shape();
    ReduceInfo info = reduce_info(name, xs, ctx.attrs());
    Value* r = ops::grad_reshape(ctx.graph, g, info.keep);
    if (r->shape() != xs) r = ctx.graph.add("expand", {r}, Attrs{{"shape", AttrValue::IntList(xs)}});
    if (mean) r = ops::grad_scale(ctx.graph, r, 1.0 / static_cast<double>(info.count));
    return {r};
  };
  return s;
}

// Broadcast of x to `shape`: x's dims align with the trailing dims of shape; each must equal the
// target or be 1; -1 in the target keeps x's size there. `bcast[d]` marks target dims x repeats.
struct ExpandInfo {
  Shape out;
  std::vector<bool> bcast;
};

ExpandInfo expand_info(const Shape& x, const std::vector<int64_t>& target) {
  const size_t r = target.size(), k = x.size();
  MINIDL_CHECK(r >= k, "expand: target shape ", shape_str(target), " has fewer dims than input 'x' with shape ",
               shape_str(x));
  ExpandInfo e;
  e.out = target;
  e.bcast.assign(r, true);
  for (size_t d = 0; d < r; ++d) {
    if (d < r - k) {
      MINIDL_CHECK(target[d] >= 0, "expand: target shape ", shape_str(target), " has a negative size in new dim ", d);
      continue;
    }
    const int64_t xd = x[d - (r - k)];
    int64_t t = target[d];
    if (t == -1) t = xd;
    MINIDL_CHECK(t >= 0 && (xd == t || xd == 1), "expand: input 'x' with shape ", shape_str(x),
                 " cannot be broadcast to ", shape_str(target), " (dim ", d, ")");
    e.out[d] = t;
    e.bcast[d] = (xd != t);
  }
  return e;
}

OpSchema expand_schema() {
  OpSchema s;
  s.name = "expand";
  s.input_names = {"x"};
  s.num_required_inputs = 1;
  s.output_names = {"y"};
  s.attrs = {{"shape", AttrKind::Ints, std::nullopt}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& x = require_input("expand", in, 0, "x");
    return {TensorType{expand_info(x.shape, a.get_ints("shape")).out, x.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const Tensor& x = ctx.in(0);
    ExpandInfo e = expand_info(x.shape(), ctx.attrs().get_ints("shape"));
    // Strides into x for every output dim: 0 where x is repeated (or absent).
    const size_t r = e.out.size(), k = x.shape().size();
    std::vector<int64_t> xs = contiguous_strides(x.shape()), st(r, 0);
    for (size_t d = r - k; d < r; ++d)
      if (!e.bcast[d]) st[d] = xs[d - (r - k)];
    dispatch_float(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* xp = x.data<T>();
      T* y = ctx.out(0).data<T>();
      ops::walk_strided(e.out, st, [&](int64_t lin, int64_t off) { y[lin] = xp[off]; });
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    Value* g = ctx.grad_out(0);
    if (!g) return {nullptr};
    const Shape& xs = ctx.in(0)->shape();
    ExpandInfo e = expand_info(xs, ctx.attrs().get_ints("shape"));
    std::vector<int64_t> dims;
    for (size_t d = 0; d < e.bcast.size(); ++d)
      if (e.bcast[d]) dims.push_back(static_cast<int64_t>(d));
    if (dims.empty()) return {ops::grad_reshape(ctx.graph, g, xs)};
    Value* r = ctx.graph.add("sum", {g}, Attrs{{"dims", AttrValue::IntList(dims)}, {"keepdim", AttrValue::Bool(false)}});
    return {ops::grad_reshape(ctx.graph, r, xs)};
  };
  return s;
}

}  // namespace

void register_reduce_ops(OpRegistry& r) {
  r.add(reduce_schema("sum", false));
  r.add(reduce_schema("mean", true));
  r.add(expand_schema());
}

}  // namespace minidl
