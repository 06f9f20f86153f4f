// conv_transpose3d(x, weight, bias?){stride, padding, output_padding, groups=1} with PyTorch
// semantics: x [N, C_in, D, H, W], weight [C_in, C_out, kD, kH, kW], bias [C_out],
// out = (in - 1) * stride - 2 * padding + k + output_padding per spatial dim.
// Its gradients are three ops here too: grad_input (a strided conv3d of dy with the weight),
// grad_weight and grad_bias.
//
// CPU kernels: the transposed convolution is a GEMM followed by a scatter. Per batch item,
// columns[C_out*k^3, DHW] = W^T[C_out*k^3, C_in] x X[C_in, DHW], then each column entry is added
// to the output position it lands on (col2im). The gradients run the same in reverse: gather dy
// into columns (im2col), then one GEMM. Columns are built a few input depth slices at a time so
// the buffer stays bounded for large inputs.
#include <Eigen/Core>
#include <algorithm>

#include "ops/op_util.h"

namespace minidl {
namespace ops {
namespace {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MutMap = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;

constexpr int64_t kMaxColumnElems = int64_t(1) << 23;  // 32 MiB of f32 columns at most

// Input positions i in [0, n_in) whose tap k lands inside the output, 0 <= i*s - p + k < n_out,
// are [lo, hi).
inline void valid_range(int64_t n_in, int64_t n_out, int64_t s, int64_t p, int64_t k, int64_t& lo, int64_t& hi) {
  const int64_t a = p - k;  // need i*s >= a
  lo = a > 0 ? (a + s - 1) / s : 0;
  const int64_t b = n_out - 1 + p - k;  // need i*s <= b
  hi = b < 0 ? 0 : std::min(n_in, b / s + 1);
  if (hi < lo) hi = lo;
}

// How many input depth slices go into one column buffer.
int64_t depth_chunk(const ConvGeom& g) {
  const int64_t per_slice = g.Cout * g.k[0] * g.k[1] * g.k[2] * g.in[1] * g.in[2];
  return std::max<int64_t>(1, std::min<int64_t>(g.in[0], kMaxColumnElems / std::max<int64_t>(per_slice, 1)));
}

// Calls f(col_row_index, kd, kh, kw, co) for every row of the column matrix, in row order.
template <class F>
void for_each_tap(const ConvGeom& g, F&& f) {
  int64_t row = 0;
  for (int64_t co = 0; co < g.Cout; ++co)
    for (int64_t a = 0; a < g.k[0]; ++a)
      for (int64_t b = 0; b < g.k[1]; ++b)
        for (int64_t c = 0; c < g.k[2]; ++c) f(row++, a, b, c, co);
}

// yn[co, od, oh, ow] += cols[(co, a, b, c), (id, ih, iw)] for input depths [d0, d0 + nd).
template <class T>
void col2im_add(const T* cols, const ConvGeom& g, int64_t d0, int64_t nd, T* yn) {
  const int64_t H = g.in[1], W = g.in[2], cs = nd * H * W;
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2], Sout = OD * OH * OW;
  const int64_t sd = g.stride[0], sh = g.stride[1], sw = g.stride[2];
  for_each_tap(g, [&](int64_t row, int64_t a, int64_t b, int64_t c, int64_t co) {
    const T* col = cols + row * cs;
    T* yc = yn + co * Sout;
    int64_t lo, hi;
    valid_range(W, OW, sw, g.pad[2], c, lo, hi);
    for (int64_t j = 0; j < nd; ++j) {
      const int64_t od = (d0 + j) * sd - g.pad[0] + a;
      if (od < 0 || od >= OD) continue;
      for (int64_t ih = 0; ih < H; ++ih) {
        const int64_t oh = ih * sh - g.pad[1] + b;
        if (oh < 0 || oh >= OH) continue;
        const T* src = col + (j * H + ih) * W;
        T* dst = yc + (od * OH + oh) * OW;
        for (int64_t iw = lo, ow = lo * sw - g.pad[2] + c; iw < hi; ++iw, ow += sw) dst[ow] += src[iw];
      }
    }
  });
}

// cols[(co, a, b, c), (id, ih, iw)] = dyn[co, id*s - p + a, ...] (0 outside) for depths [d0, d0 + nd).
template <class T>
void im2col_gather(const T* dyn, const ConvGeom& g, int64_t d0, int64_t nd, T* cols) {
  const int64_t H = g.in[1], W = g.in[2], cs = nd * H * W;
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2], Sout = OD * OH * OW;
  const int64_t sd = g.stride[0], sh = g.stride[1], sw = g.stride[2];
  for_each_tap(g, [&](int64_t row, int64_t a, int64_t b, int64_t c, int64_t co) {
    T* col = cols + row * cs;
    const T* dc = dyn + co * Sout;
    int64_t lo, hi;
    valid_range(W, OW, sw, g.pad[2], c, lo, hi);
    for (int64_t j = 0; j < nd; ++j) {
      const int64_t od = (d0 + j) * sd - g.pad[0] + a;
      for (int64_t ih = 0; ih < H; ++ih) {
        T* dst = col + (j * H + ih) * W;
        const int64_t oh = ih * sh - g.pad[1] + b;
        if (od < 0 || od >= OD || oh < 0 || oh >= OH) {
          std::fill(dst, dst + W, T(0));
          continue;
        }
        const T* src = dc + (od * OH + oh) * OW;
        std::fill(dst, dst + lo, T(0));
        for (int64_t iw = lo, ow = lo * sw - g.pad[2] + c; iw < hi; ++iw, ow += sw) dst[iw] = src[ow];
        std::fill(dst + hi, dst + W, T(0));
      }
    }
  });
}

// in = (out spatial, via the formula) must be consistent with the given stride/padding/kernel:
// out - ((in - 1) * s - 2p + k) is the output padding, which must lie in [0, s).
void check_spatial_consistent(const std::string& op, const Shape& in, const Shape& out, const std::vector<int64_t>& k,
                              const std::vector<int64_t>& s, const std::vector<int64_t>& p) {
  for (size_t d = 0; d < 3; ++d) {
    const int64_t base = (in[d + 2] - 1) * s[d] - 2 * p[d] + k[d];
    const int64_t extra = out[d + 2] - base;
    MINIDL_CHECK(extra >= 0 && extra < s[d], op, ": gradient shape ", shape_str(out),
                 " does not match input shape ", shape_str(in), " with kernel ", shape_str(k), ", stride ",
                 shape_str(s), ", padding ", shape_str(p), " (spatial dim ", d, ")");
  }
}

void check_conv_attrs(const std::string& op, const Attrs& a, std::vector<int64_t>& s, std::vector<int64_t>& p) {
  s = ints_attr(op, a, "stride", 3, 1);
  p = ints_attr(op, a, "padding", 3, 0);
}

}  // namespace

