// Helpers shared by the test suites.
#pragma once
#include <doctest/doctest.h>

#include <cstdio>
#include <limits>
#include <string>

#include "core/cuda_runtime.h"
#include "core/tensor.h"

namespace minidl_test {

// CUDA test cases call this first: prints a visible message once and returns false when there is
// no GPU, so the case is skipped rather than silently passing.
inline bool require_gpu() {
  if (minidl::cuda::cuda_available()) return true;
  static bool said = false;
  if (!said) {
    std::printf("[minidl tests] SKIPPING CUDA test cases: no CUDA device available%s\n",
                minidl::cuda::built_with_cuda() ? "" : " (built without CUDA)");
    said = true;
  }
  return false;
}

// NaN-filled tensor: an element a kernel forgets to write stays NaN and fails the comparison.
inline minidl::Tensor poisoned(const minidl::Shape& s, minidl::DType t, minidl::Device d) {
  return minidl::Tensor::full(s, std::numeric_limits<double>::quiet_NaN(), t, d);
}

// Asserts out ~= ref by relative L2 error (and that out is finite everywhere).
inline void check_close(const minidl::Tensor& out, const minidl::Tensor& ref, double rel_tol,
                        const std::string& what) {
  minidl::Tensor o = out.cpu(), r = ref.cpu();
  INFO(what << ": out " << o.describe() << " ref " << r.describe());
  REQUIRE(o.shape() == r.shape());
  CHECK(minidl::all_finite(o));
  double err = minidl::rel_l2_error(o, r);
  INFO(what << ": rel L2 error " << err << " max abs diff " << minidl::max_abs_diff(o, r));
  CHECK(err <= rel_tol);
}

}  // namespace minidl_test
