// CompiledModule: records a module into a forward graph, runs the forward passes (fusion unless
// turned off, DCE), derives the training graph with autograd, runs the backward passes, and
// executes both on one device.
//
//   auto model = std::make_shared<nn::Sequential>(...);
//   nn::CompiledModule cm(model, {32, 32, 16, 32, 32}, nn::CompileOptions().device(Device::cuda()));
//   nn::Adam opt(model->parameters(), nn::AdamOptions(1e-3));
//   opt.zero_grad();
//   auto r = cm.forward_backward_mse(x, target);  // fills each parameter's grad
//   opt.step();
#pragma once
#include <memory>
#include <string>

#include "graph/executor.h"
#include "nn/module.h"
#include "ops/fused_conv_support.h"

namespace minidl {
namespace nn {

struct CompileOptions {
  CompileOptions& device(Device d) { device_ = d; return *this; }
  CompileOptions& fuse(bool f) { fuse_ = f; return *this; }
  CompileOptions& dump_dir(std::string d) { dump_dir_ = std::move(d); return *this; }
  CompileOptions& dtype(DType t) { dtype_ = t; return *this; }
  CompileOptions& grad_input(bool g) { grad_input_ = g; return *this; }  // also compute d/dx
  // FP32-accurate fused convolution (FP32 FMA) instead of tensor cores, for users who turn TF32 off.
  CompileOptions& precise(bool p) { precise_ = p; return *this; }
  // The fused convolution's tensor-core operand format (ops/fused_conv_support.h): auto (FP16
  // where the operands' range allows, else TF32), or tf32 / f16 forced.
  CompileOptions& operands(FusedConvOperands o) { operands_ = o; return *this; }
  Device device_ = Device::cpu();
  bool fuse_ = true;
  std::string dump_dir_;  // empty: MINIDL_DUMP_DIR if set
  DType dtype_ = DType::F32;
  bool grad_input_ = false;
  bool precise_ = false;
  FusedConvOperands operands_ = FusedConvOperands::kAuto;
};

struct StepResult {
  Tensor loss;    // scalar (MSE objective only)
  Tensor output;  // y
  Tensor grad_input;  // d/dx when CompileOptions::grad_input
};

class CompiledModule {
 public:
  CompiledModule(std::shared_ptr<Module> m, Shape input_shape, CompileOptions o = {});

  Tensor forward(const Tensor& x);
  // Training step with loss = mse_loss(y, target): accumulates d loss/d p into every parameter's
  // grad (like loss.backward()).
  StepResult forward_backward_mse(const Tensor& x, const Tensor& target);
  // Backward seeded with a given dL/dy (like y.backward(grad_y)).
  StepResult forward_backward_grad(const Tensor& x, const Tensor& grad_y);

  const Graph& forward_graph();
  const Graph& mse_graph();
  const Graph& grad_graph();
  size_t last_peak_intermediate_bytes() const { return last_peak_; }

 private:
  struct Compiled {
    std::unique_ptr<Graph> graph;
    std::unique_ptr<Executor> exec;
    std::vector<std::string> param_names;  // order of the gradient outputs
  };
  enum class Objective { None, MSE, GradY };
  Compiled build(Objective obj);
  std::map<std::string, Tensor> feeds(const Tensor& x);
  StepResult run_training(Compiled& c, const Tensor& x, const std::string& extra_name, const Tensor& extra);

  std::shared_ptr<Module> module_;
  Shape input_shape_;
  CompileOptions o_;
  Compiled fwd_, mse_, grad_;
  size_t last_peak_ = 0;
};

}  // namespace nn
}  // namespace minidl
