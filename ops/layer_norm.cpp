// layer_norm(x, weight?, bias?){normalized_shape, eps} -> y, mean, rstd (PyTorch semantics:
// normalizes over the trailing dims given by normalized_shape, biased variance). mean and rstd
// (shape x.shape[:-len(normalized_shape)]) are saved for layer_norm_backward, which gives dx,
// dweight and dbias in one pass. Row math: ops/op_util.h (shared with the fused op).
#include <algorithm>

#include "ops/op_util.h"

namespace minidl {
namespace {

using ops::TypeList;

// Checks x against normalized_shape; returns the leading shape (that of mean and rstd).
Shape ln_leading_shape(const std::string& op, const TensorType& x, const std::vector<int64_t>& ns) {
  MINIDL_CHECK(!ns.empty(), op, ": attribute 'normalized_shape' must not be empty");
  for (int64_t d : ns)
    MINIDL_CHECK(d > 0, op, ": attribute 'normalized_shape' ", shape_str(ns), " must have positive sizes");
  const size_t r = x.shape.size(), k = ns.size();
  const bool trailing = r >= k && std::equal(ns.begin(), ns.end(), x.shape.end() - static_cast<std::ptrdiff_t>(k));
  MINIDL_CHECK(trailing, op, ": normalized_shape ", shape_str(ns), " must equal the trailing dims of input 'x', ",
               "but x has shape ", shape_str(x.shape), " (expected [*, ", shape_str(ns).substr(1), ")");
  return ops::leading_shape(x.shape, r - k);
}

void check_affine(const std::string& op, const std::string& name, const TensorType* t, const TensorType& x,
                  const std::vector<int64_t>& ns) {
  if (!t) return;
  ops::check_shape(op, name, *t, ns, "normalized_shape");
  ops::check_same_dtype(op, name, *t, "x", x);
}

OpSchema forward_schema() {
  OpSchema s;
  s.name = "layer_norm";
  s.input_names = {"x", "weight", "bias"};
  s.num_required_inputs = 1;
  s.output_names = {"y", "mean", "rstd"};
  s.num_required_outputs = 1;  // mean / rstd only when read (by the backward, say)
  s.attrs = {{"normalized_shape", AttrKind::Ints, std::nullopt}, {"eps", AttrKind::Float, AttrValue::Float(1e-5)}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& x = require_input("layer_norm", in, 0, "x");
    const std::vector<int64_t>& ns = a.get_ints("normalized_shape");
    Shape lead = ln_leading_shape("layer_norm", x, ns);
    check_affine("layer_norm", "weight", ops::optional_input(in, 1), x, ns);
    check_affine("layer_norm", "bias", ops::optional_input(in, 2), x, ns);
    MINIDL_CHECK(a.get_float("eps") >= 0, "layer_norm: attribute 'eps' must be >= 0, got ", a.get("eps").str());
    return {x, TensorType{lead, x.dtype}, TensorType{lead, x.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const Tensor& x = ctx.in(0);
    const int64_t n = shape_numel(ctx.attrs().get_ints("normalized_shape"));
    const int64_t rows = x.numel() / n;
    const double eps = ctx.attrs().get_float("eps");
    ops::dispatch_float(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* xp = x.data<T>();
      const T* w = ctx.in_data_or_null<T>(1);
      const T* b = ctx.in_data_or_null<T>(2);
      T* y = ctx.out(0).data<T>();
      T* mean = ctx.out_data_or_null<T>(1);  // optional outputs
      T* rstd = ctx.out_data_or_null<T>(2);
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = xp + r * n;
        T* yr = y + r * n;
        T mu, rs;
        ops::ln_row_stats(xr, n, eps, mu, rs);
        if (mean) mean[r] = mu;
        if (rstd) rstd[r] = rs;
        for (int64_t i = 0; i < n; ++i) yr[i] = ops::ln_affine<T>(xr[i], mu, rs, w ? w[i] : T(1), b ? b[i] : T(0));
      }
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    ops::require_only_output0_grad(ctx, {"y", "mean", "rstd"});
    Value* weight = ctx.node.inputs.size() > 1 ? ctx.in(1) : nullptr;
    Value* bias = ctx.node.inputs.size() > 2 ? ctx.in(2) : nullptr;
    if (!ctx.grad_out(0)) return {nullptr, nullptr, nullptr};
    std::vector<Value*> ins = {ctx.grad_out(0), ctx.in(0), ctx.out(1), ctx.out(2)};
    if (weight) ins.push_back(weight);
    Node* bw = ctx.graph.add_node("layer_norm_backward", ins, ops::pick_attrs(ctx.attrs(), {"normalized_shape"}));
    std::vector<Value*> grads = {bw->output(0), weight ? bw->output(1) : nullptr, bias ? bw->output(2) : nullptr};
    grads.resize(ctx.node.inputs.size());
    return grads;
  };
  return s;
}

OpSchema backward_schema() {
  OpSchema s;
  s.name = "layer_norm_backward";
  s.input_names = {"dy", "x", "mean", "rstd", "weight"};
  s.num_required_inputs = 4;
  s.output_names = {"dx", "dweight", "dbias"};
  s.attrs = {{"normalized_shape", AttrKind::Ints, std::nullopt}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const std::string op = "layer_norm_backward";
    const TensorType& dy = require_input(op, in, 0, "dy");
    const TensorType& x = require_input(op, in, 1, "x");
    const TensorType& mean = require_input(op, in, 2, "mean");
    const TensorType& rstd = require_input(op, in, 3, "rstd");
    require_same_type(op, dy, "dy", x, "x");
    const std::vector<int64_t>& ns = a.get_ints("normalized_shape");
    Shape lead = ln_leading_shape(op, x, ns);
    ops::check_shape(op, "mean", mean, lead, "x and normalized_shape");
    ops::check_shape(op, "rstd", rstd, lead, "x and normalized_shape");
    ops::check_same_dtype(op, "mean", mean, "x", x);
    ops::check_same_dtype(op, "rstd", rstd, "x", x);
    check_affine(op, "weight", ops::optional_input(in, 4), x, ns);
    return {x, TensorType{ns, x.dtype}, TensorType{ns, x.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const Tensor& x = ctx.in(1);
    const int64_t n = shape_numel(ctx.attrs().get_ints("normalized_shape"));
    const int64_t rows = x.numel() / n;
    ops::dispatch_float(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* dy = ctx.in(0).data<T>();
      const T* xp = x.data<T>();
      const T* mean = ctx.in(2).data<T>();
      const T* rstd = ctx.in(3).data<T>();
      const T* w = ctx.in_data_or_null<T>(4);
      T* dx = ctx.out(0).data<T>();
      std::vector<double> dw(static_cast<size_t>(n), 0.0), db(static_cast<size_t>(n), 0.0);
      for (int64_t r = 0; r < rows; ++r)
        ops::ln_row_backward(dy + r * n, xp + r * n, mean[r], rstd[r], w, n, dx + r * n, dw.data(), db.data());
      T* dwp = ctx.out(1).data<T>();
      T* dbp = ctx.out(2).data<T>();
      for (int64_t i = 0; i < n; ++i) {
        dwp[i] = static_cast<T>(dw[static_cast<size_t>(i)]);
        dbp[i] = static_cast<T>(db[static_cast<size_t>(i)]);
      }
    });
  };
  return s;
}

}  // namespace

void register_layer_norm_ops(OpRegistry& r) {
  r.add(forward_schema());
  r.add(backward_schema());
}

}  // namespace minidl
