// racecheck_probe: does compute-sanitizer racecheck follow the producer -> consumer shared-memory
// handoffs that a warp-specialized kernel uses, or does it report hazards on correct code?
//
// Every variant runs the same pipeline in each block: 2 producer warps fill a double buffer of
// 2 x 256 ints in shared memory, 2 consumer warps read it, 64 handoffs in all. Each consumer
// thread reads 4 words written by up to 4 different producer threads (of both producer warps), so
// every handoff crosses warps. After reading a stage the consumers hand it back ("empty") before
// the producers overwrite it, which gives racecheck both a RAW (fill -> read) and a WAR
// (read -> refill) edge to follow. Consumers compare each word with the value it must hold and
// count mismatches into a global counter.
//
// Variants (argv[1]):
//   a        named barriers: producers `bar.arrive FULL,128` after writing, consumers
//            `bar.sync FULL,128` before reading; back: consumers `bar.arrive EMPTY,128`,
//            producers `bar.sync EMPTY,128` before rewriting.
//   a_by     as a, with a fifth "bystander" warp in the block that takes part in no barrier, so
//            the barrier count (128) is smaller than the block (160 threads).
//   b_thread mbarriers: every producer thread `mbarrier.arrive.release.cta` on FULL[s] (count 64),
//            consumers spin on `mbarrier.try_wait.parity.acquire.cta`; EMPTY[s] the same way back.
//   b_warp   as b_thread, but one arrive per warp after __syncwarp() (counts 2).
//   b_wfull  per-warp arrives on FULL, per-thread arrives on EMPTY.
//   b_wempty per-thread arrives on FULL, per-warp arrives on EMPTY.
//   c        named barriers with `bar.sync` on both sides (no bar.arrive).
//   ac       bar.arrive/bar.sync for FULL, bar.sync on both sides for EMPTY.
//   ca       bar.sync on both sides for FULL, bar.arrive/bar.sync for EMPTY.
//   d        one producer thread refills each stage with cp.async.bulk (TMA, async proxy)
//            completing on FULL[s] via mbarrier.arrive.expect_tx + complete_tx; consumers
//            try_wait.parity FULL[s], read, then arrive on EMPTY[s] (one per warp after
//            __syncwarp()); the producer waits on EMPTY[s] before the next copy into it.
//   d_thread as d, but every consumer thread arrives on EMPTY[s] (count 64).
//   race     control with a real bug: as a, but producers rewrite a stage before (not after)
//            their `bar.sync EMPTY`, so they may overwrite words that consumers are still
//            reading (racecheck must report this; its wrong values do not fail the program).
//   all      every variant above except race.
//
// Exit status: nonzero if any correct variant read a wrong value (or on a CUDA error).
//
// Build and run (H100, sm_90a):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -lineinfo \
//       bench/standalone/racecheck_probe.cu -o /tmp/rp
//   /tmp/rp all
//   compute-sanitizer --tool racecheck --racecheck-report hazard /tmp/rp a
//   compute-sanitizer --tool racecheck /tmp/rp a          # default report mode (analysis)
//
// Result (H100 80GB HBM3, compute-sanitizer 2025.3.1, driver 580.159.04): every variant reads
// only correct values; racecheck is clean (0 hazards) on b_thread, c, ac and d_thread only. It
// reports errors on correct code for a, a_by, ca (reads before a consumer `bar.arrive EMPTY`
// are not ordered before the producer's rewrite) and for b_warp, b_wfull, b_wempty, d (an
// arrive made by one lane after __syncwarp() does not cover the other lanes' accesses). It
// flags the race control as well, with reports that look the same as those false positives.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <vector>
#include <cuda_runtime.h>

#define CK(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, \
                   __LINE__);                                                          \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

constexpr int kWords = 256;      // ints per stage (1 KiB: a multiple of 16 bytes for TMA)
constexpr int kStages = 2;       // double buffer
constexpr int kIters = 64;       // handoffs
constexpr int kProd = 64;        // producer threads (warps 0, 1)
constexpr int kCons = 64;        // consumer threads (warps 2, 3)
constexpr int kPairs = kProd + kCons;  // threads taking part in the named barriers
constexpr int kBlocks = 4;

// Named barrier ids (0 is __syncthreads).
constexpr int kFullId = 1;   // FULL[s] = kFullId + s
constexpr int kEmptyId = 3;  // EMPTY[s] = kEmptyId + s

__host__ __device__ inline int expected(int block, int it, int idx) {
  return (block * kIters + it) * 1024 + idx;
}

__device__ inline void bar_sync(int id, int n) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory");
}
__device__ inline void bar_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory");
}

