// GELU and its derivative for one value, shared by every kernel that needs them (gelu.cpp,
// fused_ln_gelu_scale.cpp, and the CUDA files, where MINIDL_HD makes them device functions too),
// so the fused and unfused paths compute bit-identical element math.
#pragma once
#include <math.h>

#ifdef __CUDACC__
#define MINIDL_HD __host__ __device__
#else
#define MINIDL_HD
#endif

namespace minidl {

// Overloads pick the single- or double-precision libm function (erff vs erf) on host and device.
MINIDL_HD inline float gelu_erf(float x) { return ::erff(x); }
MINIDL_HD inline double gelu_erf(double x) { return ::erf(x); }
MINIDL_HD inline float gelu_tanh(float x) { return ::tanhf(x); }
MINIDL_HD inline double gelu_tanh(double x) { return ::tanh(x); }
MINIDL_HD inline float gelu_exp(float x) { return ::expf(x); }
MINIDL_HD inline double gelu_exp(double x) { return ::exp(x); }

// gelu(x) = x * Phi(x). Exact: Phi(x) = (1 + erf(x / sqrt 2)) / 2.
// Tanh approximation: Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2.
template <class T>
MINIDL_HD inline T gelu_value(T x, bool tanh_approx) {
  if (tanh_approx) {
    const T k = T(0.7978845608028654);  // sqrt(2/pi)
    const T u = k * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (T(1) + gelu_tanh(u));
  }
  return T(0.5) * x * (T(1) + gelu_erf(x * T(0.7071067811865476)));  // 1/sqrt(2)
}

// d gelu / dx.
// Exact: Phi(x) + x * phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi).
// Tanh: (1 + t)/2 + x (1 - t^2)/2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u).
template <class T>
MINIDL_HD inline T gelu_grad(T x, bool tanh_approx) {
  if (tanh_approx) {
    const T k = T(0.7978845608028654);
    const T x2 = x * x;
    const T t = gelu_tanh(k * (x + T(0.044715) * x2 * x));
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3 * 0.044715) * x2);
  }
  const T cdf = T(0.5) * (T(1) + gelu_erf(x * T(0.7071067811865476)));
  const T pdf = gelu_exp(T(-0.5) * x * x) * T(0.3989422804014327);  // 1/sqrt(2 pi)
  return cdf + x * pdf;
}

}  // namespace minidl