ConvGeom conv_geom(const Shape& x, const Shape& w, const Shape& y, const Attrs& a) {
  ConvGeom g;
  g.N = x[0];
  g.Cin = x[1];
  g.Cout = w[1];
  const std::vector<int64_t>& s = a.get_ints("stride");
  const std::vector<int64_t>& p = a.get_ints("padding");
  for (int d = 0; d < 3; ++d) {
    g.in[d] = x[static_cast<size_t>(d) + 2];
    g.out[d] = y[static_cast<size_t>(d) + 2];
    g.k[d] = w[static_cast<size_t>(d) + 2];
    g.stride[d] = s[static_cast<size_t>(d)];
    g.pad[d] = p[static_cast<size_t>(d)];
  }
  return g;
}

TensorType conv_transpose3d_out_type(const std::string& op, const TensorType& x, const TensorType& w,
                                     const TensorType* bias, const Attrs& a) {
  if (a.has("groups"))
    MINIDL_CHECK(a.get_int("groups") == 1, op, ": groups=", a.get_int("groups"),
                 " is not supported (only groups=1)");
  std::vector<int64_t> s, p;
  check_conv_attrs(op, a, s, p);
  const std::vector<int64_t> op_pad = ints_attr(op, a, "output_padding", 3, 0);
  for (size_t d = 0; d < 3; ++d)
    MINIDL_CHECK(op_pad[d] < s[d], op, ": output_padding ", shape_str(op_pad), " must be smaller than stride ",
                 shape_str(s), " in every dim");
  MINIDL_CHECK(x.shape.size() == 5, op, ": input 'x' must have rank 5 [N, C_in, D, H, W], got shape ",
               shape_str(x.shape));
  MINIDL_CHECK(w.shape.size() == 5, op, ": input 'weight' must have rank 5 [C_in, C_out, kD, kH, kW], got shape ",
               shape_str(w.shape));
  check_no_zero_dims(op, "x", x);
  check_no_zero_dims(op, "weight", w);
  MINIDL_CHECK(x.shape[1] == w.shape[0], op, ": input 'x' has ", x.shape[1], " channels (shape ", shape_str(x.shape),
               ") but 'weight' with shape ", shape_str(w.shape), " expects C_in = ", w.shape[0],
               " (layout [C_in, C_out, kD, kH, kW])");
  check_same_dtype(op, "x", x, "weight", w);
  if (bias) {
    check_shape(op, "bias", *bias, {w.shape[1]}, "C_out of 'weight' " + shape_str(w.shape));
    check_same_dtype(op, "bias", *bias, "x", x);
  }
  Shape out = {x.shape[0], w.shape[1], 0, 0, 0};
  for (size_t d = 0; d < 3; ++d) {
    out[d + 2] = (x.shape[d + 2] - 1) * s[d] - 2 * p[d] + w.shape[d + 2] + op_pad[d];
    MINIDL_CHECK(out[d + 2] > 0, op, ": output size ", out[d + 2], " in spatial dim ", d,
                 " is not positive (input ", shape_str(x.shape), ", weight ", shape_str(w.shape), ", stride ",
                 shape_str(s), ", padding ", shape_str(p), ", output_padding ", shape_str(op_pad), ")");
  }
  return TensorType{out, x.dtype};
}

