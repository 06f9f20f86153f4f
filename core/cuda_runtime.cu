// The CUDA side of core/: device discovery, a caching allocator, the one stream every kernel runs
// on (with a cuBLAS handle bound to it), copies, fills and launch checks.
//
// Allocator: cudaMalloc/cudaFree synchronise the device and cost tens of microseconds, and the
// executor frees and reallocates the same sizes every step, so freed blocks go to per-size free
// lists and are handed out again. Small requests round up to 512 bytes, large ones (>= 1 MiB) to
// 2 MiB, so a few buckets serve repeated sizes. Reuse is safe without events because every
// kernel and copy runs on the same stream: work queued on a block before it was freed finishes
// before work queued by its next owner starts.
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/cuda_check.cuh"
#include "core/cuda_runtime.h"

namespace minidl {
namespace cuda {

bool built_with_cuda() { return true; }

bool cuda_available() {
  // Cached: the answer cannot change within a process. Never throws: a missing driver or device
  // is a normal condition here (CPU-only machines run the same binary).
  static const bool available = [] {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear it so later calls do not report it
      return false;
    }
    return count > 0;
  }();
  return available;
}

static void require_device(const char* what) {
  MINIDL_CHECK(cuda_available(), what, ": no CUDA device is available (cudaGetDeviceCount found none)");
}

std::string device_name() {
  require_device("cuda::device_name");
  cudaDeviceProp prop;
  MINIDL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0), "cuda::device_name");
  return prop.name;
}

int num_sms() {
  static const int n = [] {
    require_device("cuda::num_sms");
    int v = 0;
    MINIDL_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0), "cuda::num_sms");
    return v;
  }();
  return n;
}

cudaStream_t stream() {
  // Created once, lazily; never destroyed (the driver tears it down at exit, and tensors freed
  // during static destruction may still reference it).
  static cudaStream_t s = [] {
    require_device("cuda::stream");
    cudaStream_t st = nullptr;
    MINIDL_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cuda::stream: creating the stream");
    return st;
  }();
  return s;
}

cublasHandle_t cublas_handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t handle = nullptr;
    MINIDL_CUBLAS_CHECK(cublasCreate(&handle), "cuda::cublas_handle: cublasCreate");
    MINIDL_CUBLAS_CHECK(cublasSetStream(handle, stream()), "cuda::cublas_handle: cublasSetStream");
    return handle;
  }();
  return h;
}

// ---- caching allocator ----------------------------------------------------------------------
namespace {

constexpr size_t kSmallRound = 512;
constexpr size_t kLargeThreshold = size_t(1) << 20;
constexpr size_t kLargeRound = size_t(2) << 20;

size_t round_size(size_t bytes) {
  if (bytes < kLargeThreshold) return (bytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (bytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

struct Allocator {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // rounded size -> cached blocks
  std::unordered_map<void*, size_t> live;            // block -> rounded size
  size_t in_use = 0, peak = 0, cached = 0;

  // Frees every cached block; caller holds mu.
  void release_cache() {
    for (auto& kv : free_blocks)
      for (void* p : kv.second) (void)cudaFree(p);
    free_blocks.clear();
    cached = 0;
  }
};

// Leaked on purpose: tensors destroyed during static destruction still return their blocks.
Allocator& alloc_state() {
  static Allocator* a = new Allocator();
  return *a;
}

std::string mib(size_t b) { return detail::concat(b / (1024.0 * 1024.0), " MiB"); }

}  // namespace

void* allocate(size_t bytes) {
  require_device("cuda::allocate");
  Allocator& a = alloc_state();
  const size_t size = round_size(bytes ? bytes : 1);
  std::lock_guard<std::mutex> lock(a.mu);
  void* p = nullptr;
  auto it = a.free_blocks.find(size);
  if (it != a.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    a.cached -= size;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      // Cached blocks of other sizes may be what stands in the way: give them back, retry once.
      (void)cudaStreamSynchronize(stream());
      a.release_cache();
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      (void)cudaGetLastError();
      MINIDL_FAIL("CUDA out of memory: requested ", bytes, " bytes (", mib(size), " rounded) (in use ",
                  a.in_use, " bytes = ", mib(a.in_use), " by minidl tensors, peak ", mib(a.peak), "; device free ",
                  mib(free_b), " of ", mib(total_b), "): ", cudaGetErrorString(e));
    }
  }
  a.live[p] = size;
  a.in_use += size;
  if (a.in_use > a.peak) a.peak = a.in_use;
  return p;
}

void deallocate(void* p) {
  // Must not throw: called from destructors, possibly at process exit.
  if (!p) return;
  Allocator& a = alloc_state();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(p);
  if (it == a.live.end()) return;  // not ours; ignore rather than crash in a destructor
  const size_t size = it->second;
  a.live.erase(it);
  a.in_use -= size;
  a.free_blocks[size].push_back(p);
  a.cached += size;
}

void empty_cache() {
  if (!cuda_available()) return;
  Allocator& a = alloc_state();
  std::lock_guard<std::mutex> lock(a.mu);
  MINIDL_CUDA_CHECK(cudaStreamSynchronize(stream()), "cuda::empty_cache");
  a.release_cache();
}

size_t bytes_in_use() {
  Allocator& a = alloc_state();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.in_use;
}

size_t peak_bytes_in_use() {
  Allocator& a = alloc_state();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.peak;
}

void reset_peak() {
  Allocator& a = alloc_state();
  std::lock_guard<std::mutex> lock(a.mu);
  a.peak = a.in_use;
}

// ---- copies ---------------------------------------------------------------------------------
void memcpy_h2d(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  // From pageable memory the call returns once the source is staged, so src may be freed after.
  MINIDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()),
                    "cuda::memcpy_h2d of ", bytes, " bytes");
}

