// Fusion passes. Both run on the forward graph before autograd (the fused ops carry their own
// gradient rules). Each leaves the graph unchanged where fusing would not be legal.
//   fuse_ln_gelu_scale:  layer_norm(last dim) -> gelu -> scale  =>  fused_ln_gelu_scale
//   fuse_conv_ln_gelu_scale: conv_transpose3d -> fused_ln_gelu_scale
//                        =>  fused_conv_transpose3d_ln_gelu_scale (when the CUDA kernel supports it)
// fusion_enabled() is false when MINIDL_NO_FUSE=1 is set.
#pragma once
#include "graph/graph.h"
#include "ops/fused_conv_support.h"
#include "passes/pass_manager.h"
#include "passes/pattern.h"

namespace minidl {

bool fuse_ln_gelu_scale(Graph& g);
// precise: the fused kernel computes in FP32 (FMA) instead of on tensor cores, for users who turn
// TF32 off. operands: the tensor cores' operand format (FusedConvOperands: auto, tf32, f16).
bool fuse_conv_ln_gelu_scale(Graph& g, bool precise = false, FusedConvOperands operands = FusedConvOperands::kAuto);
bool fusion_enabled();

// The patterns (ops and legality predicates) behind the two fusions, so tests and tools can ask
// match_chains why a chain was or was not fused.
ChainPattern ln_gelu_scale_pattern();
ChainPattern conv_ln_gelu_scale_pattern();

// The forward pipeline: fusions (if enabled and `fuse`), then dead-code elimination. `precise`
// and `operands` are handed to the conv fusion (also set by MINIDL_PRECISE=1 and by
// MINIDL_FUSED_CONV_OPERANDS=auto|tf32|f16, which override them).
PassManager forward_passes(bool fuse, bool precise = false, FusedConvOperands operands = FusedConvOperands::kAuto);
// Passes over the graph once backward nodes are appended: dead-code elimination.
PassManager backward_passes();

}  // namespace minidl
