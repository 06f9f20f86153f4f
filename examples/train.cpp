// Trains the flagship model on a synthetic regression task: targets come from a fixed "teacher"
// model of the same architecture (its own random weights, and a non-trivial LayerNorm affine) on a
// pool of --dataset random input batches (made once, on the training device, so that steps time the
// model and not the host's random number generator). Prints "step N loss X" and a summary; exits
// non-zero if the loss did not fall by --expect-drop (default 10x) within --max-seconds.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "examples/flagship_model.h"
#include "nn/compiled.h"
#include "nn/optim.h"

using namespace minidl;

int main(int argc, char** argv) try {
  examples::Args a(argc, argv);
  if (a.flag("--help") || a.flag("-h")) {
    std::printf(
        "usage: train [--device auto|cpu|cuda] [size options as flagship] [--steps N] [--lr LR]\n"
        "             [--optimizer adam|sgd] [--momentum M] [--no-fuse] [--max-seconds S] [--expect-drop F]\n"
        "             [--seed S] [--print-every K] [--dataset BATCHES]\n");
    return 0;
  }
  Device dev = examples::parse_device_option(a);
  bool reduced = false;
  examples::FlagshipConfig cfg = examples::parse_flagship_config(a, dev, &reduced);
  const int64_t steps = a.get_int("--steps", 300);
  const double lr = a.get_float("--lr", 1e-2);
  const std::string opt_name = a.get("--optimizer", "adam");
  const double momentum = a.get_float("--momentum", 0.9);
  const bool fuse = !a.flag("--no-fuse");
  const double max_seconds = a.get_float("--max-seconds", 60);
  const double expect_drop = a.get_float("--expect-drop", 10);
  const uint64_t seed = static_cast<uint64_t>(a.get_int("--seed", 0));
  const int64_t print_every = a.get_int("--print-every", 10);
  const int64_t dataset = a.get_int("--dataset", 8);
  MINIDL_CHECK(dataset > 0, "train: --dataset must be positive");
  a.finish();

  if (reduced) std::printf("No GPU found: training on the CPU at a reduced size.\n");
  std::printf("train: %s on %s, fusion %s, %s lr %g\n", cfg.str().c_str(), dev.str().c_str(), fuse ? "on" : "off",
              opt_name.c_str(), lr);

  nn::manual_seed(seed * 2 + 1);
  auto teacher = examples::make_flagship(cfg);
  {  // give the teacher a LayerNorm affine the student must learn too
    auto named = teacher->named_parameters();
    for (auto& [name, p] : named) {
      if (name == "layer_norm.weight") p->data = Tensor::uniform(p->data.shape(), 0.5, 1.5, seed + 11);
      if (name == "layer_norm.bias") p->data = Tensor::uniform(p->data.shape(), -0.5, 0.5, seed + 12);
    }
  }
  nn::manual_seed(seed * 2 + 2);
  auto student = examples::make_flagship(cfg);
  teacher->to(dev);
  student->to(dev);

  nn::CompiledModule teacher_c(teacher, cfg.input_shape(), nn::CompileOptions().device(dev).fuse(fuse));
  nn::CompiledModule student_c(student, cfg.input_shape(), nn::CompileOptions().device(dev).fuse(fuse));
  std::unique_ptr<nn::Optimizer> opt;
  if (opt_name == "adam")
    opt = std::make_unique<nn::Adam>(student->parameters(), nn::AdamOptions(lr));
  else if (opt_name == "sgd")
    opt = std::make_unique<nn::SGD>(student->parameters(), nn::SGDOptions(lr).momentum(momentum));
  else
    MINIDL_FAIL("train: unknown --optimizer '", opt_name, "' (adam or sgd)");

  std::vector<Tensor> xs, targets;
  for (int64_t i = 0; i < dataset; ++i) {
    xs.push_back(Tensor::uniform(cfg.input_shape(), 0, 1, 1000 + seed * 7919 + static_cast<uint64_t>(i), DType::F32, dev));
    targets.push_back(teacher_c.forward(xs.back()));
  }

  auto t0 = std::chrono::steady_clock::now();
  double first = 0, last = 0, best = 1e300, seconds = 0;
  int64_t done = 0;
  for (int64_t step = 0; step < steps; ++step) {
    const size_t k = static_cast<size_t>(step % dataset);
    opt->zero_grad();
    nn::StepResult r = student_c.forward_backward_mse(xs[k], targets[k]);
    opt->step();
    last = r.loss.cpu().get(0);
    MINIDL_CHECK(std::isfinite(last), "train: loss became ", last, " at step ", step);
    if (step == 0) first = last;
    best = std::min(best, last);
    done = step + 1;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step % print_every == 0 || step + 1 == steps) std::printf("step %lld loss %.6g\n", static_cast<long long>(step), last);
    if (first / best >= expect_drop * 1.5 && step >= 20) break;  // well past the goal
    if (seconds > max_seconds) break;
  }
  const double drop = first / best;
  std::printf("train: %.2f ms per step (forward, loss, backward, optimizer)\n", 1e3 * seconds / static_cast<double>(done));
  std::printf("train: %lld steps in %.1f s, loss %.4g -> %.4g (best %.4g), drop %.1fx (goal %.0fx within %.0f s): %s\n",
              static_cast<long long>(done), seconds, first, last, best, drop, expect_drop, max_seconds,
              drop >= expect_drop && seconds <= max_seconds * 1.02 ? "reached" : "NOT reached");
  return drop >= expect_drop ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train: error: %s\n", e.what());
  return 2;
}