template <class T>
void conv_transpose3d_cpu(const T* x, const T* w, const T* bias, T* y, const ConvGeom& g) {
  const int64_t CK = g.Cout * g.k[0] * g.k[1] * g.k[2];
  const int64_t plane = g.in[1] * g.in[2], Sin = g.in[0] * plane;
  const int64_t Sout = g.out[0] * g.out[1] * g.out[2];
  std::fill(y, y + g.N * g.Cout * Sout, T(0));
  const int64_t chunk = depth_chunk(g);
  std::vector<T> cols(static_cast<size_t>(CK * chunk * plane));
  ConstMap<T> Wm(w, g.Cin, CK, Eigen::OuterStride<>(CK));
  for (int64_t n = 0; n < g.N; ++n) {
    T* yn = y + n * g.Cout * Sout;
    for (int64_t d0 = 0; d0 < g.in[0]; d0 += chunk) {
      const int64_t nd = std::min(chunk, g.in[0] - d0), cs = nd * plane;
      ConstMap<T> Xm(x + n * g.Cin * Sin + d0 * plane, g.Cin, cs, Eigen::OuterStride<>(Sin));
      MutMap<T> Cm(cols.data(), CK, cs, Eigen::OuterStride<>(cs));
      Cm.noalias() = Wm.transpose() * Xm;
      col2im_add(cols.data(), g, d0, nd, yn);
    }
    if (bias)
      for (int64_t co = 0; co < g.Cout; ++co) {
        T* yc = yn + co * Sout;
        for (int64_t i = 0; i < Sout; ++i) yc[i] += bias[co];
      }
  }
}

