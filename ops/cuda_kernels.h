// Shared by the CUDA op files (ops/*.cu): the registration functions that
// register_cuda_kernels() (ops/cuda_kernels.cu) calls, checks every CUDA kernel runs on its
// tensors, launch-size helpers, and the LayerNorm row kernels that layer_norm.cu defines and
// fused_ln_gelu_scale.cu reuses.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "ops/registry.h"

namespace minidl {

// One per .cu file; each sets r.get_mut(op).cuda_kernel for the ops of that file.
void register_elementwise_cuda(OpRegistry& r);
void register_scale_cuda(OpRegistry& r);
void register_reduce_cuda(OpRegistry& r);
void register_reshape_cuda(OpRegistry& r);
void register_mse_loss_cuda(OpRegistry& r);
void register_gelu_cuda(OpRegistry& r);
void register_layer_norm_cuda(OpRegistry& r);
void register_conv_transpose3d_cuda(OpRegistry& r);
void register_fused_ln_gelu_scale_cuda(OpRegistry& r);
void register_fused_conv_transpose3d_ln_gelu_scale_cuda(OpRegistry& r);

namespace cudak {

// Sets the CUDA kernel of `op` if the op is registered (an op missing from the registry has no
// CPU side either, so there is nothing to attach the kernel to).
void set_cuda_kernel(OpRegistry& r, const std::string& op, Kernel k);

// Every CUDA kernel calls this first: each defined input and output must be a CUDA tensor and
// contiguous; otherwise a minidl::Error names the op, the tensor and where it lives.
void check_cuda_tensors(const std::string& op, const KernelContext& ctx);
// Throws "op: CUDA kernel supports f32 only, got f64 tensor 'name'" for any non-f32 tensor.
void require_f32(const std::string& op, const KernelContext& ctx);

// The name of input / output i from the op's schema (for messages).
std::string input_name(const KernelContext& ctx, size_t i);
std::string output_name(const KernelContext& ctx, size_t i);

// Grid size for a grid-stride loop over n items with `block` threads: enough blocks to fill the
// GPU several times over, never more than needed.
unsigned grid_for(int64_t n, unsigned block, unsigned blocks_per_sm = 8);

// A scratch device buffer from the caching allocator, freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T> T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
};

// ---- LayerNorm row kernels (defined in layer_norm.cu) -----------------------------------------
// x is [rows, cols] contiguous. With gelu=false: y = ((x-mean)*rstd)*w + b (w, b may be null);
// with gelu=true: y = factor * gelu(that). mean/rstd (per row) may be null.
struct LnForwardArgs {
  const float* x = nullptr;
  const float* w = nullptr;
  const float* b = nullptr;
  float* y = nullptr;
  float* mean = nullptr;
  float* rstd = nullptr;
  int64_t rows = 0, cols = 0;
  float eps = 1e-5f;
  bool gelu = false, tanh_approx = false;
  float factor = 1.0f;
};
void launch_ln_forward(const char* op, const LnForwardArgs& a);

// Backward from saved mean/rstd. With gelu=true, dy is the gradient of the fused output and the
// GELU/scale derivative is applied first (recomputing u = xhat*w + b). dx is always written;
// dw/db (length cols) are written when non-null, by a deterministic two-stage reduction.
struct LnBackwardArgs {
  const float* dy = nullptr;
  const float* x = nullptr;
  const float* w = nullptr;
  const float* b = nullptr;
  const float* mean = nullptr;  // both null: the statistics are recomputed from x (with eps)
  const float* rstd = nullptr;
  float eps = 1e-5f;
  float* dx = nullptr;
  float* dw = nullptr;
  float* db = nullptr;
  int64_t rows = 0, cols = 0;
  bool gelu = false, tanh_approx = false;
  float factor = 1.0f;
};
void launch_ln_backward(const char* op, const LnBackwardArgs& a);

}  // namespace cudak
}  // namespace minidl
