// Times minidl on the flagship: forward, and a training step (forward + backward from a given
// dL/dy), with fusion on and off. CUDA events around each region, 3 warm-ups, median of --reps;
// peak device memory above the inputs for the training step; with --kernels also each op alone.
// Prints one "RESULT" line per measurement for bench/gpu_bench.py to put beside PyTorch's numbers.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "examples/flagship_model.h"
#include "graph/executor.h"
#include "nn/compiled.h"
#ifdef MINIDL_WITH_CUDA
#include "core/cuda_check.cuh"
#endif

using namespace minidl;

namespace {

struct Stats {
  double median, min, max;
};

template <class F>
Stats time_region(Device dev, int warmup, int reps, F f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> ms;
#ifdef MINIDL_WITH_CUDA
  if (dev.is_cuda()) {
    cudaEvent_t a, b;
    MINIDL_CUDA_CHECK(cudaEventCreate(&a), "bench: event");
    MINIDL_CUDA_CHECK(cudaEventCreate(&b), "bench: event");
    for (int i = 0; i < reps; ++i) {
      MINIDL_CUDA_CHECK(cudaEventRecord(a, cuda::stream()), "bench: record");
      f();
      MINIDL_CUDA_CHECK(cudaEventRecord(b, cuda::stream()), "bench: record");
      MINIDL_CUDA_CHECK(cudaEventSynchronize(b), "bench: sync");
      float t = 0;
      MINIDL_CUDA_CHECK(cudaEventElapsedTime(&t, a, b), "bench: elapsed");
      ms.push_back(t);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
#endif
  if (ms.empty()) {
    for (int i = 0; i < reps; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      f();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

}  // namespace

// Times single ops of the flagship at its size through the executor (outputs come from the caching
// allocator, so the region is the kernel launches): the building blocks the table above adds up.
void time_kernels(Device dev, const examples::FlagshipConfig& cfg, int warmup, int reps) {
  const Shape xs = cfg.input_shape(), ys = cfg.output_shape();
  const int64_t W = ys.back();
  Shape rows(ys.begin(), ys.end() - 1);
  const Shape ws{cfg.in_channels, cfg.out_channels, cfg.kernel, cfg.kernel, cfg.kernel};
  const Attrs conv{{"stride", AttrValue::IntList({cfg.stride, cfg.stride, cfg.stride})},
                   {"padding", AttrValue::IntList({cfg.padding, cfg.padding, cfg.padding})}};
  Attrs grad_in = conv, grad_w = conv;
  grad_in.set("input_shape", AttrValue::IntList(xs));
  grad_w.set("kernel_size", AttrValue::IntList({cfg.kernel, cfg.kernel, cfg.kernel}));
  const Attrs epi{{"eps", AttrValue::Float(cfg.eps)}, {"factor", AttrValue::Float(cfg.scale)}};
  Attrs fconv = conv;
  for (const auto& [k, v] : epi.items()) fconv.set(k, v);
  Attrs fconv_tf32 = fconv;
  fconv_tf32.set("operands", AttrValue::Str("tf32"));
  struct Case {
    const char* name;
    const char* op;
    std::vector<std::pair<std::string, Shape>> inputs;
    Attrs attrs;
  };
  const std::vector<Case> cases = {
      {"fused_conv_ln_gelu_scale", "fused_conv_transpose3d_ln_gelu_scale",
       {{"x", xs}, {"w", ws}, {"cb", {cfg.out_channels}}, {"g", {W}}, {"b", {W}}}, fconv},
      {"fused_conv_ln_gelu_scale_tf32", "fused_conv_transpose3d_ln_gelu_scale",
       {{"x", xs}, {"w", ws}, {"cb", {cfg.out_channels}}, {"g", {W}}, {"b", {W}}}, fconv_tf32},
      {"conv_transpose3d", "conv_transpose3d", {{"x", xs}, {"w", ws}, {"cb", {cfg.out_channels}}}, conv},
      {"conv_grad_input", "conv_transpose3d_grad_input", {{"dy", ys}, {"w", ws}}, grad_in},
      {"conv_grad_weight", "conv_transpose3d_grad_weight", {{"x", xs}, {"dy", ys}}, grad_w},
      {"fused_ln_gelu_scale", "fused_ln_gelu_scale", {{"z", ys}, {"g", {W}}, {"b", {W}}}, epi},
      {"fused_ln_gelu_scale_bwd", "fused_ln_gelu_scale_backward",
       {{"dy", ys}, {"z", ys}, {"g", {W}}, {"b", {W}}, {"mean", rows}, {"rstd", rows}}, epi},
      {"fused_ln_gelu_scale_bwd_nostats", "fused_ln_gelu_scale_backward",
       {{"dy", ys}, {"z", ys}, {"g", {W}}, {"b", {W}}}, epi},
  };
  uint64_t seed = 100;
  for (const Case& c : cases) {
    Graph g(c.name);
    std::vector<Value*> ins;
    std::map<std::string, Tensor> feeds;
    for (const auto& [name, shape] : c.inputs) {
      ins.push_back(g.add_input(name, shape));
      // rstd must be positive; everything else is fresh random data
      feeds[name] = Tensor::uniform(shape, name == "rstd" ? 0.5 : -1.0, 1.0, seed++, DType::F32, dev);
    }
    g.set_outputs({g.add(c.op, ins, c.attrs)});
    Executor ex(g, dev);
    Stats st = time_region(dev, warmup, reps, [&] { ex.run(feeds); });
    std::printf("RESULT kernel %s %.4f %.4f %.4f 0\n", c.name, st.median, st.min, st.max);
  }
}

int main(int argc, char** argv) try {
  examples::Args a(argc, argv);
  Device dev = examples::parse_device_option(a);
  bool reduced = false;
  examples::FlagshipConfig cfg = examples::parse_flagship_config(a, dev, &reduced);
  const int reps = static_cast<int>(a.get_int("--reps", 20));
  const int warmup = static_cast<int>(a.get_int("--warmup", 3));
  const bool kernels = a.flag("--kernels");
  a.finish();
  std::printf("bench_flagship: %s on %s%s\n", cfg.str().c_str(), dev.str().c_str(),
              reduced ? " (reduced size: no GPU)" : "");

  nn::manual_seed(0);
  auto model = examples::make_flagship(cfg);
  model->to(dev);
  Tensor x = Tensor::uniform(cfg.input_shape(), 0, 1, 1, DType::F32, dev);
  Tensor gy = Tensor::normal(cfg.output_shape(), 0, 1, 2, DType::F32, dev);
  // Unfused; fused with TF32 operands forced; fused with the default operands (FP16 where the
  // range test allows, ops/fused_conv_support.h).
  for (int variant = 0; variant < 3; ++variant) {
    const bool fuse = variant > 0;
    const char* name = variant == 0 ? "minidl_unfused" : variant == 1 ? "minidl_fused_tf32" : "minidl_fused";
    nn::CompiledModule cm(model, x.shape(), nn::CompileOptions().device(dev).fuse(fuse).operands(
                                                variant == 1 ? FusedConvOperands::kTf32 : FusedConvOperands::kAuto));
    Stats f = time_region(dev, warmup, reps, [&] { cm.forward(x); });
    std::printf("RESULT %s forward %.4f %.4f %.4f 0\n", name, f.median, f.min, f.max);
    size_t base = 0;
    if (dev.is_cuda()) {
      cuda::synchronize();
      base = cuda::bytes_in_use();
      cuda::reset_peak();
    }
    Stats s = time_region(dev, warmup, reps, [&] {
      for (auto& p : model->parameters()) p->grad = Tensor();
      cm.forward_backward_grad(x, gy);
    });
    size_t peak = dev.is_cuda() ? cuda::peak_bytes_in_use() - base : cm.last_peak_intermediate_bytes();
    std::printf("RESULT %s train_step %.4f %.4f %.4f %zu\n", name, s.median, s.min, s.max, peak);
    for (auto& p : model->parameters()) p->grad = Tensor();
  }
  if (kernels) time_kernels(dev, cfg, warmup, reps);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_flagship: error: %s\n", e.what());
  return 2;
}
