// The op registry. Each op registers one OpSchema holding everything about it: its inputs and
// attributes (with defaults), its shape rule, its CPU kernel, its CUDA kernel (set from its .cu
// file when minidl is built with CUDA) and its gradient rule. Look for op `foo` in ops/foo.cpp
// (schema, shape rule, CPU kernel, gradient rule) and ops/foo.cu (CUDA kernels).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "graph/graph.h"

namespace minidl {

// What a kernel sees: its node (for attributes), input tensors (undefined for an omitted
// optional input) and output tensors already allocated by the executor with the inferred
// shapes. Kernels must write every element of every output.
// An output past the op's num_required_outputs may be undefined: nothing reads it, so the
// executor passes no tensor and the kernel skips the work of computing it.
struct KernelContext {
  const Node& node;
  std::vector<Tensor> inputs;
  std::vector<Tensor> outputs;
  const Attrs& attrs() const { return node.attrs; }
  const Tensor& in(size_t i) const { return inputs.at(i); }
  Tensor& out(size_t i) { return outputs.at(i); }
  // The data of input / output i, or null where there is none: an omitted optional input, an
  // unread optional output, or an index past the ones given.
  template <class T>
  const T* in_data_or_null(size_t i) const {
    return i < inputs.size() && inputs[i].defined() ? inputs[i].data<T>() : nullptr;
  }
  template <class T>
  T* out_data_or_null(size_t i) {
    return i < outputs.size() && outputs[i].defined() ? outputs[i].data<T>() : nullptr;
  }
};
using Kernel = std::function<void(KernelContext&)>;

// What a gradient rule sees: the graph to add backward nodes to, the forward node, and the
// gradient flowing into each of its outputs (nullptr where none flows). It returns one Value per
// input: the gradient for that input, or nullptr if the input gets none (or is not differentiable).
struct GradContext {
  Graph& graph;
  const Node& node;
  std::vector<Value*> grad_outputs;
  Value* in(size_t i) const { return node.inputs.at(i); }
  Value* out(size_t i) const { return node.outputs.at(i); }
  Value* grad_out(size_t i) const { return grad_outputs.at(i); }
  const Attrs& attrs() const { return node.attrs; }
};
using GradRule = std::function<std::vector<Value*>(GradContext&)>;

struct AttrSpec {
  std::string name;
  AttrKind kind;
  std::optional<AttrValue> default_value;  // nullopt: required
};

// The shape rule sees the op's input types (nullptr entries for omitted optional inputs) and its
// validated attributes, and returns the output types, or throws minidl::Error naming the op,
// the offending input and the shapes.
using ShapeRule = std::function<std::vector<TensorType>(const std::vector<const TensorType*>& inputs, const Attrs& attrs)>;

struct OpSchema {
  std::string name;
  std::vector<std::string> input_names;  // for messages and dumps
  size_t num_required_inputs = 0;        // inputs past this may be omitted (nullptr)
  std::vector<std::string> output_names;
  // Outputs past this index are computed only when something reads them (e.g. the row statistics
  // a LayerNorm keeps for a backward that may not exist): the executor then hands the kernel an
  // undefined tensor for each unread one. The default keeps every output.
  size_t num_required_outputs = SIZE_MAX;
  std::vector<AttrSpec> attrs;
  ShapeRule shape_rule;
  Kernel cpu_kernel;
  Kernel cuda_kernel;  // empty when built without CUDA or not (yet) implemented
  GradRule grad_rule;  // empty: differentiating through this op throws
};

class OpRegistry {
 public:
  static OpRegistry& instance();  // all built-in ops registered on first use
  void add(OpSchema schema);
  const OpSchema& get(const std::string& name) const;  // throws "unknown op"
  OpSchema& get_mut(const std::string& name);
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, OpSchema> ops_;
};

inline const OpSchema& op_schema(const std::string& name) { return OpRegistry::instance().get(name); }

// Helpers shared by shape rules.
const TensorType& require_input(const std::string& op, const std::vector<const TensorType*>& in,
                                size_t i, const std::string& input_name);
void require_same_type(const std::string& op, const TensorType& a, const std::string& a_name,
                       const TensorType& b, const std::string& b_name);

// Called once by OpRegistry::instance(): ops/all_ops.cpp lists every op's registration
// function; register_cuda_kernels() (ops/cuda_kernels.cu, CUDA builds only) fills in cuda_kernel.
void register_builtin_ops(OpRegistry& r);
void register_cuda_kernels(OpRegistry& r);

}  // namespace minidl
