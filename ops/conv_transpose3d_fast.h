// Shared by the conv_transpose3d CUDA files: the geometry the kernels take, and the fast paths
// (conv_transpose3d_fast.cu) that conv_transpose3d.cu dispatches to when they apply.
#pragma once

namespace minidl {
namespace conv_cuda {

struct Geo {
  int N, Cin, Cout;
  int in[3], out[3], k[3], s[3], p[3];
};

namespace fast {
// True for the geometry the fast kernels handle (stride 2, kernel 4, padding 1, output = 2 x input,
// C_in 32, C_out 64, input width 32) unless MINIDL_CONV_GENERAL=1.
bool applies(const Geo& g);
// MINIDL_CONV_GENERAL=1: every geometry takes the general path.
bool disabled_by_env();
// Each returns false (having launched nothing) when the device cannot run it; the caller then
// takes the general path.
bool forward(const Geo& g, const float* x, const float* w, const float* bias, float* y);
bool grad_input(const Geo& g, const float* dy, const float* w, float* dx);
bool grad_weight(const Geo& g, const float* x, const float* dy, float* dw);
}  // namespace fast

}  // namespace conv_cuda
}  // namespace minidl
