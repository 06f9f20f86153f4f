// CUDA kernels for gelu and gelu_backward (f32), with the element math of ops/gelu_math.h so the
// GPU, the CPU and the fused kernels agree.
#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"
#include "ops/gelu_math.h"
#include "ops/op_util.h"

namespace minidl {
namespace {

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// float4 body plus a scalar tail handled by the same loop shape; 64-bit indices (the flagship
// tensor has 2^28 elements, larger batches pass 2^31 bytes).
template <bool kTanh>
__global__ void gelu_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride) {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(x) + i);
    float4 o;
    o.x = gelu_value<float>(v.x, kTanh);
    o.y = gelu_value<float>(v.y, kTanh);
    o.z = gelu_value<float>(v.z, kTanh);
    o.w = gelu_value<float>(v.w, kTanh);
    __stcs(reinterpret_cast<float4*>(y) + i, o);
  }
  for (int64_t i = n4 * 4 + tid; i < n; i += stride) y[i] = gelu_value<float>(x[i], kTanh);
}

template <bool kTanh>
__global__ void gelu_backward_kernel(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ dx,
                                     int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t n4 = vec ? n / 4 : 0;
  for (int64_t i = tid; i < n4; i += stride) {
    const float4 g = __ldcs(reinterpret_cast<const float4*>(dy) + i);
    const float4 v = __ldcs(reinterpret_cast<const float4*>(x) + i);
    float4 o;
    o.x = g.x * gelu_grad<float>(v.x, kTanh);
    o.y = g.y * gelu_grad<float>(v.y, kTanh);
    o.z = g.z * gelu_grad<float>(v.z, kTanh);
    o.w = g.w * gelu_grad<float>(v.w, kTanh);
    __stcs(reinterpret_cast<float4*>(dx) + i, o);
  }
  for (int64_t i = n4 * 4 + tid; i < n; i += stride) dx[i] = dy[i] * gelu_grad<float>(x[i], kTanh);
}

void gelu_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("gelu", ctx);
  cudak::require_f32("gelu", ctx);
  const bool tanh_approx = ops::gelu_approximate_attr("gelu", ctx.attrs());
  const Tensor& x = ctx.in(0);
  Tensor& y = ctx.out(0);
  MINIDL_CHECK(x.shape() == y.shape(), "gelu: input ", x.describe(), " and output ", y.describe(), " differ");
  const int64_t n = x.numel();
  if (n == 0) return;
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const bool vec = aligned16(px) && aligned16(py);
  const unsigned grid = cudak::grid_for(vec ? (n + 3) / 4 : n, 256);
  if (tanh_approx)
    gelu_kernel<true><<<grid, 256, 0, cuda::stream()>>>(px, py, n, vec);
  else
    gelu_kernel<false><<<grid, 256, 0, cuda::stream()>>>(px, py, n, vec);
  MINIDL_LAUNCH_CHECK("gelu");
}

void gelu_backward_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("gelu_backward", ctx);
  cudak::require_f32("gelu_backward", ctx);
  const bool tanh_approx = ops::gelu_approximate_attr("gelu_backward", ctx.attrs());
  const Tensor &dy = ctx.in(0), &x = ctx.in(1);
  Tensor& dx = ctx.out(0);
  MINIDL_CHECK(dy.shape() == x.shape() && x.shape() == dx.shape(), "gelu_backward: 'dy' ", dy.describe(), ", 'x' ",
               x.describe(), " and output ", dx.describe(), " must have the same shape");
  const int64_t n = x.numel();
  if (n == 0) return;
  const float *pdy = dy.data<float>(), *px = x.data<float>();
  float* pdx = dx.data<float>();
  const bool vec = aligned16(pdy) && aligned16(px) && aligned16(pdx);
  const unsigned grid = cudak::grid_for(vec ? (n + 3) / 4 : n, 256);
  if (tanh_approx)
    gelu_backward_kernel<true><<<grid, 256, 0, cuda::stream()>>>(pdy, px, pdx, n, vec);
  else
    gelu_backward_kernel<false><<<grid, 256, 0, cuda::stream()>>>(pdy, px, pdx, n, vec);
  MINIDL_LAUNCH_CHECK("gelu_backward");
}

}  // namespace

void register_gelu_cuda(OpRegistry& r) {
  cudak::set_cuda_kernel(r, "gelu", gelu_cuda);
  cudak::set_cuda_kernel(r, "gelu_backward", gelu_backward_cuda);
}

}  // namespace minidl
