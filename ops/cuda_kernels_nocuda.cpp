// Builds without CUDA: no op gets a CUDA kernel.
#include "ops/registry.h"

namespace minidl {

void register_cuda_kernels(OpRegistry&) {}

}  // namespace minidl
