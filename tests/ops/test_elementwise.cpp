// full, add/sub/mul, scale, sum/mean, expand, reshape, mse_loss(+backward) against loops here.
#include "op_test_util.h"

using namespace minidl;
using namespace op_test;
using minidl_test::check_close;

namespace {

// Row-major multi-index of a flat index.
std::vector<int64_t> unravel(int64_t i, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (size_t d = s.size(); d-- > 0;) {
    idx[d] = i % s[d];
    i /= s[d];
  }
  return idx;
}
int64_t ravel(const std::vector<int64_t>& idx, const Shape& s) {
  int64_t i = 0;
  for (size_t d = 0; d < s.size(); ++d) i = i * s[d] + idx[d];
  return i;
}

// sum or mean over `dims` (wrapped, [] = all) from the definition.
Tensor naive_reduce(const Tensor& x, std::vector<int64_t> dims, bool keepdim, bool mean) {
  const Shape& xs = x.shape();
  const int64_t r = static_cast<int64_t>(xs.size());
  if (dims.empty())
    for (int64_t d = 0; d < r; ++d) dims.push_back(d);
  std::vector<bool> red(xs.size(), false);
  for (int64_t d : dims) red[static_cast<size_t>(d < 0 ? d + r : d)] = true;
  Shape keep, out;
  int64_t count = 1;
  for (size_t d = 0; d < xs.size(); ++d) {
    keep.push_back(red[d] ? 1 : xs[d]);
    if (!red[d] || keepdim) out.push_back(red[d] ? 1 : xs[d]);
    if (red[d]) count *= xs[d];
  }
  std::vector<double> acc(static_cast<size_t>(shape_numel(keep)), 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    std::vector<int64_t> idx = unravel(i, xs);
    for (size_t d = 0; d < xs.size(); ++d)
      if (red[d]) idx[d] = 0;
    acc[static_cast<size_t>(ravel(idx, keep))] += x.get(i);
  }
  if (mean)
    for (double& a : acc) a /= static_cast<double>(count);
  return Tensor::from_vector(acc, out);
}

}  // namespace

