// CUDA kernel of fused_conv_transpose3d_ln_gelu_scale: conv_transpose3d (stride 2, kernel 4)
// -> + conv bias -> LayerNorm(last dim, 64) -> GELU -> * factor in one kernel on tensor cores,
// FP16 or TF32 operands with FP32 accumulation (attribute `operands`; precise=true: FP32 FMA).
// The kernels live in ops/fused_conv_transpose3d_ln_gelu_scale_kernel.cuh; this file holds the
// launcher and the registry hook. Building with -DFUSED_CONV_STANDALONE leaves the registry part
// out, so the standalone check (bench/standalone/fused_conv_check.cu) can include this file alone.
#include "ops/fused_conv_transpose3d_ln_gelu_scale_kernel.cuh"

#include <cstdlib>
#include <string>

#ifndef FUSED_CONV_STANDALONE
#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"
#include "ops/cuda_kernels.h"
#include "ops/registry.h"
#endif

namespace minidl {
namespace {
// MINIDL_FUSED_CONV_INPUT=prepass: the FP16 path re-lays out x in a pre-pass even where the main
// kernel could read it directly (the tests compare the two paths; benchmarks time both).
bool direct_input_from_env() {
  const char* input = std::getenv("MINIDL_FUSED_CONV_INPUT");
  return !(input && std::string(input) == "prepass");
}
}  // namespace

void launch_fused_conv_transpose3d_ln_gelu_scale(const float* x, const float* w, const float* conv_bias,
                                                 const float* gamma, const float* beta, float* y, float* mean,
                                                 float* rstd, int64_t N, int64_t Cin, int64_t D, int64_t H,
                                                 int64_t W, int64_t Cout, int pad_d, int pad_h, int pad_w,
                                                 int out_pad_d, int out_pad_h, int out_pad_w, float eps,
                                                 bool tanh_gelu, float factor, bool precise,
                                                 FusedConvOperands operands, void* workspace, cudaStream_t stream) {
  fused_conv_detail::launch(x, w, conv_bias, gamma, beta, y, mean, rstd, N, Cin, D, H, W, Cout, pad_d, pad_h, pad_w,
                            out_pad_d, out_pad_h, out_pad_w, eps, tanh_gelu, factor, precise, workspace, stream,
                            fused_conv_detail::kDefaultVariant, operands, direct_input_from_env());
}

void launch_conv_transpose3d_on_fused_kernel(const float* x, const float* w, const float* conv_bias, float* y,
                                              int64_t N, int64_t Cin, int64_t D, int64_t H, int64_t W, int pad_d,
                                              int pad_h, int pad_w, int out_pad_d, int out_pad_h, int out_pad_w,
                                              void* workspace, cudaStream_t stream) {
  fused_conv_detail::launch_conv_only(x, w, conv_bias, y, N, Cin, D, H, W, pad_d, pad_h, pad_w, out_pad_d, out_pad_h,
                                      out_pad_w, workspace, stream, direct_input_from_env());
}

size_t fused_conv_transpose3d_ln_gelu_scale_workspace_bytes(int64_t N, int64_t Cin, int64_t D, int64_t H,
                                                             bool precise, bool stats) {
  return precise ? 0 : fused_conv_detail::workspace_bytes(N, Cin, D, H, stats);
}

#ifndef FUSED_CONV_STANDALONE
namespace {

const char* const kOp = "fused_conv_transpose3d_ln_gelu_scale";

std::vector<int64_t> three_ints(const KernelContext& ctx, const char* name) {
  const std::vector<int64_t>& v = ctx.attrs().get_ints(name);
  MINIDL_CHECK(v.size() == 3, kOp, ": attribute '", name, "' must have 3 values, got ",
               fused_conv_detail::ints_str(v));
  return v;
}

void fused_conv_cuda(KernelContext& ctx) {
  cudak::check_cuda_tensors(kOp, ctx);
  cudak::require_f32(kOp, ctx);
  MINIDL_CHECK(ctx.inputs.size() == 5 && ctx.outputs.size() == 3, kOp, ": expects 5 inputs and 3 outputs, got ",
               ctx.inputs.size(), " and ", ctx.outputs.size());
  const Tensor& x = ctx.in(0);
  const Tensor& w = ctx.in(1);
  const Tensor& cb = ctx.in(2);
  const Tensor& lw = ctx.in(3);
  const Tensor& lb = ctx.in(4);
  MINIDL_CHECK(lw.defined() && lb.defined(), kOp, ": inputs 'ln_weight' and 'ln_bias' are required");
  const std::vector<int64_t> stride = three_ints(ctx, "stride");
  const std::vector<int64_t> padding = three_ints(ctx, "padding");
  const std::vector<int64_t> out_pad = three_ints(ctx, "output_padding");
  Tensor& y = ctx.out(0);
  const int64_t normalized = y.dim() > 0 ? y.size(-1) : 0;
  const std::string why =
      fused_conv_unsupported_reason(x.shape(), w.shape(), stride, padding, out_pad, normalized);
  MINIDL_CHECK(why.empty(), kOp, ": the CUDA kernel does not support x ", shape_str(x.shape()), " with weight ",
               shape_str(w.shape()), ": ", why);

  const int64_t N = x.size(0), Cin = x.size(1), D = x.size(2), H = x.size(3), W = x.size(4), Cout = w.size(1);
  const int64_t Dout = (D - 1) * 2 - 2 * padding[0] + 4 + out_pad[0];
  const int64_t Hout = (H - 1) * 2 - 2 * padding[1] + 4 + out_pad[1];
  const Shape y_shape = {N, Cout, Dout, Hout, normalized};
  MINIDL_CHECK(y.shape() == y_shape, kOp, ": output 'y' ", y.describe(), " must have shape ", shape_str(y_shape));
  // mean and rstd are optional outputs: undefined when nothing reads them, and then not computed.
  const int64_t rows = N * Cout * Dout * Hout;
  for (size_t k : {1, 2})
    MINIDL_CHECK(!ctx.out(k).defined() || ctx.out(k).numel() == rows, kOp, ": output '", k == 1 ? "mean" : "rstd",
                 "' ", ctx.out(k).describe(), " must hold one value per row (", rows, ")");
  float* const mean = ctx.out_data_or_null<float>(1);
  float* const rstd = ctx.out_data_or_null<float>(2);
  MINIDL_CHECK(!cb.defined() || cb.numel() == Cout, kOp, ": input 'conv_bias' ", cb.describe(), " must have ", Cout,
               " elements");
  MINIDL_CHECK(lw.numel() == normalized && lb.numel() == normalized, kOp, ": inputs 'ln_weight' ", lw.describe(),
               " and 'ln_bias' ", lb.describe(), " must have ", normalized, " elements");
  MINIDL_CHECK(reinterpret_cast<uintptr_t>(y.raw_data()) % 16 == 0, kOp,
               ": output 'y' must be 16-byte aligned for vector stores");

  const std::string& approx = ctx.attrs().get_str("approximate");
  MINIDL_CHECK(approx == "none" || approx == "tanh", kOp, ": attribute 'approximate' must be \"none\" or \"tanh\", got \"",
               approx, "\"");
  // Scratch for the re-laid-out input, returned to the caching allocator right after the launch
  // (or when it throws): every kernel runs on the one stream, so a later user of the block runs
  // after this kernel.
  const bool precise = ctx.attrs().get_bool("precise");
  FusedConvOperands operands = FusedConvOperands::kAuto;
  const std::string ops_why = fused_conv_operands_reason(ctx.attrs().get_str("operands"), precise, Cin, &operands);
  MINIDL_CHECK(ops_why.empty(), kOp, ": ", ops_why, " (x ", shape_str(x.shape()), ")");
  const size_t ws_bytes =
      fused_conv_transpose3d_ln_gelu_scale_workspace_bytes(N, Cin, D, H, precise, mean || rstd);
  struct Scratch {
    void* p;
    ~Scratch() {
      if (p) cuda::deallocate(p);
    }
  } scratch{ws_bytes ? cuda::allocate(ws_bytes) : nullptr};
  void* const workspace = scratch.p;
  launch_fused_conv_transpose3d_ln_gelu_scale(
      x.data<float>(), w.data<float>(), ctx.in_data_or_null<float>(2), lw.data<float>(),
      lb.data<float>(), y.data<float>(), mean, rstd, N, Cin, D, H, W, Cout,
      (int)padding[0], (int)padding[1], (int)padding[2], (int)out_pad[0], (int)out_pad[1], (int)out_pad[2],
      (float)ctx.attrs().get_float("eps"), approx == "tanh", (float)ctx.attrs().get_float("factor"),
      precise, operands, workspace, cuda::stream());
  MINIDL_LAUNCH_CHECK(kOp);
}

}  // namespace

void register_fused_conv_transpose3d_ln_gelu_scale_cuda(OpRegistry& r) {
  r.get_mut(kOp).cuda_kernel = fused_conv_cuda;
}
#endif  // FUSED_CONV_STANDALONE

}  // namespace minidl
