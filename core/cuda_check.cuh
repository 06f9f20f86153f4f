// Included only by .cu files: checked CUDA / cuBLAS calls, the shared stream and launch checks.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

namespace minidl {
namespace cuda {

cudaStream_t stream();          // the one stream every minidl kernel runs on
cublasHandle_t cublas_handle(); // bound to stream()
int num_sms();

}  // namespace cuda
}  // namespace minidl

// MINIDL_CUDA_CHECK(cudaMemcpy(...), "what was being done") -> throws with the CUDA error string.
#define MINIDL_CUDA_CHECK(expr, ...)                                                           \
  do {                                                                                          \
    cudaError_t minidl_err_ = (expr);                                                           \
    if (minidl_err_ != cudaSuccess)                                                             \
      ::minidl::detail::throw_error(::minidl::detail::concat(                                   \
          __VA_ARGS__, ": CUDA error ", cudaGetErrorName(minidl_err_), " (",                    \
          cudaGetErrorString(minidl_err_), ") at ", __FILE__, ":", __LINE__));                  \
  } while (0)

#define MINIDL_CUBLAS_CHECK(expr, ...)                                                         \
  do {                                                                                          \
    cublasStatus_t minidl_st_ = (expr);                                                         \
    if (minidl_st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      ::minidl::detail::throw_error(::minidl::detail::concat(                                   \
          __VA_ARGS__, ": cuBLAS status ", static_cast<int>(minidl_st_), " at ", __FILE__, ":", \
          __LINE__));                                                                           \
  } while (0)

// After every kernel launch: catches bad configurations and launch failures, naming the op.
// Define MINIDL_SYNC_LAUNCHES (or set MINIDL_CUDA_SYNC=1 at run time) to also catch
// asynchronous faults at the launch that caused them.
namespace minidl { namespace cuda { void check_launch(const char* op_name, const char* file, int line); } }
#define MINIDL_LAUNCH_CHECK(op_name) ::minidl::cuda::check_launch(op_name, __FILE__, __LINE__)