__device__ inline uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ inline void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}
__device__ inline void mbar_arrive(uint64_t* bar) {
  asm volatile(
      "{\n\t.reg .b64 st;\n\t"
      "mbarrier.arrive.release.cta.shared::cta.b64 st, [%0];\n\t}" ::"r"(smem_addr(bar))
      : "memory");
}
__device__ inline void mbar_arrive_expect_tx(uint64_t* bar, int bytes) {
  asm volatile(
      "{\n\t.reg .b64 st;\n\t"
      "mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 st, [%0], %1;\n\t}" ::"r"(
          smem_addr(bar)),
      "r"(bytes)
      : "memory");
}
__device__ inline void mbar_wait(uint64_t* bar, int parity) {
  asm volatile(
      "{\n\t.reg .pred p;\n"
      "WAIT_%=:\n\t"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%0], %1;\n\t"
      "@!p bra WAIT_%=;\n\t}" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
__device__ inline void tma_load_1d(void* dst, const void* src, int bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// Producer thread p (0..63) writes words p, p+64, p+128, p+192 of the stage.
__device__ inline void produce(int* stage, int p, int block, int it) {
#pragma unroll
  for (int k = 0; k < 4; ++k) stage[p + kProd * k] = expected(block, it, p + kProd * k);
}
// Consumer thread c (0..63) reads words 4c .. 4c+3, written by producer threads
// (4c+k) mod 64: two of them in each producer warp for half of the consumers.
__device__ inline int consume(const int* stage, int c, int block, int it) {
  int bad = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int idx = 4 * c + k;
    bad += (*(volatile const int*)&stage[idx] != expected(block, it, idx));
  }
  return bad;
}

// Named-barrier pipeline. kArriveFull / kArriveEmpty pick `bar.arrive` (true) or `bar.sync`
// (false) for the signalling side of the FULL / EMPTY handoff; the waiting side always uses
// `bar.sync`. a = <true, true>, c = <false, false>, ac = <true, false>, ca = <false, true>.
// With bar.sync on both sides of EMPTY, both roles must meet the barriers in the same order, so
// the consumers hand stage s back right before waiting for its next fill (not right after
// reading it). kBuggy (race control) moves the producers' rewrite in front of their EMPTY wait.
template <bool kArriveFull, bool kArriveEmpty, bool kBuggy>
__global__ void k_named(int* mismatches) {
  __shared__ __align__(16) int buf[kStages][kWords];
  const int t = threadIdx.x, b = blockIdx.x;
  if (t >= kPairs) return;  // bystander warp (a_by): no barrier, no shared memory
  if (t < kProd) {
    for (int it = 0; it < kIters; ++it) {
      const int s = it & 1;
      if (kBuggy) produce(buf[s], t, b, it);  // too early: the stage may still be being read
      if (it >= kStages) bar_sync(kEmptyId + s, kPairs);
      if (!kBuggy) produce(buf[s], t, b, it);
      if (kArriveFull) bar_arrive(kFullId + s, kPairs);
      else bar_sync(kFullId + s, kPairs);
    }
  } else {
    const int c = t - kProd;
    int bad = 0;
    for (int it = 0; it < kIters; ++it) {
      const int s = it & 1;
      if (!kArriveEmpty && it >= kStages) bar_sync(kEmptyId + s, kPairs);
      bar_sync(kFullId + s, kPairs);
      bad += consume(buf[s], c, b, it);
      // Only hand back stages that will be refilled, so no barrier is left half-arrived.
      if (kArriveEmpty && it + kStages < kIters) bar_arrive(kEmptyId + s, kPairs);
    }
    if (bad) atomicAdd(mismatches, bad);
  }
}

// mbarrier arrive.release / try_wait.parity.acquire. kWarpFull / kWarpEmpty: one arrive per warp
// after __syncwarp() (true) or one per thread (false) on FULL / EMPTY.
// b_thread = <false, false>, b_warp = <true, true>, b_wfull = <true, false>, b_wempty = <false, true>.
template <bool kWarpFull, bool kWarpEmpty>
__global__ void k_mbar(int* mismatches) {
  __shared__ __align__(16) int buf[kStages][kWords];
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const int t = threadIdx.x, b = blockIdx.x, lane = t & 31;
  const int prod_count = kWarpFull ? kProd / 32 : kProd;
  const int cons_count = kWarpEmpty ? kCons / 32 : kCons;
  if (t == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], prod_count);
      mbar_init(&empty[s], cons_count);
    }
  }
  __syncthreads();
  if (t < kProd) {
    for (int it = 0; it < kIters; ++it) {
      const int s = it & 1, round = it / kStages;
      if (it >= kStages) mbar_wait(&empty[s], (round - 1) & 1);
      produce(buf[s], t, b, it);
      if (kWarpFull) {
        __syncwarp();
        if (lane == 0) mbar_arrive(&full[s]);
      } else {
        mbar_arrive(&full[s]);
      }
    }
  } else {
    const int c = t - kProd;
    int bad = 0;
    for (int it = 0; it < kIters; ++it) {
      const int s = it & 1, round = it / kStages;
      mbar_wait(&full[s], round & 1);
      bad += consume(buf[s], c, b, it);
      if (kWarpEmpty) {
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[s]);
      } else {
        mbar_arrive(&empty[s]);
      }
    }
    if (bad) atomicAdd(mismatches, bad);
  }
}

