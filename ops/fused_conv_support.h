// Which ConvTranspose3d configurations the fused CUDA kernel
// fused_conv_transpose3d_ln_gelu_scale (ops/fused_conv_transpose3d_ln_gelu_scale.cu) handles.
// Plain C++17 and header-only, so the fusion pass (passes/fuse_conv_ln_gelu_scale.cpp) asks the
// very rule the kernel enforces, and the two cannot disagree.
//
// The kernel splits the stride-2, kernel-4 transposed convolution into its 8 parity phases and
// keeps one phase class's weights resident in shared memory (64 output channels x 8 taps x Cin x
// both ow parities: 128 KB at Cin 32 with TF32 operands, 64 KB with FP16), so
// it needs: stride 2 and kernel 4 in every dim, Cout = 64, Cin a multiple of 8 up to 32, and an
// output row of exactly 64 values (W_out = 64, the LayerNorm's normalized size).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

#ifdef __CUDACC__
#include <cuda_runtime.h>
#endif

namespace minidl {

namespace fused_conv_limits {
constexpr int64_t kCout = 64;    // output channels the tile covers
constexpr int64_t kWout = 64;    // output row length == LayerNorm normalized size
constexpr int64_t kMaxCin = 32;  // weights of one phase class must fit in shared memory
constexpr int64_t kMaxRows = int64_t(1) << 30;  // N * D_out * H_out rows, indexed in 32 bits
}  // namespace fused_conv_limits

namespace fused_conv_detail {
inline std::string ints_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}
}  // namespace fused_conv_detail

// "" when the fused kernel supports the configuration, else a short reason.
// x: [N, Cin, D, H, W]; weight: [Cin, Cout, kD, kH, kW] (PyTorch ConvTranspose3d layout).
inline std::string fused_conv_unsupported_reason(const Shape& x, const Shape& weight,
                                                 const std::vector<int64_t>& stride,
                                                 const std::vector<int64_t>& padding,
                                                 const std::vector<int64_t>& output_padding,
                                                 int64_t normalized_size) {
  using fused_conv_detail::ints_str;
  namespace L = fused_conv_limits;
  if (x.size() != 5) return "input must be 5-D [N,C,D,H,W], got " + ints_str(x);
  if (weight.size() != 5) return "weight must be 5-D [Cin,Cout,kD,kH,kW], got " + ints_str(weight);
  for (int64_t v : x)
    if (v <= 0) return "input has an empty dimension: " + ints_str(x);
  if (weight[0] != x[1])
    return "weight has " + std::to_string(weight[0]) + " input channels but x has " + std::to_string(x[1]);
  if (x[1] % 8 != 0 || x[1] > L::kMaxCin)
    return "Cin must be a multiple of 8 up to 32, got " + std::to_string(x[1]);
  if (weight[1] != L::kCout) return "Cout must be 64, got " + std::to_string(weight[1]);
  if (weight[2] != 4 || weight[3] != 4 || weight[4] != 4)
    return "kernel must be 4 in every dim, got " + ints_str({weight[2], weight[3], weight[4]});
  if (stride.size() != 3 || stride[0] != 2 || stride[1] != 2 || stride[2] != 2)
    return "stride must be 2 in every dim, got " + ints_str(stride);
  if (padding.size() != 3 || padding[0] < 0 || padding[1] < 0 || padding[2] < 0)
    return "padding must be 3 non-negative values, got " + ints_str(padding);
  if (output_padding.size() != 3) return "output_padding must have 3 values, got " + ints_str(output_padding);
  for (int64_t v : output_padding)
    if (v < 0 || v > 1) return "output_padding must be 0 or 1 (less than the stride), got " + ints_str(output_padding);
  int64_t out[3];
  for (int i = 0; i < 3; ++i) {
    out[i] = (x[2 + i] - 1) * 2 - 2 * padding[i] + 4 + output_padding[i];
    if (out[i] <= 0) return "output size would be empty: " + ints_str({out[0], out[1], out[2]});
  }
  if (normalized_size != L::kWout)
    return "normalized size must be 64, got " + std::to_string(normalized_size);
  if (out[2] != L::kWout) return "W_out must equal the normalized size 64, got " + std::to_string(out[2]);
  if (x[0] * out[0] * out[1] > L::kMaxRows)
    return "too many output rows (N*D_out*H_out = " + std::to_string(x[0] * out[0] * out[1]) + ")";
  return "";
}

