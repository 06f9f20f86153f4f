// Small helpers shared by the op files: dtype dispatch, shape checks with clear messages,
// attribute readers, gradient-rule shorthands, the row math shared by layer_norm and the fused
// ops, and the CPU kernels that one op file reuses from another (the fused conv op runs the
// conv kernel and then the fused epilogue kernel).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "graph/graph.h"
#include "ops/registry.h"

namespace minidl {
namespace ops {

// ---- dtype dispatch -----------------------------------------------------------------------
// dispatch_float(t, [&](auto tag) { using T = decltype(tag); ... }) runs the body as float or
// double; CPU kernels are written once as templates.
template <class F>
void dispatch_float(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
  }
  MINIDL_FAIL("dispatch_float: unsupported dtype");
}

// ---- shape checks (all throw minidl::Error naming the op, the input and the shapes) ---------
using TypeList = std::vector<const TensorType*>;

// The type of an optional input, or nullptr when omitted.
inline const TensorType* optional_input(const TypeList& in, size_t i) { return i < in.size() ? in[i] : nullptr; }

void check_rank(const std::string& op, const std::string& name, const TensorType& t, int64_t rank);
void check_min_rank(const std::string& op, const std::string& name, const TensorType& t, int64_t rank);
void check_no_zero_dims(const std::string& op, const std::string& name, const TensorType& t);
void check_same_dtype(const std::string& op, const std::string& a_name, const TensorType& a,
                      const std::string& b_name, const TensorType& b);
void check_shape(const std::string& op, const std::string& name, const TensorType& t, const Shape& expected,
                 const std::string& why);
// Maps a possibly negative dim into [0, rank), or throws.
int64_t wrap_dim(const std::string& op, int64_t d, int64_t rank);
// The first `keep` dims of a shape.
Shape leading_shape(const Shape& s, size_t keep);

// ---- attribute readers -----------------------------------------------------------------------
// An int list attribute of exactly `n` entries, each >= min_value.
std::vector<int64_t> ints_attr(const std::string& op, const Attrs& a, const std::string& name, size_t n,
                               int64_t min_value);
// The `approximate` attribute of the GELU ops: true for "tanh", false for "none", else throws.
bool gelu_approximate_attr(const std::string& op, const Attrs& a);

// ---- gradient-rule shorthands ------------------------------------------------------------------
Value* grad_scale(Graph& g, Value* v, double factor);
Value* grad_reshape(Graph& g, Value* v, const Shape& shape);  // no node when already that shape
// Copies the named attributes (the forward attributes a backward op shares).
Attrs pick_attrs(const Attrs& a, const std::vector<std::string>& names);
// Multi-output ops that only support a gradient on output 0 (layer_norm's mean/rstd).
void require_only_output0_grad(const GradContext& ctx, const std::vector<std::string>& output_names);

// ---- strided walks (reductions and broadcasts) -------------------------------------------------
// Calls f(linear_index, offset) for every multi-index of `shape` in row-major order, where
// offset = sum(index[d] * strides[d]). Strides of 0 repeat (broadcast) or accumulate (reduce).
template <class F>
void walk_strided(const Shape& shape, const std::vector<int64_t>& strides, F&& f) {
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const size_t r = shape.size();
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t lin = 0; lin < n; ++lin) {
    f(lin, off);
    for (size_t d = r; d-- > 0;) {  // odometer increment, innermost dim first
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// ---- layer-norm row math, shared by layer_norm.cpp and fused_ln_gelu_scale.cpp ---------------
// Mean and 1/sqrt(biased variance + eps) of one row, accumulated in double (two passes).
template <class T>
inline void ln_row_stats(const T* x, int64_t n, double eps, T& mean, T& rstd) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]);
  const double m = s / static_cast<double>(n);
  double v = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - m;
    v += d * d;
  }
  v /= static_cast<double>(n);
  mean = static_cast<T>(m);
  rstd = static_cast<T>(1.0 / std::sqrt(v + eps));
}

// The normalized, affine value of one element: ((x - mean) * rstd) * w + b, in this order in
// every kernel so the fused op equals the unfused chain.
template <class T>
inline T ln_affine(T x, T mean, T rstd, T w, T b) {
  const T xhat = (x - mean) * rstd;
  return xhat * w + b;
}

