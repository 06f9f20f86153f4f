// CUDA kernel for reshape: the executor hands us a fresh output, so the kernel is a device copy
// (same bytes, new shape).
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"

namespace minidl {
namespace {

void reshape_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("reshape", ctx);
  const Tensor& x = ctx.in(0);
  Tensor& y = ctx.out(0);
  MINIDL_CHECK(x.numel() == y.numel() && x.dtype() == y.dtype(), "reshape: input 'x' ", x.describe(),
               " does not fit output ", y.describe());
  cuda::memcpy_d2d(y.raw_data(), x.raw_data(), x.nbytes());
}

}  // namespace

void register_reshape_cuda(OpRegistry& r) { cudak::set_cuda_kernel(r, "reshape", reshape_cuda); }

}  // namespace minidl