template <class T>
void conv_transpose3d_grad_input_cpu(const T* dy, const T* w, T* dx, const ConvGeom& g) {
  const int64_t CK = g.Cout * g.k[0] * g.k[1] * g.k[2];
  const int64_t plane = g.in[1] * g.in[2], Sin = g.in[0] * plane;
  const int64_t Sout = g.out[0] * g.out[1] * g.out[2];
  const int64_t chunk = depth_chunk(g);
  std::vector<T> cols(static_cast<size_t>(CK * chunk * plane));
  ConstMap<T> Wm(w, g.Cin, CK, Eigen::OuterStride<>(CK));
  for (int64_t n = 0; n < g.N; ++n) {
    for (int64_t d0 = 0; d0 < g.in[0]; d0 += chunk) {
      const int64_t nd = std::min(chunk, g.in[0] - d0), cs = nd * plane;
      im2col_gather(dy + n * g.Cout * Sout, g, d0, nd, cols.data());
      ConstMap<T> Cm(cols.data(), CK, cs, Eigen::OuterStride<>(cs));
      MutMap<T> Dm(dx + n * g.Cin * Sin + d0 * plane, g.Cin, cs, Eigen::OuterStride<>(Sin));
      Dm.noalias() = Wm * Cm;
    }
  }
}

template <class T>
void conv_transpose3d_grad_weight_cpu(const T* x, const T* dy, T* dw, const ConvGeom& g) {
  const int64_t CK = g.Cout * g.k[0] * g.k[1] * g.k[2];
  const int64_t plane = g.in[1] * g.in[2], Sin = g.in[0] * plane;
  const int64_t Sout = g.out[0] * g.out[1] * g.out[2];
  const int64_t chunk = depth_chunk(g);
  std::vector<T> cols(static_cast<size_t>(CK * chunk * plane));
  MutMap<T> Wm(dw, g.Cin, CK, Eigen::OuterStride<>(CK));
  Wm.setZero();
  for (int64_t n = 0; n < g.N; ++n) {
    for (int64_t d0 = 0; d0 < g.in[0]; d0 += chunk) {
      const int64_t nd = std::min(chunk, g.in[0] - d0), cs = nd * plane;
      im2col_gather(dy + n * g.Cout * Sout, g, d0, nd, cols.data());
      ConstMap<T> Cm(cols.data(), CK, cs, Eigen::OuterStride<>(cs));
      ConstMap<T> Xm(x + n * g.Cin * Sin + d0 * plane, g.Cin, cs, Eigen::OuterStride<>(Sin));
      Wm.noalias() += Xm * Cm.transpose();
    }
  }
}

template void conv_transpose3d_cpu<float>(const float*, const float*, const float*, float*, const ConvGeom&);
template void conv_transpose3d_cpu<double>(const double*, const double*, const double*, double*, const ConvGeom&);
template void conv_transpose3d_grad_input_cpu<float>(const float*, const float*, float*, const ConvGeom&);
template void conv_transpose3d_grad_input_cpu<double>(const double*, const double*, double*, const ConvGeom&);
template void conv_transpose3d_grad_weight_cpu<float>(const float*, const float*, float*, const ConvGeom&);
template void conv_transpose3d_grad_weight_cpu<double>(const double*, const double*, double*, const ConvGeom&);

std::vector<Value*> conv_transpose3d_grads(Graph& graph, Value* dy, Value* x, Value* w, Value* bias,
                                           const Attrs& a) {
  Attrs gi = pick_attrs(a, {"stride", "padding"});
  gi.set("input_shape", AttrValue::IntList(x->shape()));
  Value* dx = graph.add("conv_transpose3d_grad_input", {dy, w}, gi);
  Attrs gw = pick_attrs(a, {"stride", "padding"});
  gw.set("kernel_size", AttrValue::IntList(Shape(w->shape().begin() + 2, w->shape().end())));
  Value* dw = graph.add("conv_transpose3d_grad_weight", {x, dy}, gw);
  Value* db = bias ? graph.add("conv_transpose3d_grad_bias", {dy}) : nullptr;
  return {dx, dw, db};
}

}  // namespace ops

