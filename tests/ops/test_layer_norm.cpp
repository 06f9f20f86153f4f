// layer_norm / layer_norm_backward against loops written from the definition (biased variance,
// rstd = 1/sqrt(var + eps)); the backward reference applies the full Jacobian of each row.
#include <cmath>

#include "op_test_util.h"

using namespace minidl;
using namespace op_test;
using minidl_test::check_close;

namespace {

struct LnRef {
  Tensor y, mean, rstd;
};

LnRef naive_ln(const Tensor& x, const Shape& ns, const Tensor& w, const Tensor& b, double eps) {
  const int64_t n = shape_numel(ns), rows = x.numel() / n;
  Shape lead(x.shape().begin(), x.shape().end() - static_cast<std::ptrdiff_t>(ns.size()));
  std::vector<double> xv = x.to_vector(), y(xv.size()), mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; ++i) m += xv[static_cast<size_t>(r * n + i)];
    m /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) v += std::pow(xv[static_cast<size_t>(r * n + i)] - m, 2);
    v /= static_cast<double>(n);
    const double rs = 1.0 / std::sqrt(v + eps);
    mean[static_cast<size_t>(r)] = m;
    rstd[static_cast<size_t>(r)] = rs;
    for (int64_t i = 0; i < n; ++i) {
      double z = (xv[static_cast<size_t>(r * n + i)] - m) * rs;
      if (w.defined()) z *= w.get(i);
      if (b.defined()) z += b.get(i);
      y[static_cast<size_t>(r * n + i)] = z;
    }
  }
  return {Tensor::from_vector(y, x.shape()), Tensor::from_vector(mean, lead), Tensor::from_vector(rstd, lead)};
}

// dx_i = sum_j dy_j w_j d xhat_j / d x_i, with d xhat_j / d x_i = rstd (delta_ij - 1/n - xhat_i xhat_j / n).
std::vector<Tensor> naive_ln_backward(const Tensor& dy, const Tensor& x, const Shape& ns, const Tensor& w, double eps) {
  LnRef f = naive_ln(x, ns, Tensor(), Tensor(), eps);  // y = xhat
  const int64_t n = shape_numel(ns), rows = x.numel() / n;
  std::vector<double> dx(static_cast<size_t>(x.numel()), 0.0), dw(static_cast<size_t>(n), 0.0), db(static_cast<size_t>(n), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const double rs = f.rstd.get(r);
    for (int64_t i = 0; i < n; ++i) {
      const double xi = f.y.get(r * n + i);
      double acc = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double xj = f.y.get(r * n + j);
        const double jac = rs * ((i == j ? 1.0 : 0.0) - 1.0 / static_cast<double>(n) - xi * xj / static_cast<double>(n));
        acc += dy.get(r * n + j) * (w.defined() ? w.get(j) : 1.0) * jac;
      }
      dx[static_cast<size_t>(r * n + i)] = acc;
      dw[static_cast<size_t>(i)] += dy.get(r * n + i) * xi;
      db[static_cast<size_t>(i)] += dy.get(r * n + i);
    }
  }
  return {Tensor::from_vector(dx, x.shape()), Tensor::from_vector(dw, ns), Tensor::from_vector(db, ns)};
}

struct LnCase {
  Shape x, ns;
  bool weight, bias;
};

}  // namespace

TEST_SUITE("ops/layer_norm") {
  TEST_CASE("forward: y, mean and rstd match the definition") {
    const std::vector<LnCase> cases = {{{2, 3, 5}, {5}, true, true},   {{2, 3, 4}, {3, 4}, true, false},
                                       {{4, 6}, {4, 6}, false, false}, {{3, 7}, {7}, false, true},
                                       {{2, 1, 2, 64}, {64}, true, true}};
    uint64_t seed = 30;
    for (const LnCase& c : cases)
      for (DType t : {DType::F64, DType::F32}) {
        INFO("x " << shape_str(c.x) << " normalized_shape " << shape_str(c.ns) << " weight " << c.weight << " bias "
                  << c.bias << " " << dtype_name(t));
        // Non-zero mean inputs, as in real activations.
        Tensor x = Tensor::normal(c.x, 1.5, 2.0, seed++, t);
        Tensor w = c.weight ? rand_uniform(c.ns, seed++, t, 0.5, 1.5) : Tensor();
        Tensor b = c.bias ? rand_uniform(c.ns, seed++, t) : Tensor();
        Attrs a = {{"normalized_shape", AttrValue::IntList(c.ns)}, {"eps", AttrValue::Float(1e-3)}};
        std::vector<Tensor> ins = {x, w, b};
        if (!c.bias) ins.pop_back();
        std::vector<Tensor> out = run_kernel_poisoned("layer_norm", ins, a);
        LnRef ref = naive_ln(x.to(DType::F64), c.ns, w.defined() ? w.to(DType::F64) : w,
                             b.defined() ? b.to(DType::F64) : b, 1e-3);
        const double tol = t == DType::F32 ? 1e-6 : 1e-13;
        check_close(out[0], ref.y, tol, "y");
        check_close(out[1], ref.mean, tol, "mean");
        check_close(out[2], ref.rstd, tol, "rstd");
        CHECK(out[1].shape() == Shape(c.x.begin(), c.x.end() - static_cast<std::ptrdiff_t>(c.ns.size())));
      }
  }

  TEST_CASE("normalizing every dim gives scalar [] statistics") {
    Tensor x = Tensor::normal({3, 4}, 2.0, 1.0, 40, DType::F64);
    std::vector<Tensor> out = run_op("layer_norm", {x}, {{"normalized_shape", AttrValue::IntList({3, 4})}});
    CHECK(out[1].shape().empty());
    CHECK(out[2].shape().empty());
    check_close(out[0], naive_ln(x, {3, 4}, Tensor(), Tensor(), 1e-5).y, 1e-13, "y");
  }

  TEST_CASE("backward: dx, dweight, dbias match the row Jacobian (with and without weight)") {
    for (bool weight : {true, false})
      for (DType t : {DType::F64, DType::F32}) {
        INFO("weight " << weight << " " << dtype_name(t));
        const Shape xs = {3, 2, 6}, ns = {2, 6};
        Tensor x = Tensor::normal(xs, -0.7, 1.3, 50, t);
        Tensor dy = Tensor::normal(xs, 0.2, 1.0, 51, t);
        Tensor w = weight ? rand_uniform(ns, 52, t, 0.5, 1.5) : Tensor();
        Attrs a = {{"normalized_shape", AttrValue::IntList(ns)}};
        std::vector<Tensor> fwd = run_op("layer_norm", {x, w}, a);
        std::vector<Tensor> ins = {dy, x, fwd[1], fwd[2], w};
        if (!weight) ins.pop_back();
        std::vector<Tensor> got = run_kernel_poisoned("layer_norm_backward", ins, a);
        std::vector<Tensor> ref = naive_ln_backward(dy.to(DType::F64), x.to(DType::F64), ns,
                                                    weight ? w.to(DType::F64) : w, 1e-5);
        const double tol = t == DType::F32 ? 1e-5 : 1e-12;
        check_close(got[0], ref[0], tol, "dx");
        check_close(got[1], ref[1], tol, "dweight");
        check_close(got[2], ref[2], tol, "dbias");
      }
  }
}