// Tensor-core operand format of the fused kernel (attribute `operands`; precise = true ignores
// it). kAuto: FP16 operands with FP32 accumulation (the same 10-bit mantissa as TF32, so the same
// rounding, at twice the tensor rate and half the operand bytes) when C_in is a multiple of 16
// and max|x| lies in [2^-8, 2^15], decided on the device per call; TF32 otherwise. (The FP16
// weights are scaled by a power of two into FP16's range, so their magnitude does not matter.)
// kTf32 / kF16 force one, kF16 with no range test (C_in must then be a multiple of 16).
enum class FusedConvOperands { kAuto, kTf32, kF16 };
inline const char* fused_conv_operands_name(FusedConvOperands o) {
  return o == FusedConvOperands::kTf32 ? "tf32" : o == FusedConvOperands::kF16 ? "f16" : "auto";
}
// The attribute's value as the enum; false when it is not one of "auto", "tf32", "f16" (the
// caller reports the error, naming the op).
inline bool parse_fused_conv_operands(const std::string& s, FusedConvOperands* out) {
  for (FusedConvOperands o : {FusedConvOperands::kAuto, FusedConvOperands::kTf32, FusedConvOperands::kF16})
    if (s == fused_conv_operands_name(o)) {
      *out = o;
      return true;
    }
  return false;
}
// FP16 operands need C_in a multiple of 16 (one wgmma step of K = 16 within a tap).
inline bool fused_conv_f16_supported(int64_t cin) { return cin % 16 == 0; }
// The attribute `operands` of a node with input channels `cin` as the enum in *out; "" when it is
// valid, else why not (the caller names the op).
inline std::string fused_conv_operands_reason(const std::string& name, bool precise, int64_t cin,
                                              FusedConvOperands* out) {
  if (!parse_fused_conv_operands(name, out))
    return "attribute 'operands' must be \"auto\", \"tf32\" or \"f16\", got \"" + name + "\"";
  if (!precise && *out == FusedConvOperands::kF16 && !fused_conv_f16_supported(cin))
    return "operands \"f16\" needs C_in a multiple of 16, x has " + std::to_string(cin) + " channels";
  return "";
}

#ifdef __CUDACC__
// Runs the fused forward on `stream`: y = factor * gelu(layer_norm(conv_transpose3d(x, w) + bias)),
// plus the per-row mean and rstd ([N, Cout, D_out, H_out]) of conv + bias where those pointers are
// not null. conv_bias, gamma and beta may be null (zero bias, gamma = 1, beta = 0). The
// configuration must pass fused_conv_unsupported_reason (else std::invalid_argument).
// precise = false uses tensor cores (wgmma, sm_90a; operand format `operands`) and needs
// `workspace` (device memory of fused_conv_transpose3d_ln_gelu_scale_workspace_bytes(...,
// stats = mean || rstd), for the operand range words, a re-laid-out copy of x and the statistics'
// scratch, in use until the kernels finish); precise = true runs FP32 FMA throughout and needs none.
size_t fused_conv_transpose3d_ln_gelu_scale_workspace_bytes(int64_t N, int64_t Cin, int64_t D, int64_t H,
                                                             bool precise, bool stats);
void launch_fused_conv_transpose3d_ln_gelu_scale(const float* x, const float* w, const float* conv_bias,
                                                 const float* gamma, const float* beta, float* y, float* mean,
                                                 float* rstd, int64_t N, int64_t Cin, int64_t D, int64_t H,
                                                 int64_t W, int64_t Cout, int pad_d, int pad_h, int pad_w,
                                                 int out_pad_d, int out_pad_h, int out_pad_w, float eps,
                                                 bool tanh_gelu, float factor, bool precise,
                                                 FusedConvOperands operands, void* workspace, cudaStream_t stream);
// The plain conv_transpose3d (y = conv(x, w) + conv_bias, bias may be null) on the same tensor-core
// kernels with a bias-only epilogue, FP16 operands under the range test (TF32 otherwise), for
// any configuration fused_conv_unsupported_reason accepts with normalized size = W_out (64).
// `workspace`: fused_conv_transpose3d_ln_gelu_scale_workspace_bytes(N, Cin, D, H, false, false).
void launch_conv_transpose3d_on_fused_kernel(const float* x, const float* w, const float* conv_bias, float* y,
                                              int64_t N, int64_t Cin, int64_t D, int64_t H, int64_t W, int pad_d,
                                              int pad_h, int pad_w, int out_pad_d, int out_pad_h, int out_pad_w,
                                              void* workspace, cudaStream_t stream);
#endif

}  // namespace minidl
