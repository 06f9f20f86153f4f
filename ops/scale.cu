// CUDA kernel for scale: y = x * factor (f32 and f64).
#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"

namespace minidl {
namespace {

template <class T>
__global__ void scale_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, T f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) y[i] = x[i] * f;
}

__global__ void scale_kernel_f4(const float4* __restrict__ x, float4* __restrict__ y, int64_t n4, float f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += stride) {
    const float4 v = x[i];
    y[i] = make_float4(v.x * f, v.y * f, v.z * f, v.w * f);
  }
}

void scale_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("scale", ctx);
  const Tensor& x = ctx.in(0);
  Tensor& y = ctx.out(0);
  MINIDL_CHECK(x.shape() == y.shape() && x.dtype() == y.dtype(), "scale: input 'x' ", x.describe(), " and output ",
               y.describe(), " differ");
  const int64_t n = x.numel();
  if (n == 0) return;
  const double f = ctx.attrs().get_float("factor");
  if (x.dtype() == DType::F32) {
    const float* px = x.data<float>();
    float* py = y.data<float>();
    if (n % 4 == 0 && (reinterpret_cast<uintptr_t>(px) & 15) == 0 && (reinterpret_cast<uintptr_t>(py) & 15) == 0)
      scale_kernel_f4<<<cudak::grid_for(n / 4, 256), 256, 0, cuda::stream()>>>(
          reinterpret_cast<const float4*>(px), reinterpret_cast<float4*>(py), n / 4, static_cast<float>(f));
    else
      scale_kernel<float><<<cudak::grid_for(n, 256), 256, 0, cuda::stream()>>>(px, py, n, static_cast<float>(f));
  } else {
    scale_kernel<double><<<cudak::grid_for(n, 256), 256, 0, cuda::stream()>>>(x.data<double>(), y.data<double>(), n, f);
  }
  MINIDL_LAUNCH_CHECK("scale");
}

}  // namespace

void register_scale_cuda(OpRegistry& r) { cudak::set_cuda_kernel(r, "scale", scale_cuda); }

}  // namespace minidl
