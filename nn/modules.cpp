#include "nn/modules.h"

#include <cmath>

namespace minidl {
namespace nn {

static void check3(const char* module, const char* what, const std::vector<int64_t>& v) {
  MINIDL_CHECK(v.size() == 3, module, ": option '", what, "' needs 3 values, got ", shape_str(v));
}

ConvTranspose3d::ConvTranspose3d(ConvTranspose3dOptions o) : o_(std::move(o)) {
  check3("ConvTranspose3d", "kernel_size", o_.kernel_size_);
  check3("ConvTranspose3d", "stride", o_.stride_);
  check3("ConvTranspose3d", "padding", o_.padding_);
  check3("ConvTranspose3d", "output_padding", o_.output_padding_);
  MINIDL_CHECK(o_.in_channels_ > 0 && o_.out_channels_ > 0, "ConvTranspose3d: channels must be positive, got ",
               o_.in_channels_, " -> ", o_.out_channels_);
  Shape ws{o_.in_channels_, o_.out_channels_, o_.kernel_size_[0], o_.kernel_size_[1], o_.kernel_size_[2]};
  const double fan_in = static_cast<double>(o_.out_channels_ * o_.kernel_size_[0] * o_.kernel_size_[1] *
                                            o_.kernel_size_[2]);
  const double bound = 1.0 / std::sqrt(fan_in);
  weight = register_parameter("weight", Tensor::uniform(ws, -bound, bound, next_seed()));
  if (o_.bias_) bias = register_parameter("bias", Tensor::uniform({o_.out_channels_}, -bound, bound, next_seed()));
}

Value* ConvTranspose3d::forward(Tracer& t, Value* x) {
  std::vector<Value*> ins{x, t.param(weight)};
  if (bias) ins.push_back(t.param(bias));
  return t.graph().add("conv_transpose3d", ins,
                       Attrs{{"stride", AttrValue::IntList(o_.stride_)},
                             {"padding", AttrValue::IntList(o_.padding_)},
                             {"output_padding", AttrValue::IntList(o_.output_padding_)}});
}

LayerNorm::LayerNorm(LayerNormOptions o) : o_(std::move(o)) {
  MINIDL_CHECK(!o_.normalized_shape_.empty(), "LayerNorm: normalized_shape must not be empty");
  if (o_.elementwise_affine_) {
    weight = register_parameter("weight", Tensor::ones(o_.normalized_shape_));
    bias = register_parameter("bias", Tensor::zeros(o_.normalized_shape_));
  }
}

Value* LayerNorm::forward(Tracer& t, Value* x) {
  std::vector<Value*> ins{x};
  if (weight) {
    ins.push_back(t.param(weight));
    ins.push_back(t.param(bias));
  }
  return t.graph().add("layer_norm", ins,
                       Attrs{{"normalized_shape", AttrValue::IntList(o_.normalized_shape_)},
                             {"eps", AttrValue::Float(o_.eps_)}});
}

Value* GELU::forward(Tracer& t, Value* x) {
  return t.graph().add("gelu", {x}, Attrs{{"approximate", AttrValue::Str(o_.approximate_)}});
}

Value* Scale::forward(Tracer& t, Value* x) {
  return t.graph().add("scale", {x}, Attrs{{"factor", AttrValue::Float(factor_)}});
}

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> mods) {
  for (const auto& m : mods) push_back(m);
}
void Sequential::push_back(std::shared_ptr<Module> m) { push_back(std::to_string(children().size()), std::move(m)); }
void Sequential::push_back(const std::string& name, std::shared_ptr<Module> m) { register_module(name, std::move(m)); }

Value* Sequential::forward(Tracer& t, Value* x) {
  for (const auto& c : children()) x = c.second->forward(t, x);
  return x;
}

}  // namespace nn
}  // namespace minidl