void memcpy_d2h(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  MINIDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()),
                    "cuda::memcpy_d2h of ", bytes, " bytes");
  MINIDL_CUDA_CHECK(cudaStreamSynchronize(stream()), "cuda::memcpy_d2h: waiting for the copy (or an earlier kernel)");
}

void memcpy_d2d(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  MINIDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()),
                    "cuda::memcpy_d2d of ", bytes, " bytes");
}

// ---- fills and conversions --------------------------------------------------------------------
namespace {

template <class T>
__global__ void fill_kernel(T* p, size_t n, T v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) p[i] = v;
}

template <class S, class D>
__global__ void convert_kernel(const S* src, D* dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = static_cast<D>(src[i]);
}

unsigned grid_for(size_t n, unsigned block) {
  size_t blocks = (n + block - 1) / block;
  const size_t cap = size_t(num_sms()) * 16;  // grid-stride loops cover the rest
  return static_cast<unsigned>(blocks < cap ? (blocks ? blocks : 1) : cap);
}

}  // namespace

void fill_f32(float* p, size_t n, float v) {
  if (!n) return;
  fill_kernel<float><<<grid_for(n, 256), 256, 0, stream()>>>(p, n, v);
  check_launch("fill_f32", __FILE__, __LINE__);
}

void fill_f64(double* p, size_t n, double v) {
  if (!n) return;
  fill_kernel<double><<<grid_for(n, 256), 256, 0, stream()>>>(p, n, v);
  check_launch("fill_f64", __FILE__, __LINE__);
}

void convert_f32_to_f64(const float* src, double* dst, size_t n) {
  if (!n) return;
  convert_kernel<float, double><<<grid_for(n, 256), 256, 0, stream()>>>(src, dst, n);
  check_launch("convert_f32_to_f64", __FILE__, __LINE__);
}

void convert_f64_to_f32(const double* src, float* dst, size_t n) {
  if (!n) return;
  convert_kernel<double, float><<<grid_for(n, 256), 256, 0, stream()>>>(src, dst, n);
  check_launch("convert_f64_to_f32", __FILE__, __LINE__);
}

void synchronize() {
  if (!cuda_available()) return;
  MINIDL_CUDA_CHECK(cudaStreamSynchronize(stream()), "cuda::synchronize (an earlier kernel or copy failed)");
  MINIDL_CUDA_CHECK(cudaGetLastError(), "cuda::synchronize");
}

static bool sync_every_launch() {
#ifdef MINIDL_SYNC_LAUNCHES
  return true;
#else
  static const bool on = [] {
    const char* v = std::getenv("MINIDL_CUDA_SYNC");
    return v && v[0] == '1';
  }();
  return on;
#endif
}

void check_launch(const char* op_name, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    MINIDL_FAIL(op_name, ": CUDA kernel launch failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") at ",
                file, ":", line);
  if (sync_every_launch()) {
    e = cudaStreamSynchronize(stream());
    if (e != cudaSuccess)
      MINIDL_FAIL(op_name, ": CUDA kernel failed (MINIDL_CUDA_SYNC=1): ", cudaGetErrorName(e), " (",
                  cudaGetErrorString(e), ") at ", file, ":", line);
  }
}

}  // namespace cuda
}  // namespace minidl