// (d): TMA bulk copy into the stage, completing on FULL[s]; EMPTY[s] handoff back, one arrive
// per consumer warp after __syncwarp() (d) or one per consumer thread (d_thread).
template <bool kWarpEmpty>
__global__ void k_tma(const int* __restrict__ src, int* mismatches) {
  __shared__ __align__(128) int buf[kStages][kWords];
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const int t = threadIdx.x, b = blockIdx.x, lane = t & 31;
  if (t == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);              // the producer's arrive.expect_tx
      mbar_init(&empty[s], kWarpEmpty ? kCons / 32 : kCons);
    }
    // Make the initialized barriers visible to the async proxy before TMA completes on them.
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (t < kProd) {
    if (t == 0) {
      for (int it = 0; it < kIters; ++it) {
        const int s = it & 1, round = it / kStages;
        if (it >= kStages) mbar_wait(&empty[s], (round - 1) & 1);
        mbar_arrive_expect_tx(&full[s], kWords * 4);
        tma_load_1d(buf[s], src + ((size_t)b * kIters + it) * kWords, kWords * 4, &full[s]);
      }
    }
  } else {
    const int c = t - kProd;
    int bad = 0;
    for (int it = 0; it < kIters; ++it) {
      const int s = it & 1, round = it / kStages;
      mbar_wait(&full[s], round & 1);
      bad += consume(buf[s], c, b, it);
      if (kWarpEmpty) {
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[s]);
      } else {
        mbar_arrive(&empty[s]);
      }
    }
    if (bad) atomicAdd(mismatches, bad);
  }
}

static int run_variant(const char* v, int* d_mis, const int* d_src) {
  CK(cudaMemset(d_mis, 0, sizeof(int)));
  if (!std::strcmp(v, "a")) k_named<true, true, false><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "a_by")) k_named<true, true, false><<<kBlocks, kPairs + 32>>>(d_mis);
  else if (!std::strcmp(v, "c")) k_named<false, false, false><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "ac")) k_named<true, false, false><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "ca")) k_named<false, true, false><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "race")) k_named<true, true, true><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "b_thread")) k_mbar<false, false><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "b_warp")) k_mbar<true, true><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "b_wfull")) k_mbar<true, false><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "b_wempty")) k_mbar<false, true><<<kBlocks, kPairs>>>(d_mis);
  else if (!std::strcmp(v, "d")) k_tma<true><<<kBlocks, kPairs>>>(d_src, d_mis);
  else if (!std::strcmp(v, "d_thread")) k_tma<false><<<kBlocks, kPairs>>>(d_src, d_mis);
  else {
    std::fprintf(stderr, "unknown variant %s\n", v);
    return -1;
  }
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  int mis = 0;
  CK(cudaMemcpy(&mis, d_mis, sizeof(int), cudaMemcpyDeviceToHost));
  std::printf("variant %-8s mismatches %d (of %d words read)\n", v, mis,
              kBlocks * kIters * kWords);
  return mis;
}

int main(int argc, char** argv) {
  const char* want = argc > 1 ? argv[1] : "all";
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

  std::vector<int> h_src((size_t)kBlocks * kIters * kWords);
  for (int b = 0; b < kBlocks; ++b)
    for (int it = 0; it < kIters; ++it)
      for (int i = 0; i < kWords; ++i)
        h_src[((size_t)b * kIters + it) * kWords + i] = expected(b, it, i);
  int *d_src = nullptr, *d_mis = nullptr;
  CK(cudaMalloc(&d_src, h_src.size() * sizeof(int)));
  CK(cudaMalloc(&d_mis, sizeof(int)));
  CK(cudaMemcpy(d_src, h_src.data(), h_src.size() * sizeof(int), cudaMemcpyHostToDevice));

  const char* all[] = {"a",       "a_by",   "c", "ac",       "ca",
                       "b_thread", "b_warp", "b_wfull", "b_wempty", "d", "d_thread"};
  int failed = 0;
  if (!std::strcmp(want, "all")) {
    for (const char* v : all) failed |= run_variant(v, d_mis, d_src) != 0;
  } else {
    const int r = run_variant(want, d_mis, d_src);
    if (r < 0) return 2;
    // The race control may read wrong values; that is its point, not a failure.
    if (std::strcmp(want, "race")) failed |= r != 0;
  }
  CK(cudaFree(d_src));
  CK(cudaFree(d_mis));
  return failed ? 1 : 0;
}
