// fused_ln_gelu_scale(x, weight, bias){eps, approximate, factor} -> y, mean, rstd:
// y = factor * gelu(layer_norm over the last dim of x), computed row by row in one pass with
// the same element math as the unfused ops (ops/op_util.h, ops/gelu_math.h), so results match.
// fused_ln_gelu_scale_backward recomputes the normalized row from x, mean and rstd, forms
// dz = dy * factor * gelu'(z) and runs the LayerNorm backward on it, all in one row-wise pass.
#include "ops/gelu_math.h"
#include "ops/op_util.h"

namespace minidl {
namespace ops {

std::vector<TensorType> fused_ln_gelu_scale_out_types(const std::string& op, const TensorType& x,
                                                      const TensorType& w, const TensorType& b) {
  check_min_rank(op, "x", x, 1);
  const int64_t C = x.shape.back();
  MINIDL_CHECK(C > 0, op, ": input 'x' has an empty last dim: shape ", shape_str(x.shape));
  check_shape(op, "ln_weight", w, {C}, "the last dim of 'x' " + shape_str(x.shape));
  check_shape(op, "ln_bias", b, {C}, "the last dim of 'x' " + shape_str(x.shape));
  check_same_dtype(op, "ln_weight", w, "x", x);
  check_same_dtype(op, "ln_bias", b, "x", x);
  const TensorType stats{leading_shape(x.shape, x.shape.size() - 1), x.dtype};
  return {x, stats, stats};
}

LnGeluScaleParams ln_gelu_scale_params(const std::string& op, const Attrs& a, const Shape& x_shape) {
  LnGeluScaleParams p;
  p.eps = a.get_float("eps");
  MINIDL_CHECK(p.eps >= 0, op, ": attribute 'eps' must be >= 0, got ", a.get("eps").str());
  p.tanh_approx = gelu_approximate_attr(op, a);
  p.factor = a.get_float("factor");
  MINIDL_CHECK(std::isfinite(p.factor), op, ": attribute 'factor' must be finite, got ", a.get("factor").str());
  p.cols = x_shape.empty() ? 1 : x_shape.back();
  p.rows = p.cols > 0 ? shape_numel(x_shape) / p.cols : 0;
  return p;
}

template <class T>
void ln_gelu_scale_forward_cpu(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                               const LnGeluScaleParams& p) {
  const int64_t C = p.cols;
  const T f = static_cast<T>(p.factor);
  for (int64_t r = 0; r < p.rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    T mu, rs;
    ln_row_stats(xr, C, p.eps, mu, rs);
    if (mean) mean[r] = mu;  // either may be null: not wanted
    if (rstd) rstd[r] = rs;
    for (int64_t i = 0; i < C; ++i) yr[i] = gelu_value<T>(ln_affine<T>(xr[i], mu, rs, w[i], b[i]), p.tanh_approx) * f;
  }
}

template <class T>
void ln_gelu_scale_backward_cpu(const T* dy, const T* x, const T* w, const T* b, const T* mean, const T* rstd,
                                T* dx, T* dw, T* db, const LnGeluScaleParams& p) {
  const int64_t C = p.cols;
  const T f = static_cast<T>(p.factor);
  std::vector<T> dz(static_cast<size_t>(C));
  std::vector<double> dw_acc(static_cast<size_t>(C), 0.0), db_acc(static_cast<size_t>(C), 0.0);
  for (int64_t r = 0; r < p.rows; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    T mu, rs;  // the saved statistics, or recomputed from x when none were passed
    if (mean) {
      mu = mean[r];
      rs = rstd[r];
    } else {
      ln_row_stats(xr, C, p.eps, mu, rs);
    }
    for (int64_t i = 0; i < C; ++i) {
      const T z = ln_affine<T>(xr[i], mu, rs, w[i], b[i]);
      dz[static_cast<size_t>(i)] = (dyr[i] * f) * gelu_grad<T>(z, p.tanh_approx);
    }
    ln_row_backward(dz.data(), xr, mu, rs, w, C, dx + r * C, dw_acc.data(), db_acc.data());
  }
  for (int64_t i = 0; i < C; ++i) {
    dw[i] = static_cast<T>(dw_acc[static_cast<size_t>(i)]);
    db[i] = static_cast<T>(db_acc[static_cast<size_t>(i)]);
  }
}

template void ln_gelu_scale_forward_cpu<float>(const float*, const float*, const float*, float*, float*, float*,
                                               const LnGeluScaleParams&);
template void ln_gelu_scale_forward_cpu<double>(const double*, const double*, const double*, double*, double*,
                                                double*, const LnGeluScaleParams&);
template void ln_gelu_scale_backward_cpu<float>(const float*, const float*, const float*, const float*, const float*,
                                                const float*, float*, float*, float*, const LnGeluScaleParams&);
template void ln_gelu_scale_backward_cpu<double>(const double*, const double*, const double*, const double*,
                                                 const double*, const double*, double*, double*, double*,
                                                 const LnGeluScaleParams&);

}  // namespace ops

namespace {

using ops::TypeList;

std::vector<AttrSpec> epilogue_attrs() {
  return {{"eps", AttrKind::Float, AttrValue::Float(1e-5)},
          {"approximate", AttrKind::String, AttrValue::Str("none")},
          {"factor", AttrKind::Float, AttrValue::Float(1.0)}};
}

OpSchema forward_schema() {
  OpSchema s;
  s.name = "fused_ln_gelu_scale";
  s.input_names = {"x", "ln_weight", "ln_bias"};
  s.num_required_inputs = 3;
  s.output_names = {"y", "mean", "rstd"};
  s.num_required_outputs = 1;  // mean / rstd only when read (by the backward, say)
  s.attrs = epilogue_attrs();
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const std::string op = "fused_ln_gelu_scale";
    const TensorType& x = require_input(op, in, 0, "x");
    auto types = ops::fused_ln_gelu_scale_out_types(op, x, require_input(op, in, 1, "ln_weight"),
                                                    require_input(op, in, 2, "ln_bias"));
    ops::ln_gelu_scale_params(op, a, x.shape);
    return types;
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    ops::LnGeluScaleParams p = ops::ln_gelu_scale_params("fused_ln_gelu_scale", ctx.attrs(), ctx.in(0).shape());
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      ops::ln_gelu_scale_forward_cpu<T>(ctx.in(0).data<T>(), ctx.in(1).data<T>(), ctx.in(2).data<T>(),
                                        ctx.out(0).data<T>(), ctx.out_data_or_null<T>(1), ctx.out_data_or_null<T>(2), p);
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    ops::require_only_output0_grad(ctx, {"y", "mean", "rstd"});
    if (!ctx.grad_out(0)) return {nullptr, nullptr, nullptr};
    Node* bw = ctx.graph.add_node("fused_ln_gelu_scale_backward",
                                  {ctx.grad_out(0), ctx.in(0), ctx.in(1), ctx.in(2), ctx.out(1), ctx.out(2)},
                                  ops::pick_attrs(ctx.attrs(), {"eps", "approximate", "factor"}));
    return {bw->output(0), bw->output(1), bw->output(2)};
  };
  return s;
}

OpSchema backward_schema() {
  OpSchema s;
  s.name = "fused_ln_gelu_scale_backward";
  // mean and rstd may be omitted (both): the kernel then recomputes them from x. The fused conv's
  // gradient does that, because its x is a recomputed z whose rounding differs from the forward's.
  s.input_names = {"dy", "x", "ln_weight", "ln_bias", "mean", "rstd"};
  s.num_required_inputs = 4;
  s.output_names = {"dx", "dweight", "dbias"};
  s.attrs = epilogue_attrs();
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const std::string op = "fused_ln_gelu_scale_backward";
    const TensorType& dy = require_input(op, in, 0, "dy");
    const TensorType& x = require_input(op, in, 1, "x");
    const TensorType& w = require_input(op, in, 2, "ln_weight");
    require_same_type(op, dy, "dy", x, "x");
    auto fwd = ops::fused_ln_gelu_scale_out_types(op, x, w, require_input(op, in, 3, "ln_bias"));
    const bool has_stats = in.size() > 4 && in[4];
    MINIDL_CHECK(has_stats == (in.size() > 5 && in[5]), op, ": pass both 'mean' and 'rstd' or neither");
    for (size_t i : {size_t(4), size_t(5)}) {
      if (!has_stats) break;
      const std::string name = i == 4 ? "mean" : "rstd";
      const TensorType& t = require_input(op, in, i, name);
      ops::check_shape(op, name, t, fwd[1].shape, "x " + shape_str(x.shape));
      ops::check_same_dtype(op, name, t, "x", x);
    }
    ops::ln_gelu_scale_params(op, a, x.shape);
    return {x, w, w};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    ops::LnGeluScaleParams p =
        ops::ln_gelu_scale_params("fused_ln_gelu_scale_backward", ctx.attrs(), ctx.in(1).shape());
    const bool stats = ctx.inputs.size() > 4 && ctx.in(4).defined();
    ops::dispatch_float(ctx.in(1).dtype(), [&](auto tag) {
      using T = decltype(tag);
      ops::ln_gelu_scale_backward_cpu<T>(ctx.in(0).data<T>(), ctx.in(1).data<T>(), ctx.in(2).data<T>(),
                                         ctx.in(3).data<T>(), stats ? ctx.in(4).data<T>() : nullptr,
                                         stats ? ctx.in(5).data<T>() : nullptr,
                                         ctx.out(0).data<T>(), ctx.out(1).data<T>(), ctx.out(2).data<T>(), p);
    });
  };
  return s;
}

}  // namespace

void register_fused_ln_gelu_scale_ops(OpRegistry& r) {
  r.add(forward_schema());
  r.add(backward_schema());
}

}  // namespace minidl
