// The CUDA side of core/: availability, a caching device allocator, the stream every kernel runs
// on, and checked wrappers. Everything here also links in a build without CUDA, where
// cuda_available() is false and the rest throws a clear error.
#pragma once
#include <cstddef>
#include <string>

namespace minidl {
namespace cuda {

bool built_with_cuda();
bool cuda_available();        // built with CUDA and a device is present
std::string device_name();    // "NVIDIA H100 80GB HBM3"

// Caching allocator: blocks are kept in size-class free lists and reused; out-of-memory
// frees the cache and retries once, then throws minidl::Error naming the request.
void* allocate(size_t bytes);
void deallocate(void* p);
void empty_cache();
size_t bytes_in_use();
size_t peak_bytes_in_use();
void reset_peak();

void memcpy_h2d(void* dst, const void* src, size_t bytes);
void memcpy_d2h(void* dst, const void* src, size_t bytes);
void memcpy_d2d(void* dst, const void* src, size_t bytes);
void fill_f32(float* p, size_t n, float v);
void fill_f64(double* p, size_t n, double v);
void convert_f32_to_f64(const float* src, double* dst, size_t n);
void convert_f64_to_f32(const double* src, float* dst, size_t n);
void synchronize();  // waits for the stream and reports any asynchronous error

}  // namespace cuda
}  // namespace minidl