namespace {

using ops::TypeList;

const AttrSpec kStride{"stride", AttrKind::Ints, AttrValue::IntList({1, 1, 1})};
const AttrSpec kPadding{"padding", AttrKind::Ints, AttrValue::IntList({0, 0, 0})};

OpSchema forward_schema() {
  OpSchema s;
  s.name = "conv_transpose3d";
  s.input_names = {"x", "weight", "bias"};
  s.num_required_inputs = 2;
  s.output_names = {"y"};
  s.attrs = {kStride, kPadding, {"output_padding", AttrKind::Ints, AttrValue::IntList({0, 0, 0})},
             {"groups", AttrKind::Int, AttrValue::Int(1)}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const TensorType& x = require_input("conv_transpose3d", in, 0, "x");
    const TensorType& w = require_input("conv_transpose3d", in, 1, "weight");
    return {ops::conv_transpose3d_out_type("conv_transpose3d", x, w, ops::optional_input(in, 2), a)};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    ops::ConvGeom g = ops::conv_geom(ctx.in(0).shape(), ctx.in(1).shape(), ctx.out(0).shape(), ctx.attrs());
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* b = ctx.in_data_or_null<T>(2);
      ops::conv_transpose3d_cpu<T>(ctx.in(0).data<T>(), ctx.in(1).data<T>(), b, ctx.out(0).data<T>(), g);
    });
  };
  s.grad_rule = [](GradContext& ctx) -> std::vector<Value*> {
    Value* bias = ctx.node.inputs.size() > 2 ? ctx.in(2) : nullptr;
    std::vector<Value*> r(ctx.node.inputs.size(), nullptr);
    if (!ctx.grad_out(0)) return r;
    std::vector<Value*> g = ops::conv_transpose3d_grads(ctx.graph, ctx.grad_out(0), ctx.in(0), ctx.in(1), bias,
                                                        ctx.attrs());
    for (size_t i = 0; i < r.size(); ++i) r[i] = g[i];
    return r;
  };
  return s;
}

OpSchema grad_input_schema() {
  OpSchema s;
  s.name = "conv_transpose3d_grad_input";
  s.input_names = {"dy", "weight"};
  s.num_required_inputs = 2;
  s.output_names = {"dx"};
  s.attrs = {kStride, kPadding, {"input_shape", AttrKind::Ints, std::nullopt}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const std::string op = "conv_transpose3d_grad_input";
    const TensorType& dy = require_input(op, in, 0, "dy");
    const TensorType& w = require_input(op, in, 1, "weight");
    std::vector<int64_t> st, p;
    ops::check_conv_attrs(op, a, st, p);
    const std::vector<int64_t> xs = ops::ints_attr(op, a, "input_shape", 5, 1);
    ops::check_rank(op, "dy", dy, 5);
    ops::check_rank(op, "weight", w, 5);
    ops::check_no_zero_dims(op, "dy", dy);
    ops::check_no_zero_dims(op, "weight", w);
    ops::check_same_dtype(op, "dy", dy, "weight", w);
    MINIDL_CHECK(dy.shape[0] == xs[0] && dy.shape[1] == w.shape[1] && xs[1] == w.shape[0], op, ": input 'dy' ",
                 shape_str(dy.shape), ", 'weight' ", shape_str(w.shape), " and input_shape ", shape_str(xs),
                 " disagree on batch or channels");
    ops::check_spatial_consistent(op, xs, dy.shape, Shape(w.shape.begin() + 2, w.shape.end()), st, p);
    return {TensorType{xs, dy.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    ops::ConvGeom g = ops::conv_geom(ctx.out(0).shape(), ctx.in(1).shape(), ctx.in(0).shape(), ctx.attrs());
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      ops::conv_transpose3d_grad_input_cpu<T>(ctx.in(0).data<T>(), ctx.in(1).data<T>(), ctx.out(0).data<T>(), g);
    });
  };
  return s;
}

