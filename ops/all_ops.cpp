// Every built-in op's registration, one call per op file (see ops/README.md for the op list).
// "input" and "param" are registered by ops/registry.cpp.
#include "ops/op_util.h"

namespace minidl {

void register_builtin_ops(OpRegistry& r) {
  register_elementwise_ops(r);
  register_scale_ops(r);
  register_reduce_ops(r);
  register_reshape_ops(r);
  register_mse_loss_ops(r);
  register_gelu_ops(r);
  register_layer_norm_ops(r);
  register_conv_transpose3d_ops(r);
  register_fused_ln_gelu_scale_ops(r);
  register_fused_conv_transpose3d_ln_gelu_scale_ops(r);
}

}  // namespace minidl
