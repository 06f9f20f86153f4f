// The IR. A Graph owns Nodes and Values. A Node applies one op (by name, looked up in the op
// registry) to input Values, has typed attributes, and produces output Values whose shape and
// dtype come from the op's shape rule at creation. Graph inputs and parameters are nodes too
// (ops "input" and "param", with a "name" attribute), so every Value has a producer.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "graph/attr.h"

namespace minidl {

struct Node;

struct TensorType {
  Shape shape;
  DType dtype = DType::F32;
  std::string str() const;  // "f32[2,3]"
  bool operator==(const TensorType& o) const { return shape == o.shape && dtype == o.dtype; }
  bool operator!=(const TensorType& o) const { return !(*this == o); }
};

struct Value {
  int id = -1;              // unique within the graph, never reused
  TensorType type;
  Node* producer = nullptr;
  int output_index = 0;
  const Shape& shape() const { return type.shape; }
  DType dtype() const { return type.dtype; }
};

struct Node {
  int id = -1;
  std::string op;
  std::vector<Value*> inputs;   // may hold nullptr for an omitted optional input
  std::vector<Value*> outputs;
  Attrs attrs;
  Value* output(int i = 0) const { return outputs.at(static_cast<size_t>(i)); }
  bool is_source() const { return op == "input" || op == "param"; }
  const std::string& name_attr() const { return attrs.get_str("name"); }
};

class Graph {
 public:
  explicit Graph(std::string name = "graph") : name_(std::move(name)) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  const std::string& name() const { return name_; }

  Value* add_input(const std::string& name, const Shape& shape, DType dtype = DType::F32);
  Value* add_param(const std::string& name, const Shape& shape, DType dtype = DType::F32);
  // Creates a node: checks the op exists, validates attributes against its schema (filling
  // defaults), runs its shape rule. Throws minidl::Error naming op, inputs and shapes.
  Node* add_node(const std::string& op, const std::vector<Value*>& inputs, Attrs attrs = {});
  Value* add(const std::string& op, const std::vector<Value*>& inputs, Attrs attrs = {}) {
    return add_node(op, inputs, std::move(attrs))->output(0);
  }

  void set_outputs(std::vector<Value*> outs) { outputs_ = std::move(outs); }
  void add_output(Value* v) { outputs_.push_back(v); }
  const std::vector<Value*>& outputs() const { return outputs_; }
  bool is_output(const Value* v) const;

  // Nodes in insertion order (not necessarily topological after rewrites; see schedule()).
  std::vector<Node*> nodes() const;
  std::vector<Node*> schedule() const;  // topological order, stable (ties by node id)
  std::vector<Node*> users(const Value* v) const;  // nodes that read v (once per node)
  size_t num_nodes() const { return nodes_.size(); }
  size_t count_op(const std::string& op) const;

  Value* find_input(const std::string& name) const;  // nullptr if absent
  Value* find_param(const std::string& name) const;
  std::vector<Value*> inputs() const;  // graph inputs in creation order
  std::vector<Value*> params() const;

  // Rewriting.
  void replace_all_uses(Value* old_value, Value* new_value);  // also in the graph outputs
  void erase_node(Node* n);  // its outputs must be unused

 private:
  std::string name_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<Value>> values_;
  std::vector<Value*> outputs_;
  int next_node_id_ = 0;
  int next_value_id_ = 0;
  Node* new_node(const std::string& op, const std::vector<Value*>& inputs, Attrs attrs,
                 const std::vector<TensorType>& out_types);
};

// Structural checks: every input produced by a node of this graph, acyclic, outputs present,
// stored types equal to what each op's shape rule says now. Throws naming the node.
void verify(const Graph& g);

}  // namespace minidl