TEST_SUITE("ops/elementwise") {
  TEST_CASE("add, sub, mul (f32 and f64)") {
    for (DType t : {DType::F32, DType::F64}) {
      Tensor a = rand_uniform({3, 4, 5}, 1, t), b = Tensor::normal({3, 4, 5}, 0.5, 2.0, 2, t);
      std::vector<double> av = a.to_vector(), bv = b.to_vector(), s(av.size()), d(av.size()), m(av.size());
      for (size_t i = 0; i < av.size(); ++i) {
        s[i] = av[i] + bv[i];
        d[i] = av[i] - bv[i];
        m[i] = av[i] * bv[i];
      }
      const double tol = t == DType::F32 ? 1e-6 : 1e-15;
      check_close(run_kernel_poisoned("add", {a, b})[0], Tensor::from_vector(s, a.shape()), tol, "add");
      check_close(run_kernel_poisoned("sub", {a, b})[0], Tensor::from_vector(d, a.shape()), tol, "sub");
      check_close(run_kernel_poisoned("mul", {a, b})[0], Tensor::from_vector(m, a.shape()), tol, "mul");
      CHECK(run_op("mul", {a, b})[0].dtype() == t);
    }
  }

  TEST_CASE("scale and full") {
    for (DType t : {DType::F32, DType::F64}) {
      Tensor x = Tensor::normal({7, 3}, 1.0, 1.0, 3, t);
      std::vector<double> xv = x.to_vector();
      for (double& v : xv) v *= -2.5;
      check_close(run_kernel_poisoned("scale", {x}, {{"factor", AttrValue::Float(-2.5)}})[0],
                  Tensor::from_vector(xv, x.shape()), 1e-7, "scale");
    }
    Tensor f = run_kernel_poisoned("full", {}, {{"shape", AttrValue::IntList({2, 3})}, {"value", AttrValue::Float(0.75)},
                                               {"dtype", AttrValue::Str("f64")}})[0];
    CHECK(f.dtype() == DType::F64);
    CHECK(f.shape() == Shape{2, 3});
    for (double v : f.to_vector()) CHECK(v == 0.75);
    Tensor s = run_op("full", {}, {{"shape", AttrValue::IntList({})}, {"value", AttrValue::Float(3.0)}})[0];
    CHECK(s.dtype() == DType::F32);
    CHECK(s.shape().empty());
    CHECK(s.get(0) == 3.0);
  }

  TEST_CASE("sum and mean over dims (negative dims, [] = all, keepdim)") {
    Tensor x = Tensor::normal({2, 3, 4, 5}, 0.3, 1.0, 4, DType::F64);
    const std::vector<std::vector<int64_t>> dim_sets = {{}, {0}, {-1}, {1, 3}, {-3, 0}, {0, 1, 2, 3}, {2}};
    for (const auto& dims : dim_sets)
      for (bool keepdim : {false, true})
        for (bool mean : {false, true}) {
          Attrs a = {{"dims", AttrValue::IntList(dims)}, {"keepdim", AttrValue::Bool(keepdim)}};
          const char* op = mean ? "mean" : "sum";
          INFO(op << " dims " << shape_str(dims) << " keepdim " << keepdim);
          Tensor ref = naive_reduce(x, dims, keepdim, mean);
          check_close(run_kernel_poisoned(op, {x}, a)[0], ref, 1e-14, op);
          check_close(run_kernel_poisoned(op, {x.to(DType::F32)}, a)[0], ref, 1e-6, std::string(op) + " f32");
        }
    // Default attributes: everything, to a scalar [].
    Tensor s = run_op("sum", {x})[0];
    CHECK(s.shape().empty());
    CHECK(s.get(0) == doctest::Approx(naive_reduce(x, {}, false, false).get(0)).epsilon(1e-12));
  }

  TEST_CASE("expand broadcasts numpy-style") {
    Tensor x = rand_uniform({3, 1, 4}, 5);
    Tensor y = run_kernel_poisoned("expand", {x}, {{"shape", AttrValue::IntList({2, 3, 5, -1})}})[0];
    REQUIRE(y.shape() == Shape{2, 3, 5, 4});
    for (int64_t i = 0; i < y.numel(); ++i) {
      std::vector<int64_t> idx = unravel(i, y.shape());
      CHECK(y.get(i) == x.at({idx[1], 0, idx[3]}));
    }
    Tensor s = Tensor::full({}, 1.5, DType::F32);
    Tensor z = run_kernel_poisoned("expand", {s}, {{"shape", AttrValue::IntList({2, 2})}})[0];
    for (double v : z.to_vector()) CHECK(v == 1.5);
  }

  TEST_CASE("reshape copies elements in order, with one -1 inferred") {
    Tensor x = rand_uniform({2, 3, 4}, 6);
    Tensor y = run_kernel_poisoned("reshape", {x}, {{"shape", AttrValue::IntList({4, -1})}})[0];
    CHECK(y.shape() == Shape{4, 6});
    CHECK(y.to_vector() == x.to_vector());
    Tensor z = run_op("reshape", {x}, {{"shape", AttrValue::IntList({24})}})[0];
    CHECK(z.to_vector() == x.to_vector());
  }

  TEST_CASE("mse_loss and mse_loss_backward, both reductions") {
    for (DType t : {DType::F32, DType::F64}) {
      Tensor x = Tensor::normal({4, 6}, 0.5, 1.0, 7, t), y = rand_uniform({4, 6}, 8, t, 0, 1);
      std::vector<double> xv = x.to_vector(), yv = y.to_vector();
      double ss = 0;
      for (size_t i = 0; i < xv.size(); ++i) ss += (xv[i] - yv[i]) * (xv[i] - yv[i]);
      for (const char* red : {"mean", "sum"}) {
        const bool mean = std::string(red) == "mean";
        Attrs a = {{"reduction", AttrValue::Str(red)}};
        Tensor l = run_kernel_poisoned("mse_loss", {x, y}, a)[0];
        CHECK(l.shape().empty());
        CHECK(l.get(0) == doctest::Approx(mean ? ss / 24 : ss).epsilon(1e-6));
        Tensor g = Tensor::full({}, 0.7, t);
        Tensor dx = run_kernel_poisoned("mse_loss_backward", {g, x, y}, a)[0];
        std::vector<double> ref(xv.size());
        for (size_t i = 0; i < xv.size(); ++i) ref[i] = 0.7 * 2 * (xv[i] - yv[i]) / (mean ? 24.0 : 1.0);
        check_close(dx, Tensor::from_vector(ref, x.shape()), 1e-6, std::string("mse_loss_backward ") + red);
      }
    }
  }
}