// LayerNorm backward for one row. w may be null (weight 1). dx is written; sum(dy * xhat) and
// sum(dy) are added into dw_acc and db_acc (per-column double accumulators).
template <class T>
inline void ln_row_backward(const T* dy, const T* x, T mean, T rstd, const T* w, int64_t n, T* dx, double* dw_acc,
                            double* db_acc) {
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w.
  double sg = 0, sgx = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double xhat = (static_cast<double>(x[i]) - mean) * rstd;
    const double g = static_cast<double>(dy[i]) * (w ? static_cast<double>(w[i]) : 1.0);
    sg += g;
    sgx += g * xhat;
    dw_acc[i] += static_cast<double>(dy[i]) * xhat;
    db_acc[i] += static_cast<double>(dy[i]);
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  const double a = sg * inv_n, c = sgx * inv_n;
  for (int64_t i = 0; i < n; ++i) {
    const double xhat = (static_cast<double>(x[i]) - mean) * rstd;
    const double g = static_cast<double>(dy[i]) * (w ? static_cast<double>(w[i]) : 1.0);
    dx[i] = static_cast<T>(static_cast<double>(rstd) * (g - a - xhat * c));
  }
}

// ---- transposed-convolution geometry and CPU kernels (ops/conv_transpose3d.cpp) ---------------
struct ConvGeom {
  int64_t N = 0, Cin = 0, Cout = 0;
  int64_t in[3] = {0, 0, 0};    // D, H, W of the input x
  int64_t out[3] = {0, 0, 0};   // D, H, W of the output y
  int64_t k[3] = {0, 0, 0};
  int64_t stride[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};
};
// From x [N,Cin,D,H,W], weight [Cin,Cout,kD,kH,kW], y [N,Cout,OD,OH,OW] and the attributes.
ConvGeom conv_geom(const Shape& x, const Shape& w, const Shape& y, const Attrs& a);

// The conv_transpose3d shape rule, naming `op` in messages (the fused op reuses it).
TensorType conv_transpose3d_out_type(const std::string& op, const TensorType& x, const TensorType& w,
                                     const TensorType* bias, const Attrs& a);

// y = conv_transpose3d(x, w) + bias (bias may be null). All buffers contiguous; y fully written.
template <class T>
void conv_transpose3d_cpu(const T* x, const T* w, const T* bias, T* y, const ConvGeom& g);
// dx = the strided conv3d of dy with w (dx fully written).
template <class T>
void conv_transpose3d_grad_input_cpu(const T* dy, const T* w, T* dx, const ConvGeom& g);
// dw = sum over batch and positions of x (outer) dy taps (dw fully written).
template <class T>
void conv_transpose3d_grad_weight_cpu(const T* x, const T* dy, T* dw, const ConvGeom& g);
// Adds the gradient nodes of a transposed convolution with output gradient dy: returns
// {dx, dweight, dbias} (dbias nullptr when bias is). `a` holds stride and padding.
std::vector<Value*> conv_transpose3d_grads(Graph& graph, Value* dy, Value* x, Value* w, Value* bias,
                                           const Attrs& a);

// ---- fused LayerNorm(last dim) -> GELU -> scale (ops/fused_ln_gelu_scale.cpp) ----------------
// The fused_ln_gelu_scale shape rule, naming `op` in messages: y like x, mean/rstd x.shape[:-1].
std::vector<TensorType> fused_ln_gelu_scale_out_types(const std::string& op, const TensorType& x,
                                                      const TensorType& w, const TensorType& b);

struct LnGeluScaleParams {
  int64_t rows = 0, cols = 0;  // x viewed as [rows, cols]
  double eps = 1e-5;
  bool tanh_approx = false;
  double factor = 1.0;
};
// Reads eps / approximate / factor (validated), naming `op` in messages.
LnGeluScaleParams ln_gelu_scale_params(const std::string& op, const Attrs& a, const Shape& x_shape);

template <class T>
void ln_gelu_scale_forward_cpu(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                               const LnGeluScaleParams& p);
template <class T>
void ln_gelu_scale_backward_cpu(const T* dy, const T* x, const T* w, const T* b, const T* mean, const T* rstd,
                                T* dx, T* dw, T* db, const LnGeluScaleParams& p);

}  // namespace ops

// One registration function per op file; register_builtin_ops (ops/all_ops.cpp) calls them all.
void register_elementwise_ops(OpRegistry& r);
void register_scale_ops(OpRegistry& r);
void register_reduce_ops(OpRegistry& r);
void register_reshape_ops(OpRegistry& r);
void register_mse_loss_ops(OpRegistry& r);
void register_gelu_ops(OpRegistry& r);
void register_layer_norm_ops(OpRegistry& r);
void register_conv_transpose3d_ops(OpRegistry& r);
void register_fused_ln_gelu_scale_ops(OpRegistry& r);
void register_fused_conv_transpose3d_ln_gelu_scale_ops(OpRegistry& r);

}  // namespace minidl