OpSchema grad_weight_schema() {
  OpSchema s;
  s.name = "conv_transpose3d_grad_weight";
  s.input_names = {"x", "dy"};
  s.num_required_inputs = 2;
  s.output_names = {"dweight"};
  s.attrs = {kStride, kPadding, {"kernel_size", AttrKind::Ints, std::nullopt}};
  s.shape_rule = [](const TypeList& in, const Attrs& a) -> std::vector<TensorType> {
    const std::string op = "conv_transpose3d_grad_weight";
    const TensorType& x = require_input(op, in, 0, "x");
    const TensorType& dy = require_input(op, in, 1, "dy");
    std::vector<int64_t> st, p;
    ops::check_conv_attrs(op, a, st, p);
    const std::vector<int64_t> k = ops::ints_attr(op, a, "kernel_size", 3, 1);
    ops::check_rank(op, "x", x, 5);
    ops::check_rank(op, "dy", dy, 5);
    ops::check_no_zero_dims(op, "x", x);
    ops::check_no_zero_dims(op, "dy", dy);
    ops::check_same_dtype(op, "x", x, "dy", dy);
    MINIDL_CHECK(x.shape[0] == dy.shape[0], op, ": input 'x' ", shape_str(x.shape), " and 'dy' ",
                 shape_str(dy.shape), " have different batch sizes");
    ops::check_spatial_consistent(op, x.shape, dy.shape, k, st, p);
    return {TensorType{{x.shape[1], dy.shape[1], k[0], k[1], k[2]}, x.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    ops::ConvGeom g = ops::conv_geom(ctx.in(0).shape(), ctx.out(0).shape(), ctx.in(1).shape(), ctx.attrs());
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      ops::conv_transpose3d_grad_weight_cpu<T>(ctx.in(0).data<T>(), ctx.in(1).data<T>(), ctx.out(0).data<T>(), g);
    });
  };
  return s;
}

OpSchema grad_bias_schema() {
  OpSchema s;
  s.name = "conv_transpose3d_grad_bias";
  s.input_names = {"dy"};
  s.num_required_inputs = 1;
  s.output_names = {"dbias"};
  s.shape_rule = [](const TypeList& in, const Attrs&) -> std::vector<TensorType> {
    const TensorType& dy = require_input("conv_transpose3d_grad_bias", in, 0, "dy");
    ops::check_min_rank("conv_transpose3d_grad_bias", "dy", dy, 2);
    return {TensorType{{dy.shape[1]}, dy.dtype}};
  };
  s.cpu_kernel = [](KernelContext& ctx) {
    const Shape& ds = ctx.in(0).shape();
    const int64_t N = ds[0], C = ds[1], inner = shape_numel(ds) / std::max<int64_t>(N * C, 1);
    ops::dispatch_float(ctx.in(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* dy = ctx.in(0).data<T>();
      T* db = ctx.out(0).data<T>();
      for (int64_t c = 0; c < C; ++c) {
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T* p = dy + (n * C + c) * inner;
          for (int64_t i = 0; i < inner; ++i) acc += p[i];
        }
        db[c] = static_cast<T>(acc);
      }
    });
  };
  return s;
}

}  // namespace

void register_conv_transpose3d_ops(OpRegistry& r) {
  r.add(forward_schema());
  r.add(grad_input_schema());
  r.add(grad_weight_schema());
  r.add(grad_bias_schema());
}

}  // namespace minidl
