// CUDA kernels for full, add, sub, mul (f32 and f64: these are one line of math each).
#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"

namespace minidl {
namespace {

enum class Bin { Add, Sub, Mul };

template <class T, Bin B>
__device__ __forceinline__ T apply(T a, T b) {
  if (B == Bin::Add) return a + b;
  if (B == Bin::Sub) return a - b;
  return a * b;
}

// Grid-stride, 64-bit indices; float4 path when every pointer is 16-byte aligned.
template <class T, Bin B>
__global__ void binary_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) y[i] = apply<T, B>(a[i], b[i]);
}

template <Bin B>
__global__ void binary_kernel_f4(const float4* __restrict__ a, const float4* __restrict__ b, float4* __restrict__ y,
                                 int64_t n4) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += stride) {
    const float4 u = a[i], v = b[i];
    y[i] = make_float4(apply<float, B>(u.x, v.x), apply<float, B>(u.y, v.y), apply<float, B>(u.z, v.z),
                       apply<float, B>(u.w, v.w));
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <Bin B>
Kernel binary_cuda(const char* op) {
  return [op](KernelContext& ctx) {
    cudak::check_cuda_tensors(op, ctx);
    const Tensor &a = ctx.in(0), &b = ctx.in(1);
    Tensor& y = ctx.out(0);
    MINIDL_CHECK(a.shape() == b.shape() && a.shape() == y.shape() && a.dtype() == b.dtype() && a.dtype() == y.dtype(),
                 op, ": inputs 'a' ", a.describe(), " and 'b' ", b.describe(), " and output ", y.describe(),
                 " must have the same shape and dtype");
    const int64_t n = y.numel();
    if (n == 0) return;
    if (y.dtype() == DType::F32) {
      const float *pa = a.data<float>(), *pb = b.data<float>();
      float* py = y.data<float>();
      if (n % 4 == 0 && aligned16(pa) && aligned16(pb) && aligned16(py)) {
        binary_kernel_f4<B><<<cudak::grid_for(n / 4, 256), 256, 0, cuda::stream()>>>(
            reinterpret_cast<const float4*>(pa), reinterpret_cast<const float4*>(pb), reinterpret_cast<float4*>(py),
            n / 4);
      } else {
        binary_kernel<float, B><<<cudak::grid_for(n, 256), 256, 0, cuda::stream()>>>(pa, pb, py, n);
      }
    } else {
      binary_kernel<double, B><<<cudak::grid_for(n, 256), 256, 0, cuda::stream()>>>(
          a.data<double>(), b.data<double>(), y.data<double>(), n);
    }
    MINIDL_LAUNCH_CHECK(op);
  };
}

void full_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("full", ctx);
  ctx.out(0).fill_(ctx.attrs().get_float("value"));  // cuda::fill_f32 / fill_f64 on the stream
}

}  // namespace

void register_elementwise_cuda(OpRegistry& r) {
  cudak::set_cuda_kernel(r, "full", full_cuda);
  cudak::set_cuda_kernel(r, "add", binary_cuda<Bin::Add>("add"));
  cudak::set_cuda_kernel(r, "sub", binary_cuda<Bin::Sub>("sub"));
  cudak::set_cuda_kernel(r, "mul", binary_cuda<Bin::Mul>("mul"));
}

}  // namespace minidl
