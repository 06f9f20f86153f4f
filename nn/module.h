// The libtorch-like C++ API. A Module owns Parameters and child modules; its forward() records
// graph nodes through a Tracer instead of computing eagerly, so that minidl can differentiate,
// fuse and run the whole model. CompiledModule (nn/compiled.h) turns a module into runnable
// forward and training graphs.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "graph/graph.h"

namespace minidl {
namespace nn {

// A trainable tensor and its gradient (same device, shape and dtype once a step has run).
struct Parameter {
  Tensor data;
  Tensor grad;
};
using ParameterPtr = std::shared_ptr<Parameter>;

class Module;

// Records a module's forward into a graph: binds each Parameter to a graph "param" node named by
// its qualified name (e.g. "conv_transpose.weight"), creating it on first use.
class Tracer {
 public:
  Tracer(Graph& g, const Module& root);
  Graph& graph() { return g_; }
  Value* param(const ParameterPtr& p);

 private:
  Graph& g_;
  std::map<const Parameter*, std::string> names_;
  std::map<const Parameter*, Value*> bound_;
};

class Module {
 public:
  virtual ~Module() = default;
  virtual Value* forward(Tracer& t, Value* x) = 0;
  virtual std::string type_name() const = 0;

  // Qualified names ("layer_norm.weight") in registration order, children after own parameters.
  std::vector<std::pair<std::string, ParameterPtr>> named_parameters() const;
  std::vector<ParameterPtr> parameters() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

  void to(Device dev);  // moves parameters (and grads) to dev
  // One .npy file per parameter, named by its qualified name: PyTorch state_dict names.
  void save(const std::string& dir) const;
  void load(const std::string& dir);  // shapes must match; keeps the module's device

 protected:
  ParameterPtr register_parameter(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  std::vector<std::pair<std::string, ParameterPtr>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// Seeds the generator that parameter initialisation draws from (like torch::manual_seed).
void manual_seed(uint64_t seed);
uint64_t next_seed();

}  // namespace nn
}  // namespace minidl
