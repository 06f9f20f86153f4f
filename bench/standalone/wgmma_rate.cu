// Tensor-core issue-rate probe for the fused conv kernel's design choices: TF32 wgmma m64nNk8 with
// A from registers (RS) or from shared memory (SS), N = 32 or 64, issued by 1-3 warpgroups per
// SM, 64 wgmmas per commit group (one row pair of the fused kernel), K-major no-swizzle operands
// laid out as the kernel lays them out. Prints achieved TFLOP/s.
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I. bench/standalone/wgmma_rate.cu -o wr && ./wr
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#define CK(x)                                                                    \
  do {                                                                           \
    cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                     \
      printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));          \
      return 1;                                                                  \
    }                                                                            \
  } while (0)

__device__ __forceinline__ uint64_t desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((addr >> 4) & 0x3FFF) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32);
}

template <int N, bool SS>
__device__ __forceinline__ void mma(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t da, uint64_t db);

#define ACC16(d, o)                                                                                  \
  "+f"(d[o + 0]), "+f"(d[o + 1]), "+f"(d[o + 2]), "+f"(d[o + 3]), "+f"(d[o + 4]), "+f"(d[o + 5]), \
      "+f"(d[o + 6]), "+f"(d[o + 7]), "+f"(d[o + 8]), "+f"(d[o + 9]), "+f"(d[o + 10]), "+f"(d[o + 11]), \
      "+f"(d[o + 12]), "+f"(d[o + 13]), "+f"(d[o + 14]), "+f"(d[o + 15])
#define R16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define R32                                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
  "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"

template <>
__device__ __forceinline__ void mma<32, false>(float (&d)[16], const uint32_t (&a)[4], uint64_t, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\nwgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 " R16 ", {%16, %17, %18, %19}, %20, p, 1, 1;\n}\n"
               : ACC16(d, 0)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
template <>
__device__ __forceinline__ void mma<32, true>(float (&d)[16], const uint32_t (&)[4], uint64_t da, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\nwgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 " R16 ", %16, %17, p, 1, 1;\n}\n"
               : ACC16(d, 0)
               : "l"(da), "l"(db));
}
template <>
__device__ __forceinline__ void mma<64, false>(float (&d)[32], const uint32_t (&a)[4], uint64_t, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\nwgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 " R32 ", {%32, %33, %34, %35}, %36, p, 1, 1;\n}\n"
               : ACC16(d, 0), ACC16(d, 16)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
template <>
__device__ __forceinline__ void mma<64, true>(float (&d)[32], const uint32_t (&)[4], uint64_t da, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\nwgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 " R32 ", %32, %33, p, 1, 1;\n}\n"
               : ACC16(d, 0), ACC16(d, 16)
               : "l"(da), "l"(db));
}

// Each active warpgroup: `groups` times 64 wgmmas (A: 32 k-steps x 2 parities walking a 128 KB
// weight area; B: 4 taps x 8 k-steps in a 4-plane-pair ring with the 16/32-byte tap shift), commit,
// wait for all.
template <int N, bool SS>
__global__ void __launch_bounds__(384, 1) rate_kernel(int wgs, int groups, float* sink) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int wg = threadIdx.x / 128;
  if (wg >= wgs) return;
  const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem);
  const uint32_t a_base = base, b_base = base + 128 * 1024;
  float d[N / 2];
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
  uint32_t a[4] = {threadIdx.x, threadIdx.x + 1, threadIdx.x + 2, threadIdx.x + 3};
  constexpr uint32_t kPairPlane = 68 * 16 * 8;  // interleaved pair of planes, 8 channel groups
  for (int gi = 0; gi < groups; ++gi) {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int s = 0; s < 64; ++s) {
      const uint64_t da = desc(a_base + s * 2048, 1024, 128);
      const int tap = (s >> 3) & 3, ci8 = s & 7, c = s >> 5;
      const uint64_t db = desc(b_base + tap * kPairPlane + ci8 * 2 * 1088 + c * 32, 1088, 128);
      mma<N, SS>(d, a, da, db);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  float s = 0.f;
  for (int i = 0; i < N / 2; ++i) s += d[i];
  if (s == 12345.f) sink[threadIdx.x] = s;  // keeps the wgmmas alive
}

template <int N, bool SS>
int run(int wgs, float* sink, int sms) {
  const int groups = 2000;
  const int smem = 200 * 1024;
  CK(cudaFuncSetAttribute(rate_kernel<N, SS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  rate_kernel<N, SS><<<sms, 384, smem>>>(wgs, 10, sink);
  CK(cudaGetLastError());
  CK(cudaEventRecord(e0));
  rate_kernel<N, SS><<<sms, 384, smem>>>(wgs, groups, sink);
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float ms = 0.f;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  const double flop = 2.0 * 64 * N * 8 * 64.0 * groups * wgs * sms;
  printf("m64n%dk8 %s  warpgroups %d: %7.1f TFLOP/s  (%.1f clk per wgmma per SM at 1.755 GHz)\n", N,
         SS ? "SS" : "RS", wgs, flop / (ms * 1e-3) / 1e12, ms * 1e-3 * 1.755e9 / (64.0 * groups * wgs));
  return 0;
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  float* sink;
  CK(cudaMalloc(&sink, 4096));
  for (int w = 1; w <= 3; ++w) {
    if (run<32, false>(w, sink, sms) || run<32, true>(w, sink, sms) || run<64, false>(w, sink, sms) ||
        run<64, true>(w, sink, sms))
      return 1;
  }
  return 0;
}
