// Hooks every op's CUDA kernel into the registry, and the helpers the CUDA op files share.
#include "ops/cuda_kernels.h"

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"

namespace minidl {

void register_cuda_kernels(OpRegistry& r) {
  register_elementwise_cuda(r);
  register_scale_cuda(r);
  register_reduce_cuda(r);
  register_reshape_cuda(r);
  register_mse_loss_cuda(r);
  register_gelu_cuda(r);
  register_layer_norm_cuda(r);
  register_conv_transpose3d_cuda(r);
  register_fused_ln_gelu_scale_cuda(r);
  register_fused_conv_transpose3d_ln_gelu_scale_cuda(r);
}

namespace cudak {

void set_cuda_kernel(OpRegistry& r, const std::string& op, Kernel k) {
  if (r.has(op)) r.get_mut(op).cuda_kernel = std::move(k);
}

std::string input_name(const KernelContext& ctx, size_t i) {
  const OpRegistry& r = OpRegistry::instance();
  if (r.has(ctx.node.op)) {
    const auto& names = r.get(ctx.node.op).input_names;
    if (i < names.size()) return names[i];
  }
  return "input " + std::to_string(i);
}

std::string output_name(const KernelContext& ctx, size_t i) {
  const OpRegistry& r = OpRegistry::instance();
  if (r.has(ctx.node.op)) {
    const auto& names = r.get(ctx.node.op).output_names;
    if (i < names.size()) return names[i];
  }
  return "output " + std::to_string(i);
}

void check_cuda_tensors(const std::string& op, const KernelContext& ctx) {
  for (size_t i = 0; i < ctx.inputs.size(); ++i) {
    const Tensor& t = ctx.inputs[i];
    if (!t.defined()) continue;
    MINIDL_CHECK(t.device().is_cuda(), op, ": CUDA kernel got input '", input_name(ctx, i), "' as ", t.describe(),
                 "; move it to the GPU first (tensor.to(Device::cuda()))");
    MINIDL_CHECK(t.is_contiguous(), op, ": CUDA kernel needs contiguous tensors, input '", input_name(ctx, i),
                 "' is not (", t.describe(), ")");
  }
  for (size_t i = 0; i < ctx.outputs.size(); ++i) {
    const Tensor& t = ctx.outputs[i];
    if (!t.defined()) continue;
    MINIDL_CHECK(t.device().is_cuda(), op, ": CUDA kernel got output '", output_name(ctx, i), "' as ",
                 t.describe(), "; outputs must be allocated on the GPU");
    MINIDL_CHECK(t.is_contiguous(), op, ": CUDA kernel needs contiguous tensors, output '", output_name(ctx, i),
                 "' is not (", t.describe(), ")");
  }
}

void require_f32(const std::string& op, const KernelContext& ctx) {
  for (size_t i = 0; i < ctx.inputs.size(); ++i)
    if (ctx.inputs[i].defined())
      MINIDL_CHECK(ctx.inputs[i].dtype() == DType::F32, op, ": CUDA kernel supports f32 only, got ",
                   dtype_name(ctx.inputs[i].dtype()), " tensor '", input_name(ctx, i), "' (",
                   ctx.inputs[i].describe(), "); run f64 graphs on the CPU");
  for (size_t i = 0; i < ctx.outputs.size(); ++i)
    if (ctx.outputs[i].defined())
      MINIDL_CHECK(ctx.outputs[i].dtype() == DType::F32, op, ": CUDA kernel supports f32 only, got ",
                   dtype_name(ctx.outputs[i].dtype()), " output '", output_name(ctx, i), "' (",
                   ctx.outputs[i].describe(), "); run f64 graphs on the CPU");
}

unsigned grid_for(int64_t n, unsigned block, unsigned blocks_per_sm) {
  if (n <= 0) return 1;
  const int64_t need = (n + block - 1) / block;
  const int64_t cap = int64_t(cuda::num_sms()) * blocks_per_sm;
  return static_cast<unsigned>(need < cap ? need : cap);
}

DeviceBuffer::DeviceBuffer(size_t bytes) : p_(cuda::allocate(bytes ? bytes : 1)) {}
DeviceBuffer::~DeviceBuffer() { cuda::deallocate(p_); }

}  // namespace cudak
}  // namespace minidl
