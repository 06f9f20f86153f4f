// CUDA kernels for sum, mean (deterministic: fixed-order reductions, no atomics, accumulated in
// double) and expand (broadcast copy). f32 and f64.
#include <vector>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"
#include "ops/op_util.h"

namespace minidl {
namespace {

constexpr int kMaxDims = 12;

// A set of dims walked by a linear index: sizes (outermost first) and the element stride of
// each in x.
struct DimWalk {
  int n = 0;
  int64_t size[kMaxDims];
  int64_t stride[kMaxDims];
  // Offset in x of linear index i (row-major over the dims).
  __device__ __forceinline__ int64_t offset(int64_t i) const {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; --d) {
      const int64_t q = i / size[d];
      off += (i - q * size[d]) * stride[d];
      i = q;
    }
    return off;
  }
};

// Splits x's dims into kept (output) and reduced ones, merging neighbours that are both kept or
// both reduced and contiguous, and dropping size-1 dims.
void plan_reduce(const Shape& xs, const std::vector<bool>& reduced, DimWalk& kept, DimWalk& red) {
  const Shape st = contiguous_strides(xs);
  kept.n = red.n = 0;
  int last = -1;  // 0 kept, 1 reduced
  for (size_t d = 0; d < xs.size(); ++d) {
    if (xs[d] == 1) continue;
    const int kind = reduced[d] ? 1 : 0;
    DimWalk& w = kind ? red : kept;
    if (kind == last && w.n > 0 && w.stride[w.n - 1] == xs[d] * st[d]) {
      w.size[w.n - 1] *= xs[d];  // contiguous with the previous dim of the same kind
      w.stride[w.n - 1] = st[d];
    } else {
      MINIDL_CHECK(w.n < kMaxDims, "sum/mean: too many dims for the CUDA kernel");
      w.size[w.n] = xs[d];
      w.stride[w.n] = st[d];
      ++w.n;
    }
    last = kind;
  }
}

// One thread per output, sequential over the reduced elements (used when each output folds few
// elements or there are many outputs).
template <class T>
__global__ void reduce_per_thread(const T* __restrict__ x, T* __restrict__ y, DimWalk kept, DimWalk red, int64_t O,
                                  int64_t R, double scale) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < O; o += stride) {
    const int64_t base = kept.offset(o);
    double acc = 0;
    for (int64_t r = 0; r < R; ++r) acc += static_cast<double>(x[base + red.offset(r)]);
    y[o] = static_cast<T>(acc * scale);
  }
}

// Block-wide sum of one double per thread, in a fixed order; the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double s = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) s += warp_sums[w];
  __syncthreads();
  return s;
}

// Stage 1: block (c, o) sums chunk c of output o's reduced elements into partial[o * C + c].
template <class T>
__global__ void reduce_partial(const T* __restrict__ x, double* __restrict__ partial, DimWalk kept, DimWalk red,
                               int64_t R, int64_t chunk) {
  const int64_t o = blockIdx.y;
  const int64_t c = blockIdx.x;
  const int64_t base = kept.offset(o);
  const int64_t r0 = c * chunk, r1 = min(R, r0 + chunk);
  double acc = 0;
  for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) acc += static_cast<double>(x[base + red.offset(r)]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[o * gridDim.x + c] = acc;
}

// Stage 2: y[o] = scale * sum_c partial[o * C + c], in order.
template <class T>
__global__ void reduce_final(const double* __restrict__ partial, T* __restrict__ y, int64_t O, int64_t C,
                             double scale) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < O; o += int64_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += partial[o * C + c];
    y[o] = static_cast<T>(s * scale);
  }
}

template <class T>
void reduce_launch(const char* op, const T* x, T* y, const DimWalk& kept, const DimWalk& red, int64_t O, int64_t R,
                   double scale) {
  cudaStream_t st = cuda::stream();
  if (O == 0) return;
  if (R <= 512 || O >= int64_t(cuda::num_sms()) * 256) {
    reduce_per_thread<T><<<cudak::grid_for(O, 256), 256, 0, st>>>(x, y, kept, red, O, R, scale);
    MINIDL_LAUNCH_CHECK(op);
    return;
  }
  MINIDL_CHECK(O <= 65535, op, ": CUDA reduction with ", O, " outputs of ", R, " elements each is not supported");
  // Enough chunks to give every SM a few blocks, each chunk at least 8 elements per thread.
  const int64_t want_blocks = int64_t(cuda::num_sms()) * 4;
  int64_t C = (want_blocks + O - 1) / O;
  const int64_t max_c = (R + 2047) / 2048;
  if (C > max_c) C = max_c;
  if (C < 1) C = 1;
  const int64_t chunk = (R + C - 1) / C;
  C = (R + chunk - 1) / chunk;
  cudak::DeviceBuffer partial(static_cast<size_t>(O * C) * sizeof(double));
  reduce_partial<T><<<dim3(unsigned(C), unsigned(O)), 256, 0, st>>>(x, partial.as<double>(), kept, red, R, chunk);
  MINIDL_LAUNCH_CHECK(op);
  reduce_final<T><<<cudak::grid_for(O, 128), 128, 0, st>>>(partial.as<double>(), y, O, C, scale);
  MINIDL_LAUNCH_CHECK(op);
}

