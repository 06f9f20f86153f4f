// Optimizers over Parameters, as torch.optim defines them. The update runs on the CPU (the
// flagship has 131k parameters: the transfer is negligible beside a training step) and writes
// back to the parameter's device.
#pragma once
#include <vector>

#include "nn/module.h"

namespace minidl {
namespace nn {

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParameterPtr> params) : params_(std::move(params)) {}
  virtual ~Optimizer() = default;
  void zero_grad();  // drops every gradient (like set_to_none=True)
  virtual void step() = 0;

 protected:
  std::vector<ParameterPtr> params_;
};

struct SGDOptions {
  explicit SGDOptions(double lr) : lr_(lr) {}
  SGDOptions& momentum(double m) { momentum_ = m; return *this; }
  SGDOptions& weight_decay(double w) { weight_decay_ = w; return *this; }
  double lr_, momentum_ = 0, weight_decay_ = 0;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParameterPtr> params, SGDOptions o);
  void step() override;

 private:
  SGDOptions o_;
  std::vector<std::vector<double>> velocity_;
};

struct AdamOptions {
  explicit AdamOptions(double lr = 1e-3) : lr_(lr) {}
  AdamOptions& betas(double b1, double b2) { beta1_ = b1; beta2_ = b2; return *this; }
  AdamOptions& eps(double e) { eps_ = e; return *this; }
  AdamOptions& weight_decay(double w) { weight_decay_ = w; return *this; }
  double lr_, beta1_ = 0.9, beta2_ = 0.999, eps_ = 1e-8, weight_decay_ = 0;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<ParameterPtr> params, AdamOptions o);
  void step() override;

 private:
  AdamOptions o_;
  int64_t t_ = 0;
  std::vector<std::vector<double>> m_, v_;
};

}  // namespace nn
}  // namespace minidl
