#include "graph/graph.h"

#include <algorithm>
#include <queue>
#include <set>

#include "ops/registry.h"

namespace minidl {

std::string TensorType::str() const { return std::string(dtype_name(dtype)) + shape_str(shape); }

bool Graph::is_output(const Value* v) const {
  return std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
}

Node* Graph::new_node(const std::string& op, const std::vector<Value*>& inputs, Attrs attrs,
                      const std::vector<TensorType>& out_types) {
  auto n = std::make_unique<Node>();
  n->id = next_node_id_++;
  n->op = op;
  n->inputs = inputs;
  n->attrs = std::move(attrs);
  for (size_t i = 0; i < out_types.size(); ++i) {
    auto v = std::make_unique<Value>();
    v->id = next_value_id_++;
    v->type = out_types[i];
    v->producer = n.get();
    v->output_index = static_cast<int>(i);
    n->outputs.push_back(v.get());
    values_.push_back(std::move(v));
  }
  nodes_.push_back(std::move(n));
  return nodes_.back().get();
}

static void check_source_name(const Graph& g, const std::string& what, const std::string& name) {
  MINIDL_CHECK(!name.empty(), "graph '", g.name(), "': ", what, " needs a name");
  MINIDL_CHECK(!g.find_input(name) && !g.find_param(name), "graph '", g.name(), "': ", what, " name '", name,
               "' is already used");
}

Value* Graph::add_input(const std::string& name, const Shape& shape, DType dtype) {
  check_source_name(*this, "input", name);
  for (int64_t d : shape)
    MINIDL_CHECK(d >= 0, "input '", name, "': negative dimension in shape ", shape_str(shape));
  return new_node("input", {}, Attrs{{"name", AttrValue::Str(name)}}, {TensorType{shape, dtype}})->output(0);
}

Value* Graph::add_param(const std::string& name, const Shape& shape, DType dtype) {
  check_source_name(*this, "param", name);
  for (int64_t d : shape)
    MINIDL_CHECK(d >= 0, "param '", name, "': negative dimension in shape ", shape_str(shape));
  return new_node("param", {}, Attrs{{"name", AttrValue::Str(name)}}, {TensorType{shape, dtype}})->output(0);
}

// Checks attributes against the schema: unknown names and wrong kinds are errors, missing ones
// take their defaults (required ones without a default are errors).
static Attrs validate_attrs(const OpSchema& s, Attrs attrs) {
  for (const auto& kv : attrs.items()) {
    auto it = std::find_if(s.attrs.begin(), s.attrs.end(), [&](const AttrSpec& a) { return a.name == kv.first; });
    if (it == s.attrs.end()) {
      std::string known;
      for (const auto& a : s.attrs) known += (known.empty() ? "" : ", ") + a.name;
      MINIDL_FAIL(s.name, ": unknown attribute '", kv.first, "' (known: ", known.empty() ? "none" : known, ")");
    }
    MINIDL_CHECK(kv.second.kind == it->kind, s.name, ": attribute '", kv.first, "' must be a ",
                 attr_kind_name(it->kind), ", got a ", attr_kind_name(kv.second.kind), " (", kv.second.str(), ")");
  }
  for (const auto& a : s.attrs) {
    if (attrs.has(a.name)) continue;
    MINIDL_CHECK(a.default_value.has_value(), s.name, ": required attribute '", a.name, "' is missing");
    attrs.set(a.name, *a.default_value);
  }
  return attrs;
}

Node* Graph::add_node(const std::string& op, const std::vector<Value*>& inputs, Attrs attrs) {
  const OpSchema& s = op_schema(op);
  MINIDL_CHECK(op != "input" && op != "param", "graph: use add_input/add_param to create '", op, "' nodes");
  MINIDL_CHECK(inputs.size() >= s.num_required_inputs && inputs.size() <= s.input_names.size(), op, ": expects ",
               s.num_required_inputs == s.input_names.size() ? std::to_string(s.input_names.size())
                                                             : std::to_string(s.num_required_inputs) + " to " +
                                                                   std::to_string(s.input_names.size()),
               " inputs, got ", inputs.size());
  std::vector<const TensorType*> types;
  for (size_t i = 0; i < inputs.size(); ++i) {
    MINIDL_CHECK(inputs[i] || i >= s.num_required_inputs, op, ": required input '", s.input_names[i], "' is missing");
    if (inputs[i]) {
      bool mine = std::any_of(values_.begin(), values_.end(), [&](const auto& v) { return v.get() == inputs[i]; });
      MINIDL_CHECK(mine, op, ": input '", s.input_names[i], "' belongs to another graph");
    }
    types.push_back(inputs[i] ? &inputs[i]->type : nullptr);
  }
  Attrs full = validate_attrs(s, std::move(attrs));
  std::vector<TensorType> outs = s.shape_rule(types, full);
  MINIDL_CHECK(outs.size() == s.output_names.size(), op, ": shape rule returned ", outs.size(), " outputs, schema has ",
               s.output_names.size());
  return new_node(op, inputs, std::move(full), outs);
}

std::vector<Node*> Graph::nodes() const {
  std::vector<Node*> r;
  for (const auto& n : nodes_) r.push_back(n.get());
  return r;
}

std::vector<Node*> Graph::schedule() const {
  // Kahn's algorithm; among ready nodes the smallest id goes first, so the order is stable and
  // equals creation order for graphs that were only appended to.
  std::map<const Node*, int> pending;
  std::map<const Node*, std::vector<Node*>> readers;
  for (const auto& n : nodes_) {
    std::set<const Node*> deps;
    for (Value* v : n->inputs)
      if (v) deps.insert(v->producer);
    pending[n.get()] = static_cast<int>(deps.size());
    for (const Node* d : deps) readers[d].push_back(n.get());
  }
  auto cmp = [](const Node* a, const Node* b) { return a->id > b->id; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(cmp)> ready(cmp);
  for (const auto& n : nodes_)
    if (pending[n.get()] == 0) ready.push(n.get());
  std::vector<Node*> order;
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    order.push_back(n);
    for (Node* r : readers[n])
      if (--pending[r] == 0) ready.push(r);
  }
  MINIDL_CHECK(order.size() == nodes_.size(), "graph '", name_, "': cycle detected (", nodes_.size() - order.size(),
               " nodes unreachable in topological order)");
  return order;
}

std::vector<Node*> Graph::users(const Value* v) const {
  std::vector<Node*> r;
  for (const auto& n : nodes_)
    if (std::find(n->inputs.begin(), n->inputs.end(), v) != n->inputs.end()) r.push_back(n.get());
  return r;
}

size_t Graph::count_op(const std::string& op) const {
  return static_cast<size_t>(std::count_if(nodes_.begin(), nodes_.end(), [&](const auto& n) { return n->op == op; }));
}

static Value* find_source(const std::vector<std::unique_ptr<Node>>& nodes, const std::string& op,
                          const std::string& name) {
  for (const auto& n : nodes)
    if (n->op == op && n->attrs.get_str("name") == name) return n->output(0);
  return nullptr;
}
Value* Graph::find_input(const std::string& name) const { return find_source(nodes_, "input", name); }
Value* Graph::find_param(const std::string& name) const { return find_source(nodes_, "param", name); }

std::vector<Value*> Graph::inputs() const {
  std::vector<Value*> r;
  for (const auto& n : nodes_)
    if (n->op == "input") r.push_back(n->output(0));
  return r;
}

std::vector<Value*> Graph::params() const {
  std::vector<Value*> r;
  for (const auto& n : nodes_)
    if (n->op == "param") r.push_back(n->output(0));
  return r;
}

void Graph::replace_all_uses(Value* old_value, Value* new_value) {
  MINIDL_CHECK(old_value->type == new_value->type, "graph: cannot replace a ", old_value->type.str(), " value by a ",
               new_value->type.str(), " value");
  for (auto& n : nodes_)
    for (Value*& v : n->inputs)
      if (v == old_value) v = new_value;
  for (Value*& v : outputs_)
    if (v == old_value) v = new_value;
}

void Graph::erase_node(Node* node) {
  for (Value* v : node->outputs) {
    MINIDL_CHECK(users(v).empty() && !is_output(v), "graph: cannot erase ", node->op, " node: its output is still used");
  }
  auto it = std::find_if(nodes_.begin(), nodes_.end(), [&](const auto& n) { return n.get() == node; });
  MINIDL_CHECK(it != nodes_.end(), "graph: erase_node of a node not in graph '", name_, "'");
  for (Value* v : node->outputs)
    values_.erase(std::remove_if(values_.begin(), values_.end(), [&](const auto& p) { return p.get() == v; }),
                  values_.end());
  nodes_.erase(it);
}

void verify(const Graph& g) {
  std::set<const Value*> produced;
  std::vector<Node*> order = g.schedule();  // also detects cycles
  for (const Node* n : order) {
    const OpSchema& s = op_schema(n->op);
    std::vector<const TensorType*> types;
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      const Value* v = n->inputs[i];
      if (!v) {
        MINIDL_CHECK(i >= s.num_required_inputs, "verify: node ", n->op, " #", n->id, " misses required input '",
                     s.input_names.at(i), "'");
        types.push_back(nullptr);
        continue;
      }
      MINIDL_CHECK(produced.count(v), "verify: node ", n->op, " #", n->id, " reads a value not produced before it");
      types.push_back(&v->type);
    }
    if (!n->is_source()) {
      std::vector<TensorType> outs = s.shape_rule(types, n->attrs);
      MINIDL_CHECK(outs.size() == n->outputs.size(), "verify: node ", n->op, " #", n->id, " has ", n->outputs.size(),
                   " outputs, its shape rule gives ", outs.size());
      for (size_t i = 0; i < outs.size(); ++i)
        MINIDL_CHECK(outs[i] == n->outputs[i]->type, "verify: node ", n->op, " #", n->id, " output ", i, " is typed ",
                     n->outputs[i]->type.str(), " but its shape rule gives ", outs[i].str());
    }
    for (const Value* v : n->outputs) {
      MINIDL_CHECK(v->producer == n, "verify: value of node ", n->op, " #", n->id, " has the wrong producer");
      produced.insert(v);
    }
  }
  MINIDL_CHECK(!g.outputs().empty(), "verify: graph '", g.name(), "' has no outputs");
  for (const Value* v : g.outputs())
    MINIDL_CHECK(v && produced.count(v), "verify: graph '", g.name(), "' returns a value it does not produce");
}

}  // namespace minidl
