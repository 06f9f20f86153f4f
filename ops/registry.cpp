#include "ops/registry.h"

namespace minidl {

// Graph inputs and parameters: their tensors are fed to the executor by name, so they have no
// kernel; their gradient is what autograd returns for them.
static void register_source_ops(OpRegistry& r) {
  for (const char* name : {"input", "param"}) {
    OpSchema s;
    s.name = name;
    s.output_names = {"value"};
    s.attrs = {{"name", AttrKind::String, std::nullopt}};
    s.shape_rule = [name](const std::vector<const TensorType*>&, const Attrs&) -> std::vector<TensorType> {
      MINIDL_FAIL(name, ": source nodes are created by Graph::add_input / add_param, not by a shape rule");
    };
    r.add(std::move(s));
  }
}

OpRegistry& OpRegistry::instance() {
  static OpRegistry* r = [] {
    auto* reg = new OpRegistry();
    register_source_ops(*reg);
    register_builtin_ops(*reg);
    register_cuda_kernels(*reg);
    return reg;
  }();
  return *r;
}

void OpRegistry::add(OpSchema schema) {
  MINIDL_CHECK(!schema.name.empty(), "OpRegistry: op without a name");
  MINIDL_CHECK(!ops_.count(schema.name), "OpRegistry: op '", schema.name, "' registered twice");
  MINIDL_CHECK(schema.num_required_inputs <= schema.input_names.size(), "OpRegistry: op '", schema.name,
               "' requires more inputs than it names");
  MINIDL_CHECK(static_cast<bool>(schema.shape_rule), "OpRegistry: op '", schema.name, "' has no shape rule");
  std::string name = schema.name;
  ops_.emplace(name, std::move(schema));
}

const OpSchema& OpRegistry::get(const std::string& name) const {
  auto it = ops_.find(name);
  MINIDL_CHECK(it != ops_.end(), "unknown op '", name, "'");
  return it->second;
}

OpSchema& OpRegistry::get_mut(const std::string& name) {
  auto it = ops_.find(name);
  MINIDL_CHECK(it != ops_.end(), "unknown op '", name, "'");
  return it->second;
}

bool OpRegistry::has(const std::string& name) const { return ops_.count(name) != 0; }

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> r;
  for (const auto& kv : ops_) r.push_back(kv.first);
  return r;
}

const TensorType& require_input(const std::string& op, const std::vector<const TensorType*>& in, size_t i,
                                const std::string& input_name) {
  MINIDL_CHECK(i < in.size() && in[i], op, ": required input '", input_name, "' is missing");
  return *in[i];
}

void require_same_type(const std::string& op, const TensorType& a, const std::string& a_name, const TensorType& b,
                       const std::string& b_name) {
  MINIDL_CHECK(a.shape == b.shape, op, ": input '", a_name, "' has shape ", shape_str(a.shape), " but '", b_name,
               "' has shape ", shape_str(b.shape), " (they must match)");
  MINIDL_CHECK(a.dtype == b.dtype, op, ": input '", a_name, "' is ", dtype_name(a.dtype), " but '", b_name, "' is ",
               dtype_name(b.dtype));
}

}  // namespace minidl
