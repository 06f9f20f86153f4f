// Built-in modules with options builders, initialised as PyTorch initialises them.
#pragma once
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace minidl {
namespace nn {

struct ConvTranspose3dOptions {
  ConvTranspose3dOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_{kernel_size, kernel_size, kernel_size} {}
#define MINIDL_OPT3(name)                                                            \
  ConvTranspose3dOptions& name(int64_t v) { name##_ = {v, v, v}; return *this; }     \
  ConvTranspose3dOptions& name(std::vector<int64_t> v) { name##_ = std::move(v); return *this; }
  MINIDL_OPT3(kernel_size)
  MINIDL_OPT3(stride)
  MINIDL_OPT3(padding)
  MINIDL_OPT3(output_padding)
#undef MINIDL_OPT3
  ConvTranspose3dOptions& bias(bool b) { bias_ = b; return *this; }
  int64_t in_channels_, out_channels_;
  std::vector<int64_t> kernel_size_, stride_{1, 1, 1}, padding_{0, 0, 0}, output_padding_{0, 0, 0};
  bool bias_ = true;
};

// Weight [C_in, C_out, kD, kH, kW]; weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
// fan_in = C_out * kD*kH*kW, which is what PyTorch's kaiming_uniform_(a=sqrt(5)) gives for this
// layout.
class ConvTranspose3d : public Module {
 public:
  explicit ConvTranspose3d(ConvTranspose3dOptions o);
  Value* forward(Tracer& t, Value* x) override;
  std::string type_name() const override { return "ConvTranspose3d"; }
  const ConvTranspose3dOptions& options() const { return o_; }
  ParameterPtr weight, bias;  // bias null when disabled

 private:
  ConvTranspose3dOptions o_;
};

struct LayerNormOptions {
  explicit LayerNormOptions(std::vector<int64_t> normalized_shape) : normalized_shape_(std::move(normalized_shape)) {}
  LayerNormOptions& eps(double e) { eps_ = e; return *this; }
  LayerNormOptions& elementwise_affine(bool b) { elementwise_affine_ = b; return *this; }
  std::vector<int64_t> normalized_shape_;
  double eps_ = 1e-5;
  bool elementwise_affine_ = true;
};

class LayerNorm : public Module {  // weight = ones, bias = zeros
 public:
  explicit LayerNorm(LayerNormOptions o);
  Value* forward(Tracer& t, Value* x) override;
  std::string type_name() const override { return "LayerNorm"; }
  ParameterPtr weight, bias;

 private:
  LayerNormOptions o_;
};

struct GELUOptions {
  GELUOptions& approximate(std::string a) { approximate_ = std::move(a); return *this; }
  std::string approximate_ = "none";  // exact erf; "tanh" for the approximation
};

class GELU : public Module {
 public:
  explicit GELU(GELUOptions o = {}) : o_(std::move(o)) {}
  Value* forward(Tracer& t, Value* x) override;
  std::string type_name() const override { return "GELU"; }

 private:
  GELUOptions o_;
};

class Scale : public Module {  // y = x * factor (a constant)
 public:
  explicit Scale(double factor = 1.0) : factor_(factor) {}
  Value* forward(Tracer& t, Value* x) override;
  std::string type_name() const override { return "Scale"; }

 private:
  double factor_;
};

// Children named "0", "1", ... as in PyTorch.
class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<Module>> mods);
  void push_back(std::shared_ptr<Module> m);
  void push_back(const std::string& name, std::shared_ptr<Module> m);
  Value* forward(Tracer& t, Value* x) override;
  std::string type_name() const override { return "Sequential"; }
};

}  // namespace nn
}  // namespace minidl
