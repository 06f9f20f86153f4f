// gelu / gelu_backward against the textbook formulas (exact erf form and tanh approximation);
// the derivative reference is a long-double central difference of the formula.
#include <cmath>

#include "op_test_util.h"

using namespace minidl;
using namespace op_test;
using minidl_test::check_close;

namespace {

long double gelu_ref(long double x, bool tanh_approx) {
  if (tanh_approx) {
    const long double c = std::sqrt(2.0L / 3.14159265358979323846264338327950288L);
    return 0.5L * x * (1.0L + std::tanh(c * (x + 0.044715L * x * x * x)));
  }
  return 0.5L * x * (1.0L + std::erf(x / std::sqrt(2.0L)));
}

long double gelu_grad_ref(long double x, bool tanh_approx) {
  const long double h = 1e-6L;
  return (gelu_ref(x + h, tanh_approx) - gelu_ref(x - h, tanh_approx)) / (2 * h);
}

}  // namespace

TEST_SUITE("ops/gelu") {
  TEST_CASE("gelu and gelu_backward match the formulas (none / tanh, f32 / f64)") {
    for (const char* approx : {"none", "tanh"}) {
      const bool tanh_approx = std::string(approx) == "tanh";
      for (DType t : {DType::F64, DType::F32}) {
        INFO("approximate=" << approx << " " << dtype_name(t));
        // Values spread over the interesting range, including large |x| where GELU saturates.
        Tensor x = Tensor::normal({5, 37}, 0.2, 3.0, 21, t);
        Tensor dy = rand_uniform({5, 37}, 22, t);
        Attrs a = {{"approximate", AttrValue::Str(approx)}};
        std::vector<double> xv = x.to_vector(), dyv = dy.to_vector(), y(xv.size()), dx(xv.size());
        for (size_t i = 0; i < xv.size(); ++i) {
          y[i] = static_cast<double>(gelu_ref(xv[i], tanh_approx));
          dx[i] = dyv[i] * static_cast<double>(gelu_grad_ref(xv[i], tanh_approx));
        }
        const double tol = t == DType::F32 ? 1e-6 : 1e-14;
        check_close(run_kernel_poisoned("gelu", {x}, a)[0], Tensor::from_vector(y, x.shape()), tol, "gelu");
        check_close(run_kernel_poisoned("gelu_backward", {dy, x}, a)[0], Tensor::from_vector(dx, x.shape()),
                    t == DType::F32 ? 1e-6 : 1e-9, "gelu_backward");
        check_close(run_op("gelu", {x}, a)[0], Tensor::from_vector(y, x.shape()), tol, "gelu via executor");
      }
    }
  }

  TEST_CASE("the two approximations differ (the attribute is honoured)") {
    Tensor x = Tensor::uniform({64}, -3, 3, 23, DType::F64);
    Tensor a = run_op("gelu", {x}, {{"approximate", AttrValue::Str("none")}})[0];
    Tensor b = run_op("gelu", {x}, {{"approximate", AttrValue::Str("tanh")}})[0];
    const double d = max_abs_diff(a, b);
    CHECK(d > 1e-5);
    CHECK(d < 1e-2);
  }
}