// The reduced dims, as reduce.cpp's shape rule reads them.
std::vector<bool> reduced_dims(const char* op, const Shape& xs, const Attrs& a) {
  const int64_t rank = static_cast<int64_t>(xs.size());
  const std::vector<int64_t>& dims = a.get_ints("dims");
  std::vector<bool> red(xs.size(), dims.empty());
  for (int64_t d : dims) red[static_cast<size_t>(ops::wrap_dim(op, d, rank))] = true;
  return red;
}

Kernel reduce_cuda(const char* op, bool mean) {
  return [op, mean](KernelContext& ctx) {
    cudak::check_cuda_tensors(op, ctx);
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.out(0);
    MINIDL_CHECK(x.dtype() == y.dtype(), op, ": input ", x.describe(), " and output ", y.describe(), " differ in dtype");
    std::vector<bool> red = reduced_dims(op, x.shape(), ctx.attrs());
    int64_t R = 1;
    for (size_t d = 0; d < red.size(); ++d)
      if (red[d]) R *= x.shape()[d];
    const int64_t O = y.numel();
    MINIDL_CHECK(O * R == x.numel(), op, ": output ", y.describe(), " does not match input ", x.describe());
    DimWalk kept, rd;
    plan_reduce(x.shape(), red, kept, rd);
    // mean of zero elements is NaN, as on the CPU.
    const double scale = mean ? 1.0 / static_cast<double>(R) : 1.0;
    if (x.dtype() == DType::F32)
      reduce_launch<float>(op, x.data<float>(), y.data<float>(), kept, rd, O, R, scale);
    else
      reduce_launch<double>(op, x.data<double>(), y.data<double>(), kept, rd, O, R, scale);
  };
}

// ---- expand --------------------------------------------------------------------------------
struct ExpandWalk {
  int n = 0;
  int64_t size[kMaxDims];
  int64_t xstride[kMaxDims];  // 0 on broadcast dims
};

template <class T>
__global__ void expand_kernel(const T* __restrict__ x, T* __restrict__ y, ExpandWalk w, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    int64_t rem = i, off = 0;
    for (int d = w.n - 1; d >= 0; --d) {
      const int64_t q = rem / w.size[d];
      off += (rem - q * w.size[d]) * w.xstride[d];
      rem = q;
    }
    y[i] = x[off];
  }
}

void expand_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors("expand", ctx);
  const Tensor& x = ctx.in(0);
  Tensor& y = ctx.out(0);
  const Shape &xs = x.shape(), &ys = y.shape();
  MINIDL_CHECK(ys.size() >= xs.size() && x.dtype() == y.dtype(), "expand: input 'x' ", x.describe(),
               " cannot expand to output ", y.describe());
  const Shape xst = contiguous_strides(xs);
  ExpandWalk w;
  const size_t lead = ys.size() - xs.size();
  for (size_t d = 0; d < ys.size(); ++d) {
    if (ys[d] == 1) continue;
    int64_t s = 0;
    if (d >= lead) {
      const int64_t xd = xs[d - lead];
      MINIDL_CHECK(xd == ys[d] || xd == 1, "expand: input 'x' ", x.describe(), " cannot expand to ", y.describe());
      s = xd == 1 ? 0 : xst[d - lead];
    }
    MINIDL_CHECK(w.n < kMaxDims, "expand: too many dims for the CUDA kernel: ", y.describe());
    w.size[w.n] = ys[d];
    w.xstride[w.n] = s;
    ++w.n;
  }
  const int64_t n = y.numel();
  if (n == 0) return;
  if (y.dtype() == DType::F32)
    expand_kernel<float><<<cudak::grid_for(n, 256), 256, 0, cuda::stream()>>>(x.data<float>(), y.data<float>(), w, n);
  else
    expand_kernel<double><<<cudak::grid_for(n, 256), 256, 0, cuda::stream()>>>(x.data<double>(), y.data<double>(), w, n);
  MINIDL_LAUNCH_CHECK("expand");
}

}  // namespace

void register_reduce_cuda(OpRegistry& r) {
  cudak::set_cuda_kernel(r, "sum", reduce_cuda("sum", false));
  cudak::set_cuda_kernel(r, "mean", reduce_cuda("mean", true));
  cudak::set_cuda_kernel(r, "expand", expand_cuda);
}

}  // namespace minidl
