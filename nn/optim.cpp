#include "nn/optim.h"

#include <cmath>

namespace minidl {
namespace nn {

void Optimizer::zero_grad() {
  for (auto& p : params_) p->grad = Tensor();
}

// Runs `update(i, value, grad)` -> new value over every element of a parameter, on the CPU.
template <class F>
static void update_parameter(Parameter& p, F update) {
  if (!p.grad.defined()) return;  // no gradient: torch.optim skips the parameter
  MINIDL_CHECK(p.grad.shape() == p.data.shape(), "optimizer: gradient ", p.grad.describe(), " does not match parameter ",
               p.data.describe());
  Tensor w = p.data.cpu().clone(), g = p.grad.cpu();
  for (int64_t i = 0; i < w.numel(); ++i) w.set(i, update(static_cast<size_t>(i), w.get(i), g.get(i)));
  if (p.data.device().is_cpu())
    p.data = w;
  else
    p.data.copy_from(w);
}

SGD::SGD(std::vector<ParameterPtr> params, SGDOptions o) : Optimizer(std::move(params)), o_(o) {
  MINIDL_CHECK(o_.lr_ > 0, "SGD: learning rate must be positive, got ", o_.lr_);
  for (auto& p : params_) velocity_.emplace_back(static_cast<size_t>(p->data.numel()), 0.0);
}

void SGD::step() {
  for (size_t k = 0; k < params_.size(); ++k) {
    std::vector<double>& vel = velocity_[k];
    update_parameter(*params_[k], [&](size_t i, double w, double g) {
      g += o_.weight_decay_ * w;
      if (o_.momentum_ != 0) {
        vel[i] = o_.momentum_ * vel[i] + g;
        g = vel[i];
      }
      return w - o_.lr_ * g;
    });
  }
}

Adam::Adam(std::vector<ParameterPtr> params, AdamOptions o) : Optimizer(std::move(params)), o_(o) {
  MINIDL_CHECK(o_.lr_ > 0, "Adam: learning rate must be positive, got ", o_.lr_);
  for (auto& p : params_) {
    m_.emplace_back(static_cast<size_t>(p->data.numel()), 0.0);
    v_.emplace_back(static_cast<size_t>(p->data.numel()), 0.0);
  }
}

void Adam::step() {
  ++t_;
  const double bc1 = 1 - std::pow(o_.beta1_, static_cast<double>(t_));
  const double bc2 = 1 - std::pow(o_.beta2_, static_cast<double>(t_));
  for (size_t k = 0; k < params_.size(); ++k) {
    std::vector<double>&m = m_[k], &v = v_[k];
    update_parameter(*params_[k], [&](size_t i, double w, double g) {
      g += o_.weight_decay_ * w;
      m[i] = o_.beta1_ * m[i] + (1 - o_.beta1_) * g;
      v[i] = o_.beta2_ * v[i] + (1 - o_.beta2_) * g * g;
      return w - o_.lr_ * (m[i] / bc1) / (std::sqrt(v[i] / bc2) + o_.eps_);
    });
  }
}

}  // namespace nn
}  // namespace minidl
