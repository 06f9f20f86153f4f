// core/cuda_runtime.h for builds without CUDA: nothing is available, and anything that would need a
// device says so clearly.
#include "core/cuda_runtime.h"

#include "core/error.h"

namespace minidl {
namespace cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  MINIDL_FAIL(what, ": minidl was built without CUDA (rebuild with nvcc available and MINIDL_WITH_CUDA=ON)");
}
}  // namespace

bool built_with_cuda() { return false; }
bool cuda_available() { return false; }
std::string device_name() { no_cuda("cuda::device_name"); }

void* allocate(size_t) { no_cuda("cuda::allocate"); }
void deallocate(void*) {}  // nothing can have been allocated
void empty_cache() {}
size_t bytes_in_use() { return 0; }
size_t peak_bytes_in_use() { return 0; }
void reset_peak() {}

void memcpy_h2d(void*, const void*, size_t) { no_cuda("cuda::memcpy_h2d"); }
void memcpy_d2h(void*, const void*, size_t) { no_cuda("cuda::memcpy_d2h"); }
void memcpy_d2d(void*, const void*, size_t) { no_cuda("cuda::memcpy_d2d"); }
void fill_f32(float*, size_t, float) { no_cuda("cuda::fill_f32"); }
void fill_f64(double*, size_t, double) { no_cuda("cuda::fill_f64"); }
void convert_f32_to_f64(const float*, double*, size_t) { no_cuda("cuda::convert_f32_to_f64"); }
void convert_f64_to_f32(const double*, float*, size_t) { no_cuda("cuda::convert_f64_to_f32"); }
void synchronize() {}

}  // namespace cuda
}  // namespace minidl
