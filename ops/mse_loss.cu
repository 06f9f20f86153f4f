// CUDA kernels for mse_loss (deterministic two-stage sum in double) and mse_loss_backward (f32).
#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"

namespace minidl {
namespace {

bool is_mean(const char* op, const Attrs& a) {
  const std::string& r = a.get_str("reduction");
  MINIDL_CHECK(r == "mean" || r == "sum", op, ": attribute 'reduction' must be \"mean\" or \"sum\", got \"", r, "\"");
  return r == "mean";
}

constexpr int kBlock = 256;

// Stage 1: block b writes the sum of its grid-stride share of (x - t)^2 to partial[b]. The
// share depends only on n and the grid size, so the result is the same on every run.
__global__ void sq_diff_partial(const float* __restrict__ x, const float* __restrict__ t, double* __restrict__ partial,
                                int64_t n) {
  __shared__ double warp_sums[kBlock / 32];
  double acc = 0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(t[i]);
    acc += d * d;
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int w = 0; w < kBlock / 32; ++w) s += warp_sums[w];
    partial[blockIdx.x] = s;
  }
}

// Stage 2: one thread adds the partials in order.
__global__ void sum_partials(const double* __restrict__ partial, int nparts, float* __restrict__ out, double scale) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    double s = 0;
    for (int i = 0; i < nparts; ++i) s += partial[i];
    out[0] = static_cast<float>(s * scale);
  }
}

void mse_loss_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("mse_loss", ctx);
  cudak::require_f32("mse_loss", ctx);
  const bool mean = is_mean("mse_loss", ctx.attrs());
  const Tensor &x = ctx.in(0), &t = ctx.in(1);
  MINIDL_CHECK(x.shape() == t.shape(), "mse_loss: 'input' ", x.describe(), " and 'target' ", t.describe(), " differ");
  const int64_t n = x.numel();
  const unsigned grid = cudak::grid_for(n, kBlock, 4);
  cudak::DeviceBuffer partial(grid * sizeof(double));
  sq_diff_partial<<<grid, kBlock, 0, cuda::stream()>>>(x.data<float>(), t.data<float>(), partial.as<double>(), n);
  MINIDL_LAUNCH_CHECK("mse_loss");
  sum_partials<<<1, 32, 0, cuda::stream()>>>(partial.as<double>(), int(grid), ctx.out(0).data<float>(),
                                             mean ? 1.0 / static_cast<double>(n) : 1.0);
  MINIDL_LAUNCH_CHECK("mse_loss");
}

// dx = (2 * grad / (n or 1)) * (x - t); grad is a device scalar, read by every thread.
__global__ void mse_backward_kernel(const float* __restrict__ grad, const float* __restrict__ x,
                                    const float* __restrict__ t, float* __restrict__ dx, int64_t n, double inv) {
  const float k = static_cast<float>(2.0 * static_cast<double>(grad[0]) * inv);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) dx[i] = k * (x[i] - t[i]);
}

void mse_loss_backward_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("mse_loss_backward", ctx);
  cudak::require_f32("mse_loss_backward", ctx);
  const bool mean = is_mean("mse_loss_backward", ctx.attrs());
  const Tensor &g = ctx.in(0), &x = ctx.in(1), &t = ctx.in(2);
  MINIDL_CHECK(g.numel() == 1, "mse_loss_backward: input 'grad' must be a scalar, got ", g.describe());
  MINIDL_CHECK(x.shape() == t.shape() && x.shape() == ctx.out(0).shape(), "mse_loss_backward: 'input' ",
               x.describe(), ", 'target' ", t.describe(), " and output ", ctx.out(0).describe(), " differ");
  const int64_t n = x.numel();
  if (n == 0) return;
  mse_backward_kernel<<<cudak::grid_for(n, 256), 256, 0, cuda::stream()>>>(
      g.data<float>(), x.data<float>(), t.data<float>(), ctx.out(0).data<float>(), n,
      mean ? 1.0 / static_cast<double>(n) : 1.0);
  MINIDL_LAUNCH_CHECK("mse_loss_backward");
}

}  // namespace

void register_mse_loss_cuda(OpRegistry& r) {
  cudak::set_cuda_kernel(r, "mse_loss", mse_loss_cuda);
  cudak::set_cuda_kernel(r, "mse_loss_backward", mse_loss_backward_cuda);
}

}  // namespace minidl
